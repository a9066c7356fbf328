"""Memorisation: nearest-training-image distances on hand-made features (genbench.memorisation)."""

from __future__ import annotations

import pytest
import torch

from genbench import memorisation as memo


def features(n: int, seed: int, d: int = 16) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_nearest_neighbours_agree_with_brute_force_and_copies_are_at_zero():
    keys, queries = features(300, 0), features(70, 1)
    queries[:5] = keys[[3, 30, 100, 200, 299]]  # exact copies
    dist, index = memo.nearest_neighbours(queries, keys, block=16)  # several blocks
    full = torch.cdist(queries.double(), keys.double())
    assert torch.equal(index, full.argmin(1))
    assert torch.allclose(dist.double(), full.min(1).values, atol=1e-5)
    assert index[:5].tolist() == [3, 30, 100, 200, 299] and torch.all(dist[:5] == 0)


def test_copied_training_images_are_flagged_and_new_samples_mostly_not():
    train, test = features(2000, 0), features(1000, 1)
    test_d = memo.nearest_neighbours(test, train)[0]
    # a model that copies: half of its samples are training images plus a tiny jitter
    copies = train[:250] + 1e-3 * features(250, 2)
    copier = torch.cat([copies, features(250, 3)])
    out = memo.summarise(memo.nearest_neighbours(copier, train)[0], test_d, quantile=0.01)
    assert out["fraction_closer"] == pytest.approx(0.5, abs=0.03)
    assert out["threshold"] == pytest.approx(torch.quantile(test_d.double(), 0.01).item())
    assert out["generated"]["q01"] < 1e-2 < out["test"]["q01"]
    # an independent sample from the same distribution: about the quantile itself
    new = memo.summarise(memo.nearest_neighbours(features(2000, 4), train)[0], test_d, quantile=0.01)
    assert new["fraction_closer"] < 0.03 and new["median_ratio"] == pytest.approx(1.0, abs=0.1)


def test_without_a_test_split_only_the_distances_are_reported():
    out = memo.summarise(torch.tensor([1.0, 2.0, 3.0]), None)
    assert out["fraction_closer"] is None and out["test"] is None and out["generated"]["q50"] == 2.0
    with pytest.raises(ValueError, match=r"eval.memorisation.quantile=1.5 must be in \(0, 1\)"):
        memo.summarise(torch.ones(3), torch.ones(3), quantile=1.5)


def test_the_panel_puts_the_closest_samples_beside_their_neighbours():
    train = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 4, 4) * 20  # image j is all 20 j
    samples = train[[7, 2, 5]].clone()
    dist, index = torch.tensor([0.5, 0.1, 0.9]), torch.tensor([7, 2, 5])
    grid = memo.panel(samples, train, dist, index, k=2)  # the two closest: sample 1 (dist 0.1), then sample 0
    assert grid.shape == (3, 2 + 6, 2 + 4 * 6)  # one row of two (sample, neighbour) pairs, padding 2
    cells = [grid[0, 2, 2 + 6 * i].item() for i in range(4)]
    assert cells == pytest.approx([40 / 255, 40 / 255, 140 / 255, 140 / 255])


def test_bad_features_are_named():
    with pytest.raises(ValueError, match="same D"):
        memo.nearest_neighbours(torch.zeros(3, 4), torch.zeros(5, 3))
