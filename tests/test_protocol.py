"""The evaluation protocol object (genbench.protocol): built from conf/eval, checked when built, and the one
scoring path of `genbench eval` and of scripts/ (the same samples give the same FID through both)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from genbench import CONF_DIR, cli
from genbench.data import ImageData
from genbench.protocol import Protocol
from genbench.records import load_records
from tests.conftest import write_mnist_like

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
# the protocol at test size, on the Fashion-MNIST extractor (any 1-channel data works with it)
SMALL = ["eval.num_samples=40", "eval.num_reference=96", "eval.metrics.kid_subset_size=20", "eval.metrics.isc_splits=4",
         "eval.extractor=fmnist-cnn", "eval.memorisation.test_images=32", "eval.memorisation.panel=4"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("option", options("eval"))
def test_every_eval_option_builds_a_protocol(compose_cfg, option):
    for verb in ("train", "eval"):
        protocol = instantiate(compose_cfg(verb, [f"eval={option}"]).eval, _convert_="all")
        assert isinstance(protocol, Protocol) and protocol.num_samples >= protocol.metric_settings.kid_subset_size


def test_the_reference_protocol_is_the_default(compose_cfg):
    p = instantiate(compose_cfg("eval").eval, _convert_="all")
    assert (p.num_samples, p.num_reference, p.reference_split, p.metric_settings.kid_subset_size) == (10000, 10000, "train", 1000)
    assert p.extractor is None and p.memorisation.quantile == 0.01  # the data's own extractor


@pytest.mark.parametrize("overrides, message", [
    (["eval.num_samples=50", "eval.metrics.kid_subset_size=100"],
     "eval.num_samples=50 is below eval.metrics.kid_subset_size=100"),
    (["eval.during_training.num_samples=100"], "eval.during_training.num_samples=100 is below eval.during_training.kid_subset_size=500"),
    (["eval.num_samples=1"], "eval.num_samples=1"),
    (["eval.num_reference=500"], "eval.num_reference=500 is below eval.metrics.kid_subset_size=1000"),
    (["eval.metrics.metrics=[fid,isc]", "eval.num_samples=5"], "eval.num_samples=5 is below eval.metrics.isc_splits=10"),
    (["eval.num_samples=0"], "eval.num_samples=0 must be positive"),
    (["eval.reference_split=val"], "eval.reference_split='val' is not one of: train, test"),
    (["eval.extractor=resnet"], "eval.extractor='resnet' is not one of"),
    (["eval.metrics.metrics=[fid,lpips]"], "eval.metrics.metrics='lpips' is not one of: fid, isc, kid, prc"),
    (["eval.memorisation.quantile=5"], "eval.memorisation.quantile=5"),
])
def test_protocols_that_cannot_work_fail_when_built(compose_cfg, overrides, message):
    with pytest.raises(InstantiationException) as e:
        instantiate(compose_cfg("train", overrides).eval, _convert_="all")
    assert message in str(e.value.__cause__) and "\n" not in str(e.value.__cause__)


def test_bad_protocol_stops_train_before_any_step(mnist_root, tmp_path, capsys):
    """eval.num_samples=50 with KID subsets of 100: one line naming the key, and nothing trained."""
    code = cli.main(["train", "experiment=smoke", "data=mnist", f"data.root={mnist_root}", "trainer.max_steps=2",
                     "trainer.device=cpu", "eval.num_samples=50", "eval.metrics.kid_subset_size=100",
                     f"hydra.run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "eval.num_samples=50 is below eval.metrics.kid_subset_size=100" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_data_names_its_extractor_and_the_reference_is_fixed(compose_cfg):
    assert compose_cfg("train", ["data=fashion_mnist"]).data.extractor == "fmnist-cnn"
    assert all(compose_cfg("train", [f"data={d}"]).data.extractor for d in options("data"))
    data = ImageData("toy", torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1), None, extractor="mnist-cnn")
    p = Protocol(num_samples=20, num_reference=20, metrics={"kid_subset_size": 10}, during_training={"num_samples": 20, "kid_subset_size": 10})
    assert p.extractor_for(data) == "mnist-cnn" and Protocol(extractor="inception-v3").extractor_for(data) == "inception-v3"
    a, b = p.reference(data), p.reference(data)
    assert torch.equal(a, b) and len(a.unique()) == 20
    with pytest.raises(ValueError, match="eval.reference_split=test but toy has no test split"):
        Protocol(reference_split="test").reference(data)


def test_the_protocol_id_changes_with_what_the_numbers_depend_on():
    data = ImageData("toy", torch.zeros(4, 1, 2, 2, dtype=torch.uint8), None)
    base = Protocol().describe(data, "x", 10000, 10000)
    assert base == Protocol(seed=3, batch_size=7, ema=False, memorisation={"enabled": False},  # in the record's key, or
                            metrics={"metrics": ["fid"]}).describe(data, "x", 10000, 10000)  # no number changes
    others = [Protocol(metrics={"kid_subset_size": 500}).describe(data, "x", 10000, 10000),
              Protocol().describe(data, "y", 10000, 10000), Protocol().describe(data, "x", 5000, 10000),
              Protocol().describe(data, "x", 10000, 60000), Protocol(likelihood_images=10).describe(data, "x", 10000, 10000)]
    assert len({base["id"], *(o["id"] for o in others)}) == 6 and len(base["id"]) == 10


def load_benchlib():
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("benchlib", SCRIPTS / "benchlib.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_benchmark_script_and_genbench_eval_give_the_same_fid(tmp_path, capsys):
    """The same samples, scored by scripts/benchlib.py's `score` and by `genbench eval samples_dir= data=`."""
    root = write_mnist_like(tmp_path / "data", "MNIST", n_train=128, n_test=48)
    overrides = ["data=mnist", f"data.root={root}", "data.image_size=16", *SMALL, f"eval.cache_dir={tmp_path / 'cache'}"]
    benchlib = load_benchlib()
    protocol = benchlib.protocol(overrides=[o for o in overrides if o.startswith("eval.")])
    data = benchlib.load_data(overrides)
    samples = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (40, 1, 16, 16), dtype=np.uint8))
    samples[:10] = data.train[:10]  # ten copies of training images
    row = benchlib.score(samples, data, protocol)
    np.savez(tmp_path / "other_tool.npz", images=samples.numpy())
    assert cli.main(["eval", f"samples_dir={tmp_path / 'other_tool.npz'}", *overrides]) == 0
    assert "wrote" in capsys.readouterr().out
    headline, records = load_records(tmp_path / "other_tool_eval")
    record = records[headline]
    assert record["source"] == "external" and record["samples_dir"].endswith("other_tool.npz")
    assert record["metrics"]["fid"] == row["fid"] and record["protocol"] == row["protocol"]
    assert record["memorisation"]["fraction_closer"] == row["memorisation"]["fraction_closer"] >= 0.25  # the copies
    assert (tmp_path / "other_tool_eval" / "eval" / "memorisation.png").is_file() and record["compute"]["mfu"] is None
    # a benchmark report names its protocol
    report = {"results": {"a": row}}
    benchlib.write_report(report, tmp_path / "report.json")
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["results"]["a"]["protocol"] == row["protocol"]["id"] and row["protocol"]["id"] in saved["protocols"]
    assert saved["machine"]["cpu_count"] >= 1


def test_eval_without_a_run_needs_data_and_samples(tmp_path, capsys):
    for args, message in [([], "samples_dir="),
                          ([f"samples_dir={tmp_path}"], "samples_dir= without run_dir= needs data=")]:
        code = cli.main(["eval", *args])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and "\n" not in err


def test_a_folder_of_pngs_is_scored_without_writing_into_it(tmp_path, capsys):
    from PIL import Image

    root = write_mnist_like(tmp_path / "data", "MNIST", n_train=128, n_test=48)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(np.random.default_rng(1).integers(0, 256, (40, 16, 16), dtype=np.uint8)):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    args = ["eval", f"samples_dir={folder}", "data=mnist", f"data.root={root}", "data.image_size=16", *SMALL,
            f"eval.cache_dir={tmp_path / 'cache'}"]
    assert cli.main(args) == 0 and cli.main(args) == 0  # twice: the first one's panels are not read as samples
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:03d}.png" for i in range(40)]
    headline, records = load_records(tmp_path / "pngs_eval")
    assert list(records) == [headline] and records[headline]["num_generated"] == 40
