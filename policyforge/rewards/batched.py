"""Reward functions in TRL's batched form, taken unchanged.

TRL's GRPOTrainer calls a reward function once per batch, by keyword, as
`fn(prompts=[...], completions=[...], completion_ids=[...], trainer_state=..., log_extra=..., log_metric=...,
**columns)`, every other dataset column as a list, and takes back a list with one float (or None) per row.
policyforge calls such a function the same way where it can:

- Which functions: one with a parameter named `completions`, `prompts` or `completion_ids` that can be passed
  by keyword is batched; every other function is called row by row (score.py). A per-row function names its
  first two parameters as it likes, since they are passed by position, so these names are TRL's alone.
- What it gets, in row order: `prompts`, `completions` and `completion_ids`, each only when the function has a
  parameter of that name or `**kwargs`, and every other column as one list (as the per-row form gets every column: a
  function without `**kwargs` must take them all). A row not rendered with the chat template gives its prompt and
  completion as text. A rendered row (data/chat.py: a conversation, or any prompt under data.chat_template on) gives
  them in TRL's conversational form, since a conversational TRL function reads `completion[0]["content"]`: its
  prompt as the messages the template rendered (data.system_prompt's included, copied) and its completion as
  `[{"role": "assistant", "content": text}]`. Each row keeps its own form in a batch mixing the two.
- `completion_ids`: each row's sampled token ids as a list of ints (a copy), padding removed, up to and including
  the EOS token (or the token that completed a stop string), as TRL passes them: the tokens where the rollout's
  completion_mask is 1 (score.token_lists), while the text leaves out the EOS (or the stop string). Training and
  evaluation pass them; the start-up check passes its stand-in text's tokens and EOS (score.probe). So TRL's own
  `trl.rewards.get_soft_overlong_punishment` and `get_repetition_penalty_reward`, which read only these, run
  unchanged. A caller of score_parts with text alone passes none: a function that requires them is refused.
- What it does not get: `trainer_state`, `log_extra`, `log_metric`, `environments` (TRL trainer objects). A
  function that requires one of them (a parameter without a default) is refused with one line at the start-up
  check; one reading them from `**kwargs` finds them absent, as TRL's own functions with a default of None do.
- What it returns: a list, tuple, 1-D array or 1-D tensor of exactly one finite number per row. TRL also accepts
  None, "this function does not score this row": it becomes NaN, left out of the sum across functions and of
  each function's logged mean, and a row no function scores gets no advantage. policyforge has no unscored
  reward (every estimator, metric and accuracy count reads one number per row), so None is refused with one line
  rather than given a meaning of ours; in a weighted sum, 0.0 gives the row what TRL's sum gives it.
- data.reward_workers changes nothing for it: one call scores the whole batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Sequence

from policyforge.data.tasks import Example
from policyforge.rewards.score import RewardError, RewardFn, _number, raised_at

BATCH_NAMES = ("completions", "prompts", "completion_ids")  # a parameter of one of these names: TRL's form
NOT_PASSED = {  # TRL's keywords that policyforge does not give, and why
    "trainer_state": "a TRL trainer object",
    "log_extra": "a TRL trainer callback",
    "log_metric": "a TRL trainer callback",
    "environments": "TRL's environments",
}


def _parameters(fn: RewardFn) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a built-in whose signature cannot be read: called row by row, as before
        return []


def _by_name(p: inspect.Parameter) -> bool:
    return p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def is_batched(fn: RewardFn) -> bool:
    """Whether `fn` is in TRL's batched form: a parameter named completions, prompts or completion_ids, by name."""
    return any(p.name in BATCH_NAMES and _by_name(p) for p in _parameters(fn))


def gets_ids(fn: RewardFn) -> bool:
    """Whether `fn` itself is given completion_ids: batched, with a parameter of that name or **kwargs."""
    return is_batched(fn) and any(p.kind is p.VAR_KEYWORD or (p.name == "completion_ids" and _by_name(p))
                                  for p in _parameters(fn))


def fn_name(fn: RewardFn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _rows(examples: Sequence[Example]) -> str:
    first = examples[0].where()
    return first if len(examples) == 1 else f"{len(examples)} rows (the first {first})"


def _columns(examples: Sequence[Example], who: str) -> dict[str, list]:
    """Every column as one list in row order; a column named like one of TRL's keywords, or one that some rows
    lack (a held-out file with other columns), is refused by name."""
    names = list(dict.fromkeys(k for ex in examples for k in ex.extra))
    for name in names:
        if name in BATCH_NAMES:
            raise RewardError(f"{who}: column {name!r} has the name of the batched form's own argument "
                              "(TRL's form passes it by that name): rename the column")
        lacking = next((ex for ex in examples if name not in ex.extra), None)
        if lacking is not None:
            raise RewardError(f"{who}: {lacking.where()} has no column {name!r}, which other rows scored with it "
                              "have; a batched function gets each column as one list, so every row needs it")
    return {name: [ex.extra[name] for ex in examples] for name in names}


def _arguments(fn: RewardFn, examples: Sequence[Example], completions: Sequence[str],
               completion_ids: Sequence[list[int]] | None, who: str) -> dict:
    """The keywords of the one call: prompts, completions and completion_ids (where the function takes them and,
    for the ids, where the caller gave them) and the columns."""
    params = _parameters(fn)
    takes = {p.name for p in params if _by_name(p)}
    anything = any(p.kind is p.VAR_KEYWORD for p in params)
    rendered = [ex.messages is not None for ex in examples]
    given = {
        "prompts": [[dict(m) for m in ex.messages] if r else ex.prompt for ex, r in zip(examples, rendered)],
        "completions": [[{"role": "assistant", "content": c}] if r else c for c, r in zip(completions, rendered)],
    }
    if completion_ids is not None:  # copies of plain ints: a function that edits its lists changes nothing else
        given["completion_ids"] = [[int(t) for t in row] for row in completion_ids]
    out = {k: v for k, v in given.items() if anything or k in takes}
    out.update(_columns(examples, who))
    for p in params:
        if _by_name(p) and p.default is p.empty and p.name not in out:
            raise RewardError(f"{who} requires the argument {p.name!r}, {_missing(p.name, examples, out)}")
    return out


def _missing(name: str, examples: Sequence[Example], given: dict) -> str:
    """Why a required argument `name` was not given, and what to do."""
    if name == "completion_ids":  # training, evaluation and a run's start-up check give them: a direct caller's
        return ("which this call of score_parts was not given: pass completion_ids=token_lists(completion_ids, "
                "completion_mask), each completion's token ids")
    why = (f"which policyforge does not pass ({NOT_PASSED[name]})" if name in NOT_PASSED
           else f"which is not a column of {examples[0].where()} (columns: {', '.join(given) or 'none'})")
    return f"{why}; give it a default or drop it"


def score_batched(fn: RewardFn, examples: Sequence[Example], completions: Sequence[str],
                  completion_ids: Sequence[list[int]] | None = None) -> list[float]:
    """One finite float per row from one call of `fn` in TRL's form; one RewardError naming the function and
    what was wrong otherwise. `completion_ids`: B lists of token ids (score.token_lists), or None where the
    caller has text alone."""
    if not examples:
        return []
    if completion_ids is not None and len(completion_ids) != len(examples):  # a caller's bug, not the user's
        raise ValueError(f"score_batched: {len(completion_ids)} completion_ids rows for {len(examples)} examples")
    who = f"batched reward function {fn_name(fn)!r}"
    arguments = _arguments(fn, examples, completions, completion_ids, who)
    try:
        out = fn(**arguments)
    except Exception as e:  # the user's code: report the batch and where in their code
        raise RewardError(f"{who} raised on {_rows(examples)}: {type(e).__name__}: {e}{raised_at(e)}") from e
    return _numbers(out, examples, who)


def _numbers(out, examples: Sequence[Example], who: str) -> list[float]:
    """`out` as one finite float per row: a list, tuple, 1-D array or tensor of len(examples) numbers."""
    n = len(examples)
    expected = f"expected a list of {n} numbers, one per completion"
    if hasattr(out, "ndim") and hasattr(out, "tolist"):  # a numpy array or a torch tensor
        if out.ndim != 1:
            raise RewardError(f"{who} returned an array of shape {tuple(out.shape)}; {expected}")
        out = out.tolist()
    if not isinstance(out, (list, tuple)):
        shown = repr(out) if len(repr(out)) <= 40 else repr(out)[:40] + "..."
        kind = "a dict" if isinstance(out, Mapping) else f"{type(out).__name__} {shown}"
        raise RewardError(f"{who} returned {kind}; {expected}")
    if len(out) != n:
        raise RewardError(f"{who} returned {len(out)} value(s) for {n} completions; {expected}")
    for ex, value in zip(examples, out):
        if value is None:
            raise RewardError(f"{who} returned None for {ex.where()}: policyforge scores every row (TRL would leave "
                              "the row out of this function's share); return a number, e.g. 0.0")
    return [_number(value, ex, who=who) for ex, value in zip(examples, out)]
