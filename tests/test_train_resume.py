"""The Trainer end to end in-process: checkpoints, exact resume, the time budget, signals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genbench.checkpoint import LAST, load_checkpoint, load_model
from genbench.train import train
from genbench.runtime import parse_duration, parse_flops
from tests.conftest import tiny_overrides


def run(compose_cfg, run_dir: Path, data_root: Path, *extra: str) -> dict:
    cfg = compose_cfg("train", tiny_overrides(data_root) + list(extra))
    train(cfg, str(run_dir))
    return load_checkpoint(run_dir)


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_is_bit_identical(compose_cfg, mnist_root: Path, tmp_path: Path):
    """8 steps in one go == 4 steps, then the same command with max_steps=8 in the same run dir."""
    full = run(compose_cfg, tmp_path / "full", mnist_root, "trainer.max_steps=8", "trainer.sample_every=3")
    run(compose_cfg, tmp_path / "split", mnist_root, "trainer.max_steps=4", "trainer.sample_every=3")
    resumed = run(compose_cfg, tmp_path / "split", mnist_root, "trainer.max_steps=8", "trainer.sample_every=3")
    assert full["step"] == resumed["step"] == 8 and full["images_seen"] == resumed["images_seen"] == 64
    assert_same_tensors(full["model"], resumed["model"])
    assert_same_tensors(full["ema"], resumed["ema"])
    assert_same_tensors(full["optimizers"]["model"]["state"][0], resumed["optimizers"]["model"]["state"][0])
    assert torch.equal(full["rng"]["torch"], resumed["rng"]["torch"])
    # a different seed really gives different weights, so the comparison above can fail
    other = run(compose_cfg, tmp_path / "other", mnist_root, "trainer.max_steps=8", "seed=1")
    assert not torch.equal(other["model"]["net.stem.1.weight"], full["model"]["net.stem.1.weight"])


def test_checkpoint_contents_and_rotation(compose_cfg, mnist_root: Path, tmp_path: Path):
    state = run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=10", "trainer.keep_checkpoints=2")
    folder = tmp_path / "r" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [LAST, "step_00000008.pt", "step_00000010.pt"]
    assert state["config"]["model"]["_target_"] == "genbench.models.diffusion.Diffusion"  # plain data, resolved
    assert state["image_shape"] == [1, 16, 16] and set(state["rng"]) >= {"torch", "numpy", "python"}
    torch.load(folder / LAST, weights_only=True)  # loads without unpickling code
    model, _ = load_model(tmp_path / "r")  # rebuilt from the checkpoint alone
    assert_same_tensors(model.state_dict(), state["ema"])


@pytest.mark.parametrize("max_steps", ["100000", "null"])
def test_max_time_ends_training_with_a_checkpoint(compose_cfg, mnist_root: Path, tmp_path: Path, max_steps: str,
                                                  monkeypatch):
    """A fake clock that moves 0.1 s per reading: each step costs 0.2 s of training time, so a 1 s budget
    ends after exactly 5 steps, whatever the machine's speed."""
    import genbench.trainer

    clock = iter(range(10**6))
    monkeypatch.setattr(genbench.trainer.time, "perf_counter", lambda: next(clock) / 10)
    state = run(compose_cfg, tmp_path / "t", mnist_root, f"trainer.max_steps={max_steps}", "trainer.max_time=1s",
                "trainer.checkpoint_every=0")
    assert state["step"] == 5 and state["train_time"] == pytest.approx(1.0)


@pytest.mark.parametrize("budget, shown", [(["trainer.max_steps=null", "trainer.max_time=1s"], "1/1 s"),
                                           (["trainer.max_steps=5"], "5/5 step")])
def test_progress_bar_counts_down_the_budget_that_ends_the_run(compose_cfg, mnist_root: Path, tmp_path: Path, monkeypatch,
                                                                capsys, budget: list[str], shown: str):
    """With a time budget and no step cap the bar still has a total, a percentage and an ETA."""
    import genbench.trainer

    clock = iter(range(10**6))
    monkeypatch.setattr(genbench.trainer.time, "perf_counter", lambda: next(clock) / 10)
    run(compose_cfg, tmp_path / "p", mnist_root, *budget, "trainer.progress=true", "trainer.checkpoint_every=0")
    err = capsys.readouterr().err
    assert "train: 100%" in err and shown in err and "<" in err  # tqdm's elapsed<remaining


def test_compile_time_is_kept_out_of_the_budget(compose_cfg, mnist_root: Path, tmp_path: Path, monkeypatch):
    """The first compiled step is mostly compiling: it is logged as compute.compile_s (perf/compile_s), not
    counted in train_time or the budgets. (torch.compile itself is stubbed: CUDA's is checked by gpu_check.sh.)"""
    import genbench.trainer

    clock = iter(range(10**6))
    monkeypatch.setattr(genbench.trainer.time, "perf_counter", lambda: next(clock) / 10)  # 0.2 s per step
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *args, **kwargs: None)
    state = run(compose_cfg, tmp_path / "c", mnist_root, "trainer.compile=true", "trainer.max_steps=5")
    assert state["compute"]["compile_s"] == pytest.approx(0.2) and state["train_time"] == pytest.approx(0.8)


def test_a_run_without_any_limit_is_refused(compose_cfg, mnist_root: Path, tmp_path: Path):
    from hydra.errors import InstantiationException

    with pytest.raises((ValueError, InstantiationException), match="are all null, so training would never end"):
        run(compose_cfg, tmp_path / "forever", mnist_root, "trainer.max_steps=null", "trainer.max_time=null")


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("90s", 90), ("1h30m", 5400), ("1.5h", 5400), (45, 45), ("30", 30)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "-5", "0s", "banana"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="trainer.max_time"):
        parse_duration(text)


@pytest.mark.parametrize("text, flops", [("1.85e14", 1.85e14), ("185T", 1.85e14), ("0.2P", 2e14), (3e9, 3e9), ("5 GFLOPs", 5e9)])
def test_parse_flops(text, flops):
    assert parse_flops(text) == pytest.approx(flops)


@pytest.mark.parametrize("text", ["lots", "-1e9", "1e9X"])
def test_parse_flops_rejects(text):
    with pytest.raises(ValueError, match="trainer.max_flops"):
        parse_flops(text)


def test_bad_trainer_values_name_the_key(compose_cfg, mnist_root: Path, tmp_path: Path):
    from hydra.errors import InstantiationException

    for override, key in [("trainer.batch_size=0", "trainer.batch_size"), ("trainer.precision=fp8", "trainer.precision"),
                          ("optim.lr=-0.1", "optim.lr"), ("trainer.eval_growth=0.5", "trainer.eval_growth")]:
        with pytest.raises((ValueError, InstantiationException), match=key.replace(".", r"\.")):
            run(compose_cfg, tmp_path / "bad", mnist_root, override)


def test_the_evaluation_grid_is_linear_or_geometric():
    from genbench.trainer import eval_due

    assert [s for s in range(1, 1001) if eval_due(s, 200)] == [200, 400, 600, 800, 1000]
    # growth 1.5 from 200: round(200 * 1.5^k), the points an evenly spaced log axis needs
    expected = sorted({round(200 * 1.5**k) for k in range(30)} & set(range(1, 100_001)))
    assert expected[:5] == [200, 300, 450, 675, 1012]
    assert [s for s in range(1, 100_001) if eval_due(s, 200, 1.5)] == expected
    assert [s for s in range(1, 70) if eval_due(s, 1, 2.0)] == [1, 2, 4, 8, 16, 32, 64]
