"""DCGAN generator and discriminator (Radford, Metz & Chintala 2016, arXiv:1511.06434, Sec. 3 and Fig. 1).

The generator projects z to a 4x4 map, then each stride-2 transposed convolution doubles the
resolution and halves the width, ending in tanh; the discriminator mirrors it with stride-2
convolutions and LeakyReLU(0.2), and a 4x4 convolution to one logit. The number of stages follows
the image size (3 at 32x32, 4 at 64x64), so `width` is the width at the largest feature map, as
pytorch/examples' ngf and ndf. Weights start from N(0, 0.02) (Sec. 4).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from genbench.validate import check_choice, check_positive

Norm = Literal["batch", "none"]


def num_stages(image_shape: tuple[int, int, int]) -> int:
    """Stride-2 stages between 4x4 and H/2: log2(H) - 3. Square power-of-two images of 8 or more only."""
    _, height, width = image_shape
    stages = math.log2(height) - 3 if height >= 8 else -1
    if height != width or stages != int(stages) or stages < 0:
        raise ValueError(f"data.image_size={height}x{width}: the DCGAN networks need a square power of two >= 8, e.g. 32 or 64")
    return int(stages)


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    """BatchNorm2d(channels) or the identity."""
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.Identity()


def dcgan_init_(module: nn.Module) -> None:
    """Sec. 4: conv weights from N(0, 0.02); batch-norm scales from N(1, 0.02), shifts 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """G(z): (N, latent_dim) noise to (N, C, H, W) images in [-1, 1]."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int = 128, width: int = 64, norm: Norm = "batch"):
        super().__init__()
        check_choice("model.generator.norm", norm, Norm)
        check_positive("model.generator.width", width)
        check_positive("model.latent_dim", latent_dim)
        stages = num_stages(image_shape)
        ch = width * 2**stages  # width at 4x4
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, ch, 4, 1, 0, bias=norm == "none"),  # 1x1 -> 4x4
                                   norm_layer(norm, ch), nn.ReLU(True)]
        for _ in range(stages):  # 4x4 -> H/2 x W/2
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=norm == "none"), norm_layer(norm, ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, image_shape[0], 4, 2, 1), nn.Tanh()]  # H/2 -> H
        self.main = nn.Sequential(*layers)
        self.latent_dim = latent_dim
        dcgan_init_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z[:, :, None, None])  # (N, latent_dim, 1, 1) -> (N, C, H, W)


class Discriminator(nn.Module):
    """D(x): (N, C, H, W) images to (N,) logits (critic values for WGAN)."""

    def __init__(self, image_shape: tuple[int, int, int], width: int = 64, norm: Norm = "none"):
        super().__init__()
        check_choice("model.discriminator.norm", norm, Norm)
        check_positive("model.discriminator.width", width)
        stages = num_stages(image_shape)
        ch = width
        layers: list[nn.Module] = [nn.Conv2d(image_shape[0], ch, 4, 2, 1), nn.LeakyReLU(0.2, True)]  # H -> H/2, no norm (Sec. 3)
        for _ in range(stages):  # H/2 -> 4x4
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=norm == "none"), norm_layer(norm, ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers += [nn.Conv2d(ch, 1, 4, 1, 0)]  # 4x4 -> 1x1
        self.main = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()  # (N,)
