"""The one adapter between genbench's images and torch-fidelity: FID, IS, KID, precision/recall.

Papers: FID, Heusel et al. 2017 (arXiv:1706.08500); IS, Salimans et al. 2016 (arXiv:1606.03498);
KID, Binkowski et al. 2018 (arXiv:1801.01401); precision/recall, Kynkaanniemi et al. 2019
(arXiv:1904.06991). The math is torch-fidelity's (toshas/torch-fidelity); this module only
1. checks the images (uint8, (N, C, H, W), C = 1 or 3, enough of them for each metric);
2. makes them what torch-fidelity's extractors take: uint8 (N, 3, H, W). Grey images are repeated
   to three equal channels, explicitly here, the same thing PIL's convert("RGB") does when
   torch-fidelity reads a grey PNG, so a tensor and its PNG folder score identically;
3. calls `calculate_metrics` once with every metric on one extractor (genbench.extractors), the
   reference images cached on disk under a key holding their sha256 and the extractor's hash;
4. renames the results (`fid`, `is_mean`, `kid_mean`, `precision`, ...).

Known oddities, kept for comparability with torch-fidelity: all four metrics share one extractor
(torch-fidelity's own default puts precision/recall on VGG-16); FID is biased upwards for small N,
so compare FIDs only at equal numbers of images; KID and IS shuffle with torch-fidelity's fixed
seed 2020.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch.utils.data import Dataset

from genbench.data import IMAGE_SUFFIXES
from genbench.extractors import ExtractorKind, resolve_extractor
from genbench.validate import check_choice, check_positive

MetricName = Literal["fid", "isc", "kid", "prc"]
# torch-fidelity's result keys -> genbench's
RESULT_NAMES = {
    "frechet_inception_distance": "fid",
    "inception_score_mean": "is_mean",
    "inception_score_std": "is_std",
    "kernel_inception_distance_mean": "kid_mean",
    "kernel_inception_distance_std": "kid_std",
    "precision": "precision",
    "recall": "recall",
    "f_score": "f_score",
}
SAMPLES_FILE = "samples.npz"  # written by genbench.sample.write_samples beside the PNGs
GRID_FILE = "grid.png"  # ditto: a grid of the samples, not a sample


class UInt8Images(Dataset):
    """(N, 3, H, W) uint8 images as the torch Dataset torch-fidelity iterates over."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def check_images(what: str, images: torch.Tensor) -> None:
    """Raise a one-line error unless `images` is a non-empty uint8 tensor (N, 1 or 3, H, W)."""
    if not torch.is_tensor(images):
        raise ValueError(f"{what} must be a torch.Tensor of uint8 images (N, C, H, W), got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(f"{what} are {images.dtype}, but the metrics take uint8 images in [0, 255]; convert "
                         "[-1, 1] floats with genbench.data.to_uint8")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{what} must be (N, C, H, W) with C = 1 or 3, got shape {tuple(images.shape)}")
    if len(images) == 0:
        raise ValueError(f"{what} holds no images")


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """(N, 1 or 3, H, W) uint8 -> (N, 3, H, W) uint8: grey repeated to R = G = B."""
    return images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images.contiguous()


def images_sha256(images: torch.Tensor) -> str:
    """sha256 of the images' shape and bytes: the reference-cache key part that changes with the data."""
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def load_image_folder(folder: str | Path, channels: int) -> torch.Tensor:
    """uint8 (N, channels, H, W) from a `genbench sample` folder (its samples.npz) or any folder of
    .png/.jpg images (sorted by name; write_samples' grid.png is skipped)."""
    from PIL import Image

    folder = Path(os.path.expanduser(str(folder)))
    if not folder.is_dir():
        raise FileNotFoundError(f"samples_dir={folder} is not a folder; pass a folder written by `genbench sample`")
    if (folder / SAMPLES_FILE).is_file():
        images = torch.from_numpy(np.load(folder / SAMPLES_FILE)["images"])
    else:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.name != GRID_FILE)
        if not files:
            raise FileNotFoundError(f"samples_dir={folder} holds no {SAMPLES_FILE} and no .png/.jpg images")
        mode = "L" if channels == 1 else "RGB"
        arrays = []
        for p in files:
            with Image.open(p) as im:
                arrays.append(np.asarray(im.convert(mode), dtype=np.uint8))
        if len({a.shape for a in arrays}) > 1:
            raise ValueError(f"samples_dir={folder}: the images differ in size; every image must be the run's size")
        images = torch.from_numpy(np.stack(arrays))
        images = images[:, None] if images.dim() == 3 else images.permute(0, 3, 1, 2)
    return images


class FidelityMetrics:
    """FID, IS, KID and precision/recall of generated images against reference images, on one
    feature extractor, through torch_fidelity.calculate_metrics."""

    def __init__(
        self,
        extractor: ExtractorKind,
        inception_weights: str | None = None,
        metrics: tuple[MetricName, ...] = get_args(MetricName),
        batch_size: int = 200,
        isc_splits: int = 10,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        prc_neighborhood: int = 3,
        cache_dir: str | None = "~/.cache/genbench/fidelity",
        cuda: bool = False,
    ):
        for m in metrics:
            check_choice("eval.metrics.metrics", m, MetricName)
        if not metrics:
            raise ValueError(f"eval.metrics.metrics is empty; list some of: {', '.join(get_args(MetricName))}")
        for name, value in [("batch_size", batch_size), ("isc_splits", isc_splits), ("kid_subsets", kid_subsets),
                            ("kid_subset_size", kid_subset_size), ("prc_neighborhood", prc_neighborhood)]:
            check_positive(f"eval.metrics.{name}", value)
        self.extractor = resolve_extractor(extractor, inception_weights)
        self.metrics, self.batch_size, self.cuda = tuple(metrics), batch_size, cuda
        self.isc_splits, self.kid_subsets, self.kid_subset_size = isc_splits, kid_subsets, kid_subset_size
        self.prc_neighborhood = prc_neighborhood
        self.cache_dir = os.path.expanduser(cache_dir) if cache_dir else None

    def settings(self) -> dict:
        """What the numbers depend on besides the images and the extractor; stored in metrics.json."""
        return {"metrics": list(self.metrics), "isc_splits": self.isc_splits, "kid_subsets": self.kid_subsets,
                "kid_subset_size": self.kid_subset_size, "prc_neighborhood": self.prc_neighborhood}

    def reference_key(self, reference: torch.Tensor, name: str) -> str:
        """Cache name of a reference set: dataset and split (`name`), count and content hash. torch-fidelity
        adds the extractor's registered name, which ends with its weights' hash."""
        return f"genbench-{name}-n{len(reference)}-{images_sha256(reference)[:16]}"

    def check(self, generated: torch.Tensor, reference: torch.Tensor) -> None:
        """One-line errors for inputs torch-fidelity would reject late or silently misread."""
        check_images("generated images", generated)
        check_images("reference images", reference)
        if generated.shape[1:] != reference.shape[1:]:
            raise ValueError(f"generated images are {tuple(generated.shape[1:])} but reference images are "
                             f"{tuple(reference.shape[1:])}; evaluate samples of the run's own data size")
        n_gen, n_ref = len(generated), len(reference)
        if "fid" in self.metrics and min(n_gen, n_ref) < 2:
            raise ValueError(f"FID needs at least 2 images on each side, got {n_gen} generated and {n_ref} reference; "
                             "raise eval.num_samples")
        if "kid" in self.metrics and self.kid_subset_size > min(n_gen, n_ref):
            raise ValueError(f"eval.metrics.kid_subset_size={self.kid_subset_size} exceeds the {n_gen} generated / "
                             f"{n_ref} reference images; lower eval.metrics.kid_subset_size or raise eval.num_samples")
        if "isc" in self.metrics and self.isc_splits > n_gen:
            raise ValueError(f"eval.metrics.isc_splits={self.isc_splits} exceeds the {n_gen} generated images; "
                             "lower eval.metrics.isc_splits or raise eval.num_samples")

    def compute(self, generated: torch.Tensor, reference: torch.Tensor, reference_name: str | None = None) -> dict[str, float]:
        """The metrics of `generated` against `reference`, both uint8 (N, C, H, W). With `reference_name`
        (e.g. "fashion_mnist-train") and a cache_dir, the reference features and statistics are cached."""
        from torch_fidelity import calculate_metrics

        self.check(generated, reference)
        kwargs = dict(
            input1=UInt8Images(to_rgb(generated.cpu())),
            input2=UInt8Images(to_rgb(reference.cpu())),
            feature_extractor=self.extractor.name,
            **self.extractor.fidelity_kwargs,
            **{m: True for m in self.metrics},
            cuda=self.cuda,
            batch_size=self.batch_size,
            isc_splits=self.isc_splits,
            kid_subsets=self.kid_subsets,
            kid_subset_size=self.kid_subset_size,
            prc_neighborhood=self.prc_neighborhood,
            save_cpu_ram=True,  # no DataLoader worker processes, and precision/recall in blocks, not one N x N matrix
            verbose=False,
            cache=bool(self.cache_dir and reference_name),
        )
        if kwargs["cache"]:
            kwargs.update(cache_root=self.cache_dir, input2_cache_name=self.reference_key(reference, reference_name))
        results = calculate_metrics(**kwargs)
        return {RESULT_NAMES[k]: float(v) for k, v in results.items() if k in RESULT_NAMES}
