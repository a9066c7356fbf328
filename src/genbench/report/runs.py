"""Runs: where they are, what each one's headline record says, and which runs are seeds of one variant.

A folder holding .hydra/config.yaml is a run; any other folder is searched for runs (a sweep). A sweep's
multirun.yaml says which jobs it launched, so a job without a folder is named.

Each run is read from files alone, no model is loaded: .hydra/ (model, family, seed, overrides), the
headline record of metrics.json (format 2, or the single record of format 1) and the scalars of tb/ (of
scalars.csv in an archived run, genbench.report.archive).

A variant is the model choice plus the overrides whose values differ between the runs, seed aside. Runs are
averaged together only when they also share the protocol id of their records (numbers under two protocols
are not comparable) and the sampler and NFE that made their samples; where either differs among runs of
one name, the variant's name says so.

Total cost (issue 12: "training plus generating 10,000 images"): training FLOPs + COST_IMAGES x the record's
sampling FLOPs per image, and training seconds + COST_IMAGES / the record's sampling img/s (measured while
generating the scored samples, so machine-dependent like the training seconds). Unknown where either part is.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from genbench.records import METRICS_FILE, load_records
from genbench.report.events import Point, Scalars, fid_during_training, run_scalars, value_at
from genbench.report.nfe import NfePoint, sampler_points
from genbench.report.stats import Stat, stat

COST_IMAGES = 10_000  # the images generated in the total-cost columns (issue 12: "training plus generating 10,000 images")

# The columns, in table order: key -> compare.md header. ↓ / ↑: lower / higher is better.
COLUMNS = {
    "fid": "FID ↓", "is_mean": "IS ↑", "kid_mean": "KID ↓", "precision": "precision ↑", "recall": "recall ↑",
    "memorised": "memorised ↓", "nll_bpd": "NLL bits/dim ↓", "nfe": "NFE", "sample_gflops": "sampling GFLOPs/image",
    "sampling_img_per_s": "sampling img/s ↑", "train_time_s": "training s", "images_seen": "images seen",
    "train_pflops": "training PFLOPs", "mfu": "MFU",
    "total_pflops": f"total PFLOPs (training + {COST_IMAGES:,} images)",
    "total_s": f"total s (training + {COST_IMAGES:,} images)", "params": "parameters",
}
PLUMBING = {"seed", "model", "threads", "trainer.progress", "trainer.device", "eval.cache_dir"}  # never name a variant


class RunError(Exception):
    """A run that cannot be compared; the message says why and what to do."""


@dataclass
class Run:
    path: Path
    model: str                   # the model choice (conf/model/<model>.yaml)
    family: str                  # the module of its _target_ in genbench.models
    seed: int
    overrides: dict[str, str]
    headline: str                # the key of the record compare uses
    record: dict
    other_records: int           # records beside the headline (re-evaluations)
    protocol: dict               # the record's protocol settings and their "id"
    sampler: str                 # the sampler that made the scored samples; "—" for one-step families
    values: dict[str, float]     # COLUMNS -> number; nan where unknown or undefined (a GAN's NLL)
    nll_bound: str | None        # the bits/dim bound in values["nll_bpd"]
    scalars: Scalars             # tb/
    fid_curve: list[Point]       # FID of the evaluations during training
    curve_s: list[float]         # training seconds at each point of fid_curve
    curve_flops: list[float] | None  # training FLOPs at each point of fid_curve; None where unknown
    machine: str = "—"           # where it trained (its training seconds are that machine's): machine_text; in a
                                 # record older than training.machine, the evaluation's (the same at the end of training)
    job_num: int | None = None
    nfe_points: list[NfePoint] = field(default_factory=list)  # every record at the headline's weights (FID against NFE)
    config: dict = field(default_factory=dict)  # its .hydra/config.yaml


@dataclass
class Variant:
    label: str                   # A, B, ... : the short name in plots and tables
    name: str
    family: str
    protocol: dict
    sampler: str
    runs: list[Run]
    stats: dict[str, Stat] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]


# ---- find -----------------------------------------------------------------------------------------------
def find_runs(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """The run folders under `paths`, and a message for each path or sweep job that is missing."""
    runs, problems = [], []
    for path in map(Path, paths):
        if not path.is_dir():
            problems.append(f"{path}: no such folder")
        elif (path / ".hydra" / "config.yaml").is_file():
            runs.append(path)
        else:
            found = sorted(p.parent.parent for p in path.rglob(".hydra/config.yaml"))
            if not found:
                problems.append(f"{path}: holds no run (no .hydra/config.yaml below it); pass a `genbench train` "
                                "run folder or a sweep folder (multirun/<date>/<time>-<uid>)")
            runs += found
            problems += missing_jobs(path, found)
    return list(dict.fromkeys(runs)), problems


def sweep_jobs(multirun: dict) -> list[str] | None:
    """The jobs, in launch order, of a sweep by Hydra's basic sweeper: the cartesian product of its sweeper
    params then its task overrides (a later value of a key replaces an earlier one in place). Parsed with
    Hydra's public override parser; None when a sweep cannot be expanded without the configs (glob)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = multirun["hydra"]
    if not str(hydra_cfg.get("sweeper", {}).get("_target_", "")).endswith("BasicSweeper"):
        return None
    params = [f"{k}={v}" for k, v in (hydra_cfg["sweeper"].get("params") or {}).items()]
    choices: dict[str, list[str]] = {}
    try:
        for o in OverridesParser.create().parse_overrides(params + list(hydra_cfg["overrides"]["task"])):
            key = o.get_key_element()
            choices[key] = [f"{key}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.input_line]
    except Exception:  # a sweep function that needs the configs (glob), or a line the parser rejects
        return None
    return [" ".join(job) for job in itertools.product(*choices.values())]


def missing_jobs(sweep: Path, runs: list[Path]) -> list[str]:
    """The jobs multirun.yaml launched that have no folder among `runs`."""
    if not (sweep / "multirun.yaml").is_file():
        return []
    jobs = sweep_jobs(yaml.safe_load((sweep / "multirun.yaml").read_text()))
    if jobs is None:
        return []
    done = {job_num(r) for r in runs}
    return [f"{sweep}: job {num} of {len(jobs)} ({job}) has no folder: it never started, or its folder was removed"
            for num, job in enumerate(jobs) if num not in done]


def hydra_keys(run: Path) -> dict:
    """All that compare reads of a run's .hydra/hydra.yaml, in that file's layout: the config choices and the
    sweep job number (genbench.report.archive keeps exactly this, so the two cannot drift apart)."""
    hydra_file = run / ".hydra" / "hydra.yaml"
    hydra = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra") or {} if hydra_file.is_file() else {}
    return {"hydra": {"runtime": {"choices": (hydra.get("runtime") or {}).get("choices") or {}},
                      "job": {"num": (hydra.get("job") or {}).get("num")}}}


def job_num(run: Path) -> int | None:
    return hydra_keys(run)["hydra"]["job"]["num"]


# ---- read -----------------------------------------------------------------------------------------------
def family_of(target: str) -> str:
    """genbench.models.gan.GAN -> gan: a family is a module of genbench.models (or, outside genbench, the
    module that defines the model class)."""
    module = target.rsplit(".", 1)[0]
    return module.removeprefix("genbench.models.").split(".")[0] if module.startswith("genbench.models.") \
        else module.rsplit(".", 1)[-1]


def protocol_of(record: dict) -> dict:
    """The record's protocol (settings + id). A format-1 record has none: its settings are taken from the
    record and their id is v1-<sha256 of them>, so two old runs compare only under equal settings."""
    if record.get("protocol"):
        return record["protocol"]
    settings = {"extractor": record["feature_extractor"]["name"], "num_generated": record["num_generated"],
                "num_reference": record["num_reference"], "reference_dataset": record["reference_dataset"],
                "reference_split": record["reference_split"], **(record.get("metric_settings") or {})}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return {**settings, "id": f"v1-{digest}"}


def tightest_bound(bits_per_dim: dict[str, dict]) -> tuple[str | None, float]:
    """The smallest bits/dim upper bound on the NLL among a family's bounds ("elbo", "iwae_k64", "vlb").
    Terms of a bound ("elbo_recon", "elbo_kl", named <bound>_<term>) are not bounds themselves."""
    bounds = {k: v["mean"] for k, v in bits_per_dim.items() if not any(k.startswith(f"{b}_") for b in bits_per_dim)}
    if not bounds:
        return None, math.nan
    name = min(bounds, key=bounds.get)
    return name, bounds[name]


def _number(x, scale: float = 1.0) -> float:
    return math.nan if x is None else float(x) / scale


def read_run(path: Path) -> Run:
    """Everything compare needs from one run folder; RunError says what is missing."""
    if not (path / METRICS_FILE).is_file():
        if not (path / "checkpoints" / "last.pt").is_file():
            raise RunError(f"{path}: training did not finish (no checkpoints/last.pt); see {path / 'train.log'}")
        raise RunError(f"{path}: not evaluated (no {METRICS_FILE}): training failed or stopped before its final "
                       f"evaluation; see {path / 'train.log'}, or score it with `genbench eval run_dir={path}`")
    cfg = yaml.safe_load((path / ".hydra" / "config.yaml").read_text())
    overrides_file = path / ".hydra" / "overrides.yaml"
    lines = yaml.safe_load(overrides_file.read_text()) or [] if overrides_file.is_file() else []
    overrides = dict(o.lstrip("+~").split("=", 1) for o in lines if "=" in o)
    hydra = hydra_keys(path)["hydra"]
    choices = hydra["runtime"]["choices"]
    target = cfg["model"]["_target_"]
    headline, records = load_records(path)  # format 2, or format 1's single record
    if headline not in records:
        raise RunError(f"{path}: {METRICS_FILE} names no headline record among its {len(records)}; "
                       f"pick one with `genbench eval run_dir={path} eval.headline=true`")
    record = records[headline]
    training, compute = record.get("training") or {}, record.get("compute") or {}
    nll_bound, nll = tightest_bound(record.get("bits_per_dim") or {})
    sampling = record.get("sampling") or {}  # sampler and NFE sit at the top of a record, and here in older ones
    sampler, nfe = (record.get(k) if record.get(k) is not None else sampling.get(k) for k in ("sampler", "nfe"))
    values = {k: _number(record["metrics"].get(k)) for k in ("fid", "is_mean", "kid_mean", "precision", "recall")}
    values.update(
        memorised=_number((record.get("memorisation") or {}).get("fraction_closer")), nll_bpd=nll, nfe=_number(nfe),
        sample_gflops=_number(compute.get("sample_flops_per_image"), 1e9),
        sampling_img_per_s=_number(record.get("sampling_img_per_s")),
        train_time_s=_number(training.get("train_time_s")), images_seen=_number(training.get("images_seen")),
        train_pflops=_number(compute.get("train_flops"), 1e15), mfu=_number(compute.get("mfu")),
        params=_number(training.get("parameters")))
    values.update(total_cost(_number(compute.get("train_flops")), _number(compute.get("sample_flops_per_image")),
                             values["train_time_s"], values["sampling_img_per_s"]))
    scalars = run_scalars(path)  # tb/, or an archived run's scalars.csv
    step = record.get("checkpoint_step", record.get("step"))
    curve = fid_during_training(scalars, step)
    curve_s, curve_flops = training_axes([p.step for p in curve], scalars, step, values["train_time_s"],
                                         compute.get("train_flops_per_image"), cfg.get("trainer", {}).get("batch_size"))
    return Run(path, choices.get("model") or overrides.get("model") or target.rsplit(".", 1)[-1].lower(),
               family_of(target), int(cfg.get("seed", 0)), overrides, headline, record, len(records) - 1,
               protocol_of(record), str(sampler or "—"), values, nll_bound,
               scalars, curve, curve_s, curve_flops, machine_text(training.get("machine") or record.get("machine")), hydra["job"]["num"],
               sampler_points(records, record), cfg)


def machine_text(machine: dict | None) -> str:
    """A training machine record (genbench.runtime.machine_record) in a few words: "AMD EPYC 7B13, 1 of 2 CPU
    threads", "NVIDIA H200"; "—" for a record older than machines in records."""
    if not machine:
        return "—"
    if machine.get("device") == "cuda":
        return str(machine.get("device_name"))
    return f"{machine.get('cpu_model')}, {machine.get('torch_threads')} of {machine.get('cpu_count')} CPU threads"


def total_cost(train_flops: float, sample_flops_per_image: float, train_s: float, img_per_s: float,
               images: int = COST_IMAGES) -> dict[str, float]:
    """Training plus generating `images` images: {"total_pflops": (train_flops + images x sample_flops_per_image)
    / 1e15, "total_s": train_s + images / img_per_s}; nan where a part is unknown (nan)."""
    seconds = train_s + images / img_per_s if img_per_s > 0 else math.nan
    return {"total_pflops": (train_flops + images * sample_flops_per_image) / 1e15, "total_s": seconds}


def training_axes(steps: list[int], scalars: Scalars, final_step: int | None, train_time_s: float,
                  flops_per_image: float | None, batch_size: int | None) -> tuple[list[float], list[float] | None]:
    """Training seconds and training FLOPs at `steps`, from what the Trainer logged per step
    (perf/train_time_s, perf/train_flops, perf/images_seen; contract 4). An older run logged none of them:
    its seconds are spread evenly over its steps (train_time_s / final step), and its FLOPs are
    images seen (step x batch size) x FLOPs per training image, when the record knows that."""
    seconds = value_at(scalars, "perf/train_time_s", steps)
    if seconds is None:
        pace = train_time_s / final_step if final_step else math.nan
        seconds = [s * pace for s in steps]
    flops = value_at(scalars, "perf/train_flops", steps)
    if flops is None and flops_per_image:
        images = value_at(scalars, "perf/images_seen", steps)
        if images is None and batch_size:
            images = [s * batch_size for s in steps]
        flops = None if images is None else [i * flops_per_image for i in images]
    return [float(s) for s in seconds], None if flops is None else [float(f) for f in flops]


def read_runs(dirs: list[Path]) -> tuple[list[Run], list[Path], list[str]]:
    """(runs read, folders that could not be, a message for each of those)."""
    runs, failed, problems = [], [], []
    for d in dirs:
        try:
            runs.append(read_run(d))
        except RunError as e:
            problems.append(str(e))
            failed.append(d)
        except Exception as e:  # a damaged file: name it and go on with the other runs
            problems.append(f"{d}: cannot be read: {type(e).__name__}: {e}")
            failed.append(d)
    return runs, failed, problems


def failures_by_family(failed: list[Path]) -> dict[str, int]:
    """Runs that could not be compared, per family (from their .hydra/config.yaml)."""
    counts: dict[str, int] = {}
    for path in failed:
        try:
            family = family_of(yaml.safe_load((path / ".hydra" / "config.yaml").read_text())["model"]["_target_"])
        except Exception:  # a config that cannot be read names no family; the run is already reported
            continue
        counts[family] = counts.get(family, 0) + 1
    return counts


# ---- checks ---------------------------------------------------------------------------------------------
def suspect(run: Run) -> list[str]:
    """What in a run's own files disagrees with its headline record."""
    out = []
    step = run.record.get("checkpoint_step", run.record.get("step"))
    trained = max((p.step for tag, pts in run.scalars.items() if tag.startswith("train/") for p in pts), default=None)
    if step is not None and trained is not None and trained > step:
        out.append(f"{run.path}: {METRICS_FILE} scores step {step} but tb/ logged training up to step {trained}; "
                   f"re-score it with `genbench eval run_dir={run.path}`")
    if run.other_records:  # the HParams view shows the latest evaluation, which need not be the headline
        return out
    expected = {f"eval/{k}": v for k, v in run.record["metrics"].items()}
    expected.update({f"eval/bpd_{k}": v["mean"] for k, v in (run.record.get("bits_per_dim") or {}).items()})
    for tag, value in expected.items():
        at = {p.step: p.value for p in run.scalars.get(tag, [])}
        shown = at.get(step, next(reversed(at.values()), None)) if at else None
        if shown is None:
            out.append(f"{run.path}: tb/ has no {tag}; the HParams view lacks it "
                       f"(re-run `genbench eval run_dir={run.path}`)")
        elif not math.isclose(shown, value, rel_tol=1e-5, abs_tol=1e-6):  # tb stores float32
            out.append(f"{run.path}: tb/ shows {tag}={shown:.6g} but {METRICS_FILE} has {value:.6g}")
    return out


# ---- variants -------------------------------------------------------------------------------------------
def labels(n: int) -> list[str]:
    """A, B, ..., Z, AA, AB, ...: short names for plots."""
    letters = string.ascii_uppercase
    out, width = [], 1
    while len(out) < n:
        out += ["".join(p) for p in itertools.product(letters, repeat=width)]
        width += 1
    return out[:n]


def follows_model(key: str, runs: list[Run]) -> bool:
    """Does `key` take one value per model choice, different between models (a paced time budget's
    trainer.max_flops)? Then it is a setting of the model, which the name already says, not a variant."""
    per_model: dict[str, set] = {}
    for r in runs:
        per_model.setdefault(r.model, set()).add(r.overrides.get(key))
    return len(per_model) > 1 and all(len(values) == 1 for values in per_model.values())


def group_variants(runs: list[Run]) -> tuple[list[Variant], list[str]]:
    """The variants, in the order their first run came, and a warning for each seed seen twice in one."""
    keys = sorted({k for r in runs for k in r.overrides} - PLUMBING)
    differing = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1 and not k.startswith("hydra")
                 and not follows_model(k, runs)]
    base = {id(r): " ".join([r.model] + [f"{k}={r.overrides[k]}" for k in differing if k in r.overrides]) for r in runs}
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        nfe = "—" if math.isnan(r.values["nfe"]) else f"{r.values['nfe']:g}"
        groups.setdefault((base[id(r)], r.protocol["id"], r.sampler, nfe), []).append(r)
    variants, problems = [], []
    for label, ((name, protocol_id, sampler, nfe), members) in zip(labels(len(groups)), groups.items()):
        same_name = [k for k in groups if k[0] == name]
        if len({k[2:] for k in same_name}) > 1:
            name += f" {sampler} NFE {nfe}"
        if len({k[1] for k in same_name}) > 1:
            name += f" [protocol {protocol_id}]"
        v = Variant(label, name, members[0].family, members[0].protocol, sampler, members)
        v.stats = {k: stat([r.values[k] for r in members]) for k in COLUMNS}
        seeds = v.seeds
        problems += [f"variant {label} ({name}) has seed {s} {seeds.count(s)} times "
                     f"({', '.join(str(r.path) for r in members if r.seed == s)}): averaged as separate runs"
                     for s in sorted(set(seeds)) if seeds.count(s) > 1]
        variants.append(v)
    return variants, problems


def main_protocol(variants: list[Variant]) -> str:
    """The protocol id most runs were scored under (the first one met on a tie): the verdicts use it alone."""
    count: dict[str, int] = {}
    for v in variants:
        count[v.protocol["id"]] = count.get(v.protocol["id"], 0) + len(v.runs)
    return max(count, key=count.get)


def flat(settings: dict, prefix: str = "") -> dict:
    """{"reference": {"num": 10000}} -> {"reference.num": 10000}"""
    out = {}
    for k, v in settings.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def protocol_differences(protocols: list[dict]) -> dict[str, list]:
    """{setting: [its value under each protocol]} for the settings that differ between protocols."""
    flats = [flat(p) for p in protocols]
    keys = sorted({k for p in flats for k in p} - {"id"})
    return {k: [p.get(k) for p in flats] for k in keys if len({json.dumps(p.get(k), default=str) for p in flats}) > 1}
