"""Batched sampling with the model's KV cache, recording the sampler's log-probs.

Works on any Hugging Face causal LM (Llama-family models through the lean decoder
in fast_decoder.py, others through their own forward). Prompts are left-padded so
every sequence's next token sits in the last column; finished sequences ride along
as padding (one mask update per step, no per-sequence Python work) until an eighth
of the decode batch has finished, when they are cut out of it.
The recorded log-prob is log softmax(logits / temperature) of the chosen token,
the same quantity the trainer computes, so with one update per batch it can be
used as the old log-prob without another forward pass.

Stop strings end a row when they appear in the decoded text of its completion (any
tokenization of them, see StopText) or as their own token sequence (special tokens,
which decoding skips); the mask keeps the token that completes the stop string.
A prompt plus max_new_tokens must fit the model's context (see check_fits).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from policyforge.data.tasks import DataError
from policyforge.models.load import cache_keyword, cache_of
from policyforge.rollout.fast_decoder import FastDecoder, reason_unsupported


COMPACT_AT = 0.125  # drop finished rows from the decode batch once this fraction of it has finished


@dataclass
class SamplingSettings:
    max_new_tokens: int = 16
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k filter
    stop: tuple[str, ...] = ()  # stop strings, matched on the decoded text (StopText) and on their own tokens


def stop_token_ids(tokenizer, stop: tuple[str, ...]) -> list[list[int]]:
    """Token sequences of the stop strings, as the tokenizer spells each one on its own.

    A model often spells a stop string with other tokens (BPE: " Answer:" is not "Answer:"),
    so these catch only that spelling; StopText catches every spelling. They are kept for
    stop strings that are special tokens, which decoded text skips.
    """
    seqs = [(s, tokenizer(s, add_special_tokens=False)["input_ids"]) for s in stop if s]
    # a stop string the vocabulary cannot spell encodes to unknown/pad ids, which must not end rows
    return [ids for s, ids in seqs if ids and tokenizer.decode(ids) == s]


class StopText:
    """Stop strings matched on the decoded text of each row's latest tokens.

    A stop string that ends in the newest token lies within its last `window` tokens that are
    not special (every other token decodes to at least one byte; special tokens decode to
    nothing; the margin covers a window that starts inside a multi-byte character or a leading
    space a decoder drops), so only those are decoded.
    """

    def __init__(self, tokenizer, stop: tuple[str, ...]):
        self.tokenizer, self.stop = tokenizer, tuple(s for s in stop if s)
        self.window = 2 * max((len(s.encode("utf-8")) for s in self.stop), default=0) + 8
        self._can_end = _tokens_that_can_end(tokenizer, self.stop)
        self._special = set(getattr(tokenizer, "all_special_ids", ()))

    def candidates(self, newest: Tensor) -> Tensor:
        """(A,) True where the newest token (A,) could complete a stop string, so that row's text must be
        decoded; every other row is skipped without leaving the device."""
        table = self._can_end.to(newest.device)
        return table[newest.clamp(0, table.numel() - 1)] | (newest >= table.numel())

    def hits(self, tokens: Tensor, check: Tensor) -> Tensor:
        """(A,) True where `check` (A,) and a stop string is in the text of the rows' tokens (A, t), of which
        the last `window` that are not special tokens are decoded."""
        hit = torch.zeros(tokens.shape[0], dtype=torch.bool)
        rows = torch.nonzero(check).squeeze(-1).tolist()
        if rows and self.stop:
            kept = [[i for i in row if i not in self._special][-self.window:] for row in tokens[rows].tolist()]
            texts = self.tokenizer.batch_decode(kept, skip_special_tokens=True)
            hit[rows] = torch.tensor([any(s in text for s in self.stop) for text in texts])
        return hit.to(tokens.device)


@functools.lru_cache(maxsize=8)
def _tokens_that_can_end(tokenizer, stop: tuple[str, ...]) -> Tensor:
    """(V,) True for tokens whose text holds the last character of a stop string, or a byte of an
    unfinished character (decoded as U+FFFD): only such a token can complete a stop string. A stop
    string ending in whitespace makes every token a candidate, as decoders may drop a token's
    leading space when it is decoded alone."""
    if any(s[-1].isspace() for s in stop):
        return torch.ones(len(tokenizer), dtype=torch.bool)
    ends = {s[-1] for s in stop} | {"\ufffd"}
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
    return torch.tensor([any(c in text for c in ends) for text in texts], dtype=torch.bool)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """Text up to (excluding) the first stop string."""
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return text if cut < 0 else text[:cut]


def _hits_stop(tokens: Tensor, stops: list[Tensor]) -> Tensor:
    """(A,) True where the rows of `tokens` (A, t) end with one of the stop sequences."""
    hit = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    for seq in stops:
        n = seq.numel()
        if n <= tokens.shape[1]:
            hit |= (tokens[:, -n:] == seq).all(-1)
    return hit


def filter_logits(logits: Tensor, top_p: float = 1.0, top_k: int = 0) -> Tensor:
    """Set logits outside the top-k and outside the top-p nucleus to -inf. (N, V) -> (N, V).

    Ties: top_k 1 keeps only the argmax (the first of tied maxima, as greedy picks), and the
    nucleus is built in a stable order, so top_k 1 or a tiny top_p always equals greedy; a
    larger top_k keeps every token tied with the k-th.
    """
    if top_k == 1:
        first = logits.argmax(-1, keepdim=True)
        return torch.full_like(logits, float("-inf")).scatter(-1, first, logits.gather(-1, first))
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass before it already reaches top_p (the first token always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


LIMIT_FIELDS = ("n_positions", "max_position_embeddings", "max_sequence_length", "seq_length", "n_ctx")


def _rope_dicts(cfg) -> list[dict]:
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None)
    if not isinstance(rope, dict):
        return []
    nested = [v for v in rope.values() if isinstance(v, dict)]  # one per layer type (Gemma 3)
    return nested or [rope]


def context_limit(model) -> tuple[int, str] | None:
    """(most positions the model takes, the config field that says so), or None when its config states none.

    Learned position tables (GPT-2's n_positions) fail past it; rotary models run past
    max_position_embeddings with positions they were never trained on. Rope scaling that
    extends the context: "dynamic" sets no limit; yarn / longrope allow factor x
    original_max_position_embeddings when that is larger.
    """
    cfg = getattr(model, "config", model)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    found = [(getattr(cfg, f), f) for f in LIMIT_FIELDS if isinstance(getattr(cfg, f, None), int)]
    found = [(v, f) for v, f in found if v > 0]
    if not found:
        return None
    limit, name = found[0]
    for rope in _rope_dicts(cfg):
        kind = rope.get("rope_type", rope.get("type"))
        if kind == "dynamic":
            return None
        factor, orig = rope.get("factor"), rope.get("original_max_position_embeddings")
        if kind in ("yarn", "longrope") and factor and orig:
            limit = max(limit, int(factor * orig))
    return limit, name


def check_fits(model, prompt_tokens: int, max_new_tokens: int, what: str = "the longest prompt") -> None:
    """DataError unless a prompt of `prompt_tokens` tokens plus `max_new_tokens` fits the model's context."""
    found = context_limit(model)
    if found is None or prompt_tokens + max_new_tokens <= found[0]:
        return
    limit, name = found
    room = limit - prompt_tokens  # what a completion may have after this prompt
    fit = limit - max_new_tokens  # the longest prompt this max_new_tokens leaves room for
    shorten = f"shorten the prompt to {fit} tokens or fewer" if fit > 0 else \
        f"lower rollout.max_new_tokens below {limit} and shorten the prompt"
    fix = (f"{shorten}, or lower rollout.max_new_tokens to {room} or less" if room > 0 else
           f"{shorten} (it leaves no room for a completion), or leave such rows out")
    raise DataError(f"{what} has {prompt_tokens} tokens and rollout.max_new_tokens is {max_new_tokens}: "
                    f"{prompt_tokens + max_new_tokens} positions, but the model takes at most {limit} "
                    f"(config.{name}); {fix}")


def eos_tensor(eos_id: int | Sequence[int], device) -> Tensor:
    """The token id(s) that end a completion, as a 1-d tensor (instruct models often have several)."""
    return torch.tensor([eos_id] if isinstance(eos_id, int) else list(eos_id), dtype=torch.long, device=device)


def position_ids(attn: Tensor) -> Tensor:
    """Positions that skip left padding: 0 at each sequence's first real token."""
    return (attn.cumsum(-1) - 1).clamp(min=0)


def sample(
    model, prompt_ids: Tensor, prompt_mask: Tensor, settings: SamplingSettings, eos_id: int | Sequence[int],
    pad_id: int,
    generator: torch.Generator | None = None, *, group: Tensor | None = None, stop_ids: list[list[int]] = (),
    stop_text: StopText | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Generate up to `max_new_tokens` for each left-padded prompt.

    With `group` (B,), rows of one group share one prompt: it is encoded once and its
    keys/values are indexed out to the group. Rows that have finished are dropped from
    the decode batch once an eighth of it has (their cache rows are cut out), so late
    steps cost what the live rows need. Returns completion ids (B, T) right-padded with
    `pad_id`, completion mask (B, T) float (1 up to and including EOS or the end of a
    stop sequence) and the sampler's log-probs (B, T). A row ends at a stop when its last
    tokens are one of `stop_ids`, or `stop_text` finds a stop string in their text. DataError
    (before any work) when the longest prompt plus max_new_tokens exceeds the model's context.
    """
    if prompt_ids.shape[1] == 0 or not bool(prompt_mask.bool().any(-1).all()):
        raise DataError("a prompt has no tokens: the model needs at least one to condition on "
                        "(train.evaluate.encode_prompts starts an empty prompt from BOS)")
    check_fits(model, int(prompt_mask.sum(-1).max()), settings.max_new_tokens)
    shared = distinct_rows(group)  # (first row of each group, each row's group), or (None, None)
    first, inverse = shared
    if first is not None and not (torch.equal(prompt_ids[first][inverse], prompt_ids)
                                  and torch.equal(prompt_mask[first][inverse], prompt_mask)):
        raise ValueError("rows that share a group id must share a prompt: the group's prompt is encoded once")
    # inference mode skips autograd bookkeeping on every decode op; the results are cloned out
    # of it because inference tensors cannot take part in the training graph later
    with torch.inference_mode():
        out = _sample(model, prompt_ids, prompt_mask, settings, eos_id, pad_id, generator, shared, stop_ids, stop_text)
    return tuple(x.clone() for x in out)


def _sample(model, prompt_ids: Tensor, prompt_mask: Tensor, settings: SamplingSettings, eos_id, pad_id: int,
            generator, shared: tuple, stop_ids, stop_text) -> tuple[Tensor, Tensor, Tensor]:
    b, n_new, device = prompt_ids.shape[0], settings.max_new_tokens, prompt_ids.device
    eos = eos_tensor(eos_id, device)
    one_eos = int(eos[0]) if eos.numel() == 1 else None  # the common case: a plain comparison per step
    if reason_unsupported(model, prompt_ids.shape[1] + n_new) is None:
        dec = _FastSteps(model, prompt_ids, prompt_mask, n_new, *shared)
    else:
        dec = _GenericSteps(model, prompt_ids, prompt_mask, *shared)
    logits = dec.first_logits
    stops = [torch.tensor(s, device=device) for s in stop_ids if s]
    tail = max([s.numel() for s in stops] + ([stop_text.window] if stop_text is not None else [0]))
    tokens = torch.full((b, n_new), pad_id, dtype=torch.long, device=device)
    logps = torch.zeros(b, n_new, device=device)
    live = torch.arange(b, device=device)  # original rows still in the decode batch, in its order
    done = torch.zeros(b, dtype=torch.bool, device=device)  # per live row
    last = torch.full((b,), n_new - 1, dtype=torch.long, device=device)  # each row's final token position
    width = n_new
    for t in range(n_new):
        nxt, lp = _pick(logits, settings, generator)
        tokens[live, t], logps[live, t] = nxt, lp
        ended = nxt == one_eos if one_eos is not None else torch.isin(nxt, eos)
        recent = None  # the tokens that can complete a stop: the last `tail`, or for stop text all of them,
        if stop_text is not None:  # as it looks back past special tokens, which decode to nothing
            recent = tokens[live, : t + 1]
        elif tail:
            recent = tokens[live, max(0, t + 1 - tail) : t + 1]
        if stops:
            ended = ended | _hits_stop(recent, stops)
        ended = ended & ~done
        if stop_text is None:
            n_done = int((done | ended).sum())  # the step's one host sync
        else:  # the same sync also says whether a row's newest token could complete a stop string
            decode = stop_text.candidates(nxt) & ~(done | ended)
            n_done, n_decode = torch.stack([(done | ended).sum(), decode.sum()]).tolist()
            if n_decode:  # only then a second sync, to decode those rows' text
                ended = ended | stop_text.hits(recent, decode)
                n_done = int((done | ended).sum())
        last[live] = torch.where(ended, t, last[live])
        done = done | ended
        if t == n_new - 1 or n_done == live.numel():
            width = t + 1
            break
        if n_done >= COMPACT_AT * live.numel():
            keep = ~done
            live, nxt, done = live[keep], nxt[keep], done[keep]
            dec.keep(keep)
        else:  # finished rows ride along as padding until the next compaction
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        logits = dec.step(nxt, t)
    tokens, logps = tokens[:, :width], logps[:, :width]
    mask = (torch.arange(width, device=device)[None, :] <= last[:, None]).float()
    return torch.where(mask.bool(), tokens, pad_id), mask, logps * mask


def ended_rows(tokens: Tensor, mask: Tensor, eos_id: int | Sequence[int], stop_ids: list[list[int]] = (),
               stop_text: StopText | None = None) -> Tensor:
    """(B,) True where a completion (B, T) ended on its own: its last real token is EOS or completes a stop.

    Rows without such an end used their whole token budget (truncated).
    """
    last = (mask.sum(-1).long() - 1).clamp(min=0)
    ended = torch.isin(tokens.gather(1, last[:, None]).squeeze(1), eos_tensor(eos_id, tokens.device))
    if not (stop_ids or stop_text):
        return ended
    width = tokens.shape[1]
    # right-align each row so that its last real token sits in the last column
    shift = (torch.arange(width, device=tokens.device)[None, :] + last[:, None] + 1) % width
    aligned = tokens.gather(1, shift)
    stops = [torch.tensor(s, device=tokens.device) for s in stop_ids if s]
    if stops:
        ended = ended | _hits_stop(aligned, stops)
    if stop_text is not None:
        ended = ended | stop_text.hits(aligned, ~ended & (mask.sum(-1) > 0))
    return ended


class _FastSteps:
    """Decode steps on FastDecoder's preallocated cache."""

    def __init__(self, model, prompt_ids: Tensor, prompt_mask: Tensor, new_tokens: int, first: Tensor | None,
                 rows: Tensor | None):
        b, self.p = prompt_ids.shape
        self.dec = FastDecoder(model, b, self.p + new_tokens)
        if first is not None:
            self.first_logits = self.dec.prefill(prompt_ids[first], prompt_mask[first], rows)
        else:
            self.first_logits = self.dec.prefill(prompt_ids, prompt_mask)
        self.keys = torch.cat([prompt_mask.bool(), prompt_mask.new_ones(b, new_tokens, dtype=torch.bool)], 1)
        self.start = prompt_mask.sum(-1).long()  # position of each row's first generated token

    def keep(self, rows: Tensor) -> None:
        self.dec.keep(rows)
        self.keys, self.start = self.keys[rows], self.start[rows]

    def step(self, nxt: Tensor, t: int) -> Tensor:
        return self.dec.step(nxt, self.p + t, self.start + t, self.keys[:, : self.p + t + 1])


class _GenericSteps:
    """Decode steps through the model's own forward and dynamic cache (any causal LM)."""

    def __init__(self, model, prompt_ids: Tensor, prompt_mask: Tensor, first: Tensor | None, inverse: Tensor | None):
        self.model, self.cache_key = model, cache_keyword(model)  # resolved once, not at every token
        self.cache, self.first_logits = _encode_prompts(model, prompt_ids, prompt_mask, first, inverse)
        self.attn = prompt_mask

    def keep(self, rows: Tensor) -> None:
        idx = torch.nonzero(rows).squeeze(-1)
        self.cache.reorder_cache(idx)
        self.attn = self.attn[idx]

    def step(self, nxt: Tensor, t: int) -> Tensor:
        self.attn = torch.cat([self.attn, torch.ones_like(self.attn[:, :1])], dim=1)
        out = self.model(input_ids=nxt[:, None], attention_mask=self.attn, position_ids=position_ids(self.attn)[:, -1:],
                         use_cache=True, **{self.cache_key: self.cache})
        self.cache = cache_of(out)
        return out.logits[:, -1].float()


def distinct_rows(group: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """(first row of each distinct group, each row's group index), or (None, None) when nothing repeats."""
    if group is None:
        return None, None
    uniq, inverse = torch.unique(group, return_inverse=True)
    if uniq.numel() == group.numel():
        return None, None
    first = torch.full((uniq.numel(),), group.numel(), dtype=torch.long, device=group.device)
    first = first.scatter_reduce(0, inverse, torch.arange(group.numel(), device=group.device), reduce="amin")
    return first, inverse


def _encode_prompts(model, prompt_ids: Tensor, prompt_mask: Tensor, first: Tensor | None, inverse: Tensor | None):
    """KV cache and last-position logits of the prompts, encoding each distinct group's prompt once
    (`first`, `inverse`: distinct_rows of the rows' groups)."""
    if first is not None:
        out = model(input_ids=prompt_ids[first], attention_mask=prompt_mask[first],
                    position_ids=position_ids(prompt_mask[first]), use_cache=True, logits_to_keep=1)
        cache = cache_of(out)
        cache.reorder_cache(inverse)
        return cache, out.logits[:, -1].float()[inverse]
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids(prompt_mask),
                use_cache=True, logits_to_keep=1)
    return cache_of(out), out.logits[:, -1].float()


def _pick(logits: Tensor, s: SamplingSettings, generator) -> tuple[Tensor, Tensor]:
    """Choose the next token of each row and its log-prob under the temperature-scaled policy."""
    if s.temperature <= 0:
        nxt = logits.argmax(-1)
        return nxt, torch.log_softmax(logits, -1).gather(-1, nxt[:, None]).squeeze(-1)
    scaled = logits / s.temperature
    probs = torch.softmax(filter_logits(scaled, s.top_p, s.top_k), -1)
    nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return nxt, torch.log_softmax(scaled, -1).gather(-1, nxt[:, None]).squeeze(-1)
