"""Argument checks that turn bad input into one-line errors naming the config key and the fix."""

from __future__ import annotations

from typing import get_args


def check_choice(name: str, value: str, kind: object) -> None:
    """Raise if `value` is not one of the options of the `Literal` type `kind`."""
    allowed = get_args(kind)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of: {', '.join(allowed)}")


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value is None or value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name}={value} must be {bound}")


def one_line_errors(task):
    """Wrap a Hydra task so that bad input ends the run with one line naming the problem, not a
    traceback. Set HYDRA_FULL_ERROR=1 to see the traceback instead."""
    import functools
    import os
    import sys

    from hydra.errors import InstantiationException

    @functools.wraps(task)
    def wrapper(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except (ValueError, FileNotFoundError, InstantiationException) as e:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            cause = e.__cause__ if isinstance(e, InstantiationException) and e.__cause__ else e
            message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            key = getattr(e, "full_key", None) or ""
            if isinstance(e, InstantiationException) and "full_key:" in str(e):
                key = str(e).rsplit("full_key:", 1)[1].strip()
            if key and key.split(".")[0] not in message:
                message = f"{key}: {message}"
            print(f"genbench: error: {message}", file=sys.stderr)
            sys.exit(2)

    return wrapper
