"""Argument checks that turn bad input into one-line errors naming the config key and the fix.

Two layers: genbench.preflight checks a command line's overrides before the run (options, keys,
types against the constructors' signatures); the constructors check ranges and relations between
values with `check_choice` and `check_positive`. `one_line_errors` turns what they raise into one line.
"""

from __future__ import annotations

import difflib
import os
import typing
from typing import get_args


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
        except Exception as e:  # a bug, not bad input: the traceback stays, and the log says what stopped the run
            text = str(e).strip()
            _log_to_files(f"stopped by an error: {type(e).__name__}: {text.splitlines()[0] if text else ''}")
            raise

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
