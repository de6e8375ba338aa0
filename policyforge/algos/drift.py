"""Drift terms: `fn(logp, ref_logp, mask, **hyper) -> per_token_penalty (B, T)`.

The penalty is added to the per-token loss with a coefficient from the config,
so its gradient pulls the policy toward the reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

from policyforge.algos.registry import register

_KL_PAPER = "Approximating KL Divergence (J. Schulman, 2020, blog post)"


@register("drift", "k1", paper=_KL_PAPER, peers="verl kl_penalty=kl; TRL (reward-side KL)")
def k1(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """k1 = log pi(y) - log pi_ref(y): unbiased estimate of KL(pi || pi_ref), high variance.

    Shapes: logp, ref_logp, mask (B, T) -> (B, T).
    """
    return (logp - ref_logp) * mask


@register("drift", "k2", paper=_KL_PAPER, peers="verl kl_penalty=mse")
def k2(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """k2 = 0.5 * (log pi(y) - log pi_ref(y))^2: biased, low variance; its gradient is that of KL.

    Shapes: logp, ref_logp, mask (B, T) -> (B, T).
    """
    return 0.5 * (logp - ref_logp) ** 2 * mask


@register("drift", "k3", paper=_KL_PAPER, peers="TRL beta (GRPO); verl kl_penalty=low_var_kl; DeepSeekMath eq. 4")
def k3(logp: Tensor, ref_logp: Tensor, mask: Tensor, *, clamp: float | None = None) -> Tensor:
    """k3 = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1: unbiased, non-negative.

    As in GRPO (DeepSeekMath, arXiv 2402.03300, eq. 4). `clamp` bounds the log ratio
    first (verl clamps k3 to [-10, 10]); None keeps the exact value.
    Shapes: logp, ref_logp, mask (B, T) -> (B, T).
    """
    d = ref_logp - logp
    if clamp is not None:
        d = d.clamp(-clamp, clamp)
    return (torch.exp(d) - d - 1.0) * mask
