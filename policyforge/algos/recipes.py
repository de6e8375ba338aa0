"""Recipes: a paper's whole method as the registry entries and options that make it, for names that are a
combination rather than one function (`policyforge algos dapo`)."""

from __future__ import annotations

from typing import NamedTuple


class Recipe(NamedTuple):
    flags: str  # the command-line options that set it up
    paper: str
    note: str  # what of the paper is, or is not, in those flags


RECIPES = {
    "dapo": Recipe(
        "--algo.advantage grpo --algo.loss ppo_clip --algo.loss-kwargs eps_low 0.2 eps_high 0.28 "
        "--algo.aggregation token_mean --algo.mask-truncated --rollout.dynamic-sampling accuracy",
        "DAPO: An Open-Source LLM Reinforcement Learning System at Scale (arXiv 2503.14476)",
        "clip-higher (eps_high 0.28), the token-level loss, overlong filtering (--algo.mask-truncated) and dynamic "
        "sampling (groups all right or all wrong dropped, more prompts sampled until the batch is full; at most "
        "--rollout.max-sampling-rounds rounds of --rollout.prompts-per-step prompts a step, 10 by default); no KL "
        "term, as without --algo.drift. Its soft overlong punishment, a length penalty added to the reward, is "
        "--algo.overlong-buffer B: the paper's B was 4,096 tokens of a 20,480-token budget (a fifth of "
        "--rollout.max-new-tokens)"),
}


def recipe_text(name: str) -> str:
    r = RECIPES[name]
    return f"{name} (recipe)\n\n  {r.flags}\n\n  {r.note}\n\n  paper:            {r.paper}\n"
