"""DUMP's distribution-level curriculum (data/curriculum.py): the UCB score, the softmax weights, the windows, and
the stream that draws each prompt's distribution by them."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from policyforge.data.curriculum import (Curriculum, DistributionStream, accuracy_by_distribution,
                                         completion_abs_advantages, sampling_weights, ucb_scores)
from policyforge.data.tasks import DataError, Example


def _rows(counts: dict[str, int]) -> list[Example]:
    rows = []
    for level, n in counts.items():
        rows += [Example(f"{level}-{i}", None, {"level": level}, len(rows)) for i in range(n)]
    return rows


def test_ucb_score_is_the_learnability_plus_the_authors_exploration_bonus():
    learn, counts = torch.tensor([0.5, 0.1, 0.0], dtype=torch.float64), torch.tensor([100.0, 28.0, 0.0],
                                                                                     dtype=torch.float64)
    got = ucb_scores(learn, counts)
    want = [0.5 + math.sqrt(2 * math.log(129) / 101), 0.1 + math.sqrt(2 * math.log(129) / 29),
            math.sqrt(2 * math.log(129) / 1)]
    assert got.tolist() == pytest.approx(want, rel=1e-12)
    assert ucb_scores(torch.zeros(3), torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]  # no sample yet: no bonus


def test_weights_are_a_softmax_of_the_scores_at_the_temperature():
    scores = torch.tensor([0.3, 0.1, 0.2], dtype=torch.float64)
    got = sampling_weights(scores, 0.1)
    e = [math.exp(s / 0.1) for s in (0.3, 0.1, 0.2)]
    assert got.tolist() == pytest.approx([x / sum(e) for x in e], rel=1e-12)
    assert sampling_weights(scores, 100.0).tolist() == pytest.approx([1 / 3] * 3, abs=1e-3)  # hot: near uniform


def test_a_completion_s_absolute_advantage_is_its_mean_over_its_tokens():
    assert completion_abs_advantages(torch.tensor([-1.5, 0.5]), torch.ones(2, 3)).tolist() == [1.5, 0.5]
    adv = torch.tensor([[-1.0, -3.0, 9.0], [2.0, 2.0, 2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert completion_abs_advantages(adv, mask).tolist() == [2.0, 2.0]


def test_the_window_keeps_the_latest_completions_and_the_count_all_of_them():
    c = Curriculum(["a", "b"], window=3, temperature=0.1)
    assert c.weights().tolist() == [0.5, 0.5]  # before any step: uniform
    c.observe(["a"] * 5 + ["b"], [9.0, 9.0, 1.0, 2.0, 3.0, 0.5])
    assert c.learnability().tolist() == [2.0, 0.5] and c.counts == {"a": 5, "b": 1}
    scores = ucb_scores(torch.tensor([2.0, 0.5], dtype=torch.float64), torch.tensor([5.0, 1.0], dtype=torch.float64))
    assert c.weights().tolist() == pytest.approx(torch.softmax(scores / 0.1, -1).tolist(), rel=1e-12)


def test_a_distribution_that_teaches_more_or_was_seen_less_is_drawn_more():
    c = Curriculum(["solved", "learnable"])
    c.observe(["solved"] * 64 + ["learnable"] * 64, [0.0] * 64 + [0.8] * 64)
    w = dict(zip(c.names, c.weights().tolist()))
    assert w["learnable"] > 0.99  # tau 0.1 sharpens a gap of 0.8 in |A|
    c = Curriculum(["often", "rarely"])
    c.observe(["often"] * 300 + ["rarely"] * 8, [0.5] * 308)
    w = dict(zip(c.names, c.weights().tolist()))
    assert w["rarely"] > w["often"]  # same learnability: the exploration bonus decides


def test_the_stream_draws_each_prompt_s_distribution_by_the_weights_and_serves_its_rows_in_turn():
    stream = DistributionStream.from_rows(_rows({"easy": 6, "hard": 5}), "level", seed=0)
    stream.curriculum.observe(["easy"] * 300 + ["hard"] * 300, [0.0] * 300 + [1.0] * 300)
    got = stream.take(10, draw=0)
    assert {e.extra["level"] for e in got} == {"hard"}  # weight of easy: about e^-10
    names = [e.prompt for e in got]
    assert sorted(names[:5]) == [f"hard-{i}" for i in range(5)]  # a whole pass before any row repeats
    assert names[5:] != names[:5] and sorted(names[5:]) == sorted(names[:5])  # the next pass, reshuffled
    assert stream.positions == {"easy": 0, "hard": 10}


def test_uniform_weights_draw_every_distribution_and_the_draw_is_seeded():
    a = DistributionStream.from_rows(_rows({"x": 50, "y": 50, "z": 50}), "level", seed=3)
    b = DistributionStream.from_rows(_rows({"x": 50, "y": 50, "z": 50}), "level", seed=3)
    first = [e.prompt for e in a.take(60, draw=0)]
    assert first == [e.prompt for e in b.take(60, draw=0)]
    shares = Counter(p.split("-")[0] for p in first)
    assert set(shares) == {"x", "y", "z"} and all(10 <= n <= 30 for n in shares.values())


def test_a_stream_restored_from_its_state_draws_what_the_original_draws():
    rows = _rows({"a": 7, "b": 4})
    one = DistributionStream.from_rows(rows, "level", seed=1)
    one.take(5, 0)
    one.observe(one.take(3, 5), torch.tensor([1.0, -0.5, 0.25]), torch.ones(3, 2))
    two = DistributionStream.from_rows(rows, "level", seed=1)
    two.load_state_dict(one.state_dict())
    assert [e.prompt for e in two.take(9, 8)] == [e.prompt for e in one.take(9, 8)]
    assert two.record() == one.record()
    other = DistributionStream.from_rows(_rows({"a": 2, "c": 2}), "level")
    with pytest.raises(DataError, match=r"distributions \['a', 'b'\], the data has \['a', 'c'\]"):
        other.load_state_dict(one.state_dict())


def test_the_record_names_each_distribution_s_weight_and_learnability():
    stream = DistributionStream.from_rows(_rows({"a": 2, "b": 2}), "level")
    stream.observe(_rows({"a": 1, "b": 1}), torch.tensor([2.0, -0.5]), torch.ones(2, 1))
    rec = stream.record()
    assert rec["curriculum_abs_adv/a"] == 2.0 and rec["curriculum_abs_adv/b"] == 0.5
    assert rec["curriculum_weight/a"] + rec["curriculum_weight/b"] == pytest.approx(1.0)


def test_rows_without_a_distribution_or_with_only_one_are_refused_by_name():
    rows = _rows({"a": 2, "b": 1})
    rows[1].extra["level"], rows[1].source = None, "mix.jsonl, line 2"
    with pytest.raises(DataError, match="mix.jsonl, line 2 has no value in data.distribution_column 'level'"):
        DistributionStream.from_rows(rows, "level")
    rows[1].extra["level"] = ["a"]
    with pytest.raises(DataError, match="holds list"):
        DistributionStream.from_rows(rows, "level")
    with pytest.raises(DataError, match="every training row has the same 'level' value"):
        DistributionStream.from_rows(_rows({"only": 3}), "level")


def test_levels_that_are_numbers_name_their_distributions_as_text():
    rows = [Example(f"p{i}", None, {"level": i % 2}, i) for i in range(4)]
    assert DistributionStream.from_rows(rows, "level").names == ["0", "1"]


def test_held_out_accuracy_per_distribution():
    rows = _rows({"a": 2, "b": 3})
    got = accuracy_by_distribution(rows, [True, False, True, True, False], "level")
    assert got == {"accuracy/a": 0.5, "accuracy/b": pytest.approx(2 / 3)}


def test_a_missing_column_is_named_with_the_row_s_columns():
    with pytest.raises(DataError, match="row 0 has no column 'lvl' .*its columns: level"):
        DistributionStream.from_rows(_rows({"a": 1, "b": 1}), "lvl")


def test_a_split_that_leaves_a_distribution_untrained_or_unmeasured_is_noted():
    from policyforge.data.curriculum import split_notes

    held, train = _rows({"a": 2, "b": 1}), _rows({"b": 3, "c": 2})
    notes = split_notes(held, train, "level")
    assert len(notes) == 2 and "'a' ('level') is held out but has no training rows" in notes[0]
    assert "'c' ('level') has no held-out" in notes[1] and "shuffle the file" in notes[1]
    assert "add its rows to data.eval_path" in split_notes(held, train, "level", eval_file=True)[1]
    assert split_notes([], train, "level") == []  # nothing held out at all: no accuracy is expected
