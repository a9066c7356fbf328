"""Sweeps (`genbench train -m`) end to end through the console script, with each launcher, then compare.

A job here is a tiny GAN trained for 3 steps on Fashion-MNIST and scored on 48 samples.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genbench.data import DatasetNotFound, fashion_mnist

GENBENCH = [sys.executable, "-m", "genbench"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
SMALL_EVAL = ["eval.num_samples=48", "eval.num_reference=256", "eval.metrics.kid_subset_size=24", "eval.metrics.isc_splits=4",
              "eval.likelihood_images=8", "eval.diagnostic_images=4", "eval.batch_size=48"]
TINY_JOB = ["model=gan", "experiment=smoke", "trainer.max_steps=3", "trainer.sample_every=0", "trainer.device=cpu",
            "trainer.progress=false", *SMALL_EVAL]


@pytest.fixture(scope="module", autouse=True)
def needs_fashion_mnist():
    try:
        fashion_mnist()
    except DatasetNotFound as e:
        pytest.skip(str(e))


def sweep(cwd: Path, *args: str) -> subprocess.Popen:
    """`genbench train -m` over seed=0,1 (two jobs) into multirun/same-<uid>: only the uid tells two sweeps apart."""
    return subprocess.Popen([*GENBENCH, "train", "-m", *TINY_JOB, "seed=0,1", "hydra.sweep.dir=multirun/same-${uid:}",
                             f"eval.cache_dir={cwd / 'cache'}", *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def jobs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())


def tensorboard_runs(logdir: Path) -> list[str]:
    """The runs `tensorboard --logdir logdir` lists."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    mux = EventMultiplexer().AddRunsFromDirectory(str(logdir))
    mux.Reload()
    return sorted(mux.Runs())


@pytest.mark.slow  # subprocess sweeps on real Fashion-MNIST: minutes
def test_basic_and_joblib_sweeps_started_together_then_compare(tmp_path: Path):
    basic = sweep(tmp_path)
    joblib = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=1")
    finish(basic)
    log = finish(joblib)
    assert "Joblib.Parallel(n_jobs=2" in log
    sweeps = sorted((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 2, sweeps  # same pattern, same second: the uid keeps them apart
    for sweep_dir in sweeps:
        runs = jobs(sweep_dir)
        assert [r.name for r in runs] == ["0-gan-seed0", "1-gan-seed1"]
        for r in runs:  # every job complete in its own folder, its TensorBoard logs included
            assert (r / "metrics.json").is_file() and (r / "checkpoints" / "last.pt").is_file()
        assert tensorboard_runs(sweep_dir) == [f"{r.name}/tb" for r in runs]
    joblib_dir = next(s for s in sweeps if "joblib" in (s / "multirun.yaml").read_text())
    for r in jobs(joblib_dir):  # threads=1: each of the two parallel jobs on one core
        assert "- 1 CPU threads" in (r / "train.log").read_text()
    # compare through the console script, into the sweep folder
    result = subprocess.run([*GENBENCH, "compare", str(joblib_dir), "--grid-samples", "4"], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "2 runs, 1 variants, 0 warnings" in result.stdout
    with open(joblib_dir / "compare.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["variant"], row["family"], row["runs"], row["seeds"]) == ("gan", "gan", "2", "0 1")
    assert row["fid_n"] == "2" and float(row["fid_std"]) >= 0 and float(row["images_seen_mean"]) == 3 * 16


@pytest.mark.slow  # subprocess sweeps on real Fashion-MNIST: minutes
def test_submitit_local_runs_the_slurm_launcher_code_here(tmp_path: Path):
    """hydra/launcher=submitit_local: the submitit plugin, with local processes instead of Slurm jobs."""
    out = finish(sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "threads=1"))
    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    assert "Submitit 'local' sweep output dir" in out
    runs = jobs(sweep_dir)
    assert len(runs) == 2 and all((r / "metrics.json").is_file() for r in runs)
    assert list((sweep_dir / ".submitit").iterdir())  # submitit's own job folders sit inside the sweep
    assert tensorboard_runs(sweep_dir) == [f"{r.name}/tb" for r in runs]


@pytest.mark.parametrize("launcher, lines", [
    ("slurm", ["#SBATCH --gpus-per-node=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --nodes=1", "#SBATCH --signal=USR2@120"]),
    ("slurm_multigpu", ["#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4", "#SBATCH --nodes=1"]),
    ("slurm_multinode", ["#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4", "#SBATCH --nodes=2"]),
])
def test_slurm_launcher_config_builds_a_valid_sbatch_script(tmp_path: Path, monkeypatch, launcher: str, lines: list[str]):
    """hydra/launcher=slurm* compose on the plugin's schema, and submitit accepts every parameter they set."""
    import submitit

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # as if srun were here
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from genbench import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    launcher = OmegaConf.to_container(cfg.hydra.launcher)
    assert get_class(launcher.pop("_target_")).__name__ == "SlurmLauncher"
    # the launcher's own mapping of config keys to submitit parameters (BaseSubmititLauncher.launch)
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm", slurm_max_num_timeout=launcher.pop("max_num_timeout"))
    launcher.pop("submitit_folder")
    launcher["name"] = "genbench"
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in launcher.items()})
    script = executor._executor._make_submission_file_text("genbench train", "0")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=240", "#SBATCH --cpus-per-task=8", *lines):
        assert line in script, script
    assert "srun" in script  # each task is started by srun: genbench.distributed reads its rank from submitit


def test_trilemma_sweeps_three_families_under_one_time_budget(compose_cfg):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from genbench import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=trilemma"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert dict(cfg.hydra.sweeper.params) == {"model": "gan,vae,diffusion", "seed": "0,1,2"}
    for family in ("gan", "vae", "diffusion"):
        job = compose_cfg("train", ["experiment=trilemma", f"model={family}"])
        assert job.trainer.max_time == "10m" and job.trainer.max_steps is None and job.trainer.eval_every > 0
        assert job.eval.num_samples == 10000 and job.eval.at_end  # the full protocol
        assert job.model._target_.split(".")[-2] == family
