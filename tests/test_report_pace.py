"""genbench.report.pace: training seconds as FLOPs at a measured pace, in `genbench compare --pace`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from genbench.compare import main
from genbench.report.pace import PaceError, apply_pace, pace_settings, read_pace
from genbench.report.runs import read_run
from tests.report_fixtures import BATCH, STEPS, make_record, make_run


def write_pace(path: Path, rates: dict, runs: dict[str, Path]) -> Path:
    """A pace file whose settings are those of the given runs' configs."""
    settings = {m: pace_settings(yaml.safe_load((r / ".hydra" / "config.yaml").read_text())) for m, r in runs.items()}
    path.write_text(json.dumps({"format": 1, "rates": rates, "settings": settings, "threads": 2,
                                "machine": {"cpu_model": "Test CPU"}, "created": "2026-12-02T16:00:00+00:00"}))
    return path


def test_seconds_at_the_pace_are_training_flops_over_the_rate(tmp_path: Path):
    gan = make_run(tmp_path, "gan", "gan", 0, make_record(10.0, flops_per_image=2e6, train_time=99.0), curve={4: 30.0})
    vae = make_run(tmp_path, "vae", "vae", 0, make_record(20.0, flops_per_image=1e6, train_time=99.0), curve={4: 40.0})
    pace = read_pace(write_pace(tmp_path / "pace.json", {"gan": 1e6, "vae": 4e6}, {"gan": gan, "vae": vae}))
    runs = [read_run(gan), read_run(vae)]
    assert apply_pace(runs, pace) == []
    images = STEPS * BATCH
    assert runs[0].values["train_time_s"] == pytest.approx(2e6 * images / 1e6)  # 128 s, not its own 99 s
    assert runs[1].values["train_time_s"] == pytest.approx(1e6 * images / 4e6)
    assert runs[0].curve_s == pytest.approx([2e6 * 4 * BATCH / 1e6])  # the curve's point at step 4
    assert runs[0].values["total_s"] == pytest.approx(128 + 10_000 / 100.0)  # + 10,000 images at the measured img/s


def test_compare_with_a_pace_says_so_and_skips_runs_it_cannot_time(tmp_path: Path, capsys):
    runs = tmp_path / "runs"
    gan = make_run(runs, "gan", "gan", 0, make_record(10.0, flops_per_image=2e6))
    make_run(runs, "vae", "vae", 0, make_record(20.0, train_time=7.0))  # no rate of the vae in the file
    diffusion = make_run(runs, "diffusion", "diffusion", 0, make_record(30.0, train_time=5.0))
    pace = write_pace(tmp_path / "pace.json", {"gan": 1e6, "diffusion": 1e6}, {"gan": gan, "diffusion": gan})
    main([str(runs), "-o", str(tmp_path / "out"), "--grid-samples", "0", "--pace", str(pace)])
    with open(tmp_path / "out" / "compare_runs.csv") as f:
        seconds = {r["family"]: float(r["train_time_s"]) for r in csv.DictReader(f)}
    assert seconds == {"gan": pytest.approx(128.0), "vae": 7.0, "diffusion": 5.0}
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "**Timed at a pace** (`--pace`, Test CPU, 2 thread(s), 2026-12-02T16:00:00+00:00)" in md
    err = capsys.readouterr().err
    assert "vae: not timed at the pace (no rate of its model)" in err
    assert f"{diffusion}: not timed at the pace (other settings than its rate was measured with)" in err


def test_a_bad_pace_file_is_one_line(tmp_path: Path, capsys):
    make_run(tmp_path / "runs", "gan", "gan", 0, make_record(10.0))
    with pytest.raises(SystemExit):
        main([str(tmp_path / "runs"), "--pace", str(tmp_path / "missing.json")])
    err = capsys.readouterr().err
    assert "error: --pace " in err and "missing.json" in err and "--measure-pace" in err
    with pytest.raises(PaceError, match="has no pace of vae"):
        read_pace(write_pace(tmp_path / "p.json", {"gan": 1.0}, {}), ["gan", "vae"])


def test_a_composed_config_and_the_run_folders_copy_of_it_give_one_pace_setting(compose_cfg):
    """Hydra saves .hydra/config.yaml unresolved (the VAE's decoder refers to its encoder): both hash alike."""
    from omegaconf import OmegaConf

    cfg = compose_cfg("train", ["model=vae", "data.root=/somewhere"])
    saved = yaml.safe_load(OmegaConf.to_yaml(cfg))
    assert "${" in OmegaConf.to_yaml(cfg.model) and pace_settings(saved) == pace_settings(cfg)
    assert pace_settings({**saved, "data": {**saved["data"], "root": "/elsewhere"}}) == pace_settings(cfg)
    assert pace_settings({**saved, "trainer": {**saved["trainer"], "batch_size": 7}}) != pace_settings(cfg)
