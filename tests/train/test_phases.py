"""Phases: a step's slow part is named on the progress bar, a quick one never touches it."""

import threading
import time

from policyforge.train.phases import Phases


class Bar:
    """A tqdm bar's description, as Phases sets it (`descriptions`: every text it was given, in order)."""

    disable = False

    def __init__(self):
        self.descriptions = []
        self.lock = threading.Lock()

    def set_description(self, text, refresh=True):
        with self.lock:
            self.descriptions.append(text)


def test_a_phase_that_runs_past_the_delay_is_named_then_cleared():
    bar = Bar()
    phases = Phases(bar, "RL", after=0.02)
    with phases("scoring 8 completions"):
        time.sleep(0.3)
    assert bar.descriptions == ["RL: scoring 8 completions", "RL"]


def test_a_quick_phase_never_touches_the_bar():
    bar = Bar()
    phases = Phases(bar, "RL", after=0.5)
    for _ in range(20):
        with phases("sampling 2 groups"):
            pass
    time.sleep(0.6)  # a timer that was not cancelled would have fired by now
    assert bar.descriptions == []


def test_nested_phases_show_the_innermost_and_return_to_the_outer():
    bar = Bar()
    phases = Phases(bar, "RL", after=0.02)
    with phases("sampling 2 groups"):
        time.sleep(0.2)
        with phases("scoring 8 completions"):
            time.sleep(0.2)
        time.sleep(0.01)
    assert bar.descriptions == ["RL: sampling 2 groups", "RL: scoring 8 completions", "RL: sampling 2 groups", "RL"]


def test_an_error_inside_a_phase_still_clears_the_label():
    bar = Bar()
    phases = Phases(bar, "RL", after=0.02)
    try:
        with phases("scoring 8 completions"):
            time.sleep(0.2)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert bar.descriptions[-1] == "RL"


def test_a_disabled_bar_is_never_written():
    bar = Bar()
    bar.disable = True
    phases = Phases(bar, "RL", after=0.0)
    with phases("scoring 8 completions"):
        time.sleep(0.1)
    assert bar.descriptions == []


def test_an_outer_phase_whose_timer_fired_during_a_short_inner_one_is_named_once_that_ends():
    bar = Bar()
    phases = Phases(bar, "RL", after=0.1)
    with phases("sampling 2 groups"):
        time.sleep(0.05)
        with phases("scoring 8 completions"):
            time.sleep(0.1)  # the outer timer fires now, while the inner (not yet due) runs
        time.sleep(0.2)
    assert bar.descriptions == ["RL: sampling 2 groups", "RL"]
