"""Per-group statistics of a `(B,)` score vector with a `(B,)` group index.

Groups are given by an integer id per sample (any ids, in any order), so a batch
can mix group sizes and interleave groups.
"""

from __future__ import annotations

import torch
from torch import Tensor


def group_ids(group: Tensor) -> tuple[Tensor, int]:
    """Map arbitrary group ids to 0..G-1; returns (dense ids (B,), G)."""
    uniq, inverse = torch.unique(group, return_inverse=True)
    return inverse, int(uniq.numel())


def group_sum(x: Tensor, group: Tensor) -> Tensor:
    """Sum of `x` over each sample's group, broadcast back to `(B,)`."""
    ids, n = group_ids(group)
    sums = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, ids, x)
    return sums[ids]


def group_count(group: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Size of each sample's group, broadcast back to `(B,)`."""
    return group_sum(torch.ones(group.shape, dtype=dtype, device=group.device), group)


def group_mean(x: Tensor, group: Tensor) -> Tensor:
    """Mean over each sample's group, broadcast back to `(B,)`; exactly the common value in a group of
    equal values (a rounded sum / count can miss it: 16 x 0.7 in float32 gives a mean 1 ulp off, which
    would hand equal rewards a non-zero GRPO advantage of 0.1 through the eps-scale std)."""
    if not x.is_floating_point():
        x = x.float()
    mean = group_sum(x, group) / group_count(group, x.dtype)
    constant = group_max(x, group) == -group_max(-x, group)
    return torch.where(constant, x, mean)


def group_std(x: Tensor, group: Tensor, unbiased: bool = True) -> Tensor:
    """Standard deviation within each group (Bessel-corrected by default, as torch.std)."""
    n = group_count(group, x.dtype)
    sq = group_sum((x - group_mean(x, group)) ** 2, group)
    denom = (n - 1.0).clamp(min=1.0) if unbiased else n
    return (sq / denom).sqrt()


def group_max(x: Tensor, group: Tensor) -> Tensor:
    """Maximum within each group, broadcast back to `(B,)`."""
    ids, n = group_ids(group)
    out = torch.full((n,), float("-inf"), dtype=x.dtype, device=x.device)
    out = out.scatter_reduce(0, ids, x, reduce="amax")
    return out[ids]
