"""The run directory: config, per-step metrics, samples, evaluations, summary.

Layout:
    config.yaml       the resolved configuration
    metrics.jsonl     one JSON line per RL step
    eval.jsonl        one line per held-out evaluation
    samples.jsonl     example completions at each evaluation
    summary.json      start / end accuracy, steps, wall time
    checkpoints/      step_<N>/ (see train/checkpoint.py)
    run.lock          the id of the process training the run (train/resume.py), while it runs
Every whole-file write goes through a temporary file and a rename.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def append(self, name: str, record: dict[str, Any]) -> None:
        with (self.path / name).open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self, name: str) -> list[dict[str, Any]]:
        """The records of a .jsonl file. A last line cut short (the process died mid-append) is
        dropped, as its step is redone on resume; a bad line anywhere else is an error."""
        p = self.path / name
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

    def truncate(self, name: str, keep) -> None:
        """Keep only the lines for which `keep(record)` holds (used on resume)."""
        rows = [r for r in self.read(name) if keep(r)]
        write_atomic(self.path / name, "".join(json.dumps(r) + "\n" for r in rows))

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        write_atomic(self.path / name, json.dumps(data, indent=2) + "\n")

    def write_text(self, name: str, text: str) -> None:
        write_atomic(self.path / name, text)
