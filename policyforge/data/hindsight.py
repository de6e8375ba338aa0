"""HeRL's rules: which answers get hindsight, the rubric they are shown, which rewrites join the group and the
bonus the rewritten answers earn ("Experience is the Best Teacher: Motivating Effective Exploration in
Reinforcement Learning for LLMs", Zhang et al. 2026, arXiv 2603.20046; code: sikelifei/HeRL).

The paper's body could not be read from here; every rule and constant below is the authors' released code's
(its ray_trainer's rewrite step and core_algos' mixpolicy loss, with the values of its instruction-following
script), said at each. Pure functions: train/hindsight.py applies them in the RL step.

A rubric is a reward with several named components (a dict reward, or several reward functions): each component
is one rubric item, met when its value is >= 1 (the code's is_following flags); a reward model's share is no
item. An answer's hindsight is the list of the items it met and the items it missed. The code's test of a failed
group, best score < 1 where a score is the share of items met, is here "no answer meets every item", which says
the same of a reward that sums its items (or weighs them); with another critique, no answer is solved
(rewards.score.is_correct: a score >= 1, or a `correct` component at 1).
"""

from __future__ import annotations

import random
from typing import Sequence

import torch

from policyforge.rewards.score import MODEL_COMPONENT

TEMPERATURE = 0.3  # the rewrite is sampled at this temperature (the authors' rewrite_he.temperature)
CANDIDATE_LIMIT = 16  # at most this many of a group's answers are rewritten (candidate_limit)
TIE = 1e-6  # scores within this of each other are tied (the code's tolerance)
BONUS = 0.05  # alpha of the bonus r + alpha (r_rewrite - r) (reward_shaping_alpha)


def rubric_items(names: Sequence[str]) -> list[int]:
    """The columns of a reward's components that are rubric items: all but a reward model's share."""
    return [k for k, name in enumerate(names) if name != MODEL_COMPONENT]


def rubric_met(components: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """(B, K) bool: which rubric items each row met (its component >= 1), K = len(rubric_items(names))."""
    return components[:, rubric_items(names)] >= 1.0


def rubric_solved(components: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """(B,) bool: the rows that met every rubric item (HeRL's groups with such a row get no hindsight)."""
    return rubric_met(components, names).all(-1)


def item_words(name: str) -> str:
    """A component name as the words of a rubric item: 'first_letter' -> 'first letter'."""
    return name.replace("_", " ").strip()


def rubric_critique(met: Sequence[bool], names: Sequence[str]) -> str:
    """The hindsight an answer is shown: the rubric items it met and those it missed, by name ('none' for an
    empty list). The authors' prompt lists a satisfied and an unmet list the same way; the wording is ours."""
    items = [names[k] for k in rubric_items(names)]
    said = [item_words(n) for n, ok in zip(items, met) if ok] or ["none"]
    missed = [item_words(n) for n, ok in zip(items, met) if not ok] or ["none"]
    return f"met: {', '.join(said)}. unmet: {', '.join(missed)}."


def candidates(scores: Sequence[float], met_counts: Sequence[int], limit: int = CANDIDATE_LIMIT) -> list[int]:
    """Which answers of a group with no full marks are rewritten: those tied with the group's best score (the
    best of what failed, not the worst), most rubric items met first, at most `limit`."""
    best = max(scores)
    tied = [i for i, s in enumerate(scores) if s >= best - TIE]
    return sorted(tied, key=lambda i: -met_counts[i])[:limit]


def bonus(score: float, rewrite_score: float, alpha: float = BONUS) -> float:
    """What a rewritten answer's reward gains: alpha (r_rewrite - r), r_rewrite the best score of its rewrites.
    Negative when the rewrite scored lower: an answer that hindsight cannot mend loses a little."""
    return alpha * (rewrite_score - score)


def chosen_rewrites(rewrite_scores: Sequence[float], best: float, k: int) -> list[int]:
    """Which of a group's rewrites join it: those that beat the group's best answer, then those that equal it,
    higher scores first, at most k; none when no rewrite reaches the best answer (the code compares exactly)."""
    by_score = sorted(range(len(rewrite_scores)), key=lambda i: -rewrite_scores[i])
    above = [i for i in by_score if rewrite_scores[i] > best]
    level = [i for i in by_score if rewrite_scores[i] == best]
    return (above + level)[:k]


def best_answers(scores: Sequence[float], met_counts: Sequence[int]) -> list[int]:
    """A group's answers by score, then by rubric items met, best first (ties in row order): when fewer than k
    rewrites join a group, copies of its best answers fill the remaining places (the code's fallback, which
    keeps k rows of the group on its best)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], -met_counts[i]))


def replaced_rows(n: int, k: int, rng: random.Random) -> list[int]:
    """Which k of a group's n answers the joining rows take the place of, at random (the code keeps the group's
    size: a rewrite replaces an answer, and the rewritten answer itself may be the one replaced)."""
    slots = list(range(n))
    rng.shuffle(slots)
    return sorted(slots[:k])
