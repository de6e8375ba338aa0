"""rollouts.jsonl: what the policy sampled at each RL step, a few completions with what they were given.

One line per completion, the first `train.log_rollouts` rows of the step's batch (the first group's
completions, or more groups when it is larger than the group size): the prompt and completion text, the
reward (as the advantages saw it: with DAPO's overlong penalty when algo.overlong_buffer is on), a dict or
combined reward's components, the advantage (a token-level estimator's mean over the completion's tokens),
the completion's length in tokens (EOS counted), whether it was cut at max_new_tokens, its group and where
it came from (fresh, or an estimator's extra rows), "filled": true when dynamic sampling ran out of rounds and
its group, one that failed the test, fills the batch, and the columns a TRL-form reward logged for it with
log_extra (under "extra"). TRL's completions table and verl's logged generations show the same; here it
is one JSON line per completion, beside metrics.jsonl, and a resume truncates it like the others. A
teacher-forced loss (psft, otr) samples nothing (its batch holds the data's solutions): it writes none.
"""

from __future__ import annotations

from policyforge.rollout.batch import RolloutBatch


def shortened(text: str, width: int, keep_end: bool = False) -> str:
    """`text`, or its first (`keep_end`: last) `width` characters marked with '...' when it is longer: a prompt
    keeps its end, where the question is, and a completion its start."""
    if len(text) <= width:
        return text
    return "..." + text[-width:] if keep_end else text[:width] + "..."


def rollout_records(step: int, batch: RolloutBatch, rows: int) -> list[dict]:
    """The rollouts.jsonl lines of RL step `step` from its scored, updated `batch`: its first `rows` samples."""
    n = min(rows, len(batch))
    if n == 0:
        return []
    mask = batch.completion_mask[:n].float().cpu()
    adv = batch.advantages[:n].float().cpu()
    if adv.dim() == 2:  # token-level advantages: their mean over the completion's tokens
        adv = (adv * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    lines = []
    for i in range(n):
        line = {"step": step, "group": int(batch.group[i]), "source": batch.source[i],
                "prompt": batch.examples[i].prompt, "completion": batch.completions[i],
                "reward": float(batch.scores[i]), "advantage": float(adv[i]),
                "completion_tokens": int(mask[i].sum()), "truncated": bool(batch.truncated[i])}
        if batch.reward_components is not None:
            line["reward_components"] = dict(zip(batch.reward_names, batch.reward_components[i].tolist()))
        if batch.length_penalty is not None:
            line["overlong_penalty"] = float(batch.length_penalty[i])
        if batch.extra and batch.extra[i]:
            line["extra"] = batch.extra[i]
        if batch.filled is not None and bool(batch.filled[i]):  # dynamic sampling ran out of rounds
            line["filled"] = True
        lines.append(line)
    return lines
