"""Shared fixtures: tiny IDX datasets on local disk and config composition against the real conf/."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from genbench import CONF_DIR

torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and immune to oversubscription


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write a uint8 array in LeCun's IDX format (magic 0x0000 0x08 ndim, big-endian dims)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    (gzip.open if compress else open)(path, "wb").write(payload)


def fake_digits(n: int, seed: int) -> np.ndarray:
    """n 28x28 uint8 images: bright rectangles at random places, so the data has some structure."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for img in images:
        top, left = rng.integers(2, 14, size=2)
        img[top : top + rng.integers(6, 12), left : left + rng.integers(6, 12)] = rng.integers(120, 256)
    return images


def write_mnist_like(root: Path, folder: str, n_train: int = 64, n_test: int = 16, compress: bool = False) -> Path:
    """torchvision's layout, root/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]."""
    raw = root / folder / "raw" if folder else root
    suffix = ".gz" if compress else ""
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", fake_digits(n, seed), compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n, dtype=np.uint8) % 10, compress)
    return root


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    return write_mnist_like(tmp_path / "data", "MNIST")


@pytest.fixture
def compose_cfg():
    """compose_cfg(verb, overrides) -> the composed DictConfig, as `genbench VERB overrides` would see it."""

    def _compose(verb: str = "train", overrides: list[str] | None = None):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(config_name=verb, overrides=overrides or [], return_hydra_config=False)

    yield _compose
    GlobalHydra.instance().clear()


def tiny_overrides(data_root: Path, steps: int = 6) -> list[str]:
    """A run of a few seconds: experiment=smoke (the chosen model at size=smoke; a tiny UNet and T=50 by
    default), MNIST-format data written by the test."""
    return [
        "experiment=smoke", "data=mnist", f"data.root={data_root}", "data.image_size=16",
        f"trainer.max_steps={steps}", "trainer.batch_size=8", "trainer.checkpoint_every=2",
        "trainer.sample_every=0", "trainer.log_every=2", "trainer.device=cpu", "trainer.progress=false", "~eval",
    ]
