"""Verdicts on the four claims of the generative learning trilemma (Xiao et al. 2022, arXiv:2112.07804),
each from the numbers by the rule written here, never by hand.

The claims are about three families, the modules gan, vae and diffusion of genbench.models. Each family
enters through its variant with the lowest mean FID (the family at its best), among the variants scored
under one protocol. Every test is two-sided at ALPHA = 0.05 (genbench.report.stats).

1. GAN quality vs VAE diversity: three parts. FID(GAN) < FID(VAE), precision(GAN) > precision(VAE),
   recall(VAE) > recall(GAN). A part *supports* when Welch's t-test finds the difference (p < ALPHA) in the
   claimed direction, *contradicts* when it finds it in the other, and is *inconclusive* otherwise (or with
   one seed on a side).
2. Diffusion sampling cost: two parts. Cost: diffusion's sampling GFLOPs per image exceed those of the
   cheapest other family (exact, machine-independent) -> supports, else contradicts. Where a record lacks
   them: more NFE and every diffusion run slower (images/s) than every run of the fastest other family ->
   supports; faster on average -> contradicts; else inconclusive. What the cost buys: FID(diffusion) <
   FID(best other family) by Welch's test as in 1.
3. GAN stability: the GAN's relative spread of FID over seeds is larger than every other family's, by a
   one-sided F-test on var(log FID) (std of log FID = relative std, to first order). Supports when p < ALPHA
   against every other family; contradicts when some other family's spread is the larger one at p < ALPHA;
   inconclusive otherwise.
4. Diffusion gives both quality and diversity: two non-inferiority parts with a margin of MARGIN (10%).
   Quality: FID(diffusion) - FID(GAN) < MARGIN x FID(GAN) at the upper end of the 95% Welch interval ->
   supports; the whole interval above that margin -> contradicts; else inconclusive. Diversity: recall
   (diffusion) - recall(VAE) > -MARGIN x recall(VAE) at the lower end of the interval -> supports; the whole
   interval below -MARGIN x recall(VAE) -> contradicts; else inconclusive.

A claim's word joins its parts: all support -> supported; all contradict -> contradicted; both -> mixed;
otherwise partly supported, partly contradicted or inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from genbench.report.runs import Variant
from genbench.report.stats import pm, spread_test, welch

GAN, VAE, DIFFUSION = "gan", "vae", "diffusion"  # the modules of genbench.models the claims are about
MARGIN = 0.10  # claim 4: "as good as" means within 10% of the other family's mean


def best(variants: list[Variant], family: str) -> Variant | None:
    """The variant of `family` with the lowest mean FID, or None."""
    mine = [v for v in variants if v.family == family]
    return min(mine, key=lambda v: (math.isnan(v.stats["fid"].mean), v.stats["fid"].mean)) if mine else None


def name(v: Variant) -> str:
    return f"{v.family} ({v.label})"


def superior(part: str, a: Variant, b: Variant, column: str, lower_is_claimed: bool) -> tuple[str, str]:
    """('supports' | 'contradicts' | 'inconclusive', one sentence) on 'a's column is lower (higher) than b's'."""
    sa, sb = a.stats[column], b.stats[column]
    if math.isnan(sa.mean) or math.isnan(sb.mean):
        return "inconclusive", f"{part}: no numbers for {name(a) if math.isnan(sa.mean) else name(b)}."
    test = welch(sa, sb)
    holds = sa.mean < sb.mean if lower_is_claimed else sa.mean > sb.mean
    if test is None:
        word, how = "inconclusive", f"one seed on a side ({sa.n} vs {sb.n}): no spread to test against"
    else:
        word = ("supports" if holds else "contradicts") if test.clear else "inconclusive"
        how = str(test)
    lean = "" if word != "inconclusive" or sa.mean == sb.mean else \
        f"; the means go {'the claimed way' if holds else 'against the claim'}"
    return word, f"{part}: {name(a)} {sa} vs {name(b)} {sb}; difference {sa.mean - sb.mean:+.3g}; {how}{lean} → **{word}**."


def non_inferior(part: str, a: Variant, b: Variant, column: str, lower_is_better: bool) -> tuple[str, str]:
    """Is a's column no worse than b's by more than MARGIN x b's mean? (rule 4 of the module docstring)"""
    sa, sb = a.stats[column], b.stats[column]
    if math.isnan(sa.mean) or math.isnan(sb.mean):
        return "inconclusive", f"{part}: no numbers for {name(a) if math.isnan(sa.mean) else name(b)}."
    margin = MARGIN * abs(sb.mean)
    test = welch(sa, sb)
    bound = f"{'at most' if lower_is_better else 'at least'} {sb.mean + (margin if lower_is_better else -margin):.3g}"
    if test is None:
        word, how = "inconclusive", f"one seed on a side ({sa.n} vs {sb.n}): no interval"
    else:
        sign = 1 if lower_is_better else -1  # worse = sign x (a - b)
        lo, hi = sorted(sign * c for c in test.ci)
        word = "supports" if hi < margin else "contradicts" if lo > margin else "inconclusive"
        how = str(test)
    return word, (f"{part}: {name(a)} {sa} vs {name(b)} {sb}, so {bound} ({MARGIN:.0%} margin); difference "
                  f"{sa.mean - sb.mean:+.3g}; {how} → **{word}**.")


def overall(parts: Iterable[str]) -> str:
    """One word for a claim from the words of its parts."""
    v = set(parts)
    if len(v) == 1:
        return {"supports": "**supported**", "contradicts": "**contradicted**"}.get(v.pop(), "**inconclusive**")
    if {"supports", "contradicts"} <= v:
        return "**mixed**"
    return "**partly supported**" if "supports" in v else "**partly contradicted**"


def quality_vs_diversity(gan: Variant | None, vae: Variant | None) -> str:
    head = "**GAN quality vs VAE diversity** (GANs give sharper samples, VAEs cover more of the data)"
    if not (gan and vae):
        return f"{head}: not tested, the runs compared hold no {'GAN' if not gan else 'VAE'}."
    parts = [superior("FID (quality)", gan, vae, "fid", lower_is_claimed=True),
             superior("precision (quality)", gan, vae, "precision", lower_is_claimed=False),
             superior("recall (diversity)", vae, gan, "recall", lower_is_claimed=False)]
    return f"{head}: {overall(p[0] for p in parts)}. " + " ".join(p[1] for p in parts)


def sampling_cost(dif: Variant | None, others: list[Variant]) -> str:
    head = "**Diffusion sampling cost** (diffusion samples well but needs many network evaluations per image)"
    if not (dif and others):
        return f"{head}: not tested, the runs compared hold no {'diffusion model' if not dif else 'GAN or VAE'}."
    d = dif.stats
    if all(math.isfinite(v.stats["sample_gflops"].mean) for v in [dif, *others]):  # exact cost, machine-free
        cheap = min(others, key=lambda v: v.stats["sample_gflops"].mean)
        gd, gc = d["sample_gflops"].mean, cheap.stats["sample_gflops"].mean
        word = "supports" if gd > gc else "contradicts"
        cost = (f"Cost: {name(dif)} needs {gd:.3g} GFLOPs per image at NFE {pm(d['nfe'].mean, math.nan)} against "
                f"{gc:.3g} for {name(cheap)}, the cheapest other family ({gd / gc:.3g}x) → **{word}**.")
    else:  # older records: NFE, and measured speed (which carries the machine's load, so runs must not overlap)
        fast = max(others, key=lambda v: v.stats["sampling_img_per_s"].mean)
        sd, sf = d["sampling_img_per_s"], fast.stats["sampling_img_per_s"]
        slower_everywhere = sd.hi < sf.lo
        more_nfe = d["nfe"].mean > fast.stats["nfe"].mean
        word = "supports" if more_nfe and slower_everywhere else "contradicts" if sd.mean >= sf.mean else "inconclusive"
        every = f"every {dif.family} run slower than every {fast.family} run" if slower_everywhere else "the runs overlap"
        cost = (f"Cost (the records hold no sampling FLOPs): {name(dif)} needs {pm(d['nfe'].mean, math.nan)} network "
                f"evaluations per image against {pm(fast.stats['nfe'].mean, math.nan)} for {name(fast)}, the fastest "
                f"other family; measured {sd} vs {sf} images/s, {sf.mean / sd.mean:.3g}x slower, {every} → **{word}**.")
    rival = min(others, key=lambda v: v.stats["fid"].mean)
    bought = superior("What the cost buys, FID", dif, rival, "fid", lower_is_claimed=True)
    return f"{head}: {overall([word, bought[0]])}. {cost} {bought[1]}"


def stability(gan: Variant | None, others: list[Variant], failures: dict[str, int]) -> str:
    head = "**GAN stability** (GAN training is less stable: results vary more across seeds)"
    fids = {v.label: [r.values["fid"] for r in v.runs] for v in [gan, *others] if v}
    tests = {v.label: (spread_test(fids[gan.label], fids[v.label]), spread_test(fids[v.label], fids[gan.label]))
             for v in others} if gan else {}
    tests = {k: t for k, t in tests.items() if t[0] is not None}
    if not tests:
        return f"{head}: not tested: it needs at least two seeds of a GAN and of another family."
    word = "supports" if all(t[0].clear for t in tests.values()) else \
        "contradicts" if any(t[1].clear for t in tests.values()) else "inconclusive"
    shown = [v for v in [gan, *others] if v.label in tests or v is gan]
    seen = ", ".join(f"{name(v)} {v.stats['fid'].std / v.stats['fid'].mean:.1%} (FID {v.stats['fid']})" for v in shown)
    versus = " ".join(f"Against {name(v)}: {tests[v.label][0]}." for v in others if v.label in tests)
    failed = ", ".join(f"{failures.get(v.family, 0)} of {v.family}'s" for v in shown)
    return (f"{head}: {overall([word])}. Relative std of FID over seeds (std / mean): {seen}. {versus} "
            f"Runs that failed or were not evaluated: {failed}.")


def quality_and_diversity(dif: Variant | None, gan: Variant | None, vae: Variant | None) -> str:
    head = ("**Diffusion gives both quality and diversity** (FID within 10% of the GAN's or below, and recall "
            "within 10% of the VAE's or above)")
    if not (dif and gan and vae):
        missing = [f for f, v in ((DIFFUSION, dif), (GAN, gan), (VAE, vae)) if not v]
        return f"{head}: not tested, the runs compared hold no {' or '.join(missing)} model."
    parts = [non_inferior("Quality, FID", dif, gan, "fid", lower_is_better=True),
             non_inferior("Diversity, recall", dif, vae, "recall", lower_is_better=False)]
    return f"{head}: {overall(p[0] for p in parts)}. " + " ".join(p[1] for p in parts)


def verdicts(variants: list[Variant], failures: dict[str, int]) -> list[str]:
    """A paragraph per claim, from the numbers alone; each names the variants it used."""
    gan, vae, dif = (best(variants, f) for f in (GAN, VAE, DIFFUSION))
    return [quality_vs_diversity(gan, vae), sampling_cost(dif, [v for v in (gan, vae) if v]),
            stability(gan, [v for v in (vae, dif) if v], failures), quality_and_diversity(dif, gan, vae)]


RULES = ("Each claim compares the families through their variant with the lowest mean FID, among the runs of one "
         "protocol. A part *supports* or *contradicts* a claim only when the test finds the difference at the 5% "
         "level (two-sided Welch's t-test on the seeds; a one-sided F-test on var(log FID) for stability; a 95% "
         "Welch interval against a 10% margin for claim 4); otherwise it is *inconclusive*. Each part states the "
         "test, the seeds on each side and the smallest difference those seeds can resolve (80% power): a true "
         "difference below it is usually missed. The exact rules are in genbench/report/verdicts.py.")
