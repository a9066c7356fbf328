"""FID against NFE (genbench.report.nfe): which records of a run count, and how they are grouped and averaged."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from genbench.report.nfe import nfe_table, plotted, sampler_points
from genbench.report.runs import group_variants, read_run
from tests.report_fixtures import STEPS, make_record, make_run, nfe_record


def diffusion_runs(root: Path) -> list:
    """Two seeds of one diffusion variant, headline DPM-Solver++ 20 on 48 samples (protocol p1), re-scored on
    1,000 samples (protocol p1k): seed 0 with DDIM 10 twice (noise seeds 0 and 1: FID 78 and 82), DDIM 50 and
    DPM-Solver++ 20; seed 1 with DDIM 10 (84) and DPM-Solver++ 20, and DDIM 10 under a 500-sample protocol."""
    headline = lambda fid: make_record(fid, sampler="DPMSolverPP2M", nfe=20)  # noqa: E731
    seed0 = {"ddim10": nfe_record(78.0, "DDIM", 10), "ddim10b": nfe_record(82.0, "DDIM", 10, seed=1),
             "ddim50": nfe_record(60.0, "DDIM", 50), "dpm20": nfe_record(55.0, "DPMSolverPP2M", 20)}
    seed1 = {"ddim10": nfe_record(84.0, "DDIM", 10), "dpm20": nfe_record(57.0, "DPMSolverPP2M", 20),
             "ddim10_500": nfe_record(90.0, "DDIM", 10, pid="p500", num_samples=500)}
    return [read_run(make_run(root, "d0", "diffusion", 0, headline(50.0), extra_records=seed0)),
            read_run(make_run(root, "d1", "diffusion", 1, headline(52.0), extra_records=seed1))]


def test_points_are_the_records_of_the_headline_weights():
    """Another checkpoint step, raw weights, an external samples folder, a family without a sampler and a
    record without a FID are not points of the curve."""
    headline = make_record(50.0, sampler="DPMSolverPP2M", nfe=20)
    external = {**nfe_record(1.0, "DDIM", 10), "source": "external"}
    records = {"h": headline, "ok": nfe_record(70.0, "DDIM", 10, eta=0.0), "old": nfe_record(99.0, "DDIM", 10, step=STEPS - 4),
               "raw": nfe_record(98.0, "DDIM", 10, ema=False), "ext": external,
               "gan": make_record(20.0, sampler=None, nfe=1), "nofid": nfe_record(float("nan"), "DDIM", 5)}
    points = sampler_points(records, headline)
    assert [(p.protocol, p.num_samples, p.sampler, p.nfe, p.fid) for p in points] == [
        ("p1", 48, "DPMSolverPP2M", 20, 50.0), ("p1k", 1000, "DDIM", 10, 70.0)]
    assert points[1].settings == (("sampler_eta", "0.0"),)  # sampler_steps is the x axis, not a setting


def test_seeds_are_averaged_per_protocol_sampler_and_nfe(tmp_path: Path):
    variants, _ = group_variants(diffusion_runs(tmp_path))
    (v,) = variants
    table = {(r.protocol, r.sampler, r.nfe): r for r in nfe_table(variants)}
    assert set(table) == {("p1", "DPMSolverPP2M", 20), ("p1k", "DDIM", 10), ("p1k", "DDIM", 50),
                          ("p1k", "DPMSolverPP2M", 20), ("p500", "DDIM", 10)}
    ddim10 = table[("p1k", "DDIM", 10)]  # seed 0: (78 + 82) / 2 = 80 (one value per run), seed 1: 84
    assert (ddim10.fid.mean, ddim10.fid.std, ddim10.fid.n, ddim10.seeds) == (82.0, pytest.approx(2 ** 0.5 * 2), 2, (0, 1))
    assert ddim10.num_samples == 1000 and ddim10.label == v.label
    assert (table[("p1k", "DDIM", 50)].fid.mean, table[("p1k", "DDIM", 50)].seeds) == (60.0, (0,))
    assert table[("p1", "DPMSolverPP2M", 20)].fid.mean == 51.0  # the headlines are points too, under their protocol
    assert table[("p500", "DDIM", 10)].fid.mean == 90.0  # never averaged with the 1,000-sample DDIM 10


def test_samplers_that_differ_in_a_setting_are_two_lines(tmp_path: Path):
    """DDIM with eta 0 and eta 1 are named apart (eta=0.0, eta=1.0); a setting all records share is not named."""
    records = {"a": nfe_record(70.0, "DDIM", 10, eta=0.0, spacing="leading"),
               "b": nfe_record(65.0, "DDIM", 10, eta=1.0, spacing="leading")}
    run = read_run(make_run(tmp_path, "d", "diffusion", 0, make_record(50.0, sampler="DDIM", nfe=20), extra_records=records))
    variants, _ = group_variants([run])
    assert sorted((r.sampler, r.fid.mean) for r in nfe_table(variants) if r.protocol == "p1k") == [
        ("DDIM eta=0.0", 70.0), ("DDIM eta=1.0", 65.0)]


def test_only_variants_with_two_nfe_are_plotted(tmp_path: Path):
    runs = diffusion_runs(tmp_path / "d")
    runs.append(read_run(make_run(tmp_path, "g", "gan", 0, make_record(20.0))))  # a GAN: NFE 1 only, no sampler
    runs.append(read_run(make_run(tmp_path, "v", "diffusion", 0, make_record(40.0, sampler="DDIM", nfe=5),
                                  overrides=["model.network.base_channels=8"])))  # one NFE
    variants, _ = group_variants(runs)
    rows = nfe_table(variants)
    assert {r.label for r in rows} == {"A", "C"} and {r.label for r in plotted(rows)} == {"A"}


def test_compare_writes_fid_vs_nfe(tmp_path: Path, monkeypatch):
    """fid_vs_nfe.csv holds every point, and compare.md the points of the variants plotted."""
    from genbench.compare import main
    from genbench.report import plots

    monkeypatch.setattr(plots, "plot_all", lambda *args, **kwargs: [])  # the figure: the test below
    diffusion_runs(tmp_path / "runs")
    main([str(tmp_path / "runs"), "-o", str(tmp_path / "out"), "--grid-samples", "0"])
    with open(tmp_path / "out" / "fid_vs_nfe.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["sampler"], r["nfe"], r["protocol"], r["num_samples"], float(r["fid_mean"]), r["seeds"]) for r in rows] == [
        ("DPMSolverPP2M", "20", "p1", "48", 51.0, "0 1"), ("DDIM", "10", "p1k", "1000", 82.0, "0 1"),
        ("DDIM", "50", "p1k", "1000", 60.0, "0"), ("DPMSolverPP2M", "20", "p1k", "1000", 56.0, "0 1"),
        ("DDIM", "10", "p500", "500", 90.0, "1")]
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| A | DDIM | `p1k` | 1000 | 10 | 82.0 ± 2.8 | 0, 1 |" in md and "FIDs of different protocols" in md


def test_fid_vs_nfe_figure_never_joins_two_protocols(tmp_path: Path):
    """One line per variant, sampler and protocol: DDIM 10 on 500 samples is a point of its own."""
    from genbench.report import plots

    variants, _ = group_variants(diffusion_runs(tmp_path))
    fig = plots.fid_vs_nfe(variants, nfe_table(variants))
    ax = fig.axes[0]
    lines = {c.get_label(): (list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata())) for c in ax.containers}
    assert lines == {"A DPMSolverPP2M [p1]": ([20], [51.0]), "A DDIM [p1k]": ([10, 50], [82.0, 60.0]),
                     "A DPMSolverPP2M [p1k]": ([20], [56.0]), "A DDIM [p500]": ([10], [90.0])}
    assert "protocol p1k: 1,000 samples" in ax.get_title() and ax.get_xscale() == "log"
