"""Noise schedules beta_1..beta_T for diffusion models, computed in float64.

- linear:  Ho et al. 2020 (arXiv:2006.11239), beta_t linear from 1e-4 to 0.02, T = 1000.
- cosine:  Nichol & Dhariwal 2021 (arXiv:2102.09672) eq. 17, s = 0.008, beta_t clipped at 0.999.
- sigmoid: Jabri et al. 2022 (arXiv:2212.11972) / Chen 2023 (arXiv:2301.10972), alpha_bar from a
           shifted sigmoid.

Every schedule is a `NoiseSchedule`, which exposes `betas` and `alphas_cumprod` (float64, length T).
Index i = 0..T-1 stands for the paper's t = i + 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NoiseSchedule:
    betas: torch.Tensor  # (T,) float64, beta_t in (0, 1)

    def __post_init__(self) -> None:
        b = self.betas
        if b.dtype != torch.float64 or b.ndim != 1 or len(b) < 2:
            raise ValueError("a noise schedule needs a 1-D float64 tensor of at least 2 betas")
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("every beta_t must lie in (0, 1); check schedule.beta_start / beta_end")

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> torch.Tensor:
        return 1.0 - self.betas

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """alpha_bar_t = prod_{s<=t} (1 - beta_s) (Ho et al. 2020, above eq. 4)."""
        return torch.cumprod(self.alphas, dim=0)


def _check_steps(num_timesteps: int) -> None:
    if num_timesteps < 2:
        raise ValueError(f"schedule.num_timesteps must be at least 2, got {num_timesteps}")


def _check_max_beta(max_beta: float) -> None:
    if not 0 < max_beta < 1:
        raise ValueError(f"schedule.max_beta={max_beta} must be in (0, 1), e.g. 0.999")


def linear(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """Ho et al. 2020, Sec. 4: beta_t from beta_start to beta_end, linearly in t."""
    _check_steps(num_timesteps)
    if not 0 < beta_start < beta_end < 1:
        raise ValueError(f"schedule needs 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
    return NoiseSchedule(torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64))


def _betas_from_alpha_bar(alpha_bar: torch.Tensor, max_beta: float) -> torch.Tensor:
    """beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, for alpha_bar given at t = 0..T."""
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def cosine(num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Nichol & Dhariwal 2021 eq. 17: alpha_bar_t = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi/2)."""
    _check_steps(num_timesteps)
    _check_max_beta(max_beta)
    if s < 0:
        raise ValueError(f"schedule.s={s} must be non-negative (the paper's offset is 0.008)")
    t = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return NoiseSchedule(_betas_from_alpha_bar(f / f[0], max_beta))


def sigmoid(
    num_timesteps: int = 1000, start: float = -3.0, end: float = 3.0, tau: float = 1.0, max_beta: float = 0.999
) -> NoiseSchedule:
    """Jabri et al. 2022 / Chen 2023 Alg. 1: alpha_bar_t = (-sig((t (end - start) + start) / tau) + sig(end / tau))
    / (sig(end / tau) - sig(start / tau)), for t in [0, 1]."""
    _check_steps(num_timesteps)
    _check_max_beta(max_beta)
    if not start < end or tau <= 0:
        raise ValueError(f"sigmoid schedule needs start < end and tau > 0, got {start}, {end}, {tau}")
    t = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    v_start, v_end = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64)), torch.sigmoid(
        torch.tensor(end / tau, dtype=torch.float64)
    )
    alpha_bar = (v_end - torch.sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start)
    alpha_bar = alpha_bar.clamp(min=1e-12)  # alpha_bar_T would be exactly 0
    return NoiseSchedule(_betas_from_alpha_bar(alpha_bar, max_beta))
