"""Checkpoints that rebuild a run: written atomically, loadable with ``weights_only=True``.

Format (a plain dict; ``FORMAT_VERSION`` bumps when it changes):
    format_version  int
    step            int      optimisation steps done
    train_time      float    seconds spent training (the budget that trainer.max_time caps)
    images_seen     int
    compute         {"train_flops_per_image", "train_flops", "compile_s"}  (FLOPs: genbench.compute)
    model, ema      state dicts
    optimizers      {name: optimizer state dict}
    schedulers      {name: lr-scheduler state dict}
    rng             {"torch": ByteTensor, "cuda": [ByteTensor], "numpy": ..., "python": ...}
    config          the resolved run config, as plain containers
    extra           dict of plain data for later features (best FID, ...)
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from genbench.atomic import atomic_write

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe, or from an incompatible run. One line."""


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save, atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the `.<name>.*.tmp` files a killed save left behind (one writer per run folder)."""
    stale = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def save_checkpoint(state: dict[str, Any], run_dir: str | Path, keep: int) -> Path:
    """Write step_<N>.pt and last.pt atomically, then delete all but the newest `keep` step files."""
    folder = checkpoint_dir(run_dir)
    state = {"format_version": FORMAT_VERSION, **state}
    path = folder / f"step_{state['step']:08d}.pt"
    atomic_save(state, path)
    try:  # last.pt is a hard link to the newest step file, swapped in atomically
        tmp = folder / f".{LAST}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.link(path, tmp)
        os.replace(tmp, folder / LAST)
    except OSError:  # a filesystem without hard links
        atomic_save(state, folder / LAST)
    periodic = sorted(folder.glob("step_*.pt"))
    for old in periodic[: max(len(periodic) - keep, 0)]:
        old.unlink(missing_ok=True)
    return path


REQUIRED = ("step", "model", "ema", "optimizers", "schedulers", "config", "image_shape")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint as plain data, loaded with weights_only=True: nothing in the file runs. Any file
    that is not a whole genbench checkpoint raises a CheckpointError of one line naming it."""
    path = Path(path)
    if path.is_dir():
        path = checkpoint_dir(path) / LAST
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; run_dir must be a folder made by `genbench train` (it holds {CHECKPOINT_DIR}/{LAST})"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            raise CheckpointError(f"checkpoint {path} holds pickled objects other than tensors and plain data, "
                                  "so genbench refused to load it (nothing in it ran); it was not written by genbench: "
                                  "delete it or point run_dir at a genbench run") from None
        raise CheckpointError(f"checkpoint {path} is corrupt ({_first_line(e)}); delete it to use the previous step_*.pt") from None
    except Exception as e:  # torch.load's failures on arbitrary bytes are many (RuntimeError, EOFError, IndexError, ...)
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({_first_line(e)}); "
                              "delete it to use the previous step_*.pt") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED):
        missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
        raise CheckpointError(f"checkpoint {path} is not a genbench checkpoint (missing {', '.join(missing)})")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {state.get('format_version')}, this genbench reads {FORMAT_VERSION}")
    return state


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    first = text[0].split(". ")[0] if text else type(e).__name__  # torch appends paragraphs of advice
    return first[:160]


def find_resumable(run_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any], list[str]] | None:
    """The newest checkpoint of `run_dir` that loads: last.pt, else the step_*.pt files newest first.
    Returns (path, state, problems) with a one-line problem per file skipped, or None when there is none."""
    folder = checkpoint_dir(run_dir)
    candidates = [folder / LAST] + sorted(folder.glob("step_*.pt"), reverse=True)
    problems: list[str] = []
    for path in candidates:
        if not path.is_file():
            continue
        try:
            return path, load_checkpoint(path, map_location), problems
        except CheckpointError as e:
            problems.append(str(e))
    if problems:
        raise CheckpointError(f"no usable checkpoint in {folder}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return None


def weights_name(ema: bool | float) -> str:
    """How records and sample folders name a choice of weights: ema (the Trainer's average), raw, or
    ema<sigma_rel> for one of the power-function EMAs kept by trainer.ema_profiles."""
    if isinstance(ema, bool):
        return "ema" if ema else "raw"
    return f"ema{ema:g}"


def select_weights(state: dict, ema: bool | float) -> dict:
    """The state dict `ema` picks from a checkpoint: True = the EMA, False = the raw weights, a number =
    the power-function EMA of that sigma_rel among trainer.ema_profiles (post-hoc selection)."""
    if isinstance(ema, bool):
        return state["ema" if ema else "model"]
    profiles = state.get("ema_profiles") or {}
    if f"{ema:g}" not in profiles:
        kept = ", ".join(profiles) or "none"
        raise ValueError(f"ema={ema:g}: this run kept no power-function EMA of sigma_rel {ema:g} (it kept: {kept}); "
                         "pick one of those, ema=true, ema=false, or retrain with trainer.ema_profiles=[...]")
    return profiles[f"{ema:g}"]


def load_model(run_dir: str | Path, ema: bool | float = True, device: str | torch.device = "cpu", sampler: dict | None = None):
    """Rebuild a run's model from its checkpoint alone (config and weights), in eval mode. `ema` picks
    the weights (`select_weights`); `sampler` (a sampler config) replaces the one the model was trained
    with. Returns (model, state)."""
    from hydra.utils import instantiate

    state = load_checkpoint(run_dir, map_location="cpu")
    model_cfg = dict(state["config"]["model"])
    if sampler:
        if "sampler" not in model_cfg:
            raise ValueError(f"sampler= applies to diffusion models; {model_cfg['_target_']} has no sampler, drop the override")
        model_cfg["sampler"] = sampler
    weights = select_weights(state, ema)  # before the model is built: a missing profile fails in one line
    model = instantiate(model_cfg, image_shape=tuple(state["image_shape"]), _convert_="all")
    model.load_state_dict(weights)
    return model.to(device).eval().requires_grad_(False), state
