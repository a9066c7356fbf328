"""Exponential moving averages of a model's weights, which the Trainer keeps and samples from.

Two profiles, picked by the Trainer's keys:
- fixed decay beta (trainer.ema_decay), with the warm-up min(beta, (1 + t) / (10 + t)) of Tarvainen &
  Valpola 2017 (arXiv:1703.01780) so early averages are not dominated by the initialisation. Its memory is
  a fixed number of steps, 1 / (1 - beta), whatever the length of the run.
- the power function of EDM2 (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of
  Diffusion Models", arXiv:2312.02696, Sec. 3.1 and App. C), trainer.ema_sigma_rel: at step t the
  average weighs step tau in proportion to tau^gamma, so its length is a fixed *fraction* of the run so far,
  beta_t = (1 - 1/t)^(gamma + 1) (the update form of that profile, t counted from 1; beta_1 = 0). Its width
  is given as sigma_rel, the standard deviation of that profile relative to its peak t:
      sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)),
  solved for gamma by `sigma_rel_to_gamma`. EDM2's defaults are sigma_rel 0.05 - 0.15.

Either way the state is the averaged copy alone and beta depends on the step only, so a resumed run
averages exactly as an uninterrupted one. Post-hoc selection of sigma_rel from stored snapshots (EDM2
Sec. 3.2) is not implemented.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

SIGMA_REL_MAX = math.sqrt((math.sqrt(5) - 1) / 2 / ((math.sqrt(5) + 1) / 2) ** 2 / ((math.sqrt(5) + 3) / 2))  # ~0.3003


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma of the power-function profile whose relative width is sigma_rel: the largest
    real root of (gamma + 2)^2 (gamma + 3) sigma_rel^2 - (gamma + 1) = 0, i.e. of
    gamma^3 + 7 gamma^2 + (16 - 1/sigma_rel^2) gamma + (12 - 1/sigma_rel^2) (EDM2 Sec. 3.1's relation rearranged).
    sigma_rel(gamma) peaks at ~0.3003 (gamma = (sqrt(5) - 3) / 2), so wider profiles do not exist."""
    if not 0 < sigma_rel < SIGMA_REL_MAX:
        raise ValueError(f"trainer.ema_sigma_rel={sigma_rel} must be in (0, {SIGMA_REL_MAX:.4f}), e.g. 0.05 - 0.15 "
                         "(EDM2), or null for the fixed trainer.ema_decay")
    k = sigma_rel**-2
    roots = np.roots([1.0, 7.0, 16.0 - k, 12.0 - k])
    return float(roots[np.abs(roots.imag) < 1e-9].real.max())


def power_beta(step: int, gamma: float) -> float:
    """beta_t = (1 - 1/t)^(gamma + 1) at update number t = step + 1: the power profile in update form."""
    t = step + 1
    return (1 - 1 / t) ** (gamma + 1)


class EMA:
    """The averaged copy of a model. `decay` with `warmup`: the fixed profile; `sigma_rel`: EDM2's power
    function (then `decay` and `warmup` are unused). Parameters of child modules named in `skip` (a GAN's
    discriminator, which nothing samples from) are not averaged; buffers are copied from the model."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999, warmup: bool = True,
                 sigma_rel: float | None = None, skip: tuple[str, ...] = ()):
        if not 0 <= decay < 1:
            raise ValueError(f"trainer.ema_decay={decay} must be in [0, 1)")
        self.decay, self.warmup, self.sigma_rel = decay, warmup, sigma_rel
        self.gamma = None if sigma_rel is None else sigma_rel_to_gamma(sigma_rel)
        self.module = copy.deepcopy(model).requires_grad_(False).eval()
        averaged = lambda m: [p for name, p in m.named_parameters() if name.split(".")[0] not in skip]  # noqa: E731
        self._pairs = (averaged(self.module), averaged(model))

    def beta(self, step: int) -> float:
        """The weight the average keeps at update `step` (0 = the first optimizer step)."""
        if self.gamma is not None:
            return power_beta(step, self.gamma)
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """ema <- beta ema + (1 - beta) p for every averaged parameter; buffers copied."""
        torch._foreach_lerp_(self._pairs[0], self._pairs[1], 1.0 - self.beta(step))
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)
