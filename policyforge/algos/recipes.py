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
    "critique_grpo": Recipe(
        "--rollout.refinements 1 --rollout.group-size 7 --rollout.critique ground_truth --algo.advantage dr_grpo "
        "--algo.loss ppo_clip",
        "Critique-GRPO: Advancing LLM Reasoning with Natural Language and Numerical Feedback (arXiv 2506.03106)",
        "for a group of 7 with no correct completion, each completion is critiqued, the policy answers again from a "
        "prompt holding the critique, and 1 refinement (a correct one first) joins the group; the advantage is "
        "R - group mean over the 8 (dr_grpo), the refinement's tokens take -A pi/(pi + 0.1) "
        "(--rollout.refine-shaping-gamma) as answers to the question, no KL term. ground_truth is the critique of "
        "the authors' released script (give data.solution_column as final answers); the paper's main results use "
        "a model's chain-of-thought critiques: --rollout.critique module:function"),
    "herl": Recipe(
        "--rollout.refinements 1 --rollout.refine-method herl --rollout.critique rubric "
        "--rollout.refine-shaping-gamma 1 --algo.advantage grpo --algo.loss ppo_clip "
        "--algo.loss-kwargs eps_low 0.2 eps_high 0.2 dual_clip 3",
        "Experience is the Best Teacher: Motivating Effective Exploration in Reinforcement Learning for LLMs "
        "(HeRL, arXiv 2603.20046)",
        "for a group none of whose answers meets every rubric item (the reward's components: return a dict of "
        "items, or give several functions), its best answers are shown the items they met and missed and "
        "rewritten at temperature 0.3; 1 rewrite that reaches the group's best (else a copy of its best answer) "
        "takes the place of a random row, trained under the rewrite prompt with -A r/(r + 1) "
        "(--rollout.refine-shaping-gamma: the authors' instruction-following script's; their code's default is "
        "0.1), and each rewritten answer's reward r becomes r + 0.05 (r_rewrite - r) (--rollout.hindsight-bonus, "
        "the same script's). The paper could not be read here: the rules are the authors' code's "
        "(sikelifei/HeRL), with its PPO clip 0.2 and dual-clip c = 3; its test of a failed group, best score < 1 "
        "where a score is the share of items met, is here: no answer meets every item (the reward may sum them)"),
    "dump": Recipe(
        "--data.curriculum dump",
        "DUMP: Automated Distribution-Level Curriculum Learning for RL-based LLM Post-training (arXiv 2504.09710)",
        "each prompt's distribution drawn by softmax(UCB / 0.1) of its last 300 completions' mean |advantage| "
        "(--data.curriculum-window, --data.curriculum-temperature; the authors' code's values); give the "
        "distributions with --data.distribution-column COL for a data file, or mix built-in tasks "
        "(--data.task reversal:4,reversal:8,sorting)"),
    "knapsack_rl": Recipe(
        "--rollout.allocation knapsack",
        "Knapsack RL: Unlocking Exploration of LLMs via Optimizing Budget Allocation (arXiv 2509.25849)",
        "the step's prompts_per_step x group_size rollouts shared out by each prompt's success rate when last "
        "trained on, 2 to 128 a prompt (--rollout.allocation-min-group, --rollout.allocation-max-group), with the "
        "authors' code's fallback to never-solved prompts; it acts when prompts recur, over epochs of a data file "
        "(data.path)"),
}


def recipe_text(name: str) -> str:
    r = RECIPES[name]
    return f"{name} (recipe)\n\n  {r.flags}\n\n  {r.note}\n\n  paper:            {r.paper}\n"
