"""scripts/trilemma.py, the one resumable command of the trilemma sweep: its jobs and their folders, the states
it reads from them, its plan and ETA arithmetic, bad input, and passing a signal on to a running job.

The default tests run no training: folders are faked with genbench's own checkpoint and record writers, and
`genbench train` is replaced by tiny Python children. The slow test runs the real script on a tiny config,
kills it mid-sweep, and re-runs it to resume and then skip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from genbench.checkpoint import save_checkpoint
from genbench.records import add_record
from tests.conftest import write_mnist_like

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "trilemma.py"
spec = importlib.util.spec_from_file_location("trilemma", SCRIPT)
tri = importlib.util.module_from_spec(spec)
sys.modules["trilemma"] = tri  # dataclasses look their module up while the script loads
spec.loader.exec_module(tri)


def fake_checkpoint(run_dir: Path, step: int, train_time: float = 0.0, flops_per_image: float = 1e6,
                    batch_size: int = 8) -> None:
    """A checkpoint as the Trainer writes it (every required key), without a model."""
    save_checkpoint({"step": step, "train_time": train_time, "images_seen": step * batch_size,
                     "compute": {"train_flops_per_image": flops_per_image, "train_flops": step * batch_size * flops_per_image},
                     "model": {}, "ema": {}, "optimizers": {}, "schedulers": {}, "rng": {},
                     "config": {"trainer": {"batch_size": batch_size}}, "image_shape": [1, 16, 16]}, run_dir, keep=1)


def fake_finished(run_dir: Path, step: int = 40, fid: float = 12.5, **record) -> None:
    fake_checkpoint(run_dir, step)
    add_record(run_dir, {"metrics": {"fid": fid}, "checkpoint_step": step, "num_generated": 24, "seed": 0,
                         "protocol": {"id": "test"}, **record}, headline=True)


# ---- jobs --------------------------------------------------------------------------------------------------
def test_jobs_are_budgets_x_families_x_seeds_in_fixed_folders(tmp_path):
    budgets = tri.parse_budgets("flops,time", "1.85e14", "10m,90s")
    jobs = tri.make_jobs(tri.parse_families("gan,vae,diffusion"), tri.parse_seeds("0,1,2"), budgets)
    assert [b.name for b in budgets] == ["flops-1.85e14", "time-10m", "time-90s"]
    assert len(jobs) == 27 and len({j.name for j in jobs}) == 27
    assert jobs[0].name == "flops-1.85e14/gan-seed0" and jobs[-1].name == "time-90s/diffusion-seed2"
    assert jobs[4].run_dir(tmp_path) == tmp_path / "flops-1.85e14" / "vae-seed1"
    # the same flags give the same folders: that is how a re-run finds them
    again = tri.make_jobs(["gan", "vae", "diffusion"], [0, 1, 2], tri.parse_budgets("flops,time", "185T", "10m,1m30s"))
    assert [j.run_dir(tmp_path) for j in again] == [j.run_dir(tmp_path) for j in jobs]
    overrides = jobs[4].overrides(tmp_path, ["trainer.eval_every=100"], threads=1)
    assert overrides == ["experiment=trilemma", "model=vae", "seed=1", "trainer.eval_every=100", "trainer.max_time=null",
                         "trainer.max_flops=1.85e+14", "threads=1", f"hydra.run.dir={tmp_path / 'flops-1.85e14' / 'vae-seed1'}"]
    assert jobs[-1].budget.overrides("gan") == ["trainer.max_time=90", "trainer.max_flops=null"]
    assert tri.Budget("flops", 2e9).name == "flops-2e9"


@pytest.mark.parametrize("argv, says", [
    (["--families", "gan,gann"], "--families: 'gann' is not a model of conf/model/; one of: dcgan, diffusion"),
    (["--flops", "0"], "--flops='0' must be positive"),
    (["--flops", "null"], "--flops='null' must be a positive budget"),
    (["--time", "-5"], "--time='-5' is not a duration"),
    (["--budgets", "flop"], "--budgets: 'flop' is not one of: flops, time (did you mean flops?)"),
    (["--seeds", "0,x"], "--seeds: 'x' is not a non-negative integer"),
    (["--seeds", "0,0"], "names an item twice"),
    (["--flops", "1e9,1000000000"], "--flops='1e9,1000000000' gives one budget twice"),
    (["--jobs", "3", "--threads", "2"], "--jobs=3 exceeds --threads=2"),
    (["--jobs", "two"], "argument --jobs: invalid int value: 'two'"),
    (["model=vae"], "model is set by the script for each job; use --families"),
    (["trainer.max_flops=1e12"], "use --budgets flops --flops"),
    (["trainer.max_stepz=3"], "trainer.max_stepz is not a key of genbench train's config (did you mean trainer.max_steps?)"),
    (["--nfe-samplers", "ddpm,ddmi"], "--nfe-samplers: 'ddmi' is not a sampler of conf/sampler/; one of: ddim, ddpm"),
    (["--nfe-steps", "10,0"], "--nfe-steps: 0 steps draws nothing"),
    (["--nfe-steps", "10,x"], "--nfe-steps: 'x' is not a non-negative integer; write e.g. --nfe-steps 10,20,50,100"),
    (["--nfe-families", "difusion"], "--nfe-families: 'difusion' is not a model of conf/model/"),
    (["--nfe-samples", "0"], "--nfe-samples=0 must be at least 1"),
    (["--measure-pace", "p.json", "--pace-seconds", "0"], "--pace-seconds=0 must be positive"),
])
def test_bad_input_fails_in_one_line_before_any_work(tmp_path, capsys, argv, says):
    root = tmp_path / "sweep"
    assert tri.main(["--root", str(root), "--dry-run", "--no-probe", "--families", "gan", "--budgets", "flops", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trilemma: error: ") and says in err and err.count("\n") == 1, err
    assert not root.exists()


# ---- the state of a job's folder ------------------------------------------------------------------------------
def test_job_states_from_the_folders(tmp_path):
    fake_finished(tmp_path / "done", step=40, fid=12.5)
    fake_checkpoint(tmp_path / "half", step=7, train_time=3.5, flops_per_image=2e6, batch_size=8)
    (tmp_path / "started" / ".hydra").mkdir(parents=True)  # killed before its first checkpoint
    (tmp_path / "corrupt" / "checkpoints").mkdir(parents=True)
    (tmp_path / "corrupt" / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    assert tri.job_state(tmp_path / "done") == tri.State("done", tri.Progress(40), "FID 12.5")
    assert tri.job_state(tmp_path / "half") == tri.State("resume", tri.Progress(7, 3.5, 7 * 8 * 2e6))
    assert tri.job_state(tmp_path / "started").kind == "new"
    assert tri.job_state(tmp_path / "missing").kind == "new"
    broken = tri.job_state(tmp_path / "corrupt")
    assert broken.kind == "broken" and "last.pt" in broken.note
    # checkpoints but no headline record: not done, whatever else the folder holds
    fake_checkpoint(tmp_path / "unscored", step=50)
    (tmp_path / "unscored" / "metrics.json").write_text(json.dumps({"format_version": 2, "headline": None, "records": {}}))
    assert tri.job_state(tmp_path / "unscored").kind == "resume"


SMALL_EVAL = ["eval.extractor=fmnist-cnn", "eval.num_samples=48", "eval.num_reference=128", "eval.metrics.kid_subset_size=24",
              "eval.metrics.isc_splits=4", "eval.likelihood_images=8", "eval.diagnostic_images=4", "eval.batch_size=48",
              "eval.memorisation.test_images=48", "eval.during_training.num_samples=24",
              "eval.during_training.kid_subset_size=12"]
TINY = ["experiment=smoke", "data=mnist", "data.image_size=16", "trainer.batch_size=8", "trainer.device=cpu",
        "trainer.eval_every=5", *SMALL_EVAL]


def test_the_plan_shows_each_state_and_an_eta_from_a_cached_probe(tmp_path, capsys):
    """A finished job is skipped, a checkpointed one resumes from its step, the rest are new; the ETA uses the
    probe cached in <root>/probes.json, so no probe runs (--no-probe would leave the ETA unknown otherwise)."""
    root, extra = tmp_path / "sweep", [*TINY, f"data.root={tmp_path / 'data'}"]
    argv = ["--root", str(root), "--families", "gan,vae", "--seeds", "0,1", "--budgets", "flops", "--flops", "1e9",
            "--threads", "1", "--no-probe", "--dry-run", *extra]
    fake_finished(root / "flops-1e9" / "gan-seed0", step=40, fid=12.5)
    fake_checkpoint(root / "flops-1e9" / "vae-seed1", step=7)
    job = tri.Job(tri.Budget("flops", 1e9), "vae", 0)
    cfg = tri.compose(job.overrides(root, extra, threads=1))
    key, settings = tri.probe_key(cfg, threads=1, probe_steps=20, probe_samples=100)
    speed = tri.Speed(s_per_step=0.01, flops_per_step=1e7, sample_s_per_image=0.001, score_s_per_image=0.001,
                      eval_fixed_s=2.0, startup_s=5.0)
    tri.save_probe(root, key, {"family": "vae", "measured": "2026-01-01T00:00+00:00", "speed": vars(speed), "settings": settings})
    assert tri.main(argv) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  flops-1e9/")}
    assert "done at step 40 (FID 12.5): skipped" in rows["flops-1e9/gan-seed0"]
    assert rows["flops-1e9/gan-seed1"].split()[1:] == ["new"] + ["?"] * 5  # no probe of the GAN
    assert "resume from step 7" in rows["flops-1e9/vae-seed1"]
    # vae-seed0: smoke's 20 steps come before 1e9 FLOPs (100 steps); 4 evaluations during (5, 10, 15, 20) of 24
    # samples and the final one of 48, at 2 ms per image, + 2 s fixed: 2.288 s; start-up 5 s; training 0.2 s
    assert rows["flops-1e9/vae-seed0"].split()[1:] == ["new", "~20", "0s", "2s", "5s", "7s"]
    assert "not included: gan (no probe)" in out and "probing" not in out and "vae: 0.01 s/step" in out
    assert not (root / "flops-1e9" / "vae-seed0").exists()  # --dry-run starts nothing


def test_a_cached_probe_prices_the_nfe_cells_of_finished_runs(tmp_path, capsys):
    root, extra = tmp_path / "sweep", [*TINY, f"data.root={tmp_path / 'data'}"]
    fake_finished(root / "flops-1e9" / "vae-seed0", step=40)
    job = tri.Job(tri.Budget("flops", 1e9), "vae", 0)
    key, settings = tri.probe_key(tri.compose(job.overrides(root, extra, threads=1)), threads=1, probe_steps=20, probe_samples=100)
    speed = tri.Speed(s_per_step=0.01, flops_per_step=1e7, sample_s_per_image=0.001, score_s_per_image=0.001,
                      eval_fixed_s=2.0, startup_s=5.0)
    tri.save_probe(root, key, {"family": "vae", "measured": "2026-01-01T00:00+00:00", "speed": vars(speed), "settings": settings})
    argv = ["--root", str(root), "--families", "vae", "--seeds", "0", "--budgets", "flops", "--flops", "1e9", "--threads", "1",
            "--nfe-families", "vae", "--nfe-samplers", "ddim", "--nfe-steps", "10,20", "--nfe-samples", "10", "--dry-run", *extra]
    assert tri.main(argv) == 0
    out = capsys.readouterr().out
    # the job is done, so nothing is probed; each cell: 10 x (1 + 1) ms + 2 s fixed + 5 s start-up
    assert "then FID against NFE: 2 evaluation(s) of 10 samples each (ddim x 10,20 steps) on flops-1e9/vae-seed0" in out
    assert "ETA: 14s on this machine" in out and "probing" not in out


# ---- ETA arithmetic ------------------------------------------------------------------------------------------------
SPEED = tri.Speed(s_per_step=0.5, flops_per_step=1e9, sample_s_per_image=0.01, score_s_per_image=0.002,
                  eval_fixed_s=10.0, startup_s=5.0)
FLOPS_RUN = tri.RunSettings(max_steps=None, max_time=None, max_flops=1e12, eval_every=200, eval_growth=1.0, during_samples=1000,
                            final_samples=10000)


def test_eta_of_a_flop_budget_new_and_resumed():
    est = tri.estimate(SPEED, FLOPS_RUN)
    # 1e12 / 1e9 = 1000 steps x 0.5 s; evaluations at 200..1000 (5) of 1000 samples and a final one of 10,000,
    # each image 0.012 s, + 10 s fixed; + 5 s start-up
    assert (est.steps, est.train_s, est.startup_s) == (1000, 500.0, 5.0)
    assert est.eval_s == pytest.approx(5 * 1000 * 0.012 + 10000 * 0.012 + 10.0)
    assert est.total_s == pytest.approx(500 + 60 + 130 + 5)
    resumed = tri.estimate(SPEED, FLOPS_RUN, tri.Progress(step=300, train_time=999.0, train_flops=3e11))
    assert (resumed.steps, resumed.train_s) == (1000, 350.0)  # 700 steps left; its past training time is irrelevant
    assert resumed.eval_s == pytest.approx(4 * 12.0 + 130.0)  # at 400, 600, 800, 1000
    spent = tri.estimate(SPEED, FLOPS_RUN, tri.Progress(step=1000, train_time=500.0, train_flops=1e12))
    assert (spent.steps, spent.train_s, spent.eval_s) == (1000, 0.0, pytest.approx(130.0))  # only the final evaluation


def test_eta_counts_the_evaluations_of_a_geometric_grid():
    run = tri.RunSettings(**{**vars(FLOPS_RUN), "eval_growth": 2.0})
    est = tri.estimate(SPEED, run)  # at 200, 400, 800 on the grid and the last step, 1000
    assert est.eval_s == pytest.approx(4 * 12.0 + 130.0)
    resumed = tri.estimate(SPEED, run, tri.Progress(step=400, train_time=200.0, train_flops=4e11))
    assert resumed.eval_s == pytest.approx(2 * 12.0 + 130.0)  # 800 and 1000 are left


def test_eta_of_a_time_budget_and_the_first_budget_wins():
    time_run = tri.RunSettings(max_steps=None, max_time=600.0, max_flops=None, eval_every=200, eval_growth=1.0, during_samples=1000,
                               final_samples=10000)
    speed = tri.Speed(**{**vars(SPEED), "s_per_step": 0.7})
    est = tri.estimate(speed, time_run)
    assert est.steps == 858 and est.train_s == pytest.approx(600.6)  # ceil(600 / 0.7): the Trainer ends its last step
    assert est.eval_s == pytest.approx(5 * 12.0 + 130.0)  # at 200, 400, 600, 800 and the last step, 858
    capped = tri.estimate(speed, tri.RunSettings(**{**vars(time_run), "max_steps": 100}))
    assert (capped.steps, capped.train_s) == (100, pytest.approx(70.0))
    no_eval = tri.estimate(speed, tri.RunSettings(**{**vars(time_run), "eval_every": 0, "final_samples": 0}))
    assert no_eval.eval_s == 0.0
    # a FLOP budget without a FLOP count cannot be converted to steps
    assert tri.estimate(tri.Speed(**{**vars(SPEED), "flops_per_step": None}), FLOPS_RUN) is None


def test_makespan_fills_the_first_free_slot():
    assert tri.makespan([3.0, 1.0, 1.0, 1.0], jobs=1) == 6.0
    assert tri.makespan([3.0, 1.0, 1.0, 1.0], jobs=2) == 3.0
    assert tri.makespan([1.0, 1.0, 3.0], jobs=2) == 4.0
    assert tri.makespan([], jobs=2) == 0.0


def test_speed_from_a_probe_folder(tmp_path):
    """Without TensorBoard logs the whole training time counts; the evaluation's timings give the per-image costs."""
    fake_checkpoint(tmp_path, step=10, train_time=2.0, flops_per_image=1e6, batch_size=8)
    add_record(tmp_path, {"metrics": {"fid": 1.0}, "checkpoint_step": 10, "num_generated": 50, "protocol": {"id": "t"},
                          "timings_s": {"sampling": 1.0, "metrics": 0.5, "likelihood": 0.25}, "eval_wall_time_s": 2.0},
                 headline=True)
    speed = tri.speed_from_probe(tmp_path, wall_s=9.0, probe_samples=50)
    assert speed == tri.Speed(s_per_step=0.2, flops_per_step=8e6, sample_s_per_image=0.02, score_s_per_image=0.01,
                              eval_fixed_s=0.5, startup_s=5.0)
    # a second evaluation of twice the samples: the per-image costs are the slope, the rest of the first is fixed
    add_record(tmp_path, {"metrics": {"fid": 1.0}, "checkpoint_step": 10, "num_generated": 100, "protocol": {"id": "t2"},
                          "timings_s": {"sampling": 1.5, "metrics": 0.6, "likelihood": 0.25}, "eval_wall_time_s": 2.6})
    speed = tri.speed_from_probe(tmp_path, wall_s=9.0, probe_samples=50)
    assert (speed.sample_s_per_image, speed.score_s_per_image) == (pytest.approx(0.01), pytest.approx(0.002))
    assert speed.eval_fixed_s == pytest.approx(2.0 - 50 * 0.012) and speed.startup_s == 5.0
    (tmp_path / "metrics.json").unlink()
    # the probe that filled this machine's feature cache: that part of its scoring happens once, so no job pays it
    add_record(tmp_path, {"metrics": {"fid": 1.0}, "checkpoint_step": 10, "num_generated": 50, "protocol": {"id": "t"},
                          "timings_s": {"sampling": 1.0, "metrics": 30.5, "likelihood": 0.25, "reference_features": 30.0},
                          "eval_wall_time_s": 32.0}, headline=True)
    speed = tri.speed_from_probe(tmp_path, wall_s=39.0, probe_samples=50)
    assert (speed.score_s_per_image, speed.eval_fixed_s, speed.startup_s) == (0.01, 0.5, 5.0)


# ---- running: skip, signals ------------------------------------------------------------------------------------
# a stand-in for `genbench train`: writes <hydra.run.dir>/ready, then waits for SIGINT/SIGTERM and exits 128+N as
# genbench train does (or ends at once with EXIT set)
CHILD = """
import os, signal, sys, time
run_dir = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("hydra.run.dir="))
signal.signal(signal.SIGTERM, lambda n, f: sys.exit(128 + n))
signal.signal(signal.SIGINT, lambda n, f: sys.exit(128 + n))
open(os.path.join(run_dir, "ready"), "w").close()
if os.environ.get("EXIT"):
    sys.exit(int(os.environ["EXIT"]))
time.sleep(60)
sys.exit(3)
"""


@pytest.fixture
def fake_genbench(monkeypatch):
    monkeypatch.setattr(tri, "genbench", lambda verb, *args: [sys.executable, "-c", CHILD, verb, *args])


def rows_for(root: Path, families: list[str]) -> tuple[object, list]:
    args, jobs = tri.parse_args(["--root", str(root), "--families", ",".join(families), "--seeds", "0", "--budgets", "time",
                                 "--time", "5s", "--threads", "1"])
    return args, [(j, tri.job_state(j.run_dir(root)), None) for j in jobs]


def test_a_finished_job_is_skipped_and_the_others_run(tmp_path, fake_genbench, monkeypatch, capsys):
    monkeypatch.setenv("EXIT", "0")
    fake_finished(tmp_path / "time-5s" / "gan-seed0")
    args, rows = rows_for(tmp_path, ["gan", "vae"])
    with tri.Children() as children:
        assert tri.run_jobs(args, rows, children, threads=1) == []
    out = capsys.readouterr().out
    assert "[1/1] time-5s/vae-seed0" in out and "gan-seed0" not in out
    assert (tmp_path / "time-5s" / "vae-seed0" / "ready").exists() and not (tmp_path / "time-5s" / "gan-seed0" / "ready").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_is_passed_on_and_no_next_job_starts(tmp_path, fake_genbench, capsys, signum):
    args, rows = rows_for(tmp_path, ["gan", "vae"])
    ready = tmp_path / "time-5s" / "gan-seed0" / "ready"

    def send_when_ready():
        for _ in range(600):
            if ready.exists():
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signum)  # as from the terminal or a scheduler: to this process alone

    previous = signal.getsignal(signum)
    sender = threading.Thread(target=send_when_ready)
    with tri.Children() as children:
        sender.start()
        failed = tri.run_jobs(args, rows, children, threads=1)
        sender.join()
    assert signal.getsignal(signum) is previous  # handlers put back
    out = capsys.readouterr().out
    assert failed == [] and children.stop_signal == signum
    assert f"time-5s/gan-seed0: stopped by {signum.name}" in out  # the child exited 128+N: it got the signal
    assert not (tmp_path / "time-5s" / "vae-seed0").exists()  # the next job never started


def test_a_failed_job_does_not_stop_the_others(tmp_path, fake_genbench, monkeypatch, capsys):
    monkeypatch.setenv("EXIT", "1")
    args, rows = rows_for(tmp_path, ["gan", "vae"])
    with tri.Children() as children:
        assert tri.run_jobs(args, rows, children, threads=1) == ["time-5s/gan-seed0", "time-5s/vae-seed0"]
    assert "time-5s/gan-seed0: failed (exit 1)" in capsys.readouterr().out


# ---- FID against NFE --------------------------------------------------------------------------------------------
def nfe_record(run_dir: Path, sampler: str, steps: int, n: int = 1000, step: int = 40, ema: bool = True) -> None:
    add_record(run_dir, {"metrics": {"fid": 50.0}, "checkpoint_step": step, "num_generated": n, "seed": 0, "ema": ema,
                         "sampler": sampler, "nfe": steps, "sampling": {"sampler": sampler, "sampler_steps": steps},
                         "protocol": {"id": "nfe"}})


def test_the_nfe_grid_covers_finished_runs_of_its_families_and_seeds_and_skips_recorded_cells(tmp_path):
    args, jobs = tri.parse_args(["--root", str(tmp_path), "--families", "gan,diffusion", "--seeds", "0,1", "--budgets",
                                 "flops", "--flops", "1e9", "--nfe-samplers", "ddim,dpm_solver", "--nfe-steps", "10,20"])
    assert (args.nfe_samplers, args.nfe_steps, args.nfe_seeds, args.nfe_families) == (["ddim", "dpm_solver"], [10, 20], [0], ["diffusion"])
    run = tmp_path / "flops-1e9" / "diffusion-seed0"
    assert tri.nfe_cells(args, jobs) == []  # not trained yet
    fake_finished(run, step=40)
    fake_finished(tmp_path / "flops-1e9" / "gan-seed0")  # another family
    fake_finished(tmp_path / "flops-1e9" / "diffusion-seed1")  # another seed
    nfe_record(run, "DDIM", 10)  # recorded: skipped
    nfe_record(run, "DPMSolverPP2M", 20, n=500)  # another sample count: not this cell
    nfe_record(run, "DPMSolverPP2M", 10, step=30)  # other weights
    nfe_record(run, "DPMSolverPP2M", 10, ema=False)
    cells = tri.nfe_cells(args, jobs)
    assert [(c.job.name, c.sampler, c.steps) for c in cells] == [
        ("flops-1e9/diffusion-seed0", "ddim", 20), ("flops-1e9/diffusion-seed0", "dpm_solver", 10),
        ("flops-1e9/diffusion-seed0", "dpm_solver", 20)]
    assert cells[0].overrides(tmp_path, 1000) == [
        f"run_dir={run}", "sampler=ddim", "sampler.steps=20", "eval.num_samples=1000", "eval.metrics.kid_subset_size=1000",
        "eval.likelihood_images=0", "eval.diagnostic_images=0", "eval.memorisation.panel=0"]
    assert tri.sampler_class("dpm_solver") == "DPMSolverPP2M" and tri.sampler_class("flow/heun") == "FlowHeun"
    assert tri.nfe_estimate(SPEED, 20, 50, 100) == pytest.approx(100 * (0.01 * 2.5 + 0.002) + 10.0 + 5.0)


# a stand-in for `genbench eval`: stamps its start and end in run_dir, to show when it ran
EVAL_CHILD = r"""
import os, sys, time
run_dir = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("run_dir="))
cell = "-".join(a.split("=", 1)[1] for a in sys.argv if a.startswith(("sampler=", "sampler.steps=")))
with open(os.path.join(run_dir, "stamps"), "a") as f:
    f.write(f"{cell} start {time.monotonic()}\n")
time.sleep(0.3)
with open(os.path.join(run_dir, "stamps"), "a") as f:
    f.write(f"{cell} end {time.monotonic()}\n")
"""


def test_two_evaluations_of_one_run_never_overlap(tmp_path, monkeypatch):
    monkeypatch.setattr(tri, "genbench", lambda verb, *args: [sys.executable, "-c", EVAL_CHILD, verb, *args])
    jobs = [tri.Job(tri.Budget("flops", 1e9), "diffusion", s) for s in (0, 1)]
    cells = [tri.NfeCell(j, "ddim", k) for j in jobs for k in (10, 20)]
    tasks = [tri.Task(c.name, ["eval", *c.overrides(tmp_path, 10)], c.job.run_dir(tmp_path), None) for c in cells]
    with tri.Children() as children:
        assert tri.run_queue(tasks, children, threads=1, jobs=2) == []
    spans = {}
    for job in jobs:
        lines = [line.split() for line in (job.run_dir(tmp_path) / "stamps").read_text().splitlines()]
        assert [(cell, what) for cell, what, _ in lines] == [("ddim-10", "start"), ("ddim-10", "end"),
                                                            ("ddim-20", "start"), ("ddim-20", "end")]  # one after the other
        spans[job.seed] = (float(lines[0][2]), float(lines[-1][2]))
    assert spans[1][0] < spans[0][1]  # the two runs' cells did run side by side


# ---- end to end ---------------------------------------------------------------------------------------------------
@pytest.mark.slow  # the real script and `genbench train` subprocesses: a minute or two on an idle machine
def test_killed_sweep_resumes_then_skips(tmp_path):
    data = write_mnist_like(tmp_path / "data", "MNIST", n_train=256, n_test=64)
    root = tmp_path / "sweep"
    cmd = [sys.executable, str(SCRIPT), "--root", str(root), "--families", "gan,vae", "--seeds", "0", "--budgets", "time",
           "--time", "30s", "--threads", "1", "--probe-steps", "4", "--probe-samples", "24",
           "experiment=smoke", "data=mnist", f"data.root={data}", "data.image_size=16", "trainer.batch_size=8",
           "trainer.device=cpu", "trainer.max_steps=100000", "trainer.eval_every=50", "trainer.checkpoint_every=10",
           "trainer.sample_every=0", f"eval.cache_dir={tmp_path / 'cache'}", *SMALL_EVAL]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENBENCH_MACHINE_CACHE": str(tmp_path / "machine.json")}
    first = root / "time-30s" / "gan-seed0"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 1200  # each process imports torch: minutes on a loaded 2-core machine
    while not (first / "checkpoints" / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (first / "checkpoints" / "last.pt").exists(), proc.poll()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGINT, out[-3000:]
    assert "probing gan" in out and "time-30s/gan-seed0: stopped by SIGINT" in out, out[-3000:]
    assert not (root / "time-30s" / "vae-seed0").exists() and (root / "probes.json").is_file()
    # the same command: the probes are cached, the GAN resumes, the VAE starts, then compare
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "probing" not in again.stdout and "resume from step" in again.stdout
    assert "resumed from" in (first / "train.log").read_text()
    assert (root / "compare_time-30s" / "compare.md").is_file()
    # and once more: everything is done, nothing trains, compare is redone
    last = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert last.returncode == 0 and last.stdout.count(": skipped") == 2 and "nothing to run" in last.stdout


# ---- the archive: a sweep that goes on across machines ----------------------------------------------------------
def test_an_archived_job_is_done_and_compared_from_its_archive(tmp_path, fake_genbench, monkeypatch, capsys):
    """The run folder is gone (another machine); its archive counts as done: skipped by the plan and the training,
    given no FID-against-NFE cells (no weights), and read by compare in the folder's place."""
    from tests.report_fixtures import make_record, make_run

    monkeypatch.setenv("EXIT", "0")
    root, kept = tmp_path / "outputs", tmp_path / "docs"
    make_run(kept / "time-5s", "diffusion-seed0", "diffusion", 0, make_record(21.5))
    args, jobs = tri.parse_args(["--root", str(root), "--archive", str(kept), "--families", "diffusion,vae", "--seeds", "0",
                                 "--budgets", "time", "--time", "5s", "--threads", "1"])
    dif, vae = jobs
    assert tri.sweep_state(dif, root, kept) == tri.State("archived", tri.Progress(8), "FID 21.5")
    assert tri.sweep_state(vae, root, kept).kind == "new" and tri.job_state(dif.run_dir(root)).kind == "new"
    assert "archived at step 8 (FID 21.5): skipped" in "\n".join(tri.plan_table([(dif, tri.sweep_state(dif, root, kept), None)]))
    assert tri.nfe_cells(args, jobs, trained=False) == []  # archived without weights: nothing to evaluate
    assert dif.where(root, kept) == dif.run_dir(kept) and vae.where(root, kept) == vae.run_dir(root)
    rows = [(j, tri.sweep_state(j, root, kept), None) for j in jobs]
    with tri.Children() as children:
        assert tri.run_jobs(args, rows, children, threads=1) == []
    out = capsys.readouterr().out
    assert "[1/1] time-5s/vae-seed0" in out and "diffusion" not in out and not dif.run_dir(root).exists()
    make_run(root / "time-5s", "vae-seed0", "vae", 0, make_record(30.0))  # as if the vae job had been scored
    called = []
    monkeypatch.setattr(tri, "genbench", lambda *argv: called.append(argv) or [sys.executable, "-c", ""])
    with tri.Children() as children:
        assert tri.compare(args, jobs, children) == 0
    assert called == [("compare", str(dif.run_dir(kept)), str(vae.run_dir(root)), "-o", str(root / "compare_time-5s"))]
    args.pace = tmp_path / "pace.json"  # a paced sweep times its compare at that pace too
    with tri.Children() as children:
        tri.compare(args, jobs, children)
    assert called[-1][-2:] == ("--pace", str(tmp_path / "pace.json"))


def test_a_scored_run_is_archived_once_and_again_when_its_records_change(tmp_path, capsys):
    from genbench.records import add_record
    from tests.report_fixtures import make_record, make_run

    root, kept = tmp_path / "outputs", tmp_path / "docs"
    make_run(root / "time-5s", "gan-seed0", "gan", 0, make_record(10.0))
    args, jobs = tri.parse_args(["--root", str(root), "--archive", str(kept), "--families", "gan,vae", "--seeds", "0",
                                 "--budgets", "time", "--time", "5s", "--threads", "1"])
    tri.archive(args, jobs, 1)
    tri.archive(args, jobs, 1)
    assert capsys.readouterr().out.count("archived into") == 1  # vae has no scored run; the second call finds no change
    assert tri.archived_state(jobs[0].run_dir(kept)).kind == "archived"
    add_record(jobs[0].run_dir(root), {"metrics": {"fid": 9.0}, "checkpoint_step": 8, "num_generated": 24, "seed": 1,
                                       "protocol": {"id": "other"}})
    tri.archive(args, jobs, 1)
    assert "time-5s/gan-seed0: archived into" in capsys.readouterr().out
    assert (jobs[0].run_dir(kept) / "metrics.json").read_bytes() == (jobs[0].run_dir(root) / "metrics.json").read_bytes()


# ---- pace: a time budget as each family's FLOPs ------------------------------------------------------------------
def test_pace_is_the_flop_rate_after_the_first_fifth_of_steps():
    from genbench.report.events import Point

    seconds = {s: 0.5 * s + 3.0 for s in range(1, 11)} | {1: 2.0}  # step 1 took 2 s: warm-up
    scalars = {"perf/train_flops": [Point(s, 1e9 * s, 0.0) for s in range(1, 11)],
               "perf/train_time_s": [Point(s, t, 0.0) for s, t in seconds.items()]}
    assert tri.pace_from_scalars(scalars) == (pytest.approx(2e9), 7, pytest.approx(3.5))  # steps 3 -> 10
    with pytest.raises(ValueError, match="raise --pace-seconds"):
        tri.pace_from_scalars({k: v[:2] for k, v in scalars.items()})


def write_pace(path: Path, rates: dict, settings: dict | None = None) -> Path:
    path.write_text(json.dumps({"format": 1, "rates": rates, "settings": settings or {f: "x" for f in rates},
                                "threads": 2, "machine": {"cpu_model": "Test CPU"}, "created": "2026-12-02"}))
    return path


def test_a_paced_time_budget_gives_each_family_its_flops_in_that_time(tmp_path):
    pace = write_pace(tmp_path / "pace.json", {"gan": 1e10, "vae": 4e10})
    args, jobs = tri.parse_args(["--root", str(tmp_path), "--families", "gan,vae", "--seeds", "0", "--budgets", "time,flops",
                                 "--time", "10m", "--flops", "1e9", "--pace", str(pace)])
    paced = jobs[0].budget
    assert paced.name.startswith("time-10m-pace") and len(paced.name) == len("time-10m-pace") + 6
    assert [j.budget.overrides(j.family) for j in jobs[:2]] == [["trainer.max_time=null", "trainer.max_flops=6e+12"],
                                                                ["trainer.max_time=null", "trainer.max_flops=2.4e+13"]]
    assert jobs[2].budget.overrides("gan") == ["trainer.max_time=null", "trainer.max_flops=1e+09"]  # flops: unpaced
    assert jobs[0].run_dir(tmp_path).parent.name == paced.name  # its own folder: never mixed with a wall-clock time-10m
    other = write_pace(tmp_path / "other.json", {"gan": 2e10, "vae": 4e10})
    _, again = tri.parse_args(["--families", "gan,vae", "--budgets", "time", "--pace", str(other)])
    assert again[0].budget.name != paced.name  # another pace: another folder


@pytest.mark.parametrize("content, says", [
    (None, "no such file or directory.*--measure-pace"),
    ("{not json", "not a pace file; make one with `python scripts/trilemma.py --measure-pace"),
    (json.dumps({"rates": {"gan": 1e10}, "settings": {"gan": "x"}}), "has no pace of vae; measure it with .*--measure-pace FILE --families vae"),
])
def test_a_bad_pace_file_is_one_line(tmp_path, capsys, content, says):
    pace = tmp_path / "pace.json"
    if content is not None:
        pace.write_text(content)
    assert tri.main(["--families", "gan,vae", "--budgets", "time", "--pace", str(pace), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and __import__("re").search(says, err, flags=__import__("re").I), err


def test_a_pace_measured_with_other_settings_is_refused(tmp_path, capsys):
    root, extra = tmp_path / "sweep", [*TINY, f"data.root={tmp_path / 'data'}"]
    cfg = tri.compose(tri.Job(tri.Budget("time", 60), "gan", 0).overrides(root, extra, threads=1))
    pace = write_pace(tmp_path / "pace.json", {"gan": 1e9}, {"gan": tri.pace_settings(cfg)})
    argv = ["--root", str(root), "--families", "gan", "--seeds", "0", "--budgets", "time", "--time", "1m", "--threads", "1",
            "--no-probe", "--dry-run", "--pace", str(pace)]
    assert tri.main([*argv, *extra]) == 0
    out = capsys.readouterr().out
    assert f"of training at the pace measured in {pace} (Test CPU, 2 thread(s), 2026-12-02): gan 6e+10 FLOPs" in out
    assert tri.main([*argv, *extra, "trainer.batch_size=4"]) == 2
    assert "gan's pace was measured with other settings" in capsys.readouterr().err


PACE_CHILD = r"""
import sys
from torch.utils.tensorboard import SummaryWriter
run_dir = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("hydra.run.dir="))
assert "eval.at_end=false" in sys.argv and "trainer.max_time=7" in sys.argv and "trainer.eval_every=0" in sys.argv
rate = {"model=gan": 3e9, "model=vae": 5e9}[next(a for a in sys.argv if a.startswith("model="))]
with SummaryWriter(run_dir + "/tb") as w:
    for step in range(1, 21):
        w.add_scalar("perf/train_time_s", 0.1 * step, step)
        w.add_scalar("perf/train_flops", rate * 0.1 * step, step)
"""


def test_measure_pace_writes_each_familys_rate_and_the_machine(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tri, "genbench", lambda verb, *args: [sys.executable, "-c", PACE_CHILD, verb, *args])
    out = tmp_path / "pace.json"
    assert tri.main(["--measure-pace", str(out), "--families", "gan,vae", "--pace-seconds", "7", "--threads", "1",
                     "--root", str(tmp_path / "root"), *TINY]) == 0
    record = json.loads(out.read_text())
    assert record["rates"] == {"gan": pytest.approx(3e9), "vae": pytest.approx(5e9)}
    assert record["detail"]["gan"]["steps_timed"] == 15 and record["threads"] == 1 and record["machine"]["cpu_model"]
    assert "--measure-pace" in record["command"] and f"use it with --pace {out}" in capsys.readouterr().out
    pace = tri.read_pace(out, ["gan", "vae"])
    assert pace["rates"] == record["rates"] and pace["settings"] == record["settings"]
