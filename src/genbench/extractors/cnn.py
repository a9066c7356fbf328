"""A small CNN classifier for 32x32 grey images: the domain feature extractor for Fashion-MNIST and MNIST.

Inception-v3 (the network behind the usual FID, IS and KID) was trained on ImageNet photographs; on
28x28 grey clothes and digits its features say little about what makes a sample good. Like the
"domain classifier" FIDs of the GAN literature (e.g. the LeNet-based scores of Binkowski et al. 2018,
arXiv:1801.01401, Sec. 5), genbench scores these datasets with a classifier trained on their own
training split: `features` (the 128-d penultimate activations) feed FID, KID and precision/recall,
and `logits` (10 classes) feed the Inception Score. Numbers from it are comparable only with numbers
from the same weights, so every metrics.json names the extractor and its sha256.

Input convention (torch-fidelity's): uint8 images (N, C, H, W) in [0, 255], C = 1 or 3. Three
channels are averaged back to one (exact for the R = G = B images torch-fidelity makes when it reads
a grey PNG); sizes other than 32x32 are padded (smaller) or resized (larger) to 32x32 the way
genbench.data pads Fashion-MNIST.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genbench.data import fit_size

IMAGE_SIZE = 32
NUM_CLASSES = 10
FEATURE_DIM = 128


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """conv-BN-ReLU twice, then 2x2 max-pool: halves the resolution."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class DomainCNN(nn.Module):
    """(N, 1, 32, 32) floats in [-1, 1] -> (features (N, 128), logits (N, 10)). About 0.3M parameters."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), feature_dim: int = FEATURE_DIM,
                 num_classes: int = NUM_CLASSES, dropout: float = 0.3):
        super().__init__()
        w1, w2, w3 = widths
        self.trunk = nn.Sequential(_block(1, w1), _block(w1, w2), _block(w2, w3))  # 32 -> 16 -> 8 -> 4
        self.fc = nn.Linear(w3 * 4 * 4, feature_dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = F.relu(self.fc(self.trunk(x).flatten(1)))  # (N, 128)
        return features, self.head(self.dropout(features))  # (N, 10)


def prepare(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1 or 3, H, W) -> float (N, 1, 32, 32) in [-1, 1], as DomainCNN was trained."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"the CNN feature extractor takes uint8 images (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
    if images.shape[1] == 3:  # R = G = B for grey images read as RGB: the mean is exact
        images = images.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
    return fit_size(images, IMAGE_SIZE, "pad").float().div(127.5).sub(1.0)
