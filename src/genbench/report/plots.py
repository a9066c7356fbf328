"""The PNG figures of `genbench compare`. Variant names can be long (overrides, run folders), so the plots
name each variant by its short label (A, B, ...) and print the key under the figure; legends sit outside
the axes, layout is matplotlib's constrained layout, and files are saved with bbox_inches="tight" so that
no title, legend or key is cut off.

Each builder returns a matplotlib Figure (no pyplot state), which tests can draw and inspect.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from genbench.report.nfe import NfeRow, plotted
from genbench.report.runs import Variant
from genbench.report.stats import pm

PLOTS = {"fid_vs_train_time.png": "FID against training time", "fid_vs_train_flops.png": "FID against training FLOPs",
         "fid_vs_sampling_speed.png": "FID against sampling speed", "precision_recall.png": "precision against recall",
         "samples.png": "samples from fixed noise", "fid_vs_nfe.png": "FID against NFE",
         "memorisation.png": "closest samples beside their nearest training images"}
MEMORISATION_PANEL = Path("eval") / "memorisation.png"  # in a run: its headline evaluation's panel (genbench.protocol.EVAL_DIR)
LINESTYLES = ("-", "--", ":", "-.")
KEY_WIDTH = 110  # characters per line of the key under a figure
MARKERS = "os^Dv<>pXh"


def style(i: int) -> dict:
    """The color and marker of the i-th of a list: 10 colors, then the markers tell them apart."""
    import matplotlib

    return {"color": matplotlib.colormaps["tab10"](i % 10), "marker": MARKERS[(i // 10) % len(MARKERS)], "linestyle": "-"}


def variant_styles(variants: list[Variant]) -> dict[str, dict]:
    """{label: color, marker, line style}. Where the variants span two or more families, the color is the
    family's and the k-th variant of a family gets the k-th marker and line style (a budget-scaling compare:
    each family one color, its budgets told apart by marker); with one family, the color is the variant's."""
    families = list(dict.fromkeys(v.family for v in variants))
    if len(families) < 2:
        return {v.label: style(i) for i, v in enumerate(variants)}
    rank = {v.label: [w.label for w in variants if w.family == v.family].index(v.label) for v in variants}
    return {v.label: {"color": style(families.index(v.family))["color"], "marker": MARKERS[rank[v.label] % len(MARKERS)],
                      "linestyle": LINESTYLES[rank[v.label] % len(LINESTYLES)]} for v in variants}


def add_key(fig: Figure, variants: list[Variant]) -> None:
    """The key of the short labels, under the figure (outside it: savefig's tight bounding box takes it in)."""
    lines = []
    for v in variants:
        sampler = f", {v.sampler}" if v.sampler != "—" else ""
        text = f"{v.label}: {v.name}  ({len(v.runs)} run{'s' * (len(v.runs) > 1)}{sampler})"
        lines += textwrap.wrap(text, KEY_WIDTH, subsequent_indent=" " * (len(v.label) + 2), break_on_hyphens=False)
    fig.text(0.01, -0.01, "\n".join(lines), ha="left", va="top", fontsize=7, family="monospace")


def new_figure(width: float = 6.4, height: float = 4.0) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # PNG output, and a renderer tests can measure text with
    return fig


def finish(fig: Figure, ax, variants: list[Variant], title: str) -> Figure:
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside right upper", fontsize=8, title="variant", title_fontsize=8)
    add_key(fig, variants)
    return fig


def log_if_wide(ax, values: list[float], axis: Literal["x", "y"] = "y") -> None:
    v = [x for x in values if math.isfinite(x) and x > 0]
    if v and max(v) / min(v) > 10:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def fid_vs_training(variants: list[Variant], x: Literal["time", "flops"]) -> Figure | None:
    """FID of the evaluations during training (lines, eval_during/fid) and of the full protocol at the end
    (dots), against training seconds or training FLOPs. None for FLOPs when no run recorded them."""
    if x == "flops" and not any(r.curve_flops or math.isfinite(r.values["train_pflops"]) for v in variants for r in v.runs):
        return None
    fig = new_figure()
    ax = fig.add_subplot()
    fids, xs_all, styles = [], [], variant_styles(variants)
    for v in variants:
        s = styles[v.label]
        for j, r in enumerate(v.runs):
            xs = r.curve_s if x == "time" else r.curve_flops
            if r.fid_curve and xs:
                ax.plot(xs, [p.value for p in r.fid_curve], color=s["color"], ls=s["linestyle"], alpha=0.6, lw=1,
                        marker=".", ms=4)
            end = r.values["train_time_s"] if x == "time" else r.values["train_pflops"] * 1e15
            ax.scatter([end], [r.values["fid"]], color=s["color"], marker=s["marker"], s=30, zorder=3,
                       label=v.label if j == 0 else None)
            fids += [r.values["fid"], *(p.value for p in r.fid_curve)]
            xs_all += [end, *(xs if r.fid_curve else [])]
    log_if_wide(ax, fids)
    if x == "flops":
        ax.set_xscale("log")
    else:  # budgets a decade apart (a scaling compare) read as the FLOPs axis does
        log_if_wide(ax, xs_all, "x")
    time_label = "training time (s, log)" if ax.get_xscale() == "log" else "training time (s)"
    ax.set(xlabel=time_label if x == "time" else "training FLOPs (log)", ylabel="FID")
    return finish(fig, ax, variants, f"FID against training {'time' if x == 'time' else 'compute'}\n"
                  "lines: evaluations during training (small protocol)\nbig dots: the full protocol at the end")


def summary_scatter(variants: list[Variant], x: str, y: str) -> Figure:
    """Runs faded, each variant's mean ± std over seeds."""
    fig = new_figure()
    ax = fig.add_subplot()
    styles = variant_styles(variants)
    for v in variants:
        s = styles[v.label]
        ax.scatter([r.values[x] for r in v.runs], [r.values[y] for r in v.runs], color=s["color"], marker=s["marker"],
                   alpha=0.35, s=15)
        sx, sy = v.stats[x], v.stats[y]
        label = f"{v.label} (NFE {pm(v.stats['nfe'].mean, math.nan)})" if x == "sampling_img_per_s" else v.label
        ax.errorbar(sx.mean, sy.mean, xerr=np.nan_to_num(sx.std), yerr=np.nan_to_num(sy.std), fmt=s["marker"],
                    color=s["color"], capsize=3, label=label)
    if x == "sampling_img_per_s":
        ax.set_xscale("log")
        log_if_wide(ax, [r.values["fid"] for v in variants for r in v.runs])
        ax.set(xlabel="sampling speed (images/s, log)", ylabel="FID")
        title = "FID against sampling speed"
    else:
        ax.set(xlabel="recall (diversity)", ylabel="precision (quality)", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        title = "precision against recall"
    return finish(fig, ax, variants, f"{title}\nmean ± std over seeds; faded: single runs")


def rgb(path: Path) -> np.ndarray:
    """A PNG as a (H, W, 3) uint8 array."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def samples(variants: list[Variant], n: int, seed: int, device: torch.device) -> Figure:
    """One panel per variant: n samples of its lowest-seed run that can give them (EMA weights, its own sampler),
    each family drawing its own noise from the same seeded torch.Generator. A run without its checkpoint gives
    the grid archived with it (genbench.report.archive) when that grid has the same n and seed."""
    from genbench.report.archive import fixed_noise_grid, grid_png

    cols = min(len(variants), 6)
    rows = math.ceil(len(variants) / cols)
    fig = new_figure(2.2 * cols + 0.4, 2.5 * rows + 0.5)
    for i, v in enumerate(variants):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis("off")
        able = [r for r in v.runs if (r.path / "checkpoints" / "last.pt").is_file() or (r.path / grid_png(n, seed)).is_file()]
        run = min(able or v.runs, key=lambda r: r.seed)
        ax.set_title(f"{v.label}: seed {run.seed}, FID {run.values['fid']:.3g}", fontsize=8)
        if not (run.path / "checkpoints" / "last.pt").is_file():
            if (run.path / grid_png(n, seed)).is_file():
                ax.imshow(rgb(run.path / grid_png(n, seed)), interpolation="nearest")
            else:
                ax.text(0.5, 0.5, "no checkpoint", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            continue
        try:
            grid = fixed_noise_grid(run.path, n, seed, device)
        except (OSError, ValueError, RuntimeError) as e:  # a damaged checkpoint: say so in its panel
            ax.text(0.5, 0.5, textwrap.fill(f"cannot sample: {str(e).splitlines()[0][:160]}", 40), ha="center",
                    va="center", fontsize=6, transform=ax.transAxes)
            continue
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    fig.suptitle(f"samples from fixed noise (torch.Generator seed {seed})", fontsize=10)
    add_key(fig, variants)
    return fig


def fid_vs_nfe(variants: list[Variant], rows: list[NfeRow]) -> Figure | None:
    """FID against NFE (log x): one line per variant x sampler x protocol (never two protocols on a line;
    color: variant and sampler, line style: protocol, marker: variant), for the variants with points at two
    or more NFE (genbench.report.nfe); None when no variant has them."""
    rows = plotted(rows)
    if not rows:
        return None
    fig = new_figure()
    ax = fig.add_subplot()
    protocols = list(dict.fromkeys((r.protocol, r.num_samples) for r in rows))
    colors = list(dict.fromkeys((r.label, r.sampler) for r in rows))
    index = {v.label: i for i, v in enumerate(variants)}
    lines: dict[tuple, list[NfeRow]] = {}
    for r in rows:
        lines.setdefault((r.label, r.sampler, r.protocol), []).append(r)
    for (label, sampler, protocol), points in lines.items():
        points.sort(key=lambda r: r.nfe)
        ps = next(i for i, (pid, _) in enumerate(protocols) if pid == protocol)
        ax.errorbar([r.nfe for r in points], [r.fid.mean for r in points], yerr=[np.nan_to_num(r.fid.std) for r in points],
                    color=style(colors.index((label, sampler)))["color"], marker=MARKERS[index[label] % len(MARKERS)],
                    ls=LINESTYLES[ps % len(LINESTYLES)] if len(points) > 1 else "none", capsize=2,  # one point: no line
                    ms=4 if len(points) > 1 else 7, mfc=None if len(points) > 1 else "none", lw=1,
                    label=f"{label} {sampler}" + (f" [{protocol}]" if len(protocols) > 1 else ""))
    ax.set_xscale("log")
    ax.set_xticks(sorted({r.nfe for r in rows}), [str(n) for n in sorted({r.nfe for r in rows})])
    ax.xaxis.set_minor_locator(NullLocator())
    log_if_wide(ax, [r.fid.mean for r in rows])
    ax.set(xlabel="NFE (network evaluations per image, log)", ylabel="FID")
    shown = [v for v in variants if v.label in {r.label for r in rows}]
    scored = "\n".join(f"protocol {pid}: {n:,} samples" if n else f"protocol {pid}" for pid, n in protocols)  # one a line: the title stays narrow
    return finish(fig, ax, shown, f"FID against NFE, the same weights re-sampled\n{scored}\n"
                  "mean ± std over seeds; one line per protocol")


def memorisation_runs(variants: list[Variant]) -> tuple[dict[str, Path], list[str]]:
    """{variant label: the memorisation panel of its lowest-seed run} and a warning for each variant without one."""
    found, missing = {}, []
    for v in variants:
        run = min(v.runs, key=lambda r: r.seed)
        if (run.path / MEMORISATION_PANEL).is_file():
            found[v.label] = run.path / MEMORISATION_PANEL
        else:
            missing.append(f"variant {v.label} ({v.name}): {run.path / MEMORISATION_PANEL} does not exist (evaluated "
                           "with eval.memorisation.enabled=false or panel=0, or before panels were saved); left out of "
                           "memorisation.png")
    return found, missing


def memorisation(variants: list[Variant]) -> Figure | None:
    """Each variant's memorisation panel (its lowest-seed run's: the closest samples, each beside its nearest
    training image) side by side, titled with the variant's memorised fraction over seeds; None when no run
    has a panel."""
    found, _ = memorisation_runs(variants)
    shown = [v for v in variants if v.label in found]
    if not shown:
        return None
    images = {v.label: rgb(found[v.label]) for v in shown}
    aspect = max(a.shape[0] / a.shape[1] for a in images.values())
    cols = min(len(shown), 4)
    rows = math.ceil(len(shown) / cols)
    fig = new_figure(3.0 * cols + 0.4, (3.0 * aspect + 0.5) * rows + 0.6)
    for i, v in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        run = min(v.runs, key=lambda r: r.seed)
        ax.imshow(images[v.label], interpolation="nearest")
        ax.set_title(f"{v.label}: seed {run.seed}, memorised {pm(run.values['memorised'], math.nan)}\n"
                     f"over seeds {v.stats['memorised']}", fontsize=8)
        ax.axis("off")
    fig.suptitle("closest samples (left of each pair) beside their nearest training images", fontsize=10)
    add_key(fig, shown)
    return fig


def save(fig: Figure, path: Path) -> None:
    """The PNG, with everything drawn inside the figure or around it (the key), written atomically."""
    from genbench.atomic import atomic_write

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def plot_all(variants: list[Variant], out: Path, grid_samples: int, grid_seed: int, device: torch.device,
             nfe_rows: list[NfeRow] = ()) -> list[str]:
    """Write the figures into `out`; returns the file names written, in PLOTS order."""
    figures = {"fid_vs_train_time.png": fid_vs_training(variants, "time"),
               "fid_vs_train_flops.png": fid_vs_training(variants, "flops"),
               "fid_vs_sampling_speed.png": summary_scatter(variants, "sampling_img_per_s", "fid"),
               "precision_recall.png": summary_scatter(variants, "recall", "precision"),
               "samples.png": samples(variants, grid_samples, grid_seed, device) if grid_samples else None,
               "fid_vs_nfe.png": fid_vs_nfe(variants, list(nfe_rows)),
               "memorisation.png": memorisation(variants)}
    for name, fig in figures.items():
        if fig is not None:
            save(fig, out / name)
    return [name for name, fig in figures.items() if fig is not None]
