"""metrics.json: every evaluation of a run (or of a samples folder) as its own record.

Format 2:
    {"format_version": 2, "headline": KEY, "records": {KEY: record, ...}}

A record's KEY is made from what its numbers depend on: the weights (ema/raw/ema<sigma_rel>, checkpoint step), the
sampler and its NFE, the number of samples and their seed, the reference set and extractor, and the
protocol id (a short hash of every protocol setting, genbench.protocol.Protocol.describe), e.g.

    ema-step1500-dpmsolverpp2m20-n10000-seed0-fashion_mnist.train10000-fmnist-cnn-0d1ab2c3-p5e4f3a2b1c

Re-evaluating under other settings adds a record and never replaces another; an evaluation with the
same key is the same computation, so it is not redone (genbench.protocol returns the stored record).
`headline` names the run's record: the evaluation at the end of training, unless `genbench eval
eval.headline=true` says otherwise. Two numbers are comparable only when their records'
`protocol.id` are equal.

Format 1 (before records) was the single record itself; `load_records` reads both.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

from genbench.atomic import atomic_write
from genbench.checkpoint import weights_name

METRICS_FILE = "metrics.json"
FORMAT_VERSION = 2


def _slug(text: Any) -> str:
    return re.sub(r"[^a-z0-9_.]+", "", str(text).lower())


def record_key(record: dict) -> str:
    """The key of a record (see the module docstring); format-1 records get protocol id 'format1'."""
    protocol = record.get("protocol") or {}
    pid = protocol.get("id", "format1")
    reference = f"{record.get('reference_dataset')}.{record.get('reference_split')}{record.get('num_reference')}"
    extractor = (record.get("feature_extractor") or {}).get("name")
    tail = [f"n{record.get('num_generated')}", f"seed{record.get('seed')}", reference, extractor, f"p{pid}"]
    if record.get("source") == "external":
        head = ["external", _slug(Path(str(record.get("samples_dir") or "samples")).name)]
    else:
        sampler = f"{_slug(record['sampler'])}{record.get('nfe')}" if record.get("sampler") else None
        head = [weights_name(record.get("ema", True)), f"step{record.get('checkpoint_step', record.get('step'))}", sampler]
    return "-".join(str(p) for p in head + tail if p is not None)


def metrics_path(where: str | Path) -> Path:
    where = Path(where)
    return where if where.suffix == ".json" else where / METRICS_FILE


def load_records(where: str | Path) -> tuple[str | None, dict[str, dict]]:
    """(headline key, {key: record}) from a run folder's (or any folder's) metrics.json, format 1 or 2;
    (None, {}) when there is none."""
    path = metrics_path(where)
    if not path.is_file():
        return None, {}
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it and re-run `genbench eval`") from None
    version = data.get("format_version")
    if version == FORMAT_VERSION:
        return data.get("headline"), data.get("records", {})
    if version is None and "metrics" in data:  # format 1: one record
        key = record_key(data)
        return key, {key: {**data, "key": key}}
    raise ValueError(f"{path} has metrics format {version}; this genbench reads formats 1 and {FORMAT_VERSION}")


def same_weights(record: dict, headline: dict) -> bool:
    """Did `record` score the weights `headline` scored: a run's own (not an outside samples folder), at the same
    checkpoint step, EMA or raw alike? Such records differ only in how they sampled (FID against NFE)."""
    step = lambda r: r.get("checkpoint_step", r.get("step"))  # noqa: E731
    return (record.get("source", "run") == "run" and step(record) == step(headline)
            and record.get("ema", True) == headline.get("ema", True))


def headline_record(where: str | Path) -> dict | None:
    key, records = load_records(where)
    return records.get(key) if key else None


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock beside `path`, so two evaluations of one run never lose each other's record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no lock
            pass
        yield


def add_record(where: str | Path, record: dict, headline: bool | None = None) -> tuple[str, bool]:
    """Add `record` to metrics.json atomically under its key; returns (key, whether it is the headline).
    headline: True = make it the headline; None = only when the file has none yet; False = never."""
    path = metrics_path(where)
    key = record_key(record)
    with _locked(path):
        current, records = load_records(path)
        records = {**records, key: {**record, "key": key}}
        if headline or (headline is None and current not in records):
            current = key
        data = {"format_version": FORMAT_VERSION, "headline": current, "records": records}
        atomic_write(path, lambda f: f.write((json.dumps(data, indent=2, default=str) + "\n").encode()))
    return key, current == key
