"""The contract every generative family implements, so one Trainer serves them all.

A family is an ``nn.Module`` with three methods:

- ``optimizers(make)`` builds its optimizers by name from a partial such as ``Adam(lr=...)``;
- ``training_losses(batch)`` yields ``LossTerm``s in the order they must be optimised. It is a
  generator, so a GAN's generator term is computed *after* the Trainer has stepped the
  discriminator on the term before it;
- ``sample(n, generator=...)`` returns (n, C, H, W) images in [-1, 1].
"""

from __future__ import annotations

import itertools
import math

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """N(0, I) noise drawn from ``generator`` (on its own device, so a CPU generator gives the same
    numbers whatever device samples), then moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


def cosine_decay(images: float, final_ratio: float, horizon: float | None) -> float:
    """The factor a scheduled hyperparameter is multiplied by after `images` training images: a half cosine
    from 1 at 0 images to `final_ratio` at `horizon` images, then constant; 1 throughout when horizon is None.
    R3GAN (Huang et al. 2025) decays its learning rate and its R1/R2 weight gamma this way over a budget of
    images, which keeps a schedule's meaning when the batch size changes."""
    if horizon is None:
        return 1.0
    progress = min(images / horizon, 1.0)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class LossTerm:
    """A scalar loss, the name of the optimizer that minimises it, and extra scalars to log."""

    name: str  # logged as train/<name>
    loss: torch.Tensor  # scalar
    optimizer: str  # key into the family's optimizers()
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # logged as train/<key>, detached


class GenerativeModel(nn.Module):
    """Base class of the families; see the module docstring for the contract."""

    ema_skip: tuple[str, ...] = ()  # names of child modules the Trainer's EMA does not average (a GAN's "D")

    def optimizers(self, make: OptimizerFactory) -> dict[str, torch.optim.Optimizer]:
        return {"model": make(self.parameters())}

    def training_losses(self, batch: torch.Tensor) -> Iterator[LossTerm]:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def bits_per_dim(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-image negative log-likelihood bounds in bits/dim for a batch of uint8 images (N, C, H, W),
        keyed by name ("elbo", "iwae_k64", "vlb", ...). Families without a likelihood (GANs) return {}.

        Convention, shared by every family so the numbers sit side by side: the likelihood is that of the
        discrete 8-bit pixel values (no dequantization noise), over all C*H*W dimensions of the model's
        input (so Fashion-MNIST counts its 32x32 padded size): bits/dim = -log2 P(x) / (C*H*W)."""
        return {}

    def latent_statistics(self, x: torch.Tensor) -> dict[str, float]:
        """Dataset-level numbers about the family's latent code for uint8 images (N, C, H, W), N in the
        hundreds or more (a VAE's active units); written by `genbench eval`. Default: none."""
        return {}

    def diagnostic_images(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Family-specific image panels for a float batch in [-1, 1] (a VAE's reconstructions and
        interpolations), each (K, C, H, W) in [-1, 1]; written by `genbench eval`."""
        return {}

    def sampling_info(self) -> dict[str, object]:
        """What a set of samples depends on besides the weights (sampler, NFE); stored beside samples."""
        return {}

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.parameters(), self.buffers())).device
