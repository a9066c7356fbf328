"""The evaluation protocol: `genbench eval`, eval during training, best.pt, metrics.json, TensorBoard.

One tiny diffusion run on Fashion-MNIST (4 steps, evaluated at steps 2 and 4 and at the end) is
shared by the tests; every evaluation is shrunk to tens of images.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from genbench import CONF_DIR, cli
from genbench.checkpoint import load_checkpoint, load_model
from genbench.data import DatasetNotFound, ImageData, fashion_mnist
from genbench.evaluate import METRICS_FILE, evaluate_run, likelihoods, reference_images
from genbench.extractors import resolve_extractor
from genbench.models.base import GenerativeModel
from genbench.trainer import resolve_device

# the protocol at test size: 48 samples against 256 reference images
SMALL_EVAL = ["eval=smoke", "eval.num_samples=48", "eval.num_reference=256", "eval.metrics.kid_subset_size=24",
              "eval.metrics.isc_splits=4", "eval.likelihood_images=8", "eval.diagnostic_images=4", "eval.batch_size=48"]
PROTOCOL_KEYS = {"metrics", "feature_extractor", "bits_per_dim", "num_generated", "num_reference", "reference_split", "seed",
                 "ema", "step", "checkpoint_step", "sampler", "nfe", "sampling_img_per_s", "eval_wall_time_s",
                 "genbench_version", "git", "timings_s", "metric_settings", "latent"}


def compose_train(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 4-step tiny diffusion run with eval every 2 steps and the final eval, all at test size."""
    try:
        fashion_mnist()
    except DatasetNotFound as e:
        pytest.skip(str(e))
    from genbench.train import train

    tmp = tmp_path_factory.mktemp("eval")
    cfg = compose_train(["experiment=tiny", "trainer.max_steps=4", "trainer.eval_every=2", "trainer.checkpoint_every=2",
                         "trainer.sample_every=0", *SMALL_EVAL, "eval.during_training.num_samples=24",
                         "eval.during_training.kid_subset_size=12", f"eval.cache_dir={tmp / 'cache'}"])
    train(cfg, str(tmp / "run"))
    shutil.copy(tmp / "run" / METRICS_FILE, tmp / "final_metrics.json")  # later tests overwrite run/metrics.json
    return tmp / "run"


def eval_cfg(run: Path, *overrides: str):
    return compose_train([*SMALL_EVAL, f"eval.cache_dir={run.parent / 'cache'}", *overrides]).eval


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "tb"))
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def test_training_logs_eval_and_keeps_the_best_checkpoint(run):
    fids = scalars(run)["eval/fid"]
    assert [s for s, _ in fids[:2]] == [2, 4]  # then the final eval's, at the last step
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    best_step, best_fid = min(fids[:2], key=lambda sf: sf[1])
    assert best["step"] == best_step == best["extra"]["best_step"]
    assert best["extra"]["best_fid"] == pytest.approx(best_fid, rel=1e-5)
    assert (run / "checkpoints" / "last.pt").is_file()


def test_final_eval_writes_the_protocol_record(run):
    record = json.loads((run.parent / "final_metrics.json").read_text())
    assert PROTOCOL_KEYS <= set(record)
    assert set(record["metrics"]) == {"fid", "is_mean", "is_std", "kid_mean", "kid_std", "precision", "recall", "f_score"}
    extractor = resolve_extractor("fmnist-cnn")
    assert record["feature_extractor"]["name"] == extractor.name and record["feature_extractor"]["sha256"] == extractor.sha256
    assert (record["num_generated"], record["num_reference"], record["reference_split"]) == (48, 256, "train")
    info = load_model(run)[0].sampling_info()
    assert (record["step"], record["ema"], record["seed"]) == (4, True, 0)
    assert (record["sampler"], record["nfe"]) == (info["sampler"], info["nfe"]) and record["nfe"] > 0
    bounds = load_model(run)[0].bits_per_dim(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    if bounds:  # the family has a likelihood: each bound's mean and standard error over 8 test images
        assert set(record["bits_per_dim"]) == set(bounds) and record["likelihood_images"] == 8
        assert all(v["mean"] > 0 for v in record["bits_per_dim"].values())
    else:
        assert record["bits_per_dim"] is None
    assert record["sampling_img_per_s"] > 0 and record["eval_wall_time_s"] > 0
    assert len(record["git"]["commit"] or "0" * 40) == 40
    assert (run / "eval" / "samples.png").is_file()


def test_eval_logs_scalars_and_hparams_at_the_checkpoint_step(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = json.loads((run / METRICS_FILE).read_text())
    assert scalars(run)["eval/fid"][-1] == (4, pytest.approx(record["metrics"]["fid"], rel=1e-5))
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    ea = EventAccumulator(str(run / "tb"))
    ea.Reload()
    content = ea.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    session = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert {m.name.tag for m in experiment.metric_infos} >= {"eval/fid", "eval/is_mean", "eval/kid_mean", "eval/precision"}
    assert session.hparams["model.network.base_channels"].number_value == 8
    assert session.hparams["eval.extractor"].string_value == record["feature_extractor"]["name"]


def test_genbench_eval_scores_a_samples_folder(run, capsys):
    from genbench.sample import generate, write_samples

    model, state = load_model(run)
    images, img_per_s = generate(model, 30, 30, seed=7)
    folder = run / "samples" / "s7"
    write_samples(images, folder, {"step": state["step"], "ema": True, "seed": 7, "num_samples": 30, "img_per_s": img_per_s,
                                   **model.sampling_info()})
    cli.main(["eval", f"run_dir={run}", f"samples_dir={folder}", *SMALL_EVAL, "eval.metrics.kid_subset_size=20",
              f"eval.cache_dir={run.parent / 'cache'}"])
    assert "wrote" in capsys.readouterr().out
    record = json.loads((run / METRICS_FILE).read_text())
    assert record["samples_dir"] == str(folder) and record["num_generated"] == 30 and record["seed"] == 7


def test_genbench_eval_errors_are_one_line(run, tmp_path, capsys):
    for args, message in [([f"samples_dir={tmp_path}"], f"samples_dir={tmp_path} holds no samples.npz"),
                          (["eval.metrics.kid_subset_size=1000"], "eval.metrics.kid_subset_size=1000 exceeds the 48"),
                          (["eval.extractor=inception-v3", "eval.inception_weights=/nowhere.pth"], "eval.inception_weights=/nowhere.pth")]:
        with pytest.raises(SystemExit) as e:
            cli.main(["eval", f"run_dir={run}", *SMALL_EVAL, f"eval.cache_dir={run.parent / 'cache'}", *args])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith("genbench: error:") and message in err and "\n" not in err


def test_genbench_eval_takes_another_sampler(run):
    cli.main(["eval", f"run_dir={run}", "sampler=ddim", "sampler.steps=5", *SMALL_EVAL, f"eval.cache_dir={run.parent / 'cache'}"])
    record = json.loads((run / METRICS_FILE).read_text())
    assert "ddim" in record["sampler"].lower() and record["nfe"] == 5


def test_eval_is_deterministic_and_uses_raw_weights_on_request(run):
    device = resolve_device("cpu")
    a = evaluate_run(run, eval_cfg(run), device)
    b = evaluate_run(run, eval_cfg(run), device)
    raw = evaluate_run(run, eval_cfg(run, "eval.ema=false"), device)
    assert a["metrics"] == b["metrics"]
    assert raw["ema"] is False and raw["metrics"]["fid"] != a["metrics"]["fid"]


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


def test_reference_subset_is_fixed_and_missing_splits_are_named():
    data = ImageData("toy", torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1), None)
    a, b = reference_images(data, "train", 20), reference_images(data, "train", 20)
    assert torch.equal(a, b) and len(a.unique()) == 20
    assert torch.equal(reference_images(data, "train", None), data.train)
    with pytest.raises(ValueError, match="eval.reference_split=test but toy has no test split"):
        reference_images(data, "test", 10)


def test_eval_configs_compose():
    for option in ("default", "smoke"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="eval", overrides=["run_dir=/tmp/x", f"eval={option}"])
        assert OmegaConf.select(cfg, "eval.metrics._target_") == "genbench.metrics.FidelityMetrics"
        assert cfg.eval.num_samples > 0 and cfg.eval.during_training.num_samples > 0
