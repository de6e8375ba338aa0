"""TRL's batched reward functions taken unchanged (rewards/batched.py); where in the user's code a reward raised;
the start-up check's label (a run: tests/e2e/test_reward_trl_form.py)."""

from __future__ import annotations

import fractions
from dataclasses import replace

import numpy as np
import pytest
import torch

from policyforge.data.tasks import Example
from policyforge.rewards.batched import is_batched
from policyforge.rewards.score import Pooled, RewardError, load_reward_fn, load_rewards, probe, score_parts
from tests.rewards import user_helpers

ROWS = [Example("rev:ab=", "ba", {"answer": "ba", "level": 1}, 0, "d.jsonl, line 1"),
        Example("rev:abc=", "cba", {"answer": "cba", "level": 2}, 1, "d.jsonl, line 2"),
        Example("rev:dog=", "god", {"answer": "god", "level": 3}, 2, "d.jsonl, line 3")]
OUTS = ["ba ", "xyz", "god"]
HERE = "tests.rewards.test_batched"


def accuracy_reward(completions, answer, **kwargs):  # as a TRL user writes it
    return [float(c.strip() == a) for c, a in zip(completions, answer)]


def accuracy_per_row(prompt, completion, answer, **_):  # the same reward in policyforge's per-row form
    return float(completion.strip() == answer)


def test_a_trl_function_gives_the_per_row_scores():
    batched = load_reward_fn(f"{HERE}:accuracy_reward")
    out = score_parts(batched, ROWS, OUTS)
    assert out.scores.tolist() == [1.0, 0.0, 1.0] and out.components is None and out.names == ()
    assert torch.equal(out.scores, score_parts(accuracy_per_row, ROWS, OUTS).scores)
    # data.reward_workers: the same one call, the same scores
    assert torch.equal(score_parts(Pooled(batched, 2), ROWS, OUTS).scores, out.scores)


def test_it_is_called_once_with_the_columns_as_lists_in_row_order():
    calls = []

    def record(prompts, completions, **kwargs):
        calls.append((prompts, completions, kwargs))
        return [0.5] * len(completions)

    assert score_parts(record, ROWS, OUTS).scores.tolist() == [0.5] * 3
    assert calls == [(["rev:ab=", "rev:abc=", "rev:dog="], OUTS, {"answer": ["ba", "cba", "god"], "level": [1, 2, 3]})]


def test_only_the_arguments_it_can_take_of_prompts_and_completions():
    def completions_only(completions, answer, level):  # no **kwargs: prompts is not forced on it
        return [float(len(c)) for c in completions]

    assert score_parts(completions_only, ROWS, OUTS).scores.tolist() == [3.0, 3.0, 3.0]


CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "rev:abc="}]
RENDERED = Example("<system>be brief<user>rev:abc=<assistant>", "cba", {"answer": "cba"}, 0, messages=CHAT)
PLAIN = Example("rev:dog=", "god", {"answer": "god"}, 1)


def test_rendered_rows_come_in_trl_conversational_form():
    calls = []

    def record(prompts, completions, answer, **kwargs):
        calls.append((prompts, completions, answer))
        prompts[0].append({"role": "assistant", "content": "edited"})  # a copy: the row's messages stay
        return [float(c[0]["content"] == a) if isinstance(c, list) else float(c == a)
                for c, a in zip(completions, answer)]

    assert score_parts(record, [RENDERED, PLAIN], ["cba", "dog"]).scores.tolist() == [1.0, 0.0]
    assert calls == [([CHAT + [{"role": "assistant", "content": "edited"}], "rev:dog="],
                      [[{"role": "assistant", "content": "cba"}], "dog"], ["cba", "god"])]
    assert RENDERED.messages == CHAT


def test_trl_s_own_conversational_reward_runs_unchanged():
    think_format_reward = pytest.importorskip("trl.rewards").think_format_reward
    outs = ["<think>\nhm\n</think>\ncba", "cba"]
    assert score_parts(think_format_reward, [RENDERED, RENDERED], outs).scores.tolist() == [1.0, 0.0]


def test_which_signatures_are_batched():
    class Scorer:  # a callable object: its __call__'s signature
        def __call__(self, completions, **kwargs):
            return [1.0] * len(completions)

    assert is_batched(accuracy_reward) and is_batched(Scorer())
    assert is_batched(lambda prompts, **kw: [])
    assert is_batched(lambda *, completion_ids, **kw: [])  # TRL's repetition penalty: refused below, by name
    assert not is_batched(accuracy_per_row) and not is_batched(lambda p, c: 1.0)
    assert not is_batched(lambda prompt, completion, **kwargs: 1.0)  # **kwargs alone: the per-row form
    assert not is_batched(lambda completions, /: [])  # positional only: not by name
    assert not is_batched(max)  # a signature that cannot be read: per row, as before


def _refused(fn, rows=ROWS, outs=OUTS) -> str:
    with pytest.raises(RewardError) as info:
        score_parts(fn, rows, outs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_wrong_result_is_refused_in_one_line_naming_the_function():
    def short(completions, **kw):
        return [1.0, 1.0]

    def texts(completions, **kw):
        return ["1.0"] * len(completions)

    def unscored(completions, **kw):
        return [1.0, None, 1.0]

    def scalar(completions, **kw):
        return 1.0

    def square(completions, **kw):
        return np.ones((3, 3))

    def nan(completions, **kw):
        return [1.0, 1.0, float("nan")]

    assert _refused(short) == ("batched reward function 'short' returned 2 value(s) for 3 completions; expected a "
                               "list of 3 numbers, one per completion")
    assert _refused(texts) == ("batched reward function 'texts' returned '1.0' for d.jsonl, line 1; expected a "
                               "number, not text")
    assert _refused(unscored).startswith("batched reward function 'unscored' returned None for d.jsonl, line 2: "
                                         "policyforge scores every row")
    assert _refused(scalar) == ("batched reward function 'scalar' returned float 1.0; expected a list of 3 numbers, "
                                "one per completion")
    assert _refused(square).startswith("batched reward function 'square' returned an array of shape (3, 3)")
    assert _refused(nan).startswith("batched reward function 'nan' returned nan for d.jsonl, line 3")


def test_arrays_tensors_and_tuples_are_lists_of_numbers():
    for kind in (np.array, torch.tensor, tuple):
        got = score_parts(lambda completions, **kw: kind([1.0, 2.0, 3.0]), ROWS, OUTS)
        assert got.scores.tolist() == [1.0, 2.0, 3.0] and got.scores.dtype == torch.float32


def test_arguments_policyforge_cannot_give_are_refused_by_name():
    def repetition(completion_ids, **kwargs):  # TRL's get_repetition_penalty_reward: needs token ids
        return [0.0] * len(completion_ids)

    def optional(completions, trainer_state=None, **kwargs):  # as TRL's own functions take trainer objects
        return [1.0 if trainer_state is None else 0.0] * len(completions)

    def unknown(completions, solution, **kwargs):
        return [1.0] * len(completions)

    assert _refused(repetition) == (
        "batched reward function 'repetition' requires the argument 'completion_ids', which policyforge does not "
        "pass (scoring sees the completions as text; tokenize them in the function if it needs ids); give it a "
        "default or drop it")
    assert score_parts(optional, ROWS, OUTS).scores.tolist() == [1.0] * 3
    assert "'solution', which is not a column of d.jsonl, line 1 (columns: prompts, completions, answer, " \
           "level)" in _refused(unknown)
    clash = [replace(ex, extra={"completions": "mine"}) for ex in ROWS]
    assert "column 'completions' has the name of the batched form's own argument" in _refused(accuracy_reward, clash)
    mixed = [ROWS[0], replace(ROWS[1], extra={"answer": "cba"})]
    assert "d.jsonl, line 2 has no column 'level'" in _refused(accuracy_reward, mixed, OUTS[:2])


def test_a_batched_function_inside_a_combined_reward():
    reward = load_rewards(f"{HERE}:accuracy_reward, tests.rewards.test_combined:length", [1.0, 0.5])
    for fn in (reward, Pooled(reward, 2)):
        out = score_parts(fn, ROWS, OUTS)
        assert out.names == ("accuracy_reward", "length")
        assert out.components.tolist() == [[1.0, 3.0], [0.0, 3.0], [1.0, 3.0]]
        assert out.scores.tolist() == [2.5, 1.5, 2.5]
    with pytest.raises(RewardError, match="^short: batched reward function 'short' returned 2 value"):
        score_parts(load_rewards(f"{HERE}:short, {HERE}:accuracy_reward"), ROWS, OUTS)


def short(completions, **kw):
    return [1.0, 1.0]


def late(prompt, completion, **_):
    return {"oops": 1}["missing"]


def batched_late(completions, **kwargs):
    return [user_helpers.lookup(c) for c in completions]


def test_an_error_says_where_in_the_user_s_code_it_was_raised():
    line = late.__code__.co_firstlineno + 1
    assert _refused(late) == ("reward function raised on d.jsonl, line 1 (prompt 'rev:ab=', completion 'ba '): "
                              f"KeyError: 'missing' (at tests/rewards/test_batched.py:{line} in late)")
    # the deepest frame of the user's code: their helper module, not the reward that called it
    assert _refused(batched_late) == ("batched reward function 'batched_late' raised on 3 rows (the first d.jsonl, "
                                      "line 1): KeyError: 'ba ' (at tests/rewards/user_helpers.py:5 in lookup)")
    # threads and a combined reward keep it
    assert _refused(Pooled(late, 2)).endswith(f"(at tests/rewards/test_batched.py:{line} in late)")
    assert _refused(load_rewards(f"{HERE}:late, {HERE}:accuracy_reward")).endswith(f"py:{line} in late)")


def test_the_location_skips_libraries_and_falls_back_to_the_reward_s_own_frame():
    def parses(prompt, completion, **_):
        return float(fractions.Fraction(completion))  # raises inside the standard library

    line = parses.__code__.co_firstlineno + 1
    assert _refused(parses).endswith(f"ValueError: Invalid literal for Fraction: 'ba ' "
                                     f"(at tests/rewards/test_batched.py:{line} in parses)")
    # a reward that is itself a library's function: its own frame, in the library
    bare = [replace(ex, extra={}) for ex in ROWS]
    assert _refused(fractions.Fraction, bare).endswith("in __new__)")
    assert f"(at {fractions.__file__}:" in _refused(fractions.Fraction, bare)
    # an error of the call itself has no frame in any reward: no location
    assert _refused(lambda prompt, completion: 1.0).endswith("got an unexpected keyword argument 'answer'")


def test_the_start_up_check_labels_its_completions():
    unsolved = [replace(ex, solution=None) for ex in ROWS]
    with pytest.raises(RewardError, match=r"^start-up check \(empty completion, not a model output\): reward "
                                          r"function raised on d.jsonl, line 1 \(prompt 'rev:ab=', completion ''\)"):
        probe(late, unsolved)
    with pytest.raises(RewardError, match=r"^start-up check \(the row's solution as completion, not a model "
                                          r"output\): reward function raised on d.jsonl, line 1 .*completion 'ba'"):
        probe(late, ROWS)
    with pytest.raises(RewardError, match=r"^start-up check \(the row's solution as completion, an empty one where "
                                          r"it has none, not a model output\): batched reward function 'short'"):
        probe(short, [ROWS[0], unsolved[1], ROWS[2]])
    assert probe(accuracy_reward, ROWS).scores.tolist() == [1.0, 1.0, 1.0]  # it passes on the solutions
