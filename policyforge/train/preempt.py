"""SIGTERM: what a scheduler (SLURM, Kubernetes, a spot instance) sends before it takes the machine back.

Python's default is to die at once, mid-step, with nothing saved since the last checkpoint and nothing said.
Here SIGTERM asks the loop to stop after the step that is running: it writes that step's records and a
checkpoint, and says how to continue (the scheduler's grace period is usually long enough for one step and a
save; past it, schedulers send SIGKILL). More SIGTERMs change nothing: one signal can arrive twice (a torchrun
worker whose launcher is killed gets two, milliseconds apart), so a second is no sign of impatience; Ctrl-C
stops at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Preempted(Exception):
    """`train` stopped after a step on SIGTERM, its checkpoint written: the run is not finished (the command line
    exits with 143, as a process ended by SIGTERM does, so a retry wrapper or a Job's restart policy resumes it)."""


class StopRequest:
    """Whether a SIGTERM asked the run to stop; `installed()` catches it for the block (main thread only: Python
    delivers signals there, and a run started from another thread keeps the default)."""

    def __init__(self):
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopRequest"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGTERM, self._on_term)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _on_term(self, signum, frame) -> None:
        self.requested = True
