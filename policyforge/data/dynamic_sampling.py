"""Dynamic sampling (DAPO: "DAPO: An Open-Source LLM Reinforcement Learning System at Scale", arXiv 2503.14476,
section 3.2 and Algorithm 1): keep sampling prompts until the batch is full of groups that teach something.

A group whose completions all score alike has zero group-relative advantage, so it adds no gradient and only
shrinks the batch's effective size. DAPO's objective adds the constraint (its eq. 11)

    0 < |{o_i : is_equivalent(a, o_i)}| < G

(neither all G completions right nor all wrong); its Algorithm 1 samples a batch of prompts, drops the groups
that break the constraint into nothing, adds the rest to a buffer and samples again until the buffer holds N
groups. Two criteria are offered: "accuracy" is eq. 11 (a completion is right when rewards.score.is_correct
says so), "reward" keeps a group whose training rewards (with DAPO's overlong penalty, when on) are not all
equal: exactly the groups with a non-zero GRPO advantage, whatever the reward's scale.

When a batch is over-full, the first N informative groups in sampling order are kept (verl does the same);
when the sampling rounds run out first, groups that break the constraint fill the batch up, earliest first,
so that every step trains on N groups (verl stops the run with an error there instead).
"""

from __future__ import annotations

from torch import Tensor

from policyforge.algos.grouping import group_max

MODES = ("off", "reward", "accuracy")  # rollout.dynamic_sampling
VERL_METRICS = {"acc": "accuracy", "score": "reward", "seq_reward": "reward",
                "seq_final_reward": "reward"}  # verl's filter_groups.metric -> the mode here


def informative_rows(values: Tensor, group: Tensor) -> Tensor:
    """(B,) bool: the rows whose group's `values` (rewards, or 0/1 correctness) are not all equal."""
    values = values.float()
    return group_max(values, group) + group_max(-values, group) > 0  # max - min within the group


def chosen_groups(informative: list[bool], target: int) -> tuple[list[int], int]:
    """Which of the groups sampled so far (`informative[g]`: group g, in sampling order, passes) make a batch of
    `target` groups, in sampling order, and how many of them fill in for want of informative ones.

    The first `target` informative groups; when there are fewer, the earliest uninformative ones fill the rest.
    """
    if target > len(informative):
        raise ValueError(f"a batch of {target} groups cannot be made from {len(informative)} sampled ones")
    good = [g for g, ok in enumerate(informative) if ok][:target]
    fill = [g for g, ok in enumerate(informative) if not ok][: target - len(good)]
    return sorted(good + fill), len(fill)
