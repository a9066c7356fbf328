"""Files written whole or not at all: a temporary file in the same folder, fsync, then a rename.

A reader, or a run killed mid-write, never sees a partial file, and a write that fails (disk full,
quota, permissions) leaves the previous file as it was and says so in one line naming the path.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


class WriteError(OSError):
    """A file genbench could not write (disk full, quota, permissions): one line naming the path."""


def _io_reason(e: BaseException) -> str | None:
    """The I/O cause of a failed write, or None when `e` is not an I/O failure."""
    if isinstance(e, OSError):
        return os.strerror(e.errno) if e.errno else str(e)
    text = str(e)
    if isinstance(e, RuntimeError) and ("PytorchStreamWriter" in text or "inline_container" in text or "file write failed" in text):
        for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO):
            if os.strerror(code) in text:
                return os.strerror(code)
        return "the write failed"
    return None


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """write(f) into a temporary file in the same folder, fsync, then rename over `path`: a reader
    (or a run killed mid-write) never sees a partial file, and a failed write leaves the old one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise WriteError(e.errno, f"could not write {path}: {_io_reason(e)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        reason = _io_reason(e)
        if reason is None:
            raise
        kept = f"; the previous {path.name} is intact" if path.exists() else ""
        raise WriteError(getattr(e, "errno", None) or errno.EIO,
                         f"could not write {path}: {reason}{kept}. Free space (df -h {path.parent}) "
                         "and re-run the same command to resume") from None


