"""The one adapter between genbench's images and torch-fidelity: FID, IS, KID, precision/recall.

Papers: FID, Heusel et al. 2017 (arXiv:1706.08500); IS, Salimans et al. 2016 (arXiv:1606.03498);
KID, Binkowski et al. 2018 (arXiv:1801.01401); precision/recall, Kynkaanniemi et al. 2019
(arXiv:1904.06991). The math is torch-fidelity's (toshas/torch-fidelity); this module only
1. checks the images (uint8, (N, C, H, W), C = 1 or 3, enough of them for each metric);
2. makes them what torch-fidelity's extractors take: uint8 (N, 3, H, W). Grey images are repeated
   to three equal channels, explicitly here, the same thing PIL's convert("RGB") does when
   torch-fidelity reads a grey PNG, so a tensor and its PNG folder score identically;
3. extracts features with torch-fidelity's extractor API (`get_featuresdict_from_dataset`) on one
   extractor (genbench.extractors), built once, when the FidelityMetrics is built;
4. caches reference features itself, as safetensors (never a pickle), keyed by the sha256 of the images,
   the extractor's name and weights' sha256, the layers, torch-fidelity's version and the device kind;
5. computes each metric from the two feature dicts with torch-fidelity's own functions
   (`*_featuresdict_to_metric`, `fid_featuresdict_to_statistics`), the same calls `calculate_metrics`
   makes, so the numbers equal `calculate_metrics`'s exactly (tests/test_metrics.py);
6. renames the results (`fid`, `is_mean`, `kid_mean`, `precision`, ...).

Why genbench owns the cache: torch-fidelity reads its cached features with torch.load(weights_only=False),
so a crafted file in its cache would run code. genbench never hands it a cache; an unreadable or foreign
cache file is ignored with a warning and rewritten.

Known oddities, kept for comparability with torch-fidelity: all four metrics share one extractor
(torch-fidelity's own default puts precision/recall on VGG-16); FID is biased upwards for small N,
so compare FIDs only at equal numbers of images; KID and IS shuffle with torch-fidelity's fixed
seed 2020.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Literal, get_args

import torch
from torch.utils.data import Dataset

from genbench.extractors import ExtractorKind, resolve_extractor
from genbench.validate import check_choice, check_positive

log = logging.getLogger("genbench")
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
CACHE_FORMAT = "genbench-features-1"  # bump when what a cache file holds changes


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


class FidelityMetrics:
    """FID, IS, KID and precision/recall of generated images against reference images, on one
    feature extractor, through torch-fidelity's extractor and metric functions.

    API (the protocol and scripts use these):
    - `compute(generated, reference, reference_name)`: the metrics of two uint8 (N, C, H, W) sets;
    - `featuresdict(images, name)`: {layer: (N, D) float32} at every layer the metrics use, cached on
      disk when `name` is given (e.g. "fashion_mnist-train") and cache_dir is set;
    - `features(images, name, metric="fid")`: that dict's (N, D) features for one metric (FID's layer
      by default: the feature space of the memorisation distances);
    - `score(generated_features, reference_features)`: the metrics from two feature dicts.
    The extractor's weights are found, verified and loaded when this object is built."""

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
        self.cache_fill_s = 0.0  # seconds spent extracting named sets the cache did not hold (once per machine)
        # the layer each metric reads, and the network (its weights verified now, before any sample is made);
        # it returns every metric's layer whatever eval.metrics says, so one cache file serves them all
        self.layers = {m: self.extractor.default_layer(m) for m in get_args(MetricName)}
        self.network = self.extractor.create(sorted(set(self.layers.values())))
        if cuda:
            self.network.cuda()

    def settings(self) -> dict:
        """What the numbers depend on besides the images and the extractor; stored in metrics.json."""
        return {"metrics": list(self.metrics), "isc_splits": self.isc_splits, "kid_subsets": self.kid_subsets,
                "kid_subset_size": self.kid_subset_size, "prc_neighborhood": self.prc_neighborhood}

    def _fidelity_kwargs(self) -> dict:
        """The settings torch-fidelity's metric functions read (its defaults for the rest, e.g. rng_seed 2020)."""
        return dict(isc_splits=self.isc_splits, kid_subsets=self.kid_subsets, kid_subset_size=self.kid_subset_size,
                    prc_neighborhood=self.prc_neighborhood, save_cpu_ram=True, verbose=False)

    # ---- checks ------------------------------------------------------------------------------------
    def check_counts(self, n_gen: int, n_ref: int) -> None:
        """One-line errors for set sizes the metrics cannot use (torch-fidelity would fail late or assert)."""
        if "fid" in self.metrics and min(n_gen, n_ref) < 2:
            raise ValueError(f"FID needs at least 2 images on each side, got {n_gen} generated and {n_ref} reference; "
                             "raise eval.num_samples")
        if "kid" in self.metrics and self.kid_subset_size > min(n_gen, n_ref):
            raise ValueError(f"eval.metrics.kid_subset_size={self.kid_subset_size} exceeds the {n_gen} generated / "
                             f"{n_ref} reference images; lower eval.metrics.kid_subset_size or raise eval.num_samples")
        if "isc" in self.metrics and self.isc_splits > n_gen:
            raise ValueError(f"eval.metrics.isc_splits={self.isc_splits} exceeds the {n_gen} generated images; "
                             "lower eval.metrics.isc_splits or raise eval.num_samples")
        if "prc" in self.metrics and self.prc_neighborhood >= min(n_gen, n_ref):
            raise ValueError(f"eval.metrics.prc_neighborhood={self.prc_neighborhood} needs more than that many images on "
                             f"each side, got {n_gen} generated and {n_ref} reference; lower it or raise eval.num_samples")

    def check(self, generated: torch.Tensor, reference: torch.Tensor) -> None:
        """One-line errors for inputs torch-fidelity would reject late or silently misread."""
        check_images("generated images", generated)
        check_images("reference images", reference)
        if generated.shape[1:] != reference.shape[1:]:
            raise ValueError(f"generated images are {tuple(generated.shape[1:])} but reference images are "
                             f"{tuple(reference.shape[1:])}; evaluate samples of the run's own data size")
        self.check_counts(len(generated), len(reference))

    # ---- features ----------------------------------------------------------------------------------
    def featuresdict(self, images: torch.Tensor, name: str | None = None) -> dict[str, torch.Tensor]:
        """{layer: (N, D) float32 features} of uint8 images (N, C, H, W) at the layers the metrics use.
        With `name` and a cache_dir, read from / written to genbench's safetensors cache."""
        check_images("images", images)
        path = self.cache_path(images, name) if self.cache_dir and name else None
        if path is not None and path.is_file():
            cached = self._read_cache(path, images)
            if cached is not None:
                return cached
        from torch_fidelity.utils import get_featuresdict_from_dataset

        from genbench.progress import Progress

        start = time.perf_counter()
        # in chunks of whole batches (the same batches as one call, so the same features), with progress
        chunks, step = [], self.batch_size * 10
        with Progress(len(images), f"features ({self.extractor.kind})") as bar:
            for i in range(0, len(images), step):
                chunk = images[i : i + step]
                chunks.append(get_featuresdict_from_dataset(UInt8Images(to_rgb(chunk.cpu())), self.network, self.batch_size,
                                                            self.cuda, save_cpu_ram=True, verbose=False))
                bar.update(len(chunk))
        features = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
        if path is not None:
            self._write_cache(path, images, features)
            self.cache_fill_s += time.perf_counter() - start
        return features

    def features(self, images: torch.Tensor, name: str | None = None, metric: MetricName = "fid") -> torch.Tensor:
        """(N, D) features of uint8 images at the layer `metric` reads (FID's by default); cached under `name`."""
        check_choice("metric", metric, MetricName)
        return self.featuresdict(images, name)[self.layers[metric]]

    # ---- the reference cache ------------------------------------------------------------------------
    def _cache_identity(self, images: torch.Tensor) -> dict:
        import torch_fidelity

        return {"format": CACHE_FORMAT, "images_sha256": images_sha256(images), "extractor": self.extractor.name,
                "extractor_sha256": self.extractor.sha256, "layers": sorted(self.network.get_requested_features_list()),
                "torch_fidelity": torch_fidelity.__version__, "device": "cuda" if self.cuda else "cpu"}

    def reference_key(self, images: torch.Tensor, name: str) -> str:
        """File stem of `images`' cached features: the set's name (dataset and split) and size, the extractor,
        and a sha256 of everything the features depend on (_cache_identity)."""
        digest = hashlib.sha256(json.dumps(self._cache_identity(images), sort_keys=True).encode()).hexdigest()
        return f"genbench-{name}-n{len(images)}-{self.extractor.name}-{digest[:16]}"

    def cache_path(self, images: torch.Tensor, name: str) -> Path:
        return Path(self.cache_dir) / f"{self.reference_key(images, name)}.safetensors"

    def _read_cache(self, path: Path, images: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The cached features, or None (with a warning) when the file is unreadable, foreign or stale.
        safetensors parses a header and raw tensor bytes: nothing in the file can run."""
        from safetensors import SafetensorError, safe_open

        identity = json.dumps(self._cache_identity(images), sort_keys=True)
        layers = self.network.get_requested_features_list()
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("identity") != identity:
                    raise ValueError("it was written for other images or another extractor")
                features = {layer: f.get_tensor(layer) for layer in layers}
            for layer, t in features.items():
                if t.dtype != torch.float32 or t.dim() != 2 or len(t) != len(images):
                    raise ValueError(f"layer {layer} holds {t.dtype} {tuple(t.shape)}, not ({len(images)}, D) float32")
            return features
        except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
            log.warning("ignoring the cached features %s (%s); extracting them again", path, reason)
            return None

    def _write_cache(self, path: Path, images: torch.Tensor, features: dict[str, torch.Tensor]) -> None:
        """Write the features atomically; a failed write (disk full, read-only) costs only the cache."""
        from safetensors.torch import save

        from genbench.atomic import atomic_write

        data = save({k: v.contiguous() for k, v in features.items()},
                    metadata={"identity": json.dumps(self._cache_identity(images), sort_keys=True)})
        try:
            atomic_write(path, lambda f: f.write(data))
        except OSError as e:
            log.warning("could not cache the reference features (%s); continuing without the cache", str(e).splitlines()[0])

    # ---- the metrics -------------------------------------------------------------------------------
    def score(self, generated: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, float]:
        """The metrics from two feature dicts (featuresdict's output): torch-fidelity's own functions, in
        the order and with the arguments calculate_metrics uses, so the numbers equal its numbers."""
        from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric
        from torch_fidelity.metric_isc import isc_featuresdict_to_metric
        from torch_fidelity.metric_kid import kid_featuresdict_to_metric
        from torch_fidelity.metric_prc import prc_featuresdict_to_metric

        layer = self.layers
        self.check_counts(len(next(iter(generated.values()))), len(next(iter(reference.values()))))
        kwargs = self._fidelity_kwargs()
        out = {}
        if "isc" in self.metrics:
            out.update(isc_featuresdict_to_metric(generated, layer["isc"], **kwargs))
        if "fid" in self.metrics:
            stats = [fid_featuresdict_to_statistics(f, layer["fid"]) for f in (generated, reference)]
            out.update(fid_statistics_to_metric(*stats, verbose=False))
        if "kid" in self.metrics:
            out.update(kid_featuresdict_to_metric(generated, reference, layer["kid"], **kwargs))
        if "prc" in self.metrics:
            out.update(prc_featuresdict_to_metric(generated, reference, layer["prc"], **kwargs))
        return {RESULT_NAMES[k]: float(v) for k, v in out.items() if k in RESULT_NAMES}

    def compute(self, generated: torch.Tensor, reference: torch.Tensor, reference_name: str | None = None) -> dict[str, float]:
        """The metrics of `generated` against `reference`, both uint8 (N, C, H, W). With `reference_name`
        (e.g. "fashion_mnist-train") and a cache_dir, the reference features are cached."""
        self.check(generated, reference)
        return self.score(self.featuresdict(generated), self.featuresdict(reference, reference_name))
