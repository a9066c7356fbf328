"""Tab completion for `genbench`: the verbs, then that verb's Hydra overrides (groups, options, keys).

Install for bash:  eval "$(genbench --completion bash)"   (add the line to ~/.bashrc to keep it)
The shell function sends the line typed so far to `genbench --complete LINE`, which answers one
candidate per line. Overrides come from Hydra's own completion, asked with the config of the verb
being typed (train.yaml, sample.yaml or eval.yaml), so `genbench train mod<TAB>` offers `model=`.
"""

from __future__ import annotations

import os
from pathlib import Path

HYDRA_FLAGS = ["--cfg", "--help", "--hydra-help", "--info", "--multirun", "--resolve", "-m"]

BASH = r"""# genbench tab completion for bash: verbs, then the verb's Hydra overrides.
# Install: eval "$(genbench --completion bash)"   (add that line to ~/.bashrc to keep it)
_genbench_complete() {
    local IFS=$'\n' line="${COMP_LINE:0:COMP_POINT}"
    COMPREPLY=($(COMP_WORDBREAKS="$COMP_WORDBREAKS" "${COMP_WORDS[0]}" --complete "$line" 2>/dev/null))
    # a finished value (model=gan) gets its trailing space; a key (model=, trainer.) or a folder does not
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} != *[=./] ]]; then
        compopt +o nospace 2>/dev/null
    fi
}
complete -o nospace -o default -F _genbench_complete genbench
"""


def script(shell: str) -> str:
    if shell != "bash":
        raise ValueError(f"completion for {shell!r}: genbench ships bash completion only; use --completion bash")
    return BASH


def _hydra_candidates(verb: str, rest: str) -> list[str]:
    """Hydra's own completion of `rest` (the overrides typed after the verb) against conf/<verb>.yaml."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.plugins.completion_plugin import DefaultCompletionPlugin

    from genbench import CONF_DIR

    from hydra.types import RunMode

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(CONF_DIR))
    candidates = DefaultCompletionPlugin(loader)._query(config_name=verb, line=rest)
    # Hydra offers every group in conf/; keep those this verb's config uses (sample has no model= or optim=)
    cfg = loader.load_configuration(config_name=verb, overrides=[], run_mode=RunMode.RUN)
    known = {*cfg.hydra.runtime.choices, *cfg}
    candidates = [c for c in candidates if c.lstrip("+~").split("=")[0].split(".")[0].split("/")[0] in known]
    # what Hydra's completion does not offer: groups placed inside another node (schedule@model.schedule=)
    # and options in a group's sub-folders (sampler=flow/euler)
    current = rest.split(" ")[-1]
    for key in cfg.hydra.runtime.choices:
        if key.startswith("hydra") or key.endswith("@_global_"):
            continue
        if "@" in key and "=" not in current:
            candidates.append(f"{key}=")
        elif current.split("=", 1)[0] == key:
            folder = Path(CONF_DIR) / key.split("@")[0]
            candidates += [f"{key}={p.relative_to(folder).with_suffix('').as_posix()}" for p in sorted(folder.rglob("*.yaml"))]
    return candidates


def complete(line: str, verbs: list[str], config_verbs: set[str], wordbreaks: str | None = None) -> list[str]:
    """Candidates for the last word of `line` (the command line up to the cursor, program name first).
    `wordbreaks`: bash's COMP_WORDBREAKS; bash replaces only the text after the last of these characters
    (after the '=' of model=gan), so candidates are cut to that part."""
    wordbreaks = os.environ.get("COMP_WORDBREAKS", "") if wordbreaks is None else wordbreaks
    words = line.split()[1:]
    new_word = not line or line[-1].isspace()
    current = "" if new_word or not words else words[-1]
    before = words if new_word else words[:-1]
    if not before:  # the verb itself
        candidates = [*verbs, "--help", "--version", "--completion"]
    elif before[0] not in config_verbs:
        return []  # compare takes folders: the shell's own file completion (-o default)
    elif current.startswith("-"):
        candidates = HYDRA_FLAGS
    else:
        try:
            candidates = _hydra_candidates(before[0], " ".join([*before[1:], current]))
        except BaseException:  # argparse exits on a half-typed flag; a broken config: nothing to offer
            return []
    candidates = sorted(set(c for c in candidates if c.startswith(current)))
    if candidates == [current]:  # `run_dir=` with nothing to add: leave it to the shell's file completion
        return []
    cut = max((current.rfind(c) for c in wordbreaks), default=-1) + 1
    return [c[cut:] for c in candidates]
