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
- `trainer_state`, `log_metric` and `log_extra`, each only where the function has a parameter of that name or
  `**kwargs`, given by training (loop.train_step), every evaluation (the run's, `policyforge eval`'s, sft's) and the
  start-up check (setup.check_reward_on), each of which wraps its scoring calls in `scoring(state)`:
  - `trainer_state` is a read-only `TrainerState(global_step, max_steps)`, the two fields of TRL's (transformers')
    TrainerState that schedules read; any other attribute raises AttributeError naming these two. policyforge
    counts RL steps (each samples, scores and takes optim.updates_per_batch optimiser steps), TRL optimiser steps
    (with num_iterations = mu each generation serves mu of them), so a batch scored in RL step s (1-based) sees
    global_step = (s - 1) * updates_per_batch, the optimiser steps completed before its own (0 at the first), and
    max_steps = train.steps * updates_per_batch. An evaluation after s steps sees s * updates_per_batch (0 at the
    step-0 one); `policyforge eval` of a run's checkpoint step_N sees N * updates_per_batch (its step, read from
    the folder's name) and the run's max_steps, both from the run's config.yaml whatever --config or flags say;
    a training run's start-up check sees 0 and its max_steps. sft (its start-up check and final evaluation) and
    `policyforge eval` of a model that is no run's checkpoint see TrainerState(0, 1) (outside_a_run): no run,
    so train.steps and optim.updates_per_batch, which those commands ignore, change nothing.
  - `log_metric(name, value)` records a finite number under a string name (anything else is refused with one
    line naming the function and the metric). As TRL averages a name's values over its logging step and every
    process, the step's metrics.jsonl record gets `reward_fn/<name>`, the mean of the values logged while that
    step scored, over all processes of a data-parallel run (each process's sum and count gathered:
    World.logged_means); an evaluation's go to its eval.jsonl line (and `policyforge eval`'s printed line) under
    the same prefix; the start-up check's are dropped.
  Why a context variable rather than an argument of score_parts: the scoring calls pass through the Combined,
  Pooled and Ensemble wrappers (score.py, model.py), which need not know about TRL's trainer objects. Outside
  any `scoring` block (a direct caller of score_parts) neither is given, and a function that requires one is
  refused by name; one with a default or `**kwargs` gets nothing, as before.
- `log_extra(column, values)`, likewise inside `scoring` only: per-row columns for the records that show
  completions, as TRL's completions table gets them. `values` holds one JSON scalar (str, number, bool or None;
  numpy and torch scalars become numbers, NaN and infinities null) per row of the call; a column given twice for
  the same row (two functions using one name) or a value of another kind is refused with one line. Training's go to
  rollouts.jsonl (train.log_rollouts), an evaluation's to samples.jsonl, each row's under "extra"; the
  start-up check's and pass@k's are dropped. A block's calls of one function cover its rows in order (an
  evaluation scores its rows in chunks).
- What it does not get: `environments` (TRL's environments). A function that requires it (a parameter without
  a default) is refused with one line at the start-up check; one reading it from `**kwargs` finds it absent,
  as TRL's own functions with a default of None do.
- What it returns: a list, tuple, 1-D array or 1-D tensor of exactly one finite number per row. TRL also accepts
  None, "this function does not score this row": it becomes NaN, left out of the sum across functions and of
  each function's logged mean, and a row no function scores gets no advantage. policyforge has no unscored
  reward (every estimator, metric and accuracy count reads one number per row), so None is refused with one line
  rather than given a meaning of ours; in a weighted sum, 0.0 gives the row what TRL's sum gives it.
- data.reward_workers changes nothing for it: one call scores the whole batch.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple, Sequence

from policyforge.data.tasks import Example
from policyforge.rewards.score import RewardError, RewardFn, _number, raised_at

BATCH_NAMES = ("completions", "prompts", "completion_ids")  # a parameter of one of these names: TRL's form
NOT_PASSED = {"environments": "TRL's environments"}  # TRL's keywords that policyforge does not give, and why
CONTEXT_NAMES = ("trainer_state", "log_metric", "log_extra")  # TRL's keywords given inside `scoring` only
METRIC_PREFIX = "reward_fn/"  # log_metric's names in metrics.jsonl and eval.jsonl
OWN = "\x00"  # marks log_own's names among the totals: no log_metric name a user writes starts with it


@dataclass(frozen=True)
class TrainerState:
    """The `trainer_state` a batched function is given: the two fields of TRL's TrainerState that reward
    schedules read, in optimiser steps (see the module docstring for how RL steps map to them)."""

    global_step: int  # optimiser steps completed before this batch's update (0 at the first step)
    max_steps: int  # optimiser steps of the whole run: train.steps * optim.updates_per_batch

    @staticmethod
    def after(rl_steps: int, total_rl_steps: int, updates_per_batch: int) -> TrainerState:
        """The state once `rl_steps` RL steps of `total_rl_steps`, each of `updates_per_batch` updates, are done."""
        return TrainerState(rl_steps * updates_per_batch, total_rl_steps * updates_per_batch)

    @staticmethod
    def outside_a_run() -> TrainerState:
        """sft's, and `policyforge eval`'s of a model that is no run's checkpoint: no RL run, so the state of one's
        start (global_step 0); max_steps 1, so that a schedule's global_step / max_steps reads 0, not 0 / 0."""
        return TrainerState(0, 1)

    def __getattr__(self, name: str):  # only for names the dataclass does not have
        raise AttributeError(f"policyforge's trainer_state has global_step and max_steps only (not TRL's whole "
                             f"TrainerState), so no {name!r}")


class Logged:
    """The values batched functions logged with log_metric in one `scoring` block: each name's sum and count."""

    def __init__(self):
        self.totals: dict[str, list] = {}  # name -> [sum of its values, how many]
        self.extra: dict[str, dict[int, Any]] = {}  # log_extra's: column -> {row in the block: value}
        self._scored: dict[int, int] = {}  # id(function) -> rows it was called on so far in the block

    def log_metric(self, who: str) -> Callable[[str, float], None]:
        """The `log_metric` given to the function `who` (named in its refusals)."""
        def log_metric(name: str, value: float) -> None:
            if not isinstance(name, str):
                raise MetricRefused(f"{who} called log_metric with the name {name!r}; a metric's name is a string")
            try:
                number = float(value) if not isinstance(value, (str, bytes)) else math.nan
            except (TypeError, ValueError, OverflowError):
                number = math.nan
            if not math.isfinite(number):
                shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
                raise MetricRefused(f"{who} logged {shown} as metric {name!r}; log_metric takes a finite number")
            total = self.totals.setdefault(name, [0.0, 0])
            total[0] += number
            total[1] += 1
        return log_metric

    def log_extra(self, fn: RewardFn, who: str, rows: int) -> Callable[[str, Sequence], None]:
        """The `log_extra` given to the function `fn` (`who` in refusals) for its call on its next `rows` rows: a
        block's calls of one function score its rows in order (an evaluation's chunks, the start-up check's rows)."""
        first = self._scored.get(id(fn), 0)
        self._scored[id(fn)] = first + rows

        def log_extra(column: str, values: Sequence) -> None:
            if not isinstance(column, str):
                raise MetricRefused(f"{who} called log_extra with the column {column!r}; a column's name is a string")
            values = values.tolist() if hasattr(values, "tolist") and hasattr(values, "ndim") else values
            if not isinstance(values, (list, tuple)) or len(values) != rows:
                got = f"{len(values)} values" if isinstance(values, (list, tuple)) else type(values).__name__
                raise MetricRefused(f"{who} logged {got} as column {column!r}; log_extra takes a list of {rows}, "
                                    "one per completion of the call")
            cells = self.extra.setdefault(column, {})
            for i, value in enumerate(values):
                if first + i in cells:
                    raise MetricRefused(f"{who} logged column {column!r} for a row that already has it (two functions "
                                        "logging one column name, or one logging it twice): give each its own name")
                cells[first + i] = _json_scalar(value, f"{who} logged {column!r}")
        return log_extra

    def extras(self, rows: int) -> list[dict[str, Any]]:
        """Each of the first `rows` rows' logged columns, {column: value} (empty where nothing was logged)."""
        return [{c: cells[i] for c, cells in self.extra.items() if i in cells} for i in range(rows)]

    @staticmethod
    def merged(parts: Sequence[dict[str, list]]) -> Logged:
        """One Logged from several processes' `totals`, summed name by name."""
        out = Logged()
        for totals in parts:
            for name, (total, count) in totals.items():
                out.totals.setdefault(name, [0.0, 0])
                out.totals[name][0] += total
                out.totals[name][1] += count
        return out

    def log_own(self, name: str, values) -> None:
        """Values policyforge itself logs in the block (a reward-model ensemble's, one per row; a tensor or list):
        recorded under `name` as it is, apart from the functions' reward_fn/ names, merged across processes alike."""
        values = values.tolist() if hasattr(values, "tolist") else list(values)
        total = self.totals.setdefault(OWN + name, [0.0, 0])
        total[0] += float(sum(values))
        total[1] += len(values)

    def means(self) -> dict[str, float]:
        """{"reward_fn/<name>": mean of its values} for the functions' names and {name: mean} for log_own's, sorted."""
        return {(name[len(OWN):] if name.startswith(OWN) else METRIC_PREFIX + name): total / count
                for name, (total, count) in sorted(self.totals.items())}


class MetricRefused(RewardError):
    """log_metric or log_extra was given a name or value it does not take (see their refusals)."""


def _json_scalar(value, what: str):
    """`value` as a JSON scalar (str, int, float, bool or None; numpy and torch scalars unwrapped; NaN and
    infinities, which JSON has no word for, as None), or MetricRefused."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy and torch scalars, 0-d arrays
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
    raise MetricRefused(f"{what} with the value {shown}; a column holds strings, numbers, booleans or None")


class _Context(NamedTuple):
    state: TrainerState
    logged: Logged


_CONTEXT: contextvars.ContextVar[_Context | None] = contextvars.ContextVar("policyforge_scoring", default=None)


@contextlib.contextmanager
def scoring(state: TrainerState) -> Iterator[Logged]:
    """Within the block, batched functions are given `state` as trainer_state and a log_metric whose values the
    yielded Logged collects (see the module docstring)."""
    context = _Context(state, Logged())
    token = _CONTEXT.set(context)
    try:
        yield context.logged
    finally:
        _CONTEXT.reset(token)


@contextlib.contextmanager
def unlogged() -> Iterator[None]:
    """Within the block, what batched functions log (log_metric, log_extra) is dropped and trainer_state stays the
    current one: scoring beside the one a record describes (an evaluation's pass@k samples, beside the greedy
    answers its accuracy and reward_fn/* describe). Outside any `scoring` block it changes nothing."""
    context = _CONTEXT.get()
    if context is None:
        yield
        return
    with scoring(context.state):
        yield


def current_logged() -> Logged | None:
    """The enclosing `scoring` block's Logged; None outside any block."""
    context = _CONTEXT.get()
    return context.logged if context is not None else None


def logged_extras(rows: int) -> list[dict[str, Any]]:
    """The log_extra columns of each of the enclosing `scoring` block's first `rows` rows ({} for a row without
    any, and for every row outside a block)."""
    logged = current_logged()
    return logged.extras(rows) if logged is not None else [{} for _ in range(rows)]


def parameters(fn: RewardFn) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a built-in whose signature cannot be read: called row by row, as before
        return []


def by_name(p: inspect.Parameter) -> bool:
    return p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def is_batched(fn: RewardFn) -> bool:
    """Whether `fn` is in TRL's batched form: a parameter named completions, prompts or completion_ids, by name."""
    return any(p.name in BATCH_NAMES and by_name(p) for p in parameters(fn))


def gets_ids(fn: RewardFn) -> bool:
    """Whether `fn` itself is given completion_ids: batched, with a parameter of that name or **kwargs."""
    return is_batched(fn) and any(p.kind is p.VAR_KEYWORD or (p.name == "completion_ids" and by_name(p))
                                  for p in parameters(fn))


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
    params = parameters(fn)
    takes = {p.name for p in params if by_name(p)}
    anything = any(p.kind is p.VAR_KEYWORD for p in params)
    rendered = [ex.messages is not None for ex in examples]
    given = {
        "prompts": [[dict(m) for m in ex.messages] if r else ex.prompt for ex, r in zip(examples, rendered)],
        "completions": [[{"role": "assistant", "content": c}] if r else c for c, r in zip(completions, rendered)],
    }
    if completion_ids is not None:  # copies of plain ints: a function that edits its lists changes nothing else
        given["completion_ids"] = [[int(t) for t in row] for row in completion_ids]
    context = _CONTEXT.get()
    if context is not None:  # inside `scoring`: training, evaluation, the start-up check
        given.update(trainer_state=context.state, log_metric=context.logged.log_metric(who),
                     log_extra=context.logged.log_extra(fn, who, len(examples)))
    out = {k: v for k, v in given.items() if anything or k in takes}
    columns = _columns(examples, who)
    clash = sorted(set(columns) & set(out))  # only a context name can: _columns refuses the batched form's own
    if clash:
        raise RewardError(f"{who}: column {clash[0]!r} has the name of TRL's {clash[0]} keyword, which this "
                          "function is given: rename the column")
    out.update(columns)
    for p in params:
        if by_name(p) and p.default is p.empty and p.name not in out:
            raise RewardError(f"{who} requires the argument {p.name!r}, {_missing(p.name, examples, columns)}")
    return out


def _missing(name: str, examples: Sequence[Example], columns: dict) -> str:
    """Why a required argument `name` was not given, and what to do (`columns`: the rows' own columns)."""
    if name == "completion_ids":  # training, evaluation and a run's start-up check give them: a direct caller's
        return ("which this call of score_parts was not given: pass completion_ids=token_lists(completion_ids, "
                "completion_mask), each completion's token ids")
    if name in CONTEXT_NAMES:  # given inside `scoring` blocks only
        return ("which only training, evaluation and the start-up check give, not this call of score_parts outside "
                "a `scoring(state)` block (rewards/batched.py); give it a default or drop it")
    why = (f"which policyforge does not pass ({NOT_PASSED[name]})" if name in NOT_PASSED
           else f"which is not a column of {examples[0].where()} (columns: {', '.join(columns) or 'none'})")
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
    except MetricRefused as e:  # its own line, and where in the user's code log_metric was called
        raise MetricRefused(f"{e}{raised_at(e)}") from None
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
