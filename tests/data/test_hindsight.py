"""HeRL's rules (data/hindsight.py): rubric items met, the hindsight text, which answers are rewritten, which rewrites
join a group, the bonus, and the rows they replace."""

from __future__ import annotations

import random

import pytest
import torch

from policyforge.data import hindsight as he


def test_each_component_but_a_reward_model_s_is_a_rubric_item_met_at_one():
    names = ("correct", "reward_model", "first_letter")
    comps = torch.tensor([[1.0, 5.0, 0.5], [1.0, -3.0, 1.0], [0.0, 0.0, 2.0]])
    assert he.rubric_items(names) == [0, 2]
    assert he.rubric_met(comps, names).tolist() == [[True, False], [True, True], [False, True]]
    assert he.rubric_solved(comps, names).tolist() == [False, True, False]


def test_the_hindsight_names_the_items_met_and_missed():
    names = ("correct", "right_length", "first_letter")
    assert he.rubric_critique([False, True, False], names) == "met: right length. unmet: correct, first letter."
    assert he.rubric_critique([False, False, False], names) == "met: none. unmet: correct, right length, first letter."
    assert he.rubric_critique([True, True, True], names).endswith("unmet: none.")


def test_the_answers_tied_with_the_best_are_rewritten_most_items_met_first():
    assert he.candidates([2.0, 3.0, 3.0, 3.0 - 1e-9, 1.0], [1, 2, 4, 3, 0]) == [2, 3, 1]
    assert he.candidates([1.0] * 20, [0] * 20) == list(range(16))  # at most 16, row order among equals
    assert he.candidates([1.0] * 5, [0] * 5, limit=2) == [0, 1]


def test_the_bonus_moves_a_reward_a_twentieth_of_the_way_to_its_rewrite_s():
    assert he.bonus(2.0, 4.0) == pytest.approx(0.1)
    assert he.bonus(2.0, 1.0) == pytest.approx(-0.05)  # a worse rewrite costs a little
    assert he.bonus(2.0, 4.0, alpha=0.0) == 0.0


def test_rewrites_that_beat_the_best_join_first_then_those_that_equal_it():
    scores = [3.0, 5.0, 4.0, 2.0, 4.0]
    assert he.chosen_rewrites(scores, best=4.0, k=1) == [1]
    assert he.chosen_rewrites(scores, best=4.0, k=3) == [1, 2, 4]
    assert he.chosen_rewrites(scores, best=4.0, k=9) == [1, 2, 4]  # never one below the best
    assert he.chosen_rewrites(scores, best=6.0, k=2) == []


def test_the_best_answers_come_by_score_then_items_met_then_row_order():
    assert he.best_answers([1.0, 3.0, 3.0, 2.0, 3.0], [0, 1, 2, 0, 1]) == [2, 1, 4, 3, 0]


def test_the_replaced_rows_are_k_distinct_rows_drawn_by_the_seeded_stream():
    slots = he.replaced_rows(8, 3, random.Random("s"))
    assert len(set(slots)) == 3 and all(0 <= s < 8 for s in slots) and slots == sorted(slots)
    assert slots == he.replaced_rows(8, 3, random.Random("s"))
    assert he.replaced_rows(4, 4, random.Random(0)) == [0, 1, 2, 3]
