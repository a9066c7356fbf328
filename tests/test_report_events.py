"""Event files read in the order they were written, whatever their names (issue 13, case 13)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from genbench.report.events import event_files, fid_during_training, natural_key, read_scalars, value_at


def write(folder: Path, name: str, points: list[tuple[str, int, float, float]]) -> Path:
    """An event file called `name` holding (tag, step, value, walltime) scalars, in that order."""
    tmp = folder / f"tmp-{name}"
    with SummaryWriter(str(tmp), filename_suffix=".x") as w:
        for tag, step, value, wall in points:
            w.add_scalar(tag, value, step, walltime=wall)
    (src,) = tmp.iterdir()
    folder.mkdir(parents=True, exist_ok=True)
    src.rename(folder / name)
    tmp.rmdir()
    return folder / name


def last_by_tensorboard(tb: Path, tag: str) -> float:
    """What TensorBoard's own reader calls the last value of `tag` (files in name order)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb))
    acc.Reload()
    return acc.Scalars(tag)[-1].value


def test_same_second_files_sort_by_when_they_were_written(tmp_path: Path):
    """Writer 9 then writer 10 in one second: '...4242.10' sorts before '...4242.9' by name."""
    tb = tmp_path / "tb"
    write(tb, "events.out.tfevents.1700000000.host.4242.9", [("eval/fid", 8, 20.0, 1000.25)])
    write(tb, "events.out.tfevents.1700000000.host.4242.10", [("eval/fid", 8, 10.0, 1000.75)])
    assert last_by_tensorboard(tb, "eval/fid") == 20.0  # the bug this reader fixes: the older value looks last
    assert read_scalars(tb)["eval/fid"] == [(8, 10.0, 1000.75)]
    assert [p.name[-2:] for p in event_files(tb)] == [".9", "10"]


def test_equal_wall_times_fall_back_to_natural_file_order(tmp_path: Path):
    tb = tmp_path / "tb"
    write(tb, "events.out.tfevents.1700000000.host.4242.10", [("eval/fid", 8, 10.0, 1000.0)])
    write(tb, "events.out.tfevents.1700000000.host.4242.9", [("eval/fid", 8, 20.0, 1000.0)])
    assert read_scalars(tb)["eval/fid"][0].value == 10.0  # file 10 came after file 9
    assert natural_key("a.10") > natural_key("a.9") and natural_key("a.9") > natural_key("a.1")


def test_kill_and_resume_leaves_one_value_per_step_written_last(tmp_path: Path):
    """A run logs steps 2..10, is killed, resumes from its step-5 checkpoint and logs 6..12 again: steps 6..10
    hold the resumed run's values, each once, in step order."""
    tb = tmp_path / "tb"
    write(tb, "events.out.tfevents.1700000000.host.100.0", [("train/loss", s, 1.0, 1000.0 + s) for s in range(2, 11, 2)])
    write(tb, "events.out.tfevents.1700000100.host.200.0", [("train/loss", s, 2.0, 1100.0 + s) for s in range(6, 13, 2)])
    points = read_scalars(tb)["train/loss"]
    assert [(p.step, p.value) for p in points] == [(2, 1.0), (4, 1.0), (6, 2.0), (8, 2.0), (10, 2.0), (12, 2.0)]


def test_a_step_written_twice_in_one_file_keeps_the_later_value(tmp_path: Path):
    """Re-running a finished command once wrote the final eval/fid a second time into the same file."""
    tb = tmp_path / "tb"
    write(tb, "events.out.tfevents.1700000000.host.1.0",
          [("eval/fid", 4, 30.0, 1000.0), ("eval/fid", 8, 20.0, 1001.0), ("eval/fid", 8, 19.0, 1002.0),
           ("eval/fid", 6, 25.0, 1003.0)])
    assert [(p.step, p.value) for p in read_scalars(tb)["eval/fid"]] == [(4, 30.0), (6, 25.0), (8, 19.0)]


def test_real_writers_across_the_9_to_10_boundary(tmp_path: Path):
    """The test-order flake of `pytest tests/test_evaluate.py tests/test_compare.py`: after enough writers
    in one process, a run's two writers get numbers 9 and 10 (or 99 and 100) in one second. Forced here,
    whatever ran before: the counter is advanced to the boundary and both files get the same second."""
    from tensorboard.summary.writer.event_file_writer import _global_uid

    used = _global_uid.get()
    target = next(10**k - 1 for k in range(1, 12) if 10**k - 1 > used)
    for _ in range(target - used - 1):
        _global_uid.get()
    tb = tmp_path / "run" / "tb"
    with SummaryWriter(str(tb)) as w:  # the Trainer: during-training FID at step 4, a stale final-step value
        w.add_scalar("eval/fid", 40.0, 4)
        w.add_scalar("eval/fid", 20.0, 8)
    with SummaryWriter(str(tb)) as w:  # genbench eval, a moment later: the final protocol at step 8
        w.add_scalar("eval/fid", 10.0, 8)
    files = sorted(tb.iterdir())
    second = min(re.search(r"tfevents\.(\d+)\.", f.name).group(1) for f in files)
    for f in files:  # written in the same second
        f.rename(f.with_name(re.sub(r"tfevents\.\d+\.", f"tfevents.{second}.", f.name)))
    assert sorted(f.name.rsplit(".", 1)[-1] for f in tb.iterdir()) == sorted([str(target), str(target + 1)])
    assert last_by_tensorboard(tb, "eval/fid") == 20.0  # name order reads writer `target` last
    assert [(p.step, p.value) for p in read_scalars(tb)["eval/fid"]] == [(4, 40.0), (8, 10.0)]


def test_new_style_tensor_scalars_are_read(tmp_path: Path):
    tb = tmp_path / "tb"
    with SummaryWriter(str(tb)) as w:
        w.add_scalar("perf/train_time_s", 3.5, 2, new_style=True)
    assert [(p.step, p.value) for p in read_scalars(tb)["perf/train_time_s"]] == [(2, 3.5)]


def test_value_at_and_the_during_training_curve(tmp_path: Path):
    tb = tmp_path / "tb"
    write(tb, "events.out.tfevents.1.h.1.0", [("perf/train_time_s", 2, 4.0, 1.0), ("perf/train_time_s", 4, 8.0, 2.0),
                                              ("eval/fid", 4, 30.0, 3.0), ("eval/fid", 8, 10.0, 4.0)])
    scalars = read_scalars(tb)
    assert list(value_at(scalars, "perf/train_time_s", [1, 3, 4, 6])) == [2.0, 6.0, 8.0, 8.0]
    assert value_at(scalars, "perf/train_flops", [1]) is None
    assert [p.step for p in fid_during_training(scalars, final_step=8)] == [4]  # an old run's final eval/fid left out
    scalars["eval_during/fid"] = scalars.pop("eval/fid")
    assert [p.step for p in fid_during_training(scalars, final_step=8)] == [4, 8]  # the new tag holds only these


@pytest.mark.parametrize("missing", ["nothing", "folder"])
def test_no_events(tmp_path: Path, missing: str):
    if missing == "nothing":
        (tmp_path / "tb").mkdir()
    assert read_scalars(tmp_path / "tb") == {}
