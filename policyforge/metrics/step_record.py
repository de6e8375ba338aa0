"""The metrics.jsonl line of one RL step, from its scored batch and its update's numbers."""

from __future__ import annotations

import json

import torch
from torch import Tensor

from policyforge.algos.drift import k3
from policyforge.data.dynamic_sampling import informative_rows
from policyforge.rewards.score import solved_rows

# the record's wall-clock figures (train/loop.py train_step): the only ones two runs of one seed may differ in
TIMING = ("step_s", "tokens_per_s", "rollout_s", "reward_s", "update_s")


def step_record(step: int, batch, m: dict, ref_logp, lr: float, loss_mask=None, replaying: bool = False,
                hinting: bool = False, refining: bool = False) -> dict:
    """One metrics.jsonl line.

    Rewards, accuracy, lengths, truncation and kl_ref describe the policy's own samples: AEPO's
    tempered rows (drawn from pi^T), RLEP's replayed rows (from its pool) and Critique-GRPO's refined rows
    (sampled under the refinement prompt) are left out of them; refined_groups counts the groups refinements
    joined and refined_accuracy is the share of refined rows that are correct;
    zero_var_group_frac and tokens_per_s count every trained row, and so do the reward_fn/* means of what
    a TRL-form reward logs (the loop adds them: rewards/batched.py). With replayed rows, replayed_rows
    counts them and replayed_accuracy is the share the reward still accepts. GHPO's hinted rows count as
    the policy's own (its trainer logs them so); hinted_groups, hinted_accuracy and accuracy_unhinted (the
    accuracy before any hint) say what the hints did. kl_ref, like the loss's own metrics, covers the tokens of `loss_mask`
    (the completion mask less the rows algo.mask_truncated leaves out; TRL's kl does the same).
    With algo.overlong_buffer, reward_mean and reward_std are of the penalised reward the advantages
    saw, `overlong_penalty` is the penalty's mean, and accuracy is decided on the reward without it.
    """
    mask = batch.completion_mask
    lengths = mask.sum(-1)
    own_rows = torch.tensor([src not in ("tempered", "replayed", "refined") for src in batch.source], device=mask.device)
    s = batch.scores
    n_groups = int(torch.unique(batch.group).numel())
    zero_var = len(set(batch.group[~informative_rows(s, batch.group)].tolist()))  # groups whose rewards are alike
    own_s, own_len = s[own_rows], lengths[own_rows]
    penalty = batch.length_penalty  # DAPO's soft overlong punishment, in the reward but not in what "solved" means
    solved = solved_rows(batch)
    correct = solved[own_rows]
    rec = {"step": step, "reward_mean": float(own_s.mean()),
           "reward_std": float(own_s.std()) if own_s.numel() > 1 else 0.0,  # one sample: no spread (not NaN)
           "accuracy": float(correct.float().mean()),
           "completion_len_mean": float(own_len.mean()), "completion_len_max": float(own_len.max()),
           "truncation_rate": float(batch.truncated[own_rows].float().mean()),
           "zero_var_group_frac": zero_var / n_groups, "completion_tokens": float(lengths.sum()), "lr": lr}
    if batch.reward_components is not None:  # a dict reward: the mean of each component
        comps = batch.reward_components[own_rows]
        rec.update({f"reward/{n}": float(c.mean()) for n, c in zip(batch.reward_names, comps.T)})
    if penalty is not None:  # its mean (<= 0), part of reward_mean
        rec["overlong_penalty"] = float(penalty[own_rows].mean())
    replayed = torch.tensor([src == "replayed" for src in batch.source], device=mask.device)
    if replayed.any() or replaying:  # `replaying`: a pool is set, so a step that replayed nothing records 0
        rec["replayed_rows"] = int(replayed.sum())
    if replayed.any():
        rec["replayed_accuracy"] = float(solved[replayed].float().mean())
    hinted = torch.tensor([src == "hinted" for src in batch.source], device=mask.device)
    if hinted.any() or hinting:  # hinted rows count in accuracy, as in GHPO's and Scaf-GRPO's trainers; the rows
        # they replaced were all wrong and as many (GHPO: a whole group, Scaf-GRPO: one row), so the accuracy
        # before any hint leaves their successes out
        rec.update(hinted_groups=len(set(batch.group[hinted].tolist())),
                   accuracy_unhinted=float((solved & own_rows & ~hinted).sum() / own_rows.sum()))
    if hinted.any():
        rec["hinted_accuracy"] = float(solved[hinted].float().mean())
    refined = torch.tensor([src == "refined" for src in batch.source], device=mask.device)
    if refined.any() or refining:  # Critique-GRPO: the groups refinements joined, and how many of those are right
        rec["refined_groups"] = len(set(batch.group[refined].tolist()))
    if refined.any():
        rec["refined_accuracy"] = float(solved[refined].float().mean())
    if ref_logp is not None:  # k3 on the policy's own samples
        own = (mask if loss_mask is None else loss_mask) * own_rows[:, None]
        rec["kl_ref"] = float(k3(batch.behav_logp, ref_logp, own).sum() / own.sum().clamp(min=1))  # KL(pi || ref)
    rec.update(m)
    return json.loads(json.dumps(rec))  # plain floats only


def advantage_figures(adv: Tensor, mask: Tensor) -> dict[str, float]:
    """What the advantage estimator gave, over the tokens the loss counts: adv_mean, adv_abs_mean (its scale), and
    adv_zero_frac, the share of rows whose advantage is zero on all of them (no gradient from those rows)."""
    a = adv[:, None].expand_as(mask) if adv.dim() == 1 else adv
    n = mask.sum().clamp(min=1)
    live = ((a != 0) & (mask > 0)).any(-1)
    return {"adv_mean": float((a * mask).sum() / n), "adv_abs_mean": float((a.abs() * mask).sum() / n),
            "adv_zero_frac": float(1 - live.float().mean())}


def bar_fields(record: dict) -> dict[str, str]:
    """The progress bar's figures of a step's record: reward, batch accuracy, KL to the reference (measured only
    with a reference model: a drift term or train.track_ref_kl), entropy, and with dynamic sampling its rounds."""
    shown = {"reward": f"{record['reward_mean']:.2f}", "acc": f"{record['accuracy']:.2f}"}
    if "kl_ref" in record:
        shown["kl"] = f"{record['kl_ref']:.3f}"
    shown["ent"] = f"{record['entropy']:.2f}"
    if "sampling_rounds" in record:
        shown["rounds"] = str(record["sampling_rounds"])
    return shown
