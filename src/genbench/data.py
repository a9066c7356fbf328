"""Image datasets held in memory as one uint8 tensor and batched by indexing, and the one reader of
image files and sample arrays.

Every builder returns an `ImageData` whose splits are (N, C, H, W) uint8 tensors at
`image_size`; `ImageData.batch` turns indices into floats in [-1, 1]. The batch order is a
pure function of (seed, step), so a resumed run sees exactly the batches it would have seen.

Reading (one path for `data=image_folder` and for the samples `genbench eval` scores):
- `read_image`: one file to uint8. A file PIL cannot decode (truncated, not an image) is one
  error naming it. 16-bit greyscale (PNG/TIFF mode I;16) is scaled to 8 bits as round(v / 257),
  the exact map of [0, 65535] onto [0, 255]; 16-bit RGB is reduced to 8 bits by PIL itself (it keeps
  the high byte). 32-bit integer and float images are refused: their range is not known.
- `load_samples`: a folder of images, a `genbench sample` folder (its samples.npz) or an .npz/.npy
  file. Arrays must be integers in [0, 255]. Float arrays are refused, not guessed: a float image in
  [0, 1] and one in [-1, 1] with few dark pixels look alike, and tools disagree on rounding, so the
  error prints the exact conversion for the range it found.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import urllib.error
import zipfile
from collections.abc import Iterable
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
SAMPLES_FILE = "samples.npz"  # written by genbench.sample.write_samples beside the PNGs: images (N, C, H, W) uint8
GRID_FILE = "grid.png"  # ditto: a grid of the samples, not a sample


class DatasetNotFound(FileNotFoundError):
    pass


@dataclass
class ImageData:
    name: str
    train: torch.Tensor  # (N, C, H, W) uint8
    test: torch.Tensor | None  # (M, C, H, W) uint8, or None when the dataset has no test split
    extractor: str = "inception-v3"  # the feature extractor that scores it (genbench.extractors; `extractor:` in conf/data)

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


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 0.0) -> torch.Tensor:
    """Every grid genbench draws (TensorBoard, PNGs, panels): (N, C, H, W) uint8 images or floats in
    [-1, 1] -> one (3, H', W') image in [0, 1], ceil(sqrt(N)) per row unless `nrow` says otherwise."""
    from torchvision.utils import make_grid

    x = images.float().cpu() / 255 if images.dtype == torch.uint8 else (images.float().cpu().clamp(-1, 1) + 1) / 2
    return make_grid(x, nrow=nrow or math.ceil(math.sqrt(len(images))), padding=padding, pad_value=pad_value)


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


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else type(e).__name__


# ---- IDX files (MNIST, Fashion-MNIST) ------------------------------------------------------
# Hand-written because torchvision's reader (datasets.mnist.read_sn3_pascalvincent_tensor) opens its
# path with plain open(): it cannot read the .gz files Debian's dataset-fashion-mnist installs.
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (LeCun et al.'s MNIST format), gzip-compressed or not.
    A truncated or foreign file is one error naming it."""
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path} is not a readable IDX file ({_first_line(e)}); delete it and fetch it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {data[:4].hex() or 'missing'}); delete it and fetch it again")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(f"{path} holds {len(data)} bytes but its header {shape} needs {expected}: the file is truncated "
                         "or corrupt; delete it and fetch it again")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_images(directory: Path, prefix: str) -> Path | None:
    """`directory`'s {prefix}-images-idx3-ubyte file, compressed or not, if it has one."""
    return next((directory / n for n in (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-images-idx3-ubyte")
                 if (directory / n).is_file()), None)


def _idx_split(directory: Path, prefix: str) -> torch.Tensor | None:
    path = _idx_images(directory, prefix)
    return None if path is None else torch.from_numpy(read_idx(path).copy())[:, None]  # (N, 1, 28, 28)


def _is_offline(e: BaseException) -> bool:
    """A download that failed for want of a network (torchvision's MNIST wraps the URLErrors in a RuntimeError)."""
    return isinstance(e, (urllib.error.URLError, ConnectionError, TimeoutError)) or "Error downloading" in str(e)


def _download(name: str, cls_name: str, root: Path, put: str, install: str) -> None:
    """torchvision's own download of `cls_name` into `root`; offline, one line saying where the files go."""
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    try:
        cls(str(root), train=True, download=True)
    except (RuntimeError, OSError, urllib.error.URLError) as e:
        url = getattr(cls, "url", None) or cls.mirrors[0]
        if _is_offline(e):
            raise DatasetNotFound(f"no network: could not download {name} from {url}; put {put}, or {install}") from None
        raise DatasetNotFound(f"could not download {name} from {url} ({_first_line(e)}); put {put}, or {install}") from None


def _idx_dataset(name: str, cls_name: str, root: str, download: bool, image_size: int, fit: Fit, extractor: str,
                 system_dir: Path | None = None) -> ImageData:
    """An IDX dataset (MNIST, Fashion-MNIST) from `system_dir` (a Debian package) or torchvision's
    layout root/<cls_name>/raw, .gz or not; downloaded there by torchvision when `download`."""
    raw = Path(os.path.expanduser(str(root))) / cls_name / "raw"
    places = ([system_dir] if system_dir is not None else []) + [raw]
    files = "the IDX files (train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz, ...)"
    install = ("install Debian's dataset-fashion-mnist (`make install`)" if system_dir is not None
               else "train on data=fashion_mnist, which Debian packages")
    found = next((p for p in places if _idx_images(p, "train") is not None), None)
    if found is None and download:
        _download(name, cls_name, raw.parent.parent, f"{files} in {raw}", install)
        found = raw
    if found is None:
        raise DatasetNotFound(f"{name} not found; looked in {', '.join(map(str, places))}. Put {files} in {raw}, "
                              f"{install}, or add data.download=true")
    train, test = _idx_split(found, "train"), _idx_split(found, "t10k")
    return ImageData(name, fit_size(train, image_size, fit), None if test is None else fit_size(test, image_size, fit), extractor)


def fashion_mnist(root: str = "~/.cache/genbench/data", image_size: int = 32, download: bool = False, fit: Fit = "pad",
                  extractor: str = "fmnist-cnn") -> ImageData:
    """Fashion-MNIST (Xiao et al. 2017): from /usr/share/datasets/fashion-mnist (Debian's
    dataset-fashion-mnist) when installed, else torchvision's layout under `root`."""
    return _idx_dataset("fashion_mnist", "FashionMNIST", root, download, image_size, fit, extractor, DEBIAN_FASHION_MNIST)


def mnist(root: str = "~/.cache/genbench/data", image_size: int = 32, download: bool = False, fit: Fit = "pad",
          extractor: str = "inception-v3") -> ImageData:
    return _idx_dataset("mnist", "MNIST", root, download, image_size, fit, extractor)


def cifar10(root: str = "~/.cache/genbench/data", image_size: int = 32, download: bool = False, fit: Fit = "resize",
            extractor: str = "inception-v3") -> ImageData:
    """CIFAR-10 through torchvision, which checks every batch file's md5 before it unpickles it."""
    import torchvision

    root_path = Path(os.path.expanduser(str(root)))
    put = f"cifar-10-python.tar.gz in {root_path} (read with data.download=true), or its extracted cifar-10-batches-py/ there"
    if download:
        _download("cifar10", "CIFAR10", root_path, put, "train on data=fashion_mnist, which Debian packages")
    try:
        splits = [torchvision.datasets.CIFAR10(str(root_path), train=t, download=False).data for t in (True, False)]
    except RuntimeError:  # "Dataset not found or corrupted. You can use download=True ..."
        raise DatasetNotFound(f"cifar10 not found or corrupt in {root_path / 'cifar-10-batches-py'}. Add data.download=true, "
                              f"or put {put}") from None
    train, test = (torch.from_numpy(np.asarray(d)).permute(0, 3, 1, 2) for d in splits)  # (N, 3, 32, 32)
    return ImageData("cifar10", fit_size(train, image_size, fit), fit_size(test, image_size, fit), extractor)


def image_folder(root: str | None = None, image_size: int = 32, channels: int = 3, test_fraction: float = 0.0,
                 fit: Fit = "resize", extractor: str = "inception-v3") -> ImageData:
    """Every image file under `root` (recursively), converted to `channels` (1 or 3), held in memory.
    The last `test_fraction` of the sorted file list becomes the test split."""
    if not root:
        raise ValueError("data=image_folder needs data.root=DIR: the folder of images to train on (.png, .jpg, ...; "
                         "searched recursively)")
    if channels not in (1, 3):
        raise ValueError(f"data.channels must be 1 or 3, got {channels}")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
    folder = Path(os.path.expanduser(str(root)))
    files = image_files(folder, "data.root")
    images = torch.stack([fit_size(read_image(p, channels, "data.root")[None], image_size, fit)[0] for p in files])
    n_test = int(len(images) * test_fraction)
    return ImageData("image_folder", images[: len(images) - n_test], images[len(images) - n_test :] if n_test else None,
                     extractor)


# ---- image files and sample arrays ---------------------------------------------------------
def image_files(folder: Path, key: str, exclude: Iterable[str] = (), fix: str = "point it at a folder of images") -> list[Path]:
    """Image files under `folder` (recursively, by suffix), sorted; one error naming `key` and `fix` when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetNotFound(f"{key}={folder} is not a folder; {fix}")
    skip = {folder / name for name in exclude}
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p not in skip and p.is_file())
    if not files:
        raise DatasetNotFound(f"{key}={folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); {fix}")
    return files


def read_image(path: Path, channels: int, key: str | None = None) -> torch.Tensor:
    """One image file as (channels, H, W) uint8 (channels 1: PIL's "L", 3: "RGB"). 16-bit grey is scaled
    to 8 bits, round(v / 257); a file PIL cannot decode is one ValueError naming it (and `key`)."""
    from PIL import Image

    where = f"{key}: {path}" if key else str(path)

    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            if im.mode.startswith("I;16"):
                im = Image.fromarray(np.round(np.asarray(im, dtype=np.float64) / 257.0).astype(np.uint8))
            elif im.mode in ("I", "F"):
                kind = "32-bit integer" if im.mode == "I" else "floating-point"
                raise _Refused(f"{where} has {kind} pixels, whose range is unknown; save it as an 8- or 16-bit PNG")
            array = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except _Refused as e:
        raise ValueError(str(e)) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
        raise ValueError(f"{where} is not a readable image ({_first_line(e)}); delete or replace it") from None
    image = torch.from_numpy(array.copy())
    return image[None] if image.dim() == 2 else image.permute(2, 0, 1)


class _Refused(Exception):
    """A readable image genbench will not guess about (kept apart from PIL's own ValueErrors)."""


def images_from_array(array: np.ndarray, what: str) -> torch.Tensor:
    """An array of images as uint8 (N, C, H, W). Takes (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1
    or 3, of integers in [0, 255]; floats are refused with the exact conversion to apply."""
    if array.dtype.kind == "f":
        lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            fix = "replace the NaN/Inf values, then convert to uint8 in [0, 255]"
        elif lo >= 0 and hi <= 1:
            fix = "for images in [0, 1], save (x * 255).round().astype(np.uint8)"
        elif lo >= -1 and hi <= 1:
            fix = "for images in [-1, 1], save ((x + 1) * 127.5).round().astype(np.uint8)"
        elif lo >= 0 and hi <= 255:
            fix = "for images in [0, 255], save x.round().astype(np.uint8)"
        else:
            fix = "rescale them to [0, 255] and save them as uint8"
        raise ValueError(f"{what}: images are {array.dtype} in [{lo:.4g}, {hi:.4g}], but genbench scores uint8 images "
                         f"and does not guess a float range; {fix}")
    if array.dtype.kind not in "ui":
        raise ValueError(f"{what}: images are {array.dtype}; save them as uint8 in [0, 255]")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"{what}: integer images in [{array.min()}, {array.max()}] are not 8-bit; scale them to "
                         "[0, 255] (16-bit: (x / 257).round()) and save them as uint8")
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or (array.shape[1] not in (1, 3) and array.shape[-1] not in (1, 3)):
        raise ValueError(f"{what}: images have shape {array.shape}; expected (N, C, H, W) or (N, H, W, C) with C = 1 or 3")
    if len(array) == 0:
        raise ValueError(f"{what} holds no images")
    images = torch.from_numpy(np.ascontiguousarray(array).astype(np.uint8))
    return images if images.shape[1] in (1, 3) else images.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW


def read_array(path: Path, key: str) -> torch.Tensor:
    """The `images` array of an .npz (or the array of an .npy) as uint8 (N, C, H, W); never unpickles."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                if "images" not in loaded.files:
                    raise _Refused(f"{key}: {path} holds no `images` array (it has: {', '.join(loaded.files) or 'none'}); "
                                   "save the samples with np.savez(path, images=uint8 array (N, C, H, W))")
                array = loaded["images"]
        else:
            array = loaded
    except _Refused as e:
        raise ValueError(str(e)) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # object arrays: ValueError (allow_pickle=False)
        raise ValueError(f"{key}: {path} is not a readable .npz/.npy file of images ({_first_line(e)})") from None
    return images_from_array(array, f"{key}: {path}")


def load_samples(path: str | Path, channels: int, key: str = "samples_dir") -> torch.Tensor:
    """uint8 (N, C, H, W) images to score: an .npz (its `images`) or .npy file, a `genbench sample` folder
    (its samples.npz), or any folder of images (searched recursively, sorted, grid.png skipped, each
    converted to `channels`). Every problem is one error naming `key` and the path."""
    path = Path(os.path.expanduser(str(path)))
    if path.is_file() and path.suffix in (".npz", ".npy"):
        return read_array(path, key)
    if (path / SAMPLES_FILE).is_file():
        return read_array(path / SAMPLES_FILE, key)
    if not path.is_dir():
        raise FileNotFoundError(f"{key}={path} is not a folder or an .npz/.npy file; pass the folder `genbench sample` wrote")
    files = image_files(path, key, exclude=(GRID_FILE,), fix=f"pass the folder `genbench sample` wrote (it holds "
                        f"{SAMPLES_FILE}), a folder of .png images or an .npz file with an `images` array")
    images = [read_image(p, channels, key) for p in files]
    sizes = {tuple(img.shape) for img in images}
    if len(sizes) > 1:
        raise ValueError(f"{key}={path}: the images differ in size ({', '.join(map(str, sorted(sizes)))}); every sample "
                         "must have the run's size")
    return torch.stack(images)
