"""compare.csv (one row per variant), compare_runs.csv (one row per run), crossings.csv (where the
FID-against-compute curves cross), fid_vs_nfe.csv (FID against NFE) and compare.md."""

from __future__ import annotations

import csv
import datetime
import io
import math
from pathlib import Path

from genbench.atomic import atomic_write
from genbench.report import crossings
from genbench.report.nfe import NfeRow, plotted
from genbench.report.plots import PLOTS
from genbench.report.runs import COLUMNS, COST_IMAGES, METRICS_FILE, Run, Variant, flat, protocol_differences
from genbench.report.stats import pm
from genbench.report.verdicts import RULES


def write_text(path: Path, text: str) -> None:
    """Atomically: a compare killed mid-write leaves the previous file, never half of one."""
    atomic_write(path, lambda f: f.write(text.encode()))


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO(newline="")
    w = csv.writer(buffer)
    w.writerow(header)
    w.writerows(rows)
    write_text(path, buffer.getvalue())


def write_csvs(variants: list[Variant], out: Path, pairs: list[crossings.Pair] = (), nfe_rows: list[NfeRow] = ()) -> None:
    write_csv(out / "compare.csv",
              ["label", "variant", "family", "protocol", "sampler", "runs", "seeds",
               *(f"{k}_{s}" for k in COLUMNS for s in ("mean", "std", "n"))],
              [[v.label, v.name, v.family, v.protocol["id"], v.sampler, len(v.runs), " ".join(map(str, v.seeds)),
                *(x for k in COLUMNS for x in (v.stats[k].mean, v.stats[k].std, v.stats[k].n))] for v in variants])
    write_csv(out / "compare_runs.csv",
              ["label", "variant", "family", "seed", "protocol", "record", "sampler", "run_dir", "machine", "nll_bound",
               *COLUMNS],
              [[v.label, v.name, r.family, r.seed, r.protocol["id"], r.headline, r.sampler, str(r.path), r.machine,
                r.nll_bound or "", *(r.values[k] for k in COLUMNS)] for v in variants for r in v.runs])
    write_csv(out / "crossings.csv", crossings.CSV_HEADER, crossings.csv_rows(list(pairs)))
    write_csv(out / "fid_vs_nfe.csv",
              ["label", "variant", "sampler", "nfe", "protocol", "num_samples", "fid_mean", "fid_std", "seeds"],
              [[r.label, r.variant, r.sampler, r.nfe, r.protocol, r.num_samples, r.fid.mean, r.fid.std,
                " ".join(map(str, r.seeds))] for r in nfe_rows])


def fmt(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:.4g}"


def protocol_section(variants: list[Variant], main: str) -> list[str]:
    protocols = list({v.protocol["id"]: v.protocol for v in variants}.values())
    settings = lambda p: ", ".join(f"{k}={v}" for k, v in flat(p).items() if k != "id")  # noqa: E731
    if len(protocols) == 1:
        return [f"Protocol, the same for every run: `{main}` ({settings(protocols[0])}). FID is biased upwards at small "
                "sample counts: compare it only under one protocol.", ""]
    diff = protocol_differences(protocols)
    return [f"**The runs were scored under {len(protocols)} different protocols, so their numbers are not "
            "comparable across them.** Runs of different protocols are never averaged into one row: each variant "
            "holds the runs of one protocol (its name ends in [protocol ID] where a name has several). "
            f"The verdicts use protocol `{main}`, the one most runs were scored under.", "",
            "| protocol | variants | " + " | ".join(diff) + " |", "|---|---|" + "---|" * len(diff),
            *(f"| `{p['id']}` | {', '.join(v.label for v in variants if v.protocol['id'] == p['id'])} | "
              + " | ".join(str(values[i]) for values in diff.values()) + " |" for i, p in enumerate(protocols)), ""]


def crossings_section(pairs: list[crossings.Pair], variants: list[Variant], main: str) -> list[str]:
    lines = ["## Where the curves cross", ""]
    if not pairs:
        lines += [f"No two variants of protocol `{main}` both have a FID curve against training compute.", ""]
    for axis in ("flops", "seconds"):
        lines += [f"- {crossings.sentence(p)}" for p in pairs if p.axis == axis]
        lines += [f"- {v.name} ({v.label}) has no curve against {crossings.UNITS[axis]}: no run recorded them, or its "
                  "seeds were measured over no common range (e.g. no evaluation during training)"
                  for v in crossings.without_curve([v for v in variants if v.protocol["id"] == main], axis)]
    if not pairs:
        return lines + [""]
    return lines + ["", f"From each variant's FID against {crossings.UNITS['flops']} and against {crossings.UNITS['seconds']} "
                    "(the curves of fid_vs_train_flops.png and fid_vs_train_time.png: the evaluations during training "
                    "plus the full protocol at the end, protocol `" + main + "` only). Seeds are averaged at common "
                    "points (each seed interpolated linearly in log10 x inside the range every seed covers); a "
                    "crossing is where the difference of two variants' mean curves, linear in log10 x between "
                    "neighbouring points, changes sign. Lower FID is ahead. A crossing of means inside the seeds' "
                    "spread is not a resolved one, and the last stretch of each curve joins a small-protocol FID to "
                    "the full protocol's. Every crossing: crossings.csv.", ""]


def nfe_section(rows: list[NfeRow]) -> list[str]:
    lines = ["## FID against NFE", ""]
    shown = plotted(rows)
    if not shown:
        return lines + ["No variant has records at two or more NFE. Re-score a run's weights with other samplers and "
                        "step counts, e.g. `genbench eval run_dir=RUN sampler=ddim sampler.steps=10 eval.num_samples=1000 "
                        "eval.likelihood_images=0`, and compare again.", ""]
    lines += ["| label | sampler | protocol | samples | NFE | FID ↓ | seeds |", "|---|---|---|---:|---:|---:|---|",
              *(f"| {r.label} | {r.sampler} | `{r.protocol}` | {r.num_samples or '—'} | {r.nfe} | {r.fid} | "
                f"{', '.join(map(str, r.seeds))} |" for r in shown), "",
              "Every record of each run made from its headline's weights (same checkpoint step and ema), re-sampled "
              "with other samplers and NFE (`genbench eval run_dir=RUN sampler=... sampler.steps=K`). A line of "
              "fid_vs_nfe.png is one variant, sampler and protocol: FIDs of different protocols (sample counts) are "
              "never joined. Each FID: mean ± std over the seeds listed. All points, variants with one NFE "
              "included: fid_vs_nfe.csv.", ""]
    return lines


def markdown(variants: list[Variant], verdicts: list[str], main: str, problems: list[str], command: str,
             plots: list[str], pairs: list[crossings.Pair] = (), nfe_rows: list[NfeRow] = (), pace: dict | None = None) -> str:
    runs: list[Run] = [r for v in variants for r in v.runs]
    bounds = sorted({f"{r.family}: {r.nll_bound}" for r in runs if r.nll_bound})
    lines = [
        "# genbench compare", "",
        f"`{command}`: {len(runs)} runs in {len(variants)} variants, "
        f"{datetime.datetime.now().astimezone().isoformat(timespec='minutes')}.", "",
        "## Variants", "",
        "| label | variant | family | seeds | runs |", "|---|---|---|---|---|",
        *(f"| {v.label} | {v.name} | {v.family} | {', '.join(map(str, v.seeds))} | "
          f"{'<br>'.join(str(r.path) for r in v.runs)} |" for v in variants), "",
        "## Results", "",
        "| label | runs | sampler | " + " | ".join(COLUMNS.values()) + " |",
        "|---|---:|---|" + "---:|" * len(COLUMNS),
        *(f"| {v.label} | {len(v.runs)} | {v.sampler} | " + " | ".join(str(v.stats[k]) for k in COLUMNS) + " |"
          for v in variants), "",
        "Each cell: mean ± sample standard deviation (ddof=1) over the variant's seeds, from each run's headline "
        f"record in {METRICS_FILE}. NLL: the tightest bits/dim bound each family reports on held-out images "
        f"({', '.join(bounds) or 'none'}); — where a family has none (GANs) or a record lacks a number. Memorised: the "
        "fraction of samples nearer their nearest training image than almost every held-out test image is "
        "(genbench.memorisation states the quantile; samples as new as test images score about that quantile). Sampler and "
        "NFE: what made the scored samples (network evaluations per image). Sampling GFLOPs/image: FLOPs of "
        "generating one image at that NFE; sampling img/s: measured while generating the scored samples. Training s: "
        "the Trainer's training time; training PFLOPs: FLOPs of every training step (all loss terms, forward and "
        "backward); MFU: achieved training FLOP/s over the machine's measured peak. Parameters: every trained "
        "network (a GAN's discriminator included). Total PFLOPs and total s: the cost of training plus generating "
        f"{COST_IMAGES:,} images (training FLOPs + {COST_IMAGES:,} x sampling FLOPs/image; training seconds + "
        f"{COST_IMAGES:,} / sampling img/s, on the machine each run was measured on).", "",
        *([f"**Timed at a pace** (`--pace`, {pace['about']}): every training second here (the table, the curves "
           "against time and their crossings) is the run's training FLOPs / its family's training FLOP/s measured "
           "there with the machine to itself, not the run's own clock; sampling img/s are as measured.", ""]
          if pace else []),
        *protocol_section(variants, main),
        "## Verdicts", "", *(f"- {v}" for v in verdicts), "", RULES, "",
        *crossings_section(list(pairs), variants, main),
        *nfe_section(list(nfe_rows)),
    ]
    if plots:
        lines += ["## Plots", "", "The plots name variants by their labels (the key is under each figure).", "",
                  *(f"![{PLOTS[p]}]({p})" for p in plots), ""]
        if "memorisation.png" in plots:
            lines += ["memorisation.png: each variant's lowest-seed run's memorisation panel (its headline evaluation's "
                      "RUN/eval/memorisation.png), titled with that run's memorised fraction and the variant's over seeds.", ""]
    lines += ["## Runs", "",
              "| label | seed | sampler | NFE | FID | precision | recall | training s | training PFLOPs | MFU "
              f"| total PFLOPs ({COST_IMAGES:,} images) | total s ({COST_IMAGES:,} images) | images seen | trained on | record | run |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
              *(f"| {v.label} | {r.seed} | {r.sampler} | {fmt(r.values['nfe'])} | {fmt(r.values['fid'])} | "
                f"{fmt(r.values['precision'])} | {fmt(r.values['recall'])} | {fmt(r.values['train_time_s'])} | "
                f"{fmt(r.values['train_pflops'])} | {fmt(r.values['mfu'])} | {fmt(r.values['total_pflops'])} | "
                f"{fmt(r.values['total_s'])} | {pm(r.values['images_seen'], math.nan)} | {r.machine} | "
                f"{r.headline}{f' (+{r.other_records} more)' if r.other_records else ''} | {r.path} |"
                for v in variants for r in v.runs), "",
              f"Each run's numbers are those of the headline record of its {METRICS_FILE} (`record`; a re-evaluation "
              "adds records beside it). Trained on: the machine of its training seconds (the last one, for a run resumed "
              "elsewhere); times of different machines are not comparable. Where a run holds one record, compare checks that the eval/* scalars TensorBoard's "
              "HParams view shows for it (`tensorboard --logdir` on the sweep folder) agree with it.", ""]
    if problems:
        lines += ["## Skipped or suspect", "", *(f"- {p}" for p in problems), ""]
    return "\n".join(lines)
