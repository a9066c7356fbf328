"""compare's figures stay readable with long variant names: nothing overlaps, the legend never covers the
axes, titles sit inside the figure, and matplotlib prints no layout warning."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import pytest
import torch
from matplotlib.colors import to_rgba

from genbench.report import plots
from genbench.report.runs import group_variants, read_run
from tests.report_fixtures import make_record, make_run, nfe_record, panel_pixels

LONG = "/home/someone/experiments/2026-11-25/a-rather-long-folder-name-for-a-run-compared-by-path"


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Eight variants whose names are long (overrides with paths), two seeds each; the diffusion runs re-scored
    with DDIM at NFE 10 and 50."""
    root = tmp_path_factory.mktemp("long")
    runs = []
    for i, family in enumerate(["gan", "vae", "diffusion", "gan", "vae", "diffusion", "gan", "vae"]):
        for seed in (0, 1):
            record = make_record(10.0 * (i + 1) + seed, precision=0.1 * (i % 8) + 0.05 * seed, recall=0.5,
                                 img_per_s=10.0 ** (i % 4), nfe=20 if family == "diffusion" else 1)
            extra = {f"ddim{n}": nfe_record(100.0 / n + i + seed, "DDIM", n) for n in (10, 50)} if family == "diffusion" else {}
            runs.append(read_run(make_run(root, f"{i}-{seed}", family, seed, record, curve={2: 90.0, 4: 50.0},
                                          overrides=[f"data.root={LONG}/{i}", f"model.network.base_channels={16 * (i + 1)}"],
                                          extra_records=extra)))
    found, _ = group_variants(runs)
    assert len(found) == 8 and all(len(v.name) > 100 for v in found)
    return found


def boxes(fig):
    """The window extents of the text a reader must be able to read, each legend as one box."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [lg for lg in fig.legends] + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    texts = list(fig.texts) + ([fig._suptitle] if fig._suptitle else [])
    for ax in fig.axes:
        texts += [ax.title, *ax.texts]
        if ax.axison:  # its axis labels and the tick labels drawn (matplotlib keeps undrawn ones outside the view)
            texts += [ax.xaxis.label, ax.yaxis.label]
            texts += [tick.label1 for axis in (ax.xaxis, ax.yaxis) for tick in axis._update_ticks()]
    texts = list({id(t): t for t in texts if t.get_visible() and t.get_text().strip()}.values())
    return ([(f"text {t.get_text()[:30]!r}", t.get_window_extent(renderer)) for t in texts]
            + [("legend", lg.get_window_extent(renderer)) for lg in legends]), legends, renderer


def overlaps(named) -> list[str]:
    out = []
    for (a, ba), (b, bb) in itertools.combinations(named, 2):
        if ba.width and bb.width and ba.shrunk(0.98, 0.98).overlaps(bb.shrunk(0.98, 0.98)):
            out.append(f"{a} overlaps {b}")
    return out


def check_readable(fig) -> None:
    named, legends, renderer = boxes(fig)
    assert not overlaps(named)
    for ax in fig.axes:  # the legend never covers the data, and titles are not cut off by the figure's edge
        if ax.get_title():
            box = ax.title.get_window_extent(renderer)
            assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, ax.get_title()
        for lg in legends:
            assert not lg.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


@pytest.mark.parametrize("build", ["time", "flops", "speed", "precision_recall", "samples", "memorisation"])
def test_figures_with_long_names_do_not_overlap(variants, build, tmp_path: Path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Tight layout not applied" and any other matplotlib warning fail here
        fig = {"time": lambda: plots.fid_vs_training(variants, "time"),
               "flops": lambda: plots.fid_vs_training(variants, "flops"),
               "speed": lambda: plots.summary_scatter(variants, "sampling_img_per_s", "fid"),
               "precision_recall": lambda: plots.summary_scatter(variants, "recall", "precision"),
               "samples": lambda: plots.samples(variants, 4, 0, torch.device("cpu")),
               "memorisation": lambda: plots.memorisation(variants)}[build]()
        check_readable(fig)
        plots.save(fig, tmp_path / "f.png")
    assert capsys.readouterr().err == ""
    key = next(t for t in fig.texts if t.get_text().startswith("A: "))
    assert all(len(line) <= plots.KEY_WIDTH for line in key.get_text().splitlines())
    assert "data.root=" in key.get_text() and "H: vae" in key.get_text()  # every variant's full name is in the key


def test_fid_vs_nfe_with_long_names_is_readable(variants, tmp_path: Path, capsys):
    """Only the diffusion variants (C, F) have two NFE: only they are drawn and in the key."""
    from genbench.report.nfe import nfe_table

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plots.fid_vs_nfe(variants, nfe_table(variants))
        check_readable(fig)
        plots.save(fig, tmp_path / "f.png")
    assert capsys.readouterr().err == ""
    # one protocol: the labels need not name it, the title does
    assert sorted(c.get_label() for c in fig.axes[0].containers) == ["C DDIM", "F DDIM"]
    assert "protocol p1k: 1,000 samples" in fig.axes[0].get_title()
    key = next(t for t in fig.texts if t.get_text().startswith("C: ")).get_text()
    assert "F: diffusion" in key and "A: " not in key


def test_memorisation_panel_shows_each_variants_lowest_seed_run(tmp_path: Path):
    """Seeds 1 and 0 of a GAN (memorised 0.03 and 0.02), a VAE without panels: the GAN's panel is seed 0's,
    titled with its fraction and the variant's mean ± std; the VAE is left out and named."""
    runs = [read_run(make_run(tmp_path, "g1", "gan", 1, make_record(10.0, memorised=0.03))),
            read_run(make_run(tmp_path, "g0", "gan", 0, make_record(12.0, memorised=0.02))),
            read_run(make_run(tmp_path, "v0", "vae", 0, make_record(20.0), panel=False))]
    found, _ = group_variants(runs)
    panels, missing = plots.memorisation_runs(found)
    assert panels == {"A": tmp_path / "g0" / "eval" / "memorisation.png"}
    assert len(missing) == 1 and missing[0].startswith(f"variant B (vae): {tmp_path / 'v0' / 'eval' / 'memorisation.png'}")
    fig = plots.memorisation(found)
    (ax,) = fig.axes
    assert (ax.images[0].get_array() == panel_pixels(0)).all() and not (panel_pixels(0) == panel_pixels(1)).all()
    assert ax.get_title() == "A: seed 0, memorised 0.02\nover seeds 0.0250 ± 0.0071"
    assert plots.memorisation(found[1:]) is None  # no variant with a panel: no figure


def test_the_overlap_check_catches_a_legend_over_the_data(variants):
    """The check above can fail: a legend inside the axes, as matplotlib places it by default, is caught."""
    fig = plots.fid_vs_training(variants, "time")
    fig.legends.clear()
    fig.axes[0].legend()
    named, legends, renderer = boxes(fig)
    assert legends[0].get_window_extent(renderer).overlaps(fig.axes[0].get_window_extent(renderer))
    fig.axes[0].set_title("a title long enough to run past both edges of the figure " * 3)
    with pytest.raises(AssertionError):
        check_readable(fig)


def test_samples_panel_draws_each_variant_from_its_checkpoint(tmp_path: Path, compose_cfg):
    """A real tiny GAN checkpoint: its panel shows its samples; a run without one says so in its panel."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from genbench.checkpoint import save_checkpoint
    from genbench.compare import main

    cfg = OmegaConf.to_container(compose_cfg("train", ["model=gan", "experiment=smoke", "data=mnist",
                                                       "data.image_size=16"]), resolve=True)
    with_ckpt = make_run(tmp_path / "runs", "gan", "gan", 0, make_record(10.0))
    make_run(tmp_path / "runs", "vae", "vae", 0, make_record(20.0))
    model = instantiate(cfg["model"], image_shape=(1, 16, 16), _convert_="all")
    save_checkpoint({"step": 8, "model": model.state_dict(), "ema": model.state_dict(), "optimizers": {},
                     "schedulers": {}, "config": cfg, "image_shape": [1, 16, 16]}, with_ckpt, keep=1)
    found, _ = group_variants([read_run(tmp_path / "runs" / name) for name in ("gan", "vae")])
    fig = plots.samples(found, 4, 0, torch.device("cpu"))
    gan_ax, vae_ax = fig.axes
    assert len(gan_ax.images) == 1 and gan_ax.images[0].get_array().shape[:2] == (2 * 16 + 3, 2 * 16 + 3)
    assert not vae_ax.images and vae_ax.texts[0].get_text() == "no checkpoint"
    main([str(tmp_path / "runs"), "-o", str(tmp_path / "out"), "--grid-samples", "4"])
    assert (tmp_path / "out" / "samples.png").is_file()
    # here, where genbench.protocol is loaded anyway (compare does not import it): the panel path is the protocol's
    from genbench.protocol import EVAL_DIR

    assert plots.MEMORISATION_PANEL == Path(EVAL_DIR) / "memorisation.png"


def test_a_one_point_series_of_fid_vs_nfe_is_a_marker_not_a_line(tmp_path: Path):
    """The headline (10,000 samples, its own protocol) beside a 1,000-sample sampler grid: a lone hollow marker."""
    from genbench.report.nfe import nfe_table
    from tests.report_fixtures import nfe_record

    make_run(tmp_path, "d", "diffusion", 0, make_record(50.0, sampler="DPMSolverPP2M", nfe=20),
             extra_records={f"ddim{k}": nfe_record(60.0 - k / 10, "DDIM", k) for k in (10, 50)})
    variants, _ = group_variants([read_run(tmp_path / "d")])
    fig = plots.fid_vs_nfe(variants, nfe_table(variants))
    styles = {c.get_label(): c.lines[0].get_linestyle() for c in fig.axes[0].containers}
    assert styles["A DPMSolverPP2M [p1]"] == "None" and styles["A DDIM [p1k]"] == "--"  # the second protocol dashed


def test_a_familys_variants_share_its_color_and_differ_by_line_style(variants):
    """A budget-scaling compare (each family at several budgets) reads by color: one per family, its variants
    told apart by line style and marker; a one-family compare (an ablation) gives each variant its own color."""
    fig = plots.fid_vs_training(variants, "time")
    ax, family = fig.axes[0], {v.label: v.family for v in variants}
    dots = {c.get_label(): tuple(c.get_facecolor()[0]) for c in ax.collections if not c.get_label().startswith("_")}
    assert set(dots) == set(family)
    for a, b in itertools.combinations(dots, 2):
        assert (dots[a] == dots[b]) == (family[a] == family[b]), (a, b)
    lines = {v.label: ax.lines[2 * i] for i, v in enumerate(variants)}  # two runs (seeds) a variant, in order
    for name in set(family.values()):
        own = [label for label in lines if family[label] == name]
        assert len({lines[label].get_linestyle() for label in own}) == len(own)
        assert all(to_rgba(lines[label].get_color()) == dots[label] for label in own)
    gans = [v for v in variants if v.family == "gan"]
    colors = [s["color"] for s in plots.variant_styles(gans).values()]
    assert len(set(colors)) == len(gans)


def test_the_time_axis_is_logarithmic_once_the_budgets_span_a_decade(tmp_path: Path):
    """One budget's runs read on a linear time axis; a scaling compare (budgets 10x apart) on a log one, as FLOPs."""
    def axis(times):
        runs = [read_run(make_run(tmp_path / str(times), f"r{t}", "gan", 0, make_record(30.0, train_time=t),
                                  overrides=[f"trainer.max_time={t}"])) for t in times]
        ax = plots.fid_vs_training(group_variants(runs)[0], "time").axes[0]
        return ax.get_xscale(), ax.get_xlabel()

    assert axis([10.0, 20.0]) == ("linear", "training time (s)")
    assert axis([10.0, 600.0]) == ("log", "training time (s, log)")
