"""The training forward: log-probs of completion tokens under a model.

Only the completion positions' logits are computed (`logits_to_keep`), at the
sampling temperature (TRL and verl do the same), so the result matches what the
sampler recorded when the weights are the same.

Shared-prefix forward ("Prefix Grouper: Efficient GRPO Training through
Shared-Prefix Forward", arXiv 2506.05433): the completions of one group share one
prompt, so the prompt is encoded once per group and its keys/values are indexed out
to every member. Autograd sums the members' gradients into the one prompt encoding,
so log-probs and gradients equal the plain path's (tests/train/test_logprobs.py).
For Llama-family models the per-token layers also run on a flat list of the real
tokens (train/packed.py), so padding costs nothing; other models take the padded
shared-prefix path here when their cache holds only attention keys/values (see
shared_prefix_problem), else the plain forward.
"""

from __future__ import annotations

import contextlib
import logging
import weakref

import torch
from torch import Tensor

from policyforge.models.llama_family import training_unsupported
from policyforge.models.load import cache_of, eval_mode, probe_cache, with_cache
from policyforge.models.lora import adapters_off
from policyforge.rollout.batch import RolloutBatch
from policyforge.rollout.sampler import distinct_rows, position_ids
from policyforge.train.packed import is_packable, packed_logits


def _token_stats(logits: Tensor, targets: Tensor, row_temperature: Tensor | None,
                 temperature: float) -> tuple[Tensor, Tensor, Tensor]:
    """Logits (..., V) predicting `targets` (...) -> (logp (...), entropy (...), scaled logits (..., V)).

    `row_temperature` (...) is each position's temperature when rows carry their own,
    else every position is scaled by `temperature` (0 = unscaled).
    """
    logits = logits.float()
    if row_temperature is not None:
        logits = logits / row_temperature.clamp(min=1e-6)[..., None].to(logits.dtype)
    elif temperature > 0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp, -(logp_all.exp() * logp_all).sum(-1), logits


def _padded_stats(logits: Tensor, batch: RolloutBatch, temperature: float, want_logits: bool) -> dict[str, Tensor]:
    """logits (B, T, V) predicting each completion token -> logp, entropy (B, T) [and the scaled logits]."""
    temps = batch.temperature[:, None] if batch.temperature is not None else None
    logp, entropy, scaled = _token_stats(logits, batch.completion_ids, temps, temperature)
    mask = batch.completion_mask
    res = {"logp": logp * mask, "entropy": entropy * mask}
    if want_logits:
        res["logits"] = scaled
    return res


def _packed_stats(model, batch: RolloutBatch, temperature: float, want_logits: bool, first: Tensor,
                  inverse: Tensor) -> dict[str, Tensor]:
    """The same from the packed forward: stats of the real tokens only, scattered back to (B, T)."""
    logits, i, j = packed_logits(model, batch, first, inverse)
    temps = batch.temperature[i] if batch.temperature is not None else None
    logp, entropy, scaled = _token_stats(logits, batch.completion_ids[i, j], temps, temperature)
    shape = tuple(batch.completion_ids.shape)

    def scatter(values: Tensor) -> Tensor:
        return values.new_zeros(shape + tuple(values.shape[1:])).index_put((i, j), values)

    res = {"logp": scatter(logp), "entropy": scatter(entropy)}
    if want_logits:
        res["logits"] = scatter(scaled)
    return res


def shared_prompts(batch: RolloutBatch) -> tuple[Tensor, Tensor] | None:
    """(first sample of each prompt group (G,), each sample's prompt group (B,)), or None when no prompt repeats.
    A prompt group is a group's samples, less any whose prompt differs from its first sample's (Scaf-GRPO's
    hinted row), which each make a prompt group of their own."""
    first, inverse = distinct_rows(batch.group)
    if first is None:
        return None
    same = ((batch.prompt_ids == batch.prompt_ids[first][inverse]) &
            (batch.prompt_mask == batch.prompt_mask[first][inverse])).all(-1)
    if bool(same.all()):
        return first, inverse
    own = int(batch.group.max()) + 1 + torch.arange(len(batch), device=batch.group.device)
    first, inverse = distinct_rows(torch.where(same, batch.group, own))
    return None if first is None else (first, inverse)


def forward_logprobs(model, batch: RolloutBatch, temperature: float, *, want_logits: bool = False,
                     shared_prefix: bool = False) -> dict[str, Tensor]:
    """{'logp': (B, T), 'entropy': (B, T)[, 'logits': (B, T, V)]} for the batch's completion tokens."""
    if not shared_prefix:
        return _plain(model, batch, temperature, want_logits)
    groups = shared_prompts(batch)
    total = batch.prompt_ids.shape[1] + batch.completion_ids.shape[1]
    if training_unsupported(model, total) is None and is_packable(batch):
        if groups is None:  # no prompt repeats: every sample its own group, still packed without padding
            groups = (torch.arange(len(batch), device=batch.group.device),) * 2
        return _packed_stats(model, batch, temperature, want_logits, *groups)
    if groups is None or shared_prefix_problem(model) is not None:
        return _plain(model, batch, temperature, want_logits)
    return _grouped(model, batch, temperature, want_logits, *groups)


_PREFIX_PROBLEMS: "weakref.WeakKeyDictionary[torch.nn.Module, str | None]" = weakref.WeakKeyDictionary()
_LOGGED: set[str] = set()


def shared_prefix_problem(model) -> str | None:
    """None when `_grouped` is exact for `model`, else why it takes the plain forward instead (logged once).

    Sharing a prompt's cache is exact for attention keys/values: a completion attends to the same
    keys whether they were computed once or per row. Recurrent, linear-attention or convolution
    state (Jamba, Qwen3-Next, Bamba, LFM2, ... and MiniMax's own cache) must instead be continued
    by a multi-token forward from a prefilled state, which some models get wrong (Jamba restarts
    its Mamba state: different log-probs) or do in place (Qwen3-Next: backward fails), so those
    models are not trusted with it. Decided from the cache of a two-token probe, once per model.
    """
    if model not in _PREFIX_PROBLEMS:
        _PREFIX_PROBLEMS[model] = _cache_problem(model)
        kind = getattr(model.config, "model_type", type(model).__name__)
        if _PREFIX_PROBLEMS[model] is not None and kind not in _LOGGED:
            _LOGGED.add(kind)
            logging.getLogger("policyforge").warning(
                "optim.shared_prefix: %s takes the plain training forward (%s)", kind, _PREFIX_PROBLEMS[model])
    return _PREFIX_PROBLEMS[model]


def _cache_problem(model) -> str | None:
    from transformers import DynamicCache

    try:
        from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer
        kv_layers = (DynamicLayer, DynamicSlidingWindowLayer)
    except ImportError:  # transformers < 4.56: a DynamicCache held key/value lists only
        kv_layers = ()
    if getattr(model, "_is_stateful", False):
        return "it keeps recurrent state"
    cache = probe_cache(model, rows=1)
    if cache is None:
        return "its forward returns no cache here"
    if type(cache) is not DynamicCache or any(type(layer) not in kv_layers for layer in getattr(cache, "layers", ())):
        kinds = ", ".join(sorted({type(layer).__name__ for layer in getattr(cache, "layers", ())}))
        named = f"{type(cache).__name__}: {kinds}" if kinds else type(cache).__name__
        return f"its cache ({named}) holds more than attention keys/values"
    return None


def _plain(model, batch: RolloutBatch, temperature: float, want_logits: bool) -> dict[str, Tensor]:
    ids, attn = batch.input_ids()
    t = batch.completion_ids.shape[1]
    out = model(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn), logits_to_keep=t + 1)
    # the last t + 1 columns: a model whose forward ignores logits_to_keep returns every position
    return _padded_stats(out.logits[:, -(t + 1):-1], batch, temperature, want_logits)


def _grouped(model, batch: RolloutBatch, temperature: float, want_logits: bool, first: Tensor, inverse: Tensor):
    """Encode each group's prompt once, then every completion against the shared keys/values."""
    p_ids, p_mask = batch.prompt_ids[first], batch.prompt_mask[first]
    out = model(input_ids=p_ids, attention_mask=p_mask, position_ids=position_ids(p_mask), use_cache=True,
                logits_to_keep=1)
    cache = cache_of(out)
    cache.reorder_cache(inverse)  # (G, ...) -> (B, ...): differentiable index_select
    # predicts each completion's first token; index_select, not [inverse], for a fixed-order backward
    # (see _Layout.attend in train/packed.py)
    first_logits = out.logits[:, -1].index_select(0, inverse)
    ids, attn = batch.input_ids()
    p = batch.prompt_ids.shape[1]
    comp = model(input_ids=batch.completion_ids, attention_mask=attn, position_ids=position_ids(attn)[:, p:],
                 use_cache=True, **with_cache(model, cache))
    logits = torch.cat([first_logits[:, None], comp.logits[:, :-1]], dim=1)
    return _padded_stats(logits, batch, temperature, want_logits)


def logprobs_in_chunks(model, batch: RolloutBatch, temperature: float, chunks: list[Tensor], *,
                       want_logits: bool = False, shared_prefix: bool = False) -> dict[str, Tensor]:
    """forward_logprobs over index sets `chunks`, stitched back to (B, T[, V]).

    Used for the no-grad old-policy and reference passes, so no more than one chunk's
    full-vocabulary logits exist at a time (unless the caller asks for the logits). They run in
    eval mode, as the sampler does: the same at every step and after a resume (a freshly loaded
    model starts in eval mode, an uninterrupted one is left in train mode by the last update).
    """
    b, t = batch.completion_ids.shape
    out: dict[str, Tensor] = {}
    with eval_mode(model):
        for idx in chunks:
            mb, width = batch.select(idx).trimmed()
            res = forward_logprobs(model, mb, temperature, want_logits=want_logits, shared_prefix=shared_prefix)
            for k, v in res.items():
                if k not in out:
                    out[k] = v.new_zeros((b, t) + tuple(v.shape[2:]))
                out[k][idx, :width] = v
    return out


def reference_logprobs(p, batch: RolloutBatch, chunks: list) -> dict:
    """The reference forward over `batch` (no grad, eval mode) for the loop's StepParts `p`, {} without a reference. A LoRA policy that is its
    own reference runs it with its adapters disabled: the base model's log-probs, from the same weights."""
    if p.ref is None:
        return {}
    with adapters_off(p.ref) if p.ref is p.model else contextlib.nullcontext():
        return logprobs_in_chunks(p.ref, batch, p.cfg.rollout.temperature, chunks,
                                  want_logits="ref_logits" in p.algo.needs(), shared_prefix=p.cfg.optim.shared_prefix)
