"""Denoising diffusion probabilistic models.

Papers:
- Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models", arXiv:2006.11239.
- Salimans & Ho 2022, "Progressive Distillation", arXiv:2202.00512 (v-prediction, Sec. 4).
- Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting", arXiv:2303.09556.

Forward process q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), in closed form
q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (eq. 4). The network predicts eps, x_0
or v; all three are converted to x_0 and eps in one place (`_to_x0_eps`). Training minimises
L_simple (eq. 14), optionally min-SNR weighted; sampling is ancestral (Algorithm 2).
Index i = 0..T-1 stands for the paper's t = i + 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import nn

from genbench.models.base import GenerativeModel, LossTerm, randn
from genbench.schedules import NoiseSchedule
from genbench.validate import check_choice

Prediction = Literal["eps", "x0", "v"]
Weighting = Literal["uniform", "min_snr"]
Variance = Literal["beta", "beta_tilde"]


def _gather(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """a[t] shaped (N, 1, 1, 1) for broadcasting over images."""
    return a[t][:, None, None, None]


class Diffusion(GenerativeModel):
    def __init__(
        self,
        image_shape: tuple[int, int, int],
        network: Callable[..., nn.Module],
        schedule: NoiseSchedule,
        prediction: Prediction = "eps",
        loss_weighting: Weighting = "uniform",
        min_snr_gamma: float = 5.0,
        variance: Variance = "beta_tilde",
        clip_denoised: bool = True,
    ):
        super().__init__()
        check_choice("model.prediction", prediction, Prediction)
        check_choice("model.loss_weighting", loss_weighting, Weighting)
        check_choice("model.variance", variance, Variance)
        self.image_shape = tuple(image_shape)
        self.net = network(image_shape=self.image_shape)
        self.schedule = schedule
        self.prediction, self.loss_weighting, self.min_snr_gamma = prediction, loss_weighting, min_snr_gamma
        self.variance, self.clip_denoised = variance, clip_denoised

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
        """The regression target for model.prediction: eps, x_0, or v = sqrt(ab) eps - sqrt(1-ab) x_0."""
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x_0
        return _gather(self.sqrt_alpha_bar, t) * eps - _gather(self.sqrt_one_minus_alpha_bar, t) * x_0

    def _to_x0_eps(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert the network output to (x_0, eps), inverting eq. 4 and the definition of v."""
        a, s = _gather(self.sqrt_alpha_bar, t), _gather(self.sqrt_one_minus_alpha_bar, t)
        if self.prediction == "eps":
            return (x_t - s * out) / a, out
        if self.prediction == "x0":
            return out, (x_t - a * out) / s
        return a * x_t - s * out, s * x_t + a * out  # v-prediction (Salimans & Ho 2022, Sec. 4 and App. D)

    def predict_x0_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoiser's estimates of x_0 and eps at (x_t, t); x_0 is clipped to [-1, 1] if clip_denoised."""
        x_0, eps = self._to_x0_eps(self.net(x_t, t), x_t, t)
        if self.clip_denoised:
            x_0 = x_0.clamp(-1, 1)
            eps = (x_t - _gather(self.sqrt_alpha_bar, t) * x_0) / _gather(self.sqrt_one_minus_alpha_bar, t)
        return x_0, eps

    # ---- training ------------------------------------------------------------------------
    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Per-sample weight: 1 (L_simple, eq. 14) or min-SNR-gamma (Hang et al. 2023, eq. 10) expressed
        for the chosen target: min(SNR, g)/SNR for eps, min(SNR, g) for x_0, min(SNR, g)/(SNR + 1) for v."""
        if self.loss_weighting == "uniform":
            return torch.ones_like(t, dtype=torch.float32)
        snr = self.snr[t]
        clipped = snr.clamp(max=self.min_snr_gamma)
        return {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[self.prediction]

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
    def p_sample(self, x_t: torch.Tensor, i: int, generator: torch.Generator | None) -> torch.Tensor:
        """One step of Algorithm 2: x_{t-1} ~ p_theta(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I), with mu_theta the
        posterior mean at the predicted x_0, and sigma_t^2 = beta_t or beta~_t (Sec. 3.2)."""
        t = torch.full((x_t.shape[0],), i, device=x_t.device, dtype=torch.long)
        x_0, _ = self.predict_x0_eps(x_t, t)
        mean, posterior_var = self.q_posterior(x_0, x_t, t)
        if i == 0:
            return mean  # no noise at the last step
        var = posterior_var if self.variance == "beta_tilde" else _gather(self.betas, t)
        z = randn(x_t.shape, generator, x_t.device)
        return mean + var.sqrt() * z

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Algorithm 2: x_T ~ N(0, I), then T ancestral steps down to x_0."""
        x = randn((n, *self.image_shape), generator, self.device)
        for i in reversed(range(self.num_timesteps)):
            x = self.p_sample(x, i, generator)
        return x.clamp(-1, 1)

    def sampling_info(self) -> dict[str, object]:
        return {"sampler": "ddpm_ancestral", "nfe": self.num_timesteps, "variance": self.variance}
