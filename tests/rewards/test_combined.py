"""Several reward functions as one (data.reward 'a:f, b:g' with data.reward_weights): components by hand,
names, errors and threads (a run: tests/e2e/test_reward_components.py)."""

from __future__ import annotations

import pytest
import torch

from policyforge.data.tasks import Example
from policyforge.rewards.score import Combined, Pooled, RewardError, load_rewards, score_parts

ROWS = [Example("rev:ab=", "ba", {"answer": "ba"}, 0), Example("rev:abc=", "cba", {"answer": "cba"}, 1)]


def correct(prompt, completion, answer, **_):
    return float(completion == answer)


def length(prompt, completion, **_):
    return float(len(completion))


def parts(prompt, completion, **_):
    return {"a": 1.0, "b": 2.0}


def broken(prompt, completion, **_):
    raise ValueError("no score here")


HERE = "tests.rewards.test_combined"


def test_each_function_is_a_component_and_the_reward_their_weighted_sum():
    reward = load_rewards(f"{HERE}:correct, {HERE}:length", [2.0, 0.5])
    got = score_parts(reward, ROWS, ["ba", "xx"])
    assert got.names == ("correct", "length")
    assert got.components.tolist() == [[1.0, 2.0], [0.0, 2.0]]  # each function's own number
    assert got.scores.tolist() == [3.0, 1.0]  # 2 x correct + 0.5 x length
    assert got.correct().tolist() == [True, False]  # the function named `correct` decides, not the sum
    halved = score_parts(load_rewards(f"{HERE}:correct, {HERE}:length", [0.5, 1.0]), ROWS, ["ba", "xx"])
    assert halved.correct().tolist() == [True, False]  # whatever its weight
    assert halved.scores.tolist() == [2.5, 2.0]


def test_members_return_numbers_and_one_function_may_be_weighted():
    with pytest.raises(RewardError, match=r"parts returns a dict \(a, b\); in a combined data.reward"):
        score_parts(load_rewards(f"{HERE}:parts, {HERE}:length"), ROWS, ["x", "yy"])
    single = score_parts(load_rewards(f"{HERE}:length", [3.0]), ROWS, ["x", "yy"])
    assert single.names == ("length",) and single.scores.tolist() == [3.0, 6.0]


def test_threads_give_the_same_values():
    reward = load_rewards(f"{HERE}:correct, {HERE}:length", [1.0, 0.25])
    alone = score_parts(reward, ROWS, ["ba", "cba"])
    pooled = score_parts(Pooled(reward, 2), ROWS, ["ba", "cba"])
    assert torch.equal(alone.components, pooled.components) and alone.names == pooled.names


def test_mistakes_name_the_function():
    with pytest.raises(RewardError, match="broken: reward function raised on row 0"):
        score_parts(load_rewards(f"{HERE}:length, {HERE}:broken"), ROWS, ["a", "b"])
    with pytest.raises(RewardError, match="1 value.s. for 2 reward function"):
        load_rewards(f"{HERE}:length, {HERE}:correct", [1.0])
    with pytest.raises(RewardError, match="names 'tests.rewards.test_combined:length' twice"):
        load_rewards(f"{HERE}:length, {HERE}:length")
    with pytest.raises(RewardError, match="expected 'module:function'"):
        load_rewards(" , ")
    names = load_rewards(f"{HERE}:length, tests.e2e.test_train:vowel_reward, {HERE}:correct,")  # a trailing comma
    assert isinstance(names, Combined) and list(names.fns) == ["length", "vowel_reward", "correct"]
    clash = load_rewards(f"{HERE}:correct, {HERE}:exact, policyforge.rewards.verifiers:exact")
    assert list(clash.fns) == ["correct", f"{HERE}:exact", "policyforge.rewards.verifiers:exact"]  # the clash in full


def exact(prompt, completion, answer, **_):
    return float(completion == answer)
