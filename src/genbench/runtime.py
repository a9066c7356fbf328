"""Run-time facts every command needs: the device, seeds and RNG state, durations, provenance and
the machine a number was measured on.

The machine record is what makes a time or a FLOP rate traceable: CPU model, cores, torch threads,
device, versions, and a measured matmul peak in GFLOP/s (a probe of about a second per dtype, cached
per machine in ~/.cache/genbench/machine.json, so a record costs nothing after the first).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import random
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import genbench
from genbench.atomic import atomic_write

MACHINE_CACHE = Path(os.environ.get("GENBENCH_MACHINE_CACHE", "~/.cache/genbench/machine.json")).expanduser()
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# ---- device and seeds -----------------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else is passed to torch.device."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={device} but no CUDA device is visible here; on a CPU use trainer=default "
                         "(or trainer.device=cpu), and ask for trainer.precision=bf16 / trainer.compile=true one by one")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG stream a run draws from, as plain tensors and numbers (loads with weights_only=True)."""
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


# ---- budgets ----------------------------------------------------------------------------------
def _budget(value, key: str, unit: str, example: str, from_text) -> float | None:
    """The shell both budget parsers share: None, 0 or "null" = no limit; a number as it is; text through
    `from_text` (None when it does not parse); the result must be positive."""
    if value in (None, 0, "", "none", "null"):
        return None
    amount = None if isinstance(value, bool) else float(value) if isinstance(value, (int, float)) else from_text(str(value))
    if amount is None:
        raise ValueError(f"{key}={value!r} is not {unit}; write e.g. {example}")
    if not amount > 0:
        raise ValueError(f"{key}={value!r} must be positive")
    return amount


def _seconds(text: str) -> float | None:
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not parts or not any(parts.groups()):
        return None
    h, m, s = (float(x) if x else 0.0 for x in parts.groups())
    return 3600 * h + 60 * m + s


_SI = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def _flops(text: str) -> float | None:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*([kMGTPE]?)\s*(?:FLOPs?)?\s*", text)
    return float(match.group(1)) * _SI[match.group(2)] if match else None


def parse_duration(value: str | int | float | None, key: str = "trainer.max_time") -> float | None:
    """'10m', '90s', '1h30m', '1.5h' or a number of seconds -> seconds; None or 0 means no limit."""
    return _budget(value, key, "a duration", "10m, 90s, 1h30m", _seconds)


def parse_flops(value: str | int | float | None, key: str = "trainer.max_flops") -> float | None:
    """'1.85e14', '185T', '0.2P' or a number -> FLOPs; None or 0 means no limit."""
    return _budget(value, key, "a FLOP count", "1.85e14 or 185T", _flops)


# ---- provenance ---------------------------------------------------------------------------------
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


# ---- the machine ---------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else platform's best guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model() if device.type == "cpu" else device.type


def matmul_flop_per_s(device: torch.device, dtype: torch.dtype, seconds: float = 1.0, n: int = 1024) -> float:
    """Best achieved FLOP/s of an (n x n) @ (n x n) matmul (2 n^3 FLOPs) over about `seconds`: the
    peak that model-FLOP utilisation (MFU) is measured against, on this machine, in this dtype."""
    generator = torch.Generator().manual_seed(0)  # its own stream: probing moves no run's RNG
    a = torch.randn(n, n, generator=generator).to(device, dtype)
    b = torch.randn(n, n, generator=generator).to(device, dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b  # warm-up (kernel selection, allocation)
    sync()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def machine_record(device: torch.device | str = "cpu", dtypes: tuple[str, ...] = ("fp32",),
                   cache: Path | None = MACHINE_CACHE, probe_seconds: float = 1.0,
                   reprobe_after_s: float = 3600.0) -> dict[str, Any]:
    """Where a number was measured: CPU, cores, threads, device, versions and the matmul peak per dtype.

    The peak is the best probe seen for this (machine, threads, device, torch): a probe on a busy machine
    reads low, so a new probe (at most one per `reprobe_after_s`) can raise the cached peak, never lower
    it. It is an achieved matmul rate, not a datasheet number; convolution kernels (oneDNN's Winograd
    3x3 convolutions on CPUs) can beat it, so a CPU run's MFU can exceed 1."""
    device = torch.device(device) if isinstance(device, str) else device
    record: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device.type,
        "device_name": device_name(device),
        "torch_version": str(torch.__version__),  # a str subclass that weights_only loading refuses
        "cuda_version": torch.version.cuda,
        "hostname": platform.node(),
    }
    key = "|".join(str(record[k]) for k in ("cpu_model", "cpu_count", "torch_threads", "device_name", "torch_version"))
    cached = _read_cache(cache).get(key, {}) if cache else {}
    peaks = dict(cached.get("peak_flop_per_s", {}))
    age = time.time() - cached.get("probed_at", 0.0)
    to_probe = [d for d in dtypes if d not in peaks or age > reprobe_after_s]
    for name in to_probe:
        peaks[name] = max(peaks.get(name, 0.0), matmul_flop_per_s(device, DTYPES[name], probe_seconds))
    record["peak_flop_per_s"] = peaks
    record["peak_probe"] = {"op": "best matmul 1024x1024x1024 seen", "seconds_per_dtype": probe_seconds,
                            "measured": _now() if to_probe else cached.get("measured")}
    if cache and to_probe:
        entries = _read_cache(cache)
        entries[key] = {"peak_flop_per_s": peaks, "measured": record["peak_probe"]["measured"], "probed_at": time.time()}
        atomic_write(cache, lambda f: f.write(json.dumps(entries, indent=2).encode()))
    return record


def _read_cache(cache: Path) -> dict:
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
