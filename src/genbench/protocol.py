"""The evaluation protocol: one object, built by Hydra from conf/eval, that every number goes through.

`genbench eval`, the evaluation at the end of `genbench train`, the small one during training and
every script in scripts/ score with a `Protocol`:

    protocol = instantiate(cfg.eval, _convert_="all")        # validates itself: bad settings fail here
    eval_fn = protocol.during_training(data, device)          # the Trainer's eval_fn (eval_during/*)
    record = protocol.evaluate_run(run_dir, device, data=data) # the full protocol -> RUN/metrics.json
    record = protocol.evaluate_samples(images_or_dir, data, device, out=DIR)   # samples from anywhere
    scored = protocol.score(images, data, device)             # metrics + the protocol's description

An evaluation of a run:
1. rebuild the model from the checkpoint (EMA or raw weights, eval.ema; `sampler=` replaces a
   diffusion model's sampler), and the data it trained on (or the `data` passed in);
2. the feature extractor: eval.extractor, or the data's own (`extractor:` in conf/data/*.yaml);
3. generate eval.num_samples images in batches from a seeded generator;
4. FID, IS, KID, precision/recall against eval.num_reference images of eval.reference_split
   (genbench.metrics; the reference features are cached);
5. memorisation: nearest-training-image distances of the samples against those of held-out test
   images (genbench.memorisation), and a panel of the closest samples beside their neighbours;
6. bits/dim on eval.likelihood_images test images when the family has a likelihood;
7. the family's diagnostic panels, as PNGs in RUN/eval/ and in TensorBoard (genbench.tblog);
8. the record (genbench.records): metrics, protocol, machine, compute, memorisation, provenance.

The protocol's `id` (a hash of every setting the numbers depend on: sample count, reference set,
extractor, metric settings, likelihood images) tells which numbers are comparable.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torchvision.utils import save_image

import genbench
from genbench import memorisation as memo
from genbench.checkpoint import load_model
from genbench.data import ImageData, image_grid, load_samples, to_float
from genbench.extractors import ExtractorKind
from genbench.generate import generate, likelihoods
from genbench.metrics import FidelityMetrics, MetricName
from genbench.models.base import GenerativeModel
from genbench.records import add_record, load_records, record_key
from genbench.validate import check_choice, check_positive

log = logging.getLogger("genbench")
Split = Literal["train", "test"]
REFERENCE_SEED = 0  # the fixed permutation a reference subset is drawn from
EVAL_DIR = "eval"  # RUN/eval/: the record's PNG panels


@dataclass(frozen=True)
class MetricSettings:
    """eval.metrics: what genbench.metrics computes and how."""

    metrics: tuple[MetricName, ...] = get_args(MetricName)
    batch_size: int = 200  # images per feature-extraction batch
    isc_splits: int = 10
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    prc_neighborhood: int = 3


@dataclass(frozen=True)
class DuringTraining:
    """eval.during_training: the Trainer's small evaluation every trainer.eval_every steps."""

    num_samples: int = 1000
    kid_subset_size: int = 500


@dataclass(frozen=True)
class MemorisationSettings:
    """eval.memorisation: see genbench.memorisation for the rule."""

    enabled: bool = True
    quantile: float = 0.01  # of the test images' nearest-training distances
    train_images: int | None = None  # training images searched; null = all of them (features cached)
    test_images: int | None = 10000  # held-out images that calibrate the rule; null = all
    panel: int = 16  # closest samples shown beside their nearest training image; 0 = no PNG


def _settings(cls, value, key: str):
    if isinstance(value, cls):
        return value
    names = {f for f in cls.__dataclass_fields__}
    unknown = set(value or {}) - names
    if unknown:
        raise ValueError(f"{key}.{sorted(unknown)[0]} is not a setting; the settings are: {', '.join(sorted(names))}")
    return cls(**(value or {}))


def _subset(images: torch.Tensor, num: int | None) -> torch.Tensor:
    """The first `num` images of a fixed permutation (all of them when num is null or too large)."""
    if num is None or num >= len(images):
        return images
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(REFERENCE_SEED))
    return images[perm[:num]]


def panel(images: torch.Tensor) -> torch.Tensor:
    """(K, C, H, W) in [-1, 1] -> a (3, H', W') grid in [0, 1]."""
    return image_grid(images)


class Protocol:
    """Every setting of an evaluation, as plain values, checked against each other when built."""

    def __init__(
        self,
        metrics: MetricSettings | dict | None = None,
        num_samples: int = 10000,
        batch_size: int = 250,
        seed: int = 0,
        ema: bool | float = True,
        reference_split: Split = "train",
        num_reference: int | None = 10000,
        extractor: ExtractorKind | None = None,
        inception_weights: str | None = None,
        cache_dir: str | None = "~/.cache/genbench/fidelity",
        likelihood_images: int = 500,
        diagnostic_images: int = 16,
        memorisation: MemorisationSettings | dict | None = None,
        during_training: DuringTraining | dict | None = None,
        at_end: bool = True,
        headline: bool | None = None,
    ):
        self.metric_settings = _settings(MetricSettings, metrics, "eval.metrics")
        self.memorisation = _settings(MemorisationSettings, memorisation, "eval.memorisation")
        self.small = _settings(DuringTraining, during_training, "eval.during_training")
        self.num_samples, self.batch_size, self.seed, self.ema = num_samples, batch_size, seed, ema
        self.reference_split, self.num_reference, self.extractor = reference_split, num_reference, extractor
        self.inception_weights, self.cache_dir = inception_weights, cache_dir
        self.likelihood_images, self.diagnostic_images, self.at_end = likelihood_images, diagnostic_images, at_end
        self.headline = headline  # the default of evaluate_run's and evaluate_samples' `headline`
        self._prepared: dict = {}
        self.validate()

    # ---- set-up ----------------------------------------------------------------------------------
    def validate(self) -> None:
        """One-line errors, before any work, for settings that cannot work together."""
        m, small = self.metric_settings, self.small
        for m_name in m.metrics:
            check_choice("eval.metrics.metrics", m_name, MetricName)
        if not m.metrics:
            raise ValueError(f"eval.metrics.metrics is empty; list some of: {', '.join(get_args(MetricName))}")
        check_choice("eval.reference_split", self.reference_split, Split)
        if self.extractor is not None:
            check_choice("eval.extractor", self.extractor, ExtractorKind)
        for key, value in [("num_samples", self.num_samples), ("batch_size", self.batch_size),
                           ("metrics.batch_size", m.batch_size), ("metrics.isc_splits", m.isc_splits),
                           ("metrics.kid_subsets", m.kid_subsets), ("metrics.kid_subset_size", m.kid_subset_size),
                           ("metrics.prc_neighborhood", m.prc_neighborhood), ("during_training.num_samples", small.num_samples),
                           ("during_training.kid_subset_size", small.kid_subset_size)]:
            check_positive(f"eval.{key}", value)
        if self.num_reference is not None:
            check_positive("eval.num_reference", self.num_reference)
        for key, value in [("likelihood_images", self.likelihood_images), ("diagnostic_images", self.diagnostic_images),
                           ("memorisation.panel", self.memorisation.panel)]:
            check_positive(f"eval.{key}", value, allow_zero=True)
        for key in ("train_images", "test_images"):
            if getattr(self.memorisation, key) is not None:
                check_positive(f"eval.memorisation.{key}", getattr(self.memorisation, key))
        if not 0 < self.memorisation.quantile < 1:
            raise ValueError(f"eval.memorisation.quantile={self.memorisation.quantile} must be in (0, 1), e.g. 0.01")
        needs = []  # (samples key, count, needed by key, needed count)
        if "kid" in m.metrics:
            needs += [("eval.num_samples", self.num_samples, "eval.metrics.kid_subset_size", m.kid_subset_size),
                      ("eval.num_reference", self.num_reference, "eval.metrics.kid_subset_size", m.kid_subset_size),
                      ("eval.during_training.num_samples", small.num_samples, "eval.during_training.kid_subset_size",
                       small.kid_subset_size)]  # against the reference count: in during_training()
        if "isc" in m.metrics:
            needs += [("eval.num_samples", self.num_samples, "eval.metrics.isc_splits", m.isc_splits),
                      ("eval.during_training.num_samples", small.num_samples, "eval.metrics.isc_splits", m.isc_splits)]
        if "fid" in m.metrics:
            needs += [("eval.num_samples", self.num_samples, "FID", 2), ("eval.during_training.num_samples", small.num_samples, "FID", 2)]
        for key, count, by, need in needs:
            if count is not None and count < need:
                raise ValueError(f"{key}={count} is below {by}={need}, which needs that many images; raise {key} "
                                 f"or lower {by}" if by != "FID" else f"{key}={count}: FID needs at least 2 images; raise it")

    def extractor_for(self, data: ImageData) -> str:
        """eval.extractor, else the data's own (the `extractor:` of its conf/data/*.yaml)."""
        return self.extractor or getattr(data, "extractor", None) or "inception-v3"

    def reference(self, data: ImageData) -> torch.Tensor:
        """The first eval.num_reference images of a fixed permutation of eval.reference_split: the same
        images in every evaluation, so their features are extracted once and then read from the cache."""
        if self.reference_split == "test" and data.test is None:
            raise ValueError(f"eval.reference_split=test but {data.name} has no test split; use eval.reference_split=train")
        return _subset(data.split(self.reference_split), self.num_reference)

    def metrics(self, data: ImageData, device: torch.device, kid_subset_size: int | None = None) -> FidelityMetrics:
        """genbench.metrics on this protocol's extractor (its weights found and verified now)."""
        s = self.metric_settings
        return FidelityMetrics(
            extractor=self.extractor_for(data), inception_weights=self.inception_weights, metrics=tuple(s.metrics),
            batch_size=s.batch_size, isc_splits=s.isc_splits, kid_subsets=s.kid_subsets,
            kid_subset_size=kid_subset_size or s.kid_subset_size, prc_neighborhood=s.prc_neighborhood,
            cache_dir=self.cache_dir, cuda=torch.device(device).type == "cuda")

    def prepare(self, data: ImageData, device: torch.device | str = "cpu") -> tuple[FidelityMetrics, torch.Tensor]:
        """(metrics, reference images) for `data`, checked now: the extractor's weights exist, the reference
        split exists and holds enough images for KID. Called before training, so a protocol that cannot
        work fails before any compute is spent; kept for the evaluations that follow."""
        if self._prepared.get("data") is not data or self._prepared.get("device") != str(device):
            metrics, reference = self.metrics(data, torch.device(device)), self.reference(data)
            size = self.metric_settings.kid_subset_size
            if "kid" in metrics.metrics and len(reference) < size:
                raise ValueError(f"eval.metrics.kid_subset_size={size} exceeds the {len(reference)} images of {data.name}'s "
                                 f"{self.reference_split} split; lower eval.metrics.kid_subset_size")
            self._prepared = {"data": data, "device": str(device), "metrics": metrics, "reference": reference}
        return self._prepared["metrics"], self._prepared["reference"]

    def describe(self, data: ImageData, extractor_name: str, num_generated: int, num_reference: int) -> dict:
        """The settings the numbers depend on, and their `id`: numbers are comparable only at equal ids.
        Not in it: the seed and batch size of the noise, ema/raw and the sampler (they are the record's own
        key), which metrics are listed and whether memorisation runs (neither changes a number computed)."""
        settings = {
            "num_samples": num_generated,
            "reference": {"dataset": data.name, "split": self.reference_split, "num": num_reference},
            "extractor": extractor_name,
            "metrics": {k: v for k, v in asdict(self.metric_settings).items() if k not in ("metrics", "batch_size")},
            "likelihood_images": self.likelihood_images,
            "memorisation": {k: v for k, v in asdict(self.memorisation).items() if k not in ("enabled", "panel")},
        }
        pid = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
        return {**settings, "id": pid}

    # ---- scoring ---------------------------------------------------------------------------------
    def features(self, generated: torch.Tensor, data: ImageData, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The samples' features at every layer the metrics read: extracted once for `score` and `memorise`."""
        metrics, _ = self.prepare(data, device)
        return metrics.featuresdict(generated)

    def score(self, generated: torch.Tensor, data: ImageData, device: torch.device | str = "cpu",
              features: dict[str, torch.Tensor] | None = None) -> dict:
        """The protocol's metrics of uint8 samples (N, C, H, W), with what they were scored under: the one
        scoring path of `genbench eval` and of every benchmark script. `features`: from `self.features`."""
        metrics, reference = self.prepare(data, device)
        metrics.check(generated, reference)
        log.info("scoring %d samples against %d %s images of %s (%s)", len(generated), len(reference),
                 self.reference_split, data.name, metrics.extractor.name)
        generated_features = features if features is not None else metrics.featuresdict(generated)
        results = metrics.score(generated_features, metrics.featuresdict(reference, f"{data.name}-{self.reference_split}"))
        return {
            "metrics": results,
            "protocol": self.describe(data, metrics.extractor.name, len(generated), len(reference)),
            "feature_extractor": metrics.extractor.record(),
            "metric_settings": metrics.settings(),
            "num_generated": len(generated),
            "num_reference": len(reference),
            "reference_split": self.reference_split,
            "reference_dataset": data.name,
        }

    def memorise(self, generated: torch.Tensor, data: ImageData, device: torch.device | str = "cpu",
                 features: dict[str, torch.Tensor] | None = None) -> tuple[dict | None, torch.Tensor | None]:
        """(the memorisation record, a panel of the closest samples beside their nearest training images), or
        (None, None) when eval.memorisation.enabled is false. Distances are in the feature space FID uses."""
        s = self.memorisation
        if not s.enabled:
            return None, None
        metrics, _ = self.prepare(data, device)
        train = _subset(data.train, s.train_images)
        test = _subset(data.test, s.test_images) if data.test is not None else None
        log.info("memorisation: nearest of %d training images for %d samples%s", len(train), len(generated),
                 f" and {len(test)} test images" if test is not None else " (no test split to calibrate against)")
        f_train = metrics.features(train, f"{data.name}-train")
        f_gen = features[metrics.layers["fid"]] if features is not None else metrics.features(generated)
        gen_d, gen_i = memo.nearest_neighbours(f_gen, f_train)
        test_d = memo.nearest_neighbours(metrics.features(test, f"{data.name}-test"), f_train)[0] if test is not None else None
        record = {**memo.summarise(gen_d, test_d, s.quantile), "num_train": len(train), "features": metrics.extractor.name}
        grid = memo.panel(generated, train, gen_d, gen_i, s.panel) if s.panel else None
        return record, grid

    def during_training(self, data: ImageData, device: torch.device) -> Any:
        """The Trainer's eval_fn(model, step): eval.during_training.num_samples samples (KID subsets of
        eval.during_training.kid_subset_size) against the full protocol's cached reference. The Trainer
        logs them as eval_during/*."""
        _, reference = self.prepare(data, device)
        size = self.small.kid_subset_size
        if "kid" in self.metric_settings.metrics and len(reference) < size:
            raise ValueError(f"eval.during_training.kid_subset_size={size} exceeds the {len(reference)} reference images; "
                             "lower it or raise eval.num_reference")
        metrics = self.metrics(data, device, kid_subset_size=size)
        name = f"{data.name}-{self.reference_split}"

        def eval_fn(model: GenerativeModel, step: int) -> dict[str, float]:
            generated, _ = generate(model, self.small.num_samples, self.batch_size, self.seed)
            return metrics.compute(generated, reference, name)

        return eval_fn

    # ---- whole evaluations -----------------------------------------------------------------------
    def evaluate_run(self, run_dir: str | Path, device: torch.device, data: ImageData | None = None,
                     sampler: dict | None = None, samples_dir: str | None = None, headline: bool | None = None) -> dict:
        """Run the protocol on a `genbench train` folder and add the record to RUN/metrics.json (see the module
        docstring). `data` is the run's data when the caller has it loaded; `sampler` (a sampler config)
        replaces a diffusion model's; `samples_dir` scores a `genbench sample` folder of this run instead of
        generating. headline: True = this record becomes the run's headline; None = only if it has none."""
        start = time.perf_counter()
        run_dir = Path(run_dir)
        if samples_dir and sampler:
            raise ValueError("sampler= applies to images genbench eval generates; drop it with samples_dir= "
                             "(the folder's info.json records how its images were sampled)")
        # 1. model and data
        model, state = load_model(run_dir, ema=self.ema, device=device, sampler=sampler)
        if data is None:
            from hydra.utils import instantiate

            data = instantiate(state["config"]["data"], _convert_="all")
        if tuple(data.image_shape) != tuple(state["image_shape"]):
            raise ValueError(f"the data now loads as {data.image_shape} but run_dir={run_dir} trained on "
                             f"{tuple(state['image_shape'])}; restore the run's data config")
        # 2. extractor and reference
        metrics, reference = self.prepare(data, device)
        # 3. the samples: their description first, so an evaluation already in metrics.json is not redone
        if samples_dir:
            generated = load_samples(samples_dir, data.image_shape[0])
            info_file = Path(os.path.expanduser(str(samples_dir))) / "info.json"
            info = json.loads(info_file.read_text()) if info_file.is_file() else {}
            sampling = {k: v for k, v in info.items() if k not in ("num_samples", "img_per_s")}  # {} without info.json
        else:
            sampling = {"step": state["step"], "ema": self.ema, "seed": self.seed, **model.sampling_info()}
        num = len(generated) if samples_dir else self.num_samples
        described = {
            "source": "run", "samples_dir": str(samples_dir) if samples_dir else None,
            **{k: sampling.get(k) for k in ("step", "ema", "seed", "sampler", "nfe")},  # null when a samples_dir does not say
            "checkpoint_step": state["step"], "num_generated": num, "num_reference": len(reference),
            "reference_split": self.reference_split, "reference_dataset": data.name,
            "feature_extractor": metrics.extractor.record(),
            "protocol": self.describe(data, metrics.extractor.name, num, len(reference)),
        }
        key = record_key(described)
        current, records = load_records(run_dir)
        if key in records:
            log.info("%s already holds the evaluation %s; not redone (delete that record to recompute)", run_dir, key)
            if (self.headline if headline is None else headline) and current != key:
                add_record(run_dir, records[key], headline=True)
            return records[key]
        t0 = time.perf_counter()
        img_per_s = info.get("img_per_s") if samples_dir else None
        if not samples_dir:
            log.info("sampling %d images (%s)", num, ", ".join(f"{k}={v}" for k, v in model.sampling_info().items()) or "")
            generated, img_per_s = generate(model, num, self.batch_size, self.seed)
        t1, filled = time.perf_counter(), metrics.cache_fill_s
        # 4. sample-quality metrics, 5. memorisation
        features = self.features(generated, data, device)
        scored = self.score(generated, data, device, features)
        memorisation, memo_grid = self.memorise(generated, data, device, features)
        t2 = time.perf_counter()
        # 6. likelihoods, on held-out images when there are some
        like_split: Split = "test" if data.test is not None else "train"
        like_images = data.split(like_split)[: self.likelihood_images]
        bpd = likelihoods(model, like_images, self.batch_size, self.seed) if self.likelihood_images else None
        latent = model.latent_statistics(like_images) if len(like_images) else {}
        t3 = time.perf_counter()
        # 7. panels
        images = {"samples": panel(to_float(generated[:64]))}
        if memo_grid is not None:
            images["memorisation"] = memo_grid
        if self.diagnostic_images:
            x = to_float(data.split(like_split)[: self.diagnostic_images]).to(device)
            images.update({k: panel(v) for k, v in model.diagnostic_images(x, torch.Generator().manual_seed(self.seed)).items()})
        # 8. the record
        precision = state["config"].get("trainer", {}).get("precision", "fp32")
        record = {
            **described, **scored,
            "memorisation": memorisation,
            "bits_per_dim": bpd,
            "likelihood_split": like_split if bpd else None,
            "likelihood_images": len(like_images) if bpd else None,
            "latent": latent,  # on the likelihood images, e.g. a VAE's active units; {} for families without a code
            "sampling": sampling,  # everything the samples depend on besides the weights (family-specific)
            "training": {"train_time_s": state["train_time"], "images_seen": state["images_seen"],
                         "parameters": sum(p.numel() for p in model.parameters()),
                         "machine": state.get("machine")},  # where train_time_s was measured (last: a resumed run's)
            "generation_batch_size": None if samples_dir else self.batch_size,  # the noise is drawn per batch
            "sampling_img_per_s": img_per_s,
            "timings_s": {"sampling": None if samples_dir else t1 - t0, "metrics": t2 - t1, "likelihood": t3 - t2,
                          "reference_features": metrics.cache_fill_s - filled},  # part of "metrics": filling the cache
            **provenance(device, precision),
        }
        info = model.sampling_info()  # a samples folder drawn with another sampler: its sampling FLOPs are not the model's
        same_sampler = all(sampling.get(k) == info.get(k) for k in ("sampler", "nfe"))
        record["compute"] = compute_record(state, model if same_sampler else None, record["machine"], precision)
        record["eval_wall_time_s"] = time.perf_counter() - start
        previous_step = records[current]["checkpoint_step"] if current in records else None
        key, is_headline = add_record(run_dir, record, self.headline if headline is None else headline)
        record["key"] = key
        # the end-of-training evaluation (a new headline at a new step) is eval/*; every other one eval_<variant>/*
        from genbench.tblog import write_evaluation

        write_evaluation(run_dir, record, state["step"], images, headline=is_headline and previous_step != state["step"],
                         config=state["config"])
        folder = run_dir / EVAL_DIR if is_headline else run_dir / EVAL_DIR / key
        save_panels(images, folder)
        return record

    def evaluate_samples(self, samples: str | Path | torch.Tensor, data: ImageData, device: torch.device,
                         out: str | Path | None = None, headline: bool | None = None) -> dict:
        """Score samples made anywhere (a folder of PNGs, a samples.npz, an .npz file, or a uint8 tensor)
        under this protocol against `data`; the record (source "external") goes to OUT/metrics.json
        (default: external_out(samples), beside them) and its panels to OUT/eval/."""
        start = time.perf_counter()
        if torch.is_tensor(samples):
            generated, name = samples, None
            if out is None:
                raise ValueError("out= is needed when the samples are a tensor")
        else:
            generated, name = load_samples(samples, data.image_shape[0]), str(samples)
        if tuple(generated.shape[1:]) != tuple(data.image_shape):
            raise ValueError(f"samples_dir={samples}: the images are {tuple(generated.shape[1:])} but {data.name} loads as "
                             f"{tuple(data.image_shape)}; set data.image_size (and data.channels) to the samples' size")
        out = Path(os.path.expanduser(str(out))) if out else external_out(samples)
        features = self.features(generated, data, device)
        scored = self.score(generated, data, device, features)
        memorisation, memo_grid = self.memorise(generated, data, device, features)
        record = {
            "source": "external", "samples_dir": name, "step": None, "ema": None, "seed": None, "sampler": None,
            "nfe": None, "checkpoint_step": None, **scored, "memorisation": memorisation,
            "bits_per_dim": None, "likelihood_split": None, "likelihood_images": None, "latent": {}, "sampling": {},
            "training": None, "generation_batch_size": None, "sampling_img_per_s": None,
            **provenance(device, "fp32"),
            "compute": dict.fromkeys(COMPUTE_KEYS),
            "eval_wall_time_s": time.perf_counter() - start,
        }
        key, is_headline = add_record(out, record, self.headline if headline is None else headline)
        record["key"] = key
        images = {"samples": panel(to_float(generated[:64]))}
        if memo_grid is not None:
            images["memorisation"] = memo_grid
        save_panels(images, out / EVAL_DIR if is_headline else out / EVAL_DIR / key)
        return record


def external_out(samples: str | Path) -> Path:
    """Where an external evaluation's record and panels go by default: a folder beside the samples,
    <folder>_eval/ or <file stem>_eval/ (never inside a samples folder, whose images would then be read
    as samples)."""
    p = Path(os.path.expanduser(str(samples))).resolve()
    return p.with_name(f"{p.stem if p.suffix.lower() in ('.npz', '.npy') else p.name}_eval")


def save_panels(images: dict[str, torch.Tensor], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, grid in images.items():
        save_image(grid, folder / f"{k}.png")


def provenance(device: torch.device | str, precision: str) -> dict:
    """Where and with what a record was made: the machine (genbench.runtime.machine_record, with the matmul
    peak in the run's dtype), versions and the git commit."""
    from genbench.runtime import git_commit, machine_record

    return {
        "machine": machine_record(torch.device(device), dtypes=tuple(dict.fromkeys(("fp32", precision)))),
        "device": str(device),
        "genbench_version": genbench.__version__,
        "git": git_commit(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


_SAMPLE_FLOPS: dict[str, float | None] = {}
MACHINE_KEY = ("cpu_model", "cpu_count", "torch_threads", "device_name", "torch_version")  # one machine's peak
COMPUTE_KEYS = ("train_flops_per_image", "train_flops", "train_flop_per_s", "mfu", "sample_flops_per_image")


def compute_record(state: dict, model: GenerativeModel | None, machine: dict, precision: str) -> dict:
    """Training compute from the checkpoint's state["compute"] (null for checkpoints older than it), the
    achieved training FLOP/s and its model-FLOP utilisation against the machine's matmul peak in the
    run's dtype, and the FLOPs of one generated image at `model`'s sampler and NFE (null without a
    model). The peak is the training machine's (the checkpoint's machine record, when it has one): the best
    matmul rate seen there, so when this evaluation runs on the same machine (same CPU, cores, threads,
    device and torch) a later, higher probe counts too."""
    c = state.get("compute") or {}
    train_flops, train_time = c.get("train_flops"), state.get("train_time")
    flop_per_s = train_flops / train_time if train_flops and train_time else None
    trained_on = state.get("machine") or machine
    peaks = [(trained_on.get("peak_flop_per_s") or {}).get(precision)]
    if all(trained_on.get(k) == machine.get(k) for k in MACHINE_KEY):
        peaks.append((machine.get("peak_flop_per_s") or {}).get(precision))
    peak = max((p for p in peaks if p), default=None)
    return {"train_flops_per_image": c.get("train_flops_per_image"), "train_flops": train_flops,
            "train_flop_per_s": flop_per_s, "mfu": flop_per_s / peak if flop_per_s and peak else None,
            "sample_flops_per_image": sample_flops(state, model) if model is not None else None}


def sample_flops(state: dict, model: GenerativeModel) -> float | None:
    """genbench.compute.sample_flops_per_image, counted once per process for each architecture and sampler
    (FLOPs do not depend on the weights); null, with a warning, for a model the FLOP counter cannot trace."""
    from genbench.compute import sample_flops_per_image

    key = json.dumps([state["config"].get("model"), state.get("image_shape"), model.sampling_info()], sort_keys=True, default=str)
    if key not in _SAMPLE_FLOPS:
        try:
            log.info("counting the FLOPs of sampling (torch.utils.flop_counter, once per model and sampler)")
            _SAMPLE_FLOPS[key] = sample_flops_per_image(model)
        except Exception as e:  # keep the evaluation
            log.warning("sample FLOPs not counted: %s", e)
            _SAMPLE_FLOPS[key] = None
    return _SAMPLE_FLOPS[key]


def summary_line(record: dict) -> str:
    m = record["metrics"]
    parts = [f"{k}={v:.4g}" for k, v in m.items() if k in ("fid", "is_mean", "kid_mean", "precision", "recall")]
    parts += [f"bpd_{k}={v['mean']:.4g}" for k, v in (record.get("bits_per_dim") or {}).items()]
    memo_rec = record.get("memorisation") or {}
    if memo_rec.get("fraction_closer") is not None:
        parts.append(f"memorised={memo_rec['fraction_closer']:.3g}")
    wall = record.get("eval_wall_time_s")
    return (f"{' '.join(parts)} [{record['feature_extractor']['name']}, {record['num_generated']} vs {record['num_reference']} "
            f"{record['reference_split']}, protocol {record['protocol']['id']}" + (f", {wall:.1f} s]" if wall else "]"))
