"""Flow matching with the straight (rectified-flow) path.

Papers:
- Lipman et al. 2023, "Flow Matching for Generative Modeling", arXiv:2210.02747: regress a velocity
  field on the conditional field u_t(x | x_0) of a chosen probability path (eqs. 5-9; the optimal-transport
  path of eq. 20 with sigma_min = 0 is the line below).
- Liu, Gong & Liu 2023, "Flow Straight and Fast", arXiv:2209.03003 (rectified flow, eq. 1).
- Esser et al. 2024, "Scaling Rectified Flow Transformers" (SD3), arXiv:2403.03206: timesteps from a
  logit-normal density (Sec. 3.1), the best of their 61 variants; the sampling shift (Sec. 5.3.2).
- Chen et al. 2018, "Neural Ordinary Differential Equations", arXiv:1806.07366, and Grathwohl et al. 2019,
  "FFJORD", arXiv:1810.01367: the log-density of a continuous flow (instantaneous change of variables)
  with Hutchinson's trace estimator.
- Ho et al. 2019, "Flow++", arXiv:1902.00275, Sec. 3.1: dequantization turns a density on R^D into a
  bound on the probability of 8-bit data.

Convention (SD3's and Liu et al.'s, with t running the other way from Lipman et al.): t = 0 is data and
t = 1 is noise, the same orientation as DDPM's index, so
    x_t = (1 - t) x_0 + t eps,   eps ~ N(0, I),   the velocity target v = dx_t/dt = eps - x_0,
and the network v_theta(x_t, t) is trained by L = E_{t, x_0, eps} ||v_theta(x_t, t) - (eps - x_0)||^2
(Lipman et al. eq. 9). Samples solve dx/dt = v_theta(x, t) from x_1 ~ N(0, I) at t = 1 down to t = 0
with a sampler from `genbench.samplers` (FlowEuler, FlowHeun, FlowAdamsBashforth).

The network is the diffusion family's UNet (genbench.networks.unet), whose sinusoidal embedding was made
for DDPM's integer indices 0..999; it gets t * TIME_SCALE (TIME_SCALE = 1000), so the flow's t in [0, 1]
spans the same embedding range, frequencies and all, as DDPM's timesteps do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from genbench.models.base import GenerativeModel, LossTerm, randn
from genbench.samplers import FlowHeun, FlowSampler
from genbench.validate import check_choice, check_positive

TIME_SCALE = 1000.0  # the UNet sees t * 1000: DDPM's index range, for which its time embedding was sized


# ---- where the training timesteps come from ---------------------------------------------------
class TimeDistribution:
    """A density on (0, 1) that training draws t from."""

    def __call__(self, n: int, device: torch.device) -> torch.Tensor:
        """(n,) float32 timesteps."""
        raise NotImplementedError


@dataclass
class LogitNormal(TimeDistribution):
    """t = sigmoid(u), u ~ N(logit_mean, logit_std^2) (Esser et al. 2024, Sec. 3.1): weights the middle of
    the path, where the velocity is hardest to predict; logit_mean > 0 moves weight towards noise.
    Their best setting is logit_mean = 0, logit_std = 1. Its density vanishes at both ends (P(t < 0.05) is
    0.16% at (0, 1)), so a sampler that evaluates the network there meets a barely trained network;
    uniform_weight = p draws t ~ U(0, 1) instead with probability p, the density
    (1 - p) logit-normal + p, which is at least p everywhere (p = 0: Esser et al.'s, the same draws)."""

    logit_mean: float = 0.0
    logit_std: float = 1.0
    uniform_weight: float = 0.0

    def __post_init__(self) -> None:
        check_positive("model.time_sampling.logit_std", self.logit_std)
        if not 0 <= self.uniform_weight <= 1:
            raise ValueError(f"model.time_sampling.uniform_weight={self.uniform_weight} must be a probability in [0, 1], "
                             "e.g. 0.1; 0 = logit-normal alone")

    def __call__(self, n: int, device: torch.device) -> torch.Tensor:
        t = torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(n, device=device))
        if self.uniform_weight > 0:
            t = torch.where(torch.rand(n, device=device) < self.uniform_weight, torch.rand(n, device=device), t)
        return t


@dataclass
class Uniform(TimeDistribution):
    """t ~ U(0, 1): the plain flow-matching objective of Lipman et al. (eq. 9)."""

    def __call__(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.rand(n, device=device)


TimeSamplingName = Literal["logit_normal", "uniform"]
TIME_SAMPLINGS: dict[str, type[TimeDistribution]] = {"logit_normal": LogitNormal, "uniform": Uniform}  # model.time_sampling=NAME


class Flow(GenerativeModel):
    def __init__(
        self,
        image_shape: tuple[int, int, int],
        network: Callable[..., nn.Module],
        time_sampling: TimeDistribution | TimeSamplingName = "logit_normal",
        sampler: FlowSampler | None = None,
        likelihood_steps: int = 20,
    ):
        super().__init__()
        if isinstance(time_sampling, str):  # the shorthand model.time_sampling=logit_normal|uniform
            check_choice("model.time_sampling", time_sampling, TimeSamplingName)
            time_sampling = TIME_SAMPLINGS[time_sampling]()
        if sampler is not None and not isinstance(sampler, FlowSampler):
            raise ValueError(f"model.sampler: {type(sampler).__name__} is a diffusion sampler; a flow model takes "
                             "sampler=flow/euler|flow/heun|flow/ab3 (conf/sampler/flow/)")
        check_positive("model.likelihood_steps", likelihood_steps)
        self.image_shape = tuple(image_shape)
        self.net = network(image_shape=self.image_shape)
        self.time_sampling = time_sampling
        self.sampler = sampler if sampler is not None else FlowHeun()
        self.likelihood_steps = likelihood_steps

    # ---- the path ------------------------------------------------------------------------
    @staticmethod
    def interpolate(x_0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - t) x_0 + t eps, a sample from p_t(x | x_0) = N((1 - t) x_0, t^2 I); t is (N,)."""
        t = t[:, None, None, None]
        return (1 - t) * x_0 + t * eps

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v_theta(x_t, t) for (N, C, H, W) images and (N,) times in [0, 1]."""
        return self.net(x_t, t * TIME_SCALE).float()

    # ---- training ------------------------------------------------------------------------
    def velocity_error(self, x_0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(N,) per-image mean of ||v_theta(x_t, t) - (eps - x_0)||^2 at x_t on the line (Lipman et al. eq. 9):
        the loss the network is trained on, also what scripts/loss_by_time.py measures at fixed t."""
        return (self.velocity(self.interpolate(x_0, eps, t), t) - (eps - x_0)).pow(2).mean(dim=(1, 2, 3))

    def training_losses(self, batch: torch.Tensor) -> Iterator[LossTerm]:
        """1. t from the time distribution, eps ~ N(0, I); 2. x_t on the line; 3. regress v_theta(x_t, t)
        on eps - x_0 (Lipman et al. eq. 9)."""
        x_0 = batch
        t = self.time_sampling(x_0.shape[0], x_0.device)
        mse = self.velocity_error(x_0, torch.randn_like(x_0), t)
        yield LossTerm("loss", mse.mean(), "model", {"mse": mse.mean().detach()})

    # ---- sampling ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_1 ~ N(0, I), then the sampler's ODE steps down to t = 0."""
        x_1 = randn((n, *self.image_shape), generator, self.device)
        return self.sampler(self.velocity, x_1).clamp(-1, 1)

    def sampling_info(self) -> dict[str, object]:
        return {"sampler": type(self.sampler).__name__, "nfe": self.sampler.nfe(),
                **{f"sampler_{k}": v for k, v in vars(self.sampler).items()}}

    # ---- likelihood ----------------------------------------------------------------------
    def bits_per_dim(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """An estimate of an upper bound on -log2 P(x) / D for uint8 images x (N, C, H, W), D = C*H*W.

        1. Dequantize (Ho et al. 2019, Sec. 3.1): y = x/127.5 - 1 + u, u ~ U(-1/255, 1/255)^D, the bin of
           width 2/255 around each of the 256 levels. By Jensen, for any density p on R^D,
           log P(x) = log int_bin p(y) dy >= E_u[log p(y)] + D log(2/255), so
           -log2 P(x) / D <= E_u[-log p(y)] / (D ln 2) + log2(127.5).
        2. p is the flow's own density: y at t = 0 is carried by dx/dt = v_theta(x, t) to t = 1, where
           it is N(0, I), and log p_0(y) = log N(x_1; 0, I) + int_0^1 div v_theta(x_t, t) dt (Chen et al.
           2018, Thm. 1). The ODE and the integral run together with Heun's method on
           `likelihood_steps` uniform steps.
        3. div v = E_z[z^T (dv/dx) z] with Rademacher z (Hutchinson 1989), one z per image kept along the
           path (Grathwohl et al. 2019), by a vector-Jacobian product.
        One draw of u and z per image, so the per-image value is an unbiased estimate of E_u[-log p(y)]
        up to the ODE solver's discretization error, which `likelihood_steps` controls and which is not
        bounded: the mean over images is an estimate of the bound, not a guaranteed bound."""
        x_0 = x.to(self.device).float() / 127.5 - 1  # (N, C, H, W), 256 levels in [-1, 1]
        n, dims = x_0.shape[0], x_0[0].numel()
        u = torch.rand(x_0.shape, generator=generator, device=generator.device if generator else None).to(self.device)
        y = x_0 + (2 * u - 1) / 255
        z = torch.randint(0, 2, x_0.shape, generator=generator, device=generator.device if generator else None)
        z = (2.0 * z - 1).to(self.device)

        def drift(x_t: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
            """(v_theta(x_t, t), Hutchinson's estimate of div v_theta(x_t, t)), both detached."""
            with torch.enable_grad():
                x_t = x_t.detach().requires_grad_(True)
                v = self.velocity(x_t, torch.full((n,), t, device=self.device))
                (vjp,) = torch.autograd.grad((v * z).sum(), x_t)
            return v.detach(), (vjp * z).flatten(1).sum(1)

        h = 1.0 / self.likelihood_steps
        x_t, integral = y, torch.zeros(n, device=self.device)
        for k in range(self.likelihood_steps):  # Heun from t = 0 to t = 1
            t = k * h
            v, div = drift(x_t, t)
            x_pred = x_t + h * v
            v2, div2 = drift(x_pred, t + h)
            x_t = x_t + 0.5 * h * (v + v2)
            integral = integral + 0.5 * h * (div + div2)
        log_prior = -0.5 * (x_t.pow(2).flatten(1).sum(1) + dims * math.log(2 * math.pi))
        nll = -(log_prior + integral)  # -log p_0(y), nats
        return {"ode": nll / (dims * math.log(2.0)) + math.log2(127.5)}
