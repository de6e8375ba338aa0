"""The Llama family (Llama, Mistral, Qwen2) written out as plain functions of the model's weights.

The lean decoder (rollout/fast_decoder.py) and the packed training forward
(train/packed.py) run these instead of the Hugging Face modules: same weights, same
arithmetic, less overhead and layouts the generic forward cannot take (a
preallocated cache; per-token layers over a flat list of real tokens). They call the
weights directly, so module hooks (FSDP, offloading) do not fire: such setups take
the generic path. `reason_unsupported`
says when a model must take the generic path.

A LoRA policy (peft) takes them too, read through its wrapper: the packed forward calls
each LoRA projection's own forward (gradients reach A and B), and the lean decoder
computes with W + scaling B A (models/lora.py). Other adapters and quantised
projections take the generic path.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policyforge.models.lora import linear_problem, transformers_model

ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}
FAMILIES = ("llama", "mistral", "qwen2")
STATIC_ROPE = ("default", "linear", "llama3", "yarn")


def reason_unsupported(model, total_len: int = 0) -> str | None:
    """None when FastDecoder can run `model` for sequences of up to `total_len` tokens, else why not."""
    model = transformers_model(model)  # a LoRA policy's modules are read inside its peft wrapper
    cfg = getattr(model, "config", None)
    kind = getattr(cfg, "model_type", None)
    if kind not in FAMILIES:
        return f"model_type {kind!r} is not one of {FAMILIES}"
    if not hasattr(getattr(model, "model", None), "layers") or not hasattr(model, "lm_head"):
        return f"a wrapped model ({type(model).__name__}), not the transformers model itself"  # DDP, compile
    rope = (getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}).get("rope_type", "default")
    if rope not in STATIC_ROPE:
        return f"rope type {rope!r} changes with sequence length"
    window = getattr(cfg, "sliding_window", None)
    if window and (kind != "qwen2" or getattr(cfg, "use_sliding_window", False)) and total_len > window:
        return f"sliding window {window} is shorter than the {total_len} tokens"
    if getattr(cfg, "hidden_act", "silu") not in ACTIVATIONS:
        return f"activation {cfg.hidden_act!r}"
    for layer in model.model.layers:
        for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
                    layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
            problem = None if type(lin) is nn.Linear else linear_problem(lin)  # None too for vanilla LoRA
            if problem is not None:
                return f"projection of type {type(lin).__name__} ({problem})"
    if type(model.lm_head) is not nn.Linear:
        return f"lm_head of type {type(model.lm_head).__name__}"
    return _hooked_or_placed(model)


def _inert(hook) -> bool:
    """transformers installs output-capturing hooks on a model's layers once any forward asks for hidden states
    or attentions; they only record while a capture is active, which the lean paths never ask for."""
    return getattr(hook, "__module__", "") == "transformers.utils.output_capturing"


def _hooked_or_placed(model) -> str | None:
    """Why the weights cannot be read directly: hooks would not fire (steering, patching, accelerate's
    offloading), or the parameters are not all here (meta device, sharded DTensors)."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return "global module forward hooks are registered"
    for name, mod in model.named_modules():
        hooks = [*mod._forward_hooks.values(), *mod._forward_pre_hooks.values()]
        if any(not _inert(h) for h in hooks) or getattr(mod, "_hf_hook", None) is not None:
            return f"module {name or type(mod).__name__!r} has forward hooks"
    for p in model.parameters():
        if p.is_meta or type(p.data).__name__ == "DTensor":
            return "parameters are offloaded or sharded (meta device or DTensor)"
    return None


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm as the Llama family computes it: statistics in float32, weight applied in the model dtype."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:  # the same arithmetic as one fused op
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding, half-split convention: x cos + rotate_half(x) sin."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin


def masked_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, scale: float | None = None,
                     repeat_kv: bool | None = None) -> Tensor:
    """SDPA of q (N, H, L, d) over k / v (N, KV, S, d) with a bool mask `allowed` (N or 1, 1, L, S).

    On CUDA (the `repeat_kv` default), grouped-query attention with a mask would fall back
    to the math kernel, which materialises every score, so the key/value heads are
    repeated instead; elsewhere SDPA's own grouped-query mode runs.
    """
    if q.shape[1] != k.shape[1] and (q.is_cuda if repeat_kv is None else repeat_kv):
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale,
                                          enable_gqa=q.shape[1] != k.shape[1])


def training_unsupported(model, total_len: int = 0) -> str | None:
    """None when `hidden_states` computes what the model's own training forward would, else why not."""
    model = transformers_model(model)
    reason = reason_unsupported(model, total_len)
    if reason is None and model.training and getattr(model.config, "attention_dropout", 0.0) > 0:
        reason = "attention dropout is on"
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:  # transformers before the renaming
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    if reason is None and checkpointing:
        reason = "gradient checkpointing is on"
    return reason


def hidden_states(model, ids: Tensor, pos: Tensor, attend: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Tensor:
    """Final-normed hidden states (M, hidden) of a flat list of tokens `ids` (M,) at rotary positions `pos` (M,).

    The caller decides who attends to whom: `attend(q, k, v)` gets the rotated queries
    (M, heads, d) and keys / values (M, kv_heads, d) and returns (M, heads * d). Every
    other layer is per token, so it runs on the flat list with no padding. Differentiable
    in the model's parameters (this is the training forward).
    """
    model = transformers_model(model)
    cfg, inner = model.config, model.model
    m = ids.shape[0]
    eps, act = cfg.rms_norm_eps, ACTIVATIONS[cfg.hidden_act]
    h = inner.embed_tokens(ids)
    cos, sin = inner.rotary_emb(h[None], pos[None])
    cos, sin = cos[0, :, None], sin[0, :, None]  # (M, 1, head_dim), broadcast over heads
    for layer in inner.layers:
        a, mlp = layer.self_attn, layer.mlp
        x = rms_norm(h, layer.input_layernorm.weight, eps)
        q = project(a.q_proj, x).view(m, -1, a.head_dim)
        k = project(a.k_proj, x).view(m, -1, a.head_dim)
        v = project(a.v_proj, x).view(m, -1, a.head_dim)
        h = h + project(a.o_proj, attend(rotate(q, cos, sin), rotate(k, cos, sin), v))
        x = rms_norm(h, layer.post_attention_layernorm.weight, eps)
        h = h + project(mlp.down_proj, act(project(mlp.gate_proj, x)) * project(mlp.up_proj, x))
    return rms_norm(h, inner.norm.weight, eps)


def project(lin, x: Tensor) -> Tensor:
    """A projection of `x`: an nn.Linear from its weights, a LoRA layer through its own forward, which is
    what the model's forward runs (LoRA dropout included in training mode) and lets gradients reach A and B."""
    return F.linear(x, lin.weight, lin.bias) if type(lin) is nn.Linear else lin(x)
