"""RLEP's replay inside the RL step: each group of fresh completions is joined by completions drawn from the
experience pool (data/replay.py), before scoring, so that the reward and the group's advantages see them all.

As in RLEP's code (built on verl, which recomputes every row's old log-probs before the update), a replayed row's
log-probs are the current policy's: its behav_logp, when a chosen function reads it, is a forward of the current
policy (as the teacher-forced losses' reference solutions get, setup.reference_batch), so no importance weight
toward the seed policy that wrote it is applied, and with one update per batch its ratio is 1 like a fresh row's. Replayed rows are scored
by the run's reward like fresh ones (RLEP's too), and keep their reward whatever it is.
"""

from __future__ import annotations

import torch

from policyforge.data.replay import ReplayPool, read_pool, training_prompts
from policyforge.data.tasks import DataError
from policyforge.rollout.batch import RolloutBatch
from policyforge.train.config import ConfigError
from policyforge.train.setup import completion_batch, read_as_padding


def with_replayed(batch: RolloutBatch, pool: ReplayPool, model, tokenizer, cfg, step: int,
                  behaviour: bool = True) -> RolloutBatch:
    """`batch`'s fresh groups, each followed by up to data.replay_per_prompt of its prompt's pooled completions in
    the same group (tagged "replayed"); a pooled completion longer than the budget (its ending or EOS counted) is
    never drawn. `behaviour`: whether their behav_logp is needed (a chosen function reads behav_logp or seq_logp;
    the step record's kl_ref leaves replayed rows out), else it stays 0 and no forward runs for it."""
    fits = replayable(pool, tokenizer, cfg.rollout)
    examples, given, groups = [], [], []
    for g, i in batch.first_rows().items():
        drawn = pool.draw(batch.examples[i].prompt, cfg.data.replay_per_prompt, cfg.train.seed, step, fits)
        examples += [batch.examples[i]] * len(drawn)
        given += drawn
        groups += [g] * len(drawn)
    if not given:
        return batch
    extra = completion_batch(model, tokenizer, examples, given, cfg.rollout, cfg.optim, "replayed", behaviour)
    extra.group = torch.tensor(groups, device=batch.group.device)
    return batch.regrouped(extra)  # a group's rows together, fresh first


def replayable(pool: ReplayPool, tokenizer, rc):
    """Whether a pooled (completion, ending) is one this run's sampler could have written: it fits the budget
    (its ending or EOS counted), holds none of rollout.stop's strings before its end, and ends with EOS or with
    one of them (a completion a stop string ended, replayed in a run without it, would end where this run's
    policy goes on)."""
    def fits(entry) -> bool:
        text, ending = entry
        if entry not in pool.lengths:  # each pooled completion is measured once a run
            pool.lengths[entry] = len(tokenizer(text + ending, add_special_tokens=False)["input_ids"]) + (not ending)
        stops = [s for s in rc.stop if s]
        return (pool.lengths[entry] <= rc.max_new_tokens and not any(s in text for s in stops)
                and (not ending or any(s in ending for s in stops)))
    return fits


def check_replay(dc, algo) -> None:
    """ConfigError for a data.replay_pool setting this run cannot use."""
    if dc.replay_per_prompt < 1:
        raise ConfigError(f"data.replay_per_prompt={dc.replay_per_prompt}: at least 1 (RLEP replays 2)")
    if dc.replay_pool is None:
        if dc.replay_per_prompt != type(dc).replay_per_prompt:
            raise ConfigError(f"data.replay_per_prompt={dc.replay_per_prompt} is read only with data.replay_pool: "
                              "give the pool file (`policyforge collect` writes one), or leave it out")
        return
    if algo.teacher_forced():
        raise ConfigError("data.replay_pool with a loss that trains on the data's solutions (psft, otr): nothing is "
                          "sampled, so there is no group to replay into; leave the pool out")
    if algo.advantage.name == "spo":
        raise ConfigError("data.replay_pool with algo.advantage=spo: SPO has no groups (one completion a prompt, "
                          "its baseline a per-prompt tracker), and RLEP's replayed rows join a group; leave it out")


COVERAGE_PROBES = 20_000  # training positions the start-up line looks up in the pool (a large run's are many)


def load_pool(dc) -> ReplayPool | None:
    """data.replay_pool's pool, None without one (read before any model loads: a bad file fails first)."""
    return None if dc.replay_pool is None else read_pool(dc.replay_pool)


def check_pool_text(pool: ReplayPool, tokenizer) -> None:
    """DataError naming the first pooled completion the tokenizer would read (partly) as padding: the reward would
    score its text while the policy trained on pad tokens (a pool collected with another model's tokenizer)."""
    entries = [(prompt, text + ending) for prompt, pooled in pool.by_prompt.items() for text, ending in pooled]
    encoded = tokenizer([text for _, text in entries], add_special_tokens=False)["input_ids"] if entries else []
    for (prompt, text), ids in zip(entries, encoded):
        unknown = read_as_padding(tokenizer, text, ids)
        if unknown:
            raise DataError(f"data.replay_pool {pool.path}: the completion {text[:40]!r} of the prompt {prompt[:40]!r} "
                            f"has {unknown}; collect the pool with this run's model (`policyforge collect`)")


def check_coverage(pool: ReplayPool | None, tokenizer, source, cfg, log) -> None:
    """A start-up line on how much of the run `pool` serves: how many of the first train.steps x prompts_per_step
    training prompts (those a run reads without dynamic sampling; at most COVERAGE_PROBES) have a completion this
    run can replay (`replayable`); DataError when none has, since the run would then replay nothing."""
    if pool is None:
        return
    check_pool_text(pool, tokenizer)
    fits = replayable(pool, tokenizer, cfg.rollout)
    n = min(cfg.train.steps * cfg.rollout.prompts_per_step, COVERAGE_PROBES)
    prompts = [e.prompt for e in training_prompts(source, n)]
    pooled = sum(1 for p in prompts if pool.completions(p))
    served = sum(1 for p in prompts if any(fits(c) for c in pool.completions(p)))
    rule = f"rollout.max_new_tokens {cfg.rollout.max_new_tokens}" + (f" and rollout.stop {cfg.rollout.stop}"
                                                                      if cfg.rollout.stop else "")
    if served == 0:
        why = (f"the {pooled} that are in it have no completion that fits {rule} (one longer than the budget, "
               "or one the run's stop strings would have ended sooner or not ended, is never replayed)" if pooled
               else "it was collected with other settings (data.*: task, task_size, file, chat template, system "
                    "prompt; train.seed, which orders a built-in task's problems)")
        raise DataError(f"data.replay_pool {pool.path}: none of the run's first {len(prompts)} training prompts has a "
                        f"completion this run can replay: {why}")
    log(f"data.replay_pool: {len(pool)} completions of {len(pool.by_prompt)} prompts; {served} of the first "
        f"{len(prompts)} training prompts have some this run can replay ({rule}), up to {cfg.data.replay_per_prompt} "
        "a group (RLEP)" + (f"; {pooled - served} more are pooled but none of theirs fits" if pooled > served else ""))
