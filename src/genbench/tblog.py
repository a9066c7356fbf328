"""What an evaluation writes to a run's TensorBoard folder (RUN/tb): scalars, images, HParams.

Tags, one value per tag per step:
- `eval/*`: the full protocol's headline record, i.e. the evaluation at the end of training (or the
  first evaluation of a run trained without one), at its checkpoint step. Its HParams row holds the
  run's config plus the sampler and NFE the samples were actually drawn with.
- `eval_<variant>/*`: every other record (another sampler, NFE, sample count, seed, raw weights or
  protocol; <variant> = e.g. `ddim5_ema_n10000_seed0_p1a2b3c4d5`) at its checkpoint step. An
  evaluation whose key is already in metrics.json is not re-run, so no tag gets a second value.
- `eval_during/*`: the Trainer's small evaluation every trainer.eval_every steps (not written here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

PLUMBING = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")  # Hydra's keys, not hyperparameters


def hparams(config: dict, prefix: str = "") -> dict[str, bool | int | float | str]:
    """{"model": {"lr": 1, "_target_": ...}} -> {"model.lr": 1}: the HParams dashboard's columns, without
    Hydra plumbing keys, with nulls shown as "null" (not dropped) and lists as strings."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if k in PLUMBING:
            continue
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(hparams(v, f"{key}."))
        elif v is None:
            out[key] = "null"
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def variant(record: dict) -> str:
    """A record's key without its step: the tag group of a non-headline record."""
    sampler = f"{str(record['sampler']).lower()}{record.get('nfe')}" if record.get("sampler") else None
    weights = "external" if record.get("source") == "external" else ("ema" if record.get("ema", True) else "raw")
    parts = [sampler, weights, f"n{record['num_generated']}", f"seed{record.get('seed')}", f"p{record['protocol']['id']}"]
    return "_".join(p for p in parts if p)


def scalars(record: dict, prefix: str = "eval") -> dict[str, float]:
    """The record's numbers as `<prefix>/*` tags: metrics, bits/dim, latent statistics, memorisation,
    and cost and speed, so the HParams dashboard holds every column of `genbench compare`."""
    out = {f"{prefix}/{k}": float(v) for k, v in record["metrics"].items()}
    for k, v in (record.get("bits_per_dim") or {}).items():
        out[f"{prefix}/bpd_{k}"] = v["mean"]
    out.update({f"{prefix}/{k}": float(v) for k, v in (record.get("latent") or {}).items()})
    memo = record.get("memorisation") or {}
    for k in ("fraction_closer", "median_ratio"):
        if memo.get(k) is not None:
            out[f"{prefix}/memorisation_{k}"] = float(memo[k])
    for k in ("sampling_img_per_s", "nfe"):
        if record.get(k) is not None:
            out[f"{prefix}/{k}"] = float(record[k])
    for k, v in (record.get("compute") or {}).items():
        if v is not None:
            out[f"{prefix}/{k}"] = float(v)
    return out


def write_evaluation(run_dir: str | Path, record: dict, step: int, images: dict[str, torch.Tensor],
                     headline: bool, config: dict | None = None) -> str:
    """Log `record` at `step` under `eval/*` (headline, with an HParams row from `config`) or
    `eval_<variant>/*`; `images` are (3, H, W) grids in [0, 1]. Returns the tag prefix used."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    prefix = "eval" if headline else f"eval_{variant(record)}"
    with SummaryWriter(str(Path(run_dir) / "tb")) as writer:
        tags = scalars(record, prefix)
        for k, v in tags.items():
            writer.add_scalar(k, v, step)
        for k, grid in images.items():
            writer.add_image(f"{prefix}/{k}", grid, step)
        if headline:
            hp = hparams(config or {})
            hp.update({"eval.extractor": record["feature_extractor"]["name"], "eval.protocol": record["protocol"]["id"],
                       "eval.sampler": record.get("sampler") or "null", "eval.nfe": record.get("nfe") or "null",
                       "eval.num_samples": record["num_generated"]})
            # SummaryWriter.add_hparams would open a sub-run per call; the same summaries in the run's own
            # folder tie the hyperparameters to the eval/* scalars above, one HParams row per run.
            for summary in hparams_summaries(hp, tags):
                writer._get_file_writer().add_summary(summary, step)
    return prefix
