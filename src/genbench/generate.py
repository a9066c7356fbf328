"""Images and likelihoods from a model in seeded batches, with progress: what `genbench sample`,
`genbench eval`, the evaluation during training and the benchmark scripts all draw through."""

from __future__ import annotations

import math
import time

import torch

from genbench.data import to_uint8
from genbench.models.base import GenerativeModel
from genbench.progress import Progress
from genbench.validate import check_positive


@torch.no_grad()
def generate(model: GenerativeModel, num_samples: int, batch_size: int, seed: int,
             progress: bool | None = None) -> tuple[torch.Tensor, float]:
    """num_samples uint8 images (N, C, H, W) from a seeded CPU generator (the same images on any
    device for a given batch size), and the images per second."""
    check_positive("num_samples", num_samples)
    check_positive("batch_size", batch_size)
    generator = torch.Generator().manual_seed(seed)
    chunks, start = [], time.perf_counter()
    with Progress(num_samples, "sampling", bar=progress) as bar:
        for i in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - i)
            chunks.append(to_uint8(model.sample(n, generator=generator)).cpu())
            bar.update(n)
    return torch.cat(chunks), num_samples / (time.perf_counter() - start)


@torch.no_grad()
def likelihoods(model: GenerativeModel, images: torch.Tensor, batch_size: int, seed: int,
                progress: bool | None = None) -> dict[str, dict] | None:
    """Mean and standard error over `images` (uint8) of each bits/dim bound the family computes, or
    None for a family without a likelihood (GANs)."""
    generator = torch.Generator().manual_seed(seed)
    per_image: dict[str, list[torch.Tensor]] = {}
    with Progress(len(images), "likelihood", bar=progress) as bar:
        for i in range(0, len(images), batch_size):
            batch = images[i : i + batch_size]
            bounds = model.bits_per_dim(batch.to(model.device), generator)
            if not bounds:
                return None
            for k, v in bounds.items():
                per_image.setdefault(k, []).append(v.detach().double().cpu())
            bar.update(len(batch))
    if not per_image:
        return None
    out = {}
    for k, chunks in per_image.items():
        v = torch.cat(chunks)
        out[k] = {"mean": v.mean().item(), "sem": (v.std() / math.sqrt(len(v))).item() if len(v) > 1 else None}
    return out
