"""FID against NFE: the records a run holds besides its headline, made by re-scoring the same weights with
other samplers and step counts (issue 12: "Diffusion's FID against NFE for the trained runs"):

    genbench eval run_dir=R sampler=ddim sampler.steps=K eval.num_samples=1000 eval.likelihood_images=0

1. From each run, every record of its metrics.json (the headline included) made from the headline's weights:
   same checkpoint step, same ema/raw choice, samples drawn by the run itself (not an external folder),
   with a sampler, an NFE and a finite FID. Two records of one run at one point (e.g. two noise seeds) are
   averaged into that run's value.
2. A line is one (variant, protocol id, sampler): FIDs under two protocols are never on one line (FID is
   biased upwards at fewer samples). A sampler is its class name plus its settings other than its steps
   (eta, spacing, variance, shift), named only where two records of one sampler differ in them.
3. Each point is the mean ± std over the variant's runs (seeds) that have it; `seeds` lists them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from genbench.records import same_weights
from genbench.report.stats import Stat, stat

if TYPE_CHECKING:
    from genbench.report.runs import Variant

STEP_KEYS = ("sampler_steps",)  # a sampler's settings that set its NFE: the x axis, not part of a line's name


@dataclass(frozen=True)
class NfePoint:
    """One record of one run: its FID at one NFE of one sampler, under one protocol."""
    protocol: str                          # protocol id
    num_samples: int | None                # samples scored
    sampler: str                           # the sampler's class name
    settings: tuple[tuple[str, str], ...]  # its other settings (sampler_eta, ...), as text, sorted
    nfe: int
    fid: float


@dataclass(frozen=True)
class NfeRow:
    """One point of fid_vs_nfe.csv: a variant's FID at one (protocol, sampler, NFE), over its seeds."""
    label: str
    variant: str
    sampler: str       # the sampler's name, with its settings where they tell two lines apart
    protocol: str
    num_samples: int | None
    nfe: int
    fid: Stat
    seeds: tuple[int, ...]


def sampler_points(records: dict[str, dict], headline: dict) -> list[NfePoint]:
    """Step 1 for one run: its records made from the headline's weights (see the module docstring)."""
    out = []
    for r in records.values():
        sampler = r.get("sampler") if r.get("sampler") is not None else (r.get("sampling") or {}).get("sampler")
        nfe = r.get("nfe") if r.get("nfe") is not None else (r.get("sampling") or {}).get("nfe")
        fid = (r.get("metrics") or {}).get("fid")
        if (not same_weights(r, headline) or not sampler or nfe is None
                or fid is None or not math.isfinite(fid) or not r.get("protocol")):
            continue
        settings = tuple(sorted((k, str(v)) for k, v in (r.get("sampling") or {}).items()
                                if k.startswith("sampler_") and k not in STEP_KEYS))
        out.append(NfePoint(r["protocol"]["id"], r["protocol"].get("num_samples", r.get("num_generated")),
                            str(sampler), settings, int(nfe), float(fid)))
    return out


def sampler_names(points: list[NfePoint]) -> dict[tuple, str]:
    """(sampler, settings) -> its name: the class name, plus `key=value` for each setting whose value
    differs among the points of that class (sampler_ dropped), so DDIM eta=0.0 and DDIM eta=1.0 stay apart.
    A setting a record does not state (an older record) is no difference."""
    names = {}
    for sampler in {p.sampler for p in points}:
        variants = {p.settings for p in points if p.sampler == sampler}
        keys = sorted({k for s in variants for k, _ in s})
        differ = [k for k in keys if len({dict(s)[k] for s in variants if k in dict(s)}) > 1]
        for s in variants:
            names[(sampler, s)] = " ".join([sampler] + [f"{k.removeprefix('sampler_')}={dict(s)[k]}" for k in differ
                                                        if k in dict(s)])
    return names


def nfe_table(variants: list[Variant]) -> list[NfeRow]:
    """Steps 2-3: every variant's points, by variant, protocol, sampler and NFE."""
    names = sampler_names([p for v in variants for r in v.runs for p in r.nfe_points])
    rows = []
    for v in variants:
        per_run: dict[tuple, dict[int, list[float]]] = {}  # point -> run index -> its FIDs there
        for i, r in enumerate(v.runs):
            for p in r.nfe_points:
                key = (p.protocol, p.num_samples, names[(p.sampler, p.settings)], p.nfe)
                per_run.setdefault(key, {}).setdefault(i, []).append(p.fid)
        for (protocol, num, sampler, nfe), by_run in sorted(per_run.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][3])):
            fids = [sum(f) / len(f) for f in by_run.values()]  # one value per run: its records at this point averaged
            rows.append(NfeRow(v.label, v.name, sampler, protocol, num, nfe, stat(fids),
                               tuple(v.runs[i].seed for i in by_run)))
    return rows


def plotted(rows: list[NfeRow]) -> list[NfeRow]:
    """The rows of variants with points at two or more NFE (of any sampler and protocol): fid_vs_nfe.png's."""
    nfes: dict[str, set[int]] = {}
    for r in rows:
        nfes.setdefault(r.label, set()).add(r.nfe)
    return [r for r in rows if len(nfes[r.label]) >= 2]
