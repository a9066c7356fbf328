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
p_theta(x|z) factorised over pixels, an object from `genbench.likelihoods` picked by `_target_`
(conf/likelihood/, `likelihood@model.likelihood=NAME`; `model.likelihood=NAME` is a shorthand for
its defaults):
- discretized_logistic (default): a logistic(mu, s) binned onto the 256 levels of 8-bit data;
- gaussian: a N(mu, sigma^2) binned the same way;
- bernoulli: for binary data (pixel values 0 or 255) only, or with model.likelihood.binarize=true.
All three are distributions over the discrete pixel values, so the ELBO is a bound on the 8-bit
likelihood of `GenerativeModel.bits_per_dim` and reads beside diffusion's without dequantization.
s (or sigma) is fixed, or learned per pixel by the decoder with a floor, min_scale. The floor is
the knob between likelihood and samples: a decoder allowed to be very sure of every grey level
pushes more information into z, q(z) then covers N(0, I) unevenly, and prior samples fall into
its holes (conf/likelihood/discretized_logistic.yaml has the numbers).
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
from torch import nn

from genbench.likelihoods import LN2, LikelihoodName, PixelLikelihood, as_likelihood
from genbench.models.base import GenerativeModel, LossTerm, randn
from genbench.validate import check_choice, check_positive

SampleMode = Literal["mean", "sample"]

LOG_2PI = math.log(2 * math.pi)


# ---- densities of the latent ---------------------------------------------------------------
def gaussian_kl(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(log_var)) || N(0, 1)) per latent dimension (Kingma & Welling, App. B)."""
    return 0.5 * (mu.square() + log_var.exp() - 1.0 - log_var)


def log_normal(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(log_var))), summed over the last dimension."""
    return -0.5 * (LOG_2PI + log_var + (z - mu).square() * torch.exp(-log_var)).sum(-1)


class VAE(GenerativeModel):
    def __init__(
        self,
        image_shape: tuple[int, int, int],
        encoder: Callable[..., nn.Module],
        decoder: Callable[..., nn.Module],
        likelihood: PixelLikelihood | LikelihoodName = "discretized_logistic",
        latent_dim: int = 32,
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        free_bits: float = 0.0,
        sample_mode: SampleMode = "mean",
        iwae_k: int = 64,
    ):
        super().__init__()
        check_choice("model.sample_mode", sample_mode, SampleMode)
        check_positive("model.latent_dim", latent_dim)
        check_positive("model.beta", beta, allow_zero=True)
        check_positive("model.kl_warmup_steps", kl_warmup_steps, allow_zero=True)
        check_positive("model.free_bits", free_bits, allow_zero=True)
        check_positive("model.iwae_k", iwae_k)
        self.image_shape, self.latent_dim = tuple(image_shape), latent_dim
        self.num_dims = math.prod(self.image_shape)  # D = C * H * W, the denominator of bits/dim
        self.likelihood = as_likelihood(likelihood)  # p_theta(x|z): genbench.likelihoods
        self.beta, self.kl_warmup_steps, self.free_bits = beta, kl_warmup_steps, free_bits
        self.sample_mode, self.iwae_k = sample_mode, iwae_k
        self.encoder = encoder(image_shape=self.image_shape, latent_dim=latent_dim)
        self.decoder = decoder(image_shape=self.image_shape, latent_dim=latent_dim,
                               out_channels=self.likelihood.out_channels(self.image_shape[0]))
        # Optimisation steps taken, for the KL warm-up: a buffer, so checkpoints carry it and resume is exact.
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    # ---- q_phi(z|x) and p_theta(x|z) --------------------------------------------------------
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
        return self.likelihood.params(self.decoder(z).float())

    def log_px(self, x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor | None) -> torch.Tensor:
        """log p_theta(x|z) in nats, summed over the D pixels: (N,)."""
        return self.likelihood.log_prob(x, loc, log_scale).flatten(1).sum(1)

    # ---- training ---------------------------------------------------------------------------
    def kl_weight(self) -> float:
        """beta (Higgins et al. eq. 4) times a linear warm-up from 0 over kl_warmup_steps steps."""
        if self.kl_warmup_steps == 0:
            return self.beta
        return self.beta * min(1.0, (int(self.steps_done) + 1) / self.kl_warmup_steps)

    def training_losses(self, batch: torch.Tensor) -> Iterator[LossTerm]:
        """One SGVB step (Kingma & Welling Alg. 1 with estimator eq. 7 / eq. 10)."""
        # 1. q_phi(z|x), and one reparameterised sample z
        x = self.likelihood.observe(batch)
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
        x = self.likelihood.mean(*params) if self.sample_mode == "mean" else self.likelihood.sample(*params, generator)
        return x.clamp(-1, 1)

    def sampling_info(self) -> dict[str, object]:
        return {"sampler": "prior", "decoder_output": self.sample_mode, "likelihood": self.likelihood.name,
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
        With a binarizing likelihood the binarized images are scored, so the keys end in "_binarized": that is
        not the 8-bit likelihood of the test images."""
        x = self.likelihood.observe(x.to(self.device).float() / 127.5 - 1)
        to_bpd = -1.0 / (self.num_dims * LN2)
        log_px, kl = self.elbo(x, generator)
        bounds = {"elbo": (log_px - kl) * to_bpd, "elbo_recon": log_px * to_bpd, "elbo_kl": -kl * to_bpd,
                  f"iwae_k{self.iwae_k}": self.iwae_bound(x, self.iwae_k, generator) * to_bpd}
        return {f"{k}{self.likelihood.key_suffix}": v for k, v in bounds.items()}

    @torch.no_grad()
    def diagnostic_images(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Panels of decoder means in [-1, 1], shaped to fill a square grid (nrow = sqrt(K)):
        - "reconstructions": r rows of 2r inputs, each followed by the row of their reconstructions
          from the posterior mean (r <= 4 with 2r^2 <= len(x));
        - "interpolations": one row per pair of inputs, decoding z linearly interpolated between their
          posterior means in as many steps as there are pairs (2 to 8), endpoints included."""
        x = self.likelihood.observe(x.to(self.device).float())
        if len(x) < 2:
            raise ValueError("diagnostic_images needs at least 2 images (a pair to interpolate between)")
        shape = x.shape[1:]
        r = min(4, math.isqrt(len(x) // 2))
        inputs = x[: 2 * r * r]
        recon = self.likelihood.mean(*self.decode(self.encode(inputs)[0]))
        rows = torch.stack([inputs.view(r, 2 * r, *shape), recon.view(r, 2 * r, *shape)], dim=1)  # (r, 2, 2r, C, H, W)
        pairs = min(8, len(x) // 2)
        steps = max(2, pairs)
        mu, _ = self.encode(x[: 2 * pairs])
        t = torch.linspace(0, 1, steps, device=mu.device)[None, :, None]  # (1, steps, 1)
        z = torch.lerp(mu[:pairs, None], mu[pairs:, None], t)  # (pairs, steps, L)
        interpolations = self.likelihood.mean(*self.decode(z.reshape(pairs * steps, -1)))
        return {"reconstructions": rows.reshape(-1, *shape).clamp(-1, 1),
                "interpolations": interpolations.clamp(-1, 1)}

    @torch.no_grad()
    def latent_statistics(self, x: torch.Tensor) -> dict[str, float]:
        """Dataset-level numbers for uint8 images (N, C, H, W), N in the hundreds or more: the active units
        of Burda et al. 2016 (Sec. 5.2) among the latent_dim dimensions."""
        x = self.likelihood.observe(x.to(self.device).float() / 127.5 - 1)
        mu = torch.cat([self.encode(chunk)[0] for chunk in x.split(256)])
        return {"active_units": int(active_units(mu)), "latent_dim": self.latent_dim}


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """Number of latent dimensions u with Cov_x(E_q[u|x]) > threshold (Burda et al. 2016, Sec. 5.2),
    from posterior means mu (N, L) of N inputs."""
    return (mu.float().var(dim=0) > threshold).sum()
