"""The trilemma sweep in one resumable command: GAN, VAE and diffusion x seeds x budgets, then `genbench compare`.

    make trilemma                                    # = .venv/bin/python scripts/trilemma.py: 18 runs, then compare
    make trilemma ARGS="--dry-run"                   # the plan and its ETA; nothing is trained
    python scripts/trilemma.py --budgets flops --seeds 0 --families gan,vae
    python scripts/trilemma.py --jobs 2              # two jobs side by side, one thread each on 2 cores
    python scripts/trilemma.py --compare-only        # compare what has finished so far
    python scripts/trilemma.py [flags] trainer.eval_every=100   # any other Hydra override goes to every run
    python scripts/trilemma.py --families gan,vae --seeds 0 --time 20s experiment=smoke   # a try of the plumbing

Jobs are families x seeds x budgets. Each one is `genbench train experiment=trilemma model=F seed=S <budget>
[overrides]` (experiment=trilemma: the family's defaults, its eval during training for the FID curves; an
experiment= among the overrides replaces it), in a fixed folder <root>/<budget>/<family>-seed<S>, the budget
named with its value:
- flops-<V>: trainer.max_time=null trainer.max_flops=V (--flops, default 1.85e14): equal training FLOPs, which
  means the same on every machine;
- time-<T>: trainer.max_time=T (--time, default 10m): equal training time on this machine, which holds only
  when the jobs run one at a time on a machine left alone;
- time-<T>-pace<id>, with --pace FILE: the same time as each family's training FLOPs at the pace FILE records
  (trainer.max_flops = T x the family's training FLOP/s). `--measure-pace FILE` measures that pace: each family
  trains --pace-seconds (60) at --threads on this machine, with nothing else running, and FILE keeps the rates,
  the machine record and the command. The jobs then run like FLOP budgets, side by side and under any load, on
  any machine, and still answer "which family is best in T on the machine FILE measured". A pace measured
  with other settings (model, data, optimizer, batch size) than the jobs have is refused.
Re-running the command finds every folder: a job whose metrics.json has a headline record is done and skipped;
a job with checkpoints resumes from its newest (`genbench train` resumes by itself in the same hydra.run.dir);
any other starts. Another --flops or --time value is another folder, so a run is never extended silently.

Before it trains, the command prints the plan: each job's state (done / resume from step S / new) and an ETA
for this machine, with its basis. The ETA comes from a probe per family: `genbench train` at the jobs' settings
for --probe-steps steps (logged every step; the first fifth is warm-up and not timed), then one evaluation of
--probe-samples samples. The probe gives seconds per training step, FLOPs per step, sampling and scoring
seconds per image, an evaluation's fixed cost and the process start-up. Probes are cached in
<root>/probes.json, keyed by machine, threads and config, so a resumed sweep does not redo them.
`--dry-run` prints the plan and exits (it probes what is not cached; --no-probe skips that).

After the training jobs, FID against NFE: the finished runs of --nfe-families (diffusion) and --nfe-seeds (0)
are evaluated again with each --nfe-samplers sampler (ddpm, ddim, dpm_solver: conf/sampler/) at each of
--nfe-steps (10, 20, 50, 100), --nfe-samples (1,000) samples per cell, no likelihood or panels: `genbench eval
run_dir=<run> sampler=<s> sampler.steps=<k> eval.num_samples=1000 ...`, one record each in the run's
metrics.json beside its headline (a cell already recorded is skipped; never two cells of one run at once).
`genbench compare` draws them as fid_vs_nfe.png. --nfe-samplers none skips the grid.

Ctrl-C or SIGTERM is passed on to the running `genbench train` children (they checkpoint and exit 128+N): no
further job starts, and the command exits 128+N too. Run the same command again to resume. A second Ctrl-C
is passed on as well and stops a child at once, without its checkpoint, as it does for `genbench train`.
At the end (and with --compare-only) `genbench compare` writes <root>/compare_<budget>/ (compare.md,
compare.csv, plots, verdicts) over each budget's finished jobs.

--archive DIR keeps each job's record once it is scored, in DIR/<budget>/<family>-seed<S>: .hydra/, metrics.json
(with its FID-against-NFE records), tb/'s scalars as text, the memorisation panel and samples from compare's fixed noise,
but no weights (genbench.report.archive), small enough for git. A job archived there counts as done even where
its run folder is gone, and compare reads the archive in its place: a sweep longer than one machine's lease goes
on from the runs kept, on another machine. `make trilemma` archives into docs/trilemma/runs, and
`genbench compare docs/trilemma/runs/<budget> -o docs/trilemma/<budget>` remakes the README's comparison from it.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal, get_args

from genbench import CONF_DIR
from genbench.atomic import atomic_write
from genbench.report.pace import pace_settings
from genbench.runtime import parse_duration, parse_flops
from genbench.validate import did_you_mean

BudgetKind = Literal["flops", "time"]
JobState = Literal["done", "archived", "resume", "new", "broken"]
DEFAULTS = {"families": "gan,vae,diffusion", "seeds": "0,1,2", "budgets": "flops,time", "flops": "1.85e14", "time": "10m",
            "nfe-samplers": "ddpm,ddim,dpm_solver", "nfe-steps": "10,20,50,100", "nfe-seeds": "0", "nfe-families": "diffusion"}
# what the flags set: an override of these keys would fight them
RESERVED = {"model": "--families", "seed": "--seeds", "threads": "--threads / --jobs", "hydra.run.dir": "--root",
            "trainer.max_time": "--budgets time --time", "trainer.max_flops": "--budgets flops --flops"}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class UsageError(ValueError):
    """Bad input: one line on stderr, exit status 2, before any work."""


# ---- jobs -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    kind: BudgetKind
    value: float  # FLOPs or seconds
    pace: tuple[tuple[str, float], ...] = ()  # a time budget at a measured pace: (family, training FLOP/s) pairs
    pace_id: str = ""                          # the pace file's short hash

    @property
    def name(self) -> str:
        """flops-1.85e14, time-10m, time-90s, time-10m-pace3f2a1c: the folder of its jobs."""
        if self.kind == "flops":
            return "flops-" + re.sub(r"e\+?0*(\d)", r"e\1", f"{self.value:.4g}")  # 1.85e+14 -> 1.85e14, 2e+09 -> 2e9
        time_ = f"time-{self.value / 60:g}m" if self.value % 60 == 0 else f"time-{self.value:g}s"
        return f"{time_}-pace{self.pace_id}" if self.pace else time_

    def overrides(self, family: str) -> list[str]:
        if self.kind == "time" and self.pace:  # the FLOPs `family` trains in this time at the pace measured
            return ["trainer.max_time=null", f"trainer.max_flops={self.value * dict(self.pace)[family]:.4g}"]
        if self.kind == "flops":
            return ["trainer.max_time=null", f"trainer.max_flops={self.value:g}"]
        return [f"trainer.max_time={self.value:g}", "trainer.max_flops=null"]


@dataclass(frozen=True)
class Job:
    budget: Budget
    family: str  # the model choice, conf/model/<family>.yaml
    seed: int

    @property
    def name(self) -> str:
        return f"{self.budget.name}/{self.family}-seed{self.seed}"

    def run_dir(self, root: Path) -> Path:
        return root / self.budget.name / f"{self.family}-seed{self.seed}"

    def where(self, root: Path, archive: Path | None) -> Path:
        """The folder compare reads: the run itself while it is here and scored, else its archived copy."""
        return self.run_dir(archive) if sweep_state(self, root, archive).kind == "archived" else self.run_dir(root)

    def overrides(self, root: Path, extra: list[str], threads: int) -> list[str]:
        """`genbench train`'s command line; the budget comes last, so nothing in `extra` can move it."""
        return ["experiment=trilemma", f"model={self.family}", f"seed={self.seed}", *extra, *self.budget.overrides(self.family),
                f"threads={threads}", f"hydra.run.dir={self.run_dir(root)}"]


def make_jobs(families: list[str], seeds: list[int], budgets: list[Budget]) -> list[Job]:
    """Budgets x families x seeds, in that order: a budget's runs finish together, so its compare comes early."""
    return [Job(b, f, s) for b in budgets for f in families for s in seeds]


def split_list(flag: str, text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise UsageError(f"{flag}={text!r} has an empty item; write a comma list such as {DEFAULTS.get(flag[2:], 'a,b')}")
    if len(set(items)) != len(items):
        raise UsageError(f"{flag}={text!r} names an item twice")
    return items


def model_choices() -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml"))


def parse_budgets(budgets: str, flops: str, time_: str, pace: dict | None = None) -> list[Budget]:
    """--budgets flops,time with --flops V[,V..] and --time T[,T..] -> the Budgets; one-line errors. With `pace`
    (a --pace file, read_pace) a time budget is each family's FLOPs in that time at the pace measured."""
    values: dict[str, list[Budget]] = {}
    for kind, text, parse in (("flops", flops, parse_flops), ("time", time_, parse_duration)):  # both, used or not
        values[kind] = []
        for item in split_list(f"--{kind}", text):
            try:
                value = parse(item, key=f"--{kind}")
            except ValueError as e:
                raise UsageError(str(e)) from None
            if value is None:  # 0, null: no limit, so the run would never end
                raise UsageError(f"--{kind}={item!r} must be a positive budget, e.g. --{kind} {DEFAULTS[kind]}")
            paced = {"pace": tuple(sorted(pace["rates"].items())), "pace_id": pace["id"]} if pace and kind == "time" else {}
            values[kind].append(Budget(kind, value, **paced))
        if len({b.name for b in values[kind]}) != len(values[kind]):
            raise UsageError(f"--{kind}={text!r} gives one budget twice")
    out = []
    for kind in split_list("--budgets", budgets):
        if kind not in get_args(BudgetKind):
            raise UsageError(f"--budgets: {kind!r} is not one of: {', '.join(get_args(BudgetKind))}"
                             f"{did_you_mean(kind, get_args(BudgetKind))}")
        out += values[kind]
    return out


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    seeds = []
    for item in split_list(flag, text):
        if not item.isdigit():
            raise UsageError(f"{flag}: {item!r} is not a non-negative integer; write e.g. {flag} {DEFAULTS[flag[2:]]}")
        seeds.append(int(item))
    return seeds


def parse_families(text: str, flag: str = "--families") -> list[str]:
    allowed = model_choices()
    families = split_list(flag, text)
    for f in families:
        if f not in allowed:
            raise UsageError(f"{flag}: {f!r} is not a model of conf/model/; one of: {', '.join(allowed)}{did_you_mean(f, allowed)}")
    return families


def parse_samplers(text: str) -> list[str]:
    """--nfe-samplers: conf/sampler/ options (flow/heun, ...), or none."""
    if text.strip() == "none":
        return []
    root = Path(CONF_DIR) / "sampler"
    allowed = sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
    samplers = split_list("--nfe-samplers", text)
    for s in samplers:
        if s not in allowed:
            raise UsageError(f"--nfe-samplers: {s!r} is not a sampler of conf/sampler/; one of: {', '.join(allowed)}, or none"
                             f"{did_you_mean(s, allowed)}")
    return samplers


def check_extra(extra: list[str]) -> None:
    """Overrides that would fight a flag, or the experiment, are refused (the flag is named)."""
    for o in extra:
        key = o.split("=", 1)[0].lstrip("+~")
        if key in RESERVED:
            raise UsageError(f"{o}: {key} is set by the script for each job; use {RESERVED[key]}")
        if key.startswith("hydra.sweeper") or o in ("-m", "--multirun"):
            raise UsageError(f"{o}: the script runs each job itself; pick them with --families, --seeds and --budgets")


# ---- state of a job's folder -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    step: int = 0
    train_time: float = 0.0   # seconds of training (what trainer.max_time caps)
    train_flops: float = 0.0  # training FLOPs (what trainer.max_flops caps)


@dataclass(frozen=True)
class State:
    kind: JobState
    progress: Progress = Progress()
    note: str = ""  # done: its FID; broken: why


def archived_state(archived: Path) -> State | None:
    """State("archived") when `archived` holds a scored run's archive (genbench.report.archive), else None."""
    from genbench.records import headline_record

    try:
        record = headline_record(archived)
    except ValueError:  # a damaged archive counts as none: the job runs again and replaces it
        return None
    return None if record is None else scored("archived", record)


def scored(kind: JobState, record: dict) -> State:
    """The state of a job whose headline record is `record`: its step and FID."""
    fid = (record.get("metrics") or {}).get("fid")
    return State(kind, Progress(step=record.get("checkpoint_step", record.get("step")) or 0),
                 f"FID {fid:.4g}" if fid is not None else "")


def sweep_state(job: Job, root: Path, archive: Path | None) -> State:
    """The job's state here; a job that is not done here but whose archive holds a scored run is archived."""
    state = job_state(job.run_dir(root))
    if state.kind == "done" or archive is None:
        return state
    return archived_state(job.run_dir(archive)) or state


def job_state(run_dir: Path) -> State:
    """done: metrics.json has a headline record; resume: a checkpoint loads; new: neither; broken: unreadable."""
    from genbench.checkpoint import CheckpointError, find_resumable
    from genbench.records import headline_record

    try:
        record = headline_record(run_dir)
    except ValueError as e:
        return State("broken", note=str(e))
    if record is not None:
        return scored("done", record)
    try:
        found = find_resumable(run_dir)
    except CheckpointError as e:
        return State("broken", note=str(e))
    if found is None:
        return State("new")
    _, state, _ = found
    compute = state.get("compute") or {}
    flops = compute.get("train_flops")
    if flops is None:
        flops = state.get("images_seen", 0) * (compute.get("train_flops_per_image") or 0.0)
    return State("resume", Progress(state["step"], float(state.get("train_time", 0.0)), float(flops)))


# ---- what a job will cost ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Speed:
    """One family's costs on this machine, measured by a probe (see `probe`)."""
    s_per_step: float               # training seconds per optimizer step
    flops_per_step: float | None    # training FLOPs per step (train_flops_per_image x batch size)
    sample_s_per_image: float       # generating one image with the family's sampler
    score_s_per_image: float        # scoring one image: features, FID/KID/PR, memorisation
    eval_fixed_s: float             # the rest of one full evaluation: loading, likelihoods, panels
    startup_s: float                # the process outside training and evaluation: imports, data, FLOP count


@dataclass(frozen=True)
class RunSettings:
    """What a job's composed config says about its length and its evaluations."""
    max_steps: int | None
    max_time: float | None
    max_flops: float | None
    eval_every: int          # trainer.eval_every: an evaluation during training every N steps (0: none)
    eval_growth: float       # trainer.eval_growth: 1, or the ratio of a geometric grid of evaluation steps
    during_samples: int      # eval.during_training.num_samples
    final_samples: int       # eval.num_samples, scored once at the end (0: eval.at_end=false or no eval)


@dataclass(frozen=True)
class Estimate:
    steps: int            # the step the job will end at
    train_s: float
    eval_s: float
    startup_s: float

    @property
    def total_s(self) -> float:
        return self.train_s + self.eval_s + self.startup_s


def estimate(speed: Speed, run: RunSettings, done: Progress = Progress()) -> Estimate | None:
    """What is left of a job: the steps to its first budget (steps, training seconds, training FLOPs; each at
    the measured rate), those steps' training time, the evaluations during training that fall in them
    (on the Trainer's grid, genbench.trainer.eval_due, and at the last step) plus the final one, and one
    process start-up.
    None when no budget can be converted to steps (a FLOP budget without a FLOP count)."""
    left = []
    if run.max_steps is not None:
        left.append(run.max_steps - done.step)
    if run.max_time is not None:
        left.append(math.ceil((run.max_time - done.train_time) / speed.s_per_step))
    if run.max_flops is not None and speed.flops_per_step:
        left.append(math.ceil((run.max_flops - done.train_flops) / speed.flops_per_step))
    if not left:
        return None
    steps = max(min(left), 0)
    end = done.step + steps
    during = 0
    if run.eval_every and steps:  # the Trainer evaluates on its grid, and at its last step
        from genbench.trainer import eval_due

        on_grid = sum(eval_due(s, run.eval_every, run.eval_growth) for s in range(done.step + 1, end + 1))
        during = on_grid + (0 if eval_due(end, run.eval_every, run.eval_growth) else 1)
    per_image = speed.sample_s_per_image + speed.score_s_per_image
    eval_s = during * run.during_samples * per_image
    if run.final_samples:
        eval_s += run.final_samples * per_image + speed.eval_fixed_s
    return Estimate(end, steps * speed.s_per_step, eval_s, speed.startup_s)


def makespan(durations: list[float], jobs: int) -> float:
    """Wall time of running `durations` in order on `jobs` slots, each job taking the first free slot (as
    `run_jobs` does)."""
    slots = [0.0] * jobs
    for d in durations:
        i = slots.index(min(slots))
        slots[i] += d
    return max(slots, default=0.0)


# ---- probes --------------------------------------------------------------------------------------------------
def compose(overrides: list[str]):
    """The composed `genbench train` config of these overrides; a bad override is one ConfigError line."""
    from genbench.preflight import check_command, compose as preflight_compose

    check_command("train", overrides)
    return preflight_compose("train", overrides)


def run_settings(cfg) -> RunSettings:
    t = cfg.trainer
    has_eval = "eval" in cfg and cfg.eval is not None
    return RunSettings(
        max_steps=t.max_steps, max_time=parse_duration(t.max_time), max_flops=parse_flops(t.max_flops),
        eval_every=int(t.eval_every or 0) if has_eval else 0, eval_growth=float(t.get("eval_growth", 1.0)),
        during_samples=int(cfg.eval.during_training.num_samples) if has_eval else 0,
        final_samples=int(cfg.eval.num_samples) if has_eval and cfg.eval.at_end else 0)


def machine_key(device: str) -> dict:
    """Which machine a probe ran on: CPU, cores, host, torch and the device the runs train on."""
    import torch

    from genbench.runtime import cpu_model, device_name, resolve_device

    return {"cpu_model": cpu_model(), "cpu_count": len(os.sched_getaffinity(0)), "hostname": platform.node(),
            "torch": str(torch.__version__), "device": device_name(resolve_device(device))}


def probe_key(cfg, threads: int, probe_steps: int, probe_samples: int) -> tuple[str, dict]:
    """(hash, what it hashes): the machine, threads, and every setting that changes a step's or an
    evaluation's cost (model, data, optimizer, batch size, precision, device, the eval protocol)."""
    from omegaconf import OmegaConf

    t = cfg.trainer
    settings = {"machine": machine_key(t.device), "threads": threads, "probe": [probe_steps, probe_samples, "2 evaluations"],
                "trainer": {k: t.get(k) for k in ("batch_size", "precision", "device", "compile", "ema_profiles")},
                **{k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "optim", "eval") if k in cfg}}
    settings.get("data", {}).pop("root", None)  # where the files are does not change the speed
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12], json.loads(text)


def eval_parts(record: dict) -> tuple[int, float, float]:
    """(samples, sampling s, scoring s) of an evaluation record; scoring leaves out filling the feature cache,
    which a machine's first evaluation does once (timings_s.reference_features)."""
    t = record.get("timings_s") or {}
    return (record.get("num_generated") or 0, t.get("sampling") or 0.0,
            (t.get("metrics") or 0.0) - (t.get("reference_features") or 0.0))


def speed_from_probe(run_dir: Path, wall_s: float, probe_samples: int) -> Speed:
    """A probe's Speed, from its checkpoint, its TensorBoard perf/train_time_s (logged every step; the first
    fifth of the steps is warm-up and not timed) and the timings of its evaluation records. With a second,
    larger evaluation (probe_eval_overrides), the per-image costs are the slope between the two, so that what
    an evaluation costs whatever its size (the nearest neighbours of the test images, precision/recall's
    reference radii) is its fixed cost, not spread over the probe's few images; else they are the one
    evaluation's seconds / its images. `wall_s`: the `genbench train` process's."""
    from genbench.checkpoint import load_checkpoint
    from genbench.records import headline_record, load_records
    from genbench.report.events import read_scalars

    state = load_checkpoint(run_dir)
    steps, train_time = state["step"], state["train_time"]
    s_per_step = train_time / steps
    times = {p.step: p.value for p in read_scalars(run_dir / "tb").get("perf/train_time_s", [])}
    warm = max(1, steps // 5)
    if warm in times and steps in times and steps > warm:
        s_per_step = (times[steps] - times[warm]) / (steps - warm)
    per_image = (state.get("compute") or {}).get("train_flops_per_image")
    batch = state["config"]["trainer"]["batch_size"]
    record = headline_record(run_dir) or {}
    n1, sample_s, score_s = eval_parts(record)
    larger = [eval_parts(r) for r in load_records(run_dir)[1].values() if (r.get("num_generated") or 0) > n1]
    if larger:
        n2, sample2, score2 = max(larger)
        sample_pi, score_pi = max((sample2 - sample_s) / (n2 - n1), 0.0), max((score2 - score_s) / (n2 - n1), 0.0)
    else:
        sample_pi, score_pi = sample_s / probe_samples, score_s / probe_samples
    eval_wall = record.get("eval_wall_time_s") or 0.0
    fill_s = (record.get("timings_s") or {}).get("reference_features") or 0.0
    return Speed(s_per_step=s_per_step, flops_per_step=per_image * batch if per_image else None,
                 sample_s_per_image=sample_pi, score_s_per_image=score_pi,
                 eval_fixed_s=max(eval_wall - fill_s - (n1 or probe_samples) * (sample_pi + score_pi), 0.0),
                 startup_s=max(wall_s - train_time - eval_wall, 0.0))


def probe_overrides(base: list[str], cfg, probe_steps: int, probe_samples: int, run_dir: Path) -> list[str]:
    """A job's overrides, cut to probe_steps steps (no budget, no eval during training, one checkpoint at the
    end, a log line every step) and a final evaluation of probe_samples samples."""
    out = [o for o in base if not o.startswith(("hydra.run.dir=", "trainer.max_"))]
    out += [f"trainer.max_steps={probe_steps}", "trainer.max_time=null", "trainer.max_flops=null", "trainer.eval_every=0",
            "trainer.sample_every=0", "trainer.checkpoint_every=0", "trainer.log_every=1", "trainer.progress=false",
            f"hydra.run.dir={run_dir}"]
    if "eval" in cfg and cfg.eval is not None:
        m = cfg.eval.metrics
        out += [f"eval.num_samples={probe_samples}", "eval.at_end=true",
                f"eval.metrics.kid_subset_size={min(m.kid_subset_size, probe_samples)}",
                f"eval.metrics.isc_splits={min(m.isc_splits, probe_samples)}"]
    return out


def probe_eval_overrides(base: list[str], cfg, probe_samples: int, run_dir: Path) -> list[str] | None:
    """`genbench eval` of the probe's weights on 2 x probe_samples samples, with the metric settings of its first
    evaluation (and the eval.* overrides among `base`); None when the jobs do not evaluate."""
    if "eval" not in cfg or cfg.eval is None:
        return None
    m, mine = cfg.eval.metrics, ("eval.num_samples=", "eval.metrics.kid_subset_size=", "eval.metrics.isc_splits=", "eval.at_end=")
    return [f"run_dir={run_dir}", *(o for o in base if o.lstrip("+~").startswith("eval.") and not o.startswith(mine)),
            f"eval.num_samples={2 * probe_samples}", f"eval.metrics.kid_subset_size={min(m.kid_subset_size, probe_samples)}",
            f"eval.metrics.isc_splits={min(m.isc_splits, probe_samples)}"]


def load_probes(root: Path) -> dict:
    try:
        return json.loads((root / "probes.json").read_text())
    except (OSError, ValueError):
        return {}


def save_probe(root: Path, key: str, entry: dict) -> None:
    probes = {**load_probes(root), key: entry}
    atomic_write(root / "probes.json", lambda f: f.write((json.dumps(probes, indent=2) + "\n").encode()))


# ---- running children -------------------------------------------------------------------------------------
class Children:
    """The `genbench train` / `genbench compare` processes this command started. Each runs in its own session,
    so a Ctrl-C in the terminal reaches this process alone, which passes each signal on exactly once."""

    def __init__(self) -> None:
        self.running: dict[str, subprocess.Popen] = {}
        self.stop_signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Children:
        self._previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _on_signal(self, signum: int, frame) -> None:
        first = self.stop_signal is None
        self.stop_signal = signum
        for p in self.running.values():
            if p.poll() is None:
                p.send_signal(signum)
        if first:
            print(f"\ntrilemma: {signal.Signals(signum).name}: passed on to {len(self.running)} running job(s), which "
                  "checkpoint and stop; no new job starts. Run the same command again to resume.", flush=True)

    def start(self, name: str, argv: list[str], threads: int, log: Path | None) -> subprocess.Popen:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        out = open(log, "ab") if log else None  # noqa: SIM115 -- closed with the process, by the OS
        p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True)
        if out:
            out.close()  # the child holds its own descriptor
        self.running[name] = p
        return p

    def finished(self) -> list[tuple[str, int]]:
        """(name, exit status) of every child that has ended, removed from `running`."""
        done = [(n, p.returncode) for n, p in self.running.items() if p.poll() is not None]
        for n, _ in done:
            del self.running[n]
        return done

    def wait_one(self) -> list[tuple[str, int]]:
        while True:
            done = self.finished()
            if done or not self.running:
                return done
            time.sleep(0.2)


def genbench(*args: str) -> list[str]:
    """`genbench ARGS` through this interpreter (the venv's)."""
    return [sys.executable, "-m", "genbench", *args]


def run_probe(children: Children, family: str, overrides: list[str], run_dir: Path, threads: int,
              probe_samples: int, second: list[str] | None = None) -> Speed | None:
    """One probe, in run_dir (removed before and after; its console output kept in run_dir.log): `genbench train`
    with `overrides`, then `genbench eval` with `second` (a larger evaluation; none when None)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    log = run_dir.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    start = time.perf_counter()
    children.start(f"probe {family}", genbench("train", *overrides), threads, log)
    ((_, status),) = children.wait_one()
    wall = time.perf_counter() - start
    if status != 0:
        if children.stop_signal is None:
            print(f"trilemma: the probe of {family} failed (exit {status}); its output: {log}", file=sys.stderr)
        return None
    if second is not None and children.stop_signal is None:
        children.start(f"probe {family} (evaluation)", genbench("eval", *second), threads, log)
        ((_, status),) = children.wait_one()
        if status != 0 and children.stop_signal is None:  # the one evaluation still gives an estimate
            print(f"trilemma: warning: the probe's second evaluation of {family} failed (exit {status}); see {log}",
                  file=sys.stderr)
    speed = speed_from_probe(run_dir, wall, probe_samples)
    shutil.rmtree(run_dir, ignore_errors=True)
    return speed


# ---- pace: a time budget as FLOPs ---------------------------------------------------------------------------
def pace_from_scalars(scalars: dict) -> tuple[float, int, float]:
    """(training FLOP/s, steps timed, seconds timed) from a run's perf/train_flops and perf/train_time_s, logged
    every step, after its first fifth of steps (warm-up: allocation, oneDNN's kernel choice)."""
    flops = {p.step: p.value for p in scalars.get("perf/train_flops", [])}
    seconds = {p.step: p.value for p in scalars.get("perf/train_time_s", [])}
    steps = sorted(set(flops) & set(seconds))
    if len(steps) < 3:
        raise ValueError(f"{len(steps)} timed steps; raise --pace-seconds")
    warm, last = steps[len(steps) // 5], steps[-1]
    return (flops[last] - flops[warm]) / (seconds[last] - seconds[warm]), last - warm, seconds[last] - seconds[warm]


def measure_pace(args, children: Children) -> int:
    """--measure-pace FILE: `genbench train` of each family at its jobs' settings and --threads for --pace-seconds of
    training (no evaluation, a log every step), one after another; FILE gets each family's training FLOP/s, the
    machine record and the command. Run it on the machine alone: the rate is what a time budget buys there."""
    from genbench.report.events import read_scalars
    from genbench.runtime import machine_record, resolve_device

    families = parse_families(args.families)
    rates, settings, detail = {}, {}, {}
    for family in families:
        job = Job(Budget("time", args.pace_seconds), family, 0)
        run_dir = args.root / "pace" / family
        overrides = [*(o for o in job.overrides(args.root, args.overrides, args.threads) if not o.startswith("hydra.run.dir=")),
                     "trainer.max_steps=null",
                     "trainer.eval_every=0", "trainer.sample_every=0", "trainer.checkpoint_every=0", "trainer.log_every=1",
                     "trainer.progress=false", "eval.at_end=false", f"hydra.run.dir={run_dir}"]
        try:
            cfg = compose(overrides)
        except Exception as e:
            raise UsageError(str(e).splitlines()[0]) from None
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        print(f"pace of {family}: {args.pace_seconds:g} s of training at {args.threads} thread(s) ...", flush=True)
        children.start(f"pace {family}", genbench("train", *overrides), args.threads, run_dir.with_suffix(".log"))
        ((_, status),) = children.wait_one()
        if status != 0:
            print(f"trilemma: measuring {family}'s pace failed (exit {status}); see {run_dir.with_suffix('.log')}",
                  file=sys.stderr)
            return 128 + children.stop_signal if children.stop_signal else 1
        try:
            rate, steps, seconds = pace_from_scalars(read_scalars(run_dir / "tb"))
        except ValueError as e:
            raise UsageError(f"--measure-pace: {family}: {e}") from None
        rates[family], settings[family] = rate, pace_settings(cfg)
        detail[family] = {"steps_timed": steps, "seconds_timed": seconds}
        print(f"pace of {family}: {rate:.4g} training FLOP/s ({steps} steps in {seconds:.1f} s after warm-up)", flush=True)
    import torch

    torch.set_num_threads(args.threads)  # the machine record's threads and matmul peak: the runs' own
    record = {"format": 1, "rates": rates, "settings": settings, "detail": detail, "threads": args.threads,
              "pace_seconds": args.pace_seconds, "overrides": args.overrides,
              "machine": machine_record(resolve_device(cfg.trainer.device)),
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": args.command}
    atomic_write(args.measure_pace, lambda f: f.write((json.dumps(record, indent=1) + "\n").encode()))
    print(f"wrote {args.measure_pace}: use it with --pace {args.measure_pace}", flush=True)
    return 0


def read_pace(path: Path, families: list[str]) -> dict:
    """--pace FILE (genbench.report.pace.read_pace); a bad file is one UsageError line."""
    from genbench.report.pace import PaceError, read_pace as read

    try:
        return read(path, families)
    except PaceError as e:
        raise UsageError(f"--pace {e}") from None


# ---- the plan ----------------------------------------------------------------------------------------------
def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def state_text(state: State) -> str:
    if state.kind in ("done", "archived"):
        return f"{state.kind} at step {state.progress.step}" + (f" ({state.note})" if state.note else "") + ": skipped"
    if state.kind == "resume":
        return f"resume from step {state.progress.step}"
    if state.kind == "broken":
        return f"cannot resume: {state.note}"
    return "new"


def plan_table(rows: list[tuple[Job, State, Estimate | None]]) -> list[str]:
    header = ("job", "state", "ends at step", "training", "evaluation", "start-up", "total")
    lines = [header]
    for job, state, est in rows:
        if state.kind in ("done", "archived", "broken"):
            cells = ("-",) * 5
        elif est is None:  # no probe of its family
            cells = ("?",) * 5
        else:
            cells = (f"~{est.steps}", fmt_s(est.train_s), fmt_s(est.eval_s), fmt_s(est.startup_s), fmt_s(est.total_s))
        lines.append((job.name, state_text(state), *cells))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]


def speed_lines(speeds: dict[str, tuple[Speed, dict]]) -> list[str]:
    out = []
    for family, (sp, entry) in speeds.items():
        gflops = f", {sp.flops_per_step / 1e9:.3g} GFLOPs/step" if sp.flops_per_step else ", FLOPs not counted"
        out.append(f"  {family}: {sp.s_per_step:.3g} s/step{gflops}; sampling {1e3 * sp.sample_s_per_image:.3g} ms/image, "
                   f"scoring {1e3 * sp.score_s_per_image:.3g} ms/image, {sp.eval_fixed_s:.0f} s fixed per evaluation; "
                   f"start-up {sp.startup_s:.0f} s (probed {entry['measured']})")
    return out


BASIS = """\
ETA basis: each family's costs were measured on this machine by a probe (`genbench train` with the jobs' settings
and threads for {steps} steps, timed from TensorBoard's perf/train_time_s after the first fifth as warm-up, then
evaluations of {samples} and twice as many samples, whose difference gives the costs per image and the rest a fixed
cost; cached in {probes} per machine, threads and config). Per job:
  training   = steps to the first budget x measured s/step; the steps are the time budget / s/step (time budgets,
               whose training time is the budget itself) or the FLOPs left / the counted FLOPs per step (flop budgets)
  evaluation = (eval.during_training.num_samples at each step of the trainer.eval_every / eval_growth grid
               + eval.num_samples at the end)
               x measured (sampling + scoring) s/image, + the probe's fixed cost of one full evaluation
  start-up   = the probe process's time outside training and evaluation (imports, data, FLOP count)
  FID against NFE: per cell, --nfe-samples x (sampling s/image x steps / the probe sampler's steps + scoring
               s/image) + one evaluation's fixed cost + a start-up
Not counted: extracting the reference images' features, which a machine's first evaluation does once (its record's
timings_s.reference_features; the cache serves every later one), checkpoints and sample grids (seconds per run),
and `genbench compare` at the end. Jobs side by side (--jobs > 1) share memory bandwidth,
so each may run slower than its probe, which ran alone."""


# ---- main ----------------------------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's usage + message, as one line
        raise UsageError(f"{message} (python scripts/trilemma.py --help)")


def parse_args(argv: list[str] | None):
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=DEFAULTS["families"], help="model choices (conf/model/), comma list")
    parser.add_argument("--seeds", default=DEFAULTS["seeds"], help="comma list of seeds")
    parser.add_argument("--budgets", default=DEFAULTS["budgets"], help="flops and/or time")
    parser.add_argument("--flops", default=DEFAULTS["flops"], help="training-FLOP budget(s) of the flops budget, e.g. 1.85e14 or 185T")
    parser.add_argument("--time", default=DEFAULTS["time"], help="training time(s) of the time budget, e.g. 10m, 90s")
    parser.add_argument("--root", type=Path, default=Path("outputs/trilemma"), help="where the runs, probes and compares go")
    parser.add_argument("--archive", type=Path, default=None,
                        help="keep each finished run's record (no weights) in ARCHIVE/<budget>/<family>-seed<S>; an "
                             "archived job counts as done, so a sweep goes on across machines (make trilemma: docs/trilemma/runs)")
    parser.add_argument("--pace", type=Path, default=None,
                        help="a --measure-pace file: each time budget becomes each family's training FLOPs in that time "
                             "at the pace measured there (folder time-<T>-pace<id>), so it can run under any load")
    parser.add_argument("--measure-pace", type=Path, default=None, metavar="FILE",
                        help="measure each --families' training FLOP/s on this machine at --threads (run it alone), "
                             "write FILE, and exit")
    parser.add_argument("--pace-seconds", type=float, default=60.0, help="--measure-pace: training seconds per family")
    parser.add_argument("--jobs", type=int, default=1, help="jobs side by side (threads are split among them)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="CPU threads in all (default: the cores)")
    parser.add_argument("--probe-steps", type=int, default=20, help="training steps of each family's speed probe")
    parser.add_argument("--probe-samples", type=int, default=100, help="samples of each probe's evaluation")
    parser.add_argument("--nfe-samplers", default=DEFAULTS["nfe-samplers"],
                        help="FID against NFE: conf/sampler/ options evaluated on the finished runs of --nfe-families "
                             "(none: no grid)")
    parser.add_argument("--nfe-steps", default=DEFAULTS["nfe-steps"], help="FID against NFE: step counts of each sampler")
    parser.add_argument("--nfe-seeds", default=DEFAULTS["nfe-seeds"], help="FID against NFE: the seeds whose runs get the grid")
    parser.add_argument("--nfe-families", default=DEFAULTS["nfe-families"], help="FID against NFE: the families whose runs get it")
    parser.add_argument("--nfe-samples", type=int, default=1000, help="FID against NFE: samples per cell")
    parser.add_argument("--no-probe", action="store_true", help="no probes: the ETA only where one is cached")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its ETA, then exit")
    parser.add_argument("--compare-only", action="store_true", help="only archive (--archive) and `genbench compare` the finished jobs")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. trainer.eval_every=100")
    args = parser.parse_intermixed_args(argv)
    args.command = "python scripts/trilemma.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for flag in ("jobs", "threads", "probe_steps", "probe_samples", "nfe_samples"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')}={getattr(args, flag)} must be at least 1")
    if not args.pace_seconds > 0:
        raise UsageError(f"--pace-seconds={args.pace_seconds:g} must be positive, e.g. --pace-seconds 60")
    if args.probe_steps < 2:
        raise UsageError(f"--probe-steps={args.probe_steps}: a probe needs at least 2 steps (the first is warm-up)")
    if args.jobs > args.threads:
        raise UsageError(f"--jobs={args.jobs} exceeds --threads={args.threads}: each job needs a thread")
    check_extra(args.overrides)
    args.nfe_samplers = parse_samplers(args.nfe_samplers)
    args.nfe_steps = [int(k) for k in parse_seeds(args.nfe_steps, "--nfe-steps")]
    if 0 in args.nfe_steps:
        raise UsageError("--nfe-steps: 0 steps draws nothing; write e.g. --nfe-steps 10,20,50,100")
    args.nfe_seeds = parse_seeds(args.nfe_seeds, "--nfe-seeds")
    args.nfe_families = parse_families(args.nfe_families, "--nfe-families")
    families = parse_families(args.families)
    pace = args.pace_info = read_pace(args.pace, families) if args.pace else None
    return args, make_jobs(families, parse_seeds(args.seeds), parse_budgets(args.budgets, args.flops, args.time, pace))


def plan(args, jobs: list[Job], children: Children, threads: int):
    """Each job's state and estimate, probing each family whose jobs are not all done (unless cached or
    --no-probe); returns the rows, the lines that describe the speeds, and the FID-against-NFE cells still to
    evaluate with each one's estimated seconds (None: no probe of its family)."""
    from genbench.validate import ConfigError

    states = {job: sweep_state(job, args.root, args.archive) for job in jobs}
    settings: dict[tuple[str, Budget], RunSettings] = {}
    speeds: dict[str, tuple[Speed, dict]] = {}
    probes = load_probes(args.root)
    default_steps: dict[str, int | None] = {}
    for job in jobs:
        if (job.family, job.budget) in settings:
            continue
        overrides = job.overrides(args.root, args.overrides, threads)
        try:
            cfg = compose(overrides)
        except (ConfigError, ValueError) as e:
            raise UsageError(str(e).splitlines()[0]) from None
        except Exception as e:  # what the preflight leaves to Hydra
            raise UsageError(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        settings[(job.family, job.budget)] = run_settings(cfg)
        if job.budget.pace and args.pace_info["settings"][job.family] != pace_settings(cfg):  # genbench.report.pace
            raise UsageError(f"--pace {args.pace}: {job.family}'s pace was measured with other settings than its jobs "
                             f"have now (model, data, optimizer or batch size); measure again with --measure-pace FILE")
        sampler = cfg.model.get("sampler") if "model" in cfg else None
        default_steps[job.family] = int(sampler.steps) if sampler is not None and sampler.get("steps") else None
        if job.family in speeds:
            continue
        key, what = probe_key(cfg, threads, args.probe_steps, args.probe_samples)
        entry = probes.get(key)  # a cached probe serves a family whose jobs are done too (its FID-against-NFE cells)
        all_done = all(states[j].kind in ("done", "archived") for j in jobs if j.family == job.family)
        if entry is None and not all_done and not args.no_probe and children.stop_signal is None:
            run_dir = args.root / "probes" / f"{job.family}-{key}"
            print(f"probing {job.family}: {args.probe_steps} training steps and an evaluation of {args.probe_samples} "
                  f"samples ({threads} thread(s); output in {run_dir}.log) ...", flush=True)
            t0 = time.perf_counter()
            speed = run_probe(children, job.family, probe_overrides(overrides, cfg, args.probe_steps, args.probe_samples, run_dir),
                              run_dir, threads, args.probe_samples, probe_eval_overrides(overrides, cfg, args.probe_samples, run_dir))
            if speed is not None:
                now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")
                entry = {"family": job.family, "measured": now, "probe_wall_s": time.perf_counter() - t0,
                         "speed": asdict(speed), "settings": what}
                save_probe(args.root, key, entry)
                probes[key] = entry
        if entry is not None:
            speeds[job.family] = (Speed(**entry["speed"]), entry)
    rows = []
    for job in jobs:
        state, speed = states[job], speeds.get(job.family)
        est = estimate(speed[0], settings[(job.family, job.budget)], state.progress) \
            if speed and state.kind in ("new", "resume") else None
        rows.append((job, state, est))
    cells = [(c, nfe_estimate(speeds[c.job.family][0], default_steps[c.job.family], c.steps, args.nfe_samples)
              if c.job.family in speeds else None)
             for c in nfe_cells(args, [j for j in jobs if states[j].kind != "broken"], trained=False)]
    return rows, speed_lines(speeds), cells


def nfe_estimate(speed: Speed, probe_steps: int | None, steps: int, samples: int) -> float:
    """Seconds of one FID-against-NFE cell: sampling at the probe's rate scaled by steps / the probe sampler's
    steps (network evaluations in proportion to steps), scoring, an evaluation's fixed cost and a start-up."""
    scale = steps / probe_steps if probe_steps else 1.0
    return samples * (speed.sample_s_per_image * scale + speed.score_s_per_image) + speed.eval_fixed_s + speed.startup_s


def print_plan(args, rows, speed_text: list[str], threads: int, cells: list[tuple[NfeCell, float | None]] = ()) -> None:
    todo = [(j, s, e) for j, s, e in rows if s.kind in ("new", "resume")]
    budgets = list(dict.fromkeys(j.budget.name for j, _, _ in rows))
    families = list(dict.fromkeys(j.family for j, _, _ in rows))
    seeds = list(dict.fromkeys(j.seed for j, _, _ in rows))
    print(f"trilemma sweep: {len(rows)} jobs ({len(families)} families x {len(seeds)} seed(s) x {len(budgets)} budget(s)) "
          f"in {args.root}; {len(rows) - len(todo)} done, {len(todo)} to run, {args.jobs} at a time, {threads} thread(s) each")
    print(" ".join(["every job: genbench train experiment=trilemma model=<family> seed=<seed> <budget>", *args.overrides,
                    f"threads={threads} hydra.run.dir={args.root}/<budget>/<family>-seed<seed>"]))
    for budget in dict.fromkeys(j.budget for j, _, _ in rows if j.budget.pace):
        print(f"{budget.name}: {fmt_s(budget.value)} of training at the pace measured in {args.pace} "
              f"({args.pace_info['about']}): " + ", ".join(f"{f} {budget.value * r:.3g} FLOPs" for f, r in budget.pace
                                                          if f in {j.family for j, _, _ in rows}))
    print("\n".join(plan_table(rows)))
    if cells:
        runs = list(dict.fromkeys(c.job.name for c, _ in cells))
        print(f"then FID against NFE: {len(cells)} evaluation(s) of {args.nfe_samples} samples each "
              f"({', '.join(args.nfe_samplers)} x {','.join(map(str, args.nfe_steps))} steps) on {', '.join(runs)}: "
              f"genbench eval run_dir=<run> sampler=<sampler> sampler.steps=<steps> eval.num_samples={args.nfe_samples} ...")
    if speed_text:
        print("measured speeds on this machine:")
        print("\n".join(speed_text))
    unknown = sorted({j.family for j, s, e in todo if e is None} | {c.job.family for c, t in cells if t is None})
    if (todo or cells) and not any(e for _, _, e in todo) and not any(t for _, t in cells):
        print(f"ETA: unknown: no probe of {', '.join(unknown)} (run without --no-probe to measure them)")
    elif todo or cells:
        nfe_s = [t for _, t in cells if t is not None]
        total = makespan([e.total_s for _, _, e in todo if e is not None], args.jobs) + makespan(nfe_s, args.jobs)
        parts = {k: sum(getattr(e, k) for _, _, e in todo if e is not None) for k in ("train_s", "eval_s", "startup_s")}
        parts["eval_s"] += sum(nfe_s)
        finish = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=total)
        print(f"ETA: {fmt_s(total)} on this machine (done about {finish:%Y-%m-%d %H:%M} UTC): training {fmt_s(parts['train_s'])}"
              f" + evaluation {fmt_s(parts['eval_s'])} (FID against NFE included) + start-up {fmt_s(parts['startup_s'])}, "
              "summed over the jobs, "
              f"{args.jobs} at a time" + (f"; not included: {', '.join(unknown)} (no probe)" if unknown else ""))
        print(BASIS.format(steps=args.probe_steps, samples=args.probe_samples, probes=args.root / "probes.json"))
    else:
        print("nothing to run: every job is done")


def stopped_by(status: int) -> signal.Signals | None:
    """The signal that stopped a child: 128+N from `genbench train`, -N from Popen when a signal killed it."""
    number = status - 128 if status > 128 else -status
    try:
        return signal.Signals(number) if number > 0 else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Task:
    """One child to run: `genbench <argv>` in run_dir (made when it starts), its console in log (None: this one's)."""
    name: str
    argv: list[str]
    run_dir: Path
    log: Path | None


def run_queue(tasks: list[Task], children: Children, threads: int, jobs: int,
              finished: Callable[[Task], None] = lambda task: None) -> list[str]:
    """Run the tasks, `jobs` at a time but never two in one run_dir (both would write its metrics.json), calling
    `finished(task)` as each one succeeds; returns the names of those that failed. After a stop signal no task
    starts, and those running are waited for (they got the signal)."""
    failed, started, total = [], {}, len(tasks)
    queue, running = list(tasks), {}
    while (queue or children.running) and not (children.stop_signal and not children.running):
        while len(children.running) < jobs and children.stop_signal is None:
            task = next((t for t in queue if t.run_dir not in {r.run_dir for r in running.values()}), None)
            if task is None:
                break
            queue.remove(task)
            task.run_dir.mkdir(parents=True, exist_ok=True)
            started[task.name], running[task.name] = time.perf_counter(), task
            print(f"[{total - len(queue)}/{total}] {task.name}: genbench {' '.join(task.argv)}"
                  + (f" (console: {task.log})" if task.log else ""), flush=True)
            children.start(task.name, genbench(*task.argv), threads, task.log)
        for name, status in children.wait_one():
            task, took = running.pop(name), fmt_s(time.perf_counter() - started[name])
            if status == 0:
                print(f"{name}: finished in {took}", flush=True)
                finished(task)
            elif children.stop_signal is not None and stopped_by(status) is not None:
                print(f"{name}: stopped by {stopped_by(status).name} after {took}; re-run to resume it", flush=True)
            else:  # an error, or a signal from elsewhere (the OOM killer)
                failed.append(name)
                why = f"killed by {stopped_by(status).name}" if stopped_by(status) else f"exit {status}"
                print(f"{name}: failed ({why}) after {took}; see {task.log or task.run_dir}", flush=True)
    return failed


def run_jobs(args, rows, children: Children, threads: int) -> list[str]:
    """Train the jobs that are not done, --jobs at a time (a killed one resumes from its last checkpoint);
    returns the names of those that failed."""
    tasks = []
    for job, state, _ in rows:
        if state.kind not in ("new", "resume"):
            continue
        run_dir = job.run_dir(args.root)
        overrides = job.overrides(args.root, args.overrides, threads)
        if args.jobs > 1:  # side by side: no progress bars, each job's console in its folder
            overrides.insert(-2, "trainer.progress=false")
        tasks.append(Task(job.name, ["train", *overrides], run_dir, run_dir / "console.log" if args.jobs > 1 else None))
    by_name = {job.name: job for job, _, _ in rows}
    return run_queue(tasks, children, threads, args.jobs, lambda task: archive(args, [by_name[task.name]], threads))


def archive(args, jobs: list[Job], threads: int) -> None:
    """With --archive: copy each job scored here whose archive is missing or holds other records into
    <archive>/<budget>/<family>-seed<S> (genbench.report.archive: its record without weights, with samples from
    compare's fixed noise). A failure is a warning: the run itself is still here."""
    if args.archive is None:
        return
    import torch

    from genbench.records import METRICS_FILE
    from genbench.report.archive import archive_run

    torch.set_num_threads(threads)
    for job in jobs:
        live, kept = job.run_dir(args.root), job.run_dir(args.archive)
        if job_state(live).kind != "done" or (
                (kept / METRICS_FILE).is_file() and (kept / METRICS_FILE).read_bytes() == (live / METRICS_FILE).read_bytes()):
            continue
        try:
            archive_run(live, kept)
        except (OSError, ValueError, RuntimeError) as e:
            print(f"{job.name}: warning: not archived into {kept}: {str(e).splitlines()[0]}", file=sys.stderr, flush=True)
            continue
        print(f"{job.name}: archived into {kept} (its record without weights)", flush=True)


# ---- FID against NFE: other samplers and step counts on trained runs -------------------------------------------
@dataclass(frozen=True)
class NfeCell:
    """One cell of a trained run's FID-against-NFE grid: `genbench eval` of its EMA weights with a conf/sampler/
    option at a step count, on a smaller protocol (samples; no likelihood, panels or diagnostics). The record goes
    into the run's metrics.json beside its headline; `genbench compare` draws fid_vs_nfe.png from them."""
    job: Job
    sampler: str  # a conf/sampler/ option: ddpm, ddim, dpm_solver, flow/heun, ...
    steps: int

    @property
    def name(self) -> str:
        return f"{self.job.name} {self.sampler}:{self.steps}"

    def overrides(self, root: Path, samples: int) -> list[str]:
        """`genbench eval`'s command line (its threads come from OMP_NUM_THREADS, which Children.start sets)."""
        return [f"run_dir={self.job.run_dir(root)}", f"sampler={self.sampler}", f"sampler.steps={self.steps}",
                f"eval.num_samples={samples}", f"eval.metrics.kid_subset_size={min(samples, 1000)}",
                "eval.likelihood_images=0", "eval.diagnostic_images=0", "eval.memorisation.panel=0"]


def sampler_class(option: str) -> str:
    """conf/sampler/<option>.yaml's class name, as a record's sampling.sampler names it (DDIM, DPMSolverPP2M, ...)."""
    from omegaconf import OmegaConf

    return str(OmegaConf.load(Path(CONF_DIR) / "sampler" / f"{option}.yaml")["_target_"]).rsplit(".", 1)[-1]


def nfe_recorded(run_dir: Path, sampler: str, steps: int, samples: int) -> bool:
    """Does the run hold a record of its headline's EMA weights sampled by `sampler` at `steps` steps, `samples` images?"""
    from genbench.records import load_records, same_weights

    try:
        headline, records = load_records(run_dir)
    except (OSError, ValueError):
        return False
    if headline not in records:
        return False
    want = (sampler_class(sampler), steps, samples)
    return any(same_weights(r, records[headline]) and ((r.get("sampling") or {}).get("sampler"),
               (r.get("sampling") or {}).get("sampler_steps"), r.get("num_generated")) == want for r in records.values())


def nfe_cells(args, jobs: list[Job], trained: bool = True) -> list[NfeCell]:
    """The grid's cells not yet recorded, on the runs of --nfe-families x --nfe-seeds among `jobs`: the finished
    ones (trained=True, what can be evaluated now), or all of them (False, what the plan counts)."""
    cells = []
    for job in jobs:
        if job.family not in args.nfe_families or job.seed not in args.nfe_seeds:
            continue
        if job_state(job.run_dir(args.root)).kind != "done" and (
                trained or sweep_state(job, args.root, args.archive).kind == "archived"):
            continue  # not trained yet, or archived without its weights (its archive keeps the cells it had)
        cells += [NfeCell(job, s, k) for s in args.nfe_samplers for k in args.nfe_steps
                  if not nfe_recorded(job.run_dir(args.root), s, k, args.nfe_samples)]
    return cells


def run_nfe(args, jobs: list[Job], children: Children, threads: int) -> list[str]:
    cells = nfe_cells(args, jobs)
    if cells:
        print(f"FID against NFE: {len(cells)} evaluation(s) of {args.nfe_samples} samples on finished runs", flush=True)
    tasks = [Task(c.name, ["eval", *c.overrides(args.root, args.nfe_samples)], c.job.run_dir(args.root),
                  c.job.run_dir(args.root) / "nfe.log") for c in cells]
    return run_queue(tasks, children, threads, args.jobs)


def compare(args, jobs: list[Job], children: Children) -> int:
    """`genbench compare` over each budget's finished jobs into <root>/compare_<budget>/; the worst exit status."""
    worst = 0
    for budget in dict.fromkeys(j.budget for j in jobs):
        mine = [j for j in jobs if j.budget == budget]
        done = [j for j in mine if sweep_state(j, args.root, args.archive).kind in ("done", "archived")]
        missing = [j.name for j in mine if j not in done]
        if not done:
            print(f"compare {budget.name}: no finished job yet", flush=True)
            continue
        out = args.root / f"compare_{budget.name}"
        print(f"compare {budget.name}: {len(done)} finished job(s) -> {out}"
              + (f" (not finished: {', '.join(missing)})" if missing else ""), flush=True)
        children.start(f"compare {budget.name}", genbench("compare", *(str(j.where(args.root, args.archive)) for j in done), "-o", str(out),
                                                          *(["--pace", str(args.pace)] if args.pace else [])),
                       args.threads, None)
        ((_, status),) = children.wait_one()
        worst = max(worst, status)
        if children.stop_signal is not None:
            break
    return worst


def main(argv: list[str] | None = None) -> int:
    with Children() as children:
        try:
            args, jobs = parse_args(argv)
            if args.measure_pace:
                return measure_pace(args, children)
            threads = max(1, args.threads // args.jobs)
            if args.compare_only:
                archive(args, jobs, threads)
                return compare(args, jobs, children)
            rows, speed_text, cells = plan(args, jobs, children, threads)
        except UsageError as e:
            print(f"trilemma: error: {e}", file=sys.stderr)
            return 2
        if children.stop_signal is None:
            print_plan(args, rows, speed_text, threads, cells)
        failed = []
        if children.stop_signal is None and not args.dry_run:
            archive(args, jobs, threads)  # what an earlier, stopped sweep finished
            failed = run_jobs(args, rows, children, threads)
            if children.stop_signal is None:
                failed += run_nfe(args, jobs, children, threads)
                archive(args, jobs, threads)  # with their FID-against-NFE records
        if children.stop_signal is not None:
            print(f"trilemma: stopped by {signal.Signals(children.stop_signal).name}; the same command resumes", flush=True)
            return 128 + children.stop_signal
        if args.dry_run:
            return 0
        status = compare(args, jobs, children)
        broken = [job.name for job, state, _ in rows if state.kind == "broken"]
        if failed or broken:
            print(f"trilemma: {len(failed)} job(s) failed ({', '.join(failed) or '-'}), {len(broken)} could not resume "
                  f"({', '.join(broken) or '-'})", file=sys.stderr)
            return 1
        return status


if __name__ == "__main__":
    raise SystemExit(main())
