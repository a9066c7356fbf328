"""Where the FID-against-training-compute curves cross (issue 12: "the budget below which one family wins
and above which another does"), against training FLOPs and against training seconds.

1. A run's curve: its FIDs during training (eval_during/fid, the small protocol) at the training FLOPs (or
   seconds) each was taken at, plus the full protocol's FID at the end of training, as fid_vs_train_flops.png
   draws it. Where the final point shares its x with a during-training one, the final (full-protocol) FID
   is kept. Points without a finite, positive x or a finite FID are dropped.
2. A variant's curve: each seed's curve (a seed without a single point is left out) linearly interpolated
   in log10 x onto the union of the seeds' x values inside the range every seed covers (none is
   extrapolated), then averaged. Seeds evaluated at the same steps (equal FLOPs per step) are averaged at
   their own points; seconds differ between seeds, hence the interpolation.
3. Two variants: both curves interpolated (linearly in log10 x) onto the union of their points inside the
   range both cover. Between two neighbouring points both are linear in log10 x, so their difference is
   too: where it has opposite signs at the two points, it changes sign at exactly one x between them,
       log10 x* = log10 x_i + (log10 x_{i+1} - log10 x_i) d_i / (d_i - d_{i+1}),   d = FID_a - FID_b.
   Where the curves meet at a point and then part the other way, that point is the crossing; where they
   touch and part the same way, nothing crosses. Lower FID is ahead.

Known oddities, stated rather than hidden: the curve's last segment joins a small-protocol FID to a
full-protocol one (FID is biased upwards at fewer samples), the same way for every variant; and a crossing
is a crossing of seed means: where the curves lie within their seeds' spread, it is not a resolved one.
The comparisons use the variants of the main protocol only.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from genbench.report.runs import Run, Variant

Axis = Literal["flops", "seconds"]
UNITS = {"flops": "training FLOPs", "seconds": "training seconds"}
Curve = tuple[np.ndarray, np.ndarray]  # (x ascending, FID)


@dataclass(frozen=True)
class Crossings:
    """Two curves over the range both cover: where they cross, and who is ahead (lower FID) in between."""
    lo: float                 # the range both curves cover
    hi: float
    at: tuple[float, ...]     # the x of each crossing, ascending
    ahead: tuple[str, ...]    # "a", "b" or "tie" on each of the len(at) + 1 stretches lo..at[0]..at[-1]..hi


def run_curve(run: Run, axis: Axis) -> Curve:
    """Step 1."""
    if axis == "flops":
        flops = (run.record.get("compute") or {}).get("train_flops")  # not train_pflops x 1e15, which rounds
        xs, end = run.curve_flops or [], run.values["train_pflops"] * 1e15 if flops is None else float(flops)
    else:
        xs, end = run.curve_s, run.values["train_time_s"]
    points = {x: p.value for x, p in zip(xs, run.fid_curve)} if xs else {}
    points[end] = run.values["fid"]  # the full protocol's FID replaces a during-training one at the same x
    points = {x: y for x, y in points.items() if math.isfinite(x) and x > 0 and math.isfinite(y)}
    x = np.array(sorted(points), dtype=float)
    return x, np.array([points[v] for v in x], dtype=float)


def interpolate(curve: Curve, x: np.ndarray) -> np.ndarray:
    """The curve at x, linear in log10 x between its points (x inside its range)."""
    return np.interp(np.log10(x), np.log10(curve[0]), curve[1])


def common_grid(curves: list[Curve]) -> np.ndarray:
    """The union of the curves' x inside the range every curve covers; empty when they do not overlap."""
    if not curves or any(len(c[0]) == 0 for c in curves):
        return np.array([])
    lo, hi = max(c[0][0] for c in curves), min(c[0][-1] for c in curves)
    grid = np.unique(np.concatenate([c[0] for c in curves]))
    return grid[(grid >= lo) & (grid <= hi)]


def mean_curve(curves: list[Curve]) -> Curve:
    """Step 2: the seeds' mean curve on their common grid."""
    grid = common_grid(curves)
    if len(grid) == 0:
        return grid, grid
    return grid, np.mean([interpolate(c, grid) for c in curves], axis=0)


def crossings(a: Curve, b: Curve) -> Crossings | None:
    """Step 3; None when the two curves share no x range."""
    grid = common_grid([a, b])
    if len(grid) == 0:
        return None
    g, d = np.log10(grid), interpolate(a, grid) - interpolate(b, grid)
    sign = np.sign(d)
    at, ahead = [], []
    current, met = 0.0, None  # the last nonzero sign; the first point of the latest run of zeros
    for i, s in enumerate(sign):
        if s == 0:
            met = i if met is None else met
            continue
        if current == 0:
            ahead.append(s)
        elif s != current:
            at.append(grid[met] if met is not None else
                      10 ** (g[i - 1] + (g[i] - g[i - 1]) * d[i - 1] / (d[i - 1] - d[i])))
            ahead.append(s)
        current, met = s, None
    name = {-1.0: "a", 1.0: "b"}
    return Crossings(float(grid[0]), float(grid[-1]), tuple(float(x) for x in at),
                     tuple(name[s] for s in ahead) or ("tie",))


@dataclass(frozen=True)
class Pair:
    axis: Axis
    a: Variant
    b: Variant
    result: Crossings | None       # None: the two curves share no range
    spans: tuple[tuple[float, float], tuple[float, float]] = ((math.nan, math.nan), (math.nan, math.nan))  # a's, b's


def variant_curves(variants: list[Variant], axis: Axis) -> dict[str, Curve]:
    """{label: the variant's mean curve (step 2)}; empty arrays where no run has a point on `axis` or its seeds
    share no range."""
    return {v.label: mean_curve([c for r in v.runs if len((c := run_curve(r, axis))[0])]) for v in variants}


def without_curve(variants: list[Variant], axis: Axis) -> list[Variant]:
    """The variants that have no mean curve on `axis`, so no pair."""
    curves = variant_curves(variants, axis)
    return [v for v in variants if not len(curves[v.label][0])]


def compare_curves(variants: list[Variant], axis: Axis) -> list[Pair]:
    """Every pair of variants that both have a curve on `axis`, in variant order."""
    curves = variant_curves(variants, axis)
    span = lambda v: (float(curves[v.label][0][0]), float(curves[v.label][0][-1]))  # noqa: E731
    return [Pair(axis, a, b, crossings(curves[a.label], curves[b.label]), (span(a), span(b)))
            for a, b in itertools.combinations(variants, 2) if len(curves[a.label][0]) and len(curves[b.label][0])]


def number(x: float) -> str:
    return f"{x:.3g}"


def sentence(pair: Pair) -> str:
    """'gan (A) is ahead below 4e+12 training FLOPs, vae (B) above' and the like."""
    c, unit = pair.result, UNITS[pair.axis]
    who = {"a": f"{pair.a.name} ({pair.a.label})", "b": f"{pair.b.name} ({pair.b.label})", "tie": "neither"}
    if c is None:
        (a0, a1), (b0, b1) = pair.spans
        return (f"{who['a']} and {who['b']} were measured over no common range of {unit} ({pair.a.label}: "
                f"{number(a0)} to {number(a1)}; {pair.b.label}: {number(b0)} to {number(b1)}): not compared")
    span = f"at {number(c.lo)}" if c.lo == c.hi else f"from {number(c.lo)} to {number(c.hi)}"
    if not c.at:
        if c.ahead == ("tie",):
            return f"{who['a']} and {who['b']} are level over the whole range measured, {span} {unit}"
        return f"{who[c.ahead[0]]} is ahead over the whole range measured, {span} {unit}"
    if len(c.at) == 1:
        return (f"{who[c.ahead[0]]} is ahead below {number(c.at[0])} {unit}, {who[c.ahead[1]]} above "
                f"(range measured: {number(c.lo)} to {number(c.hi)})")
    parts = [f"{who[c.ahead[0]]} is ahead below {number(c.at[0])}"]
    parts += [f"{who[c.ahead[i]]} from {number(c.at[i - 1])} to {number(c.at[i])}" for i in range(1, len(c.at))]
    parts.append(f"{who[c.ahead[-1]]} above {number(c.at[-1])} {unit}")
    return ", ".join(parts) + f" ({len(c.at)} crossings; range measured: {number(c.lo)} to {number(c.hi)})"


def csv_rows(pairs: list[Pair]) -> list[list]:
    """crossings.csv: one row per crossing (ahead below it, ahead above it), and one per pair that never crosses
    (crossing empty, the same variant on both sides); pairs measured over no common range have none."""
    label = lambda p, side: "tie" if side == "tie" else getattr(p, side).label  # noqa: E731
    rows = []
    for p in pairs:
        c = p.result
        if c is None:
            continue
        head = [p.axis, p.a.label, p.a.name, p.b.label, p.b.name, c.lo, c.hi]
        if not c.at:
            rows.append([*head, "", label(p, c.ahead[0]), label(p, c.ahead[0])])
        rows += [[*head, x, label(p, c.ahead[i]), label(p, c.ahead[i + 1])] for i, x in enumerate(c.at)]
    return rows


CSV_HEADER = ["axis", "a", "a_variant", "b", "b_variant", "measured_from", "measured_to", "crossing", "ahead_below",
              "ahead_above"]
