"""Packed shared-prefix training forward for Llama-family models (Llama, Mistral, Qwen2).

Prefix Grouper ("Prefix Grouper: Efficient GRPO Training through Shared-Prefix
Forward", arXiv 2506.05433): a group's prompt is encoded once and every completion
of the group attends to its keys/values. Here, in addition, no work goes into
padding: every per-token layer (projections, MLP, norms) runs on one flat list of
tokens,

    [prompt of group 0 | prompt of group 1 | ... | real tokens of completion 0 | ... ]

(prompts left-padded to a common width P, completions at their real lengths), and
only attention uses a padded layout: prompts attend causally within themselves
(G, P), completions (B, T) attend to their group's prompt keys and to their own
earlier tokens. So the linear work is that of G*P + sum(lengths) tokens instead of
B*(P+T), and attention costs B*T*(P+T) score entries, with no cross-completion
waste.

Each completion token keeps the rotary position it had when it was sampled.
Log-probs, entropies and gradients equal the plain per-sequence forward's to float
tolerance (tests/train/test_packed.py; for a LoRA policy, whose LoRA layers run their own
forward here, tests/e2e/test_lora.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from policyforge.models.llama_family import hidden_states, masked_attention
from policyforge.models.lora import transformers_model
from policyforge.rollout.batch import RolloutBatch
from policyforge.rollout.sampler import position_ids


def is_packable(batch: RolloutBatch) -> bool:
    """True when every completion mask is a run of ones from the start (no holes to pack around)."""
    mask = batch.completion_mask
    lengths = mask.sum(-1, keepdim=True)
    return torch.equal(mask, (torch.arange(mask.shape[1], device=mask.device) < lengths).to(mask.dtype))


class _Layout:
    """Where each token sits in the flat list, and the attention masks of the two padded views."""

    def __init__(self, batch: RolloutBatch, first: Tensor, inverse: Tensor):
        mask = batch.completion_mask
        self.b, self.t = mask.shape
        self.g, self.p = len(first), batch.prompt_ids.shape[1]
        self.first, self.inverse = first, inverse
        self.p_mask = batch.prompt_mask[first].bool()  # (G, P)
        self.sample_i, self.tok_j = torch.nonzero(mask, as_tuple=True)  # real completion tokens, row-major
        self.n_prompt = self.g * self.p
        self.flat_c = self.n_prompt + torch.arange(len(self.sample_i), device=mask.device)  # their flat index
        idx_t = torch.arange(self.t, device=mask.device)
        causal = idx_t[None, :] <= idx_t[:, None]
        # prompts: causal over real prompt keys (a padding query sees itself, so no row is empty)
        idx_p = torch.arange(self.p, device=mask.device)
        self.prompt_allowed = ((idx_p[None, :] <= idx_p[:, None]) & self.p_mask[:, None, :]) | torch.eye(
            self.p, dtype=torch.bool, device=mask.device)
        # completions: every real key of the group's prompt, then their own tokens causally
        self.comp_allowed = torch.cat([self.p_mask[inverse][:, None, :].expand(-1, self.t, -1),
                                       causal[None].expand(self.b, -1, -1)], dim=2)

    def ids_and_positions(self, batch: RolloutBatch) -> tuple[Tensor, Tensor]:
        ids = torch.cat([batch.prompt_ids[self.first].reshape(-1), batch.completion_ids[self.sample_i, self.tok_j]])
        start = self.p_mask.sum(-1)[self.inverse[self.sample_i]]  # each completion's first position
        pos = torch.cat([position_ids(self.p_mask.long()).reshape(-1), start + self.tok_j])
        return ids, pos

    def predicting(self) -> Tensor:
        """Flat index of the token whose output predicts each real completion token."""
        last_prompt = self.inverse[self.sample_i] * self.p + self.p - 1
        return torch.where(self.tok_j == 0, last_prompt, self.flat_c - 1)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention over the flat list: q (M, H, d), k / v (M, KV, d) -> (M, H * d)."""
        def heads_first(x: Tensor) -> Tensor:  # (N, L, heads, d) -> (N, heads, L, d)
            return x.transpose(1, 2)

        n = self.n_prompt
        qp, kp, vp = (heads_first(x[:n].view(self.g, self.p, *x.shape[1:])) for x in (q, k, v))
        out_p = masked_attention(qp, kp, vp, self.prompt_allowed[:, None])
        qc, kc, vc = (heads_first(self._pad(x[n:])) for x in (q, k, v))
        # index_select, not kp[inverse]: the backward of advanced indexing with repeated indices
        # (index_put with accumulate) adds with atomics across threads on CPU, so its sums vary
        # run to run; index_select's backward (index_add) adds in a fixed order
        keys = torch.cat([kp.index_select(0, self.inverse), kc], dim=2)
        values = torch.cat([vp.index_select(0, self.inverse), vc], dim=2)
        out_c = masked_attention(qc, keys, values, self.comp_allowed[:, None])
        out_c = out_c.transpose(1, 2)[self.sample_i, self.tok_j]  # back to the real tokens only
        return torch.cat([out_p.transpose(1, 2).reshape(n, -1), out_c.reshape(out_c.shape[0], -1)])

    def _pad(self, x: Tensor) -> Tensor:
        """(N, ...) real completion tokens -> (B, T, ...) with zeros at padding."""
        out = x.new_zeros((self.b, self.t) + x.shape[1:])
        return out.index_put((self.sample_i, self.tok_j), x)


def packed_logits(model, batch: RolloutBatch, first: Tensor, inverse: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unscaled logits (N, V) predicting the batch's N real completion tokens, from one forward
    over the flat token list, and where those tokens sit: sample index (N,), position (N,).

    first (G,): a sample of each group (its prompt is the group's); inverse (B,): each sample's group.
    """
    model = transformers_model(model)  # a LoRA policy: its LoRA layers run inside hidden_states
    lay = _Layout(batch, first, inverse)
    ids, pos = lay.ids_and_positions(batch)
    hidden = hidden_states(model, ids, pos, lay.attend)
    logits = F.linear(hidden.index_select(0, lay.predicting()), model.lm_head.weight, model.lm_head.bias)
    return logits, lay.sample_i, lay.tok_j
