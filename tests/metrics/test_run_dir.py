"""The run directory survives a torn append, and refuses damage it cannot explain."""

import errno
import os
from pathlib import Path

import pytest

from policyforge.metrics.run_dir import RunDir


def test_a_last_line_cut_short_is_dropped(tmp_path):
    run = RunDir(tmp_path)
    run.append("metrics.jsonl", {"step": 1})
    run.append("metrics.jsonl", {"step": 2})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "reward_me')  # the process died mid-write
    assert run.read("metrics.jsonl") == [{"step": 1}, {"step": 2}]
    run.truncate("metrics.jsonl", lambda r: r["step"] <= 2)  # what resume does: the file is whole again
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'


def test_a_bad_line_in_the_middle_is_an_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        RunDir(tmp_path).read("metrics.jsonl")


class FullDisk:
    """A file on a disk with `room` bytes left: a write puts what fits and returns its length, as os.write
    does, and a write with nothing left fails with ENOSPC; `raise_at_once`: the write that runs out raises
    after putting its part (what a buffered file does)."""

    def __init__(self, f, room: int, raise_at_once: bool):
        self.f, self.room, self.raise_at_once = f, room, raise_at_once

    def write(self, data):
        n = min(len(data), self.room)
        self.f.write(data[:n])
        self.room -= n
        if n < len(data) and (self.raise_at_once or n == 0):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return n

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("raise_at_once", [True, False], ids=["write-raises", "short-write-then-raises"])
def test_an_append_that_fills_the_disk_is_undone(tmp_path, monkeypatch, raise_at_once):
    run = RunDir(tmp_path)
    run.append("metrics.jsonl", {"step": 1})
    before = (tmp_path / "metrics.jsonl").read_bytes()
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: FullDisk(real_open(self, *a, **k), 5, raise_at_once))
    with pytest.raises(OSError) as e:
        run.append("metrics.jsonl", {"step": 2, "reward": 0.5})
    assert e.value.errno == errno.ENOSPC
    assert (tmp_path / "metrics.jsonl").read_bytes() == before
    monkeypatch.undo()  # space was freed; the run goes on
    run.append("metrics.jsonl", {"step": 2, "reward": 0.5})
    run.append("metrics.jsonl", {"step": 3})
    assert run.read("metrics.jsonl") == [{"step": 1}, {"step": 2, "reward": 0.5}, {"step": 3}]


@pytest.mark.parametrize("whole", [0, 2])
def test_an_append_after_a_line_cut_short_drops_that_line(tmp_path, whole):
    run = RunDir(tmp_path)
    for step in range(1, whole + 1):
        run.append("metrics.jsonl", {"step": step})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "reward_me')  # a killed process
    run.append("metrics.jsonl", {"step": 3})
    run.append("metrics.jsonl", {"step": 4})
    assert run.read("metrics.jsonl") == [{"step": s} for s in [*range(1, whole + 1), 3, 4]]
    assert (tmp_path / "metrics.jsonl").read_text().count("reward_me") == 0
