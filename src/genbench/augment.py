"""Differentiable augmentation of image batches (N, C, H, W) in [-1, 1], for a GAN's discriminator.

Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training", arXiv:2006.10738:
D sees real and generated images through the same random, differentiable transforms (Sec. 3.2), so G's
gradient passes through them and D cannot tell the two apart by the augmentation alone. Three policies,
as in the paper's code release: color, translation, cutout; `diff_augment` applies them in order, each
with its own random draw per image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from genbench.validate import check_choice

Policy = Literal["color", "translation", "cutout"]


def _rand(x: torch.Tensor) -> torch.Tensor:
    """U(0, 1) per image, (N, 1, 1, 1)."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)


def color(x: torch.Tensor) -> torch.Tensor:
    """Brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5)."""
    x = x + (_rand(x) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (2 * _rand(x)) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio * size pixels in each direction, filling with zeros."""
    n, _, h, w = x.shape
    sy, sx = round(h * ratio), round(w * ratio)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device)[None, :, None] + dy + 1).clamp(0, h + 1)  # (N, H, 1) in the padded image
    cols = (torch.arange(w, device=x.device)[None, None, :] + dx + 1).clamp(0, w + 1)  # (N, 1, W)
    padded = F.pad(x, (1, 1, 1, 1))
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero a ratio * size square at a random centre of each image (clipped at the border)."""
    n, _, h, w = x.shape
    ch, cw = round(h * ratio), round(w * ratio)
    top = torch.randint(0, h, (n, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w, (n, 1, 1), device=x.device) - cw // 2
    rows, cols = torch.arange(h, device=x.device)[None, :, None], torch.arange(w, device=x.device)[None, None, :]
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)  # (N, H, W)
    return x * (~inside)[:, None].to(x.dtype)


POLICIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"color": color, "translation": translation, "cutout": cutout}


def check_policies(policies: Sequence[str], key: str = "model.diff_augment") -> list[str]:
    """The policies as a list, each checked against the known ones."""
    for name in policies:
        check_choice(key, name, Policy)
    return list(policies)


def diff_augment(x: torch.Tensor, policies: Sequence[str]) -> torch.Tensor:
    """Apply the named policies in order (none: x unchanged)."""
    for name in policies:
        x = POLICIES[name](x)
    return x
