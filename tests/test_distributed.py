"""torchrun + DDP: the rank logic in-process (fast), and 2-process gloo runs on CPU (slow): a step on 2
processes equals a step on one with the same global batch, every family trains, and a 2-process run
resumes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from genbench import distributed
from genbench.checkpoint import load_checkpoint
from genbench.distributed import Context
from tests.conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[1]


def test_context_from_torchrun_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.from_env() == Context() and not Context().enabled
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = distributed.from_env()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.enabled, ctx.is_main) == (3, 4, 1, True, False)


def test_shards_are_contiguous_and_cover_the_global_batch():
    batch = torch.arange(12)
    shards = [distributed.shard(batch, Context(r, 3)) for r in range(3)]
    assert torch.equal(torch.cat(shards), batch) and [len(s) for s in shards] == [4, 4, 4]
    assert distributed.shard(batch, Context()) is batch
    with pytest.raises(ValueError, match=r"trainer.batch_size=12 is the global batch .* multiple of 5"):
        distributed.shard(batch, Context(0, 5))


def test_checkpoint_keys_do_not_depend_on_ddp(tmp_path: Path):
    """A family with DDP around its networks saves the keys a single process saves."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = nn.Module()
        model.net, model.frozen = nn.Linear(2, 3), nn.Linear(3, 1).requires_grad_(False)
        plain = model.state_dict()
        names = distributed.wrap(model, Context(0, 2))
        assert names == ["net"] and isinstance(model.net, nn.parallel.DistributedDataParallel)
        assert "net.module.weight" in model.state_dict()
        assert distributed.plain_state_dict(model, names).keys() == plain.keys()
        distributed.unwrap(model, names)
        assert isinstance(model.net, nn.Linear)
    finally:
        dist.destroy_process_group()


def test_a_sweep_under_torchrun_is_refused():
    with pytest.raises(ValueError, match="torchrun"):
        distributed.shared_run_dir(Context(0, 2), ["-m", "seed=0,1"])
    assert distributed.shared_run_dir(Context(), ["seed=0"]) == ["seed=0"]


def torchrun(nproc: int, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path: Path):
    """A deterministic loss (tests/ddp_worker.py): 2 processes x 8 images == 1 process x 16, to float tolerance."""
    for n in (1, 2):
        done = torchrun(n, str(REPO / "tests" / "ddp_worker.py"), str(tmp_path / f"np{n}"), cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (load_checkpoint(tmp_path / f"np{n}") for n in (1, 2))
    assert one["images_seen"] == two["images_seen"] == 16 * 5
    for k in one["model"]:
        torch.testing.assert_close(one["model"][k], two["model"][k], rtol=1e-5, atol=1e-6)
    assert not torch.equal(one["model"]["net.weight"], torch.zeros_like(one["model"]["net.weight"]))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["diffusion", "gan", "vae"])
def test_every_family_trains_on_two_processes_and_resumes(mnist_root: Path, tmp_path: Path, family: str):
    args = [*tiny_overrides(mnist_root), f"model={family}"]
    run_dir = tmp_path / "run"
    first = torchrun(2, "-m", "genbench", "train", *args, "trainer.max_steps=4", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    state = load_checkpoint(run_dir)
    assert state["step"] == 4 and state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    assert not (run_dir / ".hydra" / "train_rank1.log").exists() and (run_dir / "train_rank1.log").exists()
    again = torchrun(2, "-m", "genbench", "train", *args, "trainer.max_steps=6", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in (run_dir / "train.log").read_text() and load_checkpoint(run_dir)["step"] == 6


def test_a_submitit_job_of_several_tasks_is_a_distributed_context(monkeypatch):
    """hydra/launcher=slurm with tasks_per_node > 1: the ranks come from submitit's job environment."""
    monkeypatch.setattr(os, "environ", dict(os.environ))  # submitit exports into os.environ: keep that here
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    for k, v in {"SLURM_JOB_ID": "1234", "SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
                 "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu07"}.items():
        monkeypatch.setenv(k, v)
    ctx = distributed.from_env()
    assert (ctx.rank, ctx.world_size, ctx.local_rank) == (5, 8, 1)
    assert os.environ["MASTER_ADDR"] == "gpu07" and 20000 <= int(os.environ["MASTER_PORT"]) <= 60000


@pytest.mark.slow
def test_submitit_local_with_two_tasks_trains_one_model(mnist_root: Path, tmp_path: Path):
    """The Slurm launcher's code path on this machine: one job, two tasks, one DDP run in one folder."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    sweep = tmp_path / "sweep"
    done = subprocess.run([sys.executable, "-m", "genbench", "train", "-m", *tiny_overrides(mnist_root), "trainer.max_steps=4",
                           "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (job,) = [p for p in sweep.iterdir() if (p / "checkpoints").is_dir()]
    state = load_checkpoint(job)
    assert state["step"] == 4 and state["world_size"] == 2 and (job / "train_rank1.log").exists()
