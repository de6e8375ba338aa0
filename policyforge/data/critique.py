"""Critique-GRPO's critiques and refinement prompts ("Critique-GRPO: Advancing LLM Reasoning with Natural Language
and Numerical Feedback", Zhang et al. 2025, arXiv 2506.03106; the authors' code, zhangxy-2019/critique-GRPO).

When none of a group's completions is correct, each one gets a critique in words, the policy answers again with
the question, its answer and the critique in its prompt, and k of those refinements join the group (correct ones
first). The paper's three kinds of critique: "indicative" (only that the answer is wrong), "ground_truth" (that it
is wrong and what the right final answer is; the authors' released script uses this one) and a model's
chain-of-thought critique (its main results: GPT-4o's); the last is a critic function of your own here
(rollout.critique 'module:function', called fn(prompt, completion, reward, **columns) -> str).

The wording below is this project's own, kept to the characters the built-in tokenizer reads (lower case, no
newline); give rollout.refine_template for a model that reads more (its {question}, {response}, {critique}).
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Sequence

from policyforge.data.tasks import DataError, Example

CRITIQUES = ("indicative", "ground_truth")  # rollout.critique's built-in kinds; else 'module:function'
INDICATIVE = "the answer is incorrect."
GROUND_TRUTH = "the answer is incorrect; the correct answer is {answer}."
REFINE_TEMPLATE = "{question} previous answer: {response} critique: {critique} answer again, fixing what is wrong: "


def built_in_critique(kind: str, ex: Example) -> str:
    """The critique of an incorrect answer to `ex`: "indicative" or "ground_truth" (the row's reference solution,
    data.solution_column; a built-in task's answer)."""
    if kind == "indicative":
        return INDICATIVE
    if ex.solution is None:
        raise DataError(f"rollout.critique ground_truth names the right answer, but {ex.where()} has no reference "
                        "solution: set data.solution_column, or use rollout.critique indicative")
    return GROUND_TRUTH.replace("{answer}", ex.solution)


def refine_text(ex: Example, response: str, critique: str, template: str = REFINE_TEMPLATE) -> str | list[dict]:
    """The prompt a refinement is sampled from: `template` with the question, the answer and its critique; for a
    prompt the chat template rendered, its messages with the last user message so filled in (to be rendered
    again)."""
    def filled(question: str) -> str:  # one pass, so braces in the texts (a \\boxed{}) stay as they are
        parts = {"{question}": question, "{response}": response, "{critique}": critique}
        out, i = [], 0
        while i < len(template):
            key = next((k for k in parts if template.startswith(k, i)), None)
            out.append(parts[key] if key else template[i])
            i += len(key) if key else 1
        return "".join(out)

    if ex.messages is None:
        return filled(ex.prompt)
    messages = [dict(m) for m in ex.messages]
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise DataError(f"{ex.where()}: a refinement prompt fills in the last user message, and this conversation "
                        "has none")
    messages[users[-1]]["content"] = filled(messages[users[-1]]["content"])
    return messages


def refine_example(ex: Example, response: str, critique: str, template: str = REFINE_TEMPLATE,
                   render=None) -> Example:
    """`ex` with its prompt turned into the refinement prompt (`render`, a data.chat.ChatRenderer, renders chat
    messages again); its columns stay, so the reward checks the refinement as an answer to the question."""
    text = refine_text(ex, response, critique, template)
    if isinstance(text, str):
        return replace(ex, prompt=text)
    prompt, messages = render.rendered(text, ex.where())
    return replace(ex, prompt=prompt, messages=messages)


def chosen_refinements(solved: Sequence[bool], k: int, rng: random.Random) -> list[int]:
    """Which k of a group's refinements join it: correct ones first, then others, each kind in a random order (the
    paper: prefer correct refinements, pick at random when none is)."""
    right = [i for i, ok in enumerate(solved) if ok]
    wrong = [i for i, ok in enumerate(solved) if not ok]
    rng.shuffle(right)
    rng.shuffle(wrong)
    return (right + wrong)[:k]
