"""TensorBoard events beside the run's .jsonl records (`train.tensorboard`), through tensorboardX.

Every number of a metrics.jsonl line goes in as `train/<name>` and of an eval.jsonl line as
`eval/<name>` (TensorBoard writes `pass@k` as `pass_k`), at the record's step, so `tensorboard --logdir runs` shows the runs side by side
(the `policyforge report` figure stays the one that needs nothing installed). A resumed run
opens a new event file that purges every older event and writes the kept .jsonl records again:
the events then match the records even when TensorBoard was off for part of the run (events of
steps redone since would otherwise stay), and the only purge TensorBoard supports is "this step
on".
"""

from __future__ import annotations

import time
from pathlib import Path

INSTALL = "pip install 'policyforge[tensorboard]'"
FOLDER = "tensorboard"


class TensorBoardLog:
    def __init__(self, run_path: Path, resumed_at: int | None = None, kept: dict[str, list[dict]] | None = None):
        """`resumed_at`: the checkpoint's step on a resume, and `kept` the records kept of metrics.jsonl and
        eval.jsonl ({"train": [...], "eval": [...]}), written again after the purge."""
        from tensorboardX import SummaryWriter

        # purge_step 0: TensorBoard drops the events of the older files from step 0 on, that is all of them;
        # the suffix keeps two invocations within one second (a stop and a resume) from sharing a file name
        start = 0 if resumed_at is None else resumed_at
        self.writer = SummaryWriter(str(run_path / FOLDER), purge_step=None if resumed_at is None else 0,
                                    flush_secs=30, filename_suffix=f".{time.time_ns()}.from-step-{start}")
        for section, records in (kept or {}).items():
            for record in records:
                self.add(record, section)

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
