"""`genbench compare` on fixture run folders: real tiny models and configs, chosen numbers.

Each fixture run is what `genbench train` leaves behind, written directly: .hydra/, a checkpoint of a
tiny model, metrics.json, and tb/ with the Trainer's perf/ and eval/fid scalars plus the final eval/*
scalars and HParams written by evaluate.log_to_tensorboard, the function `genbench eval` uses.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from genbench.checkpoint import FORMAT_VERSION, atomic_save
from genbench.compare import fid_curve, main, pm, read_scalars, stat, tightest_bound
from genbench.evaluate import METRICS_FILE, log_to_tensorboard

FAMILY = {"gan": ["model=gan", "experiment=tiny_gan"], "vae": ["model=vae", "experiment=tiny_vae"],
          "diffusion": ["model=diffusion", "experiment=tiny"]}
BATCH, STEPS = 8, 8


@pytest.fixture(scope="module")
def configs():
    """The resolved train config of each tiny family at 16x16, and its parameter count."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from genbench import CONF_DIR

    out = {}
    for family, overrides in FAMILY.items():
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[*overrides, "data=mnist", "data.image_size=16", f"trainer.batch_size={BATCH}"])
        out[family] = OmegaConf.to_container(cfg, resolve=True)
    GlobalHydra.instance().clear()
    return out


def make_run(root: Path, name: str, cfg: dict, seed: int, fid: float, precision: float = 0.5, recall: float = 0.5,
             bpd: dict[str, float] | None = None, img_per_s: float = 100.0, nfe: int = 1, train_time: float = 10.0,
             overrides: list[str] = (), job_num: int = 0, evaluated: bool = True) -> Path:
    """A finished run folder with these numbers; returns its path."""
    run = root / name
    cfg = {**cfg, "seed": seed}
    choice = cfg["model"]["_target_"].split(".")[-2]
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {"model": choice}},
                                                                         "job": {"num": job_num}}}))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model={choice}", f"seed={seed}", *overrides]))
    torch.manual_seed(seed)
    model = instantiate(cfg["model"], image_shape=(1, 16, 16), _convert_="all")
    atomic_save({"format_version": FORMAT_VERSION, "step": STEPS, "train_time": train_time, "images_seen": STEPS * BATCH,
                 "model": model.state_dict(), "ema": model.state_dict(), "config": cfg, "image_shape": [1, 16, 16]},
                run / "checkpoints" / "last.pt")
    with SummaryWriter(str(run / "tb")) as w:  # what the Trainer logs: perf/ every 2 steps, eval/fid at step 4
        for step in (2, 4, 6, 8):
            w.add_scalar("perf/img_per_s", 2 * BATCH / (train_time / 4), step)  # 4 windows of train_time / 4 each
        w.add_scalar("eval/fid", 2 * fid, 4)
    if not evaluated:
        return run
    record = {"metrics": {"fid": fid, "is_mean": 2.0, "is_std": 0.1, "kid_mean": fid / 1000, "kid_std": 0.001,
                          "precision": precision, "recall": recall},
              "bits_per_dim": {k: {"mean": v, "sem": 0.01} for k, v in bpd.items()} if bpd else None,
              "feature_extractor": {"name": "mnist-cnn-test"}, "num_generated": 48, "num_reference": 64,
              "reference_dataset": "mnist", "reference_split": "train", "sampling_img_per_s": img_per_s, "nfe": nfe,
              "checkpoint_step": STEPS, "step": STEPS}
    (run / METRICS_FILE).write_text(json.dumps(record))
    log_to_tensorboard(run, record, cfg, STEPS, images={})
    return run


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def compare(*args: str) -> None:
    main([*map(str, args), "--grid-samples", "4"])


@pytest.fixture(scope="module")
def sweep(configs, tmp_path_factory) -> Path:
    """3 GAN seeds (FID 10, 12, 14), 2 VAE seeds (FID 20, 30), 2 diffusion seeds: a trilemma in miniature."""
    root = tmp_path_factory.mktemp("sweep")
    for i, (seed, fid, rec) in enumerate([(0, 10.0, 0.70), (1, 12.0, 0.72), (2, 14.0, 0.74)]):
        make_run(root, f"{i}-gan-{seed}", configs["gan"], seed, fid, precision=0.8, recall=rec, img_per_s=1000.0,
                 train_time=10.0 + seed, overrides=["experiment=trilemma"], job_num=i)
    for i, (seed, fid, iwae) in enumerate([(0, 20.0, 3.0), (1, 30.0, 3.2)], start=3):
        make_run(root, f"{i}-vae-{seed}", configs["vae"], seed, fid, precision=0.4, recall=0.30, img_per_s=900.0,
                 bpd={"elbo": iwae + 0.5, "elbo_recon": 1.0, "elbo_kl": iwae - 0.5, "iwae_k4": iwae},
                 overrides=["experiment=trilemma"], job_num=i)
    for i, (seed, fid) in enumerate([(0, 50.0), (1, 52.0)], start=5):
        make_run(root, f"{i}-diffusion-{seed}", configs["diffusion"], seed, fid, precision=0.3, recall=0.2, img_per_s=10.0,
                 nfe=20, bpd={"vlb": 4.0 + seed}, overrides=["experiment=trilemma"], job_num=i)
    compare(root)
    return root


def test_one_row_per_variant_with_mean_and_std_over_seeds(sweep: Path, configs):
    table = {r["variant"]: r for r in rows(sweep / "compare.csv")}
    assert list(table) == ["gan", "vae", "diffusion"]  # experiment=trilemma is common to all: not part of a name
    gan, vae, dif = table["gan"], table["vae"], table["diffusion"]
    assert (gan["runs"], gan["seeds"], vae["runs"]) == ("3", "0 1 2", "2")
    assert float(gan["fid_mean"]) == pytest.approx(12.0) and float(gan["fid_std"]) == pytest.approx(2.0)  # ddof=1
    assert float(vae["fid_mean"]) == pytest.approx(25.0) and float(vae["fid_std"]) == pytest.approx(math.sqrt(50))
    assert float(gan["recall_mean"]) == pytest.approx(0.72) and float(gan["recall_std"]) == pytest.approx(0.02)
    assert float(gan["train_time_s_mean"]) == pytest.approx(11.0) and float(gan["images_seen_mean"]) == STEPS * BATCH
    # NLL: the tightest bound (IWAE for the VAE, not the ELBO nor its terms), none for the GAN
    assert float(vae["nll_bpd_mean"]) == pytest.approx(3.1) and float(vae["nll_bpd_std"]) == pytest.approx(math.sqrt(0.02))
    assert float(dif["nll_bpd_mean"]) == pytest.approx(4.5) and math.isnan(float(gan["nll_bpd_mean"]))
    assert (float(dif["nfe_mean"]), float(gan["nfe_mean"])) == (20.0, 1.0)
    for family in FAMILY:
        model = instantiate(configs[family]["model"], image_shape=(1, 16, 16), _convert_="all")
        assert float(table[family]["params_mean"]) == sum(p.numel() for p in model.parameters())
    md = (sweep / "compare.md").read_text()
    assert "| gan | 3 | 12.0 ± 2.0 |" in md and "| vae | 2 | 25.0 ± 7.1 |" in md
    assert "| — |" in md.split("| gan | 3 |")[1].splitlines()[0]  # a GAN has no NLL
    assert "vae: iwae_k4" in md and "Protocol, the same for every run: 48 generated vs 64 mnist train" in md


def test_one_row_per_run_matches_what_tensorboard_shows(sweep: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    per_run = rows(sweep / "compare_runs.csv")
    assert len(per_run) == 7
    for r in per_run:
        acc = EventAccumulator(str(Path(r["run_dir"]) / "tb"))
        acc.Reload()
        for key in ("fid", "precision", "recall", "kid_mean", "is_mean"):
            assert acc.Scalars(f"eval/{key}")[-1].value == pytest.approx(float(r[key]), rel=1e-6)
        experiment = HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
        assert {m.name.tag for m in experiment.metric_infos} >= {"eval/fid", "eval/precision", "eval/recall"}
    assert "compare checks that they agree" in (sweep / "compare.md").read_text()
    assert "Skipped" not in (sweep / "compare.md").read_text()


def test_a_number_tensorboard_does_not_show_is_flagged(configs, tmp_path: Path, capsys):
    run = make_run(tmp_path, "r", configs["gan"], 0, fid=10.0)
    record = json.loads((run / METRICS_FILE).read_text())
    record["metrics"]["fid"] = 11.0  # metrics.json edited after the eval: HParams would show 10
    (run / METRICS_FILE).write_text(json.dumps(record))
    compare(run, "-o", tmp_path / "out")
    assert "tb/ shows eval/fid=10 but metrics.json has 11" in capsys.readouterr().err


def test_verdicts_say_what_the_numbers_show(sweep: Path):
    md = (sweep / "compare.md").read_text()
    claim1, claim2, claim3 = [line for line in md.splitlines() if line.startswith("- **")]
    # GAN FID 12 ± 2 (3 seeds) vs VAE 25 ± 7.1 (2 seeds): t = 2.53 on 1.1 df, not significant; precision 0.8 vs 0.4
    # on every seed: clear; but the GAN's recall (0.72 ± 0.02) beats the VAE's (0.30): t = 36 on 2 df, clear
    assert "**mixed**" in claim1
    assert "FID (quality): gan 12.0 ± 2.0 vs vae 25.0 ± 7.1; difference -13, within the seed spread " \
           "(Welch |t| = 2.53 <= 12.7 on 1.1 df); the means go the claimed way → **inconclusive**" in claim1
    assert "precision (quality): gan 0.8 vs vae 0.4; difference +0.4, clear, every seed gave the same value " \
           "→ **supports**" in claim1
    assert "recall (diversity): vae 0.3 vs gan 0.720 ± 0.020; difference -0.42, clear (Welch |t| = 36.4 > 4.3 on 2 df) " \
           "→ **contradicts**" in claim1
    # diffusion samples 100x slower than the GAN, and its FID is worse: the cost buys nothing here
    assert "**mixed**. Cost: diffusion needs 20 network evaluations per image against 1 for gan, the fastest other " \
           "family; measured 10 vs 1,000 images/s, 100x slower, every diffusion run slower than every gan run → " \
           "**supports**." in claim2
    assert "What the cost buys, FID: diffusion 51.0 ± 1.4 vs gan 12.0 ± 2.0; difference +39, clear" in claim2
    assert claim2.endswith("→ **contradicts**.")
    # relative std: GAN 2/12 = 16.7%, VAE 7.07/25 = 28.3%, diffusion 1.41/51 = 2.8%: the VAE varies most
    assert "**contradicts** (weakly)" in claim3 and "gan 16.7%" in claim3 and "vae 28.3%" in claim3


def test_plots_are_written(sweep: Path):
    for name in ("fid_vs_train_time.png", "fid_vs_sampling_speed.png", "precision_recall.png", "samples.png"):
        with Image.open(sweep / name) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
        assert f"]({name})" in (sweep / "compare.md").read_text()


def test_fid_curve_puts_evaluations_at_training_time(sweep: Path):
    """eval/fid at step 4 of 8 comes after 2 of the 4 logging windows: half of train_time (10 s for seed 0)."""
    scalars = read_scalars(sweep / "0-gan-0" / "tb")
    assert fid_curve(scalars, final_fid=10.0, batch_size=BATCH) == [(pytest.approx(5.0), pytest.approx(20.0))]


def test_failed_missing_and_unevaluated_runs_are_named_and_skipped(configs, tmp_path: Path, capsys):
    root = tmp_path / "multirun" / "sweep"
    make_run(root, "0-gan", configs["gan"], 0, fid=10.0, job_num=0)
    make_run(root, "1-gan", configs["gan"], 1, fid=12.0, job_num=1)
    unevaluated = make_run(root, "2-gan", configs["gan"], 2, fid=14.0, job_num=2, evaluated=False)
    crashed = make_run(root, "3-gan", configs["gan"], 3, fid=0.0, job_num=3, evaluated=False)
    (crashed / "checkpoints" / "last.pt").unlink()
    sweep_cfg = {"hydra": {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
                           "overrides": {"task": ["model=gan", "seed=0,1,2,3,4"]}}}
    (root / "multirun.yaml").write_text(yaml.safe_dump(sweep_cfg))
    compare(root, tmp_path / "nowhere", "-o", root)
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nowhere'}: no such folder" in err
    assert f"{crashed}: training did not finish (no checkpoints/last.pt); see {crashed / 'train.log'}" in err
    assert f"{unevaluated}: not evaluated (no metrics.json)" in err and f"genbench eval run_dir={unevaluated}" in err
    assert f"{root}: job 4 of 5 (model=gan seed=4) has no folder" in err
    md = (root / "compare.md").read_text()
    skipped = md.split("## Skipped or suspect")[1].strip().splitlines()
    assert len(skipped) == 4 and all(line.startswith("- ") for line in skipped)
    gan = rows(root / "compare.csv")[0]
    assert (gan["runs"], gan["seeds"], float(gan["fid_mean"])) == ("2", "0 1", 11.0)  # the two good runs only


def test_no_comparable_run_is_one_clear_error(configs, tmp_path: Path, capsys):
    make_run(tmp_path, "r", configs["vae"], 0, fid=10.0, evaluated=False)
    with pytest.raises(SystemExit) as e:
        compare(tmp_path / "r", tmp_path / "empty_dir_that_is_missing")
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("genbench compare: error: no run could be compared:")
    assert "not evaluated" in err and "no such folder" in err and "Traceback" not in err


def test_variants_are_named_by_the_overrides_that_differ(configs, tmp_path: Path):
    for i, loss in enumerate(["hinge", "hinge", "wgan_gp"]):
        make_run(tmp_path / "runs", f"{i}", configs["gan"], i, fid=10.0 + i, overrides=[f"model.loss={loss}", "threads=1"])
    compare(tmp_path / "runs", "-o", tmp_path / "out")
    table = {r["variant"]: r for r in rows(tmp_path / "out" / "compare.csv")}
    assert set(table) == {"gan model.loss=hinge", "gan model.loss=wgan_gp"}
    assert table["gan model.loss=hinge"]["seeds"] == "0 1" and table["gan model.loss=wgan_gp"]["fid_std"] == "nan"


def test_small_helpers():
    assert pm(45.2345, 3.14) == "45.2 ± 3.1" and pm(0.61234, 0.0213) == "0.612 ± 0.021" and pm(123456, 789) == "123,456 ± 789"
    assert pm(float("nan"), 1.0) == "—" and pm(20.0, float("nan")) == "20" and pm(3.14159, 0.0) == "3.142"
    s = stat([1.0, float("nan"), 3.0])
    assert (s.mean, s.std, s.n, s.of) == (2.0, pytest.approx(math.sqrt(2)), 2, 3) and str(s) == "2.0 ± 1.4 (2/3 runs)"
    assert tightest_bound({"elbo": {"mean": 3.5}, "elbo_recon": {"mean": 1.0}, "iwae_k64": {"mean": 3.4}}) == ("iwae_k64", 3.4)
    assert tightest_bound({}) == (None, pytest.approx(float("nan"), nan_ok=True))
