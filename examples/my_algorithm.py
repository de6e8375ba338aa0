"""An example of your own algorithm: an advantage estimator, a policy loss and a drift term of your design.

Each function follows the contract of its kind (README "Your own algorithm"): the positional inputs the
trainer passes, hyper-parameters keyword-only with defaults (a misspelt one in a config is then refused at
start-up), and batch inputs it wants (ref_logp, entropy, ...) keyword-only without a default. Train with

    policyforge train --config configs/demo.yaml --algo.plugins examples/my_algorithm.py \
        --algo.advantage rank_centred --algo.loss soft_clip --algo.loss-kwargs width 0.2 \
        --algo.drift sq_log 0.01

At start-up the trainer calls each of them once on a small synthetic batch and stops with one line naming
the function and the rule when a shape, a NaN or the mask is wrong.
"""

from __future__ import annotations

import torch
from torch import Tensor

from policyforge.algos import register


@register("advantage", "rank_centred", paper="(example) rank-based group baseline")
def rank_centred(scores: Tensor, group: Tensor, *, scale: float = 1.0) -> Tensor:
    """A_i = scale * (rank of r_i in its group / (n - 1) - 1/2), ties sharing their mean rank; 0 for a group of one.

    Shapes: scores (B,), group (B,) -> (B,). Equal rewards give equal ranks, so a group whose rewards are all
    alike gets zero advantages, as GRPO's z-score does.
    """
    adv = torch.zeros_like(scores)
    for g in torch.unique(group):
        rows = torch.nonzero(group == g).squeeze(-1)
        r = scores[rows]
        if len(rows) < 2:
            continue
        below = (r[None, :] < r[:, None]).sum(-1).float()  # rewards strictly lower
        ties = (r[None, :] == r[:, None]).sum(-1).float()  # itself included
        rank = below + (ties - 1) / 2
        adv[rows] = scale * (rank / (len(rows) - 1) - 0.5)
    return adv


@register("loss", "soft_clip", paper="(example) tanh-softened PPO ratio")
def soft_clip(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, width: float = 0.2
              ) -> tuple[Tensor, dict[str, Tensor]]:
    """L = -A * (1 + width * tanh((r - 1) / width)), r = pi / pi_old: the ratio's pull fades smoothly past 1 +- width.

    Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T) -> per-token loss (B, T), zero where mask is 0.
    """
    a = adv[:, None] if adv.dim() == 1 else adv
    ratio = torch.exp(logp - old_logp)
    soft = 1 + width * torch.tanh((ratio - 1) / width)
    loss = -a * soft * mask
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        metrics = {"soft_ratio_mean": (soft * mask).sum() / n,
                   "soft_saturated_frac": (((ratio - 1).abs() > 2 * width).float() * mask).sum() / n}
    return loss, metrics


@register("drift", "sq_log", paper="(example) squared log-ratio to the reference")
def sq_log(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """penalty = (log pi - log pi_ref)^2 on each sampled token.

    Shapes: logp, ref_logp, mask (B, T) -> (B, T), zero where mask is 0.
    """
    return (logp - ref_logp) ** 2 * mask
