"""Masked reductions over `(B, T)` token tensors.

`mask` is a float tensor of 1.0 (real completion token) and 0.0 (padding or prompt).
Every reduction ignores masked positions exactly, so padded and unpadded batches
give the same value.
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum(x * mask) over `dim` (all dims when None)."""
    if dim is None:
        return (x * mask).sum()
    return (x * mask).sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum(x * mask) / sum(mask); an all-masked slice gives 0, not NaN."""
    return masked_sum(x, mask, dim) / mask.sum(dim).clamp(min=1.0) if dim is not None else (
        masked_sum(x, mask) / mask.sum().clamp(min=1.0)
    )


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of the unmasked entries of `x` (Bessel-corrected when `unbiased`)."""
    mean = masked_mean(x, mask)
    sq = masked_sum((x - mean) ** 2, mask)
    count = mask.sum()
    denom = (count - 1.0) if unbiased else count
    return sq / denom.clamp(min=1.0)


def whiten(x: Tensor, mask: Tensor | None = None, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / sqrt(var + eps) over the unmasked entries; masked entries come back as 0."""
    if mask is None:
        mask = torch.ones_like(x)
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask
