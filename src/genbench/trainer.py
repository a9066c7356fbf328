"""The one training loop every family runs through.

A family implements the contract of `genbench.models.base`; the Trainer does everything else:
batches, backward and optimizer steps, learning-rate warm-up, gradient clipping, EMA, logging
to TensorBoard, sample grids from fixed noise, checkpoints, resume and the wall-clock budget.
It counts steps, not epochs.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import re
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid, save_image

from genbench.checkpoint import (FORMAT_VERSION, LAST, atomic_save, checkpoint_dir, load_checkpoint, rng_state,
                                 save_checkpoint, set_rng_state)
from genbench.data import ImageData
from genbench.models.base import GenerativeModel, OptimizerFactory
from genbench.validate import check_choice, check_positive

log = logging.getLogger(__name__)
Precision = Literal["fp32", "bf16"]
EvalFn = Callable[[GenerativeModel, int], dict[str, float]]
BEST, BEST_METRIC = "best.pt", "fid"  # checkpoints/best.pt keeps the state with the lowest eval/fid


def resolve_device(device: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else is passed to torch.device."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={device} but no CUDA device is visible; use trainer.device=auto or cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def parse_duration(value: str | int | float | None) -> float | None:
    """'10m', '90s', '1h30m', '1.5h' or a number of seconds -> seconds; None or 0 means no limit."""
    if value in (None, 0, "", "none", "null"):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", str(value))
        if not parts or not any(parts.groups()):
            raise ValueError(f"trainer.max_time={value!r} is not a duration; write e.g. 10m, 90s, 1h30m")
        h, m, s = (float(x) if x else 0.0 for x in parts.groups())
        seconds = 3600 * h + 60 * m + s
    if seconds <= 0:
        raise ValueError(f"trainer.max_time={value!r} must be positive")
    return seconds


@contextmanager
def preserved_rng():
    """Run side work (sample grids, evaluation) without moving the training RNG streams, so a
    resumed run draws the same noise as an uninterrupted one."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class EMA:
    """Exponential moving average of a model's parameters (and a copy of its buffers).
    With warm-up the decay is min(decay, (1 + step) / (10 + step)), so early averages are not
    dominated by the random initialisation (Tarvainen & Valpola 2017)."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True):
        if not 0 <= decay < 1:
            raise ValueError(f"trainer.ema_decay={decay} must be in [0, 1)")
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        ema_p, p = list(self.module.parameters()), list(model.parameters())
        torch._foreach_lerp_(ema_p, p, 1.0 - decay)  # ema <- decay * ema + (1 - decay) * p
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)


class Trainer:
    def __init__(
        self,
        run_dir: str | Path,
        seed: int = 0,
        max_steps: int | None = 1000,
        max_time: str | float | None = None,
        batch_size: int = 128,
        device: str = "auto",
        precision: Precision = "fp32",
        compile: bool = False,
        ema_decay: float = 0.999,
        ema_warmup: bool = True,
        grad_clip: float | None = 1.0,
        lr_warmup_steps: int = 0,
        log_every: int = 50,
        sample_every: int = 1000,
        num_grid_samples: int = 64,
        checkpoint_every: int = 1000,
        keep_checkpoints: int = 3,
        eval_every: int = 0,
        progress: bool | None = None,
    ):
        if max_steps is None and max_time is None:
            raise ValueError("trainer.max_steps and trainer.max_time are both null, so training would never end: "
                             "set one, e.g. trainer.max_time=10m")
        if max_steps is not None:
            check_positive("trainer.max_steps", max_steps)
        check_positive("trainer.batch_size", batch_size)
        check_choice("trainer.precision", precision, Precision)
        for name, value in [("log_every", log_every), ("sample_every", sample_every), ("checkpoint_every", checkpoint_every),
                            ("eval_every", eval_every), ("lr_warmup_steps", lr_warmup_steps), ("num_grid_samples", num_grid_samples)]:
            check_positive(f"trainer.{name}", value, allow_zero=True)
        check_positive("trainer.keep_checkpoints", keep_checkpoints)
        self.run_dir, self.seed = Path(run_dir), seed
        self.max_steps, self.max_time = max_steps, parse_duration(max_time)
        self.batch_size, self.device = batch_size, resolve_device(device)
        self.precision, self.compile = precision, compile
        self.ema_decay, self.ema_warmup, self.grad_clip = ema_decay, ema_warmup, grad_clip
        self.lr_warmup_steps = lr_warmup_steps
        self.log_every, self.sample_every, self.num_grid_samples = log_every, sample_every, num_grid_samples
        self.checkpoint_every, self.keep_checkpoints, self.eval_every = checkpoint_every, keep_checkpoints, eval_every
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._stop_signal: int | None = None

    # ---- set-up and resume -------------------------------------------------------------
    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step, "train_time": self.train_time, "images_seen": self.images_seen,
            "model": self.model.state_dict(), "ema": self.ema.module.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "rng": rng_state(), "config": self.config, "extra": self.extra, "image_shape": list(self.image_shape),
        }

    def _resume(self) -> None:
        state = load_checkpoint(checkpoint_dir(self.run_dir) / LAST, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.ema.module.load_state_dict(state["ema"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        set_rng_state(state["rng"])
        self.step, self.train_time, self.images_seen = state["step"], state["train_time"], state["images_seen"]
        self.extra = state.get("extra", {})
        log.info("resumed from %s at step %d", checkpoint_dir(self.run_dir) / LAST, self.step)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum  # checkpoint and stop at the end of the current step

    # ---- the loop ------------------------------------------------------------------------
    def fit(self, model: GenerativeModel, data: ImageData, optimizer: OptimizerFactory, config: dict | None = None,
            eval_fn: EvalFn | None = None) -> GenerativeModel:
        """Train `model` on `data` until max_steps or max_time (whichever comes first; null = no such
        limit); returns the EMA model."""
        seed_everything(self.seed)
        self.model, self.config, self.extra = model.to(self.device), config or {}, {}
        self.image_shape = data.image_shape
        lr = getattr(optimizer, "keywords", {}).get("lr")
        if lr is not None and not lr > 0:
            raise ValueError(f"optim.lr={lr} must be a positive learning rate, e.g. optim.lr=2e-4")
        try:
            self.optimizers = model.optimizers(optimizer)
        except ValueError as e:  # torch.optim's "Invalid learning rate: -0.1"
            raise ValueError(f"optim: {e}; set optim.lr (and the other optim.* values) to valid numbers") from None
        warmup = max(self.lr_warmup_steps, 1)
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / warmup))
                           for k, o in self.optimizers.items()}
        self.ema = EMA(model, self.ema_decay, self.ema_warmup)
        self.step, self.train_time, self.images_seen = 0, 0.0, 0
        if (checkpoint_dir(self.run_dir) / LAST).is_file():
            self._resume()
        if self.compile:
            for child in model.children():
                child.compile()
        writer = SummaryWriter(str(self.run_dir / "tb"))
        grid_noise = torch.Generator().manual_seed(self.seed + 12345)  # re-seeded per grid: fixed noise
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        counts: dict[str, int] = defaultdict(int)  # terms that run every n-th step are averaged over their own runs
        window = {"n": 0, "time": 0.0, "data": 0.0}
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGUSR1)}
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_steps, initial=self.step, desc="train", dynamic_ncols=True)
        log.info("training %s on %s (%s), %d parameters, run dir %s", type(model).__name__, data.name,
                 self.device, sum(p.numel() for p in model.parameters()), self.run_dir)
        try:
            while not self._done():
                t0 = time.perf_counter()
                # fetch batch
                idx = data.batch_indices(self.step, self.batch_size, self.seed)
                x = data.batch(idx, self.device)
                t1 = time.perf_counter()
                # optimise: one backward and step per loss term, in the order the family yields them
                model.train()
                stepped: set[str] = set()
                with self._autocast():
                    for term in model.training_losses(x):
                        opt = self.optimizers[term.optimizer]
                        opt.zero_grad(set_to_none=True)
                        term.loss.backward()
                        params = [p for g in opt.param_groups for p in g["params"]]
                        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip or math.inf)
                        sums[f"{term.optimizer}_grad_norm"] += grad_norm
                        opt.step()
                        stepped.add(term.optimizer)
                        sums[term.name] += term.loss.detach().float()
                        counts[term.name] += 1
                        counts[f"{term.optimizer}_grad_norm"] += 1
                        for k, v in term.metrics.items():
                            sums[k] += v.float()
                            counts[k] += 1
                for k in stepped:  # a term that did not run this step (n_critic) leaves its warm-up where it is
                    self.schedulers[k].step()
                # EMA
                self.ema.update(model, self.step)
                self.step += 1
                self.images_seen += len(idx)
                t2 = time.perf_counter()
                self.train_time += t2 - t0
                window["n"] += 1
                window["time"] += t2 - t0
                window["data"] += t1 - t0
                # log
                if self.step % max(self.log_every, 1) == 0 or self._done():
                    self._log(writer, {k: v / max(counts[k], 1) for k, v in sums.items()}, window, bar)
                    sums.clear()
                    counts.clear()
                    window = {"n": 0, "time": 0.0, "data": 0.0}
                elif bar is not None:
                    bar.update(1)
                # sample
                if self.num_grid_samples and self.sample_every and (self.step % self.sample_every == 0 or self._done()):
                    with preserved_rng():
                        self._write_grid(writer, grid_noise)
                # evaluate
                if eval_fn and self.eval_every and (self.step % self.eval_every == 0 or self._done()):
                    with preserved_rng():
                        results = eval_fn(self.ema.module, self.step)
                    for k, v in results.items():
                        writer.add_scalar(f"eval/{k}", v, self.step)
                    self._keep_best(results)
                # checkpoint
                if self._done() or (self.checkpoint_every and self.step % self.checkpoint_every == 0):
                    save_checkpoint(self._state(), self.run_dir, self.keep_checkpoints)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if bar is not None:
                bar.close()
            writer.close()
        if self._stop_signal is not None:
            log.warning("stopped by signal %d at step %d; re-run the same command to resume", self._stop_signal, self.step)
        log.info("done: %d steps, %.0f s of training, %d images seen", self.step, self.train_time, self.images_seen)
        return self.ema.module

    def _keep_best(self, results: dict[str, float]) -> None:
        """checkpoints/best.pt: the state at the lowest eval/fid so far; self.extra carries the score across resumes."""
        score = results.get(BEST_METRIC)
        if score is None or not math.isfinite(score) or score >= self.extra.get(f"best_{BEST_METRIC}", math.inf):
            return
        self.extra.update({f"best_{BEST_METRIC}": float(score), "best_step": self.step})
        atomic_save({"format_version": FORMAT_VERSION, **self._state()}, checkpoint_dir(self.run_dir) / BEST)

    @property
    def interrupted(self) -> bool:
        """True when a signal (SIGTERM, SIGUSR1) stopped training before its budget."""
        return self._stop_signal is not None

    def _done(self) -> bool:
        return ((self.max_steps is not None and self.step >= self.max_steps) or self._stop_signal is not None
                or (self.max_time is not None and self.train_time >= self.max_time))

    def _log(self, writer: SummaryWriter, means: dict[str, torch.Tensor], window: dict[str, float], bar: Any) -> None:
        n = max(window["n"], 1)
        scalars = {f"train/{k}": float(v) for k, v in means.items()}
        scalars["perf/img_per_s"] = window["n"] * self.batch_size / max(window["time"], 1e-9)
        scalars["perf/data_time_frac"] = window["data"] / max(window["time"], 1e-9)
        scalars["train/lr"] = next(iter(self.optimizers.values())).param_groups[0]["lr"]
        for k, v in scalars.items():
            writer.add_scalar(k, v, self.step)
        if bar is not None:
            bar.update(self.step - bar.n)
            bar.set_postfix({k.split("/")[1]: f"{v:.4g}" for k, v in scalars.items() if "loss" in k})
        else:
            eta = math.inf if self.max_steps is None else (self.max_steps - self.step) * window["time"] / n
            if self.max_time is not None:
                eta = min(eta, self.max_time - self.train_time)
            log.info("step %d/%s %s %.0f img/s eta %s", self.step, self.max_steps or "-",
                     " ".join(f"{k.split('/')[1]}={v:.4g}" for k, v in scalars.items() if "loss" in k),
                     scalars["perf/img_per_s"], time.strftime("%H:%M:%S", time.gmtime(max(eta, 0))))

    def _write_grid(self, writer: SummaryWriter, generator: torch.Generator) -> None:
        generator.manual_seed(self.seed + 12345)
        images = self.ema.module.sample(self.num_grid_samples, generator=generator)
        grid = make_grid((images.float().cpu() + 1) / 2, nrow=int(math.ceil(math.sqrt(len(images)))), padding=2)
        writer.add_image("samples/ema", grid, self.step)
        path = self.run_dir / "samples" / f"grid_step_{self.step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
