"""A lean KV-cache decoder for Llama-family models (Llama, Mistral, Qwen2), used by the sampler.

The Hugging Face forward is general, and on small models most of a decode step is
its overhead rather than arithmetic: a dynamic cache that re-concatenates every
layer's keys and values each token, mask construction, module dispatch. This file
runs the same computation from the same weights with a preallocated cache, the
query/key/value and gate/up projections fused into one matmul each, and attention
for a one-token query done as two small matmuls with grouped heads (no key/value
repeat for grouped-query attention). It reads the model's parameters at the start
of every `sample` call, so it always decodes with the current weights.

A LoRA policy (peft) decodes here too, from W + scaling B A (see _Joined).
`reason_unsupported(model)` says why a model must take the generic path instead
(another architecture, other adapters or quantised projections, rope types whose
frequencies depend on the sequence length, a sliding window). Equality with the
Hugging Face forward is tested in tests/rollout/test_fast_decoder.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policyforge.models.llama_family import ACTIVATIONS, masked_attention, reason_unsupported, rms_norm, rotate
from policyforge.models.lora import linear_weights, transformers_model

__all__ = ["FastDecoder", "reason_unsupported"]


FUSE_MAX_PARAMS = 500_000_000  # above this, fused weight copies would cost too much memory


class _Joined:
    """Projections of one input read as one output, as the model computes them in eval mode.

    Models under FUSE_MAX_PARAMS get a single matmul over concatenated weights (fewer, larger
    calls); a LoRA layer's weight there is W + scaling B A (models/lora.py), made once per
    `sample` call, LoRA dropout being inactive in eval mode. Larger models run each projection
    by itself (a fused or merged copy of their weights would not fit): an nn.Linear from its own
    weight, a LoRA layer through its own forward, no copy either way.
    """

    def __init__(self, lins: list[nn.Linear], fuse: bool):
        self.lins = lins
        self.weight = self.bias = None
        if len(lins) == 1 and type(lins[0]) is nn.Linear:  # its own weight: no copy
            self.weight, self.bias = lins[0].weight, lins[0].bias
        elif fuse:
            parts = [linear_weights(lin) for lin in lins]
            if len(parts) == 1:  # a LoRA layer's weight is a new tensor already
                self.weight, self.bias = parts[0]
            else:
                self.weight = torch.cat([w for w, _ in parts])
                if any(b is not None for _, b in parts):
                    self.bias = torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for w, b in parts])

    def __call__(self, x: Tensor) -> Tensor:
        if self.weight is not None:
            return F.linear(x, self.weight, self.bias)
        if len(self.lins) == 1:
            return self.lins[0](x)
        return torch.cat([lin(x) for lin in self.lins], -1)

    def add_to(self, h: Tensor, x: Tensor) -> Tensor:
        """h + this projection of x, for 2-d h and x (the residual add fused into the matmul when it can be)."""
        return add_linear(h, x, self.weight, self.bias) if self.weight is not None else h + self(x)


def rotation_matrices(cos: Tensor, sin: Tensor) -> Tensor:
    """(N, d) cos / sin of each row's position -> (N, d, d) matrices R with x @ R = rotate(x, cos, sin)
    (half-split rotary: out[i] = x[i] cos[i] - x[i + d/2] sin[i], out[i + d/2] = x[i + d/2] cos + x[i] sin)."""
    half = cos.shape[-1] // 2
    turn = torch.diag_embed(cos)
    i = torch.arange(half, device=cos.device)
    turn[:, i + half, i] = -sin[:, :half]
    turn[:, i, i + half] = sin[:, half:]
    return turn


def add_linear(h: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """h + x W^T (+ b) for 2-d h and x, the residual add fused into the matmul."""
    out = torch.addmm(h, x, weight.t())
    return out if bias is None else out.add_(bias)


class FastDecoder:
    """Prefill and one-token decode steps over a preallocated cache of `capacity` positions per row."""

    @torch.no_grad()
    def __init__(self, model, rows: int, capacity: int):
        model = transformers_model(model)  # a LoRA policy: its layers inside the peft wrapper
        cfg, inner = model.config, model.model
        attn0 = inner.layers[0].self_attn
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = attn0.head_dim
        self.scale = self.head_dim**-0.5
        self.eps = cfg.rms_norm_eps
        self.act = ACTIVATIONS[cfg.hidden_act]
        self.embed, self.rotary, self.lm_head = inner.embed_tokens, inner.rotary_emb, model.lm_head
        self.final_norm = inner.norm.weight
        fuse = sum(p.numel() for p in model.parameters()) < FUSE_MAX_PARAMS
        self.layers = [self._fuse(layer, fuse) for layer in inner.layers]
        w = self.final_norm  # the model's dtype and device
        shape = (rows, self.kv_heads, capacity, self.head_dim)
        self.k = [w.new_zeros(shape) for _ in self.layers]
        self.v = [w.new_zeros(shape) for _ in self.layers]
        self.cos = self.sin = None

    @staticmethod
    def _fuse(layer, fuse: bool) -> dict:
        a, m = layer.self_attn, layer.mlp
        return {
            "qkv": _Joined([a.q_proj, a.k_proj, a.v_proj], fuse),
            "o": _Joined([a.o_proj], fuse),
            "gate_up": _Joined([m.gate_proj, m.up_proj], fuse),
            "down": _Joined([m.down_proj], fuse),
            "norm_in": layer.input_layernorm.weight, "norm_post": layer.post_attention_layernorm.weight,
        }

    def _rope_table(self, capacity: int, like: Tensor) -> None:
        pos = torch.arange(capacity, device=like.device)[None]
        cos, sin = self.rotary(like, pos)
        self.cos, self.sin = cos[0], sin[0]  # (capacity, head_dim)

    @torch.no_grad()
    def prefill(self, ids: Tensor, mask: Tensor, rows: Tensor | None = None) -> Tensor:
        """Encode left-padded prompts (N, P) into cache columns [0, P); logits of the last column (N', V).

        With `rows` (B,), prompt row rows[i] fills cache row i (a group's prompt encoded once).
        """
        n, p = ids.shape
        h = self.embed(ids)
        if self.cos is None:
            self._rope_table(self.k[0].shape[2], h)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]  # (N, 1, P, d)
        causal = torch.ones(p, p, dtype=torch.bool, device=ids.device).tril()
        # a padding query sees itself too, so no row is fully masked (that would give NaN keys later)
        allowed = causal & (mask.bool()[:, None, :] | torch.eye(p, dtype=torch.bool, device=ids.device))
        allowed = allowed[:, None]
        for i, lw in enumerate(self.layers):
            x = rms_norm(h, lw["norm_in"], self.eps)
            q, k, v = self._qkv(x, lw)  # (N, heads, P, d)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
            src = rows if rows is not None else slice(None)
            self.k[i][:, :, :p] = k[src]
            self.v[i][:, :, :p] = v[src]
            att = masked_attention(q, k, v, allowed, self.scale)
            h = h + lw["o"](att.transpose(1, 2).reshape(n, p, -1))
            h = h + self._mlp(rms_norm(h, lw["norm_post"], self.eps), lw)
        last = self._logits(h[:, -1])
        return last[rows] if rows is not None else last

    def keep(self, rows: Tensor) -> None:
        """Keep only cache rows where `rows` (B,) bool is True (finished rows leave the decode batch)."""
        idx = torch.nonzero(rows).squeeze(-1)
        for i in range(len(self.k)):  # layer by layer, so at most one layer's old and new cache coexist
            self.k[i] = self.k[i].index_select(0, idx)
            self.v[i] = self.v[i].index_select(0, idx)

    @torch.no_grad()
    def step(self, tokens: Tensor, col: int, pos: Tensor, key_mask: Tensor) -> Tensor:
        """Decode one token per row into cache column `col`; `pos` (B,) positions, key_mask (B, col+1) bool.

        A step is ~15 small ops per layer, so per-op overhead is much of its cost: the rotation is one
        batched matmul with each row's rotation matrix, the key mask is an additive bias fused into
        the score matmul with the 1/sqrt(d) scale, and residual adds are fused into the projections.
        """
        b, kv, group, d = tokens.shape[0], self.kv_heads, self.heads // self.kv_heads, self.head_dim
        h = self.embed(tokens)  # (B, hidden)
        turn = rotation_matrices(self.cos[pos], self.sin[pos])  # (B, d, d), shared by every layer
        bias = torch.zeros(b, 1, col + 1, dtype=h.dtype, device=h.device).masked_fill_(~key_mask[:, None], float("-inf"))
        bias = bias.repeat_interleave(kv, 0) if kv > 1 else bias  # (B * kv, 1, col+1)
        for i, lw in enumerate(self.layers):
            qkv = lw["qkv"](rms_norm(h, lw["norm_in"], self.eps)).view(b, self.heads + 2 * kv, d)
            qk = torch.bmm(qkv[:, : self.heads + kv], turn)  # queries and keys rotate together
            self.k[i][:, :, col] = qk[:, self.heads:]
            self.v[i][:, :, col] = qkv[:, self.heads + kv:]
            keys = self.k[i][:, :, : col + 1].reshape(b * kv, col + 1, d)
            vals = self.v[i][:, :, : col + 1].reshape(b * kv, col + 1, d)
            # grouped heads: the `group` query heads that share a key/value head form its query rows
            q = qk[:, : self.heads].reshape(b * kv, group, d)
            scores = torch.baddbmm(bias, q, keys.transpose(1, 2), alpha=self.scale)
            att = torch.bmm(torch.softmax(scores.float(), -1).to(vals.dtype), vals)
            h = lw["o"].add_to(h, att.view(b, -1))
            h = lw["down"].add_to(h, self._gated(rms_norm(h, lw["norm_post"], self.eps), lw))
        return self._logits(h)

    def _qkv(self, x: Tensor, lw: dict) -> tuple[Tensor, Tensor, Tensor]:
        n, p, _ = x.shape
        qkv = lw["qkv"](x)
        q, k, v = qkv.split([self.heads * self.head_dim, self.kv_heads * self.head_dim,
                             self.kv_heads * self.head_dim], -1)
        return (q.view(n, p, self.heads, self.head_dim).transpose(1, 2),
                k.view(n, p, self.kv_heads, self.head_dim).transpose(1, 2),
                v.view(n, p, self.kv_heads, self.head_dim).transpose(1, 2))

    def _mlp(self, x: Tensor, lw: dict) -> Tensor:
        return lw["down"](self._gated(x, lw))

    def _gated(self, x: Tensor, lw: dict) -> Tensor:
        gate, up = lw["gate_up"](x).chunk(2, -1)
        return self.act(gate).mul_(up)  # the activation's output is fresh, so the product can take its place

    def _logits(self, h: Tensor) -> Tensor:
        return F.linear(rms_norm(h, self.final_norm, self.eps), self.lm_head.weight, self.lm_head.bias).float()
