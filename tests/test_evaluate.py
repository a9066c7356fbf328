"""`genbench eval` and the evaluation of `genbench train`: records, TensorBoard, samples folders, errors.

One tiny diffusion run on synthetic MNIST-format data (4 steps, evaluated during training at steps 2
and 4, then by the full protocol at the end) is shared by the tests; every evaluation is shrunk to
tens of images, on the Fashion-MNIST extractor.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from genbench import cli
from genbench.checkpoint import load_checkpoint, load_model
from genbench.extractors import resolve_extractor
from genbench.generate import generate, likelihoods
from genbench.models.base import GenerativeModel
from genbench.records import METRICS_FILE, load_records
from genbench.runtime import resolve_device
from tests.conftest import tiny_overrides, write_mnist_like

# the protocol at test size: 48 samples against 128 reference images
SMALL_EVAL = ["eval=smoke", "eval.extractor=fmnist-cnn", "eval.num_samples=48", "eval.num_reference=128",
              "eval.metrics.kid_subset_size=24", "eval.metrics.isc_splits=4", "eval.likelihood_images=8",
              "eval.diagnostic_images=4", "eval.batch_size=48", "eval.memorisation.test_images=48",
              "eval.during_training.num_samples=24", "eval.during_training.kid_subset_size=12"]
RECORD_KEYS = {"key", "source", "protocol", "machine", "compute", "memorisation", "metrics", "feature_extractor",
               "bits_per_dim", "num_generated", "num_reference", "reference_split", "seed", "ema", "step", "checkpoint_step",
               "sampler", "nfe", "sampling_img_per_s", "eval_wall_time_s", "genbench_version", "git", "timings_s",
               "metric_settings", "latent"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 4-step tiny diffusion run with eval every 2 steps and the final eval, all at test size."""
    from genbench.train import train
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from genbench import CONF_DIR

    tmp = tmp_path_factory.mktemp("eval")
    root = write_mnist_like(tmp / "data", "MNIST", n_train=256, n_test=64)
    overrides = [o for o in tiny_overrides(root, steps=4) if o != "~eval"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "trainer.eval_every=2", *SMALL_EVAL, f"eval.cache_dir={tmp / 'cache'}"])
    GlobalHydra.instance().clear()
    train(cfg, str(tmp / "run"))
    shutil.copy(tmp / "run" / METRICS_FILE, tmp / "final_metrics.json")  # later tests add records to run/metrics.json
    return tmp / "run"


def eval_args(run: Path, *extra: str) -> list[str]:
    return ["eval", f"run_dir={run}", *SMALL_EVAL, f"eval.cache_dir={run.parent / 'cache'}", *extra]


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "tb"))
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def test_training_logs_its_small_eval_apart_and_keeps_the_best_checkpoint(run):
    tags = scalars(run)
    during = tags["eval_during/fid"]
    assert [s for s, _ in during] == [2, 4]
    assert [s for s, _ in tags["eval/fid"]] == [4]  # the full protocol, once
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    best_step, best_fid = min(during, key=lambda sf: sf[1])
    assert best["step"] == best_step == best["extra"]["best_step"]
    assert best["extra"]["best_fid"] == pytest.approx(best_fid, rel=1e-5)


def test_the_final_eval_is_the_headline_record(run):
    data = json.loads((run.parent / "final_metrics.json").read_text())
    assert data["format_version"] == 2 and list(data["records"]) == [data["headline"]]
    record = data["records"][data["headline"]]
    assert RECORD_KEYS <= set(record) and record["source"] == "run"
    assert set(record["metrics"]) == {"fid", "is_mean", "is_std", "kid_mean", "kid_std", "precision", "recall", "f_score"}
    extractor = resolve_extractor("fmnist-cnn")
    assert record["feature_extractor"]["name"] == extractor.name == record["protocol"]["extractor"]
    assert (record["num_generated"], record["num_reference"], record["reference_split"]) == (48, 128, "train")
    info = load_model(run)[0].sampling_info()
    assert (record["step"], record["ema"], record["seed"]) == (4, True, 0)
    assert (record["sampler"], record["nfe"]) == (info["sampler"], info["nfe"]) and record["nfe"] > 0
    trained_on = load_checkpoint(run)["machine"]  # the training machine, beside the evaluation's own
    assert record["training"]["machine"] == trained_on and trained_on["cpu_model"] == record["machine"]["cpu_model"]
    assert record["key"] == data["headline"] and f"step4-{info['sampler'].lower()}{info['nfe']}-n48-seed0" in record["key"]
    assert set(record["bits_per_dim"]) >= {"vlb"} and record["likelihood_images"] == 8
    memo = record["memorisation"]
    assert memo["num_generated"] == 48 and memo["num_test"] == 48 and memo["num_train"] == 256
    assert 0 <= memo["fraction_closer"] <= 1 and memo["threshold"] == pytest.approx(memo["test"]["q01"])
    machine, compute = record["machine"], record["compute"]
    assert machine["cpu_count"] >= 1 and machine["peak_flop_per_s"]["fp32"] > 0
    state = load_checkpoint(run)
    if state.get("compute", {}).get("train_flops"):
        assert compute["train_flop_per_s"] == pytest.approx(state["compute"]["train_flops"] / state["train_time"])
        assert compute["mfu"] == pytest.approx(compute["train_flop_per_s"] / machine["peak_flop_per_s"]["fp32"])
    assert compute["sample_flops_per_image"] > 0
    assert len(record["git"]["commit"] or "0" * 40) == 40
    assert (run / "eval" / "samples.png").is_file() and (run / "eval" / "memorisation.png").is_file()


def test_eval_logs_scalars_and_hparams_at_the_checkpoint_step(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    headline, records = load_records(run.parent / "final_metrics.json")
    record = records[headline]
    assert scalars(run)["eval/fid"] == [(4, pytest.approx(record["metrics"]["fid"], rel=1e-5))]
    ea = EventAccumulator(str(run / "tb"))
    ea.Reload()
    content = ea.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    session = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert {m.name.tag for m in experiment.metric_infos} >= {"eval/fid", "eval/is_mean", "eval/kid_mean", "eval/mfu"}
    network = load_checkpoint(run)["config"]["model"]["network"]
    assert session.hparams["model.network.base_channels"].number_value == network["base_channels"]
    assert session.hparams["eval.extractor"].string_value == record["feature_extractor"]["name"]
    assert session.hparams["eval.sampler"].string_value == record["sampler"]
    assert session.hparams["eval.nfe"].number_value == record["nfe"]
    assert session.hparams["threads"].string_value == "null"  # nulls are shown, not dropped
    assert not [k for k in session.hparams if k.endswith(("_target_", "_partial_"))]


def test_another_sampler_adds_a_record_under_its_own_tags(run):
    before = scalars(run)["eval/fid"]
    assert cli.main(eval_args(run, "sampler=ddim", "sampler.steps=5")) == 0
    headline, records = load_records(run)
    ddim = [r for r in records.values() if r["nfe"] == 5]
    assert len(ddim) == 1 and "ddim" in ddim[0]["sampler"].lower() and ddim[0]["key"] != headline
    assert records[headline]["nfe"] != 5  # the headline stays the end-of-training record
    tags = scalars(run)
    assert tags["eval/fid"] == before  # one value per step
    group = [t for t in tags if t.startswith("eval_ddim5_ema_n48") and t.endswith("/fid")]
    assert len(group) == 1 and tags[group[0]] == [(4, pytest.approx(ddim[0]["metrics"]["fid"], rel=1e-5))]
    assert (run / "eval" / ddim[0]["key"] / "samples.png").is_file()
    # the same evaluation again is not redone: no second record, no second point
    assert cli.main(eval_args(run, "sampler=ddim", "sampler.steps=5")) == 0
    assert load_records(run)[1].keys() == records.keys() and scalars(run)[group[0]] == tags[group[0]]


def test_genbench_eval_scores_a_samples_folder_of_the_run(run):
    from genbench.sample import write_samples

    model, state = load_model(run)
    images, img_per_s = generate(model, 30, 30, seed=7)
    folder = run / "samples" / "s7"
    write_samples(images, folder, {"step": state["step"], "ema": True, "seed": 7, "num_samples": 30, "img_per_s": img_per_s,
                                   **model.sampling_info()})
    assert cli.main(eval_args(run, f"samples_dir={folder}", "eval.metrics.kid_subset_size=20")) == 0
    record = [r for r in load_records(run)[1].values() if r["samples_dir"] == str(folder)]
    assert len(record) == 1 and record[0]["num_generated"] == 30 and record[0]["seed"] == 7
    headline, records = load_records(run)  # drawn with the run's own sampler: the same sampling FLOPs
    assert record[0]["compute"]["sample_flops_per_image"] == records[headline]["compute"]["sample_flops_per_image"] > 0


def test_genbench_eval_errors_are_one_line(run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for args, message in [([f"samples_dir={tmp_path / 'empty'}"], "holds no images"),
                          (["eval.metrics.kid_subset_size=1000"], "eval.num_samples=48 is below eval.metrics.kid_subset_size=1000"),
                          (["eval.extractor=inception-v3", "eval.inception_weights=/nowhere.pth"], "eval.inception_weights=/nowhere.pth"),
                          (["eval.reference_split=test", "eval.num_reference=null", "eval.num_samples=100", "eval.metrics.kid_subset_size=100"],
                           "eval.metrics.kid_subset_size=100 exceeds the 64 images of mnist's test split")]:
        code = cli.main(eval_args(run, *args))
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("genbench: error:") and message in err and "\n" not in err, err


def test_eval_is_deterministic_and_uses_raw_weights_on_request(run, tmp_path, compose_cfg):
    from hydra.utils import instantiate

    protocol = instantiate(compose_cfg("eval", [*SMALL_EVAL, f"eval.cache_dir={run.parent / 'cache'}"]).eval, _convert_="all")
    copies = []
    for name in ("a", "b"):
        shutil.copytree(run / "checkpoints", tmp_path / name / "checkpoints")
        copies.append(protocol.evaluate_run(tmp_path / name, resolve_device("cpu")))
    protocol.ema = False
    raw = protocol.evaluate_run(tmp_path / "a", resolve_device("cpu"))
    assert copies[0]["metrics"] == copies[1]["metrics"] and copies[0]["key"] == copies[1]["key"]
    assert raw["ema"] is False and raw["metrics"]["fid"] != copies[0]["metrics"]["fid"]
    assert raw["key"].startswith("raw-") and len(load_records(tmp_path / "a")[1]) == 2


# ---- the pure pieces ---------------------------------------------------------------------------
class _Likelihood(GenerativeModel):
    def __init__(self, values: dict[str, float]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.values = values

    def bits_per_dim(self, x, generator=None):
        return {k: v + x.float().flatten(1).mean(1) for k, v in self.values.items()}  # (N,): v + the pixel value


def test_likelihoods_are_null_without_a_likelihood_and_averaged_with_one():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 4, 4)  # image i is all i
    assert likelihoods(_Likelihood({}), x, 3, 0) is None  # GANs
    out = likelihoods(_Likelihood({"vlb": 2.0}), x, 3, 0)
    per_image = 2.0 + torch.arange(10.0)
    assert out["vlb"]["mean"] == pytest.approx(per_image.mean().item())
    assert out["vlb"]["sem"] == pytest.approx((per_image.std() / 10**0.5).item())


def test_progress_is_plain_lines_off_a_terminal(caplog):
    import logging
    import time

    from genbench.progress import Progress

    with caplog.at_level(logging.INFO, logger="genbench"):
        with Progress(10, "sampling", every_s=0.0, bar=False) as p:
            for _ in range(5):
                time.sleep(0.001)
                p.update(2)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("sampling: 2/10 img") and "eta" in lines[0]
    assert "10 img in" in lines[-1]
