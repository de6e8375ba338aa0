"""Batched sampling with the model's KV cache, recording the sampler's log-probs.

Works on any Hugging Face causal LM. Prompts are left-padded so every sequence's
next token sits in the last column; finished sequences keep running as padding
(one mask update per step, no per-sequence Python work) until all have stopped.
The recorded log-prob is log softmax(logits / temperature) of the chosen token,
the same quantity the trainer computes, so with one update per batch it can be
used as the old log-prob without another forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SamplingSettings:
    max_new_tokens: int = 16
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k filter
    stop: tuple[str, ...] = ()  # stop strings, matched on their own tokenization (see stop_token_ids)


def stop_token_ids(tokenizer, stop: tuple[str, ...]) -> list[list[int]]:
    """Token sequences of the stop strings.

    Matching is on these token sequences, so a stop string that the model spells with
    other tokens (possible with BPE merges across its boundary) is not caught; the
    decoded text is cut at the first stop string anyway (see cut_at_stop).
    """
    return [tokenizer(s, add_special_tokens=False)["input_ids"] for s in stop if s]


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """Text up to (excluding) the first stop string."""
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return text if cut < 0 else text[:cut]


def _hits_stop(tokens: list[Tensor], stops: list[Tensor]) -> Tensor:
    """(B,) True where the last generated tokens end with one of the stop sequences."""
    hit = torch.zeros_like(tokens[-1], dtype=torch.bool)
    for seq in stops:
        n = seq.numel()
        if n <= len(tokens):
            tail = torch.stack(tokens[-n:], 1)
            hit |= (tail == seq).all(-1)
    return hit


def filter_logits(logits: Tensor, top_p: float = 1.0, top_k: int = 0) -> Tensor:
    """Set logits outside the top-k and outside the top-p nucleus to -inf. (N, V) -> (N, V)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass before it already reaches top_p (the first token always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def position_ids(attn: Tensor) -> Tensor:
    """Positions that skip left padding: 0 at each sequence's first real token."""
    return (attn.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def sample(
    model, prompt_ids: Tensor, prompt_mask: Tensor, settings: SamplingSettings, eos_id: int, pad_id: int,
    generator: torch.Generator | None = None, *, group: Tensor | None = None, stop_ids: list[list[int]] = (),
) -> tuple[Tensor, Tensor, Tensor]:
    """Generate up to `max_new_tokens` for each left-padded prompt.

    With `group` (B,), rows of one group share one prompt: it is encoded once and its
    keys/values are indexed out to the group. Returns completion ids (B, T) right-padded
    with `pad_id`, completion mask (B, T) float (1 up to and including EOS or the end of
    a stop sequence) and the sampler's log-probs (B, T).
    """
    b, device = prompt_ids.shape[0], prompt_ids.device
    cache, logits = _encode_prompts(model, prompt_ids, prompt_mask, group)
    attn = prompt_mask.clone()
    stops = [torch.tensor(s, device=device) for s in stop_ids if s]
    done = torch.zeros(b, dtype=torch.bool, device=device)
    tokens, logps, alive = [], [], []
    for t in range(settings.max_new_tokens):
        nxt, lp = _pick(logits, settings, generator)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens.append(nxt)
        logps.append(lp)
        alive.append(~done)
        done = done | (nxt == eos_id)
        if stops:
            done = done | _hits_stop(tokens, stops)
        if bool(done.all()) or t == settings.max_new_tokens - 1:
            break
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        pos = position_ids(attn)[:, -1:]
        out = model(input_ids=nxt[:, None], attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1].float()
    mask = torch.stack(alive, 1).float()
    return torch.stack(tokens, 1), mask, torch.stack(logps, 1) * mask


def _encode_prompts(model, prompt_ids: Tensor, prompt_mask: Tensor, group: Tensor | None):
    """KV cache and last-position logits of the prompts, encoding each distinct group's prompt once."""
    if group is not None:
        uniq, inverse = torch.unique(group, return_inverse=True)
        if uniq.numel() < group.numel():
            first = torch.zeros(uniq.numel(), dtype=torch.long, device=group.device)
            first = first.scatter_reduce(0, inverse, torch.arange(group.numel(), device=group.device),
                                         reduce="amin", include_self=False)
            out = model(input_ids=prompt_ids[first], attention_mask=prompt_mask[first],
                        position_ids=position_ids(prompt_mask[first]), use_cache=True, logits_to_keep=1)
            out.past_key_values.reorder_cache(inverse)
            return out.past_key_values, out.logits[:, -1].float()[inverse]
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids(prompt_mask),
                use_cache=True, logits_to_keep=1)
    return out.past_key_values, out.logits[:, -1].float()


def _pick(logits: Tensor, s: SamplingSettings, generator) -> tuple[Tensor, Tensor]:
    """Choose the next token of each row and its log-prob under the temperature-scaled policy."""
    if s.temperature <= 0:
        nxt = logits.argmax(-1)
        return nxt, torch.log_softmax(logits, -1).gather(-1, nxt[:, None]).squeeze(-1)
    scaled = logits / s.temperature
    probs = torch.softmax(filter_logits(scaled, s.top_p, s.top_k), -1)
    nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return nxt, torch.log_softmax(scaled, -1).gather(-1, nxt[:, None]).squeeze(-1)
