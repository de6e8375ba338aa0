"""TRL's batched reward functions taken unchanged (rewards/batched.py), completion_ids included; where in the
user's code a reward raised; the start-up check's label and stand-in ids (a run: tests/e2e/test_reward_trl_form.py)."""

from __future__ import annotations

import fractions
from dataclasses import replace

import numpy as np
import pytest
import torch

from policyforge.data.tasks import Example
from policyforge.models.tiny import char_tokenizer
from policyforge.rewards.batched import Logged, TrainerState, is_batched, scoring
from policyforge.rewards.model import Ensemble
from policyforge.rewards.score import (Pooled, RewardError, load_reward_fn, load_rewards, probe, score_parts,
                                       takes_completion_ids, token_lists)
from policyforge.train.distributed import World
from policyforge.train.setup import check_reward_on
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
    assert is_batched(lambda *, completion_ids, **kw: [])  # TRL's repetition penalty: given the token ids
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

    def trainer(completions, trainer_state, **kwargs):
        return [0.0] * len(completions)

    def optional(completions, trainer_state=None, **kwargs):  # as TRL's own functions take trainer objects
        return [1.0 if trainer_state is None else 0.0] * len(completions)

    def unknown(completions, solution, **kwargs):
        return [1.0] * len(completions)

    # training, evaluation and the start-up check give trainer_state (below); a direct call outside them does not
    assert _refused(trainer) == (
        "batched reward function 'trainer' requires the argument 'trainer_state', which only training, evaluation "
        "and the start-up check give, not this call of score_parts outside a `scoring(state)` block "
        "(rewards/batched.py); give it a default or drop it")
    assert _refused(lambda completions, log_metric: []).startswith(
        "batched reward function '<lambda>' requires the argument 'log_metric', which only training")
    assert _refused(lambda completions, log_extra, **kw: []).startswith(
        "batched reward function '<lambda>' requires the argument 'log_extra', which only training")
    assert _refused(lambda completions, environments, **kw: []) == (
        "batched reward function '<lambda>' requires the argument 'environments', which policyforge does not pass "
        "(TRL's environments); give it a default or drop it")
    # training, evaluation and the start-up check give the ids (below); a direct call without them is refused
    assert _refused(repetition) == (
        "batched reward function 'repetition' requires the argument 'completion_ids', which this call of "
        "score_parts was not given: pass completion_ids=token_lists(completion_ids, completion_mask), each "
        "completion's token ids")
    assert score_parts(optional, ROWS, OUTS).scores.tolist() == [1.0] * 3
    assert "'solution', which is not a column of d.jsonl, line 1 (columns: answer, level)" in _refused(unknown)
    with scoring(TrainerState(0, 1)):  # TRL's keywords are not columns
        assert "(columns: answer, level)" in _refused(unknown)
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
    # an error of the call itself has no frame in any reward: no location, but the form it is called in
    assert "got an unexpected keyword argument 'answer'; the per-row form is called as" in _refused(
        lambda prompt, completion: 1.0)


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


IDS = [[14, 13, 2], [5, 6, 7], [8, 9, 10, 2]]  # token ids of OUTS' rows, made up: what a rollout would give


def ids_length(completion_ids, **kwargs):
    return [float(len(ids)) for ids in completion_ids]


def test_token_lists_are_each_row_s_masked_tokens():
    ids = torch.tensor([[5, 6, 2, 0], [7, 8, 9, 4], [3, 0, 0, 0]])  # EOS 2 kept, padding 0 dropped, a row cut at T
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    got = token_lists(ids, mask)
    assert got == [[5, 6, 2], [7, 8, 9, 4], []] and all(type(t) is int for row in got for t in row)


def test_completion_ids_reach_a_batched_function_as_copies():
    calls = []

    def record(completions, completion_ids, **kwargs):
        calls.append(completion_ids)
        completion_ids[0].append(99)  # a copy: the caller's lists stay
        return [float(len(ids)) for ids in completion_ids]

    given = [list(row) for row in IDS]
    assert score_parts(record, ROWS, OUTS, completion_ids=given).scores.tolist() == [4.0, 3.0, 4.0]
    assert given == IDS and calls == [[IDS[0] + [99], IDS[1], IDS[2]]]
    seen = []  # **kwargs gets them, as prompts and completions; a function naming neither is not forced them
    score_parts(lambda completions, **kwargs: seen.append(kwargs["completion_ids"]) or [0.0] * 3, ROWS, OUTS,
                completion_ids=IDS)
    assert seen == [IDS]
    assert score_parts(lambda completions, answer, level: [1.0] * 3, ROWS, OUTS, completion_ids=IDS).scores.sum() == 3
    rows = []  # a per-row function gets nothing new
    score_parts(lambda prompt, completion, **kwargs: rows.append(kwargs) or 0.0, ROWS, OUTS, completion_ids=IDS)
    assert rows == [ex.extra for ex in ROWS]


class NoModel:
    """A reward model stub that gives 0 to every row."""

    def score_examples(self, examples, completions):
        return torch.zeros(len(examples))


def test_combined_pooled_and_ensemble_rewards_pass_the_ids_on():
    combined = load_rewards(f"{HERE}:ids_length, {HERE}:accuracy_reward")
    for reward in (combined, Pooled(combined, 2)):
        assert score_parts(reward, ROWS, OUTS, completion_ids=IDS).scores.tolist() == [4.0, 3.0, 5.0]
    for reward in (Pooled(ids_length, 2), Ensemble(ids_length, NoModel())):
        assert score_parts(reward, ROWS, OUTS, completion_ids=IDS).scores.tolist() == [3.0, 3.0, 4.0]


def test_which_rewards_read_completion_ids():
    assert takes_completion_ids(ids_length) and takes_completion_ids(accuracy_reward)  # by name; **kwargs
    assert not takes_completion_ids(accuracy_per_row)  # the per-row form never gets them
    assert not takes_completion_ids(lambda completions, answer, level: [])  # batched, neither name nor **kwargs
    assert takes_completion_ids(load_rewards(f"{HERE}:accuracy_per_row, {HERE}:ids_length"))
    assert not takes_completion_ids(load_rewards(f"{HERE}:accuracy_per_row, tests.rewards.test_combined:length"))
    assert takes_completion_ids(Pooled(ids_length, 2)) and takes_completion_ids(Ensemble(ids_length, NoModel()))
    assert not takes_completion_ids(Ensemble(None, NoModel())) and not takes_completion_ids(Pooled(late, 2))


def test_trl_s_own_token_rewards_run_unchanged():
    rewards = pytest.importorskip("trl.rewards")
    overlong = rewards.get_soft_overlong_punishment(max_completion_len=4, soft_punish_cache=2)
    # DAPO eq. 13 with L_max 4, L_cache 2: 0 up to 2 tokens, then (2 - len) / 2, -1 at 4
    lengths = [[7], [7, 7, 7], [7, 7, 7, 2]]
    assert score_parts(overlong, ROWS, OUTS, completion_ids=lengths).scores.tolist() == [0.0, -0.5, -1.0]
    repetition = rewards.get_repetition_penalty_reward(ngram_size=2, max_penalty=-1.0)
    # 1 - unique / total bigrams: none repeated; 1 of 4; fewer tokens than a bigram
    repeats = [[1, 2, 3, 4], [5, 5, 5, 5, 5], [7]]
    assert score_parts(repetition, ROWS, OUTS, completion_ids=repeats).scores.tolist() == [0.0, -0.75, 0.0]


def test_the_start_up_check_gives_the_stand_in_s_tokens_and_eos():
    tok, calls = char_tokenizer(), []

    def record(completions, completion_ids, **kwargs):
        calls.append(completion_ids)
        return [0.0] * len(completions)

    def fails(completion_ids, **kwargs):
        raise ValueError("too short")

    unsolved = replace(ROWS[1], solution=None)
    probe(record, [ROWS[0], unsolved], tok)  # a function that requires them is no longer refused
    eos = tok.eos_token_id
    assert calls == [[tok("ba", add_special_tokens=False)["input_ids"] + [eos], [eos]]] and len(calls[0][0]) == 3
    with pytest.raises(RewardError, match=r"^start-up check \(the row's solution as completion, not a model output; "
                                          r"completion_ids are the stand-in's tokens and EOS\): batched reward "
                                          r"function 'fails' raised on 3 rows"):
        probe(fails, ROWS, tok)
    with pytest.raises(RewardError, match="'completion_ids', which this call of score_parts was not given"):
        probe(record, ROWS)  # no tokenizer: no ids


def test_the_run_s_start_up_check_loads_a_tokenizer_only_for_a_reward_that_reads_ids(monkeypatch):
    import policyforge.train.setup as setup

    loaded = []
    monkeypatch.setattr(setup, "load_tokenizer", lambda path: loaded.append(path) or char_tokenizer())
    assert check_reward_on(accuracy_per_row, ROWS[0], ROWS[1:], model_path="builtin:tiny") == 1
    assert check_reward_on(accuracy_reward, ROWS[0], model_path="builtin:tiny") == 1  # batched: **kwargs may read them
    assert loaded == ["builtin:tiny"]
    assert check_reward_on(load_rewards(f"{HERE}:ids_length, {HERE}:accuracy_reward"), ROWS[0], ROWS[1:],
                           model_path="builtin:tiny") == 2
    assert loaded == ["builtin:tiny"] * 2


def scheduled(completions, trainer_state, log_metric, **kwargs):
    """A TRL reward with a schedule on trainer_state that logs the batch's share of long completions."""
    log_metric("frac_long", sum(len(c) > 2 for c in completions) / len(completions))
    return [trainer_state.global_step / trainer_state.max_steps] * len(completions)


def test_trainer_state_and_log_metric_inside_a_scoring_block():
    seen = []

    def kwargs_only(completions, **kwargs):  # as TRL's own functions: **kwargs gets both
        seen.append(sorted(k for k in kwargs if k in ("trainer_state", "log_metric")))
        kwargs["log_metric"]("calls", 1)
        return [0.0] * len(completions)

    with scoring(TrainerState(3, 12)) as logged:
        assert score_parts(scheduled, ROWS, ["ba", "xyz", "good"]).scores.tolist() == [0.25] * 3
        assert score_parts(scheduled, ROWS[:2], ["ba", "x"]).scores.tolist() == [0.25] * 2
        score_parts(kwargs_only, ROWS, OUTS)
        score_parts(lambda completions, answer, level: [1.0] * 3, ROWS, OUTS)  # named neither: given neither
        score_parts(lambda prompt, completion, **kw: seen.append(kw) or 1.0, ROWS[:1], OUTS)  # per row: nothing new
    assert seen == [["log_metric", "trainer_state"], ROWS[0].extra]
    assert logged.means() == {"reward_fn/calls": 1.0, "reward_fn/frac_long": pytest.approx((2 / 3 + 0) / 2)}
    # the wrappers pass it on: Combined, Pooled, Ensemble
    combined = load_rewards(f"{HERE}:scheduled, {HERE}:accuracy_reward")
    for reward in (combined, Pooled(combined, 2), Ensemble(scheduled, NoModel())):
        with scoring(TrainerState(6, 12)) as logged:
            assert score_parts(reward, ROWS, OUTS).components[:, 0].tolist() == [0.5] * 3
        assert logged.means() == {"reward_fn/frac_long": 1.0}  # OUTS are all longer than 2
    with pytest.raises(RewardError, match="requires the argument 'trainer_state'"):  # the block has ended
        score_parts(scheduled, ROWS, OUTS)


def test_the_trainer_state_is_read_only_and_names_what_it_has():
    state = TrainerState.after(2, 5, 3)  # 2 RL steps of 5 done, 3 optimiser steps each
    assert (state.global_step, state.max_steps) == (6, 15)
    with pytest.raises(AttributeError, match=r"^policyforge's trainer_state has global_step and max_steps only "
                                             r"\(not TRL's whole TrainerState\), so no 'epoch'$"):
        state.epoch
    assert getattr(state, "num_train_epochs", None) is None  # hasattr / getattr with a default work
    with pytest.raises(AttributeError):
        state.global_step = 7


def bad_metric(completions, log_metric, **kwargs):
    log_metric(kwargs["answer"][0], kwargs["level"][0])
    return [0.0] * len(completions)


def test_a_bad_metric_is_refused_naming_the_function_and_the_metric():
    line = bad_metric.__code__.co_firstlineno + 1
    where = f"(at tests/rewards/test_batched.py:{line} in bad_metric)"
    for value, shown in ((float("nan"), "nan"), (float("inf"), "inf"), ("0.5", "'0.5'"), ([1, 2], "[1, 2]"),
                         (None, "None")):
        rows = [replace(ROWS[0], extra={"answer": "frac_long", "level": value})]
        with scoring(TrainerState(0, 1)), pytest.raises(RewardError) as info:
            score_parts(bad_metric, rows, OUTS[:1])
        assert str(info.value) == (f"batched reward function 'bad_metric' logged {shown} as "
                                   f"metric 'frac_long'; log_metric takes a finite number {where}")
    rows = [replace(ROWS[0], extra={"answer": 3, "level": 1.0})]
    with scoring(TrainerState(0, 1)) as logged, pytest.raises(RewardError) as info:
        score_parts(load_rewards(f"{HERE}:bad_metric, {HERE}:accuracy_reward"), rows, OUTS[:1])
    assert str(info.value) == ("bad_metric: batched reward function 'bad_metric' called log_metric with the name 3; "
                               f"a metric's name is a string {where}")
    assert logged.means() == {}
    with scoring(TrainerState(0, 1)) as logged:  # numpy and torch scalars, ints and bools are numbers
        for value in (np.float32(0.5), torch.tensor(1.5), 2, True):
            score_parts(bad_metric, [replace(ROWS[0], extra={"answer": "x", "level": value})], OUTS[:1])
    assert logged.means() == {"reward_fn/x": 1.25}
    clash = [replace(ROWS[0], extra={"trainer_state": 1})]
    with scoring(TrainerState(0, 1)):
        assert "column 'trainer_state' has the name of TRL's trainer_state keyword" in _refused(scheduled, clash,
                                                                                               OUTS[:1])
    assert score_parts(lambda completions, trainer_state: [0.0], clash, OUTS[:1]).scores.tolist() == [0.0]


def test_the_means_are_over_every_process_s_values():
    a, b = Logged(), Logged()
    for value in (1.0, 2.0, 3.0):
        a.log_metric("f")("x", value)
    b.log_metric("f")("x", 10.0)
    b.log_metric("f")("y", -1)
    assert Logged.merged([a.totals, b.totals]).means() == {"reward_fn/x": 4.0, "reward_fn/y": -1.0}  # 16 / 4

    class TwoProcesses(World):  # process 1 logged b's values; a gather is all a mean needs
        def gather_objects(self, obj):
            return [obj, b.totals]

    assert TwoProcesses(0, 2, "cpu").logged_means(a) == {"reward_fn/x": 4.0, "reward_fn/y": -1.0}
    assert World.single().logged_means(a) == {"reward_fn/x": 2.0}


def test_the_start_up_check_passes_global_step_0_and_drops_what_is_logged():
    seen = []

    def record(completions, trainer_state, log_metric, **kwargs):
        seen.append((trainer_state.global_step, trainer_state.max_steps))
        log_metric("x", 1.0)
        return [0.0] * len(completions)

    with scoring(TrainerState(4, 8)) as outer:
        assert check_reward_on(record, ROWS[0], ROWS[1:], state=TrainerState.after(0, 4, 2)) == 1
    assert seen == [(0, 8), (0, 8)] and outer.means() == {}
    with pytest.raises(RewardError, match="^start-up check .* requires the argument 'trainer_state'"):
        check_reward_on(record, ROWS[0])  # a direct check without a state gives none
