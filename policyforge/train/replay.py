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
from policyforge.rollout.batch import RolloutBatch
from policyforge.train.config import ConfigError
from policyforge.train.setup import completion_batch


def with_replayed(batch: RolloutBatch, pool: ReplayPool, model, tokenizer, cfg, step: int,
                  behaviour: bool = True) -> RolloutBatch:
    """`batch`'s fresh groups, each followed by up to data.replay_per_prompt of its prompt's pooled completions in
    the same group (tagged "replayed"); a pooled completion longer than the budget (its ending or EOS counted) is
    never drawn. `behaviour`: whether their behav_logp is needed (a chosen function reads behav_logp or seq_logp;
    the step record's kl_ref leaves replayed rows out), else it stays 0 and no forward runs for it."""
    budget = cfg.rollout.max_new_tokens

    def fits(entry) -> bool:  # each pooled completion is measured once a run
        if entry not in pool.lengths:
            pool.lengths[entry] = len(tokenizer(entry[0] + entry[1], add_special_tokens=False)["input_ids"]) + (
                not entry[1])  # the EOS after a completion without a stop string
        return pool.lengths[entry] <= budget

    first_row: dict[int, int] = {}
    for i, g in enumerate(batch.group.tolist()):
        first_row.setdefault(g, i)
    examples, given, groups = [], [], []
    for g, i in first_row.items():
        drawn = pool.draw(batch.examples[i].prompt, cfg.data.replay_per_prompt, cfg.train.seed, step, fits)
        examples += [batch.examples[i]] * len(drawn)
        given += drawn
        groups += [g] * len(drawn)
    if not given:
        return batch
    extra = completion_batch(model, tokenizer, examples, given, cfg.rollout, cfg.optim, "replayed", behaviour)
    extra.group = torch.tensor(groups, device=batch.group.device)
    width = max(batch.prompt_ids.shape[1], extra.prompt_ids.shape[1])
    whole = RolloutBatch.concat(batch.left_padded(width), extra.left_padded(width))
    return whole.select(torch.sort(whole.group, stable=True).indices)  # a group's rows together, fresh first


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


def load_pool(dc, source, n_positions: int, log) -> ReplayPool | None:
    """data.replay_pool's pool (None without one), and a start-up line on how much of the run it covers: how many
    of the first `n_positions` training prompts (the train.steps x prompts_per_step a run reads without dynamic
    sampling; at most COVERAGE_PROBES of them) have completions in it."""
    if dc.replay_pool is None:
        return None
    pool = read_pool(dc.replay_pool)
    prompts = [e.prompt for e in training_prompts(source, min(n_positions, COVERAGE_PROBES))]
    covered = sum(1 for p in prompts if pool.completions(p))
    log(f"data.replay_pool: {len(pool)} completions of {len(pool.by_prompt)} prompts; {covered} of the first "
        f"{len(prompts)} training prompts have some, and get up to {dc.replay_per_prompt} a group (RLEP)")
    if covered == 0:
        log("warning: none of the first training prompts of this run is in data.replay_pool, so nothing will be "
            "replayed: was it collected with other data.* settings (task, file, seed, chat template, system prompt)?")
    return pool
