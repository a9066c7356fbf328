"""Variational autoencoders.

Papers:
- Kingma & Welling 2014, "Auto-Encoding Variational Bayes", arXiv:1312.6114.
- Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders", arXiv:1509.00519.
- Higgins et al. 2017, "beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
  Framework", ICLR 2017 (beta weighting of the KL, eq. 4).
- Kingma et al. 2016, "Improved Variational Inference with Inverse Autoregressive Flow",
  arXiv:1606.04934 (free bits; the discretized logistic decoder).
- Salimans et al. 2017, "PixelCNN++", arXiv:1701.05517, Sec. 2.1 (discretized logistic likelihood).
- Ho et al. 2020, arXiv:2006.11239, eq. 13 (the same discretization for a Gaussian).
- Bowman et al. 2016, arXiv:1511.06349, and Sonderby et al. 2016, arXiv:1602.02282 (KL warm-up).

Model: p(z) = N(0, I); q_phi(z|x) = N(mu, diag(sigma^2)) with (mu, log_var) from the encoder;
p_theta(x|z) factorised over pixels, one of
- discretized_logistic (default): a logistic(mu, s) binned onto the 256 levels of 8-bit data;
- gaussian: a N(mu, sigma^2) binned the same way;
- bernoulli: for binary data (pixel values 0 or 255) only, or with model.binarize=true.
All three are distributions over the discrete pixel values, so the ELBO is a bound on the 8-bit
likelihood of `GenerativeModel.bits_per_dim` and reads beside diffusion's without dequantization.
s (or sigma) is fixed, or learned per pixel by the decoder with a floor, min_scale. The floor is
the knob between likelihood and samples: a decoder allowed to be very sure of every grey level
pushes more information into z, q(z) then covers N(0, I) unevenly, and prior samples fall into
its holes (conf/model/vae.yaml has the numbers).
Known oddity: "the decoder mean" shown for prior samples is mu_theta(z) clipped to [-1, 1], the
mean before binning and the median after it; the binned mean itself would grey a black background.

Training maximises the ELBO (Kingma & Welling eq. 3) with the SGVB estimator of eq. 7: analytic KL
(eq. 10) and one reparameterised sample z = mu + sigma * eps (Sec. 2.4). The loss is
-ELBO / (D ln 2), bits per dimension, with the KL weighted by beta (Higgins et al.) times a linear
warm-up, and optionally clamped per latent dimension from below at free_bits nats.
Evaluation adds the IWAE bound L_k (Burda et al. eq. 8), which rises with k towards log p(x).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from genbench.models.base import GenerativeModel, LossTerm, randn
from genbench.validate import check_choice, check_positive

Likelihood = Literal["discretized_logistic", "gaussian", "bernoulli"]
Scale = Literal["learned", "fixed"]
SampleMode = Literal["mean", "sample"]

LN2 = math.log(2.0)
LOG_2PI = math.log(2 * math.pi)
HALF_BIN = 1.0 / 255.0  # 8-bit levels k / 127.5 - 1 lie 2/255 apart in [-1, 1]


# ---- densities -----------------------------------------------------------------------------
def gaussian_kl(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(log_var)) || N(0, 1)) per latent dimension (Kingma & Welling, App. B)."""
    return 0.5 * (mu.square() + log_var.exp() - 1.0 - log_var)


def log_normal(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(log_var))), summed over the last dimension."""
    return -0.5 * (LOG_2PI + log_var + (z - mu).square() * torch.exp(-log_var)).sum(-1)


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a < 0, accurate on both sides of -ln 2 (Maechler 2012)."""
    return torch.where(a > -LN2, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def standardised_bin_edges(x: torch.Tensor, mu: torch.Tensor, log_s: torch.Tensor,
                           dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """a = (x - 1/255 - mu) / s and b = (x + 1/255 - mu) / s, the edges of x's bin, and the masks of the
    lowest and the highest bin (whose outer edges are -inf and +inf instead). Computed in units of
    levels, k +- 1/2 with k the integer level of x, so that neighbouring bins share their edges exactly
    (with edges x +- 1/255 in float32, a small s turns their rounding into mass gaps of 1e-5)."""
    k = torch.round((x.to(dtype) + 1) * 127.5)
    mu_k, inv_s_k = (mu.to(dtype) + 1) * 127.5, torch.exp(-log_s.to(dtype)) / 127.5  # mu and 1/s in level units
    return (k - 0.5 - mu_k) * inv_s_k, (k + 0.5 - mu_k) * inv_s_k, k < 0.5, k > 254.5


def discretized_logistic_log_prob(x: torch.Tensor, mu: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """log P(x) for x on the 256 levels of [-1, 1] under logistic(mu, s) mass on the bins [x - 1/255,
    x + 1/255], the two outer bins extended to -inf and +inf (Salimans et al. 2017, Sec. 2.1).
    sigmoid(b) - sigmoid(a) = sigmoid(b) sigmoid(-a) (1 - e^(a - b)), so log P is accurate in every regime,
    where PixelCNN++ falls back to the density."""
    a, b, lowest, highest = standardised_bin_edges(x, mu, log_s)
    log_cdf_b, log_sf_a = F.logsigmoid(b), F.logsigmoid(-a)
    return torch.where(lowest, log_cdf_b, torch.where(highest, log_sf_a, log_cdf_b + log_sf_a + log1mexp(a - b)))


def discretized_gaussian_log_prob(x: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """log P(x) for x on the 256 levels of [-1, 1] under N(mu, sigma^2) mass on the same bins as above
    (Ho et al. 2020, eq. 13). Phi(b) - Phi(a) = Phi(-a) - Phi(-b): the form whose two terms lie in the
    lower tail is taken, where log Phi is accurate. In float64: a bin much narrower than sigma makes the
    two log Phi nearly equal, and their difference would lose float32's digits."""
    a, b, lowest, highest = standardised_bin_edges(x, mu, log_sigma, torch.float64)
    flip = a + b > 0  # bin centre above mu
    hi, lo = torch.where(flip, -a, b), torch.where(flip, -b, a)
    log_hi = torch.special.log_ndtr(hi)
    interior = log_hi + log1mexp(torch.special.log_ndtr(lo) - log_hi)
    log_p = torch.where(lowest, torch.special.log_ndtr(b), torch.where(highest, torch.special.log_ndtr(-a), interior))
    return log_p.float()


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log P(x) for x in {-1, 1} (pixel values 0 and 255) under Bernoulli(sigmoid(logits)) on x = 1."""
    return F.logsigmoid(torch.where(x > 0, logits, -logits))


class VAE(GenerativeModel):
    def __init__(
        self,
        image_shape: tuple[int, int, int],
        encoder: Callable[..., nn.Module],
        decoder: Callable[..., nn.Module],
        latent_dim: int = 32,
        likelihood: Likelihood = "discretized_logistic",
        scale: Scale = "learned",
        fixed_scale: float = 0.5,
        min_scale: float = 0.5,
        binarize: bool = False,
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        free_bits: float = 0.0,
        sample_mode: SampleMode = "mean",
        iwae_k: int = 64,
    ):
        super().__init__()
        check_choice("model.likelihood", likelihood, Likelihood)
        check_choice("model.scale", scale, Scale)
        check_choice("model.sample_mode", sample_mode, SampleMode)
        check_positive("model.latent_dim", latent_dim)
        check_positive("model.fixed_scale", fixed_scale)
        check_positive("model.min_scale", min_scale)
        check_positive("model.beta", beta, allow_zero=True)
        check_positive("model.kl_warmup_steps", kl_warmup_steps, allow_zero=True)
        check_positive("model.free_bits", free_bits, allow_zero=True)
        check_positive("model.iwae_k", iwae_k)
        if binarize and likelihood != "bernoulli":
            raise ValueError(f"model.binarize=true only applies to model.likelihood=bernoulli, not {likelihood}")
        self.image_shape, self.latent_dim = tuple(image_shape), latent_dim
        self.num_dims = math.prod(self.image_shape)  # D = C * H * W, the denominator of bits/dim
        self.likelihood, self.scale, self.fixed_scale, self.min_scale = likelihood, scale, fixed_scale, min_scale
        self.binarize, self.beta, self.kl_warmup_steps, self.free_bits = binarize, beta, kl_warmup_steps, free_bits
        self.sample_mode, self.iwae_k = sample_mode, iwae_k
        learned_scale = likelihood != "bernoulli" and scale == "learned"
        channels = self.image_shape[0]
        self.encoder = encoder(image_shape=self.image_shape, latent_dim=latent_dim)
        self.decoder = decoder(image_shape=self.image_shape, latent_dim=latent_dim,
                               out_channels=channels * (2 if learned_scale else 1))
        # Optimisation steps taken, for the KL warm-up: a buffer, so checkpoints carry it and resume is exact.
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    # ---- q_phi(z|x) and p_theta(x|z) --------------------------------------------------------
    def observe(self, x: torch.Tensor) -> torch.Tensor:
        """The data the likelihood scores: x itself, or for the Bernoulli decoder x thresholded at the
        middle grey (binarize=true); grey levels without binarize are refused."""
        if self.likelihood != "bernoulli":
            return x
        if self.binarize:
            return torch.where(x > 0, 1.0, -1.0).to(x.dtype)
        if not bool((x.abs() == 1).all()):
            raise ValueError("model.likelihood=bernoulli needs binary data (pixel values 0 or 255) but got grey "
                             "levels; set model.binarize=true to threshold at 128, or use model.likelihood="
                             "discretized_logistic")
        return x

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu and log_var of q_phi(z|x), each (N, L)."""
        mu, log_var = self.encoder(x).float().chunk(2, dim=1)
        return mu, log_var

    @staticmethod
    def reparameterize(mu: torch.Tensor, log_var: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps with eps ~ N(0, I): a sample of q_phi(z|x) differentiable in mu and
        log_var (Kingma & Welling, Sec. 2.4)."""
        return mu + torch.exp(0.5 * log_var) * eps

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Parameters of p_theta(x|z): location (the Bernoulli's logits) and log-scale (None for
        Bernoulli), each (N, C, H, W)."""
        out = self.decoder(z).float()
        if self.likelihood == "bernoulli":
            return out, None
        if self.scale == "fixed":
            return out, torch.full_like(out, math.log(self.fixed_scale))
        loc, log_scale = out.chunk(2, dim=1)
        return loc, log_scale.clamp(min=math.log(self.min_scale))

    def log_px(self, x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor | None) -> torch.Tensor:
        """log p_theta(x|z) in nats, summed over the D pixels: (N,)."""
        if self.likelihood == "bernoulli":
            log_p = bernoulli_log_prob(x, loc)
        elif self.likelihood == "gaussian":
            log_p = discretized_gaussian_log_prob(x, loc, log_scale)
        else:
            log_p = discretized_logistic_log_prob(x, loc, log_scale)
        return log_p.flatten(1).sum(1)

    def decoder_mean(self, loc: torch.Tensor, log_scale: torch.Tensor | None) -> torch.Tensor:
        """The image shown as "the decoder mean": mu_theta(z), the mean of the logistic or Gaussian
        before binning, clipped to [-1, 1] (the Bernoulli's: 2p - 1). Both are symmetric, so this is also
        the median of the binned p_theta(x|z). The binned distribution's own mean is not shown: its outer
        bins collect the tails, so where s is large a black background comes out grey."""
        if log_scale is None:
            return 2 * torch.sigmoid(loc) - 1
        return loc.clamp(-1, 1)

    def decoder_sample(self, loc: torch.Tensor, log_scale: torch.Tensor | None,
                       generator: torch.Generator | None) -> torch.Tensor:
        """x ~ p_theta(x|z): a continuous draw rounded to the nearest level and clipped to [-1, 1], which
        is exactly a draw from the binned distribution."""
        gen_device = generator.device if generator is not None else loc.device
        u = torch.rand(loc.shape, generator=generator, device=gen_device).to(loc.device)
        if log_scale is None:
            return torch.where(u < torch.sigmoid(loc), 1.0, -1.0)
        u = u.clamp(1e-7, 1 - 1e-7)
        # inverse CDF of the logistic (log u - log(1 - u)) or of the normal (sqrt(2) erfinv(2u - 1))
        std = torch.log(u) - torch.log1p(-u) if self.likelihood == "discretized_logistic" else torch.special.ndtri(u)
        x = loc + torch.exp(log_scale) * std
        return (torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1).clamp(-1, 1)

    # ---- training ---------------------------------------------------------------------------
    def kl_weight(self) -> float:
        """beta (Higgins et al. eq. 4) times a linear warm-up from 0 over kl_warmup_steps steps."""
        if self.kl_warmup_steps == 0:
            return self.beta
        return self.beta * min(1.0, (int(self.steps_done) + 1) / self.kl_warmup_steps)

    def training_losses(self, batch: torch.Tensor) -> Iterator[LossTerm]:
        """One SGVB step (Kingma & Welling Alg. 1 with estimator eq. 7 / eq. 10)."""
        # 1. q_phi(z|x), and one reparameterised sample z
        x = self.observe(batch)
        mu, log_var = self.encode(x)
        z = self.reparameterize(mu, log_var, torch.randn_like(mu))
        # 2. reconstruction term log p_theta(x|z) and the analytic KL, per image and per latent dimension
        log_px = self.log_px(x, *self.decode(z))  # (N,)
        kl = gaussian_kl(mu, log_var)  # (N, L)
        # 3. objective: free bits clamps the batch-mean KL of each latent dimension at lambda nats
        #    (Kingma et al. 2016), so the optimiser gains nothing by pushing it lower
        kl_objective = kl.mean(0).clamp(min=self.free_bits).sum() if self.free_bits > 0 else kl.sum(1).mean()
        to_bpd = 1.0 / (self.num_dims * LN2)
        loss = (-log_px.mean() + self.kl_weight() * kl_objective) * to_bpd
        recon_bpd, kl_bpd = -log_px.mean().detach() * to_bpd, kl.sum(1).mean().detach() * to_bpd
        metrics = {  # the true ELBO and its terms, whatever beta, warm-up and free bits do to the loss
            "recon_bpd": recon_bpd, "kl_bpd": kl_bpd, "elbo_bpd": recon_bpd + kl_bpd,
            "kl_weight": torch.tensor(self.kl_weight(), device=mu.device),
            "active_units": active_units(mu.detach()).float(),  # estimated on this batch; eval uses the test split
        }
        self.steps_done += 1
        yield LossTerm("loss", loss, "model", metrics)

    # ---- sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ p(z) = N(0, I), then the decoder mean mu_theta(z) (sample_mode=mean) or a draw from p_theta(x|z)."""
        z = randn((n, self.latent_dim), generator, self.device)
        params = self.decode(z)
        x = self.decoder_mean(*params) if self.sample_mode == "mean" else self.decoder_sample(*params, generator)
        return x.clamp(-1, 1)

    def sampling_info(self) -> dict[str, object]:
        return {"sampler": "prior", "decoder_output": self.sample_mode, "likelihood": self.likelihood,
                "nfe": 1}

    # ---- likelihood -------------------------------------------------------------------------
    @torch.no_grad()
    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """log p_theta(x|z) at one z ~ q_phi(z|x), and KL(q_phi(z|x) || p(z)), each (N,) in nats; the
        ELBO estimate (eq. 7) is their difference."""
        mu, log_var = self.encode(x)
        z = self.reparameterize(mu, log_var, randn(tuple(mu.shape), generator, mu.device))
        return self.log_px(x, *self.decode(z)), gaussian_kl(mu, log_var).sum(1)

    @torch.no_grad()
    def iwae_bound(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None,
                   images_per_chunk: int = 1024) -> torch.Tensor:
        """L_k = log (1/k) sum_i p_theta(x, z_i) / q_phi(z_i|x), z_i ~ q_phi(z|x) (Burda et al. eq. 8),
        (N,) in nats. L_1 is the ELBO's one-sample estimator of eq. 6; L_k rises with k to log p(x)."""
        check_positive("iwae k", k)
        mu, log_var = self.encode(x)
        n, chunk = len(x), max(1, images_per_chunk // len(x))
        log_w = []
        for start in range(0, k, chunk):
            k_c = min(chunk, k - start)
            z = self.reparameterize(mu, log_var, randn((k_c, *mu.shape), generator, mu.device))  # (k_c, N, L)
            x_rep = x.expand(k_c, *x.shape).reshape(k_c * n, *x.shape[1:])
            log_px = self.log_px(x_rep, *self.decode(z.reshape(k_c * n, -1))).view(k_c, n)
            zeros = torch.zeros_like(mu)
            log_w.append(log_px + log_normal(z, zeros, zeros) - log_normal(z, mu, log_var))
        return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)

    @torch.no_grad()
    def bits_per_dim(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-image bits/dim of uint8 images (N, C, H, W): "elbo" (with its two terms "elbo_recon" and
        "elbo_kl") and f"iwae_k{iwae_k}", each -log2 of the bound on P(x) over D = C*H*W dimensions.
        With binarize=true the binarized images are scored, so the keys end in "_binarized": that is
        not the 8-bit likelihood of the test images."""
        x = self.observe(x.to(self.device).float() / 127.5 - 1)
        to_bpd = -1.0 / (self.num_dims * LN2)
        log_px, kl = self.elbo(x, generator)
        bounds = {"elbo": (log_px - kl) * to_bpd, "elbo_recon": log_px * to_bpd, "elbo_kl": -kl * to_bpd,
                  f"iwae_k{self.iwae_k}": self.iwae_bound(x, self.iwae_k, generator) * to_bpd}
        suffix = "_binarized" if self.binarize else ""
        return {f"{k}{suffix}": v for k, v in bounds.items()}

    @torch.no_grad()
    def diagnostic_images(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Panels of decoder means in [-1, 1], shaped to fill a square grid (nrow = sqrt(K)):
        - "reconstructions": r rows of 2r inputs, each followed by the row of their reconstructions
          from the posterior mean (r <= 4 with 2r^2 <= len(x));
        - "interpolations": one row per pair of inputs, decoding z linearly interpolated between their
          posterior means in as many steps as there are pairs (2 to 8), endpoints included."""
        x = self.observe(x.to(self.device).float())
        if len(x) < 2:
            raise ValueError("diagnostic_images needs at least 2 images (a pair to interpolate between)")
        shape = x.shape[1:]
        r = min(4, math.isqrt(len(x) // 2))
        inputs = x[: 2 * r * r]
        recon = self.decoder_mean(*self.decode(self.encode(inputs)[0]))
        rows = torch.stack([inputs.view(r, 2 * r, *shape), recon.view(r, 2 * r, *shape)], dim=1)  # (r, 2, 2r, C, H, W)
        pairs = min(8, len(x) // 2)
        steps = max(2, pairs)
        mu, _ = self.encode(x[: 2 * pairs])
        t = torch.linspace(0, 1, steps, device=mu.device)[None, :, None]  # (1, steps, 1)
        z = torch.lerp(mu[:pairs, None], mu[pairs:, None], t)  # (pairs, steps, L)
        interpolations = self.decoder_mean(*self.decode(z.reshape(pairs * steps, -1)))
        return {"reconstructions": rows.reshape(-1, *shape).clamp(-1, 1),
                "interpolations": interpolations.clamp(-1, 1)}

    @torch.no_grad()
    def latent_statistics(self, x: torch.Tensor) -> dict[str, float]:
        """Dataset-level numbers for uint8 images (N, C, H, W), N in the hundreds or more: the active units
        of Burda et al. 2016 (Sec. 5.2) among the latent_dim dimensions."""
        x = self.observe(x.to(self.device).float() / 127.5 - 1)
        mu = torch.cat([self.encode(chunk)[0] for chunk in x.split(256)])
        return {"active_units": int(active_units(mu)), "latent_dim": self.latent_dim}


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """Number of latent dimensions u with Cov_x(E_q[u|x]) > threshold (Burda et al. 2016, Sec. 5.2),
    from posterior means mu (N, L) of N inputs."""
    return (mu.float().var(dim=0) > threshold).sum()
