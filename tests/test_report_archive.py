"""genbench.report.archive: an archived run (no weights) compares exactly as the run it came from."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from genbench.compare import main
from genbench.report import plots
from genbench.report.archive import archive_run, grid_png
from genbench.report.events import SCALARS_FILE, run_scalars
from genbench.report.events import read_scalars
from genbench.report.runs import find_runs, group_variants, read_run
from tests.report_fixtures import make_record, make_run


def table(path: Path, drop: str = "run_dir") -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != drop} for row in csv.DictReader(f)]


def tiny_gan_run(root: Path, compose_cfg, name: str = "gan", seed: int = 0) -> Path:
    """A scored run with a real (untrained) GAN checkpoint, 16x16 grey."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from genbench.checkpoint import save_checkpoint

    cfg = OmegaConf.to_container(compose_cfg("train", ["model=gan", "experiment=smoke", "data=mnist",
                                                       "data.image_size=16"]), resolve=True)
    run = make_run(root, name, "gan", seed, make_record(10.0 + seed))
    torch.manual_seed(seed)
    model = instantiate(cfg["model"], image_shape=(1, 16, 16), _convert_="all")
    save_checkpoint({"step": 8, "model": model.state_dict(), "ema": model.state_dict(), "optimizers": {},
                     "schedulers": {}, "config": cfg, "image_shape": [1, 16, 16]}, run, keep=1)
    return run


def test_compare_over_archived_runs_equals_compare_over_the_runs(tmp_path: Path):
    runs = tmp_path / "runs"
    for i, (family, seed, fid) in enumerate([("gan", 0, 10.0), ("gan", 1, 14.0), ("vae", 0, 30.0), ("vae", 1, 20.0)]):
        make_run(runs, f"{family}-seed{seed}", family, seed, make_record(fid, recall=0.1 * (i + 1), memorised=0.01 * i),
                 overrides=["experiment=trilemma"], job_num=i, curve={2: 3 * fid, 4: 2 * fid})
    for run in sorted(runs.iterdir()):
        archive_run(run, tmp_path / "archive" / run.name, grid_samples=0)
    assert not list((tmp_path / "archive").rglob("checkpoints")) and not list((tmp_path / "archive").rglob("*tfevents*"))
    hydra = (tmp_path / "archive" / "gan-seed1" / ".hydra" / "hydra.yaml").read_text()
    assert yaml.safe_load(hydra) == {"hydra": {"runtime": {"choices": {"model": "gan"}}, "job": {"num": 1}}}
    main([str(runs), "-o", str(tmp_path / "a"), "--grid-samples", "0"])
    main([str(tmp_path / "archive"), "-o", str(tmp_path / "b"), "--grid-samples", "0"])
    for name in ("compare.csv", "compare_runs.csv", "crossings.csv", "fid_vs_nfe.csv"):
        assert table(tmp_path / "a" / name) == table(tmp_path / "b" / name), name
    assert len(table(tmp_path / "b" / "compare_runs.csv")) == 4
    panel = plots.rgb(tmp_path / "archive" / "vae-seed1" / "eval" / "memorisation.png")
    assert np.array_equal(panel, plots.rgb(runs / "vae-seed1" / "eval" / "memorisation.png"))


def test_archived_scalars_keep_the_last_value_of_each_step_with_its_wall_time(tmp_path: Path):
    """A resumed run logged steps twice: the archive holds what read_scalars resolved, and reads back equal."""
    from torch.utils.tensorboard import SummaryWriter

    run = make_run(tmp_path, "run", "gan", 0, make_record(10.0), curve={4: 20.0})
    with SummaryWriter(str(run / "tb")) as w:  # the resumed process re-logs step 6 and goes on
        w.add_scalar("train/loss", 0.5, 6, walltime=4e9)
        w.add_scalar("train/loss", 0.25, 10, walltime=4e9 + 1)
    before = read_scalars(run / "tb")
    assert {p.step: p.value for p in before["train/loss"]}[6] == 0.5 and before["train/loss"][-1].step == 10
    archive_run(run, tmp_path / "archived", grid_samples=0)
    assert run_scalars(tmp_path / "archived") == before  # bit for bit, wall times too
    assert (tmp_path / "archived" / SCALARS_FILE).is_file() and not (tmp_path / "archived" / "tb").exists()


def test_an_archived_run_draws_its_archived_grid_in_samples_png(tmp_path: Path, compose_cfg):
    run = tiny_gan_run(tmp_path / "runs", compose_cfg)
    archived = archive_run(run, tmp_path / "archive" / "gan", grid_samples=4, grid_seed=3)
    live, _ = group_variants([read_run(run)])
    kept, _ = group_variants([read_run(archived)])
    drawn = plots.samples(live, 4, 3, torch.device("cpu")).axes[0].images[0].get_array()
    shown = plots.samples(kept, 4, 3, torch.device("cpu")).axes[0].images[0].get_array()
    assert shown.shape == drawn.shape == (2 * 16 + 3, 2 * 16 + 3, 3)
    assert np.abs(shown / 255.0 - np.asarray(drawn)).max() <= 0.5 / 255 + 1e-6  # the PNG's rounding, nothing else
    # another noise seed or count than the archived grid's is not that grid
    other = plots.samples(kept, 4, 0, torch.device("cpu")).axes[0]
    assert not other.images and other.texts[0].get_text() == "no checkpoint"


def test_the_panel_comes_from_the_lowest_seed_that_can_give_samples(tmp_path: Path, compose_cfg):
    tiny_gan_run(tmp_path, compose_cfg, "gan-seed1", seed=1)
    make_run(tmp_path, "gan-seed0", "gan", 0, make_record(10.0))  # seed 0 archived elsewhere, without a grid
    variants, _ = group_variants([read_run(tmp_path / n) for n in ("gan-seed0", "gan-seed1")])
    ax = plots.samples(variants, 4, 0, torch.device("cpu")).axes[0]
    assert ax.get_title().startswith("A: seed 1") and len(ax.images) == 1


def test_archiving_replaces_the_old_copy_and_clears_a_killed_one(tmp_path: Path):
    run = make_run(tmp_path, "run", "vae", 0, make_record(30.0))
    dest = tmp_path / "archive" / "vae-seed0"
    archive_run(run, dest, grid_samples=0)
    killed = tmp_path / "archive" / ".vae-seed0.x1.tmp"
    (killed / ".hydra").mkdir(parents=True)
    (killed / ".hydra" / "config.yaml").write_text("{}")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["records"]["another"] = make_record(25.0, num_samples=1000)
    (run / "metrics.json").write_text(json.dumps(metrics))
    archive_run(run, dest, grid_samples=0)
    assert not killed.exists() and not dest.with_name(".vae-seed0.old").exists()
    assert find_runs([tmp_path / "archive"]) == ([dest], [])
    assert read_run(dest).other_records == 1


def test_an_unscored_run_is_not_archived(tmp_path: Path):
    run = make_run(tmp_path, "run", "gan", 0, make_record(10.0))
    (run / "metrics.json").unlink()
    with pytest.raises(ValueError, match=r"no headline record.*genbench eval run_dir="):
        archive_run(run, tmp_path / "archive", grid_samples=0)
    assert not (tmp_path / "archive").exists()


def test_long_scalar_logs_are_thinned_but_every_evaluation_step_reads_back_exactly(tmp_path: Path):
    from torch.utils.tensorboard import SummaryWriter

    from genbench.report.archive import SCALAR_POINTS
    from genbench.report.events import value_at

    run = make_run(tmp_path, "run", "vae", 0, make_record(20.0))
    evals = [200, 300, 450, 675, 1013]
    with SummaryWriter(str(run / "tb")) as w:  # a long run: 1,000 logged steps; an evaluation off the even grid
        for step in range(10, 10_001, 10):
            w.add_scalar("train/loss", 1.0 / step, step)
            w.add_scalar("perf/train_flops", 3e9 * step + step % 7, step)
        for step in evals:
            w.add_scalar("eval_during/fid", 1e4 / step, step)
    archive_run(run, tmp_path / "kept", grid_samples=0)
    before, after = read_scalars(run / "tb"), run_scalars(tmp_path / "kept")
    assert len(after["train/loss"]) <= SCALAR_POINTS + 2 * len(evals) and after["train/loss"][-1] == before["train/loss"][-1]
    assert after["eval_during/fid"] == before["eval_during/fid"]
    assert set(p.step for p in after["train/loss"]) <= set(p.step for p in before["train/loss"])
    assert np.array_equal(value_at(after, "perf/train_flops", evals), value_at(before, "perf/train_flops", evals))
    assert read_run(tmp_path / "kept").curve_flops == read_run(run).curve_flops
