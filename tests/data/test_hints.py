"""data/hints.py: GHPO's hint, the beginning of the reference solution added to the prompt."""

from __future__ import annotations

import pytest

from policyforge.data.chat import ChatRenderer
from policyforge.data.hints import HINT_TEMPLATE, hinted_example, hinted_text, solution_prefix
from policyforge.data.tasks import DataError, Example
from tests.data.test_chat import save_chat_model


def test_the_prefix_is_a_fraction_of_the_characters_rounded_as_python_does():
    assert [solution_prefix("abcdef", r) for r in (0.25, 0.5, 0.75, 1.0)] == ["ab", "abc", "abcd", "abcdef"]
    assert solution_prefix("abcd", 0.25) == "a" and solution_prefix("ab", 0.25) == ""  # round(0.5) is 0


def test_a_plain_prompt_gets_ghpo_s_sentence_and_the_prefix_after_it():
    ex = Example("What is 12*12?", solution="12*12 = 144", extra={"answer": "144"})
    text = hinted_text(ex, solution_prefix(ex.solution, 0.5))
    assert text == ("What is 12*12?\n The following text is the beginning part of the answer, which you can refer "
                    "to for solving the problem:\n12*12 ")
    hinted = hinted_example(ex, "12*12 ", template=" hint:{hint}")
    assert hinted.prompt == "What is 12*12? hint:12*12 " and hinted.extra == ex.extra and ex.prompt == "What is 12*12?"
    assert "{hint}" in HINT_TEMPLATE


def test_a_chat_prompt_gets_the_hint_in_its_last_user_turn_and_is_rendered_again(tmp_path):
    render = ChatRenderer(save_chat_model(tmp_path), "on", system_prompt="be brief")
    ex = render.example(Example("rev:abc=", solution="cba"))
    assert ex.prompt == "<system>be brief<user>rev:abc=<assistant>"
    hinted = hinted_example(ex, "cb", render, " hint:{hint}")
    assert hinted.prompt == "<system>be brief<user>rev:abc= hint:cb<assistant>"
    assert hinted.messages[-1] == {"role": "user", "content": "rev:abc= hint:cb"}
    assert ex.messages[-1]["content"] == "rev:abc="  # the row's own messages are left alone


def test_a_template_may_hold_other_braces_and_a_conversation_needs_a_user_turn():
    ex = Example("q", solution="abcd")
    assert hinted_text(ex, "ab", " put it in \\boxed{} after {hint}") == "q put it in \\boxed{} after ab"
    lone = Example("q", solution="abcd", messages=[{"role": "system", "content": "s"}])
    with pytest.raises(DataError, match="appends the hint to the last user message, and this conversation has none"):
        hinted_text(lone, "ab")


def test_scaf_levels_are_a_row_s_list_of_texts():
    from policyforge.data.hints import hint_levels

    assert hint_levels(Example("q", extra={"hints": ["a", "a b"]}), "hints") == ["a", "a b"]
    for bad in (None, "one text", [], ["a", ""], ["a", 3]):
        with pytest.raises(DataError, match="data.hint_column 'hints' is to hold a list of hint texts"):
            hint_levels(Example("q", extra={"hints": bad}), "hints")
    with pytest.raises(DataError, match="no column 'hintz' \\(data.hint_column\\); its columns: answer, hints"):
        hint_levels(Example("q", extra={"hints": ["a"], "answer": "b"}), "hintz")
