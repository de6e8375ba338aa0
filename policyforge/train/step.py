"""One optimisation step on a scored rollout batch: advantages, loss, drift, update.

The math comes from the registry entries resolved in `Algorithm`; this file only
feeds them the inputs they declared and accumulates micro-batch gradients so that
their sum is exactly the full-batch gradient (the aggregation gets the whole
batch's token and sequence counts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from policyforge.algos.drift import k3
from policyforge.algos.losses_offpolicy import hindsight_shaping, refinement_shaping
from policyforge.algos.registry import Entry, is_builtin, where
from policyforge.rollout.batch import RolloutBatch
from policyforge.train.algorithm import Algorithm
from policyforge.train.distributed import World
from policyforge.train.logprobs import forward_logprobs


@dataclass
class BatchTensors:
    """Per-sample values fixed for the whole batch (every field (B, ...) or None)."""

    adv: Tensor  # (B,) or (B, T)
    old_logp: Tensor | None  # (B, T); None when the batch gets one update (old == current, detached)
    extra: dict[str, Any] = field(default_factory=dict)  # ref_logp (B, T), teacher_logp (B, T), ... when needed
    learns: Tensor | None = None  # (B,) bool: the rows the loss counts (algo.mask_truncated); None = all

    def loss_mask(self, mask: Tensor, idx: Tensor | None = None) -> Tensor:
        """`mask` (of the rows `idx`, or of the whole batch) with the rows the loss leaves out zeroed."""
        if self.learns is None:
            return mask
        return mask * (self.learns if idx is None else self.learns[idx])[:, None].to(mask.dtype)


def batch_context(batch: RolloutBatch, algo: Algorithm, step: int) -> dict[str, Any]:
    """The batch inputs any entry may ask for that need no forward pass."""
    mask = batch.completion_mask
    comps = batch.reward_components  # (B, K) from a dict reward; a number reward is one component
    if comps is None and batch.scores is not None:
        comps = batch.scores[:, None]
    return {
        "mask": mask,
        "behav_logp": batch.behav_logp,
        "seq_logp": (batch.behav_logp * mask).sum(-1),
        "prompt_ids": torch.tensor([ex.index for ex in batch.examples], device=mask.device),
        "answers": [c.strip() for c in batch.completions],
        "reward_components": comps,
        "source": batch.source,
        "step": step,
    }


def inputs_for(entry: Entry, ctx: dict[str, Any], algo: Algorithm) -> dict[str, Any]:
    """Keyword inputs `entry` declared, taken from `ctx` (its state from `algo`)."""
    out = {}
    for name in entry.needs:
        if name == "state":
            out["state"] = algo.states[f"{entry.kind}:{entry.name}"]
        elif name in ctx:
            out[name] = ctx[name]
        elif not (name == "mask" and entry.kind != "advantage"):
            raise KeyError(f"{entry.kind} {entry.name!r} needs batch input {name!r}, which this run does not provide")
    return out


def reference_inputs(algo: Algorithm, batch: RolloutBatch, ref_out: dict[str, Tensor]) -> dict[str, Tensor]:
    """Batch inputs that come from the reference forward, or from the batch itself, when asked for.

    The teacher of kdrl is the reference model (the initial policy unless model.ref_path
    is set); `target_ids` are the completion tokens, which for teacher-forced losses
    (psft, otr) are the reference solutions.
    """
    needs, out = algo.needs(), {}
    if "logp" in ref_out:
        out["ref_logp"] = ref_out["logp"]
    if "teacher_logp" in needs:
        out["teacher_logp"] = ref_out["logp"]
    if "ref_logits" in needs:
        out["ref_logits"] = ref_out["logits"]
    if "target_ids" in needs:
        out["target_ids"] = batch.completion_ids
    return out


def compute_advantages(batch: RolloutBatch, algo: Algorithm, step: int, extra: dict[str, Tensor] | None = None) -> Tensor:
    ctx = {**batch_context(batch, algo, step), **(extra or {})}
    kw = {**algo.advantage_kwargs, **inputs_for(algo.advantage, ctx, algo)}
    return algo.advantage.fn(batch.scores.clone(), batch.group, **kw)  # a copy: the record logs the rewards


def micro_batches(batch: RolloutBatch, max_seqs: int, max_tokens: int = 0, whole_groups: bool = False) -> list[Tensor]:
    """Index sets of at most `max_seqs` sequences and `max_tokens` padded tokens, padded little.

    Sequences are taken longest first, so each micro-batch is trimmed to a similar length.
    With `whole_groups`, a group's samples stay together (for the shared-prefix forward), in pieces of
    `max_seqs` when the group is larger (Knapsack RL's groups can be).
    """
    lengths = batch.completion_mask.sum(-1)
    p = batch.prompt_ids.shape[1]
    if whole_groups:
        uniq, inv = torch.unique(batch.group, return_inverse=True)
        glen = torch.zeros(len(uniq), device=lengths.device).scatter_reduce(0, inv, lengths, reduce="amax")
        units = [piece for g in torch.argsort(glen, descending=True, stable=True).tolist()
                 for piece in torch.nonzero(inv == g).squeeze(-1).split(max_seqs)]
    else:
        units = [i.view(1) for i in torch.argsort(lengths, descending=True, stable=True)]
    out, cur, width = [], [], 0
    for u in units:
        w = max(width, int(lengths[u].max()))
        n = sum(len(c) for c in cur) + len(u)
        if cur and (n > max_seqs or (max_tokens and n * (p + w) > max_tokens)):
            out.append(torch.cat(cur))
            cur, w = [], int(lengths[u].max())
        cur.append(u)
        width = w
    if cur:
        out.append(torch.cat(cur))
    return out


def inert_rows(adv: Tensor, mask: Tensor, algo: Algorithm) -> Tensor | None:
    """(B,) True for the samples whose backward would add exactly nothing, or None when there are none.

    Those are the samples with a zero advantage on every token (a GRPO group whose rewards are
    all equal), under a loss that declares them inert (Entry.zero_adv_inert: no loss, no
    gradient, no effect on the others) and with no drift term, whose pull does not depend on
    the advantage.
    """
    if not algo.loss.zero_adv_inert or algo.drift:
        return None
    # live: a non-zero advantage on a token the loss counts (a row algo.mask_truncated leaves out never is)
    live = (((adv[:, None] if adv.dim() == 1 else adv) != 0) & (mask > 0)).any(-1)
    return None if bool(live.all()) else ~live


def micro_batch_plan(batch: RolloutBatch, inert: Tensor | None, max_seqs: int, max_tokens: int = 0,
                     whole_groups: bool = False) -> list[tuple[Tensor, bool]]:
    """(sample indices, run backward?) of each micro-batch: the samples that carry a gradient
    first, then the inert ones, which get a forward pass without autograd for their metrics.

    When every sample is inert, the first micro-batch still runs backward: its gradients are
    the zeros the full backward would give, and AdamW's step differs between zero and no gradient.
    """
    if inert is None:
        return [(idx, True) for idx in micro_batches(batch, max_seqs, max_tokens, whole_groups)]
    plan = []
    for rows, learn in ((torch.nonzero(~inert).squeeze(-1), True), (torch.nonzero(inert).squeeze(-1), False)):
        if len(rows):
            chunks = micro_batches(batch.select(rows), max_seqs, max_tokens, whole_groups)
            plan += [(rows[idx], learn) for idx in chunks]
    if not plan[0][1]:
        plan[0] = (plan[0][0], True)
    return plan


def micro_step(model, mb: RolloutBatch, bt: BatchTensors, idx: Tensor, algo: Algorithm, ctx: dict, counts: dict,
               temperature: float, shared_prefix: bool, refine: tuple[str, float] = ("critique_grpo", 0.1)
               ) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss of one micro-batch (already scaled for accumulation) and its metrics."""
    mb, width = mb.trimmed()
    mask = bt.loss_mask(mb.completion_mask, idx)  # the forward still reads every token
    fw = forward_logprobs(model, mb, temperature, want_logits="logits" in algo.needs(), shared_prefix=shared_prefix)
    old = bt.old_logp[idx, :width] if bt.old_logp is not None else fw["logp"].detach()
    local = dict(ctx, entropy=fw["entropy"], logits=fw.get("logits"), behav_logp=mb.behav_logp)
    for k, v in bt.extra.items():  # (B, T, ...) inputs are sliced to the micro-batch and its width
        local[k] = v[idx][:, :width] if v.dim() > 1 else v[idx]
    for k in ("seq_logp", "prompt_ids", "reward_components"):
        if local.get(k) is not None:
            local[k] = ctx[k][idx]
    local["answers"] = [ctx["answers"][i] for i in idx.tolist()]
    local["source"] = [ctx["source"][i] for i in idx.tolist()]
    adv = bt.adv[idx] if bt.adv.dim() == 1 else bt.adv[idx, :width]
    # Critique-GRPO, HeRL: a refinement's tokens take the shaped loss (train/refine.py, train/hindsight.py); the run's
    # loss sees the other rows
    # alone, so that its batch-wide choices (bapo's bounds, clip_cov's tokens) and metrics are theirs
    refined = (torch.tensor([s == "refined" for s in local["source"]], device=mask.device)
               if "refined" in local["source"] else None)  # None on the usual path: no tensor built per micro-batch
    own_mask = mask if refined is None else mask * ~refined[:, None]
    per_tok, metrics = algo.loss.fn(fw["logp"], old, adv, own_mask, **algo.loss_kwargs,
                                    **inputs_for(algo.loss, local, algo))
    if refined is not None:
        method, gamma = refine
        shaped = (hindsight_shaping(fw["logp"], old, adv, mask, gamma=gamma) if method == "herl"
                  else refinement_shaping(fw["logp"], adv, mask, gamma=gamma))
        per_tok = torch.where(refined[:, None], shaped, per_tok)
    drift_means = {}
    # DeepSeek-V3.2's unbiased KL estimate: tokens sampled from pi_old weigh by pi/pi_old (value 1 on-policy, not
    # its gradient); only a term estimated from the sampled token is weighted (sampled_estimate)
    weight = torch.exp(fw["logp"] - old) if algo.drift_unbiased else None
    for entry, coef, hyper in algo.drift:
        pen = entry.fn(fw["logp"], local["ref_logp"], mask, **hyper, **inputs_for(entry, local, algo))
        per_tok = per_tok + coef * (pen * weight if weight is not None and sampled_estimate(entry) else pen)
        drift_means[f"drift/{entry.name}"] = pen.detach().sum() / mask.sum().clamp(min=1)  # before its coefficient
    loss = algo.aggregation.fn(per_tok, mask, **counts)
    with torch.no_grad():
        metrics = {**metrics, **drift_means}
        metrics["entropy"] = (fw["entropy"] * mask).sum() / mask.sum().clamp(min=1)
        # KL(pi_old || pi) on tokens sampled from pi_old: k3 with pi_old as the sampling side (kl_ref: pi's)
        metrics["kl_old"] = k3(old, fw["logp"], mask).sum() / mask.sum().clamp(min=1)
    return loss, metrics


def sampled_estimate(entry) -> bool:
    """Whether a drift term estimates its divergence from the sampled token alone (k1, k2, k3, k3_st, most users'
    own), which algo.drift_unbiased weights by pi/pi_old; a full-vocabulary one (forward_kl, js) is exact at each
    position, and the entropy bonus is no divergence (TRL leaves it unweighted too)."""
    return not {"logits", "ref_logits", "entropy"} & set(entry.needs)


class NonFiniteUpdate(RuntimeError):
    """A step whose gradient is NaN or inf: stopped before the optimiser could write it into the weights."""


def non_finite_text(algo: Algorithm, step: int, norm: float, loss: float) -> str:
    """Why step `step` stopped, naming the math that made its gradient and what to try."""
    entries = [algo.advantage, algo.loss, algo.aggregation] + [e for e, _, _ in algo.drift]
    named = ", ".join(f"{e.kind} {e.name!r}" for e in entries)
    own = [f"{e.kind} {e.name!r} ({where(e.fn)})" for e in entries if not is_builtin(e)]
    cause = (f"a function of yours may give NaN or inf on some batch: {', '.join(own)}; or the learning rate is too "
             "high for this model (optim.lr)" if own else
             "the learning rate may be too high for this model (optim.lr), or a reward too large (rewards of "
             "1e30 overflow)")
    return (f"step {step}: the gradient is not finite (norm {norm}, loss {loss:.6g}), so the update was not applied "
            f"and the weights are as before it. The step's math: {named}. Likely cause: {cause}")


def merge_metrics(parts: list[tuple[dict[str, float], float]]) -> dict[str, float]:
    """Token-weighted mean of micro-batch metrics; *_min / *_max take the min / max."""
    out: dict[str, float] = {}
    total = sum(w for _, w in parts) or 1.0
    for name in parts[0][0] if parts else []:
        vals = [(float(m[name]), w) for m, w in parts if name in m]
        if name.endswith(("_min", "_max")):  # a micro-batch of masked rows only (algo.mask_truncated) has no ratio
            vals = [(v, w) for v, w in vals if w > 0] or vals
        if name.endswith("_min"):
            out[name] = min(v for v, _ in vals)
        elif name.endswith("_max"):
            out[name] = max(v for v, _ in vals)
        else:
            out[name] = sum(v * w for v, w in vals) / total
    return out


def update(model, optimizer, scheduler, batch: RolloutBatch, bt: BatchTensors, algo: Algorithm, *, step: int,
           updates: int, micro_batch_size: int, max_grad_norm: float, temperature: float, max_len: int,
           micro_batch_tokens: int = 0, shared_prefix: bool = False,
           skip_zero_advantage: bool = True, world: World | None = None,
           rows: Tensor | None = None, refine: tuple[str, float] = ("critique_grpo", 0.1)) -> dict[str, float]:
    """`updates` optimiser steps on `batch`, each accumulating over micro-batches.

    With `skip_zero_advantage`, samples that add nothing to the gradient (`inert_rows`) skip
    the backward pass; the update and the recorded metrics are the same as without.
    Data-parallel (`world` of several processes): `batch` is the global batch, this process
    runs forward and backward on its `rows` only, and the gradients are summed across processes
    before clipping (train/distributed.py). Rows tagged "refined" take, in place of the loss, the shaping of
    `refine` = (rollout.refine_method, its gamma): algos.refinement_shaping (Critique-GRPO) or
    algos.hindsight_shaping (HeRL).
    """
    world = world or World.single()
    ctx = batch_context(batch, algo, step)
    mask = bt.loss_mask(batch.completion_mask)
    # of the global batch; at least 1: with every row masked (algo.mask_truncated) the loss is 0, not 0 / 0
    counts = {"num_tokens": max(int(mask.sum()), 1), "num_seqs": len(batch), "max_len": max_len}
    params = [p for p in model.parameters() if p.requires_grad]
    inert = inert_rows(bt.adv, mask, algo) if skip_zero_advantage else None
    if rows is None or world.size == 1:
        plan = micro_batch_plan(batch, inert, micro_batch_size, micro_batch_tokens, whole_groups=shared_prefix)
    else:
        plan = micro_batch_plan(batch.select(rows), None if inert is None else inert[rows], micro_batch_size,
                                micro_batch_tokens, whole_groups=shared_prefix)
        plan = [(rows[idx], learn) for idx, learn in plan]
    metrics: dict[str, float] = {}
    for _ in range(updates):
        optimizer.zero_grad(set_to_none=True)
        parts, total = [], 0.0
        for idx, learn in plan:
            # a parameter only skipped samples reach (an MoE expert run only on the tokens routed to it) needs
            # the exact zero gradient their backward gives: AdamW moves one with a zero gradient (momentum,
            # weight decay) but leaves one with none alone. Dense models have every gradient by now.
            learn = learn or any(p.grad is None for p in params)
            with torch.set_grad_enabled(learn):
                loss, m = micro_step(model, batch.select(idx), bt, idx, algo, ctx, counts, temperature, shared_prefix,
                                     refine)
            if learn:
                loss.backward()
            total += float(loss.detach())  # micro-batch losses add up to the full-batch loss
            parts.append(({k: float(v) for k, v in m.items()}, float(mask[idx].sum())))
        world.all_reduce_grads(params)
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
        if not math.isfinite(float(norm)):  # the same on every process (the gradients were summed first)
            raise NonFiniteUpdate(non_finite_text(algo, step, float(norm), total))
        optimizer.step()
        scheduler.step()
        if world.size > 1:  # every process's micro-batches, so the record describes the whole batch
            gathered = world.gather_objects((parts, total))
            parts, total = [x for ps, _ in gathered for x in ps], sum(t for _, t in gathered)
        metrics = merge_metrics(parts)
        metrics.update(loss=total, grad_norm=float(norm))
    return metrics
