"""Hints in the RL step (data/hints.py holds the hint text). GHPO: after a round is scored, every group with no
correct completion is sampled again, whole, from its prompt with the beginning of its reference solution
appended, a larger beginning at each of rollout.hint_ratios' stages for the groups that still fail; the new
rows (tagged "hinted") replace the group's. Scaf-GRPO (`scaffolded`): every hint level of such a group is
sampled at once and the least revealing level's first success replaces the group's first row; only successes
are kept, so its hinted_accuracy is 1 and hinted_groups counts the groups a hint rescued. "Correct" is
held-out accuracy's (rewards.score.is_correct).

As in GHPO's trainer, the hinted rows are trained under the hinted prompt and count in the step's training
accuracy and reward; the step record adds hinted_groups, hinted_accuracy and accuracy_unhinted (the accuracy
before any hint: the replaced rows were all wrong). A group is unsolved when no row is correct by held-out
accuracy's rule (reward >= 1, or a "correct" component >= 1); GHPO's code tests its accuracy reward <= 0, which
is the same for a 0/1 verifier. So a reward whose "solved" is unclear is refused: a reward model alone, or
several functions none named "correct". The reward functions' logged means (reward_fn/*) average every
scoring of the step, the rows the hints replaced included. Departures from the authors' code: a group solved at a
stage keeps that stage's hinted prompt for its rows (their code, when a later stage runs, puts the original
prompt back under the hinted completions), and the stages are rollout.hint_ratios (their code fixes 0.25, 0.5,
0.75). Hints start after rollout.hint_warmup_steps (GHPO's start_hint_step, 0; Scaf-GRPO's warmup_steps, 50 in
its script).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from policyforge.data.chat import ChatRenderer
from policyforge.data.hints import HINT_RATIOS, HINT_TEMPLATE, hint_levels, hinted_example, solution_prefix
from policyforge.data.user import DataError
from policyforge.rewards.score import is_correct, same_components
from policyforge.rewards.spec import solved_is_unclear
from policyforge.rollout.batch import RolloutBatch
from policyforge.train.config import ConfigError, refuse

MODES = ("off", "ghpo", "scaf")


def unsolved_groups(batch: RolloutBatch) -> list[int]:
    """The group ids of `batch` (in order) none of whose rows is correct."""
    correct = is_correct(batch.scores, batch.reward_components, batch.reward_names)
    groups = batch.group.tolist()
    solved = {g for g, ok in zip(groups, correct.tolist()) if ok}
    return [g for g in dict.fromkeys(groups) if g not in solved]


def with_hints(p, step: int, batch: RolloutBatch, score) -> tuple[RolloutBatch, list]:
    """`batch` (scored, one process's rows) with rollout.hints' hinted rows for its unsolved groups, and the
    Logged of each scoring it ran. `score(batch)` scores a batch as the round's rows were and returns its Logged.
    `p` is the loop's StepParts."""
    first_row = batch.first_rows()
    original = {g: batch.examples[i] for g, i in first_row.items()}  # the data's own prompts
    if p.cfg.rollout.hints == "scaf":
        return scaffolded(p, batch, score, original, first_row)
    rc, logs = p.cfg.rollout, []
    for ratio in rc.hint_ratios:  # GHPO: each stage samples the still-unsolved groups again, whole
        failed = unsolved_groups(batch)
        if not failed:
            break
        hinted = hinted_rollout(p, [(original[g], solution_prefix(original[g].solution, ratio)) for g in failed])
        hinted.group = torch.tensor(failed, device=batch.group.device).repeat_interleave(rc.group_size)
        logs.append(score(hinted))
        batch = batch.regrouped(same_components(hinted, batch), torch.isin(batch.group, hinted.group))
    return batch, logs


def scaffolded(p, batch: RolloutBatch, score, original: dict, first_row: dict) -> tuple[RolloutBatch, list]:
    """Scaf-GRPO: every hint level of each unsolved group sampled at once; the first correct completion of the
    least revealing level that has one replaces the group's first row."""
    failed = unsolved_groups(batch)
    if not failed:
        return batch, []
    asked = [(g, hint) for g in failed for hint in hint_levels(original[g], p.cfg.data.hint_column)]
    hinted = hinted_rollout(p, [(original[g], hint) for g, hint in asked])
    logs = [score(hinted)]
    hinted = same_components(hinted, batch)
    correct = is_correct(hinted.scores, hinted.reward_components, hinted.reward_names).tolist()
    size, picked = p.cfg.rollout.group_size, {}
    for n, (g, _) in enumerate(asked):  # a group's levels in order: the first success found is the least revealing
        if g not in picked:
            row = next((r for r in range(n * size, (n + 1) * size) if correct[r]), None)
            if row is not None:
                picked[g] = row
    if not picked:
        return batch, logs
    chosen = hinted.select(torch.tensor(list(picked.values()), device=batch.group.device))
    chosen.group = torch.tensor(list(picked), device=batch.group.device)
    drop = torch.zeros(len(batch), dtype=torch.bool, device=batch.group.device)
    drop[[first_row[g] for g in picked]] = True
    return batch.regrouped(chosen, drop), logs


def hinted_rollout(p, asked: list) -> RolloutBatch:
    """group_size completions of each (example, hint) in `asked`, in that order, the hint in the prompt, tagged
    "hinted"; sampled prompts_per_step examples at a time, as a step's rollout is (scaf asks for every level of
    every unsolved group at once)."""
    from policyforge.train.setup import rollout

    rc = p.cfg.rollout
    examples = [hinted_example(ex, hint, renderer(p.cfg) if ex.messages else None, rc.hint_template)
                for ex, hint in asked]
    chunk = max(rc.prompts_per_step, 1)
    hinted = RolloutBatch.joined([rollout(p.model, p.tok, examples[i:i + chunk], rc, p.gen)
                                  for i in range(0, len(examples), chunk)])
    hinted.source = ["hinted"] * len(hinted)
    return hinted


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
    """ConfigError for a rollout.hints setting this run cannot use; DataError when a training row has no hints
    to give (a reference solution for ghpo, data.hint_column's list for scaf)."""
    rc, dc = cfg.rollout, cfg.data
    if rc.hints not in MODES:
        raise ConfigError(f"rollout.hints={rc.hints!r}; valid: {', '.join(MODES)}")
    unread = [(name, modes) for name, modes, changed in (
        ("rollout.hint_ratios", ("ghpo",), rc.hint_ratios != list(HINT_RATIOS)),
        ("rollout.hint_template", ("ghpo", "scaf"), rc.hint_template != HINT_TEMPLATE),
        ("rollout.hint_warmup_steps", ("ghpo", "scaf"), rc.hint_warmup_steps != 0),
        ("data.hint_column", ("scaf",), dc.hint_column is not None)) if changed and rc.hints not in modes]
    if unread:
        raise ConfigError(f"{unread[0][0]} is read only by rollout.hints {' or '.join(unread[0][1])} (it is "
                          f"{rc.hints}): set that, or leave it out")
    if rc.hints == "off":
        return
    if rc.hint_warmup_steps < 0:
        raise ConfigError(f"rollout.hint_warmup_steps={rc.hint_warmup_steps}: 0 or more steps")
    if not rc.hint_ratios or not all(0 < r <= 1 for r in rc.hint_ratios) or sorted(set(rc.hint_ratios)) != \
            list(rc.hint_ratios):
        raise ConfigError(f"rollout.hint_ratios={rc.hint_ratios}: one or more fractions of the solution in (0, 1], "
                          "one a stage, each larger than the last (GHPO: 0.25 0.5 0.75)")
    if "{hint}" not in rc.hint_template:
        raise ConfigError(f"rollout.hint_template={rc.hint_template!r} has no {{hint}}, where the hint goes")
    if rc.hints == "scaf" and not dc.hint_column:
        raise ConfigError("rollout.hints=scaf gives each row's own hints: name the column holding them, a list of "
                          "texts from least to most revealing, with data.hint_column")
    if rc.hints == "scaf" and dc.path is None:
        raise ConfigError(f"rollout.hints=scaf reads each row's hints from data.hint_column, and the built-in task "
                          f"{dc.task!r} has no columns: give your data with data.path")
    if rc.hints == "scaf" and rc.hint_template == HINT_TEMPLATE:
        raise ConfigError("rollout.hints=scaf: give --rollout.hint-template (e.g. ' hint: {hint}'); the default is "
                          "GHPO's sentence, which calls the hint the beginning of the answer")
    refuse(f"rollout.hints={rc.hints}", {
        **steered_by_success(algo, reward, dc),
        "data.replay_pool (RLEP's replayed rows would make every group look solved)": dc.replay_pool is not None},
        "set rollout.hints to off")
    for ex in hinted_rows(source, cfg):  # every row of a data file, or a built-in task's probes (which have answers)
        if rc.hints == "ghpo" and ex.solution is None:
            raise DataError(f"rollout.hints=ghpo hints with the reference solution, but {ex.where()} has none: set "
                            "data.solution_column")


def steered_by_success(algo, reward, dc, solved_by_rubric: bool = False) -> dict[str, bool]:
    """What a method that acts on unsolved groups cannot serve (hints, Critique-GRPO's refinements, Knapsack RL's
    budget), {culprit in words: present}: no sampling, an unclear "solved" (unless HeRL's rubric says what solved
    is: every item met), no groups, AEPO's extra groups."""
    return {"a loss that trains on the data's solutions (nothing is sampled)": algo.teacher_forced(),
            "a reward whose 'solved' is unclear (a reward model alone, or several functions none named 'correct'; "
            "name your accuracy function correct)": solved_is_unclear(reward, dc) and not solved_by_rubric,
            "algo.advantage=spo (one completion a prompt, no group)": algo.advantage.name == "spo",
            "AEPO's tempered groups (algo.loss aepo)": algo.tempered_temperature() is not None}


def hinted_rows(source, cfg) -> list:
    """The training rows the start-up checks hint: a data file's, none of a built-in task's for ghpo (a
    built-in problem always has its answer), and scaf's hint levels are read here from each row too."""
    from policyforge.train.setup import probe_rows

    if cfg.rollout.hints == "scaf":
        rows = probe_rows(source)
        for ex in rows:
            hint_levels(ex, cfg.data.hint_column)  # DataError naming a row without a list of hints
        return rows
    return probe_rows(source) if hasattr(source, "rows") else []


def check_hinted_prompts(model, tokenizer, source, cfg) -> None:
    """DataError before the first step when a training prompt with its longest hint does not fit the model's
    context or has characters its tokenizer does not know."""
    from policyforge.train.setup import check_prompt_lengths, probe_rows

    rc = cfg.rollout
    if rc.hints == "off":
        return
    rows, longest = probe_rows(source), max(rc.hint_ratios)
    asked = ([(e, h) for e in rows for h in hint_levels(e, cfg.data.hint_column)] if rc.hints == "scaf"
             else [(e, solution_prefix(e.solution, longest)) for e in rows])  # scaf: every level (tiers need not nest)
    hinted = [hinted_example(e, h, renderer(cfg) if e.messages else None, rc.hint_template) for e, h in asked]
    try:
        check_prompt_lengths(model, tokenizer, SimpleNamespace(rows=hinted), [], rc.max_new_tokens)
    except DataError as e:
        what = "its hints (data.hint_column)" if rc.hints == "scaf" else f"the hint of ratio {longest}"
        fix = (" (the built-in tokenizer reads lower case only: give e.g. --rollout.hint-template ' hint:{hint}')"
               if rc.hint_template == HINT_TEMPLATE else "")
        raise DataError(f"rollout.hints: with {what} (rollout.hint_template {rc.hint_template!r}{fix}): {e}") from None
