"""A run's TensorBoard scalars, read in the order they were written, whatever the event files are called.

TensorBoard names an event file events.out.tfevents.<seconds>.<host>.<pid>.<writer number><suffix>, and its
own reader takes the files in name order. Two writers opened in the same second then sort as text:
`...pid.10` before `...pid.9`, so the older file's value of a tag looks like the newest. A run killed and
resumed also writes some steps twice. So here every scalar is ordered by the wall time it was written at,
then by the file's natural name order (numbers as numbers), then by its place in the file; and each
(tag, step) keeps the value written last.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np


class Point(NamedTuple):
    step: int
    value: float
    wall_time: float


Scalars = dict[str, list[Point]]  # tag -> its points, one per step, by step
SCALARS_FILE = "scalars.csv"  # an archived run's scalars as text, in place of tb/ (genbench.report.archive)


def natural_key(name: str) -> list:
    """'a.10' after 'a.9': digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def event_files(tb_dir: Path) -> list[Path]:
    """The event files of one TensorBoard run folder (not its sub-folders), in natural name order."""
    return sorted(tb_dir.glob("*tfevents*"), key=lambda p: natural_key(p.name)) if tb_dir.is_dir() else []


def read_scalars(tb_dir: Path) -> Scalars:
    """{tag: [Point(step, value, wall_time), ...]} of every scalar in `tb_dir`: one point per step, the one
    written last (by wall time, then file order, then order in the file), sorted by step."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.util import tensor_util

    written = []  # (wall_time, file rank, index in file, tag, step, value)
    for rank, path in enumerate(event_files(tb_dir)):
        scalar_tags: set[str] = set()  # tags logged as tensors with the scalars plugin (new-style summaries)
        for index, event in enumerate(LegacyEventFileLoader(str(path)).Load()):
            for v in event.summary.value:
                if v.metadata.plugin_data.plugin_name == "scalars":
                    scalar_tags.add(v.tag)
                if v.HasField("simple_value"):
                    value = v.simple_value
                elif v.HasField("tensor") and v.tag in scalar_tags:
                    value = float(tensor_util.make_ndarray(v.tensor))
                else:
                    continue
                written.append((event.wall_time, rank, index, v.tag, event.step, float(value)))
    last: dict[str, dict[int, Point]] = {}
    for wall_time, _, _, tag, step, value in sorted(written, key=lambda w: w[:3]):
        last.setdefault(tag, {})[step] = Point(step, value, wall_time)
    return {tag: [points[s] for s in sorted(points)] for tag, points in last.items()}


def value_at(scalars: Scalars, tag: str, steps: list[int]) -> np.ndarray | None:
    """`tag` at `steps`, linearly interpolated between its logged steps (from 0 at step 0), held at its last
    value past them; None if the run never logged `tag`."""
    points = scalars.get(tag)
    if not points:
        return None
    xs = [0] + [p.step for p in points]
    ys = [0.0] + [p.value for p in points]
    return np.interp(np.asarray(steps, dtype=float), xs, ys)


def fid_during_training(scalars: Scalars, final_step: int | None) -> list[Point]:
    """The FIDs of the evaluation during training: `eval_during/fid` (the Trainer's tag since the protocol
    split); an old run logged them as `eval/fid`, with the full protocol's FID at its final step."""
    if "eval_during/fid" in scalars:
        return scalars["eval_during/fid"]
    old = scalars.get("eval/fid", [])
    return [p for p in old if final_step is None or p.step < final_step]


def write_scalars(scalars: Scalars, path: Path) -> None:
    """tag,step,value,wall_time lines, the floats in repr (they read back bit for bit)."""
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["tag", "step", "value", "wall_time"])
        out.writerows([tag, p.step, repr(p.value), repr(p.wall_time)] for tag, points in scalars.items() for p in points)


def run_scalars(run: Path) -> Scalars:
    """A run's scalars: its tb/ (events.read_scalars), or an archived run's scalars.csv."""
    if not (run / SCALARS_FILE).is_file():
        return read_scalars(run / "tb")
    out: Scalars = {}
    with open(run / SCALARS_FILE, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["tag"], []).append(Point(int(row["step"]), float(row["value"]), float(row["wall_time"])))
    return {tag: sorted(points) for tag, points in out.items()}
