"""The built-in tasks: each solution checked against the prompt it answers, the exact_match verifier,
the distractor (a weak teacher's wrong answer) and the held-out split.

Expected answers are computed here from the prompt text alone (the prompt formats are "rev:WORD=",
"sort:WORD=" and "A+B="), so a generator that writes a wrong solution fails by name.
"""

import re
from collections import Counter

import pytest

from policyforge.data.tasks import BuiltinTask, DataError, distractor, exact_match


def _draw(name: str, size: int, n: int = 20) -> list:
    """Held-out and training examples of one task: both splits come from the same generator."""
    task = BuiltinTask(name, size, eval_size=n, seed=3)
    return task.held_out + [task.train_example(i) for i in range(n)]


def test_reversal_answers_are_the_prompt_word_backwards():
    for ex in _draw("reversal", 6):
        word = re.fullmatch(r"rev:([a-z]{3,6})=", ex.prompt).group(1)
        assert ex.solution == word[::-1] and ex.extra == {"answer": word[::-1]}, ex.prompt


def test_sorting_answers_are_the_prompt_letters_in_ascending_order():
    examples = _draw("sorting", 6)
    for ex in examples:
        word = re.fullmatch(r"sort:([a-j]{3,6})=", ex.prompt).group(1)
        sol = ex.solution
        # the same letters, each one no greater than the next
        assert Counter(sol) == Counter(word) and all(x <= y for x, y in zip(sol, sol[1:])), ex.prompt
        assert ex.extra == {"answer": sol}
    assert any(ex.solution != ex.prompt[5:-1] for ex in examples)  # not all drawn words were sorted already


def test_addition_answers_are_the_sum_of_the_two_operands():
    for ex in _draw("addition", 3):
        a, b = re.fullmatch(r"(\d{1,3})\+(\d{1,3})=", ex.prompt).groups()
        assert ex.solution == str(int(a) + int(b)) and ex.extra == {"answer": ex.solution}, ex.prompt


@pytest.mark.parametrize("name,size", [("reversal", 5), ("sorting", 5), ("addition", 2)])
def test_exact_match_accepts_the_answer_and_rejects_wrong_ones(name, size):
    for ex in _draw(name, size, n=10):
        ans = ex.solution
        assert exact_match(ex.prompt, ans, **ex.extra) == 1.0
        # surrounding whitespace is not part of the answer (a model may start with a space or end on a newline)
        assert exact_match(ex.prompt, " " + ans + "\n", **ex.extra) == 1.0
        for wrong in ("", ans[:-1], ans + ans[-1], ans[0] + " " + ans[1:], distractor(name, ex.prompt, ans)):
            assert exact_match(ex.prompt, wrong, **ex.extra) == 0.0, (ex.prompt, wrong)


def test_the_distractor_is_each_task_s_typical_mistake_and_never_the_answer():
    # reversal: the word copied unreversed; a palindrome (its copy would be right) is rotated instead
    assert distractor("reversal", "rev:abcd=", "dcba") == "abcd"
    assert distractor("reversal", "rev:aba=", "aba") == "baa"
    assert distractor("reversal", "rev:aaa=", "aaa") == "aaaa"  # copy and rotation are both right: one letter more
    # sorting: the letters in descending order; when that is the answer too (one letter), one more is appended
    assert distractor("sorting", "sort:cab=", "abc") == "cba"
    assert distractor("sorting", "sort:aaa=", "aaa") == "aaaa"
    # addition: the sum's last digit off by one, 9 wrapping to 0
    assert distractor("addition", "12+30=", "42") == "43"
    assert distractor("addition", "4+5=", "9") == "0"
    for name, size in (("reversal", 3), ("sorting", 3), ("addition", 1)):
        for ex in _draw(name, size, n=30):
            assert distractor(name, ex.prompt, ex.solution) != ex.solution, ex.prompt


def test_training_problems_never_repeat_a_held_out_prompt():
    # sorting with 3 letters makes only 1000 distinct prompts; 400 held out means about 4 in 10 raw draws
    # hit a held-out prompt, which train_example must skip
    task = BuiltinTask("sorting", 3, eval_size=400, seed=0)
    held = {e.prompt for e in task.held_out}
    assert len(held) == 400
    train = [task.train_example(i).prompt for i in range(300)]
    assert not held.intersection(train)


def test_a_training_problem_depends_only_on_seed_and_index():
    task = BuiltinTask("addition", 3, eval_size=20, seed=7)
    first = [task.train_example(i) for i in (5, 0, 9)]
    again = BuiltinTask("addition", 3, eval_size=20, seed=7)
    assert [again.train_example(i) for i in (9, 5, 0)] == [first[2], first[0], first[1]]  # order of calls is irrelevant
    other = BuiltinTask("addition", 3, eval_size=20, seed=8)
    assert [other.train_example(i).prompt for i in range(10)] != [task.train_example(i).prompt for i in range(10)]


def test_builtin_tasks_are_scored_with_exact_match():
    assert BuiltinTask("reversal", 4, eval_size=2).reward is exact_match


def test_a_mixture_names_its_parts_with_their_sizes():
    from policyforge.data.tasks import task_parts

    assert task_parts("reversal:4, sorting", None) == [("reversal:4", "reversal", 4), ("sorting", "sorting", 8)]
    assert task_parts("addition,sorting", 5) == [("addition", "addition", 5), ("sorting", "sorting", 5)]
    with pytest.raises(DataError, match="'division' is not a built-in task"):
        task_parts("reversal,division", None)
    with pytest.raises(DataError, match="the size after ':' is a whole number"):
        task_parts("reversal:big", None)
    with pytest.raises(DataError, match="names sorting of size 8 twice"):
        task_parts("sorting,reversal,sorting", None)


def test_a_mixture_serves_its_parts_in_turn_and_holds_each_one_s_share_out():
    from policyforge.data.tasks import MixedTask

    mix = MixedTask("reversal:3,reversal:5,sorting:4", eval_size=10)
    assert [sum(e.extra["task"] == p for e in mix.held_out) for p in mix.parts] == [4, 3, 3]
    rows = [mix.train_example(i) for i in range(300)]
    assert [r.extra["task"] for r in rows[:4]] == ["reversal:3", "reversal:5", "sorting:4", "reversal:3"]
    assert rows[4].prompt == mix.parts["reversal:5"].train_example(1).prompt and rows[4].index == 4
    held = {e.prompt for e in mix.held_out}
    assert not held & {r.prompt for r in rows}  # reversal:5 makes 3-letter words too: none of them is held out
    assert all(r.extra["answer"] == r.solution for r in rows)


def test_a_single_task_may_carry_its_size_and_entries_are_checked_one_by_one():
    from policyforge.data.tasks import builtin_task, task_parts

    one = builtin_task("reversal:4", eval_size=4)
    assert isinstance(one, BuiltinTask) and one.size == 4
    assert task_parts("reversal:03,sorting", None)[0][0] == "reversal:3"  # one name for one size
    with pytest.raises(DataError, match="names reversal of size 3 twice; to mix sizes of one task give each its own"):
        task_parts("reversal:3,reversal:03", None)
    with pytest.raises(DataError, match="names reversal of size 8 twice"):  # 8 is reversal's default size
        task_parts("reversal,reversal:8", None)
    with pytest.raises(DataError, match="data.task_size=2 is too small for reversal"):
        task_parts("reversal", 2)
    with pytest.raises(DataError, match="entry 'reversal:2': size 2 is too small for reversal"):
        task_parts("reversal:2,sorting", None)
    with pytest.raises(DataError, match="has an empty entry"):
        task_parts("reversal:4,", None)
