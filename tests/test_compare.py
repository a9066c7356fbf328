"""`genbench compare` end to end on synthetic run folders (tests/report_fixtures.py), with chosen numbers."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import yaml
from PIL import Image

from genbench.compare import main
from genbench.report.runs import group_variants, read_run, sweep_jobs
from tests.report_fixtures import BATCH, STEPS, make_record, make_run


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def compare(*args) -> None:
    main([*map(str, args), "--grid-samples", "0"])


@pytest.fixture
def no_plots(monkeypatch):
    """For tests of the tables: the figures are tested in test_plots_are_written and test_report_plots.py."""
    from genbench.report import plots

    monkeypatch.setattr(plots, "plot_all", lambda *args, **kwargs: [])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """3 GAN seeds (FID 10, 12, 14), 2 VAE seeds (FID 20, 30), 2 diffusion seeds: a trilemma in miniature."""
    root = tmp_path_factory.mktemp("sweep")
    for i, (seed, fid, rec) in enumerate([(0, 10.0, 0.70), (1, 12.0, 0.72), (2, 14.0, 0.74)]):
        make_run(root, f"{i}-gan-{seed}", "gan", seed, make_record(
            fid, precision=0.8, recall=rec, img_per_s=1000.0, train_time=10.0 + seed, params=3000, flops_per_image=2e6,
            sample_flops=1e8, mfu=0.02, memorised=0.01 * seed), overrides=["experiment=trilemma"], job_num=i, curve={4: 2 * fid})
    for i, (seed, fid, iwae) in enumerate([(0, 20.0, 3.0), (1, 30.0, 3.2)], start=3):
        make_run(root, f"{i}-vae-{seed}", "vae", seed, make_record(
            fid, precision=0.4, recall=0.30, img_per_s=900.0, params=2000, sample_flops=5e7,
            bpd={"elbo": iwae + 0.5, "elbo_recon": 1.0, "elbo_kl": iwae - 0.5, "iwae_k4": iwae}),
            overrides=["experiment=trilemma"], job_num=i, curve={4: 2 * fid})
    for i, (seed, fid) in enumerate([(0, 50.0), (1, 52.0)], start=5):
        make_run(root, f"{i}-diffusion-{seed}", "diffusion", seed, make_record(
            fid, precision=0.3, recall=0.2, img_per_s=10.0, nfe=20, sampler="DPMSolverPP2M", params=4000,
            sample_flops=4e9, bpd={"vlb": 4.0 + seed}), overrides=["experiment=trilemma"], job_num=i, curve={4: 2 * fid})
    compare(root)
    return root


def test_one_row_per_variant_with_mean_and_std_over_seeds(sweep: Path):
    table = {r["variant"]: r for r in rows(sweep / "compare.csv")}
    assert list(table) == ["gan", "vae", "diffusion"]  # experiment=trilemma is common to all: not part of a name
    gan, vae, dif = table["gan"], table["vae"], table["diffusion"]
    assert [r["label"] for r in table.values()] == ["A", "B", "C"]
    assert (gan["runs"], gan["seeds"], vae["runs"]) == ("3", "0 1 2", "2")
    assert float(gan["fid_mean"]) == pytest.approx(12.0) and float(gan["fid_std"]) == pytest.approx(2.0)  # ddof=1
    assert float(vae["fid_mean"]) == pytest.approx(25.0) and float(vae["fid_std"]) == pytest.approx(math.sqrt(50))
    assert float(gan["recall_mean"]) == pytest.approx(0.72) and float(gan["recall_std"]) == pytest.approx(0.02)
    assert float(gan["train_time_s_mean"]) == pytest.approx(11.0) and float(gan["images_seen_mean"]) == STEPS * BATCH
    # NLL: the tightest bound (IWAE for the VAE, not the ELBO nor its terms), none for the GAN
    assert float(vae["nll_bpd_mean"]) == pytest.approx(3.1) and float(vae["nll_bpd_std"]) == pytest.approx(math.sqrt(0.02))
    assert float(dif["nll_bpd_mean"]) == pytest.approx(4.5) and math.isnan(float(gan["nll_bpd_mean"]))
    # parameters come from the record (no checkpoint is loaded); sampler and NFE are the ones used
    assert (float(gan["params_mean"]), float(vae["params_mean"]), float(dif["params_mean"])) == (3000, 2000, 4000)
    assert (dif["sampler"], float(dif["nfe_mean"]), gan["sampler"], float(gan["nfe_mean"])) == ("DPMSolverPP2M", 20, "—", 1)


def test_compute_columns(sweep: Path):
    """training PFLOPs = train_flops / 1e15, sampling GFLOPs/image = sample_flops_per_image / 1e9, MFU as recorded."""
    table = {r["variant"]: r for r in rows(sweep / "compare.csv")}
    assert float(table["gan"]["train_pflops_mean"]) == pytest.approx(2e6 * STEPS * BATCH / 1e15)
    assert float(table["vae"]["train_pflops_mean"]) == pytest.approx(1e6 * STEPS * BATCH / 1e15)
    assert float(table["gan"]["mfu_mean"]) == pytest.approx(0.02) and float(table["vae"]["mfu_mean"]) == pytest.approx(0.01)
    assert float(table["diffusion"]["sample_gflops_mean"]) == pytest.approx(4.0)
    assert float(table["gan"]["sample_gflops_mean"]) == pytest.approx(0.1)
    assert float(table["gan"]["memorised_mean"]) == pytest.approx(0.01) and table["vae"]["memorised_n"] == "0"
    md = (sweep / "compare.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| label | runs |"))
    for column in ("training PFLOPs", "MFU", "sampling GFLOPs/image", "sampler", "NFE", "memorised ↓"):
        assert f" {column} " in header
    assert "| C | 2 | DPMSolverPP2M | 51.0 ± 1.4 |" in md


def test_total_cost_of_training_and_10000_images(sweep: Path):
    """total PFLOPs = (train_flops + 10,000 x sample_flops_per_image) / 1e15; total s = train_time_s + 10,000 /
    sampling img/s. GAN: 2e6 FLOPs x 64 images + 10,000 x 1e8; 10 + seed s + 10,000 / 1000 img/s. Diffusion:
    1e6 x 64 + 10,000 x 4e9; 10 s + 10,000 / 10 img/s."""
    from genbench.report.runs import COLUMNS, COST_IMAGES

    assert COST_IMAGES == 10_000
    table = {r["variant"]: r for r in rows(sweep / "compare.csv")}
    gan, dif = table["gan"], table["diffusion"]
    assert float(gan["total_pflops_mean"]) == pytest.approx((2e6 * STEPS * BATCH + 1e4 * 1e8) / 1e15)
    assert float(gan["total_pflops_std"]) == 0.0 and gan["total_pflops_n"] == "3"
    assert float(dif["total_pflops_mean"]) == pytest.approx((1e6 * STEPS * BATCH + 1e4 * 4e9) / 1e15)
    assert float(gan["total_s_mean"]) == pytest.approx(21.0) and float(gan["total_s_std"]) == pytest.approx(1.0)
    assert float(dif["total_s_mean"]) == pytest.approx(1010.0)
    per_run = {r["run_dir"].rsplit("/", 1)[-1]: r for r in rows(sweep / "compare_runs.csv")}
    assert float(per_run["2-gan-2"]["total_s"]) == pytest.approx(12.0 + 10.0)
    assert float(per_run["2-gan-2"]["total_pflops"]) == pytest.approx(1.000128e-3)
    md = (sweep / "compare.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| label | runs |"))
    assert " total PFLOPs (training + 10,000 images) | total s (training + 10,000 images) |" in header
    assert COLUMNS["total_s"] in header and "21.0 ± 1.0" in next(line for line in md.splitlines() if line.startswith("| A | 3 |"))
    run_line = next(line for line in md.splitlines() if line.startswith("| A | 2 |"))  # seed 2 in the Runs table
    assert "| 0.02 | 0.001 | 22 | 64 |" in run_line  # MFU, total PFLOPs (4 significant digits), total s, images seen


def test_total_cost_is_unknown_where_a_part_is():
    from genbench.report.runs import total_cost

    assert total_cost(2e15, 1e11, 100.0, 50.0, images=10) == {"total_pflops": pytest.approx(2.001), "total_s": 100.2}
    unknown = total_cost(math.nan, 1e9, 10.0, 0.0)  # no training FLOPs; no sampling speed measured
    assert math.isnan(unknown["total_pflops"]) and math.isnan(unknown["total_s"])


def test_runs_csv_matches_what_tensorboard_shows(sweep: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    per_run = rows(sweep / "compare_runs.csv")
    assert len(per_run) == 7 and {r["record"] for r in per_run} == {"headline"}
    for r in per_run:
        acc = EventAccumulator(str(Path(r["run_dir"]) / "tb"))
        acc.Reload()
        for key in ("fid", "precision", "recall", "kid_mean", "is_mean"):
            assert acc.Scalars(f"eval/{key}")[-1].value == pytest.approx(float(r[key]), rel=1e-6)
    assert "Skipped" not in (sweep / "compare.md").read_text()


def test_verdicts_state_test_and_seeds(sweep: Path):
    md = (sweep / "compare.md").read_text()
    claims = [line for line in md.splitlines() if line.startswith("- **")]
    assert len(claims) == 4
    quality, cost, stability, both = claims
    # GAN FID 12 ± 2 (3 seeds) vs VAE 25 ± 7.1 (2 seeds): Welch t = -2.53 on 1.1 df, not significant;
    # precision 0.8 vs 0.4 on every seed: exact; the GAN's recall (0.72 ± 0.02) beats the VAE's (0.30): contradicts
    assert quality.startswith("- **GAN quality vs VAE diversity**") and "**mixed**" in quality
    assert "FID (quality): gan (A) 12.0 ± 2.0 vs vae (B) 25.0 ± 7.1; difference -13; Welch's t-test, 3 vs 2 seeds: " \
           "t = -2.53 on 1.1 df, p = 0.22" in quality
    assert "precision (quality): gan (A) 0.8 vs vae (B) 0.4; difference +0.4; every seed gave the same value " \
           "(3 vs 2 seeds) → **supports**" in quality
    assert "recall (diversity): vae (B) 0.3 vs gan (A) 0.720 ± 0.020; difference -0.42;" in quality
    assert quality.endswith("→ **contradicts**.")
    # 4 GFLOPs per diffusion image against 0.05 for the VAE: 80x; and its FID is worse than the GAN's
    assert "Cost: diffusion (C) needs 4 GFLOPs per image at NFE 20 against 0.05 for vae (B), the cheapest other " \
           "family (80x) → **supports**." in cost
    assert "What the cost buys, FID: diffusion (C) 51.0 ± 1.4 vs gan (A) 12.0 ± 2.0" in cost and cost.endswith(
        "→ **contradicts**.") and "**mixed**" in cost
    # relative spreads: GAN 16.7%, VAE 28.3%, diffusion 2.8%; F-tests at 2 and 1 df resolve nothing here
    assert "gan (A) 16.7%" in stability and "vae (B) 28.3%" in stability and "**inconclusive**" in stability
    assert "F-test on var(log FID), 3 vs 2 seeds" in stability and "Runs that failed or were not evaluated: 0 of gan's" \
        in stability
    # diffusion FID 51 vs the GAN's 12 (+10% margin: at most 13.2) and recall 0.2 vs the VAE's 0.3 (at least 0.27)
    assert "**contradicted**" in both and "so at most 13.2 (10% margin)" in both and "so at least 0.27" in both


def test_plots_are_written(sweep: Path):
    md = (sweep / "compare.md").read_text()
    for name in ("fid_vs_train_time.png", "fid_vs_train_flops.png", "fid_vs_sampling_speed.png", "precision_recall.png",
                 "memorisation.png"):
        with Image.open(sweep / name) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
        assert f"]({name})" in md
    assert not (sweep / "samples.png").exists()  # --grid-samples 0
    assert not (sweep / "fid_vs_nfe.png").exists()  # no run holds records at a second NFE
    assert "No variant has records at two or more NFE" in md and (sweep / "fid_vs_nfe.csv").is_file()


def test_variants_without_a_memorisation_panel_are_named(tmp_path: Path, no_plots, capsys):
    make_run(tmp_path / "runs", "g", "gan", 0, make_record(10.0), panel=False)
    compare(tmp_path / "runs", "-o", tmp_path / "out")
    message = (f"variant A (gan): {tmp_path / 'runs' / 'g' / 'eval' / 'memorisation.png'} does not exist (evaluated "
               "with eval.memorisation.enabled=false or panel=0, or before panels were saved); left out of memorisation.png")
    assert message in capsys.readouterr().err
    assert f"- {message}" in (tmp_path / "out" / "compare.md").read_text().split("## Skipped or suspect")[1]


def test_fid_curves_against_time_and_flops(sweep: Path):
    """eval_during/fid at step 4 of 8: half the training time (perf/train_time_s) and half the FLOPs (perf/train_flops)."""
    run = read_run(sweep / "0-gan-0")
    assert [(p.step, p.value) for p in run.fid_curve] == [(4, 20.0)]
    assert run.curve_s == [pytest.approx(5.0)]
    assert run.curve_flops == [pytest.approx(2e6 * 4 * BATCH)]


def test_old_format_1_run_reads_its_record_and_eval_fid_curve(tmp_path: Path, no_plots):
    """A run from before records: metrics.json is the record, eval/fid holds the during-training FIDs and the
    final one, and tb/ has no perf/train_time_s: its seconds are spread evenly over its steps."""
    run = make_run(tmp_path, "old", "gan", 0, make_record(10.0, train_time=16.0, fmt=1), curve={4: 30.0, 6: 20.0})
    r = read_run(run)
    assert r.protocol["id"].startswith("v1-") and r.protocol["num_generated"] == 48
    assert [(p.step, p.value) for p in r.fid_curve] == [(4, 30.0), (6, 20.0)]  # not the final eval/fid at step 8
    assert r.curve_s == [8.0, 12.0] and r.curve_flops is None and math.isnan(r.values["train_pflops"])
    compare(run, "-o", tmp_path / "out")
    table = rows(tmp_path / "out" / "compare.csv")
    assert len(table) == 1 and float(table[0]["fid_mean"]) == 10.0
    from genbench.report.plots import fid_vs_training

    assert fid_vs_training(group_variants([r])[0], "flops") is None  # no FLOPs anywhere: no plot


def test_flops_from_images_seen_when_the_trainer_did_not_log_them(tmp_path: Path):
    """perf/train_flops missing: training FLOPs at a step = perf/images_seen x train_flops_per_image."""
    run = make_run(tmp_path, "r", "gan", 0, make_record(10.0, flops_per_image=None), curve={4: 20.0})
    record_path = run / "metrics.json"
    text = record_path.read_text().replace('"train_flops_per_image": null', '"train_flops_per_image": 3000.0')
    record_path.write_text(text)
    assert read_run(run).curve_flops == [pytest.approx(3000.0 * 4 * BATCH)]


def test_runs_under_different_protocols_are_never_averaged(tmp_path: Path, no_plots, capsys):
    """Two GAN seeds scored on 48 samples, one on 96: two rows, each named by its protocol, and the verdicts
    use the protocol most runs share."""
    for seed, pid, n in [(0, "p48", 48), (1, "p48", 48), (2, "p96", 96)]:
        make_run(tmp_path / "runs", f"gan-{seed}", "gan", seed, make_record(10.0 + seed, pid=pid, num_samples=n))
    compare(tmp_path / "runs", "-o", tmp_path / "out")
    table = rows(tmp_path / "out" / "compare.csv")
    assert [(r["variant"], r["protocol"], r["runs"]) for r in table] == [
        ("gan [protocol p48]", "p48", "2"), ("gan [protocol p96]", "p96", "1")]
    assert float(table[0]["fid_mean"]) == 10.5 and float(table[1]["fid_mean"]) == 12.0
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "**The runs were scored under 2 different protocols, so their numbers are not comparable across them.**" in md
    assert "The verdicts use protocol `p48`" in md
    assert "| protocol | variants | num_samples |" in md and "| `p48` | A | 48 |" in md and "| `p96` | B | 96 |" in md


def test_sampler_and_nfe_split_variants(tmp_path: Path, no_plots):
    """A diffusion run re-scored as its headline with DDIM 5 is not averaged with the DPM-Solver++ 20 runs."""
    for seed, sampler, nfe in [(0, "DPMSolverPP2M", 20), (1, "DPMSolverPP2M", 20), (2, "DDIM", 5)]:
        make_run(tmp_path / "runs", f"d-{seed}", "diffusion", seed, make_record(50.0, sampler=sampler, nfe=nfe))
    compare(tmp_path / "runs", "-o", tmp_path / "out")
    table = rows(tmp_path / "out" / "compare.csv")
    assert [(r["variant"], r["runs"], r["nfe_mean"]) for r in table] == [
        ("diffusion DPMSolverPP2M NFE 20", "2", "20.0"), ("diffusion DDIM NFE 5", "1", "5.0")]


def test_headline_record_is_used_and_other_records_counted(tmp_path: Path):
    run = make_run(tmp_path, "r", "diffusion", 0, make_record(50.0, sampler="DPMSolverPP2M", nfe=20),
                   extra_records={"ddim5": make_record(70.0, sampler="DDIM", nfe=5)})
    r = read_run(run)
    assert (r.headline, r.other_records, r.values["fid"], r.values["nfe"]) == ("headline", 1, 50.0, 20.0)


def test_a_number_tensorboard_does_not_show_is_flagged(tmp_path: Path, no_plots, capsys):
    run = make_run(tmp_path, "r", "gan", 0, make_record(10.0))
    (run / "metrics.json").write_text((run / "metrics.json").read_text().replace('"fid": 10.0', '"fid": 11.0'))
    compare(run, "-o", tmp_path / "out")
    assert "tb/ shows eval/fid=10 but metrics.json has 11" in capsys.readouterr().err


def test_failed_missing_and_unevaluated_runs_are_named_and_skipped(tmp_path: Path, no_plots, capsys):
    root = tmp_path / "multirun" / "sweep"
    make_run(root, "0-gan", "gan", 0, make_record(10.0), job_num=0)
    make_run(root, "1-gan", "gan", 1, make_record(12.0), job_num=1)
    unevaluated = make_run(root, "2-gan", "gan", 2, make_record(14.0), job_num=2)
    (unevaluated / "metrics.json").unlink()
    (unevaluated / "checkpoints").mkdir()
    (unevaluated / "checkpoints" / "last.pt").write_bytes(b"")
    crashed = make_run(root, "3-gan", "gan", 3, make_record(0.0), job_num=3)
    (crashed / "metrics.json").unlink()
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


def test_sweep_jobs_expand_like_the_basic_sweeper():
    """Sweeper params first, then the task overrides; a later value of a key replaces it in place."""
    cfg = {"hydra": {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                                 "params": {"model": "gan,vae", "seed": "0,1,2"}},
                     "overrides": {"task": ["experiment=trilemma", "seed=0,1"]}}}
    assert sweep_jobs(cfg) == ["model=gan seed=0 experiment=trilemma", "model=gan seed=1 experiment=trilemma",
                               "model=vae seed=0 experiment=trilemma", "model=vae seed=1 experiment=trilemma"]
    cfg["hydra"]["sweeper"]["_target_"] = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweep_jobs(cfg) is None  # another sweeper: no check


def test_no_comparable_run_is_one_clear_error(tmp_path: Path, capsys):
    run = make_run(tmp_path, "r", "vae", 0, make_record(10.0))
    (run / "metrics.json").unlink()
    with pytest.raises(SystemExit) as e:
        compare(run, tmp_path / "empty_dir_that_is_missing")
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("genbench compare: error: no run could be compared:")
    assert "training did not finish" in err and "no such folder" in err and "Traceback" not in err


def test_variants_are_named_by_the_overrides_that_differ(tmp_path: Path, no_plots, capsys):
    for i, loss in enumerate(["hinge", "hinge", "wgan_gp", "hinge"]):
        make_run(tmp_path / "runs", f"{i}", "gan", i % 3, make_record(10.0 + i),
                 overrides=[f"model.loss={loss}", f"threads={i}"])
    compare(tmp_path / "runs", "-o", tmp_path / "out")
    table = {r["variant"]: r for r in rows(tmp_path / "out" / "compare.csv")}
    assert set(table) == {"gan model.loss=hinge", "gan model.loss=wgan_gp"}
    assert table["gan model.loss=hinge"]["seeds"] == "0 1 0" and table["gan model.loss=wgan_gp"]["fid_std"] == "nan"
    assert "has seed 0 2 times" in capsys.readouterr().err  # two runs of one seed: said, not hidden


def test_family_comes_from_the_model_target(tmp_path: Path):
    run = make_run(tmp_path, "r", "flow", 0, make_record(10.0))  # a family genbench does not know by name
    assert read_run(run).family == "flow"
    from genbench.report.runs import family_of

    assert family_of("genbench.models.gan.GAN") == "gan" and family_of("mypkg.models.flow.Flow") == "flow"


def test_a_record_older_than_the_training_is_flagged(tmp_path: Path):
    """tb/ logged training past the step metrics.json scored: the record is stale."""
    from torch.utils.tensorboard import SummaryWriter

    from genbench.report.runs import suspect

    run = make_run(tmp_path, "r", "gan", 0, make_record(10.0))
    assert suspect(read_run(run)) == []
    with SummaryWriter(str(run / "tb")) as w:  # training resumed and went on to step 12
        w.add_scalar("train/loss", 0.1, 12)
    assert suspect(read_run(run)) == [f"{run}: metrics.json scores step {STEPS} but tb/ logged training up to step 12; "
                                      f"re-score it with `genbench eval run_dir={run}`"]


def test_an_unwritable_output_folder_is_one_line(tmp_path: Path, capsys):
    run = make_run(tmp_path, "r", "gan", 0, make_record(10.0))
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as e:
        compare(run, "-o", tmp_path / "file" / "out")
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f"genbench compare: error: cannot write into {tmp_path / 'file' / 'out'}")
    assert len(err.strip().splitlines()) == 1


def test_each_run_names_the_machine_it_trained_on(tmp_path: Path, no_plots):
    """Runs kept across machines (genbench.report.archive) say where their training seconds were measured."""
    from genbench.report.runs import machine_text

    cpu = {"cpu_model": "Intel(R) Xeon(R) Processor", "cpu_count": 2, "torch_threads": 1, "device": "cpu"}
    make_run(tmp_path, "a", "gan", 0, make_record(10.0, machine=cpu))
    make_run(tmp_path, "b", "gan", 1, make_record(12.0, machine={**cpu, "cpu_model": "AMD EPYC 7B13", "torch_threads": 2}))
    make_run(tmp_path, "c", "gan", 2, make_record(14.0))  # a record older than machines in records
    old = make_record(16.0)
    make_run(tmp_path, "d", "gan", 3, {**old, "machine": cpu})  # older than training.machine: the evaluation's machine
    compare(tmp_path, "-o", tmp_path / "out")
    got = {r["seed"]: r["machine"] for r in rows(tmp_path / "out" / "compare_runs.csv")}
    assert got == {"0": "Intel(R) Xeon(R) Processor, 1 of 2 CPU threads", "1": "AMD EPYC 7B13, 2 of 2 CPU threads", "2": "—",
                   "3": "Intel(R) Xeon(R) Processor, 1 of 2 CPU threads"}
    assert "| AMD EPYC 7B13, 2 of 2 CPU threads |" in (tmp_path / "out" / "compare.md").read_text()
    assert machine_text({"device": "cuda", "device_name": "NVIDIA H200", "cpu_model": "x"}) == "NVIDIA H200"


def test_a_setting_with_one_value_per_model_does_not_name_variants(tmp_path: Path, no_plots):
    """A paced time budget gives each family its own trainer.max_flops: the variants are still gan and vae; a
    value that varies within one model still names its variants."""
    for i, (family, flops) in enumerate([("gan", "4e13"), ("gan", "4e13"), ("vae", "2e13")]):
        make_run(tmp_path / "paced", f"{i}", family, i, make_record(10.0 + i), overrides=[f"trainer.max_flops={flops}"])
    compare(tmp_path / "paced", "-o", tmp_path / "a")
    assert [r["variant"] for r in rows(tmp_path / "a" / "compare.csv")] == ["gan", "vae"]
    for i, (family, flops) in enumerate([("gan", "4e13"), ("gan", "8e13"), ("vae", "2e13")]):
        make_run(tmp_path / "sweep", f"{i}", family, 0, make_record(10.0 + i), overrides=[f"trainer.max_flops={flops}"])
    compare(tmp_path / "sweep", "-o", tmp_path / "b")
    assert [r["variant"] for r in rows(tmp_path / "b" / "compare.csv")] == [
        "gan trainer.max_flops=4e13", "gan trainer.max_flops=8e13", "vae trainer.max_flops=2e13"]
