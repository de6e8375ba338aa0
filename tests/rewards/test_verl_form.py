"""verl's compute_score(data_source, solution_str, ground_truth, extra_info) taken unchanged
(rewards/verl_form.py): what it is given, how its number or dict becomes the reward, what is logged."""

import pytest

from policyforge.data.tasks import Example
from policyforge.rewards.batched import TrainerState, scoring
from policyforge.rewards.score import Pooled, RewardError, load_rewards, score_parts
from policyforge.rewards.verl_form import is_verl_form

SEEN = []


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """As verl's custom reward functions are written (DAPO's returns score, acc and pred)."""
    SEEN.append((data_source, solution_str, ground_truth, extra_info))
    ok = solution_str.strip() == ground_truth
    return {"score": 1.0 if ok else -1.0, "acc": ok, "pred": solution_str.strip()}


def plain(solution_str, ground_truth):
    return float(solution_str == ground_truth)


def _verl_row(i, word, **extra):
    return Example(f"rev:{word}=", None, {"data_source": "rev", "reward_model": {"style": "rule",
                                          "ground_truth": word[::-1]}, "extra_info": {"index": i}, **extra},
                   i, f"d.parquet, row {i}")


ROWS = [_verl_row(0, "ab"), _verl_row(1, "dog"), _verl_row(2, "cat")]
HERE = "tests.rewards.test_verl_form"


def test_the_form_is_told_by_verl_s_keywords():
    assert is_verl_form(compute_score) and is_verl_form(plain)
    assert is_verl_form(lambda *, solution_str, ground_truth, **kw: 0.0)
    assert not is_verl_form(lambda prompt, completion, **kw: 0.0)
    assert not is_verl_form(lambda completions, ground_truth, **kw: [])  # TRL's batched form with a column


def test_a_dict_s_score_is_the_reward_and_every_key_is_logged():
    SEEN.clear()
    with scoring(TrainerState(0, 1)) as logged:
        out = score_parts(compute_score, ROWS, ["ba", "dgo", "tac "])
    assert out.scores.tolist() == [1.0, -1.0, 1.0] and out.components is None  # acc and pred are not added
    assert out.correct().tolist() == [True, False, True]  # solved: score >= 1
    assert SEEN == [("rev", "ba", "ba", {"index": 0}), ("rev", "dgo", "god", {"index": 1}),
                    ("rev", "tac ", "tac", {"index": 2})]
    assert logged.extras(3) == [{"score": 1.0, "acc": True, "pred": "ba"}, {"score": -1.0, "acc": False, "pred": "dgo"},
                                {"score": 1.0, "acc": True, "pred": "tac"}]
    SEEN[0][3]["index"] = 99  # a copy: the row's own extra_info is untouched
    assert ROWS[0].extra["extra_info"] == {"index": 0}


def test_the_ground_truth_comes_from_the_row_as_verl_keeps_it_or_from_its_solution():
    flat = Example("rev:ab=", None, {"ground_truth": "ba"}, 0, "d.jsonl, line 1")
    solved = Example("rev:ab=", "ba", {}, 1, "d.jsonl, line 2")
    assert score_parts(plain, [flat, solved], ["ba", "ba"]).scores.tolist() == [1.0, 1.0]
    with pytest.raises(RewardError) as info:
        score_parts(plain, [Example("rev:ab=", None, {"answer": "ba"}, 0, "d.jsonl, line 1")], ["ba"])
    assert str(info.value) == (
        "verl-form reward function 'plain' takes verl's ground_truth, and d.jsonl, line 1 has none: give the rows a "
        "reward_model.ground_truth or ground_truth column, or name the answer's column with --data.solution-column")


def no_score(data_source, solution_str, ground_truth, extra_info=None):
    return {"acc": 1.0}


def broken(data_source, solution_str, ground_truth, extra_info=None):
    return 1 / 0


def test_a_dict_without_score_and_a_raising_function_are_one_line_each():
    with pytest.raises(RewardError, match=r"^verl-form reward function 'no_score' returned a dict without 'score' "
                                          r"for d.parquet, row 0 \(keys: acc\); in verl's form the reward is"):
        score_parts(no_score, ROWS[:1], ["ba"])
    with pytest.raises(RewardError, match=r"^verl-form reward function 'broken' raised on d.parquet, row 0 \(prompt "
                                          r"'rev:ab=', completion 'ba'\): ZeroDivisionError: division by zero \(at "
                                          r"tests/rewards/test_verl_form.py:\d+ in broken\)$"):
        score_parts(broken, ROWS[:1], ["ba"])


def mixed(data_source, solution_str, ground_truth, extra_info=None):
    return 0.0 if extra_info["index"] == 0 else {"score": 0.5, "i": extra_info["index"]}


def test_logged_keys_keep_their_rows_across_calls_threads_and_combined_rewards():
    with scoring(TrainerState(0, 1)) as logged:  # an evaluation's chunks: numbers first, then dicts
        score_parts(mixed, ROWS[:1], ["x"])
        score_parts(Pooled(mixed, 2), ROWS[1:], ["y", "z"])
    assert logged.extras(3) == [{}, {"score": 0.5, "i": 1}, {"score": 0.5, "i": 2}]
    combined = load_rewards(f"{HERE}:plain, {HERE}:compute_score")  # verl's beside another: components by name
    out = score_parts(combined, ROWS[:2], ["ba", "x"])
    assert out.names == ("plain", "compute_score") and out.components.tolist() == [[1.0, 1.0], [0.0, -1.0]]


def test_a_per_row_function_the_call_does_not_fit_is_told_its_form():
    with pytest.raises(RewardError) as info:
        score_parts(lambda prompt, completion: 1.0, ROWS[:1], ["ba"])  # the row's columns come by name
    assert str(info.value).endswith("got an unexpected keyword argument 'data_source'; the per-row form is called as "
                                    "fn(prompt, completion, **columns), every other column by name: give it **kwargs "
                                    "(verl's compute_score is told by its solution_str and ground_truth parameters)")
