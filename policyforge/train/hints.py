"""GHPO in the RL step (data/hints.py holds the hint text): after a round is scored, every group with no
correct completion is sampled again, whole, from its prompt with the beginning of its reference solution
appended, a larger beginning at each of rollout.hint_ratios' stages for the groups that still fail; the new
rows (tagged "hinted") replace the group's. "Correct" is held-out accuracy's (rewards.score.is_correct).

As in GHPO's trainer, the hinted rows are trained under the hinted prompt and count in the step's training
accuracy and reward; the step record adds hinted_groups, hinted_accuracy and accuracy_unhinted (the accuracy
before any hint: the replaced rows were all wrong). A group is unsolved when no row is correct by held-out
accuracy's rule (reward >= 1, or a "correct" component >= 1); GHPO's code tests its accuracy reward <= 0, which
is the same for a 0/1 verifier. So a reward whose "solved" is unclear is refused: a reward model alone, or
several functions none named "correct". The reward functions' logged means (reward_fn/*) average every
scoring of the step, the rows the hints replaced included. Departures from the authors' code: a group solved at a
stage keeps that stage's hinted prompt for its rows (their code, when a later stage runs, puts the original
prompt back under the hinted completions), the hint stages apply from the first step (their start_hint_step
is 0 too), and the stages are rollout.hint_ratios (their code fixes 0.25, 0.5, 0.75).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from policyforge.data.chat import ChatRenderer
from policyforge.data.hints import HINT_RATIOS, HINT_TEMPLATE, hinted_example
from policyforge.data.user import DataError
from policyforge.rewards.score import is_correct, same_components
from policyforge.rollout.batch import RolloutBatch
from policyforge.train.config import ConfigError

MODES = ("off", "ghpo")


def unsolved_groups(batch: RolloutBatch) -> list[int]:
    """The group ids of `batch` (in order) none of whose rows is correct."""
    correct = is_correct(batch.scores, batch.reward_components, batch.reward_names)
    groups = batch.group.tolist()
    solved = {g for g, ok in zip(groups, correct.tolist()) if ok}
    return [g for g in dict.fromkeys(groups) if g not in solved]


def with_hints(p, step: int, batch: RolloutBatch, score) -> tuple[RolloutBatch, list]:
    """`batch` (scored, one process's rows) with GHPO's hinted groups in place of its unsolved ones, and the
    Logged of each scoring it ran. `score(batch)` scores a batch as the round's rows were and returns its Logged.
    `p` is the loop's StepParts."""
    from policyforge.train.setup import rollout

    rc, logs = p.cfg.rollout, []
    first_row = {}
    for i, g in enumerate(batch.group.tolist()):
        first_row.setdefault(g, i)
    original = {g: batch.examples[i] for g, i in first_row.items()}  # each stage hints the data's own prompt
    for ratio in rc.hint_ratios:
        failed = unsolved_groups(batch)
        if not failed:
            break
        examples = [hinted_example(original[g], ratio, renderer(p.cfg) if original[g].messages else None,
                                   rc.hint_template) for g in failed]
        hinted = rollout(p.model, p.tok, examples, rc, p.gen)
        hinted.group = torch.tensor(failed, device=batch.group.device).repeat_interleave(rc.group_size)
        hinted.source = ["hinted"] * len(hinted)
        logs.append(score(hinted))
        hinted = same_components(hinted, batch)
        kept = batch.select(~torch.isin(batch.group, hinted.group))
        width = max(kept.prompt_ids.shape[1], hinted.prompt_ids.shape[1])
        whole = RolloutBatch.concat(kept.left_padded(width), hinted.left_padded(width))
        batch = whole.select(torch.sort(whole.group, stable=True).indices)  # groups in their order again
    return batch, logs


_RENDERERS: dict[str, ChatRenderer] = {}


def renderer(cfg) -> ChatRenderer:
    """The chat renderer of the run's prompts (a hinted conversation is rendered again), made once a run."""
    d = cfg.data
    key = json.dumps([cfg.model.path, d.chat_template, d.system_prompt, d.chat_template_kwargs], sort_keys=True,
                     default=str)
    if key not in _RENDERERS:
        _RENDERERS[key] = ChatRenderer(cfg.model.path, d.chat_template, d.system_prompt, d.chat_template_kwargs)
    return _RENDERERS[key]


def check_hints(cfg, algo, source, reward) -> None:
    """ConfigError for a rollout.hints setting this run cannot use; DataError when a training row has no
    reference solution to hint from."""
    rc, dc = cfg.rollout, cfg.data
    if rc.hints not in MODES:
        raise ConfigError(f"rollout.hints={rc.hints!r}; valid: {', '.join(MODES)}")
    if rc.hints == "off":
        changed = [name for name, default in (("hint_ratios", list(HINT_RATIOS)), ("hint_template", HINT_TEMPLATE))
                   if getattr(rc, name) != default]
        if changed:
            raise ConfigError(f"rollout.{changed[0]} is read only by rollout.hints, which is off: set "
                              "--rollout.hints ghpo, or leave it out")
        return
    if not rc.hint_ratios or not all(0 < r <= 1 for r in rc.hint_ratios):
        raise ConfigError(f"rollout.hint_ratios={rc.hint_ratios}: one or more fractions of the solution in (0, 1], "
                          "one a stage (GHPO: 0.25 0.5 0.75)")
    if "{hint}" not in rc.hint_template:
        raise ConfigError(f"rollout.hint_template={rc.hint_template!r} has no {{hint}}, where the solution's "
                          "beginning goes")
    from policyforge.rewards.score import CORRECT, Combined

    unclear = (isinstance(reward, Combined) and CORRECT not in reward.fns) or (
        dc.reward_model is not None and not dc.reward and dc.path is not None)
    refused = {"a loss that trains on the data's solutions (nothing is sampled)": algo.teacher_forced(),
               "a reward whose 'solved' is unclear (a reward model alone, or several functions none named "
               "'correct'; name your accuracy function correct)": unclear,
               "algo.advantage=spo (one completion a prompt, no group)": algo.advantage.name == "spo",
               "an estimator that adds tempered groups (AEPO)": algo.tempered_temperature() is not None,
               "data.replay_pool (RLEP's replayed rows would make every group look solved)": dc.replay_pool is not None}
    for what, yes in refused.items():
        if yes:
            raise ConfigError(f"rollout.hints={rc.hints} with {what}: set it to off")
    from policyforge.train.setup import probe_rows

    missing = next((e for e in probe_rows(source) if e.solution is None), None) if hasattr(source, "rows") else None
    if missing is not None:
        raise DataError(f"rollout.hints={rc.hints} hints with the reference solution, but {missing.where()} has "
                        "none: set data.solution_column")


def check_hinted_prompts(model, tokenizer, source, cfg) -> None:
    """DataError before the first step when a training prompt with the longest hint does not fit the model's
    context or has characters its tokenizer does not know."""
    from policyforge.train.setup import check_prompt_lengths, probe_rows

    if cfg.rollout.hints == "off":
        return
    rows = probe_rows(source)
    longest = max(cfg.rollout.hint_ratios)
    hinted = [hinted_example(e, longest, renderer(cfg) if e.messages else None, cfg.rollout.hint_template)
              for e in rows]
    try:
        check_prompt_lengths(model, tokenizer, SimpleNamespace(rows=hinted), [], cfg.rollout.max_new_tokens)
    except DataError as e:
        raise DataError(f"rollout.hints: with the hint of ratio {longest} (rollout.hint_template "
                        f"{cfg.rollout.hint_template!r}): {e}") from None
