"""metrics.json format 2 (genbench.records) and the TensorBoard/HParams writer (genbench.tblog)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genbench.records import (FORMAT_VERSION, METRICS_FILE, add_record, headline_record, load_records, record_key,
                              same_weights)
from genbench.tblog import hparams, scalars, variant, write_evaluation


def record(step: int = 100, sampler: str | None = "DDIM", nfe: int | None = 50, n: int = 1000, ema: bool = True,
           pid: str = "abc", fid: float = 10.0, **extra) -> dict:
    return {"source": "run", "step": step, "checkpoint_step": step, "ema": ema, "seed": 0, "sampler": sampler, "nfe": nfe,
            "num_generated": n, "num_reference": 10000, "reference_split": "train", "reference_dataset": "fashion_mnist",
            "feature_extractor": {"name": "fmnist-cnn-1234abcd"}, "protocol": {"id": pid}, "metrics": {"fid": fid},
            "bits_per_dim": None, **extra}


def test_keys_name_what_the_numbers_depend_on():
    key = record_key(record())
    assert key == "ema-step100-ddim50-n1000-seed0-fashion_mnist.train10000-fmnist-cnn-1234abcd-pabc"
    variants = [record(step=200), record(sampler="DDPM"), record(nfe=10), record(n=500), record(ema=False), record(pid="x"),
                record(seed=1)]
    assert len({key, *map(record_key, variants)}) == len(variants) + 1
    gan = record_key(record(sampler=None, nfe=None))
    assert "None" not in gan and gan.startswith("ema-step100-n1000")
    external = record_key(record(source="external", samples_dir="/x/other_tool.npz"))
    assert external.startswith("external-other_tool.npz-n1000")


def test_reevaluation_adds_a_record_and_the_headline_stays(tmp_path: Path):
    k1, h1 = add_record(tmp_path, record(), headline=True)
    k2, h2 = add_record(tmp_path, record(sampler="DDPM", fid=20.0))  # headline=None: the run already has one
    k3, h3 = add_record(tmp_path, record(nfe=5, fid=30.0), headline=False)
    assert (h1, h2, h3) == (True, False, False)
    headline, records = load_records(tmp_path)
    assert headline == k1 and set(records) == {k1, k2, k3} and records[k2]["metrics"]["fid"] == 20.0
    assert records[k1]["key"] == k1 and headline_record(tmp_path)["metrics"]["fid"] == 10.0
    k4, h4 = add_record(tmp_path, record(step=200, fid=5.0), headline=True)  # a later end-of-training evaluation
    assert h4 and load_records(tmp_path)[0] == k4 and len(load_records(tmp_path)[1]) == 4
    data = json.loads((tmp_path / METRICS_FILE).read_text())
    assert data["format_version"] == FORMAT_VERSION == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".metrics.json.lock", METRICS_FILE]  # no temporary left


def test_the_first_record_of_a_folder_is_its_headline(tmp_path: Path):
    key, is_headline = add_record(tmp_path, record(), headline=None)
    assert is_headline and load_records(tmp_path)[0] == key


def test_format_1_is_read_as_one_headline_record(tmp_path: Path):
    old = record()
    del old["protocol"], old["source"]
    (tmp_path / METRICS_FILE).write_text(json.dumps(old))
    headline, records = load_records(tmp_path)
    assert list(records) == [headline] and headline.endswith("-pformat1") and records[headline]["metrics"]["fid"] == 10.0
    key, _ = add_record(tmp_path, record(pid="new"))  # upgrading keeps the old record and its headline
    assert load_records(tmp_path) == (headline, {headline: {**old, "key": headline}, key: {**record(pid="new"), "key": key}})
    assert load_records(tmp_path / "nowhere") == (None, {})


def test_bad_files_are_one_line_errors(tmp_path: Path):
    (tmp_path / METRICS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_records(tmp_path)
    (tmp_path / METRICS_FILE).write_text(json.dumps({"format_version": 9}))
    with pytest.raises(ValueError, match="has metrics format 9; this genbench reads formats 1 and 2"):
        load_records(tmp_path)


def test_hparams_drop_plumbing_keys_and_show_nulls():
    config = {"model": {"_target_": "genbench.models.diffusion.Diffusion", "lr": None, "sampler": {"_target_": "x", "steps": 20},
                        "network": {"_partial_": True, "mults": [1, 2]}}, "seed": 0}
    assert hparams(config) == {"model.lr": "null", "model.sampler.steps": 20, "model.network.mults": "[1, 2]", "seed": 0}


def scalar_tags(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "tb"))
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def test_the_headline_writes_eval_and_every_other_record_its_own_group(tmp_path: Path):
    grid = torch.zeros(3, 4, 4)
    head = record(compute={"mfu": 0.25, "train_flops": None}, memorisation={"fraction_closer": 0.01, "median_ratio": None})
    assert write_evaluation(tmp_path, head, 100, {"samples": grid}, headline=True, config={"seed": 0, "m": {"_target_": "x"}}) == "eval"
    other = record(sampler="DDPM", nfe=10, fid=20.0)
    prefix = write_evaluation(tmp_path, other, 100, {"samples": grid}, headline=False)
    assert prefix == f"eval_{variant(other)}" == "eval_ddpm10_ema_n1000_seed0_pabc"
    tags = scalar_tags(tmp_path)
    assert tags["eval/fid"] == [(100, 10.0)] and tags[f"{prefix}/fid"] == [(100, 20.0)]
    assert tags["eval/mfu"] == [(100, 0.25)] and tags["eval/memorisation_fraction_closer"] == [(100, pytest.approx(0.01))]
    assert "eval/train_flops" not in tags and "eval/memorisation_median_ratio" not in tags  # nulls are not scalars
    assert set(scalars(head)) >= {"eval/fid", "eval/nfe", "eval/mfu"}


def test_same_weights_means_same_step_same_ema_and_the_runs_own_samples():
    headline = {"source": "run", "checkpoint_step": 40, "ema": True}
    assert same_weights({"source": "run", "checkpoint_step": 40, "ema": True, "sampler": "DDIM"}, headline)
    assert same_weights({"step": 40}, headline)  # an older record: step only, source and ema left out (EMA, the default)
    assert not same_weights({"source": "run", "checkpoint_step": 30, "ema": True}, headline)
    assert not same_weights({"source": "run", "checkpoint_step": 40, "ema": False}, headline)
    assert not same_weights({"source": "samples", "checkpoint_step": 40, "ema": True}, headline)
