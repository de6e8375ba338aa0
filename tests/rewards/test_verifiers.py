"""The ready-made verifiers: answers found where models put them, equal values accepted in any spelling,
different ones refused, and the reference column named when missing."""

import pytest

from policyforge.rewards.score import RewardError, load_reward_fn
from policyforge.rewards.verifiers import exact, final_answer, math_answer, think_answer_format


@pytest.mark.parametrize("text, answer", [
    ("so it is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("first \\boxed{3}, then corrected: \\boxed{4}", "4"),  # the last box
    ("nested \\boxed{\\frac{a}{b+\\sqrt{2}}}", "\\frac{a}{b+\\sqrt{2}}"),  # braces balanced
    ("48/2 = 24 clips\n#### 72", "72"),  # GSM8K
    ("The answer is 42 because 6 x 7", "42"),
    ("Answer: blue.", "blue"),
    ("3 apples and then 7", "7"),  # the last number
    ("no number here", ""),
])
def test_final_answer_is_found_where_models_put_it(text, answer):
    assert final_answer(text) == answer


@pytest.mark.parametrize("completion, reference", [
    ("\\boxed{0.5}", "\\frac{1}{2}"), ("#### 1,000", "1000"), ("The answer is 1000.0", "1,000"),
    ("answer: $\\dfrac{3}{4}$.", "3/4"), ("so 50%", "50"), ("\\boxed{x + 1}", "x+1"), ("\\boxed{-2}", "-2"),
    ("we get 72", "Natalia sold 48/2 = 24 clips in May.\n#### 72"),  # a GSM8K solution as the reference
    ("\\boxed{\\left(1,2\\right)}", "(1,2)"),
    ("The answer is: 42", "42"), ("Final answer: **42**", "42"), ("The answer isn't obvious; we get 42.", "42"),
    ("\\boxed{50\\%}", "50"), ("\\boxed{\\$18}", "18"), ("we used step-2", "2"), ("x is -.5", "-1/2"),
    ("\\boxed{\\frac{-1}{2}}", "-\\frac{1}{2}"),
])
def test_equal_answers_in_other_spellings_are_solved(completion, reference):
    assert math_answer("q", completion, answer=reference) == 1.0


@pytest.mark.parametrize("completion, reference", [
    ("\\boxed{0.51}", "\\frac{1}{2}"), ("#### 100", "1000"), ("The answer is 41", "42"), ("", "0"),
    ("\\boxed{x+2}", "x+1"), ("\\boxed{2}", "-2"), ("no answer", "no"),
    ("\\boxed{123456789013}", "123456789012"),  # exact: no float rounding makes these equal
    ("it is " + "9" * 320, "5"),  # beyond float's range: just wrong, not an error
    ("\\boxed{1,2}", "12"), ("\\boxed{1, 2, 3}", "123"),  # a pair or a list, not thousands
])
def test_different_answers_are_not(completion, reference):
    assert math_answer("q", completion, answer=reference) == 0.0


def test_the_reference_comes_from_answer_then_solution_then_target():
    assert exact("q", " 7 ", answer="7", solution="8") == 1.0
    assert exact("q", "8", solution="8", target="9") == 1.0
    assert exact("q", "9", target="9") == 1.0
    with pytest.raises(RewardError, match="none of the columns answer, solution, target \\(it has: question\\)"):
        exact("q", "9", question="?")


def test_think_answer_format():
    assert think_answer_format("q", "<think>add\nthem</think>\n<answer>3</answer>") == 1.0
    assert think_answer_format("q", "<think>x</think> and <answer>3</answer>") == 0.0  # text between
    assert think_answer_format("q", "<answer>3</answer>") == 0.0
    assert think_answer_format("q", "<think>x</think><answer>3</answer> more") == 0.0
    # each tag exactly once: a second round, or a stray closing tag, is not the format
    assert think_answer_format("q", "<think>a</think><answer>1</answer><think>b</think><answer>2</answer>") == 0.0
    assert think_answer_format("q", "<think>a</think><answer>1</answer> junk </answer>") == 0.0


def test_they_load_by_name_as_data_reward():
    assert load_reward_fn("policyforge.rewards.verifiers:math_answer")("q", "\\boxed{2}", answer="2") == 1.0
