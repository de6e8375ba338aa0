"""verl's reward functions, taken unchanged: `compute_score(data_source, solution_str, ground_truth,
extra_info=None)` as verl's custom_reward_function.path / .name names one.

- Which functions: one with parameters named `solution_str` and `ground_truth` (by keyword), which is how verl
  calls them; it is called once per completion, concurrently under data.reward_workers as the per-row form.
- What it gets, by keyword, each only where it has a parameter of that name or **kwargs: `solution_str`, the
  completion's text; `ground_truth`, the row's `reward_model.ground_truth` (a verl dataset's column, a dict),
  else its `ground_truth` column, else its solution (data.solution_column); `data_source`, its `data_source`
  column (None without one); `extra_info`, its `extra_info` column (a copy; {} without one), as verl passes them.
- What it returns: a number, the reward; or, as in verl, a dict whose "score" is the reward and whose every
  key (score included) is logged: each completion's go under "extra" in rollouts.jsonl and samples.jsonl, as
  TRL's log_extra columns do (rewards/batched.py), since verl logs them beside the batch too. The other keys
  are never added to the reward (policyforge's own dict rewards sum their values: verl's would not). A row is
  solved, for accuracy and pass@k, when its score is >= 1.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Sequence

import torch

from policyforge.data.tasks import Example
from policyforge.rewards.batched import by_name, current_logged, fn_name, parameters
from policyforge.rewards.score import RewardError, RewardFn, Scored, _number, in_threads, raised_at

VERL_NAMES = ("solution_str", "ground_truth")  # both by keyword: verl's form
PASSED = ("data_source", "solution_str", "ground_truth", "extra_info")


def is_verl_form(fn: RewardFn) -> bool:
    """Whether `fn` takes verl's `solution_str` and `ground_truth` by keyword."""
    names = {p.name for p in parameters(fn) if by_name(p)}
    return all(n in names for n in VERL_NAMES)


def ground_truth(ex: Example, who: str):
    """verl's ground_truth of row `ex`: reward_model.ground_truth, else a ground_truth column, else its solution."""
    nested = ex.extra.get("reward_model")
    if isinstance(nested, Mapping) and "ground_truth" in nested:
        return nested["ground_truth"]
    if "ground_truth" in ex.extra:
        return ex.extra["ground_truth"]
    if ex.solution is not None:
        return ex.solution
    raise RewardError(f"{who} takes verl's ground_truth, and {ex.where()} has none: give the rows a "
                      "reward_model.ground_truth or ground_truth column, or name the answer's column with "
                      "--data.solution-column")


def _keywords(fn: RewardFn, ex: Example, completion: str, who: str) -> dict[str, Any]:
    params = parameters(fn)
    anything = any(p.kind is p.VAR_KEYWORD for p in params)
    wanted = {p.name for p in params} if not anything else set(PASSED)
    given = {"solution_str": completion, "ground_truth": ground_truth(ex, who),
             "data_source": ex.extra.get("data_source"), "extra_info": copy.deepcopy(ex.extra.get("extra_info") or {})}
    return {k: v for k, v in given.items() if k in wanted}


def _call(fn: RewardFn, ex: Example, completion: str, who: str):
    keywords = _keywords(fn, ex, completion, who)
    try:
        return fn(**keywords)
    except Exception as e:  # the user's code: report which row made it fail
        raise RewardError(f"{who} raised on {ex.where()} (prompt {ex.prompt[:60]!r}, completion "
                          f"{completion[:60]!r}): {type(e).__name__}: {e}{raised_at(e)}") from e


def _score(value, ex: Example, who: str) -> tuple[float, dict]:
    """(reward, logged keys) of one returned value: a number, or a dict with "score" (every key logged)."""
    if isinstance(value, Mapping):
        if "score" not in value:
            keys = ", ".join(map(str, value))
            raise RewardError(f"{who} returned a dict without 'score' for {ex.where()} (keys: {keys}); in verl's "
                              "form the reward is the dict's 'score', and the other keys are logged")
        return _number(value["score"], ex, who=who), dict(value)
    return _number(value, ex, who=who), {}


def score_verl(fn: RewardFn, examples: Sequence[Example], completions: Sequence[str], pool=None) -> Scored:
    """Rewards (B,) of `fn` in verl's form, row by row (concurrently with `pool`, results in row order); inside a
    `scoring` block (training, evaluation) each row's logged keys go to log_extra's columns."""
    who = f"verl-form reward function {fn_name(fn)!r}"
    calls = list(zip(examples, completions))
    values = (in_threads(pool, lambda pair: _call(fn, *pair, who), calls) if pool else
              (_call(fn, *pair, who) for pair in calls))
    scored = [_score(value, ex, who) for ex, value in zip(examples, values)]
    logged = current_logged()
    if logged is not None:  # bound on every call, so that a later call's rows follow this one's
        log_extra = logged.log_extra(fn, who, len(examples))
        for column in dict.fromkeys(k for _, keys in scored for k in keys):
            log_extra(str(column), [keys.get(column) for _, keys in scored])
    return Scored(torch.tensor([s for s, _ in scored], dtype=torch.float32), None, ())
