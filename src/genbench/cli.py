"""`genbench VERB [hydra overrides]`: strips the verb, checks the overrides, hands over to that verb's Hydra app.

The check composes the verb's config with Hydra's compose API before anything heavy runs, so a
misspelled option or key, or a value of the wrong type, costs one line and no time
(genbench.validate.check_config). HYDRA_FULL_ERROR=1 shows the traceback instead.
"""

from __future__ import annotations

import difflib
import functools
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
RUN_DIR_EXAMPLE = "run_dir=outputs/2026-01-31/12-00-00-diffusion-ab12cd"

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
        check_command(verb, rest)
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
# the check before a run


def _compose(verb: str, overrides: list[str]):
    """The verb's config as Hydra composes it for `overrides` (hydra's own node included); read-only."""
    return _compose_cached(verb, tuple(overrides))


@functools.lru_cache(maxsize=64)
def _compose_cached(verb: str, overrides: tuple[str, ...]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from genbench import CONF_DIR

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name=verb, overrides=list(overrides), return_hydra_config=True)
            OmegaConf.set_readonly(cfg, True)
            return cfg
    finally:
        GlobalHydra.instance().clear()


def _composition_error(verb: str, overrides: list[str], e: Exception) -> str:
    """Hydra's multi-line composition errors as one line: the allowed options, or the nearest key."""
    import re

    from hydra.errors import MissingConfigException, OverrideParseException

    from genbench.validate import config_keys, did_you_mean

    text = str(e)
    if isinstance(e, MissingConfigException) and e.options and e.missing_cfg_file and "/" in e.missing_cfg_file:
        group, _, name = e.missing_cfg_file.rpartition("/")
        typed = [o.split("=", 1)[0].lstrip("+~") for o in overrides if o.endswith(f"={name}") and o.lstrip("+~").startswith(group)]
        key = typed[0] if typed else group
        return f"{key}={name!r} is not one of: {', '.join(e.options)}{did_you_mean(name, e.options)}"
    if isinstance(e, OverrideParseException):
        return f"{e.override}: {text.splitlines()[0]} (the override grammar: https://hydra.cc/docs/advanced/override_grammar/basic/)"
    ambiguous = re.match(r"Ambiguous value for argument '([^=']+)=([^']*)'", text)
    if ambiguous:
        key, value = ambiguous.groups()
        return f"{key}={value} has several values: add -m to sweep over them, or write {key}=[{value}] for a list"
    unknown = re.match(r"Could not (?:override|delete from config\.|delete) '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        try:
            keys = config_keys(_compose(verb, [o for o in overrides if key not in o]))
        except Exception:
            keys = []
        return f"{key} is not a key of genbench {verb}'s config{did_you_mean(key, keys)}; `genbench {verb} --cfg job` lists them"
    lines = [line.strip() for line in text.split("Config search path")[0].splitlines() if line.strip()]
    return "; ".join(lines)


def _override_sets(overrides: list[str], multirun: bool, sweeper_params: dict) -> list[list[str]]:
    """The override sets to check: one for a single run; for a sweep (-m), every value of every swept key
    once, the other swept keys at their first value (linear in the values, not their product)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    typed_keys = {o.get_key_element().lstrip("+~") for o in parsed}
    extra = [f"{k}={v}" for k, v in sweeper_params.items() if k not in typed_keys] if multirun else []
    fixed, sweeps = [], []
    for o in [*parsed, *OverridesParser.create().parse_overrides(extra)]:
        if not (multirun and o.is_sweep_override()):
            fixed.append(o.input_line)
            continue
        try:
            values = list(o.sweep_string_iterator())
        except Exception:  # interval() or glob() sweeps: left to the sweeper
            continue
        sweeps.append([f"{o.get_key_element()}={v}" for v in values])
    base = [values[0] for values in sweeps if values]
    sets = [[*fixed, *base]]
    for i, values in enumerate(sweeps):
        sets += [[*fixed, *base[:i], v, *base[i + 1 :]] for v in values[1:]]
    return sets


def check_command(verb: str, rest: list[str]) -> None:
    """Compose `genbench VERB rest` as Hydra will and raise UsageError (one line) on the first problem:
    a misspelled option or key, a value of the wrong type, a missing run_dir. Custom config folders
    (--config-dir and friends) are left to Hydra."""
    from hydra._internal.utils import get_args_parser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from genbench.validate import ConfigError, check_config

    try:
        args = get_args_parser().parse_args(rest)
    except SystemExit:  # a flag Hydra does not know: Hydra says so itself
        return
    if args.config_dir or args.config_path or args.config_name or args.hydra_help or args.info or args.shell_completion:
        return
    only_show = args.cfg is not None
    if only_show and args.multirun:  # Hydra refuses the pair with a traceback
        raise UsageError("--cfg shows one job's config: drop -m (and the comma lists) to see it")
    try:
        sets = _override_sets(args.overrides, args.multirun, {})
        first = _compose(verb, sets[0])
        if args.multirun:  # sweeps an experiment ships in hydra.sweeper.params (experiment=trilemma) count too
            params = first.hydra.sweeper.get("params")
            params = OmegaConf.to_container(params) if params else {}
            sets = _override_sets(args.overrides, True, {str(k): str(v) for k, v in params.items()})
    except HydraException as e:
        raise UsageError(_composition_error(verb, args.overrides, e)) from e
    for overrides in sets:
        try:
            cfg = first if overrides == sets[0] else _compose(verb, overrides)
        except HydraException as e:
            raise UsageError(_composition_error(verb, overrides, e)) from e
        values, groups = _split(overrides, cfg)
        try:
            if not only_show:
                _check_run_dir(verb, cfg)
            check_config(cfg, overridden=values, reference=_compose(verb, groups) if values else None,
                         allow_missing={"run_dir"} if only_show or verb == "eval" else ())
        except ConfigError as e:
            raise UsageError(str(e)) from e


def _split(overrides: list[str], cfg) -> tuple[list[str], list[str]]:
    """(keys of the values set, the overrides that pick or drop config files) of one override set."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    choices = cfg.hydra.runtime.choices
    values, groups = [], []
    for o in OverridesParser.create().parse_overrides(overrides):
        group = o.key_or_group + (f"@{o.package}" if o.package else "")
        if o.type == OverrideType.DEL or group in choices or o.key_or_group in choices or o.key_or_group.startswith("hydra"):
            groups.append(o.input_line)
        else:
            values.append(o.key_or_group)
    return values, groups


def _check_run_dir(verb: str, cfg) -> None:
    """sample needs run_dir=; eval needs run_dir= or samples_dir=. A run_dir must hold a checkpoint."""
    from omegaconf import OmegaConf

    from genbench.validate import ConfigError

    def given(key: str) -> str | None:
        if key not in cfg or OmegaConf.is_missing(cfg, key):
            return None
        return cfg[key]

    run_dir, samples_dir = given("run_dir"), given("samples_dir") if verb == "eval" else None
    if verb not in ("sample", "eval"):
        return
    if run_dir is None and samples_dir is None:
        alternative = " (or samples_dir=DIR data=NAME to score a folder of images)" if verb == "eval" else ""
        raise ConfigError(f"run_dir= is required: the folder of a `genbench train` run, e.g. {RUN_DIR_EXAMPLE}{alternative}")
    if run_dir is not None and samples_dir is None and not (Path(run_dir) / "checkpoints" / "last.pt").is_file():
        raise ConfigError(f"run_dir={run_dir} holds no checkpoints/last.pt; pass the folder of a `genbench train` run")
    if samples_dir is not None and not Path(samples_dir).exists():
        raise ConfigError(f"samples_dir={samples_dir} does not exist; pass a `genbench sample` folder or a samples.npz")


# ---------------------------------------------------------------------------------------------------
# per-verb help


def verb_help(verb: str, overrides: list[str]) -> str:
    """The verb's config groups and their options (the ones this command line picks marked *), and its own settings."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    from genbench import CONF_DIR

    try:
        cfg = _compose(verb, overrides)
    except Exception:
        cfg = _compose(verb, [])
    rows = []
    choices = list(cfg.hydra.runtime.choices.items())[::-1]  # the order of the verb's defaults list
    for group, choice in sorted(choices, key=lambda item: "@" in item[0]):  # then groups nested in a choice
        folder = Path(CONF_DIR) / group.split("@")[0]
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        if group.startswith("hydra") or not options:
            continue  # Hydra's own groups (--hydra-help) and groups picked for you (conf/family/)
        rows.append(f"  {group:<24} " + "  ".join(f"{o}*" if o == choice else o for o in options))
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
