"""Training and sampling compute in FLOPs, measured on the real model with torch.utils.flop_counter.

FlopCounterMode counts the FLOPs of matmuls and convolutions (forward and backward), the operations
that dominate every network here; elementwise work is not counted, as in the usual 6ND-style
accounting. One count is made per run, on a copy of the model and with the RNG streams put back, so
measuring changes neither the weights nor the batches a run draws.
"""

from __future__ import annotations

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode

from genbench.models.base import GenerativeModel
from genbench.runtime import rng_state, set_rng_state


def train_flops_per_image(model: GenerativeModel, batch: torch.Tensor) -> float:
    """FLOPs of one full training step on `batch` (every loss term the family yields, forward and
    backward; the optimizer update is not counted), divided by the batch size."""
    state = rng_state()
    try:
        probe = copy.deepcopy(model).train()
        counter = FlopCounterMode(display=False)
        with counter:
            for term in probe.training_losses(batch):
                term.loss.backward()
                probe.zero_grad(set_to_none=True)
        return counter.get_total_flops() / len(batch)
    finally:
        set_rng_state(state)


@torch.no_grad()
def sample_flops_per_image(model: GenerativeModel, n: int = 2) -> float:
    """FLOPs of generating one more image with the model's own sampler and NFE: the marginal cost
    (F(2n) - F(n)) / n, so per-call work that does not scale with the batch (a GAN's standing
    batch-norm statistics) is not charged to each image."""
    state = rng_state()
    try:
        probe = copy.deepcopy(model).eval()
        totals = []
        for size in (n, 2 * n):
            counter = FlopCounterMode(display=False)
            with counter:
                probe.sample(size, generator=torch.Generator().manual_seed(0))
            totals.append(counter.get_total_flops())
        return (totals[1] - totals[0]) / n
    finally:
        set_rng_state(state)
