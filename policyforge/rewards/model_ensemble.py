"""Reward-model ensembles ("Reward Model Ensembles Help Mitigate Overoptimization", Coste et al., arXiv 2310.02743):
several reward models score each completion and one number is made of their k scores R_1..R_k.

- mean:        R = (1/k) sum_i R_i
- worst:       R = min_i R_i                                   (the paper's worst-case optimization, WCO)
- uncertainty: R = (1/k) sum_i R_i - lambda * (1/k) sum_i (R_i - mean)^2
                                                               (uncertainty-weighted optimization, UWO: the mean
                                                                less lambda times the members' variance)

The conservative two keep a policy from climbing where the members disagree, which is where a single learned
reward is most likely wrong (over-optimisation).
"""

from __future__ import annotations

import torch
from torch import Tensor

HOW = ("mean", "worst", "uncertainty")  # data.reward_model_ensemble


def combined_reward(values: Tensor, how: str, uncertainty: float = 0.0) -> Tensor:
    """(B,) rewards from (B, k) member scores, combined as `how` says; `uncertainty` is UWO's lambda."""
    if how == "mean":
        return values.mean(-1)
    if how == "worst":
        return values.min(-1).values
    if how == "uncertainty":
        return values.mean(-1) - uncertainty * values.var(-1, unbiased=False)
    raise ValueError(f"unknown ensemble rule {how!r}; valid: {', '.join(HOW)}")


def disagreement(values: Tensor) -> Tensor:
    """(B,) standard deviation of the k member scores of each row (0 for one member): what UWO penalises."""
    return values.std(-1, unbiased=False) if values.shape[-1] > 1 else torch.zeros(values.shape[0])
