"""The check before a run: `genbench VERB overrides` composed as Hydra will compose it, and checked,
before anything heavy is imported or read. Every problem is one ConfigError line naming the key and the fix.

1. Composition (Hydra's compose API): an option or key that does not exist becomes one line with the
   allowed options or the nearest key ("did you mean"), instead of Hydra's 7 to 15 lines.
2. Types, generically: every `_target_` node's keys must be parameters of the callable it names, and its
   values must fit their annotations (inspect + typing.get_type_hints; Literal names, Optional, lists,
   and validators in Annotated metadata). A value set on the command line outside such a node must
   keep the type of the value it replaces (seed=abc where the config has seed: 0).
3. Mandatory values (???) and the inputs of sample / eval (run_dir=, samples_dir=).
Ranges stay in the constructors (genbench.validate.check_positive and friends).
"""

from __future__ import annotations

import collections.abc
import contextlib
import functools
import io
import inspect
import os
import re
import types
import typing
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from omegaconf import DictConfig, ListConfig, OmegaConf

from genbench.validate import ConfigError, did_you_mean

RUN_DIR_EXAMPLE = "run_dir=outputs/2026-01-31/12-00-00-diffusion-ab12cd"


# ---------------------------------------------------------------------------------------------------
# the command line


def compose(verb: str, overrides: list[str]):
    """The verb's config as Hydra composes it for `overrides` (hydra's own node included); read-only."""
    return _compose_cached(verb, tuple(overrides))


@functools.lru_cache(maxsize=64)
def _compose_cached(verb: str, overrides: tuple[str, ...]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from genbench import CONF_DIR

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = hydra_compose(config_name=verb, overrides=list(overrides), return_hydra_config=True)
            OmegaConf.set_readonly(cfg, True)
            return cfg
    finally:
        GlobalHydra.instance().clear()


def _composition_error(verb: str, overrides: list[str], e: Exception) -> str:
    """Hydra's multi-line composition errors as one line: the allowed options, or the nearest key."""
    from hydra.errors import MissingConfigException, OverrideParseException

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
            keys = config_keys(compose(verb, [o for o in overrides if key not in o]))
        except Exception:
            keys = []
        if key in MOVED:
            return f"{key} is not a key of genbench {verb}'s config: {MOVED[key]}"
        return f"{key} is not a key of genbench {verb}'s config{did_you_mean(key, keys)}; `genbench {verb} --cfg job` lists them"
    lines = [line.strip() for line in text.split("Config search path")[0].splitlines() if line.strip()]
    return "; ".join(lines)


# Keys that moved to the config axis that owns them: the old name gets the new one, not the nearest spelling.
MOVED = {
    "model.lr": "the learning rate is optim.lr (each family's preset in conf/family/ sets its default)",
    "model.lr_g": "the learning rate is optim.lr; model.d_lr_ratio sets D's apart (TTUR)",
    "model.lr_d": "D's learning rate is model.d_lr_ratio x optim.lr",
    "model.betas": "Adam's betas are optim.betas",
}


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
    """Compose `genbench VERB rest` as Hydra will and raise ConfigError (one line) on the first problem:
    a misspelled option or key, a value of the wrong type, a missing run_dir. Custom config folders
    (--config-dir and friends) are left to Hydra."""
    from hydra._internal.utils import get_args_parser
    from hydra.errors import HydraException

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = get_args_parser().parse_args(rest)
    except SystemExit:  # a flag Hydra does not know, or overrides on both sides of a flag: Hydra says so itself
        return
    if args.config_dir or args.config_path or args.config_name or args.hydra_help or args.info or args.shell_completion:
        return
    only_show = args.cfg is not None
    if only_show and args.multirun:  # Hydra refuses the pair with a traceback
        raise ConfigError("--cfg shows one job's config: drop -m (and the comma lists) to see it")
    try:
        sets = _override_sets(args.overrides, args.multirun, {})
        first = compose(verb, sets[0])
        if args.multirun:  # sweeps an experiment ships in hydra.sweeper.params (experiment=trilemma) count too
            params = first.hydra.sweeper.get("params")
            params = OmegaConf.to_container(params) if params else {}
            sets = _override_sets(args.overrides, True, {str(k): str(v) for k, v in params.items()})
    except HydraException as e:
        raise ConfigError(_composition_error(verb, args.overrides, e)) from e
    for overrides in sets:
        try:
            cfg = first if overrides == sets[0] else compose(verb, overrides)
        except HydraException as e:
            raise ConfigError(_composition_error(verb, overrides, e)) from e
        values, groups = _split(overrides, cfg)
        if not only_show:
            _check_run_dir(verb, cfg)
        check_config(cfg, overridden=values, reference=compose(verb, groups) if values else None,
                     allow_missing={"run_dir"} if only_show or verb == "eval" else ())


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

    if verb not in ("sample", "eval"):
        return

    def given(key: str) -> str | None:
        return None if key not in cfg or OmegaConf.is_missing(cfg, key) else cfg[key]

    run_dir = given("run_dir")
    samples_dir = given("samples_dir") if verb == "eval" else None
    if run_dir is None and samples_dir is None:
        alternative = " (or samples_dir=DIR data=NAME to score a folder of images)" if verb == "eval" else ""
        raise ConfigError(f"run_dir= is required: the folder of a `genbench train` run, e.g. {RUN_DIR_EXAMPLE}{alternative}")
    if run_dir is not None and samples_dir is None and not (Path(run_dir) / "checkpoints" / "last.pt").is_file():
        raise ConfigError(f"run_dir={run_dir} holds no checkpoints/last.pt; pass the folder of a `genbench train` run")
    if samples_dir is not None and not Path(samples_dir).exists():
        raise ConfigError(f"samples_dir={samples_dir} does not exist; pass a `genbench sample` folder or a samples.npz")


# ---------------------------------------------------------------------------------------------------
# values against annotations

_PLUMBING = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


def _conforms(value: Any, kind: Any) -> bool:
    """Whether a plain config value (None, bool, int, float, str, list, dict) can be passed as `kind`.
    Unknown kinds accept the value: the check never rejects what it does not understand."""
    if kind is Any or kind is inspect.Parameter.empty or isinstance(kind, (typing.TypeVar, str)):
        return True
    origin, args = get_origin(kind), get_args(kind)
    if origin is Annotated:
        return _conforms(value, args[0])
    if origin in (Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if origin is Literal:
        return value in args
    if kind is type(None) or kind is None:
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable) or kind in (list, tuple):
        if not isinstance(value, list):  # a config list arrives as a list, also for tuple parameters
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_conforms(v, a) for v, a in zip(value, args))
        return not args or all(_conforms(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping) or kind is dict:
        return isinstance(value, dict)
    if isinstance(kind, type) and issubclass(kind, (PurePath, os.PathLike)):
        return isinstance(value, (str, PurePath))
    if isinstance(kind, type) and isinstance(value, (bool, int, float, str, list, dict)):
        return isinstance(value, kind)  # a class (e.g. Tensor) that a plain value is not; nested _target_ nodes are checked on their own
    return True


def _describe(kind: Any) -> str:
    origin, args = get_origin(kind), get_args(kind)
    if origin is Annotated:
        return _describe(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a) for a in args))
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if kind is type(None) or kind is None:
        return "null"
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable) or kind in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} " + " and ".join(dict.fromkeys(_describe(a) for a in args))
        return f"a list of {_describe(args[0])}" if args else "a list"
    return getattr(kind, "__name__", str(kind))


def _hints(fn: Any) -> tuple[dict[str, inspect.Parameter], bool, dict[str, Any]]:
    """The parameters of `fn` (a class: its constructor), whether it takes **kwargs, and their annotations.
    Annotations that cannot be evaluated (names imported only for type checkers) are left out."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return {}, True, {}
    params = {name: p for name, p in signature.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    init = fn.__init__ if inspect.isclass(fn) else fn
    try:
        hints = typing.get_type_hints(init, include_extras=True)
    except Exception:  # one unresolvable name: evaluate the annotations one by one
        namespace = {**vars(typing), **getattr(inspect.getmodule(init), "__dict__", {})}
        hints = {}
        for name, p in params.items():
            try:
                hints[name] = eval(p.annotation, namespace) if isinstance(p.annotation, str) else p.annotation
            except Exception:
                pass
    return params, var_kw, hints


def _literals(kind: Any) -> list[str]:
    """The names a string may take under `kind`: the Literal members, also inside a Union."""
    origin, args = get_origin(kind), get_args(kind)
    if origin is Annotated:
        return _literals(args[0])
    if origin is Literal:
        return [str(a) for a in args]
    if origin in (Union, types.UnionType):
        return [name for a in args for name in _literals(a)]
    return []


def _type_error(key: str, value: Any, kind: Any) -> ConfigError:
    allowed = _literals(kind)
    if allowed and isinstance(value, str):  # a misspelled name (a Literal, or a Literal beside an object type)
        return ConfigError(f"{key}={value!r} is not one of: {', '.join(allowed)}{did_you_mean(value, allowed)}")
    shown = "null" if value is None else repr(value)
    return ConfigError(f"{key}={shown} must be {_describe(kind)}")


def _validators(kind: Any) -> list[Any]:
    """Callables in `Annotated[T, f, ...]`: f(value) (or f(value, key=...)) raises ValueError on a bad value,
    e.g. `max_time: Annotated[str | float | None, runtime.parse_duration]` makes trainer.max_time=banana
    fail before the run."""
    return [m for m in get_args(kind)[1:] if callable(m)] if get_origin(kind) is Annotated else []


def _plain(node: Any) -> Any:
    """A config node as the constructor will get it (instantiate(..., _convert_='all')); raises if unresolvable."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def check_target(key: str, node: DictConfig) -> None:
    """Check one `_target_` node: its keys are parameters of the callable, its values fit their annotations."""
    from hydra.utils import get_object

    target = node._target_
    try:
        fn = get_object(target)
    except Exception as e:
        raise ConfigError(f"{key}._target_={target} cannot be imported: {str(e).splitlines()[0]}") from e
    params, var_kw, hints = _hints(fn)
    name = getattr(fn, "__qualname__", target)
    for param in node:
        param = str(param)
        if param in _PLUMBING:
            continue
        full = f"{key}.{param}" if key else param
        if param not in params:
            if not var_kw and params:
                raise ConfigError(f"{full} is not a parameter of {name}{did_you_mean(param, params)}")
            continue
        child = node._get_node(param)
        if isinstance(child, DictConfig) and "_target_" in child:
            continue  # a nested object: checked on its own
        try:
            value = _plain(OmegaConf.select(node, param, throw_on_missing=True))
        except Exception:  # an interpolation resolved only at run time, or ??? (check_config reports those)
            continue
        kind = hints.get(param, inspect.Parameter.empty)
        if not _conforms(value, kind):
            raise _type_error(full, value, kind)
        for validate in _validators(kind):
            try:
                takes_key = "key" in _hints(validate)[0]
                validate(value, key=full) if takes_key else validate(value)
            except ValueError as e:
                raise ConfigError(str(e).splitlines()[0]) from e


def _walk(node: Any, key: str) -> typing.Iterator[tuple[str, DictConfig]]:
    """Every `_target_` node below `node`, with its dotted key."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield key, node
        for child in node:
            if not (key == "" and child == "hydra") and str(child) not in _PLUMBING:
                yield from _walk(node._get_node(child), f"{key}.{child}" if key else str(child))
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            yield from _walk(node._get_node(i), f"{key}[{i}]")


def config_keys(cfg: DictConfig) -> list[str]:
    """Every dotted key of `cfg` (nodes and leaves), hydra's own settings aside."""
    keys = []

    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, DictConfig):
            for child in node:
                if prefix == "" and child == "hydra":
                    continue
                full = f"{prefix}.{child}" if prefix else str(child)
                keys.append(full)
                visit(node._get_node(child), full)

    visit(cfg, "")
    return keys


def check_config(cfg: DictConfig, overridden: typing.Iterable[str] = (), reference: DictConfig | None = None,
                 allow_missing: typing.Collection[str] = ()) -> None:
    """Raise ConfigError (one line) for the first bad value in a composed config:
    1. a `_target_` node's key that its callable does not take, or a value that does not fit its annotation;
    2. a value set on the command line (the keys in `overridden`) outside such a node whose type differs
       from the shipped value it replaces in `reference` (e.g. seed=abc where the config has seed: 0);
    3. a mandatory value (???) left unset, unless its key is in `allow_missing`."""
    for key, node in _walk(cfg, ""):
        check_target(key, node)
    annotated = {f"{k}.{p}" if k else str(p) for k, node in _walk(cfg, "") for p in node}
    for key in overridden:
        if key in annotated or reference is None:
            continue
        try:
            value = _plain(OmegaConf.select(cfg, key, throw_on_missing=True))
        except Exception:
            continue
        default = OmegaConf.select(reference, key, default=None, throw_on_missing=False)
        for kind in (bool, int, float):
            if isinstance(default, kind) and not _conforms(value, kind):
                shown = "null" if value is None else repr(value)
                raise ConfigError(f"{key}={shown} must be {_describe(kind)}, like its default {key}={default}")
            if isinstance(default, kind):
                break
    choices = OmegaConf.select(cfg, "hydra.runtime.choices") or {}
    for key in config_keys(cfg):
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if key not in allow_missing and isinstance(node, DictConfig) and OmegaConf.is_missing(node, leaf):
            group = key.split(".")[0]
            by = f" by {group}={choices[group]}" if group in choices and group != key else ""
            raise ConfigError(f"{key} is required{by}: add {key}=...")
