"""TensorBoard events beside the run's .jsonl records (`train.tensorboard`), through tensorboardX.

Every number of a metrics.jsonl line goes in as `train/<name>` and of an eval.jsonl line as
`eval/<name>` (TensorBoard writes `pass@k` as `pass_k`), at the record's step, so `tensorboard --logdir runs` shows the runs side by side
(the `policyforge report` figure stays the one that needs nothing installed). A resumed run
opens a new event file that purges the steps after its checkpoint, as the .jsonl files are cut.
"""

from __future__ import annotations

import time
from pathlib import Path

INSTALL = "pip install 'policyforge[tensorboard]'"
FOLDER = "tensorboard"


class TensorBoardLog:
    def __init__(self, run_path: Path, resumed_at: int | None = None):
        from tensorboardX import SummaryWriter

        # purge_step: TensorBoard drops the events of the old files from this step on (the steps being redone);
        # the suffix keeps two invocations within one second (a stop and a resume) from sharing a file name
        start = 0 if resumed_at is None else resumed_at
        self.writer = SummaryWriter(str(run_path / FOLDER), purge_step=None if resumed_at is None else start + 1,
                                    flush_secs=30, filename_suffix=f".{time.time_ns()}.from-step-{start}")

    def add(self, record: dict, section: str) -> None:
        """The record's numbers (NaN and inf too, as metrics.jsonl has them; booleans and text left out) at its
        step, under `section/`."""
        step = record["step"]
        for name, value in record.items():
            if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{section}/{name}", value, step)

    def flush(self) -> None:
        """Onto disk now (at each checkpoint: a killed run resumes after it, so nothing before it is redone)."""
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()  # flushes: the events of the last steps are on disk when the run returns
