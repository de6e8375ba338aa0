"""Critique-GRPO's critiques, refinement prompts and the choice of refinements (data/critique.py)."""

from __future__ import annotations

import random

import pytest

from policyforge.data.critique import (GROUND_TRUTH, INDICATIVE, REFINE_TEMPLATE, built_in_critique,
                                       chosen_refinements, refine_example, refine_text)
from policyforge.data.tasks import DataError, Example
from policyforge.models.tiny import CHARSET


def test_the_built_in_critiques_say_the_answer_is_wrong_and_the_ground_truth_names_the_answer():
    ex = Example("rev:abc=", "cba", {"answer": "cba"}, 0)
    assert built_in_critique("indicative", ex) == INDICATIVE
    assert built_in_critique("ground_truth", ex) == "the answer is incorrect; the correct answer is cba."
    with pytest.raises(DataError, match="row 3 has no reference solution"):
        built_in_critique("ground_truth", Example("p", None, {}, 3))


def test_the_default_wording_reads_with_the_built_in_tokenizer():
    for text in (INDICATIVE, GROUND_TRUTH.replace("{answer}", ""), REFINE_TEMPLATE.replace("{question}", "")
                 .replace("{response}", "").replace("{critique}", "")):
        assert set(text) <= set(CHARSET), text


def test_the_refinement_prompt_holds_question_answer_and_critique_once_each():
    ex = Example("q {critique} \\boxed{x}", "s", {}, 0)
    text = refine_text(ex, "my {question}", "bad {response}", "Q:{question} A:{response} C:{critique}")
    assert text == "Q:q {critique} \\boxed{x} A:my {question} C:bad {response}"  # braces inside the texts stay
    assert refine_example(ex, "a", "c").prompt == REFINE_TEMPLATE.format(question=ex.prompt, response="a",
                                                                         critique="c")


def test_a_chat_prompt_has_its_last_user_message_filled_in():
    ex = Example("rendered", None, {}, 0, messages=[{"role": "system", "content": "be brief"},
                                                    {"role": "user", "content": "2+2?"}])
    got = refine_text(ex, "5", "wrong", "{question} you said {response}; {critique}")
    assert got == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2? you said 5; wrong"}]
    assert ex.messages[1]["content"] == "2+2?"  # the row's own messages are untouched
    with pytest.raises(DataError, match="has none"):
        refine_text(Example("x", None, {}, 0, messages=[{"role": "assistant", "content": "hi"}]), "a", "c")


def test_correct_refinements_are_chosen_first_and_the_rest_at_random():
    solved = [False, True, False, True, False]
    picks = chosen_refinements(solved, 3, random.Random(0))
    assert sorted(picks[:2]) == [1, 3] and picks[2] in (0, 2, 4)
    assert chosen_refinements(solved, 3, random.Random(0)) == picks  # seeded: a resume picks the same
    assert len({chosen_refinements([False] * 4, 1, random.Random(seed))[0] for seed in range(20)}) > 1  # at random
    assert chosen_refinements([True, False], 5, random.Random(0)) == [0, 1]  # fewer than k: all of them
