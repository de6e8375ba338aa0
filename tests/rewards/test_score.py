"""Scoring with number and dict rewards: sums, components, and errors that name the row."""

import time

import pytest
import torch

from policyforge.data.tasks import Example
from policyforge.rewards.score import Pooled, RewardError, score, score_parts

EXAMPLES = [Example("p0", index=0), Example("p1", index=1), Example("p2", index=2)]
TEXTS = ["a", "bb", "ccc"]


def two_parts(prompt, completion, **_):
    return {"correct": float(completion == "bb"), "length": 0.5 * len(completion)}


def test_number_reward_has_no_components():
    out = score_parts(lambda p, c: float(len(c)), EXAMPLES, TEXTS)
    assert out.scores.tolist() == [1.0, 2.0, 3.0]
    assert out.components is None and out.names == ()
    assert torch.equal(score(lambda p, c: float(len(c)), EXAMPLES, TEXTS), out.scores)


def test_dict_reward_is_summed_and_keeps_its_components():
    out = score_parts(two_parts, EXAMPLES, TEXTS)
    assert out.names == ("correct", "length")
    assert out.components.dtype == torch.float32 and out.components.shape == (3, 2)
    assert out.components.tolist() == [[0.0, 0.5], [1.0, 1.0], [0.0, 1.5]]
    assert out.scores.tolist() == [0.5, 2.0, 1.5]
    assert torch.equal(score(two_parts, EXAMPLES, TEXTS), out.scores)


def test_components_follow_the_first_rows_key_order():
    def shuffled(prompt, completion):
        return {"a": 1.0, "b": 2.0} if completion == "a" else {"b": 20.0, "a": 10.0}

    out = score_parts(shuffled, EXAMPLES, TEXTS)
    assert out.names == ("a", "b") and out.components.tolist() == [[1.0, 2.0], [10.0, 20.0], [10.0, 20.0]]


def test_mismatched_keys_name_the_row_and_both_key_sets():
    def drifting(prompt, completion):
        return {"correct": 1.0, "length": 1.0} if completion != "bb" else {"correct": 1.0, "style": 1.0}

    with pytest.raises(RewardError, match=r"keys \['correct', 'style'\] for row 1; expected keys "
                                          r"\['correct', 'length'\] \(those of row 0\)"):
        score_parts(drifting, EXAMPLES, TEXTS)


def test_number_then_dict_and_dict_then_number_are_refused():
    with pytest.raises(RewardError, match="dict with keys \\['x'\\] for row 1 but a number for row 0"):
        score_parts(lambda p, c: 1.0 if c == "a" else {"x": 1.0}, EXAMPLES, TEXTS)
    with pytest.raises(RewardError, match="returned 1.0 for row 1; expected keys \\['x'\\]"):
        score_parts(lambda p, c: {"x": 1.0} if c == "a" else 1.0, EXAMPLES, TEXTS)


def test_nan_component_names_the_row_and_the_component():
    def nan_format(prompt, completion):
        return {"correct": 1.0, "format": float("nan") if completion == "ccc" else 0.0}

    with pytest.raises(RewardError, match="returned nan for component 'format' of row 2 .*must be finite"):
        score(nan_format, EXAMPLES, TEXTS)


def test_non_number_component_and_empty_dict():
    with pytest.raises(RewardError, match="returned 'yes' for component 'ok' of row 0; expected a number"):
        score_parts(lambda p, c: {"ok": "yes"}, EXAMPLES, TEXTS)
    with pytest.raises(RewardError, match="empty dict for row 0"):
        score_parts(lambda p, c: {}, EXAMPLES, TEXTS)


def test_number_reward_errors_are_unchanged():
    with pytest.raises(RewardError, match="returned nan for row 0 \\(prompt 'p0'\\); rewards must be finite"):
        score(lambda p, c: float("nan"), EXAMPLES, TEXTS)
    with pytest.raises(RewardError, match="returned None for row 0; expected a number"):
        score(lambda p, c: None, EXAMPLES, TEXTS)
    with pytest.raises(RewardError, match="raised on row 1 .*ZeroDivisionError"):
        score(lambda p, c: 1 / 0 if c == "bb" else 1.0, EXAMPLES, TEXTS)


def test_scored_to_moves_both_tensors():
    out = score_parts(two_parts, EXAMPLES, TEXTS).to("cpu")
    assert out.scores.device.type == "cpu" and out.components.device.type == "cpu"
    scores, comps, names = out  # unpacks like a tuple, as the loop does
    assert names == ("correct", "length")


def test_the_example_dict_reward_loads_and_scores():
    from policyforge.rewards.score import load_reward_fn

    fn = load_reward_fn("examples.my_rewards:exact_and_length")
    rows = [Example("rev:ab=", extra={"target": "ba"}, index=0), Example("rev:cd=", extra={"target": "dc"}, index=1)]
    out = score_parts(fn, rows, ["ba", "xyz"])
    assert out.names == ("correct", "length") and out.components.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert out.scores.tolist() == [2.0, 0.0]


def test_a_correct_component_decides_what_counts_as_solved():
    from policyforge.rewards.score import is_correct

    scores = torch.tensor([1.0, 1.5, 0.5])
    comps = torch.tensor([[0.0, 1.0], [1.0, 0.5], [0.0, 0.5]])
    # partial credit (row 0: wrong answer, full format bonus) sums to 1 but is not a solution
    assert is_correct(scores, comps, ("correct", "format")).tolist() == [False, True, False]
    # without a "correct" component the sum decides, as for number rewards
    assert is_correct(scores, comps, ("a", "b")).tolist() == [True, True, False]
    assert is_correct(scores, None, ()).tolist() == [True, True, False]


def test_text_that_looks_like_a_number_is_refused():
    with pytest.raises(RewardError, match="returned '1.0' for row 0; expected a number, not text"):
        score(lambda p, c: "1.0", EXAMPLES, TEXTS)


def test_a_reward_module_that_fails_on_import_is_one_error(tmp_path, monkeypatch):
    from policyforge.rewards.score import load_reward_fn

    (tmp_path / "broken_reward_mod.py").write_text("def score(p, c):\n    return 1.0\ndef broken(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RewardError, match="importing module 'broken_reward_mod' raised SyntaxError"):
        load_reward_fn("broken_reward_mod:score")


def test_names_a_reward_cannot_load_say_why():
    from policyforge.rewards.score import load_reward_fn

    with pytest.raises(RewardError, match="defined in the script that started the run, which only that script can "
                                          r"import: resume from it \(train\(cfg, resume=RUN_DIR\)\)"):
        load_reward_fn("__main__:my_score")
    with pytest.raises(RewardError, match="has no function 'exact examples.my_rewards:brief' \\(several functions "
                                          "are separated by commas\\)"):
        load_reward_fn("examples.my_rewards:exact examples.my_rewards:brief")


def test_an_int_beyond_float_range_is_one_reward_error():
    with pytest.raises(RewardError, match=r"returned 1000000000\d*\.\.\. for row 0; expected a number"):
        score(lambda p, c: 10**400, EXAMPLES, TEXTS)


def test_pooled_rows_are_scored_at_once_with_the_same_values_and_errors():
    import threading

    from policyforge.data.tasks import Example
    from policyforge.rewards.score import Pooled

    meet = threading.Barrier(4, timeout=10)  # returns only when 4 calls are in flight together

    def waits(prompt, completion, **_):
        meet.wait()
        return {"len": float(len(completion)), "a": float(completion.count("a"))}

    exs = [Example(f"p{i}", None, {}, i) for i in range(8)]
    outs = ["a" * i + "b" for i in range(8)]
    pooled = score_parts(Pooled(waits, 4), exs, outs)
    meet.reset()
    alone = score_parts(lambda p, c, **_: {"len": float(len(c)), "a": float(c.count("a"))}, exs, outs)
    assert pooled.names == alone.names and torch.equal(pooled.components, alone.components)
    assert torch.equal(pooled.scores, alone.scores)

    def fails_from_row_5(prompt, completion, **_):
        if int(prompt[1:]) >= 5:
            raise ZeroDivisionError("no")
        return 1.0

    with pytest.raises(RewardError, match="raised on row 5 "):  # the first failing row in order, as row by row
        score_parts(Pooled(fails_from_row_5, 4), exs, outs)


CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "rev:abc="}]
RENDERED = Example("<system>be brief<user>rev:abc=<assistant>", "cba", {"answer": "cba"}, 0, messages=CHAT)
PLAIN = Example("rev:dog=", "god", {"answer": "god"}, 1)


def test_a_rendered_row_gives_its_messages_to_a_function_that_can_take_them():
    seen = []

    def named(prompt, completion, answer, prompt_messages=None):
        seen.append(("named", prompt, answer, prompt_messages))
        return 1.0

    def keywords(prompt, completion, **kw):
        seen.append(("keywords", prompt, kw))
        return 1.0

    score(named, [RENDERED, PLAIN], ["cba", "god"])
    score(keywords, [RENDERED, PLAIN], ["cba", "god"])
    assert seen == [("named", RENDERED.prompt, "cba", CHAT), ("named", "rev:dog=", "god", None),
                    ("keywords", RENDERED.prompt, {"answer": "cba", "prompt_messages": CHAT}),
                    ("keywords", "rev:dog=", {"answer": "god"})]  # a row that was not rendered: no such keyword


def test_a_function_that_cannot_take_the_messages_keeps_working_without_them():
    def older(prompt, completion, answer):  # written before the keyword existed: it would raise TypeError
        return float(completion == answer)

    assert score(older, [RENDERED, PLAIN], ["cba", "dog"]).tolist() == [1.0, 0.0]
    assert score_parts(Pooled(older, 2), [RENDERED, PLAIN], ["cba", "dog"]).scores.tolist() == [1.0, 0.0]


def test_which_signatures_take_the_messages():
    from policyforge.rewards.score import takes_messages

    class Scorer:  # a callable object: its __call__'s signature, without self
        def __call__(self, prompt, completion, *, prompt_messages):
            return 1.0

    assert takes_messages(lambda prompt, completion, prompt_messages: 1.0)
    assert takes_messages(lambda prompt, completion, **_: 1.0)
    assert takes_messages(Scorer())
    assert not takes_messages(lambda prompt, completion, answer=None: 1.0)
    assert not takes_messages(lambda prompt, completion, prompt_messages, /: 1.0)  # positional only: not by name
    assert not takes_messages(max)  # a built-in whose signature cannot be read is not given it


def test_a_function_editing_its_messages_changes_nothing_for_the_next_call():
    def edits(prompt, completion, prompt_messages, **_):
        n = len(prompt_messages)
        prompt_messages.append({"role": "assistant", "content": completion})
        prompt_messages[0]["content"] = "changed"
        return float(n)

    assert score(edits, [RENDERED, RENDERED], ["a", "b"]).tolist() == [2.0, 2.0]
    assert RENDERED.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "rev:abc="}]


def test_a_column_with_the_keyword_s_name_is_refused_not_overwritten():
    from dataclasses import replace

    clash = replace(RENDERED, extra={"prompt_messages": "my column"})
    with pytest.raises(RewardError, match="row 0 has a column 'prompt_messages', the keyword its rendered prompt's "
                                          "messages are passed by: rename the column"):
        score(lambda prompt, completion, **_: 1.0, [clash], ["x"])
    # a row that was not rendered passes its column as it always did
    seen = []
    score(lambda prompt, completion, **kw: seen.append(kw) or 1.0, [replace(clash, messages=None)], ["x"])
    assert seen == [{"prompt_messages": "my column"}]


def test_ctrl_c_while_rows_score_in_threads_cancels_the_rest_and_says_what_still_runs(capsys):
    import threading

    from policyforge.rewards.score import Pooled

    started, release = [], threading.Event()

    def interrupted_on_row_0(prompt, completion, **_):
        row = int(prompt[1:])
        started.append(row)
        if row == 0:  # stands for Ctrl-C: the main thread receives it from this row's result
            raise KeyboardInterrupt
        release.wait(10)  # row 1, the other worker's, is still running when the interrupt arrives
        return 1.0

    exs = [Example(f"p{i}", None, {}, i) for i in range(8)]
    with pytest.raises(KeyboardInterrupt):
        score_parts(Pooled(interrupted_on_row_0, 2), exs, ["x"] * 8)
    said = capsys.readouterr().err
    running = len(started) - 1  # row 1, and row 2 where row 0's worker took it before the cancel
    release.set()
    assert f"waiting for the {running} reward call(s) already running" in said and "Ctrl-C again" in said
    time.sleep(0.2)  # a row left queued would have started by now
    assert {0, 1} <= set(started) <= {0, 1, 2}  # rows 3-7 were cancelled before they started
