"""`genbench eval run_dir=D`: score a run under genbench's evaluation protocol; write D/metrics.json.

1. Rebuild the model from D's checkpoint (EMA or raw weights) and the data it was trained on.
2. Pick the feature extractor from the data (the table in genbench.extractors), unless eval.extractor is set.
3. Generate eval.num_samples images in batches from a seeded generator, or read samples_dir=.
4. FID, IS, KID and precision/recall against eval.num_reference images of eval.reference_split
   (genbench.metrics; the reference features are extracted once and cached on disk).
5. Likelihoods in bits/dim on test images when the family has one (null for GANs).
6. The family's diagnostic panels, as PNGs in D/eval/ and TensorBoard images.
7. Write D/metrics.json atomically with the protocol record; log eval/* scalars and the run's
   hyperparameters (TensorBoard's HParams dashboard) to D/tb at the checkpoint's step.

`genbench train` runs the same protocol at its end, and `make_eval_fn` a smaller one every
trainer.eval_every steps.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Literal

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import make_grid, save_image

import genbench
from genbench import CONF_DIR
from genbench.checkpoint import atomic_write, load_model
from genbench.data import ImageData, to_float
from genbench.extractors import default_extractor
from genbench.metrics import FidelityMetrics, load_image_folder
from genbench.models.base import GenerativeModel
from genbench.sample import generate
from genbench.trainer import EvalFn, resolve_device
from genbench.validate import check_choice, check_positive, one_line_errors

Split = Literal["train", "test"]
METRICS_FILE = "metrics.json"
REFERENCE_SEED = 0  # the fixed permutation a reference subset is drawn from


def build_metrics(eval_cfg: DictConfig, data_target: str, device: torch.device, **overrides) -> FidelityMetrics:
    """eval.metrics on the extractor for `data_target` (or eval.extractor), on the GPU only when `device` is one."""
    kind = eval_cfg.extractor or default_extractor(data_target)
    return instantiate(eval_cfg.metrics, extractor=kind, inception_weights=eval_cfg.inception_weights,
                       cache_dir=eval_cfg.cache_dir, cuda=device.type == "cuda", **overrides, _convert_="all")


def reference_images(data: ImageData, split: Split, num: int | None) -> torch.Tensor:
    """The first `num` images of a fixed permutation of `split` (all of it when num is null): the same
    images in every evaluation, so their features are extracted once and then read from the cache."""
    check_choice("eval.reference_split", split, Split)
    if split == "test" and data.test is None:
        raise ValueError(f"eval.reference_split=test but {data.name} has no test split; use eval.reference_split=train")
    images = data.split(split)
    if num is None or num >= len(images):
        return images
    check_positive("eval.num_reference", num)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(REFERENCE_SEED))
    return images[perm[:num]]


def make_eval_fn(eval_cfg: DictConfig, data: ImageData, data_target: str, device: torch.device) -> EvalFn:
    """The Trainer's eval_fn: eval.during_training.num_samples images (with KID subsets of
    eval.during_training.kid_subset_size) scored against the same cached reference as the full protocol."""
    small = eval_cfg.during_training
    metrics = build_metrics(eval_cfg, data_target, device, kid_subset_size=small.kid_subset_size)
    reference = reference_images(data, eval_cfg.reference_split, eval_cfg.num_reference)
    name = f"{data.name}-{eval_cfg.reference_split}"

    def eval_fn(model: GenerativeModel, step: int) -> dict[str, float]:
        generated, _ = generate(model, small.num_samples, eval_cfg.batch_size, eval_cfg.seed)
        return metrics.compute(generated, reference, name)

    return eval_fn


@torch.no_grad()
def likelihoods(model: GenerativeModel, images: torch.Tensor, batch_size: int, seed: int) -> dict[str, dict] | None:
    """Mean and standard error of each bits/dim bound the family computes, or None (GANs)."""
    generator = torch.Generator().manual_seed(seed)
    per_image: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(images), batch_size):
        for k, v in model.bits_per_dim(images[i : i + batch_size].to(model.device), generator).items():
            per_image.setdefault(k, []).append(v.detach().double().cpu())
    if not per_image:
        return None
    out = {}
    for k, chunks in per_image.items():
        v = torch.cat(chunks)
        out[k] = {"mean": v.mean().item(), "sem": (v.std() / math.sqrt(len(v))).item() if len(v) > 1 else None}
    return out


def git_commit() -> dict[str, Any]:
    """The commit of the genbench source tree (None outside a git checkout) and whether it had local changes."""
    src = Path(genbench.__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        return {"commit": head.stdout.strip(), "dirty": bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def write_json_atomic(obj: Any, path: Path) -> None:
    """json.dump, atomically (default=str: a family's sampling_info may hold non-JSON values)."""
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, default=str) + "\n").encode()))


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"lr": 1}} -> {"model.lr": 1}, with lists as strings: the HParams dashboard's columns."""
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        elif v is None or isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def scalars(record: dict) -> dict[str, float]:
    """The record's numbers as eval/* TensorBoard tags."""
    out = {f"eval/{k}": v for k, v in record["metrics"].items()}
    for k, v in (record["bits_per_dim"] or {}).items():
        out[f"eval/bpd_{k}"] = v["mean"]
    # cost and speed beside quality, so the HParams dashboard holds every column of `genbench compare`
    out.update({f"eval/{k}": float(v) for k, v in record.get("latent", {}).items()})
    for k in ("sampling_img_per_s", "nfe"):
        if record.get(k) is not None:
            out[f"eval/{k}"] = float(record[k])
    out.update({f"eval/{k}": float(v) for k, v in record.get("training", {}).items()})
    return out


def log_to_tensorboard(run_dir: Path, record: dict, config: dict, step: int, images: dict[str, torch.Tensor]) -> None:
    """eval/* scalars and images at `step`, and the run's hyperparameters with the final metrics, written
    into the run's own event folder so that the HParams dashboard lists one row per run."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    with SummaryWriter(str(run_dir / "tb")) as writer:
        tags = scalars(record)
        for k, v in tags.items():
            writer.add_scalar(k, v, step)
        for k, grid in images.items():
            writer.add_image(f"eval/{k}", grid, step)
        hp = flatten(config)
        hp["eval.extractor"] = record["feature_extractor"]["name"]
        # SummaryWriter.add_hparams would open a sub-run per call; the same three summaries in the run's
        # own folder tie the hyperparameters to the eval/* scalars above.
        for summary in hparams(hp, tags):
            writer._get_file_writer().add_summary(summary, step)


def panel(images: torch.Tensor) -> torch.Tensor:
    """(K, C, H, W) in [-1, 1] -> a (3, H', W') grid in [0, 1]."""
    return make_grid((images.float().cpu().clamp(-1, 1) + 1) / 2, nrow=int(math.ceil(math.sqrt(len(images)))), padding=2)


def evaluate_run(run_dir: str | Path, eval_cfg: DictConfig, device: torch.device, samples_dir: str | None = None,
                 sampler: dict | None = None) -> dict:
    """Run the protocol on a finished (or running) `genbench train` folder; returns the metrics.json record.
    `sampler` (a sampler config) replaces the diffusion sampler the run was trained with."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    check_positive("eval.num_samples", eval_cfg.num_samples)
    check_positive("eval.batch_size", eval_cfg.batch_size)
    if samples_dir and sampler:
        raise ValueError("sampler= applies to images genbench eval generates; drop it with samples_dir= "
                         "(the folder's info.json records how its images were sampled)")
    # 1. model and data
    model, state = load_model(run_dir, ema=eval_cfg.ema, device=device, sampler=sampler)
    data_cfg = state["config"]["data"]
    data: ImageData = instantiate(data_cfg, _convert_="all")
    if tuple(data.image_shape) != tuple(state["image_shape"]):
        raise ValueError(f"the data now loads as {data.image_shape} but run_dir={run_dir} trained on "
                         f"{tuple(state['image_shape'])}; restore the run's data config")
    # 2. extractor and reference
    metrics = build_metrics(eval_cfg, data_cfg["_target_"], device)
    reference = reference_images(data, eval_cfg.reference_split, eval_cfg.num_reference)
    # 3. generated images, or a samples folder with its own record (written by `genbench sample`)
    t0 = time.perf_counter()
    if samples_dir:
        generated = load_image_folder(samples_dir, data.image_shape[0])
        info_file = Path(os.path.expanduser(samples_dir)) / "info.json"
        info = json.loads(info_file.read_text()) if info_file.is_file() else {}
        img_per_s = info.get("img_per_s")
        sampling = {k: v for k, v in info.items() if k not in ("num_samples", "img_per_s")}  # {} without info.json
    else:
        generated, img_per_s = generate(model, eval_cfg.num_samples, eval_cfg.batch_size, eval_cfg.seed)
        sampling = {"step": state["step"], "ema": eval_cfg.ema, "seed": eval_cfg.seed, **model.sampling_info()}
    t1 = time.perf_counter()
    # 4. sample-quality metrics
    results = metrics.compute(generated, reference, f"{data.name}-{eval_cfg.reference_split}")
    t2 = time.perf_counter()
    # 5. likelihoods, on held-out images when there are some
    like_split: Split = "test" if data.test is not None else "train"
    like_images = data.split(like_split)[: eval_cfg.likelihood_images]
    bpd = likelihoods(model, like_images, eval_cfg.batch_size, eval_cfg.seed) if eval_cfg.likelihood_images else None
    latent = model.latent_statistics(like_images) if len(like_images) else {}
    t3 = time.perf_counter()
    # 6. diagnostic panels and a grid of the scored samples
    images = {"samples": panel(to_float(generated[:64]))}
    if eval_cfg.diagnostic_images:
        x = to_float(data.split(like_split)[: eval_cfg.diagnostic_images]).to(device)
        images.update({k: panel(v) for k, v in model.diagnostic_images(x, torch.Generator().manual_seed(eval_cfg.seed)).items()})
    (run_dir / "eval").mkdir(exist_ok=True)
    for k, grid in images.items():
        save_image(grid, run_dir / "eval" / f"{k}.png")
    # 7. the record
    step = sampling.get("step", state["step"])
    record = {
        "metrics": results,
        "feature_extractor": metrics.extractor.record(),
        "metric_settings": metrics.settings(),
        "bits_per_dim": bpd,
        "likelihood_split": like_split if bpd else None,
        "likelihood_images": len(like_images) if bpd else None,
        "latent": latent,  # on the likelihood images, e.g. a VAE's active units; {} for families without a code
        "num_generated": len(generated),
        "num_reference": len(reference),
        "reference_split": eval_cfg.reference_split,
        "reference_dataset": data.name,
        "samples_dir": str(samples_dir) if samples_dir else None,
        **{k: sampling.get(k) for k in ("step", "ema", "seed", "sampler", "nfe")},  # null when a samples_dir does not say
        "sampling": sampling,  # everything the samples depend on besides the weights (family-specific)
        "checkpoint_step": state["step"],
        "training": {"train_time_s": state["train_time"], "images_seen": state["images_seen"],
                     "parameters": sum(p.numel() for p in model.parameters())},
        "generation_batch_size": None if samples_dir else eval_cfg.batch_size,  # the noise is drawn per batch
        "sampling_img_per_s": img_per_s,
        "timings_s": {"sampling": t1 - t0 if not samples_dir else None, "metrics": t2 - t1, "likelihood": t3 - t2},
        "eval_wall_time_s": time.perf_counter() - start,
        "device": str(device),
        "genbench_version": genbench.__version__,
        "git": git_commit(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(record, run_dir / METRICS_FILE)
    log_to_tensorboard(run_dir, record, state["config"], step, images)
    return record


def summary_line(record: dict) -> str:
    m = record["metrics"]
    parts = [f"{k}={v:.4g}" for k, v in m.items() if k in ("fid", "is_mean", "kid_mean", "precision", "recall")]
    parts += [f"bpd_{k}={v['mean']:.4g}" for k, v in (record["bits_per_dim"] or {}).items()]
    return f"{' '.join(parts)} [{record['feature_extractor']['name']}, {record['num_generated']} vs {record['num_reference']} " \
           f"{record['reference_split']}, {record['eval_wall_time_s']:.1f} s]"


@hydra.main(config_path=CONF_DIR, config_name="eval", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    sampler = OmegaConf.to_container(cfg.sampler, resolve=True) if cfg.get("sampler") else None
    record = evaluate_run(cfg.run_dir, cfg.eval, resolve_device(cfg.device), cfg.samples_dir, sampler)
    print(f"wrote {Path(cfg.run_dir) / METRICS_FILE}: {summary_line(record)}")
