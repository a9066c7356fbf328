"""The one training loop every family runs through.

A family implements the contract of `genbench.models.base`; the Trainer does everything else:
batches, backward and optimizer steps, learning-rate warm-up and decay, gradient clipping, a finiteness check
before every optimizer step, EMA, logging to TensorBoard, sample grids from fixed noise, checkpoints,
resume, and the budgets (steps, training seconds, training FLOPs). It counts steps, not epochs.

Signals: SIGTERM, SIGUSR1, SIGUSR2 (what Slurm sends before pre-emption, through submitit) and SIGINT
(Ctrl-C) end the current step, write a checkpoint and stop; `stop_signal` says which one came, and
the caller exits with 128 + its number. A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import save_image

from genbench.checkpoint import (FORMAT_VERSION, CheckpointError, atomic_save, checkpoint_dir, find_resumable,
                                 remove_stale_temporaries, save_checkpoint)
from genbench import distributed
from genbench.compute import train_flops_per_image
from genbench.data import ImageData, image_grid
from genbench.ema import EMA, sigma_rel_to_gamma
from genbench.models.base import GenerativeModel, OptimizerFactory, cosine_decay
from genbench.runtime import (machine_record, parse_duration, parse_flops, resolve_device, rng_state, seed_everything,
                              set_rng_state)
from genbench.validate import check_choice, check_positive

log = logging.getLogger(__name__)
Precision = Literal["fp32", "bf16"]
EvalFn = Callable[[GenerativeModel, int], dict[str, float]]
BEST = "best.pt"  # checkpoints/best.pt keeps the state with the best during-training score
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
# What a resumed run may change; every other key of the config must equal the checkpoint's.
RESUME_MAY_CHANGE = ("trainer.max_steps", "trainer.max_time", "trainer.max_flops", "trainer.log_every",
                     "trainer.sample_every", "trainer.num_grid_samples", "trainer.checkpoint_every",
                     "trainer.keep_checkpoints", "trainer.eval_every", "trainer.eval_growth", "trainer.progress", "trainer.device",
                     "trainer.compile", "trainer.finite_check_every", "eval", "threads", "data.root", "data.download")


class NonFiniteError(ValueError):
    """A loss or gradient that is NaN or infinite: the run stops before the optimizer step."""


class ResumeMismatch(CheckpointError):
    """The command's config differs from the checkpoint's in a key that changes what is trained."""


@contextmanager
def preserved_rng():
    """Run side work (sample grids, evaluation) without moving the training RNG streams, so a
    resumed run draws the same noise as an uninterrupted one."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def eval_due(step: int, every: int, growth: float = 1.0) -> bool:
    """Is `step` on the evaluation grid? growth 1: every `every` steps; growth g > 1: the geometric grid
    round(every * g^k), k = 0, 1, ..., whose points lie evenly on a log compute axis (every=200, g=1.5:
    200, 300, 450, 675, 1012, ...), so a FID-against-compute curve sees short budgets as well as long ones."""
    if growth == 1:
        return step % every == 0
    if step < every:
        return False
    k = round(math.log(step / every) / math.log(growth))
    return any(round(every * growth**j) == step for j in (k - 1, k, k + 1) if j >= 0)


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"lr": 1}} -> {"model.lr": 1}."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(saved: dict, new: dict, may_change: tuple[str, ...]) -> list[str]:
    """'key (old -> new)' for every key that differs between two configs, except those under `may_change`."""
    a, b = flatten(saved), flatten(new)
    free = lambda key: any(key == p or key.startswith(p + ".") for p in may_change)  # noqa: E731
    return [f"{k} ({a.get(k, '<unset>')!s} -> {b.get(k, '<unset>')!s})"
            for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k) and not free(k)]


class _NullWriter:
    """What ranks other than 0 log to: nothing."""

    def add_scalar(self, *args, **kwargs) -> None: ...

    def add_image(self, *args, **kwargs) -> None: ...

    def close(self) -> None: ...


class Trainer:
    def __init__(
        self,
        run_dir: str | Path,
        seed: int = 0,
        max_steps: int | None = 1000,
        max_time: str | float | None = None,
        max_flops: str | float | None = None,
        batch_size: int = 128,
        device: str = "auto",
        precision: Precision = "fp32",
        compile: bool = False,
        ema_decay: float = 0.999,
        ema_warmup: bool = True,
        ema_sigma_rel: float | None = None,
        ema_profiles: tuple[float, ...] | list[float] = (),
        grad_clip: float | None = 1.0,
        lr_warmup_steps: int = 0,
        lr_decay_images: float | None = None,
        lr_final_ratio: float = 1.0,
        log_every: int = 50,
        sample_every: int = 1000,
        num_grid_samples: int = 64,
        checkpoint_every: int = 1000,
        keep_checkpoints: int = 3,
        eval_every: int = 0,
        eval_growth: float = 1.0,
        best_metric: str | None = "fid",
        finite_check_every: int = 1,
        resume_may_change: tuple[str, ...] | list[str] = RESUME_MAY_CHANGE,
        progress: bool | None = None,
    ):
        self.max_time, self.max_flops = parse_duration(max_time), parse_flops(max_flops)
        if max_steps is None and self.max_time is None and self.max_flops is None:
            raise ValueError("trainer.max_steps, trainer.max_time and trainer.max_flops are all null, so training would "
                             "never end: set one, e.g. trainer.max_time=10m")
        if max_steps is not None:
            check_positive("trainer.max_steps", max_steps)
        check_positive("trainer.batch_size", batch_size)
        check_choice("trainer.precision", precision, Precision)
        for name, value in [("log_every", log_every), ("sample_every", sample_every), ("checkpoint_every", checkpoint_every),
                            ("eval_every", eval_every), ("lr_warmup_steps", lr_warmup_steps), ("num_grid_samples", num_grid_samples),
                            ("finite_check_every", finite_check_every)]:
            check_positive(f"trainer.{name}", value, allow_zero=True)
        check_positive("trainer.keep_checkpoints", keep_checkpoints)
        if not eval_growth >= 1:
            raise ValueError(f"trainer.eval_growth={eval_growth} must be 1 (every trainer.eval_every steps) or more "
                             "(a geometric grid, e.g. 1.5)")
        if lr_decay_images is not None:
            check_positive("trainer.lr_decay_images", lr_decay_images)
        check_positive("trainer.lr_final_ratio", lr_final_ratio, allow_zero=True)
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"trainer.grad_clip={grad_clip} must be a positive gradient-norm bound, or null for no clipping")
        if not 0 <= ema_decay < 1:
            raise ValueError(f"trainer.ema_decay={ema_decay} must be in [0, 1)")
        for sigma_rel in [ema_sigma_rel, *ema_profiles]:
            if sigma_rel is not None:
                sigma_rel_to_gamma(sigma_rel)  # its range, checked before any work
        self.run_dir, self.seed = Path(run_dir), seed
        self.max_steps = max_steps
        self.dist = distributed.from_env()
        self.batch_size, self.device = batch_size, distributed.device_for(self.dist, resolve_device(device))
        if self.dist.enabled:
            distributed.shard(torch.arange(batch_size), self.dist)  # the global batch must divide among the ranks
        self.precision, self.compile = precision, compile
        self.ema_decay, self.ema_warmup, self.ema_sigma_rel, self.grad_clip = ema_decay, ema_warmup, ema_sigma_rel, grad_clip
        self.ema_profiles = tuple(float(s) for s in ema_profiles)
        self.lr_warmup_steps, self.lr_decay_images, self.lr_final_ratio = lr_warmup_steps, lr_decay_images, lr_final_ratio
        self.log_every, self.sample_every, self.num_grid_samples = log_every, sample_every, num_grid_samples
        self.checkpoint_every, self.keep_checkpoints, self.eval_every = checkpoint_every, keep_checkpoints, eval_every
        self.eval_growth = float(eval_growth)
        self.best_metric, self.finite_check_every = best_metric, finite_check_every
        self.resume_may_change = tuple(resume_may_change)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.stop_signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}

    # ---- set-up and resume -------------------------------------------------------------
    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _state(self, gather: bool = True) -> dict[str, Any]:
        """The checkpoint. With `gather` it is a collective under torchrun (every rank's RNG state is
        gathered), so all ranks call it; without, it holds this rank's RNG state alone."""
        rngs = distributed.all_gather(rng_state(), self.dist) if gather else [rng_state()]
        return {
            "step": self.step, "train_time": self.train_time, "images_seen": self.images_seen,
            "compute": {**self.compute, "train_flops": self.train_flops},
            "model": distributed.plain_state_dict(self.model, self._wrapped), "ema": self.ema.module.state_dict(),
            "ema_profiles": {k: e.module.state_dict() for k, e in self.profiles.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "rng": rngs[0], "rng_ranks": rngs if len(rngs) > 1 else None,
            "world_size": self.dist.world_size, "machine": self.machine,
            "config": self.config, "extra": self.extra, "image_shape": list(self.image_shape),
        }

    def _resume(self) -> bool:
        """Load the newest usable checkpoint of the run folder, if any; True when one was loaded."""
        found = find_resumable(self.run_dir, map_location=self.device)
        if found is None:
            return False
        path, state, problems = found
        for problem in problems:
            log.warning("skipped %s", problem)
        if problems:
            log.warning("resuming from the newest good checkpoint instead: %s", path)
        if "rng" not in state:
            raise CheckpointError(f"checkpoint {path} holds no RNG state, so a resume would silently diverge from an "
                                  "uninterrupted run; start a new run folder (hydra.run.dir=...)")
        changes = config_changes(state["config"], self.config, self.resume_may_change) if self.config else []
        if changes:
            shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
            raise ResumeMismatch(f"resume refused: this command changes {shown} from the run in {self.run_dir}; "
                                 "use the run's values, or a new folder (hydra.run.dir=...) for a new run")
        self.model.load_state_dict(state["model"])
        self.ema.module.load_state_dict(state["ema"])
        for k, e in self.profiles.items():
            if k not in (state.get("ema_profiles") or {}):
                raise ResumeMismatch(f"resume refused: {path} kept no power-function EMA of sigma_rel {k}; drop it from "
                                     "trainer.ema_profiles, or start a new run folder (hydra.run.dir=...)")
            e.module.load_state_dict(state["ema_profiles"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self._restore_rng(state)
        self.step, self.train_time, self.images_seen = state["step"], state["train_time"], state["images_seen"]
        self.compute.update({k: v for k, v in state.get("compute", {}).items() if k in self.compute})
        self.extra = state.get("extra", {})
        log.info("resumed from %s at step %d", path, self.step)
        return True

    def _restore_rng(self, state: dict[str, Any]) -> None:
        """Each rank's own streams when the checkpoint has them for this many processes."""
        ranks = state.get("rng_ranks") or [state["rng"]]
        if len(ranks) == self.dist.world_size:
            set_rng_state(ranks[self.dist.rank])
            return
        log.warning("resuming a %d-process checkpoint on %d processes: the same data order, new noise streams "
                    "(not bit-identical to the original run)", len(ranks), self.dist.world_size)
        if self.dist.is_main:
            set_rng_state(ranks[0])
        else:
            seed_everything(self.seed + self.dist.rank * distributed.RANK_SEED_OFFSET + state["step"])

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        self.stop_signal = signum  # checkpoint and stop at the end of the current step

    def _pass_on_signal(self) -> None:
        """Hand the signal to the handler that was there before (submitit's requeue on SIGUSR2), after our
        checkpoint is on disk."""
        previous = self._previous_handlers.get(self.stop_signal)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(self.stop_signal, None)

    # ---- the loop ------------------------------------------------------------------------
    def fit(self, model: GenerativeModel, data: ImageData, optimizer: OptimizerFactory, config: dict | None = None,
            eval_fn: EvalFn | None = None) -> GenerativeModel:
        """Train `model` on `data` until the first budget runs out (max_steps, max_time, max_flops; null =
        no such limit) or a stop signal; returns the EMA model."""
        seed_everything(self.seed + self.dist.rank * distributed.RANK_SEED_OFFSET)  # rank 0: a single process's streams
        self.model, self.config, self.extra = model.to(self.device), config or {}, {}
        self._wrapped: list[str] = []
        self.image_shape = data.image_shape
        lr = getattr(optimizer, "keywords", {}).get("lr")
        if lr is not None and not lr > 0:
            raise ValueError(f"optim.lr={lr} must be a positive learning rate, e.g. optim.lr=2e-4")
        try:
            self.optimizers = model.optimizers(optimizer)
        except ValueError as e:  # torch.optim's "Invalid learning rate: -0.1"
            raise ValueError(f"optim: {e}; set optim.lr (and the other optim.* values) to valid numbers") from None
        self.step, self.train_time, self.images_seen = 0, 0.0, 0
        warmup = max(self.lr_warmup_steps, 1)
        # optim.lr times a linear warm-up over the term's own steps and a cosine decay over the run's images
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / warmup) * cosine_decay(
                               self.images_seen, self.lr_final_ratio, self.lr_decay_images)) for k, o in self.optimizers.items()}
        self.ema = EMA(model, self.ema_decay, self.ema_warmup, self.ema_sigma_rel, tuple(model.ema_skip))
        # power-function EMAs kept beside it for post-hoc selection (eval.ema=<sigma_rel>); named as weights_name does
        self.profiles = {f"{s:g}": EMA(model, sigma_rel=s, skip=tuple(model.ema_skip)) for s in self.ema_profiles}
        self.compute: dict[str, Any] = {"train_flops_per_image": None, "compile_s": 0.0}
        for stale in remove_stale_temporaries(checkpoint_dir(self.run_dir)):
            log.info("removed %s, left by a save that was killed", stale)
        resumed = self._resume()
        # where the training ran: MFU is measured against this machine's matmul peak (cached after the first probe)
        self.machine = machine_record(self.device, dtypes=tuple(dict.fromkeys(("fp32", self.precision))))
        if self.compute["train_flops_per_image"] is None:  # measured once, on a copy, RNG put back
            first = data.batch(distributed.shard(data.batch_indices(self.step, self.batch_size, self.seed), self.dist), self.device)
            try:
                with self._autocast():
                    self.compute["train_flops_per_image"] = train_flops_per_image(model, first)
            except Exception as e:  # torch's FLOP counter cannot trace every graph (some autograd.grad patterns)
                if self.max_flops is not None:
                    raise ValueError(f"trainer.max_flops: the training FLOPs of {type(model).__name__} could not be "
                                     f"counted ({type(e).__name__}: {e}); use trainer.max_time or trainer.max_steps") from None
                log.warning("training FLOPs not counted (%s: %s): no FLOP or MFU figures for this run", type(e).__name__, e)
        if self.compile:
            for child in model.children():
                child.compile()
        self._wrapped = distributed.wrap(model, self.dist)  # DDP around each trainable network (torchrun)
        # purge_step: TensorBoard drops what a killed run logged after the checkpoint it resumes from
        writer = (SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step + 1 if resumed else None)
                  if self.dist.is_main else _NullWriter())
        grid_noise = torch.Generator().manual_seed(self.seed + 12345)  # re-seeded per grid: fixed noise
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        counts: dict[str, int] = defaultdict(int)  # terms that run every n-th step are averaged over their own runs
        window = {"n": 0, "time": 0.0, "data": 0.0}
        self._previous_handlers = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        bar = self._progress_bar() if self.dist.is_main else None
        saved_step = self.step if resumed else -1
        log.info("training %s on %s (%s), %d parameters, %.3g training GFLOPs per image, run dir %s", type(model).__name__,
                 data.name, self.device, sum(p.numel() for p in model.parameters()),
                 (self.compute["train_flops_per_image"] or math.nan) / 1e9, self.run_dir)
        try:
            last = self._should_stop()
            while not last:
                t0 = time.perf_counter()
                # fetch batch
                idx = data.batch_indices(self.step, self.batch_size, self.seed)  # the global batch
                x = data.batch(distributed.shard(idx, self.dist), self.device)  # this rank's part of it
                t1 = time.perf_counter()
                # optimise: one backward and step per loss term, in the order the family yields them
                model.train()
                stepped = self._optimise(model, x, sums, counts)
                # EMA
                for ema in (self.ema, *self.profiles.values()):
                    ema.update(model, self.step)
                self.step += 1
                self.images_seen += len(idx)
                for k in stepped:  # a term that did not run this step (n_critic) leaves its warm-up where it is
                    self.schedulers[k].step()
                t2 = time.perf_counter()
                if self.compile and self.step == 1 and not resumed:  # the first compiled step is mostly compiling
                    self.compute["compile_s"] = t2 - t0
                    writer.add_scalar("perf/compile_s", t2 - t0, self.step)
                else:
                    self.train_time += t2 - t0
                    window["n"] += 1
                    window["time"] += t2 - t0
                    window["data"] += t1 - t0
                last = self._should_stop()  # every rank stops at the same step
                # log
                if self.step % max(self.log_every, 1) == 0 or last:
                    self._log(writer, {k: v / max(counts[k], 1) for k, v in sums.items()}, window)
                    sums.clear()
                    counts.clear()
                    window = {"n": 0, "time": 0.0, "data": 0.0}
                if bar is not None:
                    self._update_bar(bar)
                # sample
                due = lambda every: every and (self.step % every == 0 or last)  # noqa: E731
                if self.dist.is_main and self.num_grid_samples and due(self.sample_every):
                    with preserved_rng():
                        self._write_grid(writer, grid_noise)
                # evaluate (a cheaper protocol than the final one: its own tag group, eval_during/*)
                on_grid = self.eval_every and (last or eval_due(self.step, self.eval_every, self.eval_growth))
                if self.dist.is_main and eval_fn and on_grid:  # on rank 0; the others wait in DDP
                    with preserved_rng():
                        results = eval_fn(self.ema.module, self.step)
                    for k, v in results.items():
                        writer.add_scalar(f"eval_during/{k}", v, self.step)
                    self._keep_best(results)
                # checkpoint
                if last or due(self.checkpoint_every):
                    self._save()
                    saved_step = self.step
            if self.stop_signal is not None and saved_step != self.step:  # stopped before the first step
                self._save()
        finally:
            for s, handler in self._previous_handlers.items():
                signal.signal(s, handler)
            if bar is not None:
                bar.close()
            writer.close()
            distributed.unwrap(model, self._wrapped)
            self._wrapped = []
        distributed.barrier(self.dist)
        if self.stop_signal is not None:
            log.warning("stopped by %s at step %d; checkpoint saved in %s", signal.Signals(self.stop_signal).name,
                        self.step, checkpoint_dir(self.run_dir))
            self._pass_on_signal()
        log.info("done: %d steps, %.0f s of training, %d images seen, %.3g training PFLOPs", self.step, self.train_time,
                 self.images_seen, self.train_flops / 1e15)
        return self.ema.module

    def _optimise(self, model: GenerativeModel, x: torch.Tensor, sums: dict, counts: dict) -> set[str]:
        """Backward and step for each loss term; autocast covers the forward passes only (PyTorch's advice).
        Before each optimizer step the loss and gradient norm are checked to be finite."""
        stepped: set[str] = set()
        terms = model.training_losses(x)
        while True:
            with self._autocast():
                term = next(terms, None)  # the family's forward pass for this term
            if term is None:
                return stepped
            opt = self.optimizers[term.optimizer]
            opt.zero_grad(set_to_none=True)
            term.loss.backward()
            params = [p for g in opt.param_groups for p in g["params"]]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip or math.inf)
            if self.finite_check_every and self.step % self.finite_check_every == 0:
                self._check_finite(term.name, term.loss, grad_norm)
            opt.step()
            stepped.add(term.optimizer)
            sums[term.name] += term.loss.detach().float()
            sums[f"{term.optimizer}_grad_norm"] += grad_norm
            counts[term.name] += 1
            counts[f"{term.optimizer}_grad_norm"] += 1
            for k, v in term.metrics.items():
                sums[k] += v.float()
                counts[k] += 1

    def _check_finite(self, name: str, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """One host sync per check (as torch.amp.GradScaler makes per step); trainer.finite_check_every=N
        thins it out on a GPU, and _save still refuses non-finite weights."""
        if not bool(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)):
            raise NonFiniteError(f"train/{name} is {float(loss.detach()):.4g} with gradient norm {float(grad_norm):.4g} at step "
                                 f"{self.step + 1}: stopped before the optimizer step, the last checkpoint is kept; "
                                 "lower optim.lr, or clip with trainer.grad_clip")

    def _save(self) -> None:
        """Write a checkpoint (rank 0; every rank takes part in gathering the RNG states)."""
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteError(f"parameter {bad[0]} is not finite at step {self.step}: no checkpoint written, the last "
                                 "one is kept; lower optim.lr, or clip with trainer.grad_clip")
        state = self._state()
        if self.dist.is_main:
            save_checkpoint(state, self.run_dir, self.keep_checkpoints)

    def _keep_best(self, results: dict[str, float]) -> None:
        """checkpoints/best.pt: the state at the lowest during-training `best_metric` so far; self.extra carries
        the score across resumes."""
        score = results.get(self.best_metric) if self.best_metric else None
        key = f"best_{self.best_metric}"
        if score is None or not math.isfinite(score) or score >= self.extra.get(key, math.inf):
            return
        self.extra.update({key: float(score), "best_step": self.step})
        atomic_save({"format_version": FORMAT_VERSION, **self._state(gather=False)}, checkpoint_dir(self.run_dir) / BEST)

    @property
    def interrupted(self) -> bool:
        """True when a signal (SIGTERM, SIGUSR1, SIGUSR2, SIGINT) stopped training before its budget."""
        return self.stop_signal is not None

    @property
    def train_flops(self) -> float:
        return self.images_seen * (self.compute["train_flops_per_image"] or 0.0)

    def _budget_spent(self) -> bool:
        return ((self.max_steps is not None and self.step >= self.max_steps)
                or (self.max_time is not None and self.train_time >= self.max_time)
                or (self.max_flops is not None and self.train_flops >= self.max_flops))

    def _should_stop(self) -> bool:
        """A budget spent or a stop signal, agreed by every process (one tiny all-reduce per step under torchrun)."""
        spent, signum = distributed.agree_stop((self._budget_spent(), self.stop_signal or 0), self.dist, self.device)
        if signum and self.stop_signal is None:
            self.stop_signal = signum
        return spent or bool(signum)

    def _budget(self) -> tuple[float, float, str]:
        """(done, total, unit) of the budget the progress bar follows: steps, else FLOPs, else seconds."""
        if self.max_steps is not None:
            return self.step, self.max_steps, "step"
        if self.max_flops is not None:
            return self.train_flops / 1e12, self.max_flops / 1e12, "TFLOP"
        return self.train_time, self.max_time, "s"

    def _eta(self, window: dict[str, float]) -> float:
        """Seconds of training left: the soonest of the budgets at the recent step time."""
        per_step = window["time"] / max(window["n"], 1)
        eta = math.inf
        if self.max_steps is not None:
            eta = (self.max_steps - self.step) * per_step
        if self.max_time is not None:
            eta = min(eta, self.max_time - self.train_time)
        if self.max_flops is not None and self.compute["train_flops_per_image"]:
            steps = (self.max_flops - self.train_flops) / (self.compute["train_flops_per_image"] * self.batch_size)
            eta = min(eta, steps * per_step)
        return max(eta, 0.0)

    def _progress_bar(self):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        done, total, unit = self._budget()
        fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} " + unit + " [{elapsed}<{remaining}{postfix}]"
        return tqdm(total=total, initial=done, desc="train", unit=unit, dynamic_ncols=True, bar_format=fmt)

    def _update_bar(self, bar) -> None:
        bar.update(self._budget()[0] - bar.n)
        if self.max_steps is None:
            bar.set_postfix_str(f"step {self.step}", refresh=False)

    def _log(self, writer: SummaryWriter, means: dict[str, torch.Tensor], window: dict[str, float]) -> None:
        scalars = {f"train/{k}": float(v) for k, v in means.items()}
        scalars["perf/img_per_s"] = window["n"] * self.batch_size / max(window["time"], 1e-9)
        scalars["perf/data_time_frac"] = window["data"] / max(window["time"], 1e-9)
        scalars["perf/train_time_s"] = self.train_time
        scalars["perf/images_seen"] = self.images_seen
        scalars["perf/train_flops"] = self.train_flops
        for name, opt in self.optimizers.items():
            scalars[f"train/lr_{name}"] = opt.param_groups[0]["lr"]
        for k, v in scalars.items():
            writer.add_scalar(k, v, self.step)
        losses = " ".join(f"{k.split('/')[1]}={v:.4g}" for k, v in scalars.items() if "loss" in k)
        eta = self._eta(window)
        if not self.dist.is_main:
            return
        log.info("step %d/%s %s %.0f img/s eta %s", self.step, self.max_steps or "-", losses, scalars["perf/img_per_s"],
                 "-" if math.isinf(eta) else f"{int(eta) // 3600}:{int(eta) % 3600 // 60:02d}:{int(eta) % 60:02d}")

    def _write_grid(self, writer: SummaryWriter, generator: torch.Generator) -> None:
        generator.manual_seed(self.seed + 12345)
        images = self.ema.module.sample(self.num_grid_samples, generator=generator)
        grid = image_grid(images)
        writer.add_image("samples/ema", grid, self.step)
        path = self.run_dir / "samples" / f"grid_step_{self.step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
