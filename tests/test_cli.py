"""Every verb end to end through the real console script, as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_overrides

GENBENCH = [sys.executable, "-m", "genbench"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}


def genbench(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*GENBENCH, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"genbench {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def test_help_lists_verbs_and_unknown_verb_fails():
    out = genbench("--help").stdout
    assert all(verb in out for verb in ("train", "sample", "eval"))
    bad = genbench("fly", check=False)
    assert bad.returncode == 2 and "unknown verb 'fly'" in bad.stderr and "usage:" in bad.stderr


def test_hydra_flags_pass_through():
    job = genbench("train", "--cfg", "job", "model=diffusion", "schedule@model.schedule=cosine").stdout
    assert "genbench.schedules.cosine" in job and "genbench.models.diffusion.Diffusion" in job
    assert "Powered by Hydra" in genbench("train", "--help").stdout


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    from tests.conftest import write_mnist_like

    data = write_mnist_like(root / "data", "MNIST")
    run_dir = root / "run"
    genbench("train", *tiny_overrides(data), "trainer.sample_every=6", f"hydra.run.dir={run_dir}", cwd=root)
    return run_dir


def test_train_writes_a_complete_run_dir(trained_run: Path):
    for name in (".hydra/config.yaml", "checkpoints/last.pt", "tb", "samples/grid_step_00000006.png", "train.log"):
        assert (trained_run / name).exists(), name
    assert list((trained_run / "tb").glob("events.out.tfevents.*"))


def test_sample_writes_pngs_grid_and_npz_reproducibly(trained_run: Path):
    genbench("sample", f"run_dir={trained_run}", "num_samples=5", "seed=3", "name=a")
    genbench("sample", f"run_dir={trained_run}", "num_samples=5", "seed=3", "name=b")
    a, b = trained_run / "samples" / "a", trained_run / "samples" / "b"
    assert sorted(p.name for p in a.glob("*.png")) == [f"{i:06d}.png" for i in range(5)] + ["grid.png"]
    images = np.load(a / "samples.npz")["images"]
    assert images.dtype == np.uint8 and images.shape == (5, 1, 16, 16)
    assert np.array_equal(images, np.load(b / "samples.npz")["images"])  # same seed, same images
    info = json.loads((a / "info.json").read_text())
    assert info["ema"] is True and info["nfe"] == 20 and info["sampler"] == "DPMSolverPP2M" and info["num_samples"] == 5


@pytest.mark.parametrize(
    "args, needle",
    [
        (["sample", "run_dir=/nonexistent/run"], "run_dir=/nonexistent/run holds no checkpoints/last.pt"),
        (["sample"], "run_dir= is required"),
        (["train", "experiment=tiny", "optim.lr=-1", "trainer.max_steps=1"], "optim.lr=-1 must be a positive"),
        (["train", "experiment=tiny", "data.image_size=30", "~eval"], "data.image_size=30x30 must be divisible by 4"),
        (["train", "model.prediction=score", "~eval"], "model.prediction='score' is not one of: eps, x0, v"),
    ],
)
def test_bad_input_is_one_line_naming_the_key(args, needle, tmp_path: Path):
    result = genbench(*args, f"hydra.run.dir={tmp_path / 'r'}" if args[0] == "train" else "num_samples=4", cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_num_samples_must_be_positive(trained_run: Path):
    result = genbench("sample", f"run_dir={trained_run}", "num_samples=0", check=False)
    assert result.returncode == 2 and "num_samples=0 must be positive" in result.stderr


def test_runs_started_together_get_their_own_folders(tmp_path: Path, mnist_root: Path):
    args = [*GENBENCH, "train", *tiny_overrides(mnist_root, steps=1)]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 2 and all((r / "checkpoints" / "last.pt").is_file() for r in runs)
