"""Every verdict rule of genbench.report.verdicts, on variants with chosen per-seed numbers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from genbench.report.runs import COLUMNS, Variant
from genbench.report.stats import stat
from genbench.report.verdicts import (best, quality_and_diversity, quality_vs_diversity, sampling_cost, stability,
                                      verdicts)


def variant(label: str, family: str, **columns: list[float]) -> Variant:
    """A variant whose seeds have these numbers (column -> one value per seed); other columns are unknown."""
    n = max(len(v) for v in columns.values())
    runs = [SimpleNamespace(seed=i, values={k: columns[k][i] if k in columns else math.nan for k in COLUMNS})
            for i in range(n)]
    v = Variant(label, family, family, {"id": "p"}, "—", runs)
    v.stats = {k: stat([r.values[k] for r in runs]) for k in COLUMNS}
    return v


def word(text: str) -> str:
    """The claim's overall word: the first **bold** after the claim's title."""
    return text.split(": **", 1)[1].split("**", 1)[0]


def test_best_variant_is_the_lowest_mean_fid():
    a, b = variant("A", "gan", fid=[20.0, 22.0]), variant("B", "gan", fid=[10.0, 12.0])
    assert best([a, b, variant("C", "vae", fid=[1.0])], "gan") is b and best([a], "diffusion") is None


# 1. GAN quality vs VAE diversity --------------------------------------------------------------------------
def test_quality_vs_diversity_supported_when_every_part_is_clear():
    gan = variant("A", "gan", fid=[10, 11, 12], precision=[0.80, 0.81, 0.82], recall=[0.30, 0.31, 0.32])
    vae = variant("B", "vae", fid=[30, 31, 32], precision=[0.50, 0.51, 0.52], recall=[0.60, 0.61, 0.62])
    text = quality_vs_diversity(gan, vae)
    assert word(text) == "supported" and text.count("→ **supports**") == 3
    assert "Welch's t-test, 3 vs 3 seeds: t = -24.5 on 4 df, p = 1.6e-05" in text  # (11 - 31) / sqrt(1/3 + 1/3)


def test_quality_vs_diversity_contradicted_when_the_families_swap():
    gan = variant("A", "gan", fid=[30, 31, 32], precision=[0.50, 0.51, 0.52], recall=[0.60, 0.61, 0.62])
    vae = variant("B", "vae", fid=[10, 11, 12], precision=[0.80, 0.81, 0.82], recall=[0.30, 0.31, 0.32])
    assert word(quality_vs_diversity(gan, vae)) == "contradicted"


def test_quality_vs_diversity_inconclusive_within_the_seed_spread_or_with_one_seed():
    gan = variant("A", "gan", fid=[10, 30, 20], precision=[0.5, 0.7, 0.6], recall=[0.3, 0.5, 0.4])
    vae = variant("B", "vae", fid=[15, 35, 25], precision=[0.4, 0.7, 0.55], recall=[0.35, 0.55, 0.45])
    text = quality_vs_diversity(gan, vae)
    assert word(text) == "inconclusive" and "the means go the claimed way" in text
    one = quality_vs_diversity(variant("A", "gan", fid=[10], precision=[0.8], recall=[0.3]),
                               variant("B", "vae", fid=[30, 31], precision=[0.5, 0.5], recall=[0.6, 0.6]))
    assert word(one) == "inconclusive" and "one seed on a side (1 vs 2): no spread to test against" in one
    assert "not tested, the runs compared hold no VAE" in quality_vs_diversity(variant("A", "gan", fid=[1.0]), None)


# 2. diffusion sampling cost -------------------------------------------------------------------------------
def test_sampling_cost_from_flops_per_image():
    dif = variant("C", "diffusion", fid=[5.0, 5.1, 5.2], sample_gflops=[4.0, 4.0, 4.0], nfe=[20, 20, 20])
    gan = variant("A", "gan", fid=[10.0, 11.0, 12.0], sample_gflops=[0.1, 0.1, 0.1], nfe=[1, 1, 1])
    vae = variant("B", "vae", fid=[30.0, 31.0, 32.0], sample_gflops=[0.05, 0.05, 0.05], nfe=[1, 1, 1])
    text = sampling_cost(dif, [gan, vae])
    assert word(text) == "supported"
    assert "needs 4 GFLOPs per image at NFE 20 against 0.05 for vae (B), the cheapest other family (80x) → **supports**" in text
    cheap = variant("C", "diffusion", fid=[5.0, 5.1, 5.2], sample_gflops=[0.01] * 3, nfe=[1] * 3)
    assert "(0.2x) → **contradicts**" in sampling_cost(cheap, [gan, vae])  # 0.01 / 0.05


def test_sampling_cost_from_nfe_and_speed_when_records_lack_flops():
    gan = variant("A", "gan", fid=[10.0, 11.0], nfe=[1, 1], sampling_img_per_s=[900.0, 1000.0])
    slow = variant("C", "diffusion", fid=[50.0, 51.0], nfe=[20, 20], sampling_img_per_s=[10.0, 11.0])
    text = sampling_cost(slow, [gan])
    assert "every diffusion run slower than every gan run → **supports**" in text and word(text) == "mixed"
    overlap = variant("C", "diffusion", fid=[50.0, 51.0], nfe=[20, 20], sampling_img_per_s=[10.0, 950.0])
    assert "the runs overlap → **inconclusive**" in sampling_cost(overlap, [gan])
    fast = variant("C", "diffusion", fid=[50.0, 51.0], nfe=[20, 20], sampling_img_per_s=[2000.0, 2100.0])
    assert "→ **contradicts**. What the cost buys" in sampling_cost(fast, [gan])


# 3. GAN stability -----------------------------------------------------------------------------------------
def test_stability_supported_by_an_f_test_on_log_fid():
    gan = variant("A", "gan", fid=[10.0, 20.0, 40.0, 5.0, 30.0])
    vae = variant("B", "vae", fid=[20.0, 20.1, 19.9, 20.05, 19.95])
    text = stability(gan, [vae], {"gan": 1})
    assert word(text) == "supported" and "F-test on var(log FID), 5 vs 5 seeds" in text
    assert "Runs that failed or were not evaluated: 1 of gan's, 0 of vae's" in text
    assert word(stability(vae, [gan], {})) == "contradicted"  # the other family is the one that varies
    close = variant("B", "vae", fid=[10.0, 25.0, 35.0, 6.0, 28.0])
    assert word(stability(gan, [close], {})) == "inconclusive"
    assert "not tested" in stability(variant("A", "gan", fid=[10.0]), [vae], {})


# 4. diffusion gives both quality and diversity -------------------------------------------------------------
def test_both_quality_and_diversity_within_the_margin():
    dif = variant("C", "diffusion", fid=[10.0, 10.1, 10.2], recall=[0.50, 0.51, 0.52])
    gan = variant("A", "gan", fid=[10.0, 10.1, 10.2], recall=[0.2, 0.2, 0.2])
    vae = variant("B", "vae", fid=[30.0, 31.0, 32.0], recall=[0.50, 0.51, 0.52])
    text = quality_and_diversity(dif, gan, vae)
    assert word(text) == "supported" and text.count("→ **supports**") == 2
    assert "so at most 11.1 (10% margin)" in text and "so at least 0.459 (10% margin)" in text


@pytest.mark.parametrize("fid, expected", [(10.9, "supports"), (11.2, "contradicts")])
def test_the_margin_rule_with_exact_numbers(fid: float, expected: str):
    """Every seed equal: the interval is the difference itself. GAN FID 10, margin 1: 10.9 is within, 11.2 not."""
    dif = variant("C", "diffusion", fid=[fid] * 3, recall=[0.5] * 3)
    text = quality_and_diversity(dif, variant("A", "gan", fid=[10.0] * 3), variant("B", "vae", fid=[30.0] * 3, recall=[0.5] * 3))
    assert f"→ **{expected}**. Diversity" in text


def test_both_contradicted_or_inconclusive():
    gan = variant("A", "gan", fid=[10.0, 11.0, 12.0])
    vae = variant("B", "vae", fid=[30.0, 31.0, 32.0], recall=[0.50, 0.51, 0.52])
    worse = variant("C", "diffusion", fid=[30.0, 31.0, 32.0], recall=[0.20, 0.21, 0.22])
    assert word(quality_and_diversity(worse, gan, vae)) == "contradicted"
    noisy = variant("C", "diffusion", fid=[8.0, 12.0, 16.0], recall=[0.3, 0.5, 0.7])
    text = quality_and_diversity(noisy, gan, vae)
    assert word(text) == "inconclusive" and text.count("→ **inconclusive**") == 2
    assert "not tested, the runs compared hold no vae model" in quality_and_diversity(noisy, gan, None)


def test_four_verdicts_in_order():
    out = verdicts([variant("A", "gan", fid=[10.0, 12.0])], {})
    assert [v.split("**")[1] for v in out] == ["GAN quality vs VAE diversity", "Diffusion sampling cost", "GAN stability",
                                               "Diffusion gives both quality and diversity"]
