"""Section 4 of the RL loop: a group of completions for each prompt, scored; with rollout.dynamic_sampling,
more prompts sampled until the batch is full of groups that teach something (data/dynamic_sampling.py)."""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import Tensor

from policyforge.algos.grouping import group_ids
from policyforge.data.dynamic_sampling import MODES, VERL_METRICS, chosen_groups, informative_rows
from policyforge.rewards.batched import Logged, scoring
from policyforge.rewards.overlong import soft_overlong_punishment
from policyforge.rewards.score import ids_for, same_components, score_parts, solved_rows
from policyforge.rewards.spec import reward_model_alone
from policyforge.rollout.batch import RolloutBatch
from policyforge.train.config import ConfigError, RolloutConfig
from policyforge.train.evaluate import trainer_state
from policyforge.train.hindsight import with_hindsight
from policyforge.train.hints import with_hints
from policyforge.train.refine import with_refinements
from policyforge.train.replay import with_replayed
from policyforge.train.setup import add_tempered_rows, reference_batch, rollout


def scored_rollout(p, step: int, examples: list) -> tuple[RolloutBatch, Tensor, Logged]:
    """The scored global batch of `examples`' groups (data-parallel: every process's rows), the positions of this
    process's rows in it, and what the reward functions logged. `p` is the loop's StepParts."""
    algo, rc, world = p.algo, p.cfg.rollout, p.world
    sizes = p.budget.sizes(examples) if p.budget is not None else None  # Knapsack RL: over the step's prompts
    examples = world.share(examples)  # data-parallel: this process's prompts (all of them in one process)
    if algo.teacher_forced():
        batch = reference_batch(p.model, p.tok, examples, rc, p.cfg.optim)
    else:
        with p.phase(f"sampling {len(examples)} groups"):
            batch = rollout(p.model, p.tok, examples, rc, p.gen, None if sizes is None else world.share(sizes))
    if p.replay is not None:  # RLEP: each group joined by pooled completions of its prompt
        batch = with_replayed(batch, p.replay, p.model, p.tok, p.cfg, step,
                              behaviour=bool({"behav_logp", "seq_logp"} & algo.needs()))
    if algo.tempered_temperature() is not None:  # AEPO: extra groups at an entropy-controlled temperature
        batch = add_tempered_rows(batch, p.model, p.tok, examples, rc, p.gen, algo.tempered_temperature())
    logged = scored(p, step, batch)
    if rc.hints != "off" and step > rc.hint_warmup_steps:  # GHPO, Scaf-GRPO: hints for unsolved groups (hints.py)
        batch, more = with_hints(p, step, batch, lambda b: scored(p, step, b))
        logged = Logged.merged([lg.totals for lg in [logged, *more]])
    if rc.refinements:  # Critique-GRPO, HeRL: critique-guided rewrites join the unsolved groups (refine.py, hindsight.py)
        refined = with_hindsight if rc.refine_method == "herl" else with_refinements
        batch, more = refined(p, step, batch, lambda b: scored(p, step, b))
        logged = Logged.merged([lg.totals for lg in [logged, *more]])
    batch, rows = world.gather_batch(batch)  # every process's scored rows; `rows` are this one's
    if p.cfg.algo.overlong_buffer:  # DAPO's soft overlong punishment: part of the reward the advantages see
        batch.length_penalty = soft_overlong_punishment(batch.completion_mask.sum(-1), rc.max_new_tokens,
                                                        p.cfg.algo.overlong_buffer, p.cfg.algo.overlong_penalty)
        batch.scores = batch.scores + batch.length_penalty
    return batch, rows, logged


def scored(p, step: int, batch: RolloutBatch) -> Logged:
    """Score `batch`'s rows with the run's reward, in place (scores, a dict reward's components, each row's
    log_extra columns); returns what the reward functions logged."""
    t0 = time.perf_counter()
    with scoring(trainer_state(p.cfg, step - 1)) as logged, p.phase(f"scoring {len(batch)} completions"):
        parts = score_parts(p.reward, batch.examples, batch.completions, completion_ids=ids_for(
            p.reward, batch.completion_ids, batch.completion_mask)).to(batch.completion_mask.device)
    p.reward_s += time.perf_counter() - t0  # the step's reward_s: a slow judge shows in the record
    batch.scores, batch.reward_components, batch.reward_names = parts  # components: dict rewards only
    batch.extra = logged.extras(len(batch))  # each row's log_extra columns (rewards/batched.py)
    return logged


def refilled(p, step: int, first: tuple, more: Callable[[], list]) -> tuple[RolloutBatch, Tensor, Logged, dict]:
    """DAPO's dynamic sampling from the first round `first` (scored_rollout's triple): while fewer than
    rollout.prompts_per_step groups pass rollout.dynamic_sampling's test and rollout.max_sampling_rounds allow,
    `more()` gives the next prompts to sample. Returns the batch of prompts_per_step groups (renumbered 0..N-1),
    this process's rows in it, the scorings' logged values together (reward_fn/* average every round's rows), and
    the step record's sampling figures."""
    rc, world = p.cfg.rollout, p.world
    if more is None:
        raise ValueError("rollout.dynamic_sampling samples more prompts when groups are dropped: train_step needs "
                         "more=, a function giving the next prompts_per_step rows of the data")
    rounds, logs = [first[0]], [first[2]]
    passed = group_flags(first[0], rc.dynamic_sampling)
    while sum(passed) < rc.prompts_per_step and len(rounds) < rc.max_sampling_rounds:
        batch, _, logged = scored_rollout(p, step, more())
        rounds.append(batch)
        logs.append(logged)
        passed += group_flags(batch, rc.dynamic_sampling)
    # a dict reward names its components in the order each round's first row returned them
    whole = RolloutBatch.joined([same_components(b, rounds[0]) for b in rounds])
    keep, filled = chosen_groups(passed, rc.prompts_per_step)
    order = group_ids(whole.group)[0]  # each row's group in sampling order
    batch = whole.select(torch.isin(order, torch.tensor(keep, device=order.device)))
    batch.group = group_ids(batch.group)[0]  # 0..N-1, as one round's would be
    failed = torch.tensor([not passed[g] for g in keep], device=batch.group.device)
    batch.filled = failed[batch.group]  # rollouts.jsonl marks them
    pad = int(batch.prompt_mask.any(0).long().argmax())  # prompt columns that only dropped rounds' rows needed
    batch.prompt_ids, batch.prompt_mask = batch.prompt_ids[:, pad:], batch.prompt_mask[:, pad:]
    own = torch.tensor(world.share(list(range(rc.prompts_per_step))), device=batch.group.device)
    rows = torch.nonzero(torch.isin(batch.group, own)).squeeze(-1)  # data-parallel: a share of the groups each
    sampled = torch.tensor([s != "replayed" for s in whole.source], device=whole.completion_mask.device)
    figures = {"sampling_rounds": len(rounds), "groups_sampled": len(passed), "groups_informative": sum(passed),
               "groups_filled": filled, "completion_tokens_sampled": float(whole.completion_mask[sampled].sum())}
    return batch, rows, Logged.merged([lg.totals for lg in logs]), figures


def group_flags(batch: RolloutBatch, mode: str) -> list[bool]:
    """Per group of `batch`, in group-id order: whether it passes dynamic sampling's `mode` test ("reward": its
    training rewards differ; "accuracy": DAPO's eq. 11, some completions right and some not)."""
    if mode == "accuracy":
        values = solved_rows(batch)
    else:
        values = batch.scores
    order, n = group_ids(batch.group)
    flags = torch.zeros(n, dtype=torch.bool, device=order.device)
    return flags.scatter(0, order, informative_rows(values, batch.group)).tolist()  # alike within a group


def check_dynamic_sampling(rc: RolloutConfig, algo) -> None:
    """ConfigError for a rollout.dynamic_sampling setting this run cannot use."""
    if rc.dynamic_sampling not in MODES:
        alias = f" (verl's filter_groups.metric {rc.dynamic_sampling} is {VERL_METRICS[rc.dynamic_sampling]} here)" \
            if rc.dynamic_sampling in VERL_METRICS else ""
        raise ConfigError(f"rollout.dynamic_sampling={rc.dynamic_sampling!r}; valid: {', '.join(MODES)}{alias}")
    if rc.max_sampling_rounds < 1:
        raise ConfigError(f"rollout.max_sampling_rounds={rc.max_sampling_rounds}: at least 1 (the first round)")
    if rc.dynamic_sampling == "off":
        if rc.max_sampling_rounds != RolloutConfig.max_sampling_rounds:
            raise ConfigError(f"rollout.max_sampling_rounds={rc.max_sampling_rounds} is read only by dynamic "
                              "sampling, which is off: set --rollout.dynamic-sampling accuracy or reward, or leave "
                              "the rounds out")
        return
    if rc.max_sampling_rounds == 1:
        raise ConfigError(f"rollout.dynamic_sampling={rc.dynamic_sampling} with rollout.max_sampling_rounds=1 samples "
                          "no more than the first round, so it would drop nothing: give 2 or more rounds")
    if algo.teacher_forced():
        raise ConfigError(f"rollout.dynamic_sampling={rc.dynamic_sampling} with a loss that trains on the data's "
                          "solutions (nothing is sampled, so no group can be dropped): set it to off")
    if algo.tempered_temperature() is not None:
        raise ConfigError(f"rollout.dynamic_sampling={rc.dynamic_sampling} with an estimator that adds tempered "
                          "groups (AEPO): the two would drop and refill its paired groups apart; set it to off")
    if algo.advantage.name == "spo":
        raise ConfigError(f"rollout.dynamic_sampling={rc.dynamic_sampling} with algo.advantage=spo: SPO's per-prompt "
                          "tracker gives a group of equal rewards a non-zero advantage, and its paper offers the "
                          "tracker instead of dynamic sampling; set it to off")


NO_GROUP_BASELINE = {  # estimators under which a group of alike rewards still has a non-zero advantage
    "reinforce_pp": "whitens returns over the whole batch without a group baseline",
    "gdpo": "normalises each reward component within its group, so equal totals can hide components that differ",
}


def dynamic_sampling_notes(cfg) -> list[str]:
    """Start-up notes on a dynamic sampling setting that runs but may not do what its user expects."""
    mode, out = cfg.rollout.dynamic_sampling, []
    if mode == "off":
        return out
    if cfg.algo.advantage in NO_GROUP_BASELINE:
        out.append(f"note: algo.advantage={cfg.algo.advantage} {NO_GROUP_BASELINE[cfg.algo.advantage]}: groups that "
                   "rollout.dynamic_sampling drops would still have taught something")
    if mode == "accuracy" and reward_model_alone(cfg.data):
        out.append("note: rollout.dynamic_sampling=accuracy with a reward model alone counts a completion right when "
                   "its logit is >= 1, which means only what the model's scale means: 'reward' keeps the groups "
                   "whose scores differ")
    return out
