"""Argument checks that turn bad input into one-line errors naming the config key and the fix.

Two layers:
- before a run (`check_config`, called by the CLI on the composed config): every `_target_` node's
  values against the annotations of the callable it names (generic: no per-key code), and values
  the command line set against the type of the value they replace;
- in the constructors (`check_choice`, `check_positive`): ranges and relations between values.
`one_line_errors` turns what the constructors raise into one line.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import os
import types
import typing
from pathlib import PurePath
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A bad value or key found before any work was spent: one line, naming the key and the fix."""


def check_choice(name: str, value: str, kind: object) -> None:
    """Raise if `value` is not one of the options of the `Literal` type `kind`."""
    allowed = get_args(kind)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of: {', '.join(allowed)}")


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value is None or value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name}={value} must be {bound}")


def did_you_mean(word: str, candidates: typing.Iterable[str]) -> str:
    """' (did you mean X?)' for the closest candidate, or ''."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


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
        except Exception:  # an interpolation resolved only at run time, or ??? (check_missing's job)
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


# ---------------------------------------------------------------------------------------------------
# errors raised while running


def _log_to_files(message: str) -> None:
    """Put the error line into the run's log file (train.log) too: the console already gets it on stderr."""
    import logging

    record = logging.LogRecord("genbench", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def one_line_errors(task):
    """Wrap a Hydra task so that bad input ends the run with one line naming the problem, not a
    traceback, also written to the run's log file. Set HYDRA_FULL_ERROR=1 to see the traceback instead."""
    import functools
    import sys

    from hydra.errors import InstantiationException

    @functools.wraps(task)
    def wrapper(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except (ValueError, OSError, InstantiationException) as e:  # OSError: disk full, permissions (one line, the path)
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            message = one_line(e)
            _log_to_files(message)
            print(f"genbench: error: {message}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def one_line(e: BaseException) -> str:
    """The first line of an error, prefixed with the config key it came from when the text lacks it.
    An InstantiationException names the node (full_key); its cause (often a TypeError) says what failed."""
    from hydra.errors import InstantiationException

    cause = e.__cause__ if isinstance(e, InstantiationException) and e.__cause__ else e
    text = str(cause).strip()
    message = text.splitlines()[0] if text else type(cause).__name__
    if isinstance(cause, TypeError):
        message = f"{type(cause).__name__}: {message}"
    key = getattr(e, "full_key", None) or ""
    if isinstance(e, InstantiationException) and "full_key:" in str(e):
        key = str(e).rsplit("full_key:", 1)[1].strip()
    if key and key.split(".")[0] not in message:
        message = f"{key}: {message}"
    return message
