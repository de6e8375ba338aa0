"""The run directory: config, per-step metrics, samples, evaluations, summary.

Layout:
    config.yaml       the resolved configuration; its first line names the directory the run started in
    metrics.jsonl     one JSON line per RL step
    eval.jsonl        one line per held-out evaluation
    samples.jsonl     example completions at each evaluation
    rollouts.jsonl    sampled completions at each RL step, with rewards and advantages (metrics/rollouts.py)
    summary.json      start / end accuracy, steps, wall time
    checkpoints/      step_<N>/ (see train/checkpoint.py)
    tensorboard/      the same numbers as TensorBoard events, with train.tensorboard (metrics/tensorboard.py)
    run.lock          the id of the process training the run (train/resume.py), while it runs
Every whole-file write goes through a temporary file and a rename, with fsyncs so that a power loss
leaves the old file or the new one, never an empty one. A .jsonl file only ever grows by whole lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


# appended a line at a time; a resume truncates them to its checkpoint's step
LOG_FILES = ("metrics.jsonl", "eval.jsonl", "samples.jsonl", "rollouts.jsonl")


def fsync_path(path: str | Path) -> None:
    """Flush a file's contents, or a folder's entries (the names renamed or created in it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        # the contents before the rename: a file system may put a rename on disk before the data it names
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)  # the rename itself


def _whole_lines_end(f, size: int) -> int:
    """Where the whole lines of binary file `f` (of `size` bytes) end: `size`, unless a killed process
    left the last line cut short. One byte is read to tell; only then is the file scanned."""
    if size == 0:
        return 0
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return size
    f.seek(0)
    return f.read().rfind(b"\n") + 1


def read_records(p: Path) -> list[dict[str, Any]]:
    """The records of a .jsonl file ([] when it does not exist). A last line cut short (the process died
    mid-append) is dropped, as its step is redone on resume; a bad line anywhere else is an error."""
    lines = [line for line in p.read_text().splitlines() if line.strip()] if p.exists() else []
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if n == len(lines):
                break
            raise ValueError(f"{p}, line {n}: not valid JSON ({e.msg}); the run directory is damaged") from None
    return rows


class RunDir:
    def __init__(self, path: str | Path, writes: bool = True):
        self.path = Path(path)
        self.writes = writes
        if writes:
            self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def silent(cls, path: str | Path) -> "RunDir":
        """The run directory as a data-parallel process other than the first sees it: reads work, writes
        are dropped (the first process writes every record, once)."""
        return cls(path, writes=False)

    def append(self, name: str, record: dict[str, Any]) -> None:
        """Add `record` as one line, so that the file keeps whole lines only: a line a killed process cut
        short is dropped first (read() drops it anyway; written after, it would be damage in the middle),
        and a write that fails midway (a full disk) is undone before the error goes on, so an append
        after space is freed does not glue onto half a record."""
        if not self.writes:
            return
        line = (json.dumps(record) + "\n").encode()
        # unbuffered: each write() is one system call, and nothing is left in a buffer for close() to write
        with (self.path / name).open("a+b", buffering=0) as f:
            end = f.seek(0, os.SEEK_END)
            size = _whole_lines_end(f, end)
            if size < end:
                f.truncate(size)
            try:
                while line:  # a short write means the disk is full: the next one raises ENOSPC
                    line = line[f.write(line):]
            except OSError:
                f.truncate(size)
                raise

    def read(self, name: str) -> list[dict[str, Any]]:
        return read_records(self.path / name)

    def truncate(self, name: str, keep) -> None:
        """Keep only the lines for which `keep(record)` holds (used on resume)."""
        if not self.writes:
            return
        rows = [r for r in self.read(name) if keep(r)]
        write_atomic(self.path / name, "".join(json.dumps(r) + "\n" for r in rows))

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        if not self.writes:
            return
        write_atomic(self.path / name, json.dumps(data, indent=2) + "\n")

    def write_text(self, name: str, text: str) -> None:
        if not self.writes:
            return
        write_atomic(self.path / name, text)
