"""Checkpoints that rebuild a run: written atomically, loadable with ``weights_only=True``.

Format (a plain dict; ``FORMAT_VERSION`` bumps when it changes):
    format_version  int
    step            int      optimisation steps done
    train_time      float    seconds spent training (the budget that trainer.max_time caps)
    images_seen     int
    model, ema      state dicts
    optimizers      {name: optimizer state dict}
    schedulers      {name: lr-scheduler state dict}
    rng             {"torch": ByteTensor, "cuda": [ByteTensor], "numpy": ..., "python": ...}
    config          the resolved run config, as plain containers
    extra           dict of plain data for later features (best FID, ...)
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from collections.abc import Callable
from typing import IO, Any

import numpy as np
import torch

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """write(f) into a temporary file in the same folder, fsync, then rename over `path`: a reader
    (or a run killed mid-write) never sees a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save, atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = checkpoint_dir(path) / LAST
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; run_dir must be a folder made by `genbench train` (it holds {CHECKPOINT_DIR}/{LAST})"
        )
    state = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format {state.get('format_version')}, this genbench reads {FORMAT_VERSION}")
    return state


def load_model(run_dir: str | Path, ema: bool = True, device: str | torch.device = "cpu", sampler: dict | None = None):
    """Rebuild a run's model from its checkpoint alone (config and weights), in eval mode.
    `sampler` (a sampler config) replaces the one the model was trained with. Returns (model, state)."""
    from hydra.utils import instantiate

    state = load_checkpoint(run_dir, map_location="cpu")
    model_cfg = dict(state["config"]["model"])
    if sampler:
        if "sampler" not in model_cfg:
            raise ValueError(f"sampler= applies to diffusion models; {model_cfg['_target_']} has no sampler, drop the override")
        model_cfg["sampler"] = sampler
    model = instantiate(model_cfg, image_shape=tuple(state["image_shape"]), _convert_="all")
    model.load_state_dict(state["ema" if ema else "model"])
    return model.to(device).eval().requires_grad_(False), state
