"""Tab completion: verbs, then the verb's Hydra overrides. `eval "$(genbench --completion bash)"` installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genbench import cli
from genbench.completion import complete


def ask(line: str, wordbreaks: str = "") -> list[str]:
    return complete(line, list(cli.VERBS), cli.HYDRA_VERBS, wordbreaks=wordbreaks)


def test_train_mod_offers_model():
    assert "model=" in ask("genbench train mod")


def test_verbs_and_flags_first():
    assert ask("genbench tr") == ["train"]
    assert {"train", "sample", "eval", "compare", "--version"} <= set(ask("genbench "))


def test_options_of_a_group_and_keys_of_a_node():
    assert ask("genbench train model=d") == ["model=dcgan", "model=diffusion"]
    assert "trainer.max_steps=" in ask("genbench train model=gan trainer.max")


def test_groups_placed_in_a_node():
    assert "schedule@model.schedule=" in ask("genbench train sch")
    assert ask("genbench train schedule@model.schedule=c") == ["schedule@model.schedule=cosine"]


def test_options_in_sub_folders():
    assert "sampler=flow/euler" in ask("genbench sample sampler=flow/")


def test_each_verb_completes_its_own_config():
    assert "num_samples=" in ask("genbench sample num")
    assert not [c for c in ask("genbench sample ") if c.startswith(("model", "optim", "trainer"))]


def test_bash_gets_the_text_after_its_word_break():
    # bash replaces only what follows the last character of COMP_WORDBREAKS (the '=' of model=d)
    assert ask("genbench train model=d", wordbreaks=" \t\n\"'><=;|&(:") == ["dcgan", "diffusion"]


def test_paths_are_left_to_file_completion():
    assert ask("genbench compare mul") == []
    assert ask("genbench sample run_dir=") == [] and ask("genbench sample run_dir=outp") == []


def test_cli_answers_the_shell_function(capsys):
    assert cli.main(["--complete", "genbench train mod"]) == 0
    assert "model=" in capsys.readouterr().out.splitlines()


def test_install_script_registers_genbench_only(capsys):
    for args in (["--completion", "bash"], ["train", "--shell-completion", "install=bash"]):  # ours, and Hydra's flag
        assert cli.main(args) == 0
        script = capsys.readouterr().out
        assert script.rstrip().endswith("complete -o nospace -o default -F _genbench_complete genbench")
        assert "--complete" in script and "-sc query" not in script


def test_hydra_style_query_is_answered(capsys, monkeypatch):
    """A script installed from Hydra's own `-sc install=bash` calls `genbench -sc query=bash`."""
    monkeypatch.setenv("COMP_LINE", "genbench train mod")
    assert cli.main(["-sc", "query=bash"]) == 0
    assert "model=" in capsys.readouterr().out.split()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_end_to_end():
    """The installed bash function, asked as bash asks it on TAB after `genbench train mod`."""
    exe = Path(sys.executable).parent / "genbench"
    script = f"""
        eval "$({exe} --completion bash)"
        COMP_LINE="{exe} train mod"; COMP_POINT=${{#COMP_LINE}}
        COMP_WORDS=({exe} train mod); COMP_CWORD=2
        _genbench_complete
        printf '%s\\n' "${{COMPREPLY[@]}}"
        complete -p genbench
    """
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = result.stdout.splitlines()
    assert "model=" in lines, result.stdout + result.stderr
    assert lines[-1] == "complete -o default -o nospace -F _genbench_complete genbench"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_tab_in_an_interactive_bash():
    """Real key presses in an interactive bash on a pseudo-terminal: TAB after `genbench train mod` offers
    `model=` (and `model.`), and TAB after `model=di` finishes `model=diffusion`."""
    import pty
    import select
    import time

    def read_until(fd: int, needle: str, timeout: float = 20.0) -> str:
        out, end = "", time.time() + timeout
        while needle not in out and time.time() < end:
            if select.select([fd], [], [], 0.1)[0]:
                out += os.read(fd, 4096).decode(errors="replace")
        return out

    pid, fd = pty.fork()
    if pid == 0:  # the child: an interactive bash with genbench on its PATH
        os.environ.update(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", PS1="$ ", OMP_NUM_THREADS="1")
        os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])
    try:
        read_until(fd, "$ ")
        os.write(fd, b'eval "$(genbench --completion bash)"; echo installed\n')
        read_until(fd, "installed")
        os.write(fd, b"genbench train mod\t")
        shown = read_until(fd, "mod\x07el")  # the common part of model. and model= is added, with a bell
        assert "mod\x07el" in shown, shown
        os.write(fd, b"\t")  # "model" is still ambiguous: a bell, and the next TAB lists the candidates
        read_until(fd, "\x07")
        os.write(fd, b"\t")
        listing = read_until(fd, "model=")
        assert "model=" in listing and "model." in listing, listing
        os.write(fd, b"=di\t")
        assert "=diffusion " in read_until(fd, "=diffusion "), "model=di did not complete to model=diffusion"
    finally:
        os.write(fd, b"\x15exit\n")
        os.waitpid(pid, 0)
