"""`genbench compare SWEEP_DIR|RUN_DIR...`: one table, four plots and three verdicts from finished runs.

1. Find the runs. A folder holding .hydra/config.yaml is a run; any other folder is searched for runs
   (a sweep). A sweep's multirun.yaml says which jobs it launched, so a job without a folder is named.
2. Read each run: metrics.json (the protocol record `genbench eval` writes), the checkpoint (training
   time, images seen, parameters), .hydra/ (variant and seed) and tb/ (eval/fid during training). A run
   that cannot be read is skipped, and compare.md says why.
3. Group the runs into variants: the model choice plus the overrides that differ between runs, seed aside.
   Every number becomes mean ± sample standard deviation (ddof=1) over the variant's seeds.
4. Check each run's numbers against the eval/* scalars in its tb/, which TensorBoard's HParams view shows.
5. Write compare.csv (one row per variant), compare_runs.csv (one row per run), the PNG plots and
   compare.md: the table, a verdict on each claim of the trilemma (Xiao et al. 2022, arXiv:2112.07804),
   the plots and the skipped runs.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from genbench.checkpoint import load_model
from genbench.evaluate import METRICS_FILE
from genbench.trainer import resolve_device

# The columns, in table order: key -> compare.md header. ↓ / ↑: lower / higher is better.
COLUMNS = {
    "fid": "FID ↓", "is_mean": "IS ↑", "kid_mean": "KID ↓", "precision": "precision ↑", "recall": "recall ↑",
    "nll_bpd": "NLL bits/dim ↓", "sampling_img_per_s": "sampling img/s ↑", "nfe": "NFE",
    "train_time_s": "training s", "images_seen": "images seen", "params": "parameters",
}
PLUMBING = {"seed", "model", "threads", "trainer.progress", "eval.cache_dir"}  # overrides that do not make a variant
PLOTS = {"fid_vs_train_time.png": "FID against training time", "fid_vs_sampling_speed.png": "FID against sampling speed",
         "precision_recall.png": "precision against recall", "samples.png": "samples from fixed noise"}


class RunError(Exception):
    """A run that cannot be compared; the message says why and what to do."""


@dataclass
class Run:
    path: Path
    model: str                     # the model choice (conf/model/<model>.yaml)
    family: str                    # the module of its _target_ in genbench.models: gan, vae, diffusion
    seed: int
    overrides: dict[str, str]
    values: dict[str, float]       # COLUMNS -> number; nan where undefined (a GAN's NLL)
    nll_bound: str | None          # the bits/dim bound in values["nll_bpd"]
    protocol: tuple                # what an FID depends on besides the model: comparable only if equal
    record: dict                   # metrics.json
    tb: dict[str, list[tuple[int, float]]]  # the scalars of its tb/
    fid_curve: list[tuple[float, float]] = field(default_factory=list)  # (training s, eval/fid during training)
    variant: str = ""


# ---- 1. find the runs -----------------------------------------------------------------------
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


def missing_jobs(sweep: Path, runs: list[Path]) -> list[str]:
    """The jobs multirun.yaml launched (with Hydra's basic sweeper) that have no folder among `runs`."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not (sweep / "multirun.yaml").is_file():
        return []
    hydra_cfg = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]
    if not hydra_cfg["sweeper"]["_target_"].endswith("BasicSweeper"):
        return []
    params = [f"{k}={v}" for k, v in (hydra_cfg["sweeper"].get("params") or {}).items()]
    try:
        overrides = OverridesParser.create().parse_overrides(params + hydra_cfg["overrides"]["task"])
        jobs = BasicSweeper.split_arguments(overrides, None)[0]  # in launch order: job i is jobs[i]
    except Exception:  # a sweep the parser cannot expand without the configs (glob choices): no check
        return []
    done = {yaml.safe_load((r / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["num"] for r in runs
            if (r / ".hydra" / "hydra.yaml").is_file()}
    return [f"{sweep}: job {num} of {len(jobs)} ({' '.join(job)}) has no folder: it never started, or its "
            "folder was removed" for num, job in enumerate(jobs) if num not in done]


# ---- 2. read a run ----------------------------------------------------------------------
def read_run(path: Path) -> Run:
    """Everything compare needs from one run folder; RunError says what is missing."""
    hydra_file, overrides_file = path / ".hydra" / "hydra.yaml", path / ".hydra" / "overrides.yaml"
    runtime = yaml.safe_load(hydra_file.read_text())["hydra"].get("runtime", {}) if hydra_file.is_file() else {}
    choices = runtime.get("choices", {})
    overrides = dict(o.lstrip("+~").split("=", 1) for o in yaml.safe_load(overrides_file.read_text()) or [] if "=" in o) \
        if overrides_file.is_file() else {}
    if not (path / "checkpoints" / "last.pt").is_file():
        raise RunError(f"{path}: training did not finish (no checkpoints/last.pt); see {path / 'train.log'}")
    if not (path / METRICS_FILE).is_file():
        raise RunError(f"{path}: not evaluated (no {METRICS_FILE}): training failed or stopped before its final "
                       f"evaluation; see {path / 'train.log'}, or score it with `genbench eval run_dir={path}`")
    record = json.loads((path / METRICS_FILE).read_text())
    model, state = load_model(path)
    if state["step"] != record["checkpoint_step"]:
        raise RunError(f"{path}: {METRICS_FILE} scores step {record['checkpoint_step']} but the checkpoint is at step "
                       f"{state['step']}; re-score it with `genbench eval run_dir={path}`")
    cfg = state["config"]  # the resolved run config
    nll_bound, nll = tightest_bound(record["bits_per_dim"] or {})
    metrics = record["metrics"]
    values = {k: metrics.get(k, math.nan) for k in ("fid", "is_mean", "kid_mean", "precision", "recall")}
    values.update(nll_bpd=nll, sampling_img_per_s=_number(record["sampling_img_per_s"]), nfe=_number(record["nfe"]),
                  train_time_s=state["train_time"], images_seen=state["images_seen"],
                  params=sum(p.numel() for p in model.parameters()))
    protocol = (record["feature_extractor"]["name"], record["num_generated"], record["num_reference"],
                record["reference_dataset"], record["reference_split"])
    target = cfg["model"]["_target_"]  # genbench.models.<family>.<Class>
    run = Run(path, choices.get("model") or target.rsplit(".", 1)[-1].lower(), family_of(target), cfg["seed"],
              overrides, values, nll_bound, protocol, record, read_scalars(path / "tb"))
    run.fid_curve = fid_curve(run.tb, metrics.get("fid"), cfg["trainer"]["batch_size"])
    return run


def family_of(target: str) -> str:
    """genbench.models.gan.GAN -> gan: a family is a module of genbench.models."""
    return target.split(".")[-2]


def _number(x) -> float:
    return math.nan if x is None else float(x)


def tightest_bound(bits_per_dim: dict[str, dict]) -> tuple[str | None, float]:
    """The smallest bits/dim upper bound on the NLL among a family's bounds ("elbo", "iwae_k64", "vlb").
    Terms of a bound ("elbo_recon", "elbo_kl", named <bound>_<term>) are not bounds themselves."""
    bounds = {k: v["mean"] for k, v in bits_per_dim.items() if not any(k.startswith(f"{b}_") for b in bits_per_dim)}
    if not bounds:
        return None, math.nan
    name = min(bounds, key=bounds.get)
    return name, bounds[name]


def read_scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every scalar in a run's tb/, in the order they were written."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not tb_dir.is_dir():
        return {}
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "images": 1, "tensors": 1})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def fid_curve(scalars: dict[str, list[tuple[int, float]]], final_fid: float | None,
              batch_size: int) -> list[tuple[float, float]]:
    """(training seconds, eval/fid) of the evaluations during training. The seconds at a step add up the
    time of each logging window, (steps in it) x batch_size / perf/img_per_s, as the Trainer measured it."""
    fids = scalars.get("eval/fid", [])
    if fids and final_fid is not None and math.isclose(fids[-1][1], final_fid, rel_tol=1e-5):
        fids = fids[:-1]  # the last eval/fid is the final protocol, plotted on its own
    windows = scalars.get("perf/img_per_s", [])
    if not fids or not windows:
        return []
    steps = np.array([0] + [s for s, _ in windows], dtype=float)
    seconds = np.concatenate([[0.0], np.cumsum(np.diff(steps) * batch_size / np.array([v for _, v in windows]))])
    return [(float(np.interp(s, steps, seconds)), v) for s, v in fids]


def tensorboard_mismatches(run: Run) -> list[str]:
    """Where the last eval/* scalar in the run's tb/ (what the HParams view shows) differs from metrics.json."""
    expected = {f"eval/{k}": v for k, v in run.record["metrics"].items()}
    expected.update({f"eval/bpd_{k}": v["mean"] for k, v in (run.record["bits_per_dim"] or {}).items()})
    scalars, out = run.tb, []
    for key in ("sampling_img_per_s", "nfe"):  # checked where the run's eval logged them too
        if f"eval/{key}" in scalars and run.record.get(key) is not None:
            expected[f"eval/{key}"] = float(run.record[key])
    for tag, value in expected.items():
        if tag not in scalars:
            out.append(f"{run.path}: tb/ has no {tag}; the HParams view lacks it (re-run `genbench eval run_dir={run.path}`)")
        elif not math.isclose(scalars[tag][-1][1], value, rel_tol=1e-5, abs_tol=1e-6):  # tb stores float32
            out.append(f"{run.path}: tb/ shows {tag}={scalars[tag][-1][1]:.6g} but {METRICS_FILE} has {value:.6g}")
    return out


# ---- 3. variants and statistics -------------------------------------------------------------------------
def name_variants(runs: list[Run]) -> None:
    """variant = the model choice, then the overrides whose values differ between runs (seed and plumbing aside)."""
    keys = sorted({k for r in runs for k in r.overrides} - PLUMBING)
    differing = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1 and not k.startswith("hydra")]
    for r in runs:
        r.variant = " ".join([r.model] + [f"{k}={r.overrides[k]}" for k in differing if k in r.overrides])


@dataclass
class Stat:
    mean: float
    std: float  # sample std (ddof=1); nan with one value
    n: int      # runs with a finite value
    of: int     # runs in the variant
    lo: float   # the smallest and largest run
    hi: float

    def __str__(self) -> str:
        text = pm(self.mean, self.std)
        return text if self.n in (0, self.of) else f"{text} ({self.n}/{self.of} runs)"


def stat(values: list[float]) -> Stat:
    finite = np.array([v for v in values if math.isfinite(v)], dtype=float)
    mean = float(finite.mean()) if len(finite) else math.nan
    std = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
    if std <= 1e-12 * max(1.0, abs(mean)):  # equal values, up to rounding: 0.8 three times has std 1e-16
        std = 0.0
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (math.nan, math.nan)
    return Stat(mean, std, len(finite), len(values), lo, hi)


def pm(mean: float, std: float) -> str:
    """'45.2 ± 3.1': the std to two significant digits and the mean to the same decimal place."""
    if math.isnan(mean):
        return "—"
    if not math.isfinite(std) or std == 0:
        return f"{mean:,.0f}" if abs(mean) >= 1e4 or float(mean).is_integer() else f"{mean:.4g}"
    decimals = max(0, 1 - math.floor(math.log10(std)))
    return f"{mean:,.{decimals}f} ± {std:,.{decimals}f}"


def summarise(runs: list[Run]) -> dict[str, dict[str, Stat]]:
    """{variant: {column: Stat}}, variants in the order their first run came."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.variant, []).append(r)
    return {v: {k: stat([r.values[k] for r in rs]) for k in COLUMNS} for v, rs in groups.items()}


# ---- 5a. verdicts -------------------------------------------------------------------------------------
# Student's t, 97.5% quantiles (two-sided 5%) by degrees of freedom; a fractional Welch df takes the next lower row
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}


def difference(a: Stat, b: Stat) -> tuple[float, str]:
    """a - b, and whether it stands out of the spread over seeds: Welch's t-test (Welch 1947), two-sided at 5%,
    t = (mean_a - mean_b) / sqrt(s_a^2/n_a + s_b^2/n_b) on the Welch-Satterthwaite degrees of freedom."""
    delta = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        return delta, "one seed, no spread to judge it by"
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    if va + vb == 0:
        return delta, "clear, every seed gave the same value" if delta else "equal"
    t = delta / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    crit = T_975[max(k for k in T_975 if k <= max(df, 1))]
    how = "clear" if abs(t) > crit else "within the seed spread"
    return delta, f"{how} (Welch |t| = {abs(t):.3g} {'>' if abs(t) > crit else '<='} {crit:.3g} on {df:.2g} df)"


def judge(claim: str, a_name: str, a: Stat, b_name: str, b: Stat, lower_is_claimed: bool) -> tuple[str, str]:
    """('supports' | 'contradicts' | 'inconclusive', one sentence) on 'a is lower (or higher) than b'."""
    if math.isnan(a.mean) or math.isnan(b.mean):
        return "inconclusive", f"{claim}: no numbers."
    delta, how = difference(a, b)
    holds = delta < 0 if lower_is_claimed else delta > 0
    if how.startswith("clear"):
        verdict = "supports" if holds else "contradicts"
    else:
        verdict = "inconclusive"
        how += f"; the means go {'the claimed way' if holds else 'against the claim'}" if delta else ""
    return verdict, f"{claim}: {a_name} {a} vs {b_name} {b}; difference {delta:+.3g}, {how} → **{verdict}**."


def best_variant(summary: dict[str, dict[str, Stat]], families: dict[str, str], family: str) -> str | None:
    """The variant of `family` with the lowest mean FID (the family at its best), or None."""
    mine = [v for v in summary if families[v] == family]
    return min(mine, key=lambda v: (math.isnan(summary[v]["fid"].mean), summary[v]["fid"].mean)) if mine else None


def verdicts(summary: dict[str, dict[str, Stat]], families: dict[str, str], failures: dict[str, int]) -> list[str]:
    """A paragraph per claim, from the numbers alone; each names the variants it used."""
    gan, vae, dif = (best_variant(summary, families, f) for f in ("gan", "vae", "diffusion"))
    out = []
    # 1. GANs: better samples; VAEs: more diversity
    head = "**GAN quality vs VAE diversity** (GANs give sharper samples, VAEs cover more of the data)"
    if gan and vae:
        g, v = summary[gan], summary[vae]
        parts = [judge("FID (quality)", gan, g["fid"], vae, v["fid"], lower_is_claimed=True),
                 judge("precision (quality)", gan, g["precision"], vae, v["precision"], lower_is_claimed=False),
                 judge("recall (diversity)", vae, v["recall"], gan, g["recall"], lower_is_claimed=False)]
        out.append(f"{head}: {overall(p[0] for p in parts)}. " + " ".join(p[1] for p in parts))
    else:
        out.append(f"{head}: not tested, the runs compared hold no {'GAN' if not gan else 'VAE'}.")
    # 2. diffusion: good samples, costly sampling
    head = "**Diffusion sampling cost** (diffusion samples well but needs many network evaluations per image)"
    others = [x for x in (gan, vae) if x]
    if dif and others:
        d = summary[dif]
        fastest = max(others, key=lambda x: summary[x]["sampling_img_per_s"].mean)
        f = summary[fastest]
        speed_d, speed_f = d["sampling_img_per_s"], f["sampling_img_per_s"]
        # the cost is the NFE, exact; measured speeds carry the machine's load, so they must agree run by run
        slower_everywhere = speed_d.hi < speed_f.lo
        more_nfe = d["nfe"].mean > f["nfe"].mean
        cost = "supports" if more_nfe and slower_everywhere else "contradicts" if speed_d.mean >= speed_f.mean else "inconclusive"
        every = f", every {dif} run slower than every {fastest} run" if slower_everywhere else ", but the runs overlap"
        best_other = min(others, key=lambda x: summary[x]["fid"].mean)
        bought = judge("What the cost buys, FID", dif, d["fid"], best_other, summary[best_other]["fid"], lower_is_claimed=True)
        out.append(f"{head}: {overall([cost, bought[0]])}. Cost: {dif} needs {pm(d['nfe'].mean, math.nan)} network "
                   f"evaluations per image against {pm(f['nfe'].mean, math.nan)} for {fastest}, the fastest other family; "
                   f"measured {speed_d} vs {speed_f} images/s, {speed_f.mean / speed_d.mean:.3g}x slower{every} → "
                   f"**{cost}**. {bought[1]}")
    else:
        out.append(f"{head}: not tested, the runs compared hold no {'diffusion model' if not dif else 'GAN or VAE'}.")
    # 3. GANs: unstable across seeds
    head = "**GAN stability** (GAN training is less stable: results vary more across seeds)"
    cv = {x: summary[x]["fid"].std / summary[x]["fid"].mean for x in (gan, vae, dif) if x and summary[x]["fid"].n >= 2}
    if gan in cv and len(cv) > 1:
        most = max(cv, key=cv.get)
        seen = ", ".join(f"{x} {cv[x]:.1%} (FID {summary[x]['fid']})" for x in cv)
        failed = ", ".join(f"{failures.get(families[x], 0)} of {x}'s" for x in cv)
        n = min(summary[x]["fid"].n for x in cv)
        verdict = "supports" if most == gan else "contradicts"
        out.append(f"{head}: **{verdict}** (weakly). Relative std of FID over seeds (std / mean): {seen}; the largest is "
                   f"{most}'s. Failed runs: {failed}. With {n} seeds a standard deviation is itself uncertain by about "
                   f"{1 / math.sqrt(2 * (n - 1)):.0%} (its standard error, 1/sqrt(2(n-1)) for normal data), so only a "
                   "gap of several times means much.")
    else:
        out.append(f"{head}: not tested: it needs at least two seeds of a GAN and of another family.")
    return out


def overall(parts: Iterable[str]) -> str:
    """One word for a claim from the verdicts on its parts."""
    v = set(parts)
    if len(v) == 1:
        return {"supports": "**supported**", "contradicts": "**contradicted**"}.get(v.pop(), "**inconclusive**")
    if {"supports", "contradicts"} <= v:
        return "**mixed**"
    return "**partly supported**" if "supports" in v else "**partly contradicted**"


# ---- 5b. plots --------------------------------------------------------------------------------------
def plot_all(runs: list[Run], summary: dict[str, dict[str, Stat]], out: Path, grid_samples: int, grid_seed: int,
             device: torch.device) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {v: plt.cm.tab10(i % 10) for i, v in enumerate(summary)}
    # FID against training time: the evaluations during training (lines) and the final protocol (dots)
    fig, ax = plt.subplots(figsize=(6, 4))
    labelled = set()
    for r in runs:
        c = colors[r.variant]
        if r.fid_curve:
            ax.plot(*zip(*r.fid_curve), color=c, alpha=0.6, lw=1)
        ax.scatter(r.values["train_time_s"], r.values["fid"], color=c, s=30, zorder=3,
                   label=None if r.variant in labelled else r.variant)
        labelled.add(r.variant)
    _log_if_wide(ax, [r.values["fid"] for r in runs] + [f for r in runs for _, f in r.fid_curve])
    ax.set(xlabel="training time (s)", ylabel="FID", title="FID against training time\n"
           "lines: evaluations during training; dots: final protocol")
    _save(fig, ax, out / "fid_vs_train_time.png")
    # quality against sampling speed, and precision against recall: runs faded, variant mean ± std
    for name, (x, y), title in [("fid_vs_sampling_speed.png", ("sampling_img_per_s", "fid"), "FID against sampling speed"),
                                ("precision_recall.png", ("recall", "precision"), "precision against recall")]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for v, s in summary.items():
            mine = [r for r in runs if r.variant == v]
            ax.scatter([r.values[x] for r in mine], [r.values[y] for r in mine], color=colors[v], alpha=0.35, s=15)
            label = f"{v} (NFE {pm(s['nfe'].mean, math.nan)})" if x == "sampling_img_per_s" else v
            ax.errorbar(s[x].mean, s[y].mean, xerr=_nan0(s[x].std), yerr=_nan0(s[y].std), fmt="o", color=colors[v],
                        capsize=3, label=label)
        if x == "sampling_img_per_s":
            ax.set_xscale("log")
            _log_if_wide(ax, [r.values["fid"] for r in runs])
            ax.set(xlabel="sampling speed (images/s, log)", ylabel="FID")
        else:
            ax.set(xlabel="recall (diversity)", ylabel="precision (quality)", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.set_title(f"{title}\nmean ± std over seeds; faded: single runs")
        _save(fig, ax, out / name)
    if grid_samples:
        plot_samples(runs, summary, out / "samples.png", grid_samples, grid_seed, device)


def plot_samples(runs: list[Run], summary: dict, path: Path, n: int, seed: int, device: torch.device) -> None:
    """One panel per variant, side by side: n samples of its lowest-seed run (EMA weights), each family
    drawing its own noise from the same seeded generator."""
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    fig, axes = plt.subplots(1, len(summary), figsize=(2.6 * len(summary), 3), squeeze=False)
    for ax, v in zip(axes[0], summary):
        run = min((r for r in runs if r.variant == v), key=lambda r: r.seed)
        model, _ = load_model(run.path, device=device)
        with torch.no_grad():
            images = model.sample(n, generator=torch.Generator().manual_seed(seed)).float().cpu()
        grid = make_grid((images.clamp(-1, 1) + 1) / 2, nrow=math.ceil(math.sqrt(n)), padding=1, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(f"{v}\nseed {run.seed}, FID {run.values['fid']:.3g}", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"samples from fixed noise (torch.Generator seed {seed})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _nan0(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _log_if_wide(ax, values: list[float]) -> None:
    v = [x for x in values if math.isfinite(x) and x > 0]
    if v and max(v) / min(v) > 10:
        ax.set_yscale("log")


def _save(fig, ax, path: Path) -> None:
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- 5c. files -----------------------------------------------------------------------------------------
def write_csvs(runs: list[Run], summary: dict[str, dict[str, Stat]], families: dict[str, str], out: Path) -> None:
    with open(out / "compare.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "family", "runs", "seeds", *(f"{k}_{s}" for k in COLUMNS for s in ("mean", "std", "n"))])
        for v, stats in summary.items():
            seeds = " ".join(str(r.seed) for r in runs if r.variant == v)
            w.writerow([v, families[v], stats["fid"].of, seeds, *(x for k in COLUMNS for x in
                                                                  (stats[k].mean, stats[k].std, stats[k].n))])
    with open(out / "compare_runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "family", "seed", "run_dir", "nll_bound", *COLUMNS])
        for r in runs:
            w.writerow([r.variant, r.family, r.seed, str(r.path), r.nll_bound or "", *(r.values[k] for k in COLUMNS)])


def markdown(runs: list[Run], summary: dict[str, dict[str, Stat]], families: dict[str, str], problems: list[str],
             failed: list[Path], command: str, plots: list[str]) -> str:
    bounds = sorted({f"{r.family}: {r.nll_bound}" for r in runs if r.nll_bound})
    protocols = sorted({r.protocol for r in runs})
    lines = [
        "# genbench compare", "",
        f"`{command}`: {len(runs)} runs in {len(summary)} variants, "
        f"{datetime.datetime.now().astimezone().isoformat(timespec='minutes')}.", "",
        "| variant | runs | " + " | ".join(COLUMNS.values()) + " |",
        "|---|---:|" + "---:|" * len(COLUMNS),
        *(f"| {v} | {s['fid'].of} | " + " | ".join(str(s[k]) for k in COLUMNS) + " |" for v, s in summary.items()), "",
        "Each cell: mean ± sample standard deviation (ddof=1) over the variant's seeds "
        f"({'; '.join(f'{v}: ' + ', '.join(str(r.seed) for r in runs if r.variant == v) for v in summary)}). "
        "NLL: the tightest bits/dim bound each family reports on held-out images "
        f"({', '.join(bounds) or 'none'}); — where a family has none (GANs). Sampling speed: images/s while "
        "generating the scored samples; NFE: network evaluations per image. Training s: the Trainer's training time "
        "(trainer.max_time caps it); parameters: every trained network (a GAN's discriminator included).", "",
    ]
    if len(protocols) == 1:
        ext, n_gen, n_ref, data, split = protocols[0]
        lines += [f"Protocol, the same for every run: {n_gen} generated vs {n_ref} {data} {split} images, features of "
                  f"{ext}. FID is biased upwards at small sample counts: compare it only under one protocol.", ""]
    else:
        lines += ["**Warning: the runs were scored under different protocols, so their FIDs are not comparable:** "
                  + "; ".join(f"{p[1]} generated vs {p[2]} {p[3]} {p[4]} on {p[0]}" for p in protocols), ""]
    lines += ["## Verdicts", "", *(f"- {v}" for v in verdicts(summary, families, failures_by_family(failed))), "",
              "A difference is *clear* when Welch's t-test on the seeds finds it at the 5% level (two-sided); otherwise it "
              "is within the spread over seeds and that part is *inconclusive*. Few seeds make a test weak: with 2 "
              "per family only large gaps come out clear. Where a family has several variants, each claim uses "
              "its variant with the lowest FID.", ""]
    if plots:
        lines += ["## Plots", "", *(f"![{PLOTS[p]}]({p})" for p in plots), ""]
    lines += ["## Runs", "", "| variant | seed | FID | precision | recall | training s | images seen | run |",
              "|---|---:|---:|---:|---:|---:|---:|---|",
              *(f"| {r.variant} | {r.seed} | {r.values['fid']:.4g} | {r.values['precision']:.4g} | {r.values['recall']:.4g} "
                f"| {r.values['train_time_s']:.4g} | {r.values['images_seen']:.0f} | {r.path} |" for r in runs), "",
              "Each run's numbers are those of its metrics.json, the same as the eval/* scalars TensorBoard's "
              "HParams view shows for it (`tensorboard --logdir` on the sweep folder); compare checks that they agree.", ""]
    if problems:
        lines += ["## Skipped or suspect", "", *(f"- {p}" for p in problems), ""]
    return "\n".join(lines)


def failures_by_family(failed: list[Path]) -> dict[str, int]:
    """Runs that could not be read, per family (from their .hydra/config.yaml)."""
    counts: dict[str, int] = {}
    for path in failed:
        family = family_of(yaml.safe_load((path / ".hydra" / "config.yaml").read_text())["model"]["_target_"])
        counts[family] = counts.get(family, 0) + 1
    return counts


# ---- the command ----------------------------------------------------------------------------------
def compare(paths: list[str], out: Path, grid_samples: int = 16, grid_seed: int = 0, device: str = "cpu",
            command: str = "genbench compare") -> tuple[list[Run], list[str]]:
    """Steps 1-5 of the module docstring; returns the runs read and the problems met."""
    # 1. find the runs
    dirs, problems = find_runs(paths)
    # 2. read them
    runs, failed = [], []
    for d in dirs:
        try:
            runs.append(read_run(d))
        except RunError as e:
            problems.append(str(e))
            failed.append(d)
        except Exception as e:  # a damaged file: name it and go on with the other runs
            problems.append(f"{d}: cannot be read: {type(e).__name__}: {e}")
            failed.append(d)
    if not runs:
        raise RunError("no run could be compared:\n  " + "\n  ".join(problems or [f"no runs under {' '.join(paths)}"]))
    # 3. variants and statistics
    name_variants(runs)
    summary = summarise(runs)
    families = {r.variant: r.family for r in runs}
    # 4. the HParams view
    for r in runs:
        problems += tensorboard_mismatches(r)
    # 5. files
    out.mkdir(parents=True, exist_ok=True)
    write_csvs(runs, summary, families, out)
    plot_all(runs, summary, out, grid_samples, grid_seed, resolve_device(device))
    plots = [p for p in PLOTS if (out / p).is_file() and (p != "samples.png" or grid_samples)]
    (out / "compare.md").write_text(markdown(runs, summary, families, problems, failed, command, plots))
    return runs, problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="genbench compare", description="Compare finished runs: compare.md, compare.csv, compare_runs.csv and "
        "PNG plots, one row per model variant, each number mean ± std over seeds.")
    parser.add_argument("paths", nargs="+", help="sweep folders (multirun/<date>/<time>-<uid>) and/or run folders")
    parser.add_argument("-o", "--out", type=Path, help="output folder; default: the folder given, if one, else ./compare")
    parser.add_argument("--grid-samples", type=int, default=16, help="samples per variant in samples.png (0: no grid)")
    parser.add_argument("--grid-seed", type=int, default=0, help="seed of the fixed noise of samples.png")
    parser.add_argument("--device", default="cpu", help="where the sample grid is drawn: cpu, cuda, auto")
    args = parser.parse_args(argv)
    if args.grid_samples < 0:
        parser.error(f"--grid-samples={args.grid_samples} must be 0 or more")
    out = args.out or (Path(args.paths[0]) if len(args.paths) == 1 and Path(args.paths[0]).is_dir() else Path("compare"))
    command = "genbench compare " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        runs, problems = compare(args.paths, out, args.grid_samples, args.grid_seed, args.device, command)
    except RunError as e:
        print(f"genbench compare: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    for p in problems:
        print(f"genbench compare: warning: {p}", file=sys.stderr)
    print(f"wrote {out / 'compare.md'}, compare.csv, compare_runs.csv and plots: {len(runs)} runs, "
          f"{len({r.variant for r in runs})} variants, {len(problems)} warnings")
