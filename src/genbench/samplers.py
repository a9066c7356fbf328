"""Samplers for diffusion models: each turns a denoiser into images, on any subset of timesteps.

- `DDPM`: ancestral sampling, Ho et al. 2020 (arXiv:2006.11239) Algorithm 2, respaced to K steps as
  in Nichol & Dhariwal 2021 (arXiv:2102.09672) Sec. 4: beta'_k = 1 - alpha_bar_{t_k} / alpha_bar_{t_{k-1}}.
- `DDIM`: Song, Meng & Ermon 2021 (arXiv:2010.02502) eq. 12, with eta (eta = 1 on the full step set
  is DDPM with sigma_t^2 = beta~_t).
- `DPMSolverPP2M`: DPM-Solver++(2M), Lu et al. 2022 (arXiv:2211.01095) Algorithm 2, a second-order
  multistep solver of the probability-flow ODE in data-prediction form.

A sampler sees the model only through `denoise(x_t, t) -> (x_0, eps)` and `alphas_cumprod`
(float64, length T), so it knows no family and no network. Timestep spacings follow the naming of
Lin et al. 2024 (arXiv:2305.08891) Table 2: leading, trailing, linspace.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from genbench.validate import check_choice

Spacing = Literal["leading", "trailing", "linspace"]
Variance = Literal["beta", "beta_tilde"]
Denoiser = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Noise = Callable[[tuple[int, ...]], torch.Tensor]


def timesteps(num_timesteps: int, steps: int | None, spacing: Spacing) -> list[int]:
    """Decreasing timestep indices t_K > ... > t_1 in 0..T-1 for a K-step sampler (K = None: all T)."""
    check_choice("sampler.spacing", spacing, Spacing)
    T, K = num_timesteps, steps or num_timesteps
    if not 1 <= K <= T:
        raise ValueError(f"sampler.steps={steps} must be between 1 and the schedule's T={T}")
    if spacing == "leading":
        ts = [i * (T // K) for i in range(K)]
    elif spacing == "trailing":
        ts = [round(T - i * T / K) - 1 for i in range(K)][::-1]
    else:
        ts = [round(x) for x in torch.linspace(0, T - 1, K, dtype=torch.float64).tolist()]
    return sorted(set(ts), reverse=True)


def _pairs(ts: list[int]) -> list[tuple[int, int]]:
    """(t, s) steps from t to the next lower s; s = -1 stands for the data (alpha_bar = 1)."""
    return list(zip(ts, ts[1:] + [-1]))


def _ab(alphas_cumprod: torch.Tensor, t: int) -> float:
    return 1.0 if t < 0 else float(alphas_cumprod[t])


def _t(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


@dataclass
class Sampler:
    """What every sampler shares: K of the T timesteps, picked by a spacing."""

    steps: int | None = None  # K; None = all T
    spacing: Spacing = "leading"

    def __post_init__(self) -> None:
        """Out-of-range values fail when the sampler is built, not at the first sample; steps <= T is
        checked against the schedule when sampling."""
        check_choice("sampler.spacing", self.spacing, Spacing)
        if self.steps is not None and (isinstance(self.steps, bool) or self.steps < 1):
            raise ValueError(f"sampler.steps={self.steps} must be at least 1 (or null for all T timesteps)")

    def nfe(self, num_timesteps: int) -> int:
        """Network evaluations per sample on a T-step schedule."""
        return len(timesteps(num_timesteps, self.steps, self.spacing))


@dataclass
class DDPM(Sampler):
    """Ancestral sampling: x_s ~ N(mu~(x_t, x_0_hat), sigma^2 I), sigma^2 = beta~' or beta' (Alg. 2, eqs. 6-7)."""

    steps: int | None = None  # None = all T steps, exactly Algorithm 2
    variance: Variance = "beta_tilde"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("sampler.variance", self.variance, Variance)

    @torch.no_grad()
    def __call__(self, denoise: Denoiser, alphas_cumprod: torch.Tensor, x: torch.Tensor, noise: Noise) -> torch.Tensor:
        for t, s in _pairs(timesteps(len(alphas_cumprod), self.steps, self.spacing)):
            ab_t, ab_s = _ab(alphas_cumprod, t), _ab(alphas_cumprod, s)
            beta = 1 - ab_t / ab_s  # beta'_t of the respaced chain
            x_0, _ = denoise(x, _t(x, t))
            # 1. posterior mean, eq. 7, with x_0 replaced by the denoiser's estimate
            x = (math.sqrt(ab_s) * beta / (1 - ab_t)) * x_0 + (math.sqrt(1 - beta) * (1 - ab_s) / (1 - ab_t)) * x
            # 2. add noise, except on the last step (Alg. 2: z = 0 if t = 1)
            if s >= 0:
                var = beta * (1 - ab_s) / (1 - ab_t) if self.variance == "beta_tilde" else beta
                x = x + math.sqrt(var) * noise(x.shape)
        return x


@dataclass
class DDIM(Sampler):
    """x_s = sqrt(ab_s) x_0 + sqrt(1 - ab_s - sigma^2) eps + sigma z, with
    sigma = eta sqrt((1 - ab_s) / (1 - ab_t)) sqrt(1 - ab_t / ab_s) (Song et al. 2021, eqs. 12 and 16)."""

    steps: int | None = 50
    eta: float = 0.0
    spacing: Spacing = "leading"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta < 0:
            raise ValueError(f"sampler.eta={self.eta} must be >= 0")

    @torch.no_grad()
    def __call__(self, denoise: Denoiser, alphas_cumprod: torch.Tensor, x: torch.Tensor, noise: Noise) -> torch.Tensor:
        for t, s in _pairs(timesteps(len(alphas_cumprod), self.steps, self.spacing)):
            ab_t, ab_s = _ab(alphas_cumprod, t), _ab(alphas_cumprod, s)
            x_0, eps = denoise(x, _t(x, t))
            sigma = self.eta * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
            # 1. "predicted x_0" and 2. "direction pointing to x_t" (eq. 12)
            x = math.sqrt(ab_s) * x_0 + math.sqrt(max(1 - ab_s - sigma**2, 0.0)) * eps
            # 3. random noise
            if s >= 0 and sigma > 0:
                x = x + sigma * noise(x.shape)
        return x


@dataclass
class DPMSolverPP2M(Sampler):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), with alpha_t = sqrt(ab_t), sigma_t = sqrt(1 - ab_t),
    lambda_t = log(alpha_t / sigma_t) and h_i = lambda_{t_i} - lambda_{t_{i-1}}:
        x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D_i,
        D_i = (1 + 1 / (2 r_i)) x0_{i-1} - 1 / (2 r_i) x0_{i-2},  r_i = h_{i-1} / h_i,
    first order (D_1 = x0_0) on the first step, and on the last step, which lands on the data
    (sigma = 0, lambda = inf) and so returns the last x_0 estimate."""

    steps: int | None = 20
    spacing: Spacing = "trailing"

    @torch.no_grad()
    def __call__(self, denoise: Denoiser, alphas_cumprod: torch.Tensor, x: torch.Tensor, noise: Noise) -> torch.Tensor:
        def lam(ab: float) -> float:
            return 0.5 * math.log(ab / (1 - ab))

        x0_prev, h_prev = None, None
        for t, s in _pairs(timesteps(len(alphas_cumprod), self.steps, self.spacing)):
            x_0, _ = denoise(x, _t(x, t))
            if s < 0:  # the last step: sigma_s = 0, so x_s = alpha_s D = x_0 (first order)
                return x_0
            ab_t, ab_s = _ab(alphas_cumprod, t), _ab(alphas_cumprod, s)
            h = lam(ab_s) - lam(ab_t)
            if x0_prev is None:
                d = x_0
            else:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x_0 - (1 / (2 * r)) * x0_prev
            x = math.sqrt((1 - ab_s) / (1 - ab_t)) * x - math.sqrt(ab_s) * math.expm1(-h) * d
            x0_prev, h_prev = x_0, h
        return x
