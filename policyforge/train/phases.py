"""What part of a step is running, named on the progress bar once it has run a while.

A step's bar moves only when the step ends. With a slow reward (an LLM judge, tests run in a subprocess,
a remote server) or a long rollout the bar can sit still for minutes, and the user cannot tell sampling
from scoring from a hang. `Phases` names the innermost running phase ("RL: scoring 256 completions")
once it has lasted SHOW_AFTER_S seconds, from a timer thread, and puts the plain label back when it ends; a
fast step never touches the bar, so quick runs and their logs look as before.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

SHOW_AFTER_S = 2.0  # how long a phase runs before the bar names it: longer than any phase of a quick step


class Phases:
    """`with phases("scoring 256 completions"): ...` around each part of a step; phases nest (the innermost
    running one is shown). `bar` is a tqdm bar (a disabled one is never written to)."""

    def __init__(self, bar, label: str, after: float | None = None):
        self.bar, self.label, self.after = bar, label, SHOW_AFTER_S if after is None else after
        self._running: list[tuple[str, float]] = []  # the phases entered and not yet left, outermost first, with
        #                                               when each began
        self._shown = False  # whether the bar's description names a phase now
        self._lock = threading.Lock()  # the timer threads and the loop both change the bar

    @contextlib.contextmanager
    def __call__(self, what: str) -> Iterator[None]:
        if getattr(self.bar, "disable", True):  # no bar (train.progress false, or not the main process)
            yield
            return
        with self._lock:
            self._running.append((what, time.perf_counter()))
            depth = len(self._running)
        timer = threading.Timer(self.after, self._show, args=(depth,))
        timer.daemon = True  # never keeps a finished or interrupted run alive
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            with self._lock:
                self._running.pop()
                # the enclosing phase, named if it has run long enough (its own timer may have fired while this one
                # ran), or the plain label once none runs
                outer = self._running[-1] if self._running else None
                if outer is not None and time.perf_counter() - outer[1] >= self.after:
                    self._describe(f"{self.label}: {outer[0]}")
                    self._shown = True
                elif self._shown:
                    self._describe(self.label)
                    self._shown = False

    def _show(self, depth: int) -> None:
        """The timer's end: name the phase it was started for, if that is still the innermost one running."""
        with self._lock:
            if len(self._running) == depth:
                self._describe(f"{self.label}: {self._running[-1][0]}")
                self._shown = True

    def _describe(self, text: str) -> None:
        self.bar.set_description(text, refresh=True)


def no_phases(what: str) -> contextlib.AbstractContextManager:
    """The stand-in where no bar is kept (bench/sides.py, tests that build a step by hand)."""
    return contextlib.nullcontext()
