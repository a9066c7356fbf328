"""The pixel likelihoods of genbench.likelihoods (shared by the VAE's decoder and diffusion's L_0) against
torch.distributions in float64, their normalisation over the 256 levels, and the decoders' mean and draws."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import AffineTransform, Normal, SigmoidTransform, TransformedDistribution, Uniform

from genbench.likelihoods import (Bernoulli, DiscretizedGaussian, DiscretizedLogistic, as_likelihood, bernoulli_log_prob,
                                  discretized_gaussian_log_prob, discretized_logistic_log_prob)

LEVELS = torch.linspace(-1, 1, 256)  # the 256 values of 8-bit data in [-1, 1]
DENSITIES = {"logistic": discretized_logistic_log_prob, "gaussian": discretized_gaussian_log_prob}
# from a sharp peak on a bin edge to nearly flat, inside and outside [-1, 1]
EXTREMES = [(mu, log_s) for mu in (-1.5, -1.0, -0.3, 0.0, 0.9996, 1.0, 3.0) for log_s in (-7.0, -4.0, -1.0, 0.0, 3.0)]


def reference(kind: str, mu: torch.Tensor, s: torch.Tensor):
    """The continuous distribution, built independently from torch.distributions, in float64: a logistic
    is U(0, 1) through the logit and an affine map."""
    if kind == "gaussian":
        return Normal(mu, s)
    return TransformedDistribution(Uniform(torch.zeros_like(mu), torch.ones_like(mu)),
                                   [SigmoidTransform().inv, AffineTransform(mu, s)])


def reference_log_prob(kind: str, mu: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """(256, P) log P(level) from float64 CDF differences, each bin taken from the side of the distribution
    its mass lies in (the mirror image for bins above mu), where the CDF keeps its digits."""
    mu, s = mu.double(), log_s.double().exp()
    x = (torch.arange(256, dtype=torch.float64) / 127.5 - 1)[:, None]  # the exact levels
    upper = torch.where(x > 1 - 1e-6, math.inf, x + 1 / 255)
    lower = torch.where(x < -1 + 1e-6, -math.inf, x - 1 / 255)
    dist, mirror = reference(kind, mu, s), reference(kind, -mu, s)

    def cdf(d, v: torch.Tensor) -> torch.Tensor:  # the CDF with its limits at +-inf
        inf = torch.isinf(v)
        return torch.where(inf, (v > 0).double(), d.cdf(torch.where(inf, 0.0, v).expand(256, -1)))

    below = cdf(dist, upper) - cdf(dist, lower)
    above = cdf(mirror, -lower) - cdf(mirror, -upper)
    return torch.where(x <= mu, below, above).log()


# ---- the densities --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", DENSITIES)
def test_discretized_densities_sum_to_one_over_the_256_levels(kind):
    mu, log_s = torch.tensor(EXTREMES).T  # (P,) each
    log_p = DENSITIES[kind](LEVELS[:, None], mu, log_s)  # (256, P)
    torch.testing.assert_close(log_p.double().logsumexp(0), torch.zeros(len(mu), dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", DENSITIES)
def test_discretized_densities_match_torch_distributions_in_float64(kind):
    mu, log_s = torch.tensor(EXTREMES).T
    expected = reference_log_prob(kind, mu, log_s)
    log_p = DENSITIES[kind](LEVELS[:, None], mu, log_s).double()
    kept = expected > -20  # below e^-20 the float64 CDF differences themselves run out of digits
    assert kept.sum() > 1000  # most of the table is checked
    torch.testing.assert_close(log_p[kept], expected[kept], rtol=1e-4, atol=1e-5)  # the logistic's is float32


def test_discretized_gaussian_keeps_its_digits_in_the_tails():
    """Far in the tails, where float32 CDF differences underflow (diffusion's old copy clamped them at 1e-12)
    and even float64 ones lose every digit, log P still agrees with an exact computation at 40 digits (mpmath)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    mu, s = 0.1, 0.02
    log_p = discretized_gaussian_log_prob(LEVELS, torch.full((256,), mu), torch.full((256,), math.log(s))).double()
    checked = 0
    for k in range(0, 256, 5):
        x = k / 127.5 - 1
        upper = mpmath.inf if k == 255 else (x + 1 / 255 - mu) / s
        lower = -mpmath.inf if k == 0 else (x - 1 / 255 - mu) / s
        if x > mu:  # the mirror image, so that both CDFs are small and their difference keeps the digits
            upper, lower = -lower, -upper
        exact = float(mpmath.log(mpmath.ncdf(upper) - mpmath.ncdf(lower)))
        if exact < -30:  # the tails only: float32 would give 0 mass here
            assert log_p[k].item() == pytest.approx(exact, rel=1e-6), (k, exact)
            checked += 1
    assert checked > 30 and log_p.min() < -1000 and bool(torch.isfinite(log_p).all())


def test_bernoulli_matches_torch_distributions():
    logits = torch.linspace(-30, 30, 13)
    for x in (torch.ones(13), -torch.ones(13)):
        expected = torch.distributions.Bernoulli(logits=logits.double()).log_prob((x.double() + 1) / 2)
        torch.testing.assert_close(bernoulli_log_prob(x, logits).double(), expected, rtol=1e-6, atol=1e-6)


# ---- the decoders ---------------------------------------------------------------------------
BINNED = {"logistic": DiscretizedLogistic(), "gaussian": DiscretizedGaussian()}


@pytest.mark.parametrize("kind", BINNED)
def test_decoder_mean_is_the_median_of_the_binned_distribution(kind):
    # at the level m shown, P(x < m) <= 1/2 <= P(x <= m)
    mu, log_s = torch.tensor(EXTREMES).T
    shown = BINNED[kind].mean(mu.view(1, -1, 1, 1), log_s.view(1, -1, 1, 1)).flatten()
    k = torch.round((shown + 1) * 127.5).long()  # (P,) level index
    cdf = reference_log_prob(kind, mu, log_s).exp().cumsum(0)  # (256, P)
    at = cdf.gather(0, k[None])[0]
    below = torch.where(k > 0, cdf.gather(0, (k - 1).clamp(min=0)[None])[0], torch.zeros_like(at))
    assert bool((below <= 0.5 + 1e-6).all() and (at >= 0.5 - 1e-6).all())


@pytest.mark.parametrize("kind", BINNED)
def test_decoder_sample_draws_from_the_binned_distribution(kind):
    mu, log_s, n = 0.9, -3.5, 40_000  # mass over a dozen levels, some of it in the top (open) bin
    loc, log_scale = torch.full((n, 1, 1, 1), mu), torch.full((n, 1, 1, 1), log_s)
    x = BINNED[kind].sample(loc, log_scale, torch.Generator().manual_seed(0)).flatten()
    counts = torch.bincount(torch.round((x + 1) * 127.5).long(), minlength=256).double() / n
    expected = reference_log_prob(kind, torch.tensor([mu]), torch.tensor([log_s])).exp()[:, 0]
    assert (counts - expected).abs().max() < 4 * math.sqrt(0.25 / n)


def test_bernoulli_sample_frequency_and_mean():
    logits = torch.full((20_000, 1, 1, 1), 0.8)
    x = Bernoulli().sample(logits, None, torch.Generator().manual_seed(0))
    p = torch.sigmoid(torch.tensor(0.8)).item()
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    assert abs((x == 1).double().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / len(x))
    assert Bernoulli().mean(logits[:1], None).item() == pytest.approx(2 * p - 1)


@pytest.mark.parametrize("scale, expected", [("learned", "floor"), ("fixed", "fixed")])
def test_scale_is_floored_when_learned_and_constant_when_fixed(scale, expected):
    likelihood = DiscretizedLogistic(scale=scale, min_scale=0.3, fixed_scale=0.2)
    out = torch.randn(4, likelihood.out_channels(1), 3, 3) * 30  # raw log-scales far below the floor too
    loc, log_scale = likelihood.params(out)
    assert loc.shape == log_scale.shape == (4, 1, 3, 3)
    if expected == "floor":
        assert log_scale.min().item() == pytest.approx(math.log(0.3)) and log_scale.max() > math.log(0.3)
    else:
        torch.testing.assert_close(log_scale, torch.full_like(log_scale, math.log(0.2)))


def test_bernoulli_observes_binary_data_only_unless_asked_to_binarize():
    grey, binary = torch.tensor([-1.0, 0.2, 1.0]), torch.tensor([-1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="model.likelihood.binarize=true"):
        Bernoulli().observe(grey)
    assert torch.equal(Bernoulli().observe(binary), binary)
    assert torch.equal(Bernoulli(binarize=True).observe(grey), binary)
    assert Bernoulli(binarize=True).key_suffix == "_binarized" and Bernoulli().key_suffix == ""


@pytest.mark.parametrize("kwargs, message", [
    ({"scale": "per_channel"}, "model.likelihood.scale='per_channel' is not one of: learned, fixed"),
    ({"min_scale": 0.0}, "model.likelihood.min_scale=0.0 must be positive"),
    ({"fixed_scale": -1.0}, "model.likelihood.fixed_scale=-1.0 must be positive"),
])
def test_bad_values_are_one_line_naming_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        DiscretizedGaussian(**kwargs)


def test_shorthand_names_build_the_default_objects():
    assert type(as_likelihood("gaussian")) is DiscretizedGaussian and as_likelihood("gaussian").min_scale == 0.5
    assert [as_likelihood(name).name for name in ("discretized_logistic", "gaussian", "bernoulli")] == [
        "discretized_logistic", "gaussian", "bernoulli"]
    same = Bernoulli(binarize=True)
    assert as_likelihood(same) is same
    with pytest.raises(ValueError, match="discretized_logistic, gaussian, bernoulli"):
        as_likelihood("poisson")
