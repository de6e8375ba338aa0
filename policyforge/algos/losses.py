"""Per-token policy losses: `fn(logp, old_logp, adv, mask, **hyper) -> (per_token_loss, metrics)`.

`logp` (B, T) log-prob of each sampled token under the policy being trained (with
grad); `old_logp` (B, T) under the policy that produced the batch (detached);
`adv` (B,) or (B, T); `mask` (B, T). The loss is zero where `mask` is zero and
`metrics` maps names to detached 0-d tensors (no `.item()` here).
"""

from __future__ import annotations

import torch
from torch import Tensor

from policyforge.algos.masked import masked_mean
from policyforge.algos.registry import register


def token_adv(adv: Tensor, mask: Tensor) -> Tensor:
    """Broadcast a per-sequence advantage (B,) to tokens (B, T); pass (B, T) through."""
    return adv.unsqueeze(-1).expand_as(mask) if adv.dim() == 1 else adv


def ratio_metrics(ratio: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """min / mean / max of the importance ratio over real tokens (detached)."""
    r = ratio.detach()
    big = torch.finfo(r.dtype).max
    on = mask > 0
    if not on.any():
        zero = r.new_zeros(())
        return {"ratio_min": zero, "ratio_mean": zero, "ratio_max": zero}
    return {
        "ratio_min": torch.where(on, r, r.new_full((), big)).min(),
        "ratio_mean": masked_mean(r, mask),
        "ratio_max": torch.where(on, r, r.new_full((), -big)).max(),
    }


def clipped_surrogate(ratio: Tensor, a: Tensor, eps_low: float, eps_high: float) -> tuple[Tensor, Tensor]:
    """PPO per-token loss max(-r A, -clip(r, 1 - eps_low, 1 + eps_high) A) and where the clip is active."""
    unclipped, clipped = -a * ratio, -a * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


@register(
    "loss",
    "ppo_clip",
    paper="Proximal Policy Optimization Algorithms; DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
    arxiv="1707.06347; 2503.14476",
    peers="TRL epsilon/epsilon_high; verl policy_loss=vanilla (clip_ratio_low/high, clip_ratio_c); OpenRLHF",
    zero_adv_inert=True,
)
def ppo_clip(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate: L = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), r = exp(logp - old_logp).

    PPO (arXiv 1707.06347) eq. 7 with DAPO's decoupled "clip-higher" bounds
    (arXiv 2503.14476, eq. 10; DAPO uses eps_low=0.2, eps_high=0.28). With
    `dual_clip=c` (> 1) negative-advantage tokens are also bounded: L = min(L, -c A)
    for A < 0 (Dual-clip PPO, Ye et al. 2020), as verl's clip_ratio_c.
    Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T) -> loss (B, T).
    On-policy (old_logp == logp) the gradient is REINFORCE's, -A grad logp.
    """
    a = token_adv(adv, mask)
    ratio = torch.exp(logp - old_logp)
    loss, _ = clipped_surrogate(ratio, a, eps_low, eps_high)
    if dual_clip is not None:
        loss = torch.where(a < 0, torch.minimum(loss, -dual_clip * a), loss)
    with torch.no_grad():
        low = ((ratio < 1.0 - eps_low) & (a < 0)).to(logp.dtype)
        high = ((ratio > 1.0 + eps_high) & (a > 0)).to(logp.dtype)
        metrics = {"clip_frac_low": masked_mean(low, mask), "clip_frac_high": masked_mean(high, mask)}
        metrics.update(ratio_metrics(ratio, mask))
    return loss * mask, metrics


@register(
    "loss",
    "reinforce",
    paper="Simple statistical gradient-following algorithms for connectionist reinforcement learning (Williams, 1992)",
    arxiv="",
    peers="verl policy_loss=... (REINFORCE via ppo with 1 epoch); TRL loss with num_iterations=1",
    zero_adv_inert=True,
)
def reinforce(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """REINFORCE: L = -A * log pi(y_t | x, y_<t).

    Williams (1992). `old_logp` is not used: the estimator is on-policy, so
    with several updates per batch it ignores the drift from the sampling policy.
    Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T) -> loss (B, T).
    """
    loss = -token_adv(adv, mask) * logp
    with torch.no_grad():
        metrics = ratio_metrics(torch.exp(logp - old_logp), mask)
    return loss * mask, metrics
