"""Data loading on local files: IDX parsing, torchvision's layout, padding, batching, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genbench import data as gdata
from tests.conftest import fake_digits, write_idx, write_mnist_like


def test_read_idx_agrees_with_torchvision(tmp_path: Path):
    from torchvision.datasets.mnist import read_image_file

    images = fake_digits(10, seed=3)
    write_idx(tmp_path / "plain-idx3-ubyte", images)
    write_idx(tmp_path / "packed-idx3-ubyte.gz", images, compress=True)
    ours = gdata.read_idx(tmp_path / "plain-idx3-ubyte")
    theirs = read_image_file(str(tmp_path / "plain-idx3-ubyte")).numpy()
    assert np.array_equal(ours, theirs) and np.array_equal(ours, images)
    assert np.array_equal(gdata.read_idx(tmp_path / "packed-idx3-ubyte.gz"), images)


def test_debian_layout_is_preferred(tmp_path: Path, monkeypatch):
    system = write_mnist_like(tmp_path / "debian", "", n_train=12, n_test=5, compress=True)
    monkeypatch.setattr(gdata, "DEBIAN_FASHION_MNIST", system)
    ds = gdata.fashion_mnist(root=str(tmp_path / "nowhere"), image_size=32)
    assert ds.train.shape == (12, 1, 32, 32) and ds.test.shape == (5, 1, 32, 32)
    assert ds.train.dtype == torch.uint8
    # padding is centred and uses the darkest value: the 28x28 image sits at rows/cols 2..29
    raw = torch.from_numpy(fake_digits(12, seed=0))
    assert torch.equal(ds.train[:, 0, 2:30, 2:30], raw)
    assert int(ds.train[:, :, :2].max()) == 0 and int(ds.train[:, :, :, 30:].max()) == 0


def test_torchvision_layout_loads_offline(mnist_root: Path):
    ds = gdata.mnist(root=str(mnist_root), image_size=28)
    assert ds.image_shape == (1, 28, 28) and len(ds.train) == 64 and len(ds.test) == 16
    assert torch.equal(ds.train[:, 0], torch.from_numpy(fake_digits(64, seed=0)))


def test_missing_dataset_names_every_place_and_the_fix(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(gdata, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    with pytest.raises(gdata.DatasetNotFound) as err:
        gdata.fashion_mnist(root=str(tmp_path / "no-root"))
    message = str(err.value)
    assert "no-debian" in message and "no-root" in message and "make install" in message and "data.download=true" in message


def test_cifar10_missing_gives_clear_error(tmp_path: Path):
    with pytest.raises(gdata.DatasetNotFound, match="data.download=true"):
        gdata.cifar10(root=str(tmp_path))


def test_resize_and_bad_size():
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    assert gdata.fit_size(images, 16, "pad").shape == (3, 1, 16, 16)  # smaller than 28: pad falls back to resize
    assert gdata.fit_size(images, 64, "resize").shape == (3, 1, 64, 64)
    with pytest.raises(ValueError, match="data.image_size"):
        gdata.fit_size(images, 0, "pad")
    with pytest.raises(ValueError, match="data.fit"):
        gdata.fit_size(images, 32, "crop")


def test_image_folder(tmp_path: Path):
    for i in range(5):
        Image.fromarray(np.full((20, 30, 3), i * 40, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = gdata.image_folder(str(tmp_path), image_size=16, channels=3, test_fraction=0.4)
    assert ds.train.shape == (3, 3, 16, 16) and ds.test.shape == (2, 3, 16, 16)
    grey = gdata.image_folder(str(tmp_path), image_size=8, channels=1)
    assert grey.image_shape == (1, 8, 8)
    with pytest.raises(gdata.DatasetNotFound, match="data.root"):
        gdata.image_folder(str(tmp_path / "empty"))


def test_batches_are_epoch_permutations_and_a_function_of_step(mnist_root: Path):
    ds = gdata.mnist(root=str(mnist_root))
    epoch = torch.cat([ds.batch_indices(s, 16, seed=0) for s in range(4)])
    assert sorted(epoch.tolist()) == list(range(64))  # one epoch = a permutation
    again = gdata.mnist(root=str(mnist_root))
    assert torch.equal(again.batch_indices(5, 16, seed=0), ds.batch_indices(5, 16, seed=0))  # no hidden state
    assert not torch.equal(ds.batch_indices(4, 16, seed=0), ds.batch_indices(0, 16, seed=0))  # new epoch, new order
    assert not torch.equal(ds.batch_indices(0, 16, seed=1), ds.batch_indices(0, 16, seed=0))
    x = ds.batch(ds.batch_indices(0, 16, seed=0))
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    with pytest.raises(ValueError, match="trainer.batch_size"):
        ds.batch_indices(0, 65, seed=0)


def test_uint8_round_trip():
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    assert torch.equal(gdata.to_uint8(gdata.to_float(u)), u)
