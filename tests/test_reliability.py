"""The reliability suite (issue #13), Trainer and checkpoint side: kills, crashes while saving, corrupt
and crafted checkpoints, missing RNG state, NaN, disk full, signals, TensorBoard after resumes and
changed configs on resume. Each test asserts what a user would check. In-process and step-counted: a
"kill -9" is a run whose newest checkpoints are taken away, as if it died after writing an older one
(the real kill -9 through a subprocess is the slow test at the end)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genbench.atomic import WriteError, atomic_write
from genbench.checkpoint import LAST, CheckpointError, load_checkpoint, load_model
from genbench.train import train
from genbench.trainer import NonFiniteError, ResumeMismatch, Trainer
from tests.conftest import tiny_overrides

FAMILIES = {"diffusion": [], "gan": ["model=gan"], "vae": ["model=vae"]}  # experiment=smoke shrinks each


def overrides(data_root: Path, family: str = "diffusion", *extra: str) -> list[str]:
    return [*tiny_overrides(data_root), *FAMILIES[family], *extra]


def run(compose_cfg, run_dir: Path, data_root: Path, *extra: str, family: str = "diffusion") -> Trainer:
    return train(compose_cfg("train", overrides(data_root, family, *extra)), str(run_dir))


def same_state(a: dict, b: dict) -> None:
    """Model, EMA and every optimizer's state equal, bit for bit."""
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for name, opt in a["optimizers"].items():
        for i, s in opt["state"].items():
            for k, v in s.items():
                other = b["optimizers"][name]["state"][i][k]
                assert torch.equal(v, other) if torch.is_tensor(v) else v == other, (name, i, k)


def kill_after(run_dir: Path, step: int) -> None:
    """What a kill -9 leaves: the checkpoint of `step` as last.pt, nothing newer (events past it stay in tb/)."""
    folder = run_dir / "checkpoints"
    for p in folder.glob("step_*.pt"):
        if int(p.stem.split("_")[1]) > step:
            p.unlink()
    (folder / LAST).unlink()
    os.link(folder / f"step_{step:08d}.pt", folder / LAST)


# 1. kill -9, then the same command resumes: bit-identical to an uninterrupted run, every family, EMA on and off
@pytest.mark.parametrize("family, ema", [("diffusion", "0.999"), ("diffusion", "0.0"), ("gan", "0.999"), ("vae", "0.999")])
def test_killed_run_resumes_bit_identical(compose_cfg, mnist_root: Path, tmp_path: Path, family: str, ema: str):
    extra = ("trainer.max_steps=6", f"trainer.ema_decay={ema}")
    run(compose_cfg, tmp_path / "full", mnist_root, *extra, family=family)
    run(compose_cfg, tmp_path / "killed", mnist_root, *extra, family=family)
    kill_after(tmp_path / "killed", 2)
    run(compose_cfg, tmp_path / "killed", mnist_root, *extra, family=family)  # the same command
    full, resumed = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "killed")
    assert full["step"] == resumed["step"] == 6
    same_state(full, resumed)
    if family == "gan":
        assert set(full["optimizers"]) == {"g", "d"}


# 2. a crash while saving leaves the previous checkpoint intact and loadable
def test_crash_inside_a_save_keeps_the_previous_checkpoint(compose_cfg, mnist_root: Path, tmp_path: Path, monkeypatch):
    run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=2")
    before = load_checkpoint(tmp_path / "r")
    real_replace = os.replace

    def crash(src, dst):  # the temporary file is complete; the process dies before the rename
        if str(dst).endswith(".pt"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=4")
    monkeypatch.undo()
    after = load_checkpoint(tmp_path / "r")
    assert after["step"] == before["step"] == 2
    assert not list((tmp_path / "r" / "checkpoints").glob(".*.tmp"))  # no partial file left behind


def test_a_partial_file_from_a_killed_save_is_removed_on_resume(compose_cfg, mnist_root: Path, tmp_path: Path):
    run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=2")
    stale = tmp_path / "r" / "checkpoints" / ".step_00000004.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=4")
    assert not stale.exists() and load_checkpoint(tmp_path / "r")["step"] == 4


# 3. a truncated or corrupt last.pt: one line naming the file; resume falls back to the newest good step file
@pytest.mark.parametrize("damage", ["truncate", "random_bytes", "pickle_bytes"])
def test_corrupt_last_checkpoint(compose_cfg, mnist_root: Path, tmp_path: Path, damage: str, caplog):
    run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=6", "trainer.keep_checkpoints=3")
    last = tmp_path / "r" / "checkpoints" / LAST
    if damage == "truncate":  # last.pt is a hard link to step 6: both are cut short
        with open(last, "r+b") as f:
            f.truncate(last.stat().st_size // 2)
        expected_step = 4
    elif damage == "pickle_bytes":  # bytes that make torch's unpickler fail inside (IndexError: pop from empty list)
        last.unlink()
        last.write_bytes(b"\x80\x02e.")
        expected_step = 6
    else:  # a new file in last.pt's place: step 6 is still good
        last.unlink()
        last.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)))
        expected_step = 6
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "r")  # what sample and eval do: refuse, in one line naming the file
    assert str(last) in str(e.value) and "\n" not in str(e.value) and "weights_only" not in str(e.value)
    with caplog.at_level("WARNING"):
        trainer = run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=8")
    assert f"newest good checkpoint instead: {last.parent / f'step_{expected_step:08d}.pt'}" in caplog.text
    assert trainer.step == 8 and load_checkpoint(tmp_path / "r")["step"] == 8


# 4. a crafted pickle in place of a checkpoint is refused, and nothing in it runs
class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_crafted_pickle_checkpoint_runs_nothing(compose_cfg, mnist_root: Path, tmp_path: Path):
    run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=2")
    marker = tmp_path / "pwned"
    last = tmp_path / "r" / "checkpoints" / LAST
    last.unlink()
    torch.save({"format_version": 1, "payload": _Payload(marker)}, last)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(last)
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "r")
    assert not marker.exists()


# 5. a checkpoint without RNG state is an error on resume, not a silent divergence
def test_checkpoint_without_rng_is_refused_on_resume(compose_cfg, mnist_root: Path, tmp_path: Path):
    run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=2", "trainer.keep_checkpoints=1")
    folder = tmp_path / "r" / "checkpoints"
    state = torch.load(folder / LAST, weights_only=True)
    del state["rng"]
    for p in folder.glob("*.pt"):
        p.unlink()
    torch.save(state, folder / "step_00000002.pt")
    os.link(folder / "step_00000002.pt", folder / LAST)
    with pytest.raises(CheckpointError, match="no RNG state"):
        run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=4")


# 6. NaN or Inf stops the run before the optimizer step; no checkpoint with non-finite weights is written
@pytest.mark.parametrize("family", list(FAMILIES))
def test_absurd_learning_rate_stops_with_the_term_and_step(compose_cfg, mnist_root: Path, tmp_path: Path, family: str):
    with pytest.raises(NonFiniteError) as e:
        run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=50", "trainer.grad_clip=null",
            "trainer.lr_warmup_steps=0", "optim.lr=1e30", family=family)
    message = str(e.value)
    assert "train/" in message and "at step" in message and "\n" not in message
    for path in (tmp_path / "r" / "checkpoints").glob("*.pt"):  # whatever was saved is finite
        state = torch.load(path, weights_only=True)
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_negative_grad_clip_is_refused(compose_cfg, mnist_root: Path, tmp_path: Path):
    with pytest.raises(Exception, match=r"trainer\.grad_clip=-1"):
        run(compose_cfg, tmp_path / "r", mnist_root, "trainer.grad_clip=-1")


# 10. disk full while writing a checkpoint or metrics.json: one line naming the path, the old file intact
def test_disk_full_names_the_path_and_keeps_the_previous_checkpoint(compose_cfg, mnist_root: Path, tmp_path: Path,
                                                                   monkeypatch):
    run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=2")
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(WriteError) as e:
        run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=4")
    message = str(e.value)
    assert "step_00000004.pt" in message and "No space left on device" in message and "\n" not in message
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(tmp_path / "r")["step"] == 2  # the previous one, intact
    assert run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=4").step == 4  # space is back: resumes


def test_disk_full_in_a_json_write_keeps_the_old_file(tmp_path: Path):
    path = tmp_path / "metrics.json"
    path.write_text('{"fid": 1}')

    def write(f):
        f.write(b'{"fid": ')
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed (File too large)")

    with pytest.raises(WriteError, match="metrics.json: File too large; the previous metrics.json is intact"):
        atomic_write(path, write)
    assert path.read_text() == '{"fid": 1}' and not list(tmp_path.glob(".*.tmp"))


# 12. SIGTERM, SIGUSR1, SIGUSR2 and SIGINT: checkpoint, stop, exit 128 + N with a resume command
def signal_at(monkeypatch, step: int, signum: int) -> None:
    """Send `signum` to this process in the middle of training step `step`."""
    original = Trainer._optimise

    def _optimise(self, *args, **kwargs):
        if self.step + 1 == step:
            os.kill(os.getpid(), signum)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_optimise", _optimise)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT])
def test_signals_checkpoint_and_exit_preempted(mnist_root: Path, tmp_path: Path, monkeypatch, capsys, signum: int):
    from genbench.cli import main

    signal_at(monkeypatch, 2, signum)
    run_dir = tmp_path / "r"
    code = main(["train", *overrides(mnist_root, "diffusion", "trainer.max_steps=100", "trainer.checkpoint_every=0"),
                 f"hydra.run.dir={run_dir}"])
    out = "".join(capsys.readouterr())
    assert code == 128 + signum
    assert load_checkpoint(run_dir)["step"] == 2  # saved at the step the signal ended
    assert f"pre-empted by {signal.Signals(signum).name} at step 2" in out and "Traceback" not in out
    assert "resume with: genbench train" in out and f"hydra.run.dir={run_dir}" in out
    assert f"pre-empted by {signal.Signals(signum).name}" in (run_dir / "train.log").read_text()
    assert signal.getsignal(signum) is not Trainer._on_signal  # handlers are put back


def test_the_previous_handler_runs_after_the_checkpoint(compose_cfg, mnist_root: Path, tmp_path: Path, monkeypatch):
    """submitit's SIGUSR2 handler requeues the job: it must still run, once our checkpoint is on disk."""
    seen = []
    previous = signal.signal(signal.SIGUSR2, lambda s, f: seen.append(load_checkpoint(tmp_path / "r")["step"]))
    try:
        signal_at(monkeypatch, 2, signal.SIGUSR2)
        trainer = run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=100", "trainer.checkpoint_every=0")
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert trainer.stop_signal == signal.SIGUSR2 and seen == [2]


def test_a_signalled_sweep_stops_instead_of_running_the_next_job(mnist_root: Path, tmp_path: Path, monkeypatch):
    from genbench.cli import main

    signal_at(monkeypatch, 2, signal.SIGTERM)
    sweep = tmp_path / "sweep"
    code = main(["train", "-m", *overrides(mnist_root, "diffusion", "trainer.max_steps=4"), "seed=0,1",
                 f"hydra.sweep.dir={sweep}"])
    assert code == 128 + signal.SIGTERM
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 1 and load_checkpoint(sweep / jobs[0])["step"] == 2  # job 0 saved; job 1 never started


# 13. repeated resumes leave one TensorBoard value per tag per step, in order
def scalars_as_tensorboard_shows(tb: Path) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb))
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_three_kills_and_three_requeues_leave_one_value_per_step(compose_cfg, mnist_root: Path, tmp_path: Path,
                                                                 monkeypatch):
    run_dir = tmp_path / "r"
    extra = ("trainer.log_every=1", "trainer.checkpoint_every=2", "trainer.keep_checkpoints=5")
    for target in (4, 6, 8):  # kill -9 after two more steps than the last checkpoint
        run(compose_cfg, run_dir, mnist_root, f"trainer.max_steps={target}", *extra)
        kill_after(run_dir, target - 2)
    for stop in (9, 11, 13):  # requeues: a signal, a checkpoint, the same command again
        monkeypatch.undo()
        signal_at(monkeypatch, stop, signal.SIGUSR2)
        assert run(compose_cfg, run_dir, mnist_root, "trainer.max_steps=20", *extra).stop_signal == signal.SIGUSR2
    monkeypatch.undo()
    run(compose_cfg, run_dir, mnist_root, "trainer.max_steps=16", *extra)
    steps = scalars_as_tensorboard_shows(run_dir / "tb")
    assert steps["train/loss"] == list(range(1, 17))
    for tag, seen in steps.items():
        assert seen == sorted(set(seen)), tag


# 14. resuming with a changed architecture or another model: refused, naming the keys
def test_changed_config_on_resume_is_refused_naming_the_keys(compose_cfg, mnist_root: Path, tmp_path: Path):
    run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=2")
    with pytest.raises(ResumeMismatch) as e:
        run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=4", "model.network.base_channels=16", "seed=3")
    message = str(e.value)
    assert "model.network.base_channels (8 -> 16)" in message and "seed (0 -> 3)" in message
    assert len(message) < 600 and "\n" not in message
    with pytest.raises(ResumeMismatch, match="model._target_"):
        run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=4", family="vae")
    # budgets, logging and evaluation may change: the run resumes
    assert run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=4", "trainer.log_every=1").step == 4


# budgets and GPU presets
def test_flop_budget_stops_at_the_first_step_past_it(compose_cfg, mnist_root: Path, tmp_path: Path):
    first = run(compose_cfg, tmp_path / "probe", mnist_root, "trainer.max_steps=1")
    per_step = first.compute["train_flops_per_image"] * first.batch_size
    trainer = run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=null", f"trainer.max_flops={3.5 * per_step}")
    assert trainer.step == 4 and trainer.train_flops == pytest.approx(4 * per_step)
    state = load_checkpoint(tmp_path / "r")
    assert state["compute"]["train_flops"] == pytest.approx(4 * per_step)


def test_gpu_preset_without_a_gpu_is_refused_before_any_work(compose_cfg, mnist_root: Path, tmp_path: Path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    from genbench.cli import main

    code = main(["train", "trainer=gpu", "data=mnist", f"data.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'r'}"])
    assert code == 2  # refused on the device, before the (missing) data was read
    assert "no CUDA device is visible" in capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_per_optimizer_learning_rates_are_logged(compose_cfg, mnist_root: Path, tmp_path: Path):
    run(compose_cfg, tmp_path / "r", mnist_root, "trainer.max_steps=2", family="gan")
    tags = scalars_as_tensorboard_shows(tmp_path / "r" / "tb")
    assert {"train/lr_g", "train/lr_d", "perf/train_time_s", "perf/train_flops"} <= set(tags)


@pytest.mark.slow
def test_real_kill_9_then_the_same_command_resumes(mnist_root: Path, tmp_path: Path):
    """A real SIGKILL through the console script, mid-run, then the same command: equal to an uninterrupted run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "genbench", "train",
            *overrides(mnist_root, "diffusion", "trainer.max_steps=300", "trainer.checkpoint_every=5")]
    subprocess.run([*args, f"hydra.run.dir={tmp_path / 'full'}"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen([*args, f"hydra.run.dir={tmp_path / 'k'}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((tmp_path / "k" / "checkpoints").glob("step_*.pt"))) < 2:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    subprocess.run([*args, f"hydra.run.dir={tmp_path / 'k'}"], env=env, check=True, capture_output=True)
    same_state(load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "k"))
    shutil.rmtree(tmp_path / "k")


@pytest.mark.slow
def test_a_real_file_size_limit_is_one_line_and_the_run_resumes_after(mnist_root: Path, tmp_path: Path):
    """`ulimit -f` below a checkpoint's size (the disk-full case without a tiny tmpfs): the console script
    exits 2 with one line naming the file, the previous checkpoint stays, and once the limit is gone the
    same command resumes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "genbench", "train", *overrides(mnist_root), f"hydra.run.dir={tmp_path / 'r'}"]
    subprocess.run([*args, "trainer.max_steps=2"], env=env, check=True, capture_output=True)
    size_kb = (tmp_path / "r" / "checkpoints" / LAST).stat().st_size // 1024
    limited = subprocess.run(["bash", "-c", f'ulimit -f {size_kb // 2} && exec "$@"', "bash", *args, "trainer.max_steps=4"],
                             env=env, capture_output=True, text=True)
    lines = [line for line in limited.stderr.splitlines() if line.startswith("genbench: error")]
    assert limited.returncode == 2 and len(lines) == 1 and "step_00000004.pt: File too large" in lines[0], limited.stderr
    assert "Traceback" not in limited.stderr
    assert load_checkpoint(tmp_path / "r")["step"] == 2
    subprocess.run([*args, "trainer.max_steps=4"], env=env, check=True, capture_output=True)
    assert load_checkpoint(tmp_path / "r")["step"] == 4


# 11. two sweeps (or runs) started in the same second get their own folders: a per-process uid in each name
def test_run_and_sweep_folders_carry_a_per_process_uid(compose_cfg):
    """The behaviour end to end (two sweeps started together) is tests/test_sweep.py's slow test."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from genbench import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    GlobalHydra.instance().clear()
    hydra_cfg = OmegaConf.to_container(cfg.hydra, resolve=False)
    assert hydra_cfg["run"]["dir"].endswith("-${uid:}") and hydra_cfg["sweep"]["dir"].endswith("-${uid:}")
    import genbench.train

    assert len(genbench.train._UID) == 6 and OmegaConf.create({"u": "${uid:}"}).u == genbench.train._UID


def test_the_readme_table_names_tests_that_exist():
    """README's "What survives what": every test it names is defined where it says."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("## What survives what", 1)[1].split("\n## ", 1)[0]
    named = 0
    for row in (line for line in table.splitlines() if line.startswith("| ") and "test_" in line):
        cell = row.rstrip(" |").rsplit(" | ", 1)[1]
        current = "tests/test_reliability.py"
        for path, same, name in re.findall(r"`(?:(tests/[\w/]+\.py)::|(::))?(test_\w+)`", cell):
            current = path or (current if same else "tests/test_reliability.py")  # `::name`: the file named before
            source = (Path(__file__).resolve().parents[1] / current).read_text()
            assert f"def {name}(" in source, f"{current}::{name}"
            named += 1
    assert named >= 30
