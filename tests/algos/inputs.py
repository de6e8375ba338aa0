"""Random but valid inputs for any registry entry, built from what it `needs`.

Contract tests call every entry through `call_entry`, so a new function only has
to declare its batch inputs as keyword-only arguments to be covered.
"""

from __future__ import annotations

import torch

from policyforge.algos.registry import Entry

B, T, V, K = 8, 6, 11, 2


def make_batch(seed: int = 0, b: int = B, t: int = T, v: int = V, grad: bool = False) -> dict:
    """One batch with every input the trainer can supply; groups of 4, ragged lengths.

    With `grad`, `logits` is a leaf that requires grad and `logp` / `entropy` are
    computed from it, so a test can check gradients reaching each position.
    """
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g).requires_grad_(grad)
    tokens = torch.randint(0, v, (b, t), generator=g)
    logp_full = torch.log_softmax(logits, -1)
    logp = logp_full.gather(-1, tokens[..., None]).squeeze(-1)
    ref_logits = logits + 0.3 * torch.randn(b, t, v, generator=g)
    ref_logp = torch.log_softmax(ref_logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    lengths = torch.randint(2, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    scores = torch.randint(0, 2, (b,), generator=g).float()
    scores[:4] = torch.tensor([1.0, 0.0, 1.0, 0.0])  # first group has variance
    probs = logp_full.exp()
    return {
        "logits": logits,
        "tokens": tokens,
        "logp": logp,
        "old_logp": logp.detach() + 0.1 * torch.randn(b, t, generator=g),
        "behav_logp": logp.detach() + 0.1 * torch.randn(b, t, generator=g),
        "ref_logp": ref_logp,
        "ref_logits": ref_logits,
        "teacher_logp": ref_logp + 0.05,
        "entropy": -(probs * logp_full).sum(-1),
        "target_ids": tokens,
        "mask": mask,
        "scores": scores,
        "group": torch.arange(b) // 4,
        "adv": torch.randn(b, generator=g),
        "seq_logp": (logp * mask).sum(-1),
        "prompt_ids": torch.arange(b) // 4,
        "answers": [str(int(x)) for x in torch.randint(0, 3, (b,), generator=g)],
        "reward_components": torch.rand(b, K, generator=g),
        "source": ["fresh"] * b,
        "step": 0,
        "num_tokens": None,
        "num_seqs": None,
        "max_len": None,
    }


def extra_inputs(entry: Entry, batch: dict, state=None) -> dict:
    """Keyword inputs `entry` asks for, taken from `batch`."""
    out = {}
    for name in entry.needs:
        if name == "state":
            out["state"] = state if state is not None else (entry.state() if entry.state else None)
        elif name != "mask" or entry.kind == "advantage":
            out[name] = batch[name]
    return out


def call_entry(entry: Entry, batch: dict, state=None, **hyper):
    """Call a registry entry with its positional contract inputs and the extras it needs."""
    kw = {**extra_inputs(entry, batch, state), **hyper}
    if entry.kind == "advantage":
        return entry.fn(batch["scores"], batch["group"], **kw)
    if entry.kind == "loss":
        return entry.fn(batch["logp"], batch["old_logp"], batch["adv"], batch["mask"], **kw)
    if entry.kind == "drift":
        return entry.fn(batch["logp"], batch["ref_logp"], batch["mask"], **kw)
    return entry.fn(batch["logp"], batch["mask"], **kw)
