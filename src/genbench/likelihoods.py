"""Pixel likelihoods on 8-bit images: the densities, and the decoders built on them.

Every distribution here is over the 256 values k / 127.5 - 1 (k = 0..255) that 8-bit pixels take in
[-1, 1], so a log-probability is that of the discrete data, with no dequantization: the convention of
`GenerativeModel.bits_per_dim`. Used by the VAE's p_theta(x|z) and by diffusion's L_0 = -log p_theta(x_0 | x_1).

Papers:
- Salimans et al. 2017, "PixelCNN++", arXiv:1701.05517, Sec. 2.1: the discretized logistic.
- Kingma et al. 2016, arXiv:1606.04934: the discretized logistic as a VAE decoder.
- Ho, Jain & Abbeel 2020, arXiv:2006.11239, eq. 13: the same binning of a Gaussian.
- Maechler 2012, "Accurately Computing log(1 - exp(-|a|))": `log1mexp`.

Bins: level k owns [x - 1/255, x + 1/255] (x = k / 127.5 - 1), and the two outer bins extend to -inf
and +inf, so the 256 masses sum to one. Each decoder (`PixelLikelihood`) turns a network's raw output
into its parameters (location and log-scale, or logits) and gives their log-probability, the image
shown as "the decoder mean", and exact draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from genbench.validate import check_choice, check_positive

LN2 = math.log(2.0)
Scale = Literal["learned", "fixed"]
Params = tuple[torch.Tensor, torch.Tensor | None]  # (location or logits, log-scale or None), each (N, C, H, W)


# ---- densities -----------------------------------------------------------------------------
def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a < 0, accurate on both sides of -ln 2 (Maechler 2012)."""
    return torch.where(a > -LN2, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def standardised_bin_edges(x: torch.Tensor, mu: torch.Tensor, log_s: torch.Tensor,
                           dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """a = (x - 1/255 - mu) / s and b = (x + 1/255 - mu) / s, the edges of x's bin, and the masks of the
    lowest and the highest bin (whose outer edges are -inf and +inf instead). Computed in units of
    levels, k +- 1/2 with k the integer level of x, so that neighbouring bins share their edges exactly
    (with edges x +- 1/255 in float32, a small s turns their rounding into mass gaps of 1e-5)."""
    k = torch.round((x.to(dtype) + 1) * 127.5)
    mu_k, inv_s_k = (mu.to(dtype) + 1) * 127.5, torch.exp(-log_s.to(dtype)) / 127.5  # mu and 1/s in level units
    return (k - 0.5 - mu_k) * inv_s_k, (k + 0.5 - mu_k) * inv_s_k, k < 0.5, k > 254.5


def discretized_logistic_log_prob(x: torch.Tensor, mu: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """log P(x) per pixel under logistic(mu, s) binned onto the 256 levels (Salimans et al. 2017, Sec. 2.1).
    sigmoid(b) - sigmoid(a) = sigmoid(b) sigmoid(-a) (1 - e^(a - b)), so log P is accurate in every regime,
    where PixelCNN++ falls back to the density."""
    a, b, lowest, highest = standardised_bin_edges(x, mu, log_s)
    log_cdf_b, log_sf_a = F.logsigmoid(b), F.logsigmoid(-a)
    return torch.where(lowest, log_cdf_b, torch.where(highest, log_sf_a, log_cdf_b + log_sf_a + log1mexp(a - b)))


def discretized_gaussian_log_prob(x: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """log P(x) per pixel under N(mu, sigma^2) binned onto the 256 levels (Ho et al. 2020, eq. 13).
    Phi(b) - Phi(a) = Phi(-a) - Phi(-b): the form whose two terms lie in the lower tail is taken, where
    log Phi is accurate, and the difference is log Phi(hi) + log(1 - Phi(lo) / Phi(hi)). In float64: a bin
    much narrower than sigma makes the two log Phi nearly equal, and their difference would lose float32's
    digits. Returned in float32."""
    a, b, lowest, highest = standardised_bin_edges(x, mu, log_sigma, torch.float64)
    flip = a + b > 0  # bin centre above mu
    hi, lo = torch.where(flip, -a, b), torch.where(flip, -b, a)
    log_hi = torch.special.log_ndtr(hi)
    interior = log_hi + log1mexp(torch.special.log_ndtr(lo) - log_hi)
    log_p = torch.where(lowest, torch.special.log_ndtr(b), torch.where(highest, torch.special.log_ndtr(-a), interior))
    return log_p.float()


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log P(x) per pixel for x in {-1, 1} (pixel values 0 and 255) under Bernoulli(sigmoid(logits)) on x = 1."""
    return F.logsigmoid(torch.where(x > 0, logits, -logits))


def _uniform(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """U(0, 1) drawn on the generator's own device (so a CPU generator gives the same draws everywhere)."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """Round a continuous value to the nearest of the 256 levels, the outer bins taking the tails."""
    return (torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1).clamp(-1, 1)


# ---- decoders ------------------------------------------------------------------------------
class PixelLikelihood:
    """p(x | params), factorised over pixels, with params read from a network's output.

    - `out_channels(C)`: how many channels the network must output for C image channels;
    - `observe(x)`: the data the likelihood scores (x itself, or binarized for `Bernoulli`);
    - `params(out)`: the raw output (N, out_channels, H, W) -> (location or logits, log-scale or None);
    - `log_prob(x, *params)`: log P(x) per pixel, in nats;
    - `mean(*params)`: the image shown as the decoder's output; `sample(*params, generator)`: a draw."""

    name = ""  # the shorthand model.likelihood=NAME, also written beside samples (sampling_info)
    key_suffix = ""  # appended to bits/dim keys when the scored data is not the 8-bit data itself

    def out_channels(self, channels: int) -> int:
        return channels

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def params(self, out: torch.Tensor) -> Params:
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def mean(self, loc: torch.Tensor, log_scale: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, loc: torch.Tensor, log_scale: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError


class _Binned(PixelLikelihood):
    """A continuous location-scale distribution binned onto the levels. The scale s is learned per pixel
    by the network (floored at min_scale) or fixed at fixed_scale, both in [-1, 1] units."""

    def __init__(self, scale: Scale = "learned", min_scale: float = 0.5, fixed_scale: float = 0.5):
        check_choice("model.likelihood.scale", scale, Scale)
        check_positive("model.likelihood.min_scale", min_scale)
        check_positive("model.likelihood.fixed_scale", fixed_scale)
        self.scale, self.min_scale, self.fixed_scale = scale, min_scale, fixed_scale

    def out_channels(self, channels: int) -> int:
        return 2 * channels if self.scale == "learned" else channels

    def params(self, out: torch.Tensor) -> Params:
        if self.scale == "fixed":
            return out, torch.full_like(out, math.log(self.fixed_scale))
        loc, log_scale = out.chunk(2, dim=1)
        return loc, log_scale.clamp(min=math.log(self.min_scale))

    def log_prob(self, x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor | None) -> torch.Tensor:
        return self.density(x, loc, log_scale)

    def mean(self, loc: torch.Tensor, log_scale: torch.Tensor | None) -> torch.Tensor:
        """mu clipped to [-1, 1]: the mean of the continuous distribution before binning, and (being
        symmetric) the median of the binned one. The binned mean itself is not shown: its outer bins
        collect the tails, so where s is large a black background comes out grey."""
        return loc.clamp(-1, 1)

    def sample(self, loc: torch.Tensor, log_scale: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        """loc + s F^-1(u), u ~ U(0, 1), rounded to the nearest level: exactly a draw from the binned distribution."""
        u = _uniform(loc.shape, generator, loc.device).clamp(1e-7, 1 - 1e-7)
        return to_levels(loc + torch.exp(log_scale) * self.standard_icdf(u))

    # set by each subclass: its log P(x | mu, log s) per pixel, and the inverse CDF of its standard form
    density: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    standard_icdf: Callable[[torch.Tensor], torch.Tensor]


def _logit(u: torch.Tensor) -> torch.Tensor:
    return torch.log(u) - torch.log1p(-u)


class DiscretizedLogistic(_Binned):
    """logistic(mu, s) on the levels (Salimans et al. 2017, Sec. 2.1); its inverse CDF is the logit."""

    name = "discretized_logistic"
    density, standard_icdf = staticmethod(discretized_logistic_log_prob), staticmethod(_logit)


class DiscretizedGaussian(_Binned):
    """N(mu, sigma^2) on the levels (Ho et al. 2020, eq. 13), s = sigma; its inverse CDF is ndtri,
    sqrt(2) erfinv(2u - 1)."""

    name = "gaussian"
    density, standard_icdf = staticmethod(discretized_gaussian_log_prob), staticmethod(torch.special.ndtri)


class Bernoulli(PixelLikelihood):
    """Bernoulli(sigmoid(logits)) on x = 1 (pixel 255) against x = -1 (pixel 0): for binary data, or for
    grey data thresholded at 128 with binarize=true (then the bound is on the binarized images)."""

    name = "bernoulli"

    def __init__(self, binarize: bool = False):
        self.binarize = binarize
        self.key_suffix = "_binarized" if binarize else ""

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        if self.binarize:
            return torch.where(x > 0, 1.0, -1.0).to(x.dtype)
        if not bool((x.abs() == 1).all()):
            raise ValueError("likelihood@model.likelihood=bernoulli needs binary data (pixel values 0 or 255) but got "
                             "grey levels; set model.likelihood.binarize=true to threshold at 128, or use "
                             "likelihood@model.likelihood=discretized_logistic")
        return x

    def params(self, out: torch.Tensor) -> Params:
        return out, None

    def log_prob(self, x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor | None) -> torch.Tensor:
        return bernoulli_log_prob(x, loc)

    def mean(self, loc: torch.Tensor, log_scale: torch.Tensor | None) -> torch.Tensor:
        return 2 * torch.sigmoid(loc) - 1  # E[x] = p - (1 - p)

    def sample(self, loc: torch.Tensor, log_scale: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        return torch.where(_uniform(loc.shape, generator, loc.device) < torch.sigmoid(loc), 1.0, -1.0)


LikelihoodName = Literal["discretized_logistic", "gaussian", "bernoulli"]
LIKELIHOODS: dict[str, type[PixelLikelihood]] = {cls.name: cls for cls in (DiscretizedLogistic, DiscretizedGaussian, Bernoulli)}


def as_likelihood(value: PixelLikelihood | str, key: str = "model.likelihood") -> PixelLikelihood:
    """An object as it is; a name from LIKELIHOODS as that class with its default arguments."""
    if isinstance(value, PixelLikelihood):
        return value
    check_choice(key, value, LikelihoodName)
    return LIKELIHOODS[value]()
