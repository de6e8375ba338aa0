"""DAPO's soft overlong punishment: a length-aware penalty added to the reward of a completion that runs
into the last tokens of its budget (algo.overlong_buffer).

DAPO: An Open-Source LLM Reinforcement Learning System at Scale (arXiv 2503.14476), section 3.4, eq. 13:

    R_length(y) = 0                                  if |y| <= L_max - L_cache
                = ((L_max - L_cache) - |y|) / L_cache  if L_max - L_cache < |y| <= L_max
                = -1                                 if L_max < |y|

added to the rule-based reward. L_max is the generation budget (rollout.max_new_tokens; the paper sampled
up to 20,480 tokens with L_cache = 4,096, so answers past 16,384 paid), L_cache the "punishment interval"
before it. The penalty reaches -1 at exactly L_max, so a completion cut at the budget gets the full penalty
and its third case (longer than the budget) cannot occur when sampling stops at L_max.

`factor` scales the whole penalty (verl's and OpenRLHF's overlong_penalty_factor; the paper's is 1).
|y| counts the completion's tokens up to and including EOS (the completion mask's sum), as TRL's
get_soft_overlong_punishment (len(completion_ids)) and verl's DAPO reward manager (the valid response
length) count it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def soft_overlong_punishment(lengths: Tensor, max_len: int, buffer: int, factor: float = 1.0) -> Tensor:
    """DAPO eq. 13 times `factor`: (B,) penalties in [-factor, 0] for completion `lengths` (B,) in tokens.

    0 up to max_len - buffer tokens, then falling linearly by factor / buffer per token to -factor at
    max_len, and -factor beyond it. buffer must be in [1, max_len].
    """
    if not 1 <= buffer <= max_len:
        raise ValueError(f"soft_overlong_punishment: buffer={buffer} must be in [1, max_len={max_len}]")
    expected = max_len - buffer  # L_max - L_cache: the longest answer that pays nothing
    over = (lengths.to(torch.float32) - expected).clamp(min=0)
    return -factor * (over / buffer).clamp(max=1.0)
