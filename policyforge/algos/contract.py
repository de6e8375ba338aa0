"""The contract of the math, checked by calling an entry on a small synthetic batch.

`check_entry` runs a registered function the way the trainer does, on 8 samples of up to 6 tokens in two
groups of 4 (the second group's rewards all equal, as a solved or failed prompt's are), and raises
ContractError naming the function, its file:line and the rule it breaks. The trainer runs it at start-up on
every function a user registered (train/algorithm.py), so a wrong shape, a NaN or a loss that leaks through
the mask fails in the first second, not at step 1 inside the library. tests/algos/test_contract.py runs it,
and stricter checks, over every built-in entry.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from policyforge.algos.registry import COUNTS, Entry, where
from policyforge.metrics.step_record import TIMING

B, T, V, K = 8, 6, 11, 2

# Names the step record writes itself (metrics/step_record.py, train/step.py): a loss's metric of the same
# name would overwrite the library's figure in metrics.jsonl.
RESERVED_METRICS = frozenset({
    "step", "reward_mean", "reward_std", "accuracy", "completion_len_mean", "completion_len_max", "truncation_rate",
    "zero_var_group_frac", "completion_tokens", "lr", "kl_ref", "kl_old", "overlong_penalty", "replayed_rows",
    "replayed_accuracy", "hinted_groups", "accuracy_unhinted", "hinted_accuracy", "refined_groups",
    "refined_accuracy", "loss", "grad_norm", "entropy", "adv_mean", "adv_abs_mean", "adv_zero_frac", *TIMING,
})
RESERVED_PREFIXES = ("reward/", "reward_fn/", "reward_model/", "drift/")


class ContractError(ValueError):
    """A registered function that breaks the contract of its kind."""


def sample_batch(seed: int = 0, b: int = B, t: int = T, v: int = V, grad: bool = False) -> dict[str, Any]:
    """One batch with every input the trainer can supply: groups of 4, ragged lengths, the second group's rewards
    all equal (a zero-variance group).

    With `grad`, `logits` is a leaf that requires grad and `logp` / `entropy` are computed from it, so a check
    can see which positions a gradient reaches.
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
    scores[:4] = torch.tensor([1.0, 0.0, 1.0, 0.0])  # the first group has variance
    scores[4:8] = 1.0  # the second has none
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


def check_entry(entry: Entry, hyper: dict[str, Any] | None = None) -> None:
    """ContractError when `entry`, with hyper-parameters `hyper`, breaks its kind's contract on a synthetic batch:
    an error raised, a wrong type or shape, a non-finite value, a loss or penalty (or its gradient) that is not
    zero where the mask is, a metric that is not a detached scalar or takes a name the step record uses, inputs
    changed in place, or an aggregation whose micro-batch losses do not add up to the full-batch loss."""
    hyper = dict(hyper or {})
    batch = sample_batch(grad=entry.kind != "advantage")
    before = {k: v.detach().clone() for k, v in batch.items() if isinstance(v, Tensor)}
    try:
        if entry.kind == "aggregation":
            _check_aggregation(entry, batch, hyper)
        else:
            out = call_entry(entry, batch, **hyper)
            {"advantage": _check_advantage, "loss": _check_loss, "drift": _check_penalty}[entry.kind](batch, out)
    except _Broken as e:
        raise ContractError(f"{_name(entry)}: {e} (checked on a synthetic batch of {B} samples x {T} tokens, two "
                            "groups of 4, the second with equal rewards)") from None
    except ContractError:
        raise
    except Exception as e:
        raise ContractError(f"{_name(entry)} raised {type(e).__name__}: {e} when called as the trainer calls a "
                            f"{entry.kind}, on a synthetic batch of {B} samples x {T} tokens") from e
    for k, v in before.items():
        if not torch.equal(batch[k].detach(), v):
            raise ContractError(f"{_name(entry)} changed its input {k!r} in place; the trainer reuses it (for the "
                                "logged rewards, the loss, the record): work on a copy")


class _Broken(Exception):
    """A rule `check_entry` found broken (it adds the entry's name and the batch)."""


def _name(entry: Entry) -> str:
    return f"{entry.kind} {entry.name!r} ({where(entry.fn)})"


def _tensor(out: Any, what: str, shapes: tuple[tuple[int, ...], ...]) -> Tensor:
    if not isinstance(out, Tensor):
        raise _Broken(f"{what} is a {type(out).__name__}, not a tensor")
    if tuple(out.shape) not in shapes:
        raise _Broken(f"{what} has shape {tuple(out.shape)}; expected " + " or ".join(str(s) for s in shapes))
    if not torch.isfinite(out).all():
        raise _Broken(f"{what} has {int((~torch.isfinite(out)).sum())} non-finite values (NaN or inf)")
    return out


def _check_advantage(batch: dict, adv: Any) -> None:
    _tensor(adv, "the advantage", ((B,), (B, T)))


def _check_loss(batch: dict, out: Any) -> None:
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
        raise _Broken(f"returned a {type(out).__name__}; a loss returns (per_token_loss, metrics dict)")
    loss, metrics = out
    for name, value in metrics.items():
        if not isinstance(value, (Tensor, float, int)) or (isinstance(value, Tensor) and value.dim() != 0):
            raise _Broken(f"metric {name!r} is not a scalar (a 0-d tensor or a number)")
        if isinstance(value, Tensor) and value.requires_grad:
            raise _Broken(f"metric {name!r} requires grad; compute metrics under torch.no_grad() or .detach() them")
        if name in RESERVED_METRICS or name.startswith(RESERVED_PREFIXES):
            raise _Broken(f"metric {name!r} would overwrite the step record's own figure of that name in "
                          "metrics.jsonl; give it another name")
    _check_penalty(batch, loss, "the per-token loss")


def _check_penalty(batch: dict, out: Any, what: str = "the per-token penalty") -> None:
    out = _tensor(out, what, ((B, T),))
    off = batch["mask"] == 0
    if (out[off] != 0).any():
        raise _Broken(f"{what} is not zero where the mask is 0 (padding); multiply it by the mask")
    if not out.requires_grad:
        raise _Broken(f"{what} carries no gradient back to logp")
    out.sum().backward()
    grad = batch["logits"].grad
    if grad is None or not torch.isfinite(grad).all():
        raise _Broken(f"the gradient of {what} is missing or not finite")
    if (grad[off] != 0).any():
        raise _Broken(f"{what} sends gradient to padding tokens (where the mask is 0)")


def _check_aggregation(entry: Entry, batch: dict, hyper: dict) -> None:
    per_token = -batch["logp"]
    mask = batch["mask"]
    full = _tensor(entry.fn(per_token, mask, **hyper), "the aggregated loss", ((),))
    counts = dict(zip(COUNTS, (int(mask.sum()), B, T)))
    parts = sum(entry.fn(per_token[i], mask[i], **counts, **hyper) for i in (slice(0, 3), slice(3, 5), slice(5, B)))
    if not torch.allclose(parts, full, atol=1e-5):
        raise _Broken(f"its losses of three micro-batches, given the whole batch's counts ({', '.join(COUNTS)}), add "
                      f"up to {float(parts.detach()):.6g}, not the full-batch {float(full.detach()):.6g}; "
                      "gradient accumulation needs them equal (normalise by the counts it is given, not by the "
                      "micro-batch's own)")
