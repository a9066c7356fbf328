"""Denoising diffusion probabilistic models.

Papers:
- Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models", arXiv:2006.11239.
- Salimans & Ho 2022, "Progressive Distillation", arXiv:2202.00512 (v-prediction, Sec. 4).
- Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting", arXiv:2303.09556.

Forward process q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), in closed form
q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (eq. 4). What the network predicts is an
object picked by `_target_` (conf/prediction/: `EpsPrediction`, `X0Prediction`, `VPrediction`; the
shorthand model.prediction=eps|x0|v builds the same), which knows its regression target, how to turn
a prediction back into (x_0, eps), and how its error scales against the error on x_0. Training
minimises L_simple (eq. 14), optionally min-SNR weighted. Sampling is delegated to a sampler from
`genbench.samplers` (DDPM ancestral, DDIM, DPM-Solver++). `bits_per_dim` evaluates the variational
bound of eq. 5 with the discretized decoder of eq. 13 (`genbench.likelihoods`, shared with the VAE).
Index i = 0..T-1 stands for the paper's t = i + 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import nn

from genbench.likelihoods import discretized_gaussian_log_prob
from genbench.models.base import GenerativeModel, LossTerm, randn
from genbench.samplers import DDPM, Sampler
from genbench.schedules import NoiseSchedule
from genbench.validate import check_choice, check_positive

Weighting = Literal["uniform", "min_snr"]


def _gather(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """a[t] shaped (N, 1, 1, 1) for broadcasting over images."""
    return a[t][:, None, None, None]


# ---- what the network predicts ---------------------------------------------------------------
# Each in terms of alpha_t = sqrt(alpha_bar_t) and sigma_t = sqrt(1 - alpha_bar_t), with x_t = alpha_t x_0
# + sigma_t eps (eq. 4), broadcastable (N, 1, 1, 1) tensors.
class Prediction:
    """The network's output parameterisation: its target, its inverse, and its error scale."""

    def target(self, x_0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_x0_eps(self, out: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor,
                  sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_0, eps) from the network output, inverting eq. 4 (and the target's definition)."""
        raise NotImplementedError

    def error_scale(self, snr: torch.Tensor) -> torch.Tensor:
        """||target error||^2 / ||x_0 error||^2 at SNR = alpha^2 / sigma^2, the same for every error."""
        raise NotImplementedError


class EpsPrediction(Prediction):
    """eps_theta(x_t, t) (Ho et al. 2020, eq. 11): x_0 = (x_t - sigma eps) / alpha, so an error on eps
    is alpha / sigma times the error it makes on x_0, and its square SNR times larger."""

    def target(self, x_0, eps, alpha, sigma):
        return eps

    def to_x0_eps(self, out, x_t, alpha, sigma):
        return (x_t - sigma * out) / alpha, out

    def error_scale(self, snr):
        return snr


class X0Prediction(Prediction):
    """x_0 itself: eps = (x_t - alpha x_0) / sigma."""

    def target(self, x_0, eps, alpha, sigma):
        return x_0

    def to_x0_eps(self, out, x_t, alpha, sigma):
        return out, (x_t - alpha * out) / sigma

    def error_scale(self, snr):
        return torch.ones_like(snr)


class VPrediction(Prediction):
    """v = alpha eps - sigma x_0 (Salimans & Ho 2022, Sec. 4 and App. D): x_0 = alpha x_t - sigma v,
    eps = sigma x_t + alpha v, so an error on v is 1 / sigma times the error it makes on x_0, and its
    square 1 / sigma^2 = SNR + 1 times larger."""

    def target(self, x_0, eps, alpha, sigma):
        return alpha * eps - sigma * x_0

    def to_x0_eps(self, out, x_t, alpha, sigma):
        return alpha * x_t - sigma * out, sigma * x_t + alpha * out

    def error_scale(self, snr):
        return snr + 1


PredictionName = Literal["eps", "x0", "v"]
PREDICTIONS: dict[str, type[Prediction]] = {"eps": EpsPrediction, "x0": X0Prediction, "v": VPrediction}  # model.prediction=NAME


class Diffusion(GenerativeModel):
    def __init__(
        self,
        image_shape: tuple[int, int, int],
        network: Callable[..., nn.Module],
        schedule: NoiseSchedule,
        prediction: Prediction | PredictionName = "eps",
        loss_weighting: Weighting = "uniform",
        min_snr_gamma: float = 5.0,
        clip_denoised: bool = True,
        sampler: Sampler | None = None,
        vlb_timesteps: int = 100,
    ):
        super().__init__()
        if isinstance(prediction, str):  # the shorthand model.prediction=eps|x0|v
            check_choice("model.prediction", prediction, PredictionName)
            prediction = PREDICTIONS[prediction]()
        check_choice("model.loss_weighting", loss_weighting, Weighting)
        check_positive("model.min_snr_gamma", min_snr_gamma)
        check_positive("model.vlb_timesteps", vlb_timesteps)
        if sampler is not None and not isinstance(sampler, Sampler):
            raise ValueError(f"model.sampler: {type(sampler).__name__} is not a diffusion sampler; a diffusion model takes "
                             "sampler=ddpm|ddim|dpm_solver|dpm_solver_3m (conf/sampler/)")
        self.image_shape = tuple(image_shape)
        self.net = network(image_shape=self.image_shape)
        self.schedule = schedule
        self.prediction, self.loss_weighting, self.min_snr_gamma = prediction, loss_weighting, min_snr_gamma
        self.clip_denoised, self.vlb_timesteps = clip_denoised, vlb_timesteps
        self.sampler = sampler if sampler is not None else DDPM()

        # Coefficients in float64, stored as float32 buffers (derivable, so not in the state dict).
        betas = schedule.betas
        alpha_bar = schedule.alphas_cumprod
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        coef = {
            "betas": betas,
            "sqrt_alpha_bar": alpha_bar.sqrt(),
            "sqrt_one_minus_alpha_bar": (1 - alpha_bar).sqrt(),
            "snr": alpha_bar / (1 - alpha_bar),
            # posterior q(x_{t-1} | x_t, x_0), eqs. 6-7
            "posterior_mean_coef_x0": alpha_bar_prev.sqrt() * betas / (1 - alpha_bar),
            "posterior_mean_coef_xt": (1 - betas).sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar),
            "posterior_variance": betas * (1 - alpha_bar_prev) / (1 - alpha_bar),
        }
        for name, value in coef.items():
            self.register_buffer(name, value.float(), persistent=False)

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    # ---- the forward process -------------------------------------------------------------
    def q_sample(self, x_0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Sample from q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (eq. 4)."""
        return _gather(self.sqrt_alpha_bar, t) * x_0 + _gather(self.sqrt_one_minus_alpha_bar, t) * eps

    def q_posterior(self, x_0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (eqs. 6-7)."""
        mean = _gather(self.posterior_mean_coef_x0, t) * x_0 + _gather(self.posterior_mean_coef_xt, t) * x_t
        return mean, _gather(self.posterior_variance, t)

    # ---- what the network predicts -------------------------------------------------------
    def target(self, x_0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target of model.prediction at t."""
        return self.prediction.target(x_0, eps, _gather(self.sqrt_alpha_bar, t), _gather(self.sqrt_one_minus_alpha_bar, t))

    def _to_x0_eps(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert the network output to (x_0, eps)."""
        return self.prediction.to_x0_eps(out, x_t, _gather(self.sqrt_alpha_bar, t), _gather(self.sqrt_one_minus_alpha_bar, t))

    def predict_x0_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoiser's estimates of x_0 and eps at (x_t, t); x_0 is clipped to [-1, 1] if clip_denoised."""
        x_0, eps = self._to_x0_eps(self.net(x_t, t), x_t, t)
        if self.clip_denoised:
            x_0 = x_0.clamp(-1, 1)
            eps = (x_t - _gather(self.sqrt_alpha_bar, t) * x_0) / _gather(self.sqrt_one_minus_alpha_bar, t)
        return x_0, eps

    # ---- training ------------------------------------------------------------------------
    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Per-sample weight: 1 (L_simple, eq. 14) or min-SNR-gamma (Hang et al. 2023, eq. 10), which weighs
        the error on x_0 by min(SNR, gamma): on the chosen target that is min(SNR, gamma) / error_scale(SNR),
        i.e. min(SNR, g)/SNR for eps, min(SNR, g) for x_0, min(SNR, g)/(SNR + 1) for v."""
        if self.loss_weighting == "uniform":
            return torch.ones_like(t, dtype=torch.float32)
        snr = self.snr[t]
        return snr.clamp(max=self.min_snr_gamma) / self.prediction.error_scale(snr)

    def training_losses(self, batch: torch.Tensor) -> Iterator[LossTerm]:
        """Algorithm 1: t ~ U{1..T}, eps ~ N(0, I), regress the target on the network output."""
        x_0 = batch
        t = torch.randint(0, self.num_timesteps, (x_0.shape[0],), device=x_0.device)
        eps = torch.randn_like(x_0)
        out = self.net(self.q_sample(x_0, t, eps), t)
        mse = (out.float() - self.target(x_0, eps, t)).pow(2).mean(dim=(1, 2, 3))  # (N,)
        yield LossTerm("loss", (self.loss_weight(t) * mse).mean(), "model", {"mse": mse.mean().detach()})

    # ---- sampling ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_T ~ N(0, I), then the sampler's steps down to x_0 (Algorithm 2 with the DDPM sampler)."""
        x_T = randn((n, *self.image_shape), generator, self.device)
        x_0 = self.sampler(self.predict_x0_eps, self.schedule.alphas_cumprod, x_T, lambda shape: randn(shape, generator, self.device))
        return x_0.clamp(-1, 1)

    def sampling_info(self) -> dict[str, object]:
        return {"sampler": type(self.sampler).__name__, "nfe": self.sampler.nfe(self.num_timesteps),
                **{f"sampler_{k}": v for k, v in vars(self.sampler).items()}}

    # ---- likelihood ----------------------------------------------------------------------
    @torch.no_grad()
    def bits_per_dim(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The variational bound of eq. 5, L = L_T + sum_{t=2}^T L_{t-1} + L_0, per image in bits/dim.

        - L_T = KL(q(x_T | x_0) || N(0, I)), exact.
        - L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) with sigma_t^2 = beta~_t, for t >= 2. The
          sum is estimated without bias from `vlb_timesteps` stratified timesteps per image,
          (T - 1) * mean_k L_{t_k - 1}; vlb_timesteps >= T - 1 evaluates every term.
        - L_0 = -log p_theta(x_0 | x_1), the discretized Gaussian decoder of eq. 13 with sigma_1^2 = beta_1.
        The network's x_0 estimate is not clipped here: clipping changes the model being scored."""
        x_0 = x.to(self.device).float() / 127.5 - 1  # (N, C, H, W) in [-1, 1], 256 levels
        n, dims, T = x_0.shape[0], x_0[0].numel(), self.num_timesteps
        to_bits = 1.0 / (dims * math.log(2.0))

        def sum_dims(v: torch.Tensor) -> torch.Tensor:
            return v.flatten(1).sum(1)

        # L_T: KL of N(sqrt(ab_T) x_0, 1 - ab_T) from N(0, 1), per dimension
        ab_T = self.schedule.alphas_cumprod[-1].item()
        prior = sum_dims(0.5 * (ab_T * x_0**2 + (1 - ab_T) - 1 - math.log(1 - ab_T)))

        # L_0: discretized decoder at t = 1 (index 0), where the posterior mean is x_0_hat itself
        t0 = torch.zeros(n, dtype=torch.long, device=self.device)
        x_1 = self.q_sample(x_0, t0, randn(x_0.shape, generator, self.device))
        x0_hat, _ = self._to_x0_eps(self.net(x_1, t0).float(), x_1, t0)
        log_sigma_1 = torch.full_like(x0_hat, 0.5 * math.log(self.schedule.betas[0].item()))  # sigma_1^2 = beta_1
        decoder = -sum_dims(discretized_gaussian_log_prob(x_0, x0_hat, log_sigma_1))

        # sum_{t=2}^T L_{t-1}: K stratified indices per image in 1..T-1
        k = min(self.vlb_timesteps, T - 1)
        if k == T - 1:
            ts = torch.arange(1, T, device=self.device).expand(n, -1)  # every term
        else:
            edges = torch.linspace(1, T, k + 1, dtype=torch.float64)
            u = torch.rand((n, k), generator=generator, dtype=torch.float64)
            ts = (edges[:-1] + u * (edges[1:] - edges[:-1])).floor().long().clamp(1, T - 1).to(self.device)  # (N, K)
        terms = torch.zeros(n, device=self.device)
        for j in range(k):
            t = ts[:, j]
            x_t = self.q_sample(x_0, t, randn(x_0.shape, generator, self.device))
            true_mean, true_var = self.q_posterior(x_0, x_t, t)
            x0_hat, _ = self._to_x0_eps(self.net(x_t, t).float(), x_t, t)
            model_mean, _ = self.q_posterior(x0_hat, x_t, t)
            terms += sum_dims(0.5 * (true_mean - model_mean) ** 2 / true_var)  # equal variances: KL is the mean term
        terms = terms * (T - 1) / k
        return {"vlb": (prior + terms + decoder) * to_bits, "vlb_prior": prior * to_bits, "vlb_decoder": decoder * to_bits}

