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


@pytest.mark.parametrize("damage", ["truncated gz", "truncated", "not idx"])
def test_a_broken_idx_file_is_named_in_one_line(tmp_path: Path, damage: str):
    images = fake_digits(10, seed=3)
    path = tmp_path / ("a-idx3-ubyte.gz" if damage == "truncated gz" else "a-idx3-ubyte")
    write_idx(path, images, compress=damage == "truncated gz")
    data = path.read_bytes()
    path.write_bytes(b"\x89PNG" + data[4:] if damage == "not idx" else data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{path} (is not a readable IDX file|holds .* bytes but its header|is not an IDX file)") as e:
        gdata.read_idx(path)
    assert "\n" not in str(e.value) and "fetch it again" in str(e.value)


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


def offline(monkeypatch) -> None:
    """No network: torchvision's own download code runs and meets the URLError urlopen raises offline."""
    import urllib.error
    import urllib.request

    def urlopen(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


@pytest.mark.parametrize("name, build, put, install", [
    ("mnist", gdata.mnist, "MNIST/raw", "train on data=fashion_mnist"),
    ("fashion_mnist", gdata.fashion_mnist, "FashionMNIST/raw", "install Debian's dataset-fashion-mnist"),
    ("cifar10", gdata.cifar10, "cifar-10-python.tar.gz in", "train on data=fashion_mnist"),
])
def test_offline_download_says_no_network_and_where_the_files_go(tmp_path: Path, monkeypatch, name, build, put, install):
    monkeypatch.setattr(gdata, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    offline(monkeypatch)
    with pytest.raises(gdata.DatasetNotFound, match=rf"^no network: could not download {name} from http\S+; put .*{put}.*, or {install}") as e:
        build(root=str(tmp_path / "root"), download=True)
    assert "\n" not in str(e.value) and str(tmp_path / "root") in str(e.value)


def test_download_goes_through_torchvision_then_reads_its_files(tmp_path: Path, monkeypatch):
    """data.download=true runs torchvision's own download (served here from local files, md5s checked) and
    reads the IDX files it leaves in root/MNIST/raw."""
    import hashlib
    import io
    import urllib.request

    from torchvision.datasets import MNIST

    served = write_mnist_like(tmp_path / "server", "", n_train=12, n_test=4, compress=True)
    files = {p.name: p.read_bytes() for p in served.iterdir()}
    monkeypatch.setattr(MNIST, "mirrors", ["http://mirror.invalid/mnist/"])
    monkeypatch.setattr(MNIST, "resources", [(n, hashlib.md5(b).hexdigest()) for n, b in sorted(files.items())])

    class Response(io.BytesIO):
        def __init__(self, url: str):
            super().__init__(files[url.rsplit("/", 1)[1]])
            self.url, self.length = url, len(self.getvalue())

    monkeypatch.setattr(urllib.request, "urlopen", lambda request, *a, **k: Response(request.full_url))
    ds = gdata.mnist(root=str(tmp_path / "root"), image_size=28, download=True)
    assert torch.equal(ds.train[:, 0], torch.from_numpy(fake_digits(12, seed=0))) and len(ds.test) == 4
    assert (tmp_path / "root" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    again = gdata.mnist(root=str(tmp_path / "root"), image_size=28)  # now on disk: no download asked for
    assert torch.equal(again.train, ds.train)


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
