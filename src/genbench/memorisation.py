"""Are the samples new? Nearest-training-image distances in the extractor's feature space.

A model that copies its training set can win on FID, so every evaluation also asks how close each
generated sample lies to its nearest training image, calibrated by the same distance for held-out
test images, which the model never saw:

1. d_gen(i) = min_j ||f(x_gen_i) - f(x_train_j)||_2 for every generated sample, and d_test(i) the
   same for every test image (f: the protocol's feature extractor, the layer FID uses);
2. the rule: tau = the `quantile` (default 1st percentile) of d_test. A sample with d_gen < tau is
   closer to a training image than 99% of genuinely new images are; `fraction_closer` is the share
   of such samples. A model whose samples are as new as test images scores about `quantile` (1%);
   a model that copies a fraction c of its samples scores about c + 1%. (Blurry or poor samples lie
   far from everything and score below 1%: this measures copying, not quality.)
3. quantiles of both distributions, so a reader sees the whole shift, not one number;
4. a panel of the closest samples beside their nearest training images.

The distance is the plain Euclidean one of Meehan et al. 2020 (arXiv:2004.05675) and of the
"nearest training image" panels of Carlini et al. 2023 (arXiv:2301.13188), here in a feature space.
Everything below is a pure function of tensors; genbench.protocol feeds it features.
"""

from __future__ import annotations

import math

import torch

from genbench.data import image_grid

QUANTILES = (0.01, 0.05, 0.25, 0.5)


def nearest_neighbours(queries: torch.Tensor, keys: torch.Tensor, block: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of queries (N, D): the Euclidean distance to its nearest row of keys (M, D) and that
    row's index, both (N,). The search uses matrix products in blocks of `block` queries; the distance
    to the chosen neighbour is then recomputed directly, so an exact copy gives exactly 0."""
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"features must be (N, D) and (M, D) with the same D, got {tuple(queries.shape)} and {tuple(keys.shape)}")
    if len(keys) == 0:
        raise ValueError("no training features to compare with")
    queries, keys = queries.float(), keys.float()
    key_sq = keys.square().sum(1)  # (M,)
    index = torch.empty(len(queries), dtype=torch.long)
    for i in range(0, len(queries), block):
        q = queries[i : i + block]
        d2 = key_sq[None, :] - 2 * q @ keys.T  # ||q - k||^2 - ||q||^2: the same argmin per row
        index[i : i + block] = d2.argmin(1)
    distance = (queries - keys[index]).norm(dim=1)
    return distance, index


def summarise(gen_distance: torch.Tensor, test_distance: torch.Tensor | None, quantile: float = 0.01) -> dict:
    """The memorisation record from nearest-training distances of generated samples and (when the data
    has a held-out split) of test images; see the module docstring for the rule."""
    if not 0 < quantile < 1:
        raise ValueError(f"eval.memorisation.quantile={quantile} must be in (0, 1), e.g. 0.01")

    def quantiles(d: torch.Tensor) -> dict[str, float]:
        q = torch.quantile(d.double(), torch.tensor(QUANTILES, dtype=torch.float64))
        return {f"q{round(100 * p):02d}": float(v) for p, v in zip(QUANTILES, q)}

    record = {
        "rule": f"fraction of samples nearer their nearest training image than the {quantile:g} quantile of the "
                "held-out test images' nearest-training distances (about the quantile itself for samples as new as "
                "test images)",
        "quantile": quantile,
        "num_generated": len(gen_distance),
        "generated": quantiles(gen_distance),
        "test": None, "num_test": 0, "threshold": None, "fraction_closer": None, "median_ratio": None,
    }
    if test_distance is not None and len(test_distance):
        threshold = float(torch.quantile(test_distance.double(), quantile))
        record.update(
            test=quantiles(test_distance), num_test=len(test_distance), threshold=threshold,
            fraction_closer=float((gen_distance.double() < threshold).double().mean()),
            median_ratio=float(gen_distance.double().median() / test_distance.double().median().clamp_min(1e-12)),
        )
    return record


def panel(samples: torch.Tensor, train: torch.Tensor, distance: torch.Tensor, index: torch.Tensor, k: int = 16) -> torch.Tensor:
    """The k samples closest to a training image, each beside that image: uint8 samples (N, C, H, W) and
    train (M, C, H, W) -> a (3, H', W') grid in [0, 1], four (sample, nearest) pairs per row."""
    order = distance.argsort()[:k]
    pairs = torch.stack([samples[order], train[index[order]]], dim=1).flatten(0, 1)  # (2k, C, H, W)
    return image_grid(pairs, nrow=2 * min(4, max(1, math.ceil(len(order) ** 0.5))), pad_value=1.0)
