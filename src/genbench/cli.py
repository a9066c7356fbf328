"""`genbench VERB [hydra overrides]`: strips the verb, checks the overrides, hands over to that verb's Hydra app.

The check (genbench.preflight) composes the verb's config before anything heavy runs, so a misspelled
option or key, or a value of the wrong type, costs one line and no time. HYDRA_FULL_ERROR=1 shows the
traceback instead.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from pathlib import Path

VERBS = {
    "train": ("genbench.train", "train a model: genbench train model=diffusion|gan|vae [overrides]"),
    "sample": ("genbench.sample", "write samples from a run: genbench sample run_dir=DIR num_samples=N"),
    "eval": ("genbench.evaluate", "score a run: genbench eval run_dir=DIR (or samples_dir=DIR data=NAME)"),
    "compare": ("genbench.compare", "tables, plots and verdicts over runs: genbench compare SWEEP_DIR|RUN_DIR... (--help)"),
}
HYDRA_VERBS = {"train", "sample", "eval"}  # config_name = the verb: conf/train.yaml, conf/sample.yaml, conf/eval.yaml

USAGE = "usage: genbench {" + ",".join(VERBS) + "} [hydra overrides | paths]\n\nverbs:\n" + "\n".join(
    f"  {verb:<7} {text}" for verb, (_, text) in VERBS.items()
) + (
    "\n\ngenbench VERB --help lists the verb's config groups; train, sample and eval also take Hydra's"
    "\n--cfg job, --info and -m/--multirun. genbench --version; tab completion: eval \"$(genbench --completion bash)\""
)


class UsageError(Exception):
    """Bad command line: one line on stderr, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(argv)
    except UsageError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" and e.__cause__ is not None:
            raise
        print(f"genbench: error: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        from genbench import __version__

        print(f"genbench {__version__}")
        return 0
    if argv[0] in ("--completion", "--complete", "-sc", "--shell-completion"):
        return _completion(argv[0], argv[1:])
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        raise UsageError(_unknown_verb(verb))
    if verb in HYDRA_VERBS:
        if any(a in ("-sc", "--shell-completion") for a in rest):  # Hydra's own flag: answer it with ours
            i = next(i for i, a in enumerate(rest) if a in ("-sc", "--shell-completion"))
            return _completion(rest[i], rest[i + 1 :])
        if any(a in ("-h", "--help") for a in rest):
            print(verb_help(verb, [a for a in rest if not a.startswith("-")]))
            return 0
        from genbench.preflight import check_command
        from genbench.validate import ConfigError

        try:
            check_command(verb, rest)
        except ConfigError as e:
            raise UsageError(str(e)) from e
    return run_verb(verb, rest)


def run_verb(verb: str, rest: list[str]) -> int:
    """Hand over to the verb's own main (Hydra's app, or compare's argparse) with argv = rest."""
    # OpenMP threads that sleep instead of spin while they wait: on a laptop or a shared 2-core box, a
    # spinning thread competing with other processes made a training step 9x slower in our measurement
    # (scripts/bench_threads.py). Set before torch loads; an explicit OMP_WAIT_POLICY wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if verb == "train":  # under torchrun: join the process group, agree on one run folder (genbench.distributed)
        from genbench import distributed

        ctx = distributed.from_env()
        if ctx.enabled:
            distributed.init(ctx)
            try:
                rest = distributed.shared_run_dir(ctx, rest)
            except ValueError as e:
                raise UsageError(str(e)) from None
    module = importlib.import_module(VERBS[verb][0])
    argv0, sys.argv = sys.argv, [f"genbench {verb}", *rest]
    try:
        module.main()
    except SystemExit as e:  # a one-line error (2), Hydra's own failures (1), argparse's exits
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv0
    return 0


def _unknown_verb(verb: str) -> str:
    if "=" in verb:  # `genbench model=gan`: the verb was left out
        return f"{verb!r} is an override, not a verb; did you mean `genbench train {verb} ...`? (genbench --help)"
    close = difflib.get_close_matches(verb, list(VERBS), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown verb {verb!r}; {hint}verbs: {', '.join(VERBS)} (genbench --help)"


def _completion(flag: str, args: list[str]) -> int:
    from genbench import completion

    if flag == "--complete":  # what the installed shell function calls: one candidate per line
        line = args[0] if args else ""
        print("\n".join(completion.complete(line, list(VERBS), HYDRA_VERBS)))
        return 0
    # --completion bash | -sc install=bash (Hydra's spelling) | -sc query=bash (Hydra's script, COMP_LINE)
    what, _, shell = (args[0] if args else "bash").rpartition("=")
    if what == "query":
        print(" ".join(completion.complete(os.environ.get("COMP_LINE", "genbench "), list(VERBS), HYDRA_VERBS, wordbreaks="")))
        return 0
    if what not in ("", "install"):
        raise UsageError(f"{flag} {args[0]}: to remove genbench's completion run `complete -r genbench`")
    try:
        print(completion.script(shell), end="")
    except ValueError as e:
        raise UsageError(str(e)) from None
    return 0


# ---------------------------------------------------------------------------------------------------
# per-verb help


def verb_help(verb: str, overrides: list[str]) -> str:
    """The verb's config groups and their options (the ones this command line picks marked *), and its own settings."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    from genbench import CONF_DIR
    from genbench.preflight import compose

    try:
        cfg = compose(verb, overrides)
    except Exception:
        cfg = compose(verb, [])
    groups = []
    choices = list(cfg.hydra.runtime.choices.items())[::-1]  # the order of the verb's defaults list
    presets = {group.split("@")[0] for group, _ in choices if group.endswith("@_global_")}
    for group, choice in sorted(choices, key=lambda item: "@" in item[0]):  # then groups nested in a choice
        folder = Path(CONF_DIR) / group.split("@")[0]
        # sub-folders hold options too (sampler=flow/euler), except where they hold per-family presets (size/gan/)
        files = folder.glob("*.yaml") if group.split("@")[0] in presets else folder.rglob("*.yaml")
        options = sorted(p.relative_to(folder).with_suffix("").as_posix() for p in files)
        # not shown: Hydra's own groups (--hydra-help), and presets another choice pulls in (family@_global_)
        if options and not group.startswith("hydra") and not group.endswith("@_global_"):
            groups.append((group, "  ".join(f"{o}*" if o == choice else o for o in options)))
    width = max(len(g) for g, _ in groups)
    rows = [f"  {group:<{width}}  {options}" for group, options in groups]
    nodes = {str(k): cfg._get_node(k) for k in cfg if k != "hydra"}
    settings = [f"{k}={OmegaConf.to_yaml({k: v._value()}).split(': ', 1)[1].strip()}" for k, v in nodes.items()
                if not isinstance(v, (DictConfig, ListConfig))]
    return "\n".join([
        f"usage: genbench {verb} [group=option ...] [key=value ...] [-m] [--cfg job] [--info]",
        "",
        VERBS[verb][1],
        "",
        "config groups (group=option; * = the choice of this command line):",
        *rows,
        "",
        "settings: " + "  ".join(settings),
        "",
        f"every key and its value: genbench {verb} [overrides] --cfg job",
        "Hydra: -m/--multirun sweeps comma lists (seed=0,1,2); --info; --hydra-help; HYDRA_FULL_ERROR=1 shows tracebacks",
    ])


if __name__ == "__main__":
    raise SystemExit(main())
