"""Samplers for diffusion models: each turns a denoiser into images, on any subset of timesteps.

- `DDPM`: ancestral sampling, Ho et al. 2020 (arXiv:2006.11239) Algorithm 2, respaced to K steps as
  in Nichol & Dhariwal 2021 (arXiv:2102.09672) Sec. 4: beta'_k = 1 - alpha_bar_{t_k} / alpha_bar_{t_{k-1}}.
- `DDIM`: Song, Meng & Ermon 2021 (arXiv:2010.02502) eq. 12, with eta (eta = 1 on the full step set
  is DDPM with sigma_t^2 = beta~_t).
- `DPMSolverPP2M`: DPM-Solver++(2M), Lu et al. 2022 (arXiv:2211.01095) Algorithm 2, a second-order
  multistep solver of the probability-flow ODE in data-prediction form.
- `DPMSolverPP3M`: its third-order multistep sibling (the "3M" of Lu et al.'s code; the update is the
  exact integral of the exponential integrator against the quadratic through the last three x_0
  estimates, derived in the class docstring).

A sampler sees the model only through `denoise(x_t, t) -> (x_0, eps)` and `alphas_cumprod`
(float64, length T), so it knows no family and no network. Timestep spacings follow the naming of
Lin et al. 2024 (arXiv:2305.08891) Table 2: leading, trailing, linspace; and two grids uniform in a
function of the noise level sigma_t = sqrt((1 - ab_t) / ab_t), snapped to the nearest of the T indices:
karras (Karras et al. 2022, arXiv:2206.00364, eq. 5 with rho = 7) and logsnr (uniform in
lambda = -log sigma, the grid DPM-Solver recommends, Lu et al. 2022, arXiv:2206.00927).

Flow samplers (`FlowEuler`, `FlowHeun`, `FlowAdamsBashforth`) integrate the ODE dx/dt = v(x, t) of a
flow-matching model (genbench.models.flow) from t = 1 (noise) to t = 0 (data); they see the model only
through `velocity(x_t, t)` with t a float tensor (N,) in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from genbench.validate import check_choice

Spacing = Literal["leading", "trailing", "linspace", "karras", "logsnr"]
Variance = Literal["beta", "beta_tilde"]
Denoiser = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Noise = Callable[[tuple[int, ...]], torch.Tensor]


def timesteps(num_timesteps: int, steps: int | None, spacing: Spacing,
              alphas_cumprod: torch.Tensor | None = None) -> list[int]:
    """Decreasing timestep indices t_K > ... > t_1 in 0..T-1 for a K-step sampler (K = None: all T).
    karras and logsnr need the schedule's `alphas_cumprod`; they always give K distinct indices."""
    check_choice("sampler.spacing", spacing, Spacing)
    T, K = num_timesteps, steps or num_timesteps
    if not 1 <= K <= T:
        raise ValueError(f"sampler.steps={steps} must be between 1 and the schedule's T={T}")
    if spacing in ("karras", "logsnr"):
        if alphas_cumprod is None:
            raise ValueError(f"sampler.spacing={spacing} needs the noise schedule (alphas_cumprod)")
        return sigma_grid(alphas_cumprod, K, spacing)
    if spacing == "leading":
        ts = [i * (T // K) for i in range(K)]
    elif spacing == "trailing":
        ts = [round(T - i * T / K) - 1 for i in range(K)][::-1]
    else:
        ts = [round(x) for x in torch.linspace(0, T - 1, K, dtype=torch.float64).tolist()]
    return sorted(set(ts), reverse=True)


def sigma_grid(alphas_cumprod: torch.Tensor, steps: int, spacing: Literal["karras", "logsnr"], rho: float = 7.0) -> list[int]:
    """K indices whose noise levels sigma_t = sqrt((1 - ab_t) / ab_t) (the VE sigma of a VP model, Karras
    et al. 2022 Table 1) follow a continuous grid from sigma_max (index T-1) to sigma_min (index 0):
    - karras: sigma_k = (sigma_max^(1/rho) + k / (K-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho (eq. 5);
    - logsnr: log sigma (= -lambda, half the log-SNR) uniform, which is eq. 5 as rho -> inf.
    Each sigma_k is snapped to the index nearest in log sigma; where two land on one index (the grid is
    denser than the T indices near sigma_min) the later ones move to the next free index, so the grid
    keeps K distinct indices and `nfe` is K without the schedule."""
    T, K = len(alphas_cumprod), steps
    log_sigma = 0.5 * (torch.log1p(-alphas_cumprod) - torch.log(alphas_cumprod))  # (T,) increasing, float64
    lo, hi = log_sigma[0].item(), log_sigma[-1].item()
    frac = torch.linspace(0, 1, K, dtype=torch.float64) if K > 1 else torch.zeros(1, dtype=torch.float64)  # 0 = sigma_max
    if spacing == "karras":
        s_max, s_min = math.exp(hi) ** (1 / rho), math.exp(lo) ** (1 / rho)
        target = rho * torch.log(s_max + frac * (s_min - s_max))
    else:
        target = hi + frac * (lo - hi)
    idx = torch.searchsorted(log_sigma, target).clamp(1, T - 1)
    nearest = torch.where((target - log_sigma[idx - 1]).abs() <= (log_sigma[idx] - target).abs(), idx - 1, idx)
    ts = sorted(nearest.tolist())  # increasing; now make them distinct, within 0..T-1
    for i in range(1, K):
        ts[i] = max(ts[i], ts[i - 1] + 1)
    for i in range(K - 1, -1, -1):
        ts[i] = min(ts[i], T - 1 if i == K - 1 else ts[i + 1] - 1)
    return ts[::-1]


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
        if self.spacing in ("karras", "logsnr"):  # K distinct indices by construction (sigma_grid)
            timesteps(num_timesteps, self.steps, "linspace")  # checks 1 <= K <= T
            return self.steps or num_timesteps
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
        for t, s in _pairs(timesteps(len(alphas_cumprod), self.steps, self.spacing, alphas_cumprod)):
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
        for t, s in _pairs(timesteps(len(alphas_cumprod), self.steps, self.spacing, alphas_cumprod)):
            ab_t, ab_s = _ab(alphas_cumprod, t), _ab(alphas_cumprod, s)
            x_0, eps = denoise(x, _t(x, t))
            sigma = self.eta * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
            # 1. "predicted x_0" and 2. "direction pointing to x_t" (eq. 12)
            x = math.sqrt(ab_s) * x_0 + math.sqrt(max(1 - ab_s - sigma**2, 0.0)) * eps
            # 3. random noise
            if s >= 0 and sigma > 0:
                x = x + sigma * noise(x.shape)
        return x


def _lambda(ab: float) -> float:
    """lambda_t = log(alpha_t / sigma_t) = log(ab_t / (1 - ab_t)) / 2: the DPM-Solvers' time variable."""
    return 0.5 * math.log(ab / (1 - ab))


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
        x0_prev, h_prev = None, None
        for t, s in _pairs(timesteps(len(alphas_cumprod), self.steps, self.spacing, alphas_cumprod)):
            x_0, _ = denoise(x, _t(x, t))
            if s < 0:  # the last step: sigma_s = 0, so x_s = alpha_s D = x_0 (first order)
                return x_0
            ab_t, ab_s = _ab(alphas_cumprod, t), _ab(alphas_cumprod, s)
            h = _lambda(ab_s) - _lambda(ab_t)
            if x0_prev is None:
                d = x_0
            else:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x_0 - (1 / (2 * r)) * x0_prev
            x = math.sqrt((1 - ab_s) / (1 - ab_t)) * x - math.sqrt(ab_s) * math.expm1(-h) * d
            x0_prev, h_prev = x_0, h
        return x


@dataclass
class DPMSolverPP3M(Sampler):
    """DPM-Solver++(3M): the multistep data-prediction solver of Lu et al. 2022 at third order. In
    lambda = log(alpha / sigma), the exact solution of the data-prediction ODE (Lu et al., arXiv:2211.01095) reads
        x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda x0(lambda) dlambda.
    With x0(lambda) replaced by the quadratic through the last three estimates (Newton form around
    lambda_s, steps h = lambda_t - lambda_s, h_0 and h_1 back), x0 ~ m_0 + d_1 u + d_2 u^2 / 2 with
    u = lambda - lambda_s, d_1 = f[0,1] + h_0 f[0,1,2] and d_2 = 2 f[0,1,2] (divided differences), the
    integral is exact:
        x_t = (sigma_t / sigma_s) x_s + alpha_t (A_0 m_0 + A_1 d_1 + A_2 d_2),
        A_0 = 1 - e^{-h},  A_1 = h - 1 + e^{-h},  A_2 = h^2 / 2 - A_1.
    The first step is first order (DDIM) and the second second order (A_2 term dropped, d_1 = f[0,1]);
    the last step lands on the data (sigma = 0) and returns the last x_0 estimate, as in `DPMSolverPP2M`."""

    steps: int | None = 20
    spacing: Spacing = "trailing"

    @torch.no_grad()
    def __call__(self, denoise: Denoiser, alphas_cumprod: torch.Tensor, x: torch.Tensor, noise: Noise) -> torch.Tensor:
        history: list[tuple[float, torch.Tensor]] = []  # (lambda, x_0 estimate), newest first
        for t, s in _pairs(timesteps(len(alphas_cumprod), self.steps, self.spacing, alphas_cumprod)):
            x_0, _ = denoise(x, _t(x, t))
            if s < 0:  # the last step: sigma_s = 0, so x_s = x_0
                return x_0
            ab_t, ab_s = _ab(alphas_cumprod, t), _ab(alphas_cumprod, s)
            history = [(_lambda(ab_t), x_0), *history[:2]]
            h = _lambda(ab_s) - history[0][0]
            a0 = -math.expm1(-h)
            a1 = h + math.expm1(-h)
            update = a0 * x_0
            if len(history) >= 2:  # 1. slope f[0,1] from the last two estimates
                (l0, m0), (l1, m1) = history[0], history[1]
                h0 = l0 - l1
                d1 = (m0 - m1) / h0
                if len(history) == 3:  # 2. curvature f[0,1,2] from the last three
                    l2, m2 = history[2]
                    h1 = l1 - l2
                    f012 = (d1 - (m1 - m2) / h1) / (h0 + h1)
                    d1 = d1 + h0 * f012
                    update = update + (h * h / 2 - a1) * 2 * f012
                update = update + a1 * d1
            # 3. the exponential-integrator step
            x = math.sqrt((1 - ab_s) / (1 - ab_t)) * x + math.sqrt(ab_s) * update
        return x


# ---- flow-matching ODE solvers ---------------------------------------------------------------
Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FlowSampler:
    """What every flow sampler shares: K steps on a grid 1 = t_0 > t_1 > ... > t_K = 0, uniform in t,
    or warped by Esser et al. 2024's (arXiv:2403.03206) resolution shift t' = shift t / (1 + (shift - 1) t)
    (their Sec. 5.3.2; shift > 1 spends more steps at high noise, shift = 1 is uniform)."""

    steps: int = 20
    shift: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"sampler.steps={self.steps} must be a whole number of steps, at least 1")
        if not self.shift > 0:
            raise ValueError(f"sampler.shift={self.shift} must be positive (1 = a uniform time grid)")

    def grid(self) -> list[float]:
        """t_0 = 1 > ... > t_K = 0, in float64."""
        t = torch.linspace(1, 0, self.steps + 1, dtype=torch.float64)
        return (self.shift * t / (1 + (self.shift - 1) * t)).tolist()

    def nfe(self) -> int:
        """Network evaluations per sample."""
        raise NotImplementedError


def _v(velocity: Velocity, x: torch.Tensor, t: float) -> torch.Tensor:
    return velocity(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32))


@dataclass
class FlowEuler(FlowSampler):
    """x_{k+1} = x_k + (t_{k+1} - t_k) v(x_k, t_k): first order, K evaluations (the sampler of Liu et al.
    2023, arXiv:2209.03003, Sec. 2)."""

    @torch.no_grad()
    def __call__(self, velocity: Velocity, x: torch.Tensor) -> torch.Tensor:
        ts = self.grid()
        for t, s in zip(ts, ts[1:]):
            x = x + (s - t) * _v(velocity, x, t)
        return x

    def nfe(self) -> int:
        return self.steps


@dataclass
class FlowHeun(FlowSampler):
    """Heun's method (explicit trapezoidal rule, second order), as in Karras et al. 2022 Alg. 1:
        1. predictor x' = x_k + (t_{k+1} - t_k) v(x_k, t_k)
        2. corrector x_{k+1} = x_k + (t_{k+1} - t_k) (v(x_k, t_k) + v(x', t_{k+1})) / 2, except on the last
           step, which lands on the data (t = 0) and stays an Euler step (their line 8: no correction
           when sigma_{i+1} = 0): 2K - 1 evaluations, and still second order overall.
    The network is never asked for v at t = 0, where the logit-normal density almost never trains it:
    on the same weights, correcting with that evaluation gave FID 83.3 where this gives 30.7 (README,
    Benchmarks: the flow_b32 rows of the ablation)."""

    @torch.no_grad()
    def __call__(self, velocity: Velocity, x: torch.Tensor) -> torch.Tensor:
        ts = self.grid()
        for t, s in zip(ts, ts[1:]):
            d = _v(velocity, x, t)
            x_pred = x + (s - t) * d
            x = x_pred if s == 0 else x + (s - t) * 0.5 * (d + _v(velocity, x_pred, s))
        return x

    def nfe(self) -> int:
        return 2 * self.steps - 1


def _adams_bashforth_weights(t_new: float, ts: list[float]) -> list[float]:
    """w_j = int_{ts[0]}^{t_new} L_j(t) dt for the Lagrange basis L_j through the points ts (newest first):
    the variable-step Adams-Bashforth weights, exact for polynomial v of degree len(ts) - 1."""
    weights = []
    for j, t_j in enumerate(ts):
        coef = [1.0]  # L_j's polynomial coefficients, lowest degree first
        for i, t_i in enumerate(ts):
            if i != j:  # times (t - t_i) / (t_j - t_i)
                coef = [(a - t_i * b) / (t_j - t_i) for a, b in zip([0.0, *coef], [*coef, 0.0])]
        antiderivative = lambda t: sum(c * t ** (k + 1) / (k + 1) for k, c in enumerate(coef))  # noqa: E731
        weights.append(antiderivative(t_new) - antiderivative(ts[0]))
    return weights


FlowOrder = Literal[2, 3]


@dataclass
class FlowAdamsBashforth(FlowSampler):
    """Variable-step Adams-Bashforth of order 2 or 3 (Hairer, Norsett & Wanner, "Solving ODEs I", III.1):
    x_{k+1} = x_k + sum_j w_j v_{k-j}, with w_j the integral over [t_k, t_{k+1}] of the Lagrange basis
    through the last `order` velocities. One new evaluation per step, so about K evaluations. Starting
    values: order 2 takes an Euler first step (local error O(h^2) once: global order 2 kept); order 3 a
    Heun first step (local error O(h^3), one extra evaluation: K + 1 in all), then AB2 once, then AB3."""

    order: FlowOrder = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.order not in (2, 3):
            raise ValueError(f"sampler.order={self.order} is not one of: 2, 3")

    @torch.no_grad()
    def __call__(self, velocity: Velocity, x: torch.Tensor) -> torch.Tensor:
        ts = self.grid()
        history: list[tuple[float, torch.Tensor]] = []  # (t, v), newest first
        for k, (t, s) in enumerate(zip(ts, ts[1:])):
            history = [(t, _v(velocity, x, t)), *history[: self.order - 1]]
            if k == 0 and self.order == 3:  # Heun start
                x_pred = x + (s - t) * history[0][1]
                x = x + (s - t) * 0.5 * (history[0][1] + _v(velocity, x_pred, s))
                continue
            weights = _adams_bashforth_weights(s, [t_j for t_j, _ in history])
            x = x + sum(w * v for w, (_, v) in zip(weights, history))
        return x

    def nfe(self) -> int:
        return self.steps + (1 if self.order == 3 else 0)
