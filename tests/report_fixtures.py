"""Synthetic run folders for the tests of `genbench compare`: what `genbench train` and `genbench eval`
leave behind (.hydra/, metrics.json, tb/), written directly with chosen numbers; no model is trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

CLASSES = {"gan": "GAN", "vae": "VAE", "diffusion": "Diffusion"}
BATCH, STEPS = 8, 8


def protocol(pid: str = "p1", num_samples: int = 48) -> dict:
    return {"num_samples": num_samples, "reference": {"dataset": "mnist", "split": "train", "num": 64},
            "extractor": "mnist-cnn-test", "metrics": {"kid_subset_size": 24}, "id": pid}


def make_record(fid: float, precision: float = 0.5, recall: float = 0.5, bpd: dict[str, float] | None = None,
                img_per_s: float = 100.0, nfe: int = 1, sampler: str | None = None, train_time: float = 10.0,
                params: int = 1000, flops_per_image: float | None = 1e6, sample_flops: float | None = 1e8,
                mfu: float | None = 0.01, pid: str = "p1", num_samples: int = 48, memorised: float | None = None,
                machine: dict | None = None,
                fmt: int = 2) -> dict:
    """A headline record (format 2), or the single record of format 1 (no protocol, no compute)."""
    images = STEPS * BATCH
    record = {
        "metrics": {"fid": fid, "is_mean": 2.0, "is_std": 0.1, "kid_mean": fid / 1000, "kid_std": 0.001,
                    "precision": precision, "recall": recall},
        "bits_per_dim": {k: {"mean": v, "sem": 0.01} for k, v in bpd.items()} if bpd else None,
        "feature_extractor": {"name": "mnist-cnn-test"}, "metric_settings": {"kid_subset_size": 24},
        "num_generated": num_samples, "num_reference": 64, "reference_dataset": "mnist", "reference_split": "train",
        "sampling_img_per_s": img_per_s, "sampler": sampler, "nfe": nfe, "ema": True, "seed": 0,
        "checkpoint_step": STEPS, "step": STEPS,
        "training": {"train_time_s": train_time, "images_seen": images, "parameters": params,
                     **({"machine": machine} if machine else {})},
    }
    if fmt == 2:
        train_flops = None if flops_per_image is None else flops_per_image * images
        memorisation = None if memorised is None else {"quantile": 0.01, "fraction_closer": memorised}
        record.update(source="run", protocol=protocol(pid, num_samples), memorisation=memorisation, compute={
            "train_flops_per_image": flops_per_image, "train_flops": train_flops,
            "train_flop_per_s": None if train_flops is None else train_flops / train_time, "mfu": mfu,
            "sample_flops_per_image": sample_flops})
    return record


def panel_pixels(seed: int) -> np.ndarray:
    """The fake memorisation panel of a run of `seed`: a (6, 12, 3) uint8 image, one color per seed."""
    image = np.zeros((6, 12, 3), dtype=np.uint8)
    image[..., 0], image[:, :6, 1] = 40 * (seed % 6), 255
    return image


def nfe_record(fid: float, sampler: str, nfe: int, pid: str = "p1k", num_samples: int = 1000, step: int = STEPS,
               ema: bool = True, seed: int = 0, **settings) -> dict:
    """A record beside the headline, as `genbench eval run_dir=R sampler=... sampler.steps=K eval.num_samples=N`
    writes it: the same weights (unless step/ema say otherwise) re-sampled; `settings` are the sampler's own
    (eta=1.0 -> sampling.sampler_eta)."""
    record = make_record(fid, sampler=sampler, nfe=nfe, pid=pid, num_samples=num_samples)
    record.update(checkpoint_step=step, step=step, ema=ema, seed=seed,
                  sampling={"sampler": sampler, "nfe": nfe, "sampler_steps": nfe,
                            **{f"sampler_{k}": v for k, v in settings.items()}})
    return record


def make_run(root: Path, name: str, family: str, seed: int, record: dict, overrides: list[str] = (), job_num: int = 0,
             curve: dict[int, float] | None = None, extra_records: dict[str, dict] | None = None,
             panel: bool = True) -> Path:
    """A finished run folder holding `record` as its headline. tb/ holds what the Trainer logs (train/loss and
    perf/* every 2 steps; `curve` {step: FID} as eval_during/fid, or as eval/fid for a format-1 run) and the
    final eval/* scalars, from a second writer as `genbench eval` writes them. `panel`: eval/memorisation.png,
    panel_pixels(seed)."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    cfg = {"model": {"_target_": f"genbench.models.{family}.{CLASSES.get(family, family.title())}"}, "seed": seed,
           "trainer": {"batch_size": BATCH}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {"model": family}},
                                                                         "job": {"num": job_num}}}))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model={family}", f"seed={seed}", *overrides]))
    if panel:
        (run / "eval").mkdir()
        Image.fromarray(panel_pixels(seed)).save(run / "eval" / "memorisation.png")
    old = "protocol" not in record
    if old:
        (run / "metrics.json").write_text(json.dumps(record))
    else:
        records = {"headline": record, **(extra_records or {})}
        (run / "metrics.json").write_text(json.dumps({"format_version": 2, "headline": "headline", "records": records}))
    train_time = record["training"]["train_time_s"]
    fpi = (record.get("compute") or {}).get("train_flops_per_image")
    with SummaryWriter(str(run / "tb")) as w:
        for step in range(2, STEPS + 1, 2):
            w.add_scalar("train/loss", 1.0 / step, step)
            if old:
                w.add_scalar("perf/img_per_s", 2 * BATCH / (train_time / 4), step)
                continue
            w.add_scalar("perf/train_time_s", train_time * step / STEPS, step)
            w.add_scalar("perf/images_seen", step * BATCH, step)
            if fpi:
                w.add_scalar("perf/train_flops", fpi * step * BATCH, step)
        for step, fid in (curve or {}).items():
            w.add_scalar("eval/fid" if old else "eval_during/fid", fid, step)
    with SummaryWriter(str(run / "tb")) as w:  # genbench eval's writer, at the checkpoint's step
        for k, v in record["metrics"].items():
            w.add_scalar(f"eval/{k}", v, STEPS)
        for k, v in (record["bits_per_dim"] or {}).items():
            w.add_scalar(f"eval/bpd_{k}", v["mean"], STEPS)
    return run
