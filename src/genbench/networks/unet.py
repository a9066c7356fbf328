"""A small DDPM-style UNet (Ho et al. 2020, arXiv:2006.11239, Appendix B).

Residual blocks with GroupNorm and SiLU, a sinusoidal time embedding added inside
every block, and self-attention at the resolutions listed in ``attn_resolutions``.
Sized by ``base_channels`` and ``channel_mults`` so the same code serves a 2-core
laptop (the default config) and a GPU preset.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genbench.validate import check_positive


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (N,) timesteps into (N, dim), as in Vaswani et al. 2017."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(-1, -2).unbind(1)  # each (N, HW, C)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # (N, HW, C)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class UNet(nn.Module):
    """eps_theta(x_t, t): maps (N, C, H, W) images and (N,) timesteps to (N, C, H, W)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attn_resolutions: tuple[int, ...] = (8,),
        dropout: float = 0.0,
        num_groups: int = 8,
        patch_size: int = 1,
    ):
        super().__init__()
        for name, value in [("base_channels", base_channels), ("num_res_blocks", num_res_blocks), ("num_groups", num_groups),
                            ("patch_size", patch_size), *[("channel_mults", m) for m in channel_mults]]:
            check_positive(f"model.network.{name}", value)
        if not channel_mults:
            raise ValueError("model.network.channel_mults=[] must list at least one multiplier, e.g. [1, 2]")
        if not 0 <= dropout < 1:
            raise ValueError(f"model.network.dropout={dropout} must be in [0, 1)")
        c_img, height, width = image_shape
        factor = patch_size * 2 ** (len(channel_mults) - 1)
        if height % factor or width % factor:
            raise ValueError(
                f"data.image_size={height}x{width} must be divisible by {factor} for a UNet with "
                f"{len(channel_mults)} levels and patch_size {patch_size}; use a multiple of {factor}, e.g. 32"
            )
        widths = [base_channels * m for m in channel_mults]
        if any(w % num_groups for w in widths):
            raise ValueError(f"model.network.num_groups={num_groups} must divide every channel width {widths}")
        emb_dim = 4 * base_channels
        self.base_channels = base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # patch_size p > 1 folds p x p pixels into channels (space-to-depth), so every level
        # runs at 1/p^2 of the positions: the main lever for CPU speed at 32x32.
        self.stem = nn.Sequential(nn.PixelUnshuffle(patch_size), nn.Conv2d(c_img * patch_size**2, base_channels, 3, padding=1))
        res = height // patch_size

        # down path: record the width of every skip connection
        self.down = nn.ModuleList()
        skips, ch = [base_channels], base_channels
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down.append(self._block(ch, width, emb_dim, num_groups, dropout, res in attn_resolutions))
                ch = width
                skips.append(ch)
            if level < len(widths) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList(
            [ResBlock(ch, ch, emb_dim, num_groups, dropout), Attention(ch, num_groups), ResBlock(ch, ch, emb_dim, num_groups, dropout)]
        )
        # up path mirrors the down path, consuming one skip per block
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(num_res_blocks + 1):
                self.up.append(self._block(ch + skips.pop(), width, emb_dim, num_groups, dropout, res in attn_resolutions))
                ch = width
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)))
                res *= 2
        self.head = nn.Sequential(
            nn.GroupNorm(num_groups, ch), nn.SiLU(), nn.Conv2d(ch, c_img * patch_size**2, 3, padding=1), nn.PixelShuffle(patch_size)
        )
        nn.init.zeros_(self.head[2].weight)
        nn.init.zeros_(self.head[2].bias)

    @staticmethod
    def _block(c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float, attn: bool) -> nn.Module:
        block = ResBlock(c_in, c_out, emb_dim, groups, dropout)
        return nn.ModuleList([block, Attention(c_out, groups)]) if attn else block

    @staticmethod
    def _run(layer: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, ResBlock):
            return layer(h, emb)
        if isinstance(layer, nn.ModuleList):  # ResBlock followed by Attention
            return layer[1](layer[0](h, emb))
        return layer(h)  # down- or up-sampling

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.base_channels))
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            h = self._run(layer, h, emb)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for layer in self.up:
            if isinstance(layer, (ResBlock, nn.ModuleList)):
                h = self._run(layer, torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.head(h)
