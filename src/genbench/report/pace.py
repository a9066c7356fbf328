"""A pace: each family's training FLOP/s on one machine, measured once with the machine to itself.

`python scripts/trilemma.py --measure-pace FILE` writes it:

    {"format": 1, "rates": {"gan": FLOP/s, ...}, "settings": {"gan": pace_settings(cfg), ...}, "threads": 2,
     "machine": genbench.runtime.machine_record, "created": ..., "command": ...}

A pace turns training FLOPs into seconds on that machine (FLOPs / the family's rate). The trilemma sweep uses it
for its equal wall-clock budget (10 minutes x the rate = each family's FLOPs), and `genbench compare --pace FILE`
for its time axis, so runs made side by side, under load or on other machines are timed as if each had run
alone on the paced machine. A rate holds only for the settings it was measured with (pace_settings).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from genbench.report.runs import Run, total_cost


class PaceError(ValueError):
    """A pace file that cannot be used; the message names the file and the fix."""


def pace_settings(cfg) -> str:
    """A hash of what sets a training step's cost besides the machine and its threads: model, data (not where it
    lives), optimizer, batch size, precision, compile. `cfg`: a composed config, or a run's .hydra/config.yaml."""
    from omegaconf import DictConfig, OmegaConf

    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    t = cfg.trainer
    settings = {"trainer": {k: t.get(k) for k in ("batch_size", "precision", "compile")},
                **{k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "optim") if k in cfg}}
    settings.get("data", {}).pop("root", None)
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_pace(path: Path, families: list[str] = ()) -> dict:
    """{"id": a hash of the file, "rates", "settings", "about": its machine and threads in words}; PaceError when
    the file is missing or malformed, or has no rate for one of `families`."""
    path = Path(path)
    try:
        data = path.read_bytes()
        record = json.loads(data)
        rates, settings = dict(record["rates"]), dict(record["settings"])
    except OSError as e:
        raise PaceError(f"{path}: {e.strerror or e}; make it with `python scripts/trilemma.py --measure-pace {path}` "
                        "on the machine alone") from None
    except (ValueError, KeyError, TypeError):
        raise PaceError(f"{path}: not a pace file; make one with `python scripts/trilemma.py --measure-pace {path}`") from None
    missing = [f for f in families if f not in rates]
    if missing:
        raise PaceError(f"{path} has no pace of {', '.join(missing)}; measure it with `python scripts/trilemma.py "
                        f"--measure-pace FILE --families {','.join(missing)}` (on the machine alone)")
    machine = record.get("machine") or {}
    about = f"{machine.get('cpu_model', '?')}, {record.get('threads', '?')} thread(s), {record.get('created', '?')}"
    return {"id": hashlib.sha256(data).hexdigest()[:6], "rates": rates, "settings": settings, "about": about}


def apply_pace(runs: list[Run], pace: dict) -> list[str]:
    """Time each run at the pace: its curve's seconds and its training seconds become its training FLOPs / its
    model's rate, and the total seconds follow (the sampling img/s stay as measured). A run without a rate, without
    FLOPs or with other settings than its rate was measured with keeps its own seconds; a message says so."""
    problems = []
    for run in runs:
        rate = pace["rates"].get(run.model)
        why = ("no rate of its model" if rate is None else
               "its training FLOPs are unknown" if run.curve_flops is None or not math.isfinite(run.values["train_pflops"]) else
               "other settings than its rate was measured with" if pace["settings"].get(run.model) != pace_settings(run.config)
               else None)
        if why:
            problems.append(f"{run.path}: not timed at the pace ({why}); its own training seconds are used")
            continue
        run.curve_s = [f / rate for f in run.curve_flops]
        run.values["train_time_s"] = run.values["train_pflops"] * 1e15 / rate
        run.values.update(total_cost(run.values["train_pflops"] * 1e15, run.values["sample_gflops"] * 1e9,
                                     run.values["train_time_s"], run.values["sampling_img_per_s"]))
    return problems
