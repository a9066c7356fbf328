"""Image datasets held in memory as one uint8 tensor and batched by indexing.

Every builder returns an `ImageData` whose splits are (N, C, H, W) uint8 tensors at
`image_size`; `ImageData.batch` turns indices into floats in [-1, 1]. The batch order is a
pure function of (seed, step), so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from genbench.validate import check_choice

Fit = Literal["pad", "resize"]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class DatasetNotFound(FileNotFoundError):
    pass


@dataclass
class ImageData:
    name: str
    train: torch.Tensor  # (N, C, H, W) uint8
    test: torch.Tensor | None  # (M, C, H, W) uint8, or None when the dataset has no test split

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])

    def split(self, name: Literal["train", "test"]) -> torch.Tensor:
        images = getattr(self, name)
        if images is None:
            raise ValueError(f"dataset {self.name} has no {name} split")
        return images

    def content_hash(self, split: Literal["train", "test"] = "train") -> str:
        """sha256 of a split's bytes: the key that stops stale cached statistics being reused."""
        return hashlib.sha256(self.split(split).numpy().tobytes()).hexdigest()

    def batch_indices(self, step: int, batch_size: int, seed: int) -> torch.Tensor:
        """Indices of batch `step`: epochs are fresh permutations seeded by (seed, epoch); the last
        partial batch of an epoch is dropped."""
        n = len(self.train)
        if batch_size > n:
            raise ValueError(f"trainer.batch_size={batch_size} exceeds the {n} training images; lower it")
        per_epoch = n // batch_size
        epoch, i = divmod(step, per_epoch)
        if getattr(self, "_perm_key", None) != (seed, epoch):
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            self._perm, self._perm_key = torch.randperm(n, generator=g), (seed, epoch)
        return self._perm[i * batch_size : (i + 1) * batch_size]

    def batch(self, indices: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 images at `indices` as float32 in [-1, 1], on `device`."""
        return to_float(self.train[indices].to(device, non_blocking=True))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] to float [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] to uint8 [0, 255], rounding to the nearest level."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def fit_size(images: torch.Tensor, image_size: int, fit: Fit) -> torch.Tensor:
    """Pad (with the darkest value, centred) or resize (N, C, h, w) uint8 images to image_size."""
    check_choice("data.fit", fit, Fit)
    if image_size <= 0:
        raise ValueError(f"data.image_size must be a positive integer, got {image_size}")
    h, w = images.shape[-2:]
    if (h, w) == (image_size, image_size):
        return images.contiguous()
    if fit == "pad" and image_size >= max(h, w):
        top, left = (image_size - h) // 2, (image_size - w) // 2
        return F.pad(images, (left, image_size - w - left, top, image_size - h - top), value=0).contiguous()
    resized = F.interpolate(images.float(), size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8).contiguous()


# ---- IDX files (MNIST, Fashion-MNIST) ------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun et al.'s MNIST format), gzip-compressed or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_split(directory: Path, prefix: str) -> torch.Tensor | None:
    for name in (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-images-idx3-ubyte"):
        if (directory / name).is_file():
            return torch.from_numpy(read_idx(directory / name).copy())[:, None]  # (N, 1, 28, 28)
    return None


def _torchvision_split(cls_name: str, root: Path, train: bool, download: bool) -> torch.Tensor:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    ds = cls(str(root), train=train, download=download)
    data = torch.as_tensor(np.asarray(ds.data))
    return data[:, None] if data.ndim == 3 else data.permute(0, 3, 1, 2)  # (N, C, H, W)


def _missing(name: str, places: list[str], fix: str) -> DatasetNotFound:
    return DatasetNotFound(f"{name} not found; looked in {', '.join(places)}. {fix}")


def _torchvision_dataset(
    name: str, cls_name: str, root: str, download: bool, image_size: int, fit: Fit, system_dir: Path | None = None
) -> ImageData:
    """A torchvision dataset, preferring IDX files in `system_dir` (a Debian package) when present."""
    root_path = Path(os.path.expanduser(root))
    if system_dir is not None and _idx_split(system_dir, "train") is not None:
        train, test = _idx_split(system_dir, "train"), _idx_split(system_dir, "t10k")
    else:
        try:
            train = _torchvision_split(cls_name, root_path, True, download)
            test = _torchvision_split(cls_name, root_path, False, download)
        except RuntimeError as e:  # torchvision: "Dataset not found. You can use download=True ..."
            places = ([str(system_dir)] if system_dir else []) + [str(root_path)]
            fix = "Run `make install` (installs the Debian package) or add data.download=true." if system_dir else "Add data.download=true."
            raise _missing(name, places, fix) from e
    return ImageData(name, fit_size(train, image_size, fit), None if test is None else fit_size(test, image_size, fit))


def fashion_mnist(root: str = "~/.cache/genbench/data", image_size: int = 32, download: bool = False, fit: Fit = "pad") -> ImageData:
    """Fashion-MNIST (Xiao et al. 2017): from /usr/share/datasets/fashion-mnist (Debian's
    dataset-fashion-mnist) when installed, else torchvision's copy under `root`."""
    return _torchvision_dataset("fashion_mnist", "FashionMNIST", root, download, image_size, fit, DEBIAN_FASHION_MNIST)


def mnist(root: str = "~/.cache/genbench/data", image_size: int = 32, download: bool = False, fit: Fit = "pad") -> ImageData:
    return _torchvision_dataset("mnist", "MNIST", root, download, image_size, fit)


def cifar10(root: str = "~/.cache/genbench/data", image_size: int = 32, download: bool = False, fit: Fit = "resize") -> ImageData:
    return _torchvision_dataset("cifar10", "CIFAR10", root, download, image_size, fit)


def image_folder(root: str, image_size: int = 32, channels: int = 3, test_fraction: float = 0.0, fit: Fit = "resize") -> ImageData:
    """Every image file under `root` (recursively), converted to `channels` (1 or 3), held in memory.
    The last `test_fraction` of the sorted file list becomes the test split."""
    from PIL import Image

    if channels not in (1, 3):
        raise ValueError(f"data.channels must be 1 or 3, got {channels}")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
    folder = Path(os.path.expanduser(str(root)))
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise _missing("image_folder", [str(folder)], "Set data.root to a folder holding .png/.jpg images.")
    mode = "L" if channels == 1 else "RGB"
    tensors = []
    for p in files:
        with Image.open(p) as im:
            img = torch.from_numpy(np.asarray(im.convert(mode), dtype=np.uint8).copy())
        img = img[None] if img.ndim == 2 else img.permute(2, 0, 1)
        tensors.append(fit_size(img[None], image_size, fit)[0])
    images = torch.stack(tensors)
    n_test = int(len(images) * test_fraction)
    return ImageData("image_folder", images[: len(images) - n_test], images[len(images) - n_test :] if n_test else None)
