"""ResNet generator and discriminator of SNGAN (Miyato et al. 2018, arXiv:1802.05957, Appendix B.4, Table 4).

G: z -> linear to 4x4 -> up-sampling residual blocks (BN, ReLU, nearest x2, conv3x3, BN, ReLU, conv3x3)
to the image size -> BN, ReLU, conv3x3, tanh. D: an "optimized" first block (conv, ReLU, conv, pool),
down-sampling residual blocks to 8x8, two more blocks at 8x8, ReLU, global sum pooling, linear.
At 32x32 this is Table 4's network (G 3 blocks, D 4 blocks); each doubling of the image size adds one
up block to G and one down block to D. `norm` is batch norm in G and none in D as in Table 4; spectral
normalisation is applied by the GAN family, not here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genbench.networks.dcgan import Norm, norm_layer, num_stages
from genbench.validate import check_choice, check_positive


class UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, norm: Norm):
        super().__init__()
        self.bn1, self.conv1 = norm_layer(norm, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn2, self.conv2 = norm_layer(norm, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class DownBlock(nn.Module):
    """Pre-activation residual block, average-pooled by 2 if `down`; `first` is Table 4's optimized
    block, which takes the image itself (no ReLU before the first convolution)."""

    def __init__(self, c_in: int, c_out: int, norm: Norm, down: bool, first: bool = False):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.norm1, self.norm2 = (nn.Identity() if first else norm_layer(norm, c_in)), norm_layer(norm, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out or down else nn.Identity()
        self.down, self.first = down, first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.norm2(self.conv1(x if self.first else F.relu(self.norm1(x))))))
        if self.down:  # a 1x1 convolution commutes with average pooling, so the shortcut pools first
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        return h + self.skip(x)


class Generator(nn.Module):
    """G(z): (N, latent_dim) noise to (N, C, H, W) images in [-1, 1]."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int = 128, width: int = 256, norm: Norm = "batch"):
        super().__init__()
        check_choice("model.generator.norm", norm, Norm)
        check_positive("model.generator.width", width)
        check_positive("model.latent_dim", latent_dim)
        blocks = num_stages(image_shape) + 1  # 4x4 -> H
        self.width, self.latent_dim = width, latent_dim
        self.linear = nn.Linear(latent_dim, 4 * 4 * width)
        self.blocks = nn.Sequential(*[UpBlock(width, width, norm) for _ in range(blocks)])
        self.head = nn.Sequential(norm_layer(norm, width), nn.ReLU(), nn.Conv2d(width, image_shape[0], 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.linear(z).view(-1, self.width, 4, 4)  # (N, width, 4, 4)
        return self.head(self.blocks(h))


class Discriminator(nn.Module):
    """D(x): (N, C, H, W) images to (N,) logits."""

    def __init__(self, image_shape: tuple[int, int, int], width: int = 128, norm: Norm = "none"):
        super().__init__()
        check_choice("model.discriminator.norm", norm, Norm)
        check_positive("model.discriminator.width", width)
        downs = num_stages(image_shape)  # H -> 8x8
        layers = [DownBlock(image_shape[0], width, norm, down=True, first=True)]
        layers += [DownBlock(width, width, norm, down=True) for _ in range(downs - 1)]
        layers += [DownBlock(width, width, norm, down=False) for _ in range(2)]
        self.blocks = nn.Sequential(*layers)
        self.linear = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling, (N, width)
        return self.linear(h).flatten()
