"""The CLI a person meets at a terminal, driven in-process through genbench.cli.main.

Bad overrides (#13 case 8) end in ONE line on stderr, exit status 2, before any work is spent: the
check composes the verb's config with Hydra's compose API and type-checks it (genbench.validate)."""

from __future__ import annotations

import logging
from io import StringIO
from pathlib import Path
from typing import Annotated

import pytest
from hydra.errors import InstantiationException
from omegaconf import OmegaConf, open_dict

import genbench
from genbench import cli, preflight
from genbench.runtime import parse_duration
from genbench.preflight import check_config
from genbench.validate import ConfigError, one_line_errors
from tests.conftest import tiny_overrides


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def error_line(capsys, *args: str) -> str:
    """Run a command that must fail: exit 2 and exactly one line on stderr, which is returned."""
    code, _, err = run(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("genbench: error: "), err
    return lines[0]


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the command gets past the check: the verb itself never runs."""

    def refuse(verb, rest):
        raise AssertionError(f"genbench {verb} ran: the bad override was not caught before the run")

    monkeypatch.setattr(cli, "run_verb", refuse)


# --- verbs, --version, --help -------------------------------------------------------------------


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"genbench {genbench.__version__}"


def test_help_lists_every_verb(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "usage: genbench {train,sample,eval,compare}" in out
    assert all(f"  {verb} " in out for verb in cli.VERBS)


@pytest.mark.parametrize("typed, suggestion", [("trian", "'train'"), ("evaluate", "'eval'"), ("sampel", "'sample'")])
def test_mistyped_verb_says_did_you_mean(capsys, typed, suggestion):
    line = error_line(capsys, typed)
    assert f"unknown verb {typed!r}; did you mean {suggestion}?" in line


def test_override_without_verb_suggests_train(capsys):
    assert "did you mean `genbench train model=gan ...`?" in error_line(capsys, "model=gan")


def test_train_help_shows_train_groups(capsys):
    code, out, _ = run(capsys, "train", "--help")
    groups = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert code == 0 and {"data", "model", "optim", "trainer", "eval", "experiment", "schedule@model.schedule"} <= groups
    assert "diffusion*" in out and "hydra/launcher" not in out


def test_train_help_follows_the_command_line(capsys):
    _, out, _ = run(capsys, "train", "model=gan", "--help")
    assert "gan*" in out and "schedule@model.schedule" not in out  # a GAN has no noise schedule


@pytest.mark.parametrize("verb", ["sample", "eval"])
def test_sample_and_eval_help_show_only_their_groups(capsys, verb):
    code, out, _ = run(capsys, verb, "--help")
    groups = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert code == 0 and "sampler" in groups and not groups & {"model", "optim", "trainer", "experiment"}
    assert "run_dir=" in out


def test_cfg_job_prints_the_composed_config(capsys):
    code, out, _ = run(capsys, "train", "--cfg", "job", "schedule@model.schedule=cosine")
    assert code == 0 and "genbench.schedules.cosine" in out and "genbench.models.diffusion.Diffusion" in out


# --- #13 case 8: bad overrides, one line each, before any work ---------------------------------------


def test_misspelled_option_lists_the_allowed_ones(capsys, no_work):
    line = error_line(capsys, "train", "model=difusion")
    options = ", ".join(sorted(p.stem for p in (Path(genbench.CONF_DIR) / "model").glob("*.yaml")))
    assert f"model='difusion' is not one of: {options} (did you mean diffusion?)" in line


def test_misspelled_option_of_a_nested_group(capsys, no_work):
    line = error_line(capsys, "train", "schedule@model.schedule=cosin")
    assert "schedule@model.schedule='cosin' is not one of: cosine, linear, sigmoid (did you mean cosine?)" in line


def test_misspelled_key_says_did_you_mean(capsys, no_work):
    assert "trainer.max_step is not a key of genbench train's config (did you mean trainer.max_steps?)" in error_line(
        capsys, "train", "trainer.max_step=5")
    assert "(did you mean seed?)" in error_line(capsys, "train", "sed=1")


def test_unknown_constructor_parameter(capsys, no_work):
    assert "trainer.max_stepz is not a parameter of Trainer (did you mean max_steps?)" in error_line(
        capsys, "train", "+trainer.max_stepz=5")


@pytest.mark.parametrize(
    "override, needle",
    [
        ("seed=abc", "seed='abc' must be int"),  # a top-level value: typed by the value it replaces
        ("trainer.max_steps=abc", "trainer.max_steps='abc' must be int or null"),  # typed by Trainer's signature
        ("trainer.batch_size=1.5", "trainer.batch_size=1.5 must be int"),
        ("trainer.ema_decay=abc", "trainer.ema_decay='abc' must be float"),
        ("optim.lr=abc", "optim.lr='abc' must be float"),
        ("model.network.channel_mults=[1,a]", "model.network.channel_mults=[1, 'a'] must be a list of int"),
        ("model.prediction=score", "model.prediction='score' is not one of: eps, x0, v"),
    ],
)
def test_value_of_the_wrong_type(capsys, no_work, override, needle):
    assert needle in error_line(capsys, "train", override)


def test_missing_mandatory_value(capsys, no_work):
    assert "data.root is required by data=image_folder: add data.root=" in error_line(capsys, "train", "data=image_folder")


def test_override_grammar_and_unswept_list(capsys, no_work):
    assert "seed=[1: no viable alternative" in error_line(capsys, "train", "seed=[1")
    assert "model=gan,vae has several values: add -m to sweep" in error_line(capsys, "train", "model=gan,vae")


def test_sweeps_check_every_value(capsys, no_work):
    assert "model='vea' is not one of" in error_line(capsys, "train", "-m", "model=gan,vea", "seed=0,1")
    assert "seed='x' must be int" in error_line(capsys, "train", "-m", "experiment=trilemma", "seed=0,x")


def test_good_sweeps_pass_the_check():
    preflight.check_command("train", ["-m", "model=gan,vae", "seed=0,1", "hydra/launcher=joblib", "threads=1"])
    # experiment=trilemma's own sweep (hydra.sweeper.params) is checked through the README's commands


def test_sweep_sets_cover_every_value_once():
    # the command line's seed=0 replaces the experiment's seed sweep; its model sweep still counts
    sets = preflight._override_sets(["seed=0", "trainer.max_steps=1,2"], True, {"model": "gan,vae,diffusion", "seed": "0,1,2"})
    assert sets == [["seed=0", "trainer.max_steps=1", "model=gan"], ["seed=0", "trainer.max_steps=2", "model=gan"],
                    ["seed=0", "trainer.max_steps=1", "model=vae"], ["seed=0", "trainer.max_steps=1", "model=diffusion"]]
    assert preflight._override_sets(["seed=0,1"], False, {}) == [["seed=0,1"]]  # no -m: Hydra's own "several values" error


def test_what_hydra_cannot_parse_is_left_to_hydra(capsys):
    preflight.check_command("sample", ["run_dir=/tmp", "--cfg", "job", "num_samples=3"])  # overrides on both sides
    assert capsys.readouterr().err == ""  # Hydra prints its own usage error, once


def test_full_error_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(cli.UsageError) as info:
        cli.main(["train", "model=difusion"])
    assert info.value.__cause__ is not None  # Hydra's own exception, with its traceback


@pytest.mark.parametrize(
    "args, needle",
    [
        (["sample"], "run_dir= is required"),
        (["eval"], "run_dir= is required"),
        (["sample", "run_dir=/nonexistent/run"], "run_dir=/nonexistent/run holds no checkpoints/last.pt"),
        (["eval", "samples_dir=/nonexistent/samples", "data=fashion_mnist"], "samples_dir=/nonexistent/samples does not exist"),
    ],
)
def test_sample_and_eval_need_their_inputs(capsys, no_work, args, needle):
    assert needle in error_line(capsys, *args)


def test_eval_takes_samples_dir_without_run_dir(tmp_path: Path):
    preflight.check_command("eval", [f"samples_dir={tmp_path}", "data=fashion_mnist"])


@pytest.mark.parametrize(
    "override, needle",
    [
        ("optim.lr=-1", "optim.lr=-1 must be a positive"),
        ("trainer.batch_size=0", "trainer.batch_size=0 must be positive"),
        ("trainer.max_time=banana", "trainer.max_time='banana' is not a duration"),
        ("data.image_size=30", "data.image_size=30x30 must be divisible by"),
    ],
)
def test_out_of_range_numbers_are_one_line_from_the_constructors(capsys, tmp_path, mnist_root, override, needle):
    run_dir = tmp_path / "run"
    line = error_line(capsys, "train", *tiny_overrides(mnist_root), override, f"hydra.run.dir={run_dir}")
    assert needle in line
    assert not (run_dir / "checkpoints").exists()
    assert needle in (run_dir / "train.log").read_text()  # the run's log holds the error that stopped it


def test_bad_duration_stops_before_the_data_is_read(capsys, tmp_path):
    """trainer.max_time=banana: the Trainer is built first, so the data (absent here) is never read."""
    line = error_line(capsys, "train", "trainer.max_time=banana", "data=mnist", f"data.root={tmp_path / 'nowhere'}",
                      f"hydra.run.dir={tmp_path / 'run'}")
    assert "trainer.max_time='banana' is not a duration; write e.g. 10m, 90s, 1h30m" in line


@pytest.mark.parametrize("group", ["model", "experiment", "data", "optim", "trainer",
                                   *(pytest.param(g, marks=pytest.mark.slow) for g in ("eval", "schedule", "sampler"))])
def test_every_shipped_option_passes_the_check(group):
    """The check must not reject what genbench ships (no false alarms)."""
    key = f"{group}@model.{group}" if group in ("schedule", "sampler") else group
    for option in sorted(p.stem for p in (Path(genbench.CONF_DIR) / group).glob("*.yaml")):
        preflight.check_command("train", [f"{key}={option}", *(["data.root=/tmp"] if option == "image_folder" else [])])
        if group == "sampler":
            preflight.check_command("eval", ["samples_dir=/tmp", "data=mnist", f"sampler={option}"])


# --- the checks themselves -------------------------------------------------------------------------


def test_type_check_reads_signatures(compose_cfg):
    cfg = compose_cfg("train", [])
    check_config(cfg)
    with open_dict(cfg):
        cfg.model.network = {"_target_": "genbench.networks.unet.UNet", "_partial_": True, "base_channels": "wide"}
    with pytest.raises(ConfigError, match=r"model.network.base_channels='wide' must be int"):
        check_config(cfg)


def annotated_duration(max_time: Annotated[str | float | None, parse_duration] = None) -> None:
    """A constructor whose parameter carries its own parser in Annotated metadata."""


def test_annotated_validators_run_before_the_run(compose_cfg):
    cfg = OmegaConf.create({"trainer": {"_target_": f"{__name__}.annotated_duration", "max_time": "banana"}})
    with pytest.raises(ConfigError, match=r"^trainer.max_time='banana' is not a duration"):
        check_config(cfg)
    check_config(OmegaConf.create({"trainer": {"_target_": f"{__name__}.annotated_duration", "max_time": "10m"}}))


def test_one_line_errors_names_the_key_of_a_failed_instantiate(capsys):
    @one_line_errors
    def task():
        try:
            raise TypeError("__init__() got an unexpected keyword argument 'foo'")
        except TypeError as e:
            raise InstantiationException("Error in call to target 'X':\nTypeError(...)\nfull_key: model.network") from e

    with pytest.raises(SystemExit) as info:
        task()
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1
    assert err[0] == "genbench: error: model.network: TypeError: __init__() got an unexpected keyword argument 'foo'"


def test_one_line_errors_for_a_full_disk(capsys, tmp_path):
    import errno

    from genbench.atomic import WriteError

    handler = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(handler)
    try:
        @one_line_errors
        def task():
            raise WriteError(errno.ENOSPC, "could not write run/checkpoints/last.pt: no space left on the device")

        with pytest.raises(SystemExit) as info:
            task()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and "could not write run/checkpoints/last.pt" in err[0]
    assert "could not write run/checkpoints/last.pt" in (tmp_path / "train.log").read_text()  # the log has it too


# --- logging and the bar ---------------------------------------------------------------------------


def _log_under_a_bar(handler: logging.Handler, stream: StringIO) -> list[str]:
    from tqdm import tqdm

    logger = logging.getLogger("genbench.test_bar")
    logger.propagate, logger.handlers = False, [handler]
    with tqdm(total=10, file=stream, desc="train", ascii=True, mininterval=0) as bar:
        bar.update(3)
        logger.warning("a log line")
        bar.update(3)
    return [part.rsplit("\r", 1)[-1] for part in stream.getvalue().split("\n")]


def test_log_lines_print_above_the_bar_not_into_it():
    from genbench.logs import TqdmHandler

    stream = StringIO()
    assert "a log line" in _log_under_a_bar(TqdmHandler(stream), stream)
    plain = StringIO()  # the plain handler this replaces writes into the bar's line
    assert "a log line" not in _log_under_a_bar(logging.StreamHandler(plain), plain)


def test_hydra_logs_the_console_through_tqdm_and_keeps_the_file():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    for verb in ("train", "sample", "eval"):
        with initialize_config_dir(config_dir=genbench.CONF_DIR, version_base="1.3"):
            handlers = compose(config_name=verb, return_hydra_config=True).hydra.job_logging.handlers
        assert handlers.console["class"] == "genbench.logs.TqdmHandler"
        assert handlers.file["class"] == "logging.FileHandler"
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("override, new", [("model.lr_g=-1", "optim.lr"), ("model.lr=1e-3", "optim.lr"),
                                           ("model.betas=[0.5,0.9]", "optim.betas")])
def test_a_moved_key_names_where_it_went(capsys, override, new):
    """Optimizer values moved from the models to optim/: the old key says where, in one line."""
    from genbench.cli import main

    assert main(["train", "model=gan", override]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and new in err and "is not a key" in err


def test_an_unexpected_error_keeps_its_traceback_and_leaves_a_line_in_the_log(tmp_path):
    import logging

    from genbench.validate import one_line_errors

    handler = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(RuntimeError, match="a bug"):
            one_line_errors(lambda: (_ for _ in ()).throw(RuntimeError("a bug\nmore")))()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert "stopped by an error: RuntimeError: a bug" in (tmp_path / "train.log").read_text()
