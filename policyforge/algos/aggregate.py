"""Aggregations: `fn(per_token_loss, mask, *, num_tokens, num_seqs, max_len) -> scalar`.

When a batch is split into micro-batches, the trainer passes the counts of the
whole batch (`num_tokens`, `num_seqs`), so that summing the micro-batch losses
gives exactly the full-batch loss and gradient accumulation is exact. Left as
None, the counts are those of the tensor given.
"""

from __future__ import annotations

from torch import Tensor

from policyforge.algos.registry import register

_DAPO = "DAPO: An Open-Source LLM Reinforcement Learning System at Scale"
_DR = "Understanding R1-Zero-Like Training: A Critical Perspective"


def _seqs(mask: Tensor, num_seqs: int | None) -> float:
    return float(num_seqs if num_seqs is not None else mask.shape[0])


@register("aggregation", "token_mean", paper=_DAPO, arxiv="2503.14476", peers="TRL loss_type=dapo; verl token-mean")
def token_mean(loss: Tensor, mask: Tensor, *, num_tokens: int | None = None, num_seqs=None, max_len=None) -> Tensor:
    """sum_{i,t} l_{i,t} / sum_{i,t} m_{i,t}: every token of the batch weighs the same (DAPO eq. 10)."""
    n = float(num_tokens) if num_tokens is not None else mask.sum().clamp(min=1.0)
    return (loss * mask).sum() / n


@register("aggregation", "seq_mean_token_mean", paper="DeepSeekMath (GRPO objective, eq. 3)", arxiv="2402.03300",
          peers="TRL loss_type=grpo; verl seq-mean-token-mean")
def seq_mean_token_mean(loss: Tensor, mask: Tensor, *, num_tokens=None, num_seqs: int | None = None, max_len=None) -> Tensor:
    """(1/G) sum_i (1/|o_i|) sum_t l_{i,t}: mean over tokens of each sequence, then over sequences."""
    per_seq = (loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return per_seq.sum() / _seqs(mask, num_seqs)


@register("aggregation", "seq_mean_token_sum_norm", paper=_DR, arxiv="2503.20783",
          peers="TRL loss_type=dr_grpo; verl seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(
    loss: Tensor, mask: Tensor, *, num_tokens=None, num_seqs: int | None = None, max_len: int | None = None
) -> Tensor:
    """sum_{i,t} l_{i,t} / (G * L): Dr. GRPO's constant normaliser.

    L is the generation budget (max_new_tokens), the same for every batch, so no
    sequence's length changes its weight (arXiv 2503.20783, sec. 3.2). TRL and verl
    use the same constant; left as None, L is the padded length T of `loss`.
    """
    length = float(max_len if max_len is not None else loss.shape[-1])
    return (loss * mask).sum() / (_seqs(mask, num_seqs) * length)


@register("aggregation", "token_sum", paper="(plain sum; REINFORCE-style objectives)", peers="verl token-sum (some versions)")
def token_sum(loss: Tensor, mask: Tensor, *, num_tokens=None, num_seqs=None, max_len=None) -> Tensor:
    """sum_{i,t} l_{i,t}: no normalisation; the gradient scale grows with the batch."""
    return (loss * mask).sum()


@register("aggregation", "seq_mean_token_sum", paper=_DR, arxiv="2503.20783", peers="verl seq-mean-token-sum")
def seq_mean_token_sum(loss: Tensor, mask: Tensor, *, num_tokens=None, num_seqs: int | None = None, max_len=None) -> Tensor:
    """(1/G) sum_i sum_t l_{i,t}: sum over each sequence's tokens, mean over sequences."""
    return (loss * mask).sum() / _seqs(mask, num_seqs)
