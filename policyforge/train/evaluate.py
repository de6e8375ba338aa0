"""Held-out evaluation: greedy accuracy and pass@k."""

from __future__ import annotations

from typing import Sequence

import torch

from policyforge.data.tasks import Example
from policyforge.rewards.score import RewardFn, score_parts
from policyforge.rollout.sampler import SamplingSettings, cut_at_stop, sample, stop_token_ids


def encode_prompts(tokenizer, prompts: Sequence[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def generate_text(model, tokenizer, prompts: Sequence[str], settings: SamplingSettings, generator=None, group=None):
    """(prompt ids, prompt mask, completion ids, mask, sampler log-probs, decoded texts) for `prompts`.

    `group` (B,) marks rows that repeat one prompt, so it is encoded once (see sampler.sample).
    """
    device = next(model.parameters()).device
    ids, attn = encode_prompts(tokenizer, prompts, device)
    out, mask, logp = sample(model, ids, attn, settings, tokenizer.eos_token_id, tokenizer.pad_token_id, generator,
                             group=group, stop_ids=stop_token_ids(tokenizer, settings.stop))
    texts = tokenizer.batch_decode(out * mask.long() + tokenizer.pad_token_id * (1 - mask.long()), skip_special_tokens=True)
    if settings.stop:
        texts = [cut_at_stop(t, settings.stop) for t in texts]
    return ids, attn, out, mask, logp, texts


@torch.no_grad()
def evaluate(model, tokenizer, examples: Sequence[Example], reward: RewardFn, *, max_new_tokens: int, pass_k: int,
             temperature: float, batch_size: int = 256, seed: int = 0, stop: tuple[str, ...] = ()) -> dict:
    """{'accuracy': greedy solve rate, 'pass@k': any of k samples solved (when pass_k > 0), 'samples': [...]}.

    "Solved" is rewards.score.is_correct: reward >= 1, or a dict reward's "correct" component >= 1.
    `stop` is rollout.stop: completions end at a stop string as training rollouts do, so both are
    scored on the same text. With no examples (a one-row dataset holds none out) accuracy and
    pass@k are None: nothing was measured, which 0.0 would hide.
    """
    correct, passed, samples = 0.0, 0.0, []
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for start in range(0, len(examples), batch_size):
        chunk = list(examples[start : start + batch_size])
        prompts = [e.prompt for e in chunk]
        greedy = generate_text(model, tokenizer, prompts, SamplingSettings(max_new_tokens, temperature=0.0, stop=stop))[-1]
        scored = score_parts(reward, chunk, greedy)
        correct += float(scored.correct().sum())
        samples += [{"prompt": e.prompt, "completion": c, "reward": float(x)}
                    for e, c, x in zip(chunk, greedy, scored.scores)]
        if pass_k > 0:
            rep = [e for e in chunk for _ in range(pass_k)]
            group = torch.arange(len(chunk), device=gen.device).repeat_interleave(pass_k)
            texts = generate_text(model, tokenizer, [e.prompt for e in rep],
                                  SamplingSettings(max_new_tokens, temperature=temperature, stop=stop),
                                  gen, group)[-1]
            solved = score_parts(reward, rep, texts).correct().view(len(chunk), pass_k)
            passed += float(solved.any(-1).sum())
    n = len(examples)
    res = {"accuracy": correct / n if n else None, "samples": samples}
    if pass_k > 0:  # pass_k 0 skips it: no "pass@0" figure
        res[f"pass@{pass_k}"] = passed / n if n else None
    return res
