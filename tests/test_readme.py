"""The README shows what the program does today.

- every `$ genbench ...` transcript in a ```console block is run in-process and must print exactly the
  lines shown (training commands shrunk to synthetic data and one step, which does not change an error);
- every `genbench ...` command in a ```bash block must compose and pass the CLI's checks (`--cfg job`,
  or the sweep check for `-m`), with placeholders such as <date> left out;
- every `make X` target exists, and the config table lists exactly the options in conf/.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import genbench
from genbench import cli, preflight
from tests.conftest import write_mnist_like

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", README, flags=re.S | re.M)


def transcripts() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for each `$ genbench ...` line of the ```console blocks."""
    found = []
    for lang, body in BLOCKS:
        if lang != "console":
            continue
        for chunk in re.split(r"^\$ ", body, flags=re.M)[1:]:
            command, *output = chunk.rstrip("\n").split("\n")
            if command.startswith("genbench"):
                found.append((command, output))
    return found


def commands() -> list[str]:
    """The `genbench ...` commands of the ```bash blocks (comments and environment assignments removed) and
    of the text's `genbench ...` spans, placeholders (<run>, D, X, ...) left out."""
    lines = [line for lang, body in BLOCKS if lang == "bash" for line in body.replace("\\\n", " ").splitlines()]
    prose = re.sub(r"^```.*?^```", "", README, flags=re.S | re.M)
    lines += re.findall(r"`(genbench [^`]*)`", prose)
    found = []
    for line in lines:
        if "<TAB>" in line:  # completion examples: tests/test_completion.py
            continue
        words = shlex.split(re.sub(r"<[^>]*>|\[[^]]*\]", "<>", line), comments=True)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words = words[1:]
        words = [w for w in words if not re.search(r"<|\.\.\.|=[A-Z_]+$|^[A-Z]+$", w)]
        if words[:1] == ["genbench"] and len(words) > 1 and (words[1] in cli.VERBS or words[1].startswith("-")):
            found.append(shlex.join(words))
    return sorted(set(found))


def test_the_readme_has_examples_to_check():
    assert len(transcripts()) >= 8 and len(commands()) >= 6


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory) -> Path:
    return write_mnist_like(tmp_path_factory.mktemp("readme") / "data", "MNIST")


def shrink(args: list[str], data: Path, run_dir: Path) -> list[str]:
    """Settings that make a `train` command cheap, for the keys the command does not set itself."""
    extra = {"data": "mnist", "data.root": str(data), "trainer.device": "cpu", "trainer.max_steps": "1",
             "trainer.max_time": "null", "trainer.progress": "false", "hydra.run.dir": str(run_dir)}
    typed = {a.lstrip("+~").split("=")[0] for a in args}
    if any(k.startswith("data") for k in typed):
        extra.pop("data"), extra.pop("data.root")
    return [*args, *(f"{k}={v}" for k, v in extra.items() if k not in typed), "~eval"]


@pytest.mark.parametrize("command, expected", transcripts(), ids=[c for c, _ in transcripts()])
def test_transcript_prints_what_the_readme_shows(command, expected, capsys, synthetic_data, tmp_path):
    args = shlex.split(command)[1:]
    if args[:1] == ["train"]:
        args = shrink(args, synthetic_data, tmp_path / "run")
    cli.main(args)
    out, err = capsys.readouterr()
    log_line = re.compile(r"^\[[^]]+\]\[[\w.]+\]\[\w+\] - ")  # Hydra's console log format
    printed = [line for line in (out + err).splitlines() if line.strip() and not log_line.match(line)]
    assert printed == expected


@pytest.mark.parametrize("command", commands())
def test_command_composes_and_passes_the_checks(command, capsys):
    args = shlex.split(command)[1:]
    verb = args[0] if args else ""
    if verb == "compare":
        assert cli.main(["compare", "--help"]) == 0
        usage = capsys.readouterr().out
        assert all(flag in usage for flag in args if flag.startswith("-")), command
    elif verb in cli.HYDRA_VERBS and "-m" in args:
        preflight.check_command(verb, args[1:])  # what `genbench` checks before a sweep starts
    elif verb in cli.HYDRA_VERBS:
        assert cli.main([*args, "--cfg", "job"]) == 0, capsys.readouterr().err
    else:
        assert cli.main(args) == 0, command  # --version, --completion bash, --help


def test_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = {m for _, body in BLOCKS for m in re.findall(r"^make (\w[\w-]*)", body, flags=re.M)}
    assert targets and all(re.search(rf"^{t}:", makefile, flags=re.M) for t in targets), targets
    # `make tb` serves localhost unless HOST= says otherwise, as the README says
    assert re.search(r"^HOST\s*\?=\s*localhost", makefile, flags=re.M) and "--host $(HOST)" in makefile
    assert "--bind_all" not in makefile


def test_config_table_lists_every_option():
    conf = Path(genbench.CONF_DIR)
    rows = re.findall(r"^\| `(\w+)/` \| (.*?) \|", README, flags=re.M)
    assert {"model", "data", "optim", "trainer", "eval", "experiment", "schedule", "sampler"} <= {g for g, _ in rows}
    for group, cell in rows:
        if group == "hydra":
            continue
        listed = set(re.findall(r"`(\w+)`", cell))
        assert listed == {p.stem for p in (conf / group).glob("*.yaml")}, group


def test_config_table_picks_compose():
    """Each `pick with` example of the config table composes for train (or for sample / eval)."""
    from genbench.validate import ConfigError

    picks = [span for row in re.findall(r"^\| `\w+/` \|.*\| (.*?) \|$", README, flags=re.M)
             for span in re.findall(r"`([^`]*=[^`]*)`", row) if not re.search(r"=[A-Z]+\b", span)]
    assert len(picks) >= 8
    for pick in picks:
        errors = []
        for verb in ("train", "sample", "eval"):
            try:
                preflight.check_command(verb, [*pick.split(), "--cfg", "job"])
                break
            except ConfigError as e:
                errors.append(str(e))
        else:
            raise AssertionError(f"{pick}: {errors}")


def test_layout_lists_every_module():
    layout = README.split("## Layout", 1)[1].split("```", 2)[1]
    # the first column of the lines under src/genbench/ (a name may continue on the next line after a comma)
    listed = set(re.findall(r"\w+\.py|\w+/", " ".join(re.findall(r"^  (\S.*?)(?: {2,}|$)", layout, flags=re.M))))
    package = ROOT / "src" / "genbench"
    modules = {p.name for p in package.glob("*.py") if not p.name.startswith("__")}
    folders = {f"{p.name}/" for p in package.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert modules | folders <= listed, sorted((modules | folders) - listed)
    assert all((package / name).exists() for name in listed if name.endswith(".py")), listed


def test_layout_line_counts_stay_true():
    """The layout's line counts, nanoGPT-style: each within 20% of the files it names."""
    layout = README.split("## Layout", 1)[1].split("```", 2)[1]
    package = ROOT / "src" / "genbench"
    checked = 0
    for names, stated in re.findall(r"^  (\S.*?) {2,}(\d+)  ", layout, flags=re.M):
        files = []
        for name in re.findall(r"\w+\.py|\w+/", names + " " + _continuation(layout, names)):
            files += [package / name] if name.endswith(".py") else sorted((package / name).rglob("*.py"))
        actual = sum(len(f.read_text().splitlines()) for f in files)
        assert abs(actual - int(stated)) <= 0.2 * actual, f"{names}: README says {stated} lines, the files have {actual}"
        checked += 1
    assert checked >= 25


def _continuation(layout: str, names: str) -> str:
    """The names on the line after one that ends with a comma (train.py, sample.py, / evaluate.py, compare.py)."""
    if not names.endswith(","):
        return ""
    after = layout.split(names, 1)[1].split("\n", 2)
    return after[1] if len(after) > 1 else ""


def test_version_in_readme_is_the_package_version():
    assert f"genbench {genbench.__version__}" in README
