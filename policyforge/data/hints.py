"""Hints for prompts the policy cannot solve yet: GHPO's and Scaf-GRPO's.

GHPO ("GHPO: Adaptive Guidance for Stable and Efficient LLM Reinforcement Learning", arXiv 2507.10628; the
authors' trainer, hkgc-1/GHPO src/ghpo/ghpo_trainer.py).

A group whose G completions all fail carries no GRPO signal. GHPO then samples the whole group again from the
same prompt with the beginning of the reference solution appended to the user's turn, a fraction r of its
characters, and tries larger fractions for the groups that still fail: r = 0.25, then 0.5, then 0.75 (its code's
stages). A group that fails at the last stage keeps that stage's rows. The hinted completions replace the
group's rows, and training reads them under the hinted prompt (on-policy for that prompt; the loss is GRPO's).

The hint's wording is GHPO's (HINT_TEMPLATE, with {hint} for the solution's prefix). The prefix is cut by
characters, `round(len(solution) * r)` as the authors' code does (Python's round, halves to even).

Scaf-GRPO ("Scaf-GRPO: Scaffolded Group Relative Policy Optimization for Enhancing LLM Reasoning", arXiv
2510.19807; the authors' verl trainer, dvlab-research/Scaf-GRPO hint_mix_grpo/trainer/ray_trainer.py): the
hints are the row's own, written beforehand from least to most revealing (its data: knowledge, then planning,
then solution hints, each tier of 4 items given as its first 1, 2, 3, 4 items). For a group with no correct
completion every level is sampled at once, and the first correct completion of the least revealing level that
has one replaces one of the group's rows: the group keeps its failures beside one success under a hint.
"""

from __future__ import annotations

from dataclasses import replace

from policyforge.data.tasks import DataError, Example

HINT_TEMPLATE = ("\n The following text is the beginning part of the answer, which you can refer to for solving the "
                 "problem:\n{hint}")
HINT_RATIOS = (0.25, 0.5, 0.75)


def solution_prefix(solution: str, ratio: float) -> str:
    """The first `ratio` of `solution`'s characters."""
    return solution[: round(len(solution) * ratio)]


def hint_levels(ex: Example, column: str) -> list[str]:
    """Scaf-GRPO's hints of `ex`: its column `column`, a list of texts from least to most revealing."""
    if column not in ex.extra:
        raise DataError(f"{ex.where()}: no column {column!r} (data.hint_column); its columns: "
                        f"{', '.join(sorted(ex.extra)) or 'none besides the prompt'}")
    levels = ex.extra[column]
    if not isinstance(levels, list) or not levels or not all(isinstance(h, str) and h for h in levels):
        raise DataError(f"{ex.where()}: data.hint_column {column!r} is to hold a list of hint texts, least revealing "
                        f"first, but holds {levels!r}"[:300])
    return levels


def hinted_text(ex: Example, hint: str, template: str = HINT_TEMPLATE) -> str | list[dict]:
    """What the user turn of `ex` becomes with `hint`: its prompt text with the template holding it appended, or,
    for a prompt the chat template rendered, its messages with it appended to the last user message (to be
    rendered again)."""
    hint = template.replace("{hint}", hint)  # other braces (a \boxed{}) stay as given
    if ex.messages is None:
        return ex.prompt + hint
    messages = [dict(m) for m in ex.messages]
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise DataError(f"{ex.where()}: rollout.hints appends the hint to the last user message, and this "
                        "conversation has none")
    last_user = users[-1]
    messages[last_user]["content"] = f"{messages[last_user]['content']}{hint}"
    return messages


def hinted_example(ex: Example, hint: str, render=None, template: str = HINT_TEMPLATE) -> Example:
    """`ex` with `hint` in its prompt; `render` (a data.chat.ChatRenderer) renders hinted messages again. The
    row's columns stay, so the reward checks the completion as it would the unhinted one's."""
    text = hinted_text(ex, hint, template)
    if isinstance(text, str):
        return replace(ex, prompt=text)
    prompt, messages = render.rendered(text, ex.where())
    return replace(ex, prompt=prompt, messages=messages)
