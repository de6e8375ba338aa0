"""Advantage estimators: `fn(scores, group, *, mask=None, **hyper) -> adv`.

`scores` (B,) float, one scalar reward per completion; `group` (B,) int, which
prompt group each completion belongs to; `mask` (B, T) completion mask for the
estimators that need lengths. The result `adv` is `(B,)` (one value per sequence,
broadcast over its tokens by the loss) or `(B, T)`.
"""

from __future__ import annotations

from torch import Tensor

from policyforge.algos.grouping import group_count, group_mean, group_std
from policyforge.algos.registry import register


@register(
    "advantage",
    "grpo",
    paper="DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
    arxiv="2402.03300",
    peers="TRL GRPOTrainer (scale_rewards='group'); verl adv_estimator=grpo; OpenRLHF group_norm",
)
def grpo(scores: Tensor, group: Tensor, *, mask: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Group z-score: A_i = (r_i - mean_g(r)) / (std_g(r) + eps).

    Outcome supervision of DeepSeekMath (arXiv 2402.03300), eq. for Â_{i,t} = r̃_i.
    Shapes: scores (B,), group (B,) -> (B,).
    Convention: std is Bessel-corrected (torch.std), as in TRL and verl; a group whose
    rewards are all equal gets advantage 0.
    """
    return (scores - group_mean(scores, group)) / (group_std(scores, group) + eps)


@register(
    "advantage",
    "dr_grpo",
    paper="Understanding R1-Zero-Like Training: A Critical Perspective",
    arxiv="2503.20783",
    peers="TRL scale_rewards='none'; verl norm_adv_by_std_in_grpo=False",
)
def dr_grpo(scores: Tensor, group: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """Dr. GRPO: A_i = r_i - mean_g(r), without dividing by the group std.

    arXiv 2503.20783, sec. 3.2 (removes the question-level difficulty bias).
    Shapes: scores (B,), group (B,) -> (B,). Pair with aggregation
    `seq_mean_token_sum_norm` to also remove the length bias, as the paper does.
    """
    return scores - group_mean(scores, group)


@register(
    "advantage",
    "rloo",
    paper="Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs",
    arxiv="2402.14740",
    peers="verl adv_estimator=rloo; OpenRLHF advantage_estimator=rloo; TRL RLOOTrainer",
)
def rloo(scores: Tensor, group: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """Leave-one-out baseline: A_i = r_i - (1/(k-1)) * sum_{j != i} r_j.

    arXiv 2402.14740, eq. 7. Algebraically A_i = k/(k-1) * (r_i - mean_g(r)).
    Shapes: scores (B,), group (B,) -> (B,). A group of one sample gets advantage 0.
    """
    k = group_count(group, scores.dtype)
    mean = group_mean(scores, group)
    # (k mean - r) / (k - 1) written so that a constant group's baseline is exactly r (its advantage exactly 0)
    loo_mean = mean + (mean - scores) / (k - 1.0).clamp(min=1.0)
    return (scores - loo_mean) * (k > 1).to(scores.dtype)
