"""Where the FID-against-compute curves cross (genbench.report.crossings), on curves with closed-form crossings:
lines in log10 x, which linear interpolation in log10 x reproduces exactly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from genbench.report.crossings import Crossings, Pair, crossings, csv_rows, mean_curve, run_curve, sentence
from genbench.report.runs import group_variants, read_run
from tests.report_fixtures import BATCH, make_record, make_run


def line(intercept: float, slope: float, log_x: list[float]):
    """FID = intercept + slope log10 x at x = 10^log_x."""
    log_x = np.array(log_x, dtype=float)
    return 10**log_x, intercept + slope * log_x


def test_two_lines_cross_where_the_closed_form_says():
    """a = 100 - 20 L, b = 60 - 10 L (L = log10 x) meet at L = 4; neither is sampled there. Below 1e4 b is
    lower (ahead), above it a."""
    a = line(100, -20, [2, 3, 5, 6])
    b = line(60, -10, [2.5, 3.5, 4.5, 5.5, 7])
    c = crossings(a, b)
    assert c.at == (pytest.approx(1e4, rel=1e-12),) and c.ahead == ("b", "a")
    assert (c.lo, c.hi) == (pytest.approx(10**2.5), pytest.approx(1e6))  # the range both cover
    swapped = crossings(b, a)
    assert swapped.at == c.at and swapped.ahead == ("a", "b")


def test_a_crossing_at_any_point_between_two_samples():
    """Lines with a crossing at L* = (i1 - i2) / (s2 - s1) for random intercepts and slopes."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        s1, s2 = rng.uniform(-30, -1, 2)
        star = rng.uniform(10.5, 13.5)
        i1 = rng.uniform(50, 200)
        i2 = i1 + (s1 - s2) * star  # so that i1 + s1 L* = i2 + s2 L*
        c = crossings(line(i1, s1, [10, 11, 12, 13, 14]), line(i2, s2, [10, 12.2, 14]))
        assert c.at == (pytest.approx(10**star, rel=1e-9),)
        assert c.ahead == (("a", "b") if s1 > s2 else ("b", "a"))


def test_no_crossing_one_variant_ahead_throughout():
    a = line(50, -5, [1, 2, 3])
    b = line(55, -5, [1.5, 2.5, 3.5])
    c = crossings(a, b)
    assert c == Crossings(pytest.approx(10**1.5), pytest.approx(1e3), (), ("a",))


def test_several_crossings():
    """a zigzags 10, 30, 10, 30, 10 at L = 1..5 around b = 20: it crosses at L = 1.5, 2.5, 3.5 and 4.5."""
    a = (10.0 ** np.arange(1, 6), np.array([10.0, 30.0, 10.0, 30.0, 10.0]))
    b = (np.array([10.0, 1e5]), np.array([20.0, 20.0]))
    c = crossings(a, b)
    assert c.at == tuple(pytest.approx(10**e) for e in (1.5, 2.5, 3.5, 4.5))
    assert c.ahead == ("a", "b", "a", "b", "a")


def test_touching_is_not_crossing_and_meeting_then_parting_is():
    b = (np.array([1.0, 10.0, 100.0]), np.array([20.0, 20.0, 20.0]))
    touch = crossings((b[0], np.array([30.0, 20.0, 30.0])), b)
    assert touch.at == () and touch.ahead == ("b",)
    through = crossings((b[0], np.array([30.0, 20.0, 10.0])), b)
    assert through.at == (10.0,) and through.ahead == ("b", "a")  # they meet at x = 10 and part the other way
    assert crossings(b, b).ahead == ("tie",) and crossings(b, b).at == ()


def test_curves_that_share_no_range_are_not_compared():
    assert crossings(line(10, -1, [1, 2]), line(10, -1, [3, 4])) is None


def test_seeds_are_averaged_inside_the_range_every_seed_covers():
    """Seed 1: FID = 10 + 10 L on [1, 100]; seed 2: 20 + 10 L on [10, 1000]. On [10, 100], their mean is
    15 + 10 L: 25 at 10 and 35 at 100; nothing outside that range is extrapolated."""
    x, y = mean_curve([line(10, 10, [0, 2]), line(20, 10, [1, 3])])
    assert list(x) == [10.0, 100.0] and list(y) == [pytest.approx(25.0), pytest.approx(35.0)]
    x, y = mean_curve([line(10, 10, [0, 1, 2]), line(10, 10, [0, 1, 2])])  # seeds at the same points: their own
    assert list(x) == [1.0, 10.0, 100.0] and list(y) == [10.0, 20.0, 30.0]


def test_run_curve_is_the_during_training_fids_and_the_final_one(tmp_path: Path):
    """eval_during/fid at steps 4 and 8 of 8, final FID 10 at step 8: the final (full protocol) replaces the
    during-training 99 at the same x. x: training FLOPs = step x batch x FLOPs per image; seconds = 10 s x step / 8."""
    run = read_run(make_run(tmp_path, "r", "gan", 0, make_record(10.0, flops_per_image=3e6, train_time=10.0),
                            curve={4: 30.0, 8: 99.0}))
    x, y = run_curve(run, "flops")
    assert list(x) == [pytest.approx(3e6 * 4 * BATCH), 3e6 * 8 * BATCH] and list(y) == [30.0, 10.0]
    x, y = run_curve(run, "seconds")
    assert list(x) == [pytest.approx(5.0), 10.0] and list(y) == [30.0, 10.0]


def fake_pair(result: Crossings, axis="flops") -> Pair:
    from types import SimpleNamespace

    return Pair(axis, SimpleNamespace(label="A", name="gan"), SimpleNamespace(label="B", name="vae"), result)


def test_sentences_and_csv_rows():
    one = fake_pair(Crossings(1e12, 1e14, (4e12,), ("b", "a")))
    assert sentence(one) == "vae (B) is ahead below 4e+12 training FLOPs, gan (A) above (range measured: 1e+12 to 1e+14)"
    assert csv_rows([one]) == [["flops", "A", "gan", "B", "vae", 1e12, 1e14, 4e12, "B", "A"]]
    none = fake_pair(Crossings(2.0, 600.0, (), ("a",)), "seconds")
    assert sentence(none) == "gan (A) is ahead over the whole range measured, from 2 to 600 training seconds"
    assert csv_rows([none]) == [["seconds", "A", "gan", "B", "vae", 2.0, 600.0, "", "A", "A"]]
    two = fake_pair(Crossings(1.0, 100.0, (3.0, 30.0), ("a", "b", "a")))
    assert sentence(two) == ("gan (A) is ahead below 3, vae (B) from 3 to 30, gan (A) above 30 training FLOPs "
                             "(2 crossings; range measured: 1 to 100)")
    assert [row[7:] for row in csv_rows([two])] == [[3.0, "A", "B"], [30.0, "B", "A"]]


def test_compare_writes_the_crossing_of_seed_means(tmp_path: Path, monkeypatch):
    """Two families, two seeds each (FIDs +-2 around their mean curve), both 8 x 1e6 FLOPs per step and 10 s
    of training. Mean curves at steps 2, 4, 6 and the final 8: GAN 100, 50, 30, 20; VAE 60, 40, 35, 30.
    The difference 10 at step 4 and -5 at step 6 is linear in log10 x in between, so they cross at
    log10 x* = log10 x4 + (log10 x6 - log10 x4) 10 / 15, i.e. x* = x4 1.5^(2/3), on both axes."""
    from genbench.compare import main
    from genbench.report import plots

    monkeypatch.setattr(plots, "plot_all", lambda *args, **kwargs: [])  # the figures: test_report_plots.py
    for family, fids in [("gan", [100.0, 50.0, 30.0, 20.0]), ("vae", [60.0, 40.0, 35.0, 30.0])]:
        for seed, noise in [(0, 2.0), (1, -2.0)]:
            during = {step: fid + noise for step, fid in zip((2, 4, 6), fids)}
            make_run(tmp_path / "runs", f"{family}-{seed}", family, seed,
                     make_record(fids[-1] + noise, flops_per_image=1e6, train_time=10.0), curve=during)
    main([str(tmp_path / "runs"), "-o", str(tmp_path / "out"), "--grid-samples", "0"])
    import csv

    with open(tmp_path / "out" / "crossings.csv") as f:
        rows = {r["axis"]: r for r in csv.DictReader(f)}
    x4_flops, x4_s = 4 * BATCH * 1e6, 10.0 * 4 / 8
    assert float(rows["flops"]["crossing"]) == pytest.approx(x4_flops * 1.5 ** (2 / 3), rel=1e-9)
    assert float(rows["seconds"]["crossing"]) == pytest.approx(x4_s * 1.5 ** (2 / 3), rel=1e-6)  # tb stores float32
    assert (rows["flops"]["ahead_below"], rows["flops"]["ahead_above"]) == ("B", "A")
    assert float(rows["flops"]["measured_from"]) == 2 * BATCH * 1e6 and float(rows["flops"]["measured_to"]) == 8 * BATCH * 1e6
    md = (tmp_path / "out" / "compare.md").read_text()
    x = x4_flops * 1.5 ** (2 / 3)
    assert f"- vae (B) is ahead below {x:.3g} training FLOPs, gan (A) above (range measured: 1.6e+07 to 6.4e+07)" in md
    assert math.isclose(x, 4.19e7, rel_tol=1e-3)


def test_variants_measured_over_no_common_range_are_named_not_compared(tmp_path: Path):
    """A GAN evaluated at steps 2 and 4 of 8 (FLOPs 1.6e7 to 6.4e7) and a VAE at 4e6 FLOPs per image with no
    evaluation during training (only its end, 2.56e8): nothing to compare, and the sentence says why."""
    from genbench.report.crossings import compare_curves

    runs = [read_run(make_run(tmp_path, "a", "gan", 0, make_record(10.0), curve={2: 40.0, 4: 30.0})),
            read_run(make_run(tmp_path, "b", "vae", 0, make_record(20.0, flops_per_image=4e6)))]
    variants, _ = group_variants(runs)
    (pair,) = compare_curves(variants, "flops")
    assert pair.result is None and pair.spans == ((2 * BATCH * 1e6, 8 * BATCH * 1e6), (8 * BATCH * 4e6, 8 * BATCH * 4e6))
    assert sentence(pair) == ("gan (A) and vae (B) were measured over no common range of training FLOPs (A: 1.6e+07 "
                              "to 6.4e+07; B: 2.56e+08 to 2.56e+08): not compared")
    assert csv_rows([pair]) == []


def test_a_variant_whose_seeds_share_no_range_has_no_curve(tmp_path: Path):
    """Two seeds with only their final FID, after 10 s and 12 s of training: no range both cover, no mean curve."""
    from genbench.report.crossings import compare_curves, without_curve

    runs = [read_run(make_run(tmp_path, f"v{seed}", "vae", seed, make_record(20.0, train_time=10.0 + 2 * seed)))
            for seed in (0, 1)] + [read_run(make_run(tmp_path, "g", "gan", 0, make_record(10.0), curve={4: 30.0}))]
    variants, _ = group_variants(runs)
    assert [v.label for v in without_curve(variants, "seconds")] == ["A"] and without_curve(variants, "flops") == []
    assert [(p.a.label, p.b.label) for p in compare_curves(variants, "seconds")] == []


def test_a_variant_without_training_flops_has_no_pair_on_that_axis(tmp_path: Path):
    """A run without training FLOPs has no FLOPs curve: no pair against it on that axis, still one on seconds."""
    from genbench.report.crossings import compare_curves

    runs = [read_run(make_run(tmp_path, "a", "gan", 0, make_record(10.0), curve={4: 30.0})),
            read_run(make_run(tmp_path, "b", "vae", 0, make_record(20.0, flops_per_image=None), curve={4: 25.0}))]
    variants, _ = group_variants(runs)
    assert compare_curves(variants, "flops") == []
    (pair,) = compare_curves(variants, "seconds")
    # seconds: gan 30 at 5 s and 10 at 10 s, vae 25 and 20: d = 5, -10, so x* = 5 x 2^(5/15)
    assert pair.result.at == (pytest.approx(5 * 2 ** (1 / 3)),) and pair.result.ahead == ("b", "a")
