"""TRL's `log_extra(column, values)` for batched reward functions (rewards/batched.py): each row's columns, kept
in row order across a block's calls, refused with one line when malformed (a run: tests/e2e/test_rollouts_log.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policyforge.data.tasks import Example
from policyforge.rewards.batched import TrainerState, logged_extras, scoring
from policyforge.rewards.score import RewardError, load_rewards, score_parts
from policyforge.train.setup import check_reward_on

ROWS = [Example(f"rev:{w}=", w[::-1], {"answer": w[::-1]}, i, f"d.jsonl, line {i + 1}")
        for i, w in enumerate(["ab", "abc", "dog", "cat"])]
OUTS = ["ba", "xyz", "god", "tc"]
HERE = "tests.rewards.test_log_extra"


def lengths(completions, log_extra, **kwargs):  # as a TRL user writes it
    log_extra("chars", [len(c) for c in completions])
    log_extra("verdict", ["right" if c == a else "wrong" for c, a in zip(completions, kwargs["answer"])])
    return [float(c == a) for c, a in zip(completions, kwargs["answer"])]


def also_chars(completions, log_extra, **kwargs):  # a second function that picks the same column name
    log_extra("chars", [0] * len(completions))
    return [0.0] * len(completions)


def scalars(completions, log_extra, **kwargs):
    log_extra("x", [np.float32(0.5), torch.tensor(2), np.int64(3), None][: len(completions)])
    log_extra("odd", [float("nan"), float("inf"), np.float64("-inf"), 1.5][: len(completions)])
    log_extra("flag", np.array([True, False, True, False][: len(completions)]))
    return [0.0] * len(completions)


def test_each_row_gets_its_columns_across_the_calls_of_a_block():
    with scoring(TrainerState(0, 1)) as logged:
        score_parts(lengths, ROWS[:2], OUTS[:2])  # an evaluation's chunks: the second call's rows come after
        score_parts(lengths, ROWS[2:], OUTS[2:])
        assert logged_extras(5) == logged.extras(5)
    assert logged.extras(5) == [{"chars": 2, "verdict": "right"}, {"chars": 3, "verdict": "wrong"},
                                {"chars": 3, "verdict": "right"}, {"chars": 2, "verdict": "wrong"}, {}]
    assert logged_extras(2) == [{}, {}]  # outside a block there is nothing


def test_scalars_become_json_values_and_combined_functions_log_side_by_side():
    with scoring(TrainerState(0, 1)) as logged:
        score_parts(load_rewards(f"{HERE}:scalars, {HERE}:lengths"), ROWS, OUTS)
    first = logged.extras(1)[0]
    assert first == {"x": 0.5, "odd": None, "flag": True, "chars": 2, "verdict": "right"}
    assert [type(first[k]) for k in ("x", "flag", "chars")] == [float, bool, int]
    assert [e["x"] for e in logged.extras(4)] == [0.5, 2, 3, None]
    assert [e["odd"] for e in logged.extras(4)] == [None, None, None, 1.5]  # JSON has no NaN or infinity


def test_what_the_start_up_check_and_pass_at_k_log_is_dropped():
    with scoring(TrainerState(0, 1)) as outer:
        assert check_reward_on(lengths, ROWS[0], ROWS[1:], state=TrainerState(0, 1)) == 1
    assert outer.extras(2) == [{}, {}]


def bad(completions, log_extra, **kwargs):
    column, values = kwargs["answer"][0]
    log_extra(column, values)
    return [0.0] * len(completions)


@pytest.mark.parametrize("column, values, says", [
    (3, [1], "called log_extra with the column 3; a column's name is a string"),
    ("c", [1, 2], "logged 2 values as column 'c'; log_extra takes a list of 1, one per completion of the call"),
    ("c", "ab", "logged str as column 'c'; log_extra takes a list of 1, one per completion of the call"),
    ("c", [[1, 2]], "logged 'c' with the value [1, 2]; a column holds strings, numbers, booleans or None"),
    ("c", [{"a": 1}], "logged 'c' with the value {'a': 1}; a column holds strings, numbers, booleans or None"),
])
def test_a_malformed_column_is_refused_in_one_line(column, values, says):
    row = [Example("p", None, {"answer": (column, values)}, 0, "d.jsonl, line 1")]
    line = bad.__code__.co_firstlineno + 2
    with scoring(TrainerState(0, 1)), pytest.raises(RewardError) as info:
        score_parts(bad, row, ["x"])
    assert str(info.value) == (f"batched reward function 'bad' {says} (at tests/rewards/test_log_extra.py:{line} "
                               "in bad)")


def test_one_column_from_two_functions_is_refused_naming_it():
    with scoring(TrainerState(0, 1)), pytest.raises(RewardError) as info:
        score_parts(load_rewards(f"{HERE}:lengths, {HERE}:also_chars"), ROWS, OUTS)
    assert str(info.value).startswith("also_chars: batched reward function 'also_chars' logged column 'chars' for a "
                                      "row that already has it (two functions logging one column name")
