"""Scoring completions with a reward function, and loading a user's one.

A reward function comes in one of three forms. TRL's batched form (a parameter named
`completions`, `prompts` or `completion_ids`) is called once per batch with lists, among them
each completion's token ids where the caller gives them (`completion_ids`, `token_lists`):
see rewards/batched.py. verl's form (parameters named `solution_str` and `ground_truth`) is called
row by row by verl's keywords: see rewards/verl_form.py. Any other function is called row by row, as
`fn(prompt, completion, **extra)`, where `extra` holds the row's other columns by name
(the per-row form described here). A row whose prompt was rendered with the chat template (data/chat.py) also
passes `prompt_messages`, the list of {"role", "content"} messages the template rendered
(data.system_prompt's included), since `prompt` is then the rendered text and users of
TRL's conversational format expect the messages. A row not rendered passes no such
keyword, and neither does any row to a function that could not take it (no parameter of
that name and no `**kwargs`: one written before the keyword existed keeps working); the
signature is read once per batch, not per row. The function returns either

- a finite number, or
- a dict of named components, e.g. `{"correct": 1.0, "format": 0.5}`: every row must
  return the same keys, and every value must be a finite number. The row's scalar
  reward is the *sum* of its values (what every advantage estimator sees as
  `scores`); the separate components (B, K) go to estimators that ask for them
  (`gdpo` normalises each one within its group before summing).

An error the function raises is reported with its row and where in the user's code it was
raised (`raised_at`); the start-up check (`probe`) says that its completions (and their token ids) are not
the model's.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import torch

from policyforge.data.chat import PROMPT_MESSAGES
from policyforge.data.tasks import Example
from policyforge.rewards.reward_file import is_file_spec, module_from_file
from policyforge.rewards.user_code import raised_at

RewardFn = Callable[..., "float | Mapping[str, float]"]


class RewardError(RuntimeError):
    """A reward function that cannot be loaded, raises, or returns a non-finite or malformed value."""


class Scored(NamedTuple):
    """What scoring a batch gives: the scalar rewards and, for dict rewards, their components."""

    scores: torch.Tensor  # (B,) float32: the number returned, or the sum of the dict's values
    components: torch.Tensor | None  # (B, K) float32 dict components in `names` order; None for number rewards
    names: tuple[str, ...]  # K component names, in the order the first row returned them; () for number rewards

    def correct(self) -> torch.Tensor:
        """(B,) bool: which rows count as solved (see is_correct)."""
        return is_correct(self.scores, self.components, self.names)

    def to(self, device) -> "Scored":
        comps = self.components.to(device) if self.components is not None else None
        return Scored(self.scores.to(device), comps, self.names)


CORRECT = "correct"  # the dict component that, when present, decides accuracy and pass@k
MODEL_COMPONENT = "reward_model"  # what data.reward_model adds (rewards/model.py): never part of "solved"


def is_correct(scores: torch.Tensor, components: torch.Tensor | None, names: tuple[str, ...]) -> torch.Tensor:
    """(B,) bool: a row is solved when its reward is >= 1, or, for a dict reward with a
    "correct" component, when that component is >= 1 (so partial credit from other
    components, e.g. a format bonus, never counts as a solution). A reward model's share
    (MODEL_COMPONENT) never counts: beside a function, the function's part decides; a
    reward model alone counts logit >= 1, which means only what its scale means."""
    if components is not None and CORRECT in names:
        return components[:, names.index(CORRECT)] >= 1.0
    if components is not None and MODEL_COMPONENT in names and len(names) > 1:  # the function's part alone
        return scores - components[:, names.index(MODEL_COMPONENT)] >= 1.0
    return scores >= 1.0


def solved_rows(batch) -> torch.Tensor:
    """(B,) bool: which rows of a scored RolloutBatch are solved (is_correct), decided on the reward without DAPO's
    soft overlong penalty (batch.length_penalty), which shapes the training reward but not what "solved" means."""
    unshaped = batch.scores if batch.length_penalty is None else batch.scores - batch.length_penalty
    return is_correct(unshaped, batch.reward_components, batch.reward_names)


def load_reward_fn(spec: str) -> RewardFn:
    """Import `module:function` (the current directory is searched first) or load `path/to/file.py:function`
    (rewards/reward_file.py)."""
    if ":" not in spec:
        raise RewardError(f"reward {spec!r}: expected 'module:function' or 'path/to/file.py:function', e.g. "
                          "'my_rewards:score'")
    mod_name, fn_name = spec.rsplit(":", 1) if is_file_spec(spec.rsplit(":", 1)[0]) else spec.split(":", 1)
    kind = "file" if is_file_spec(mod_name) else "module"
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = module_from_file(mod_name) if kind == "file" else importlib.import_module(mod_name)
    except FileNotFoundError as e:
        raise RewardError(f"reward {spec!r}: {e}") from None
    except ImportError as e:
        if kind == "module":
            raise RewardError(f"reward {spec!r}: cannot import module {mod_name!r} ({e})") from e
        raise RewardError(f"reward {spec!r}: importing file {mod_name!r} raised {type(e).__name__}: {e}") from e
    except Exception as e:  # the module's own code failed while importing (a syntax error, a bad top-level line)
        raise RewardError(f"reward {spec!r}: importing {kind} {mod_name!r} raised {type(e).__name__}: {e}") from e
    fn = getattr(module, fn_name, None)
    if not callable(fn) and mod_name == "__main__":  # recorded from a script's own function (api.train)
        raise RewardError(f"reward {spec!r} was defined in the script that started the run, which only that script "
                          "can import: resume from it (train(cfg, resume=RUN_DIR)); policyforge eval can score the "
                          "run with --data.reward naming a module that defines the function")
    if not callable(fn):
        hint = " (several functions are separated by commas)" if " " in fn_name.strip() else ""
        raise RewardError(f"reward {spec!r}: {kind} {mod_name!r} has no function {fn_name!r}{hint}")
    return fn


def load_rewards(spec: str, weights: Sequence[float] = ()) -> RewardFn:
    """`spec` is one 'module:function', or several separated by commas ('my:correct, my:format'), which make one
    `Combined` reward weighted by `weights` (one per function; none = all 1)."""
    from policyforge.rewards.spec import reward_specs  # it imports this module

    specs = reward_specs(spec)
    if not specs:
        raise RewardError(f"data.reward {spec!r}: expected 'module:function' (or several, separated by commas)")
    if len(specs) == 1 and not weights:
        return load_reward_fn(specs[0])
    if weights and len(weights) != len(specs):
        raise RewardError(f"data.reward_weights has {len(weights)} value(s) for {len(specs)} reward function(s) "
                          f"({', '.join(specs)}): give one weight per function")
    short = [s.split(":", 1)[-1] for s in specs]
    names = [n if short.count(n) == 1 else s for n, s in zip(short, specs)]  # two modules' `score`: in full
    twice = [n for n in names if names.count(n) > 1]
    if twice:
        raise RewardError(f"data.reward names {twice[0]!r} twice")
    fns = [load_reward_fn(s) for s in specs]
    same = [(a, b) for i, b in enumerate(specs) for a, f in zip(specs, fns[:i]) if f is fns[i]]
    if same:  # one file by two paths, or one function by two names: its components would be one and the same
        raise RewardError(f"data.reward names one function twice: {same[0][0]!r} and {same[0][1]!r}")
    return Combined(dict(zip(names, fns)), list(weights) or [1.0] * len(specs))


class Combined:
    """Several reward functions as one reward (TRL's reward_funcs with reward_weights): the reward is the
    weighted sum of the functions' numbers; each function's own number (unweighted, as TRL logs them) is a
    component named after it, so a function named `correct` decides accuracy and pass@k (is_correct) whatever
    its weight. Each function returns a number: a dict's components would have no place among the others'
    (combine those inside one function). `gdpo` normalises each component within its group and weighs them
    with its own weights."""

    def __init__(self, fns: dict[str, RewardFn], weights: Sequence[float]):
        self.fns, self.weights = fns, list(weights)

    def score_parts(self, examples: Sequence[Example], completions: Sequence[str], pool=None,
                    completion_ids: Sequence[list[int]] | None = None) -> Scored:
        columns = []
        for name, fn in self.fns.items():
            try:
                got = score_parts(fn, examples, completions, pool, completion_ids)
            except RewardError as e:
                raise RewardError(f"{name}: {e}") from e.__cause__
            if got.names:
                raise RewardError(f"{name} returns a dict ({', '.join(got.names)}); in a combined data.reward each "
                                  "function returns a number (combine components inside one function instead)")
            columns.append(got.scores)
        components = torch.stack(columns, dim=1)
        weights = torch.tensor(self.weights, dtype=components.dtype)
        return Scored(components @ weights, components, tuple(self.fns))


def score(fn: RewardFn, examples: Sequence[Example], completions: Sequence[str],
          completion_ids: Sequence[list[int]] | None = None) -> torch.Tensor:
    """Rewards (B,) float32 for each (example, completion) pair; a dict reward gives the sum of its values.

    Errors name the row. Use `score_parts` to keep a dict reward's separate components.
    """
    return score_parts(fn, examples, completions, completion_ids=completion_ids).scores


def token_lists(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    """B lists of ints: each row's tokens of `ids` (B, T) where `mask` (B, T) is non-zero, in order. For a rollout's
    completion_ids and completion_mask: the sampled tokens up to and including EOS (or the token that completed a
    stop string), without padding, which is what TRL passes a batched reward as `completion_ids`."""
    keep = mask.detach().bool().cpu()
    flat = ids.detach().cpu()[keep]  # one copy off the device, then split by each row's length
    return [row.tolist() for row in flat.split(keep.sum(-1).tolist())]


def score_parts(fn: RewardFn, examples: Sequence[Example], completions: Sequence[str], pool=None,
                completion_ids: Sequence[list[int]] | None = None) -> Scored:
    """Rewards (B,) and, when the function returns dicts, their components (B, K) and names.

    The scalar reward of a dict row is the sum of its values. Every row must return the
    same kind of value (number or dict) and, for dicts, the same keys; errors name the row.
    A reward that scores whole batches (rewards.model.Ensemble, Pooled: its own
    `score_parts`) is called once for all rows, and so is a function in TRL's batched form
    (rewards/batched.py: numbers only, no dicts, `pool` unused). With `pool` (a concurrent.futures executor)
    the rows are scored concurrently, the results and the first error in row order.
    `completion_ids` (B lists of ints, e.g. `token_lists` of a rollout) reaches only functions in TRL's batched
    form; a per-row function never sees it. None: the caller has text alone, and a batched function that
    requires the ids is refused by name.
    """
    if isinstance(fn, Combined):  # it passes the threads on to its functions
        return fn.score_parts(examples, completions, pool, completion_ids)
    if hasattr(fn, "score_parts"):  # Ensemble, Pooled
        return fn.score_parts(examples, completions, completion_ids=completion_ids)
    from policyforge.rewards.batched import is_batched, score_batched  # it imports this module

    if is_batched(fn):  # TRL's form: one call for all rows (threads would have nothing to share)
        values = score_batched(fn, examples, completions, completion_ids)
        return Scored(torch.tensor(values, dtype=torch.float32), None, ())
    from policyforge.rewards.verl_form import is_verl_form, score_verl  # it imports this module

    if is_verl_form(fn):  # verl's compute_score: the reward is its number, or its dict's "score"
        return score_verl(fn, examples, completions, pool)
    messages = takes_messages(fn)
    calls = zip(examples, completions)
    values = (in_threads(pool, lambda pair: _call(fn, *pair, messages), calls) if pool
              else (_call(fn, *pair, messages) for pair in calls))
    scores, comps, names, first = [], [], None, None
    for ex, value in zip(examples, values):
        if first is None:
            first = ex.where()
            names = _names(value, ex) if isinstance(value, Mapping) else ()
        if names:
            row = _components(value, ex, names, first)
            comps.append(row)
            scores.append(sum(row))
        elif isinstance(value, Mapping):
            raise RewardError(f"reward function returned a dict with keys {list(value)} for {ex.where()} but a "
                              f"number for {first}; every row must return the same kind of value")
        else:
            scores.append(_number(value, ex))
    components = torch.tensor(comps, dtype=torch.float32) if names else None
    return Scored(torch.tensor(scores, dtype=torch.float32), components, names or ())


def takes_messages(fn: RewardFn) -> bool:
    """Whether `fn` can be given the keyword prompt_messages: it has a parameter of that name, or **kwargs.
    A callable whose signature cannot be read (some built-ins) is not given it, as one that cannot take it."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or (p.name == PROMPT_MESSAGES and p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                                                    p.KEYWORD_ONLY))
               for p in params)


def _keywords(ex: Example, messages: bool) -> dict:
    """The row's keyword arguments: its other columns, and with `messages` a rendered row's prompt_messages
    (a copy, so a function that edits them cannot change what later calls and the reward model see)."""
    if not messages or ex.messages is None:
        return ex.extra
    if PROMPT_MESSAGES in ex.extra:  # data/chat.py refuses such a column; an Example built by hand may have one
        raise RewardError(f"{ex.where()} has a column {PROMPT_MESSAGES!r}, the keyword its rendered prompt's "
                          "messages are passed by: rename the column")
    return {**ex.extra, PROMPT_MESSAGES: [dict(m) for m in ex.messages]}


def _call(fn: RewardFn, ex: Example, completion: str, messages: bool = False):
    keywords = _keywords(ex, messages)
    try:
        return fn(ex.prompt, completion, **keywords)
    except Exception as e:  # the user's code: report which row made it fail
        where = raised_at(e)
        hint = ("; the per-row form is called as fn(prompt, completion, **columns), every other column by name: "
                "give it **kwargs (verl's compute_score is told by its solution_str and ground_truth parameters)"
                if isinstance(e, TypeError) and not where else "")  # the call itself failed: its signature
        raise RewardError(
            f"reward function raised on {ex.where()} (prompt {ex.prompt[:60]!r}, "
            f"completion {completion[:60]!r}): {type(e).__name__}: {e}{where}{hint}"
        ) from e


def probe(reward: RewardFn, examples: Sequence[Example], tokenizer=None) -> Scored:
    """score_parts on `examples` with each row's solution as its completion (an empty one where it has none): the
    start-up check that a reward works before any model work. Its errors say so, since their `completion ''`
    is not anything the model wrote. With `tokenizer` (the policy's) and a reward that reads completion_ids
    (`takes_completion_ids`), those are the stand-in's tokens (`stand_in_ids`); without one, none are given."""
    completions = [ex.solution or "" for ex in examples]
    ids = stand_in_ids(tokenizer, completions) if tokenizer is not None and takes_completion_ids(reward) else None
    try:
        return score_parts(reward, examples, completions, completion_ids=ids)
    except RewardError as e:
        given = {bool(c) for c in completions}
        label = ("empty completion" if given == {False} else "the row's solution as completion" if given == {True}
                 else "the row's solution as completion, an empty one where it has none")
        ids_note = "; completion_ids are the stand-in's tokens and EOS" if ids is not None else ""  # not sampled ones
        raise RewardError(f"start-up check ({label}, not a model output{ids_note}): {e}") from e.__cause__


def stand_in_ids(tokenizer, completions: Sequence[str]) -> list[list[int]]:
    """B lists of ints: each text's tokens (no special tokens added) then the tokenizer's EOS, as a sampled
    completion that ended by itself carries it in its ids while its text does not."""
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    return [list(ids) + eos for ids in tokenizer(list(completions), add_special_tokens=False)["input_ids"]]


def reward_functions(reward: RewardFn):
    """The functions inside a reward: a Combined's, the one a Pooled or Ensemble wraps (none for a reward model
    alone), or the reward itself."""
    if isinstance(reward, Combined):
        for fn in reward.fns.values():
            yield from reward_functions(fn)
    elif hasattr(reward, "score_parts"):  # Pooled, Ensemble
        if getattr(reward, "fn", None) is not None:
            yield from reward_functions(reward.fn)
    else:
        yield reward


def takes_completion_ids(reward: RewardFn) -> bool:
    """Whether scoring with `reward` gives completion_ids to any of its functions: one in TRL's batched form with
    a parameter of that name or **kwargs (rewards/batched.py). Callers tokenize only then."""
    from policyforge.rewards.batched import gets_ids  # it imports this module

    return any(map(gets_ids, reward_functions(reward)))


def ids_for(reward: RewardFn, ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]] | None:
    """`token_lists(ids, mask)` when `reward` reads completion_ids, else None: the copy off the device and the
    lists are made only for a reward that uses them."""
    return token_lists(ids, mask) if takes_completion_ids(reward) else None


def _number(value, ex: Example, component: str | None = None, who: str = "reward function") -> float:
    """`value` as a finite float, or a RewardError naming `who` returned it and the row (and the component of a
    dict reward)."""
    where = ex.where() if component is None else f"component {component!r} of {ex.where()}"
    if isinstance(value, (str, bytes)):  # float("1.0") would pass, but text is a bug in the reward, not a score
        raise RewardError(f"{who} returned {value!r} for {where}; expected a number, not text")
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float's range
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise RewardError(f"{who} returned {shown} for {where}; expected a number") from None
    if not math.isfinite(value):
        raise RewardError(f"{who} returned {value} for {where} (prompt {ex.prompt[:60]!r}); rewards must be finite")
    return value


def _names(value: Mapping, ex: Example) -> tuple[str, ...]:
    """The component names of the first dict row: non-empty, all strings."""
    names = tuple(value)
    if not names:
        raise RewardError(f"reward function returned an empty dict for {ex.where()}; "
                          "return a number or a dict with at least one component")
    if not all(isinstance(k, str) for k in names):
        raise RewardError(f"reward function returned keys {list(names)} for {ex.where()}; "
                          "component names must be strings")
    return names


def _components(value, ex: Example, names: tuple[str, ...], first: str) -> list[float]:
    """A dict row's values in `names` order; its keys must be exactly `names`."""
    if not isinstance(value, Mapping) or set(value) != set(names):
        found = f"keys {list(value)}" if isinstance(value, Mapping) else repr(value)
        raise RewardError(f"reward function returned {found} for {ex.where()}; expected keys {list(names)} "
                          f"(those of {first}): every row must return the same components")
    return [_number(value[k], ex, k) for k in names]


class Pooled:
    """A reward function called on `workers` rows at once (data.reward_workers), in threads: for rewards that
    wait rather than compute (running tests in a subprocess, asking a server), which Python's lock lets
    overlap. Same values and errors as calling it row by row."""

    def __init__(self, fn: RewardFn, workers: int):
        from concurrent.futures import ThreadPoolExecutor

        self.fn, self.workers = fn, workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reward")

    def score_parts(self, examples: Sequence[Example], completions: Sequence[str],
                    completion_ids: Sequence[list[int]] | None = None) -> Scored:
        return score_parts(self.fn, examples, completions, self.pool, completion_ids)


def in_threads(pool, call: Callable, items) -> Iterator:
    """`call` of each of `items`, run in `pool`'s threads, the results (or the first error) in order; like
    pool.map, what has not started is cancelled when the caller stops early. On Ctrl-C it says how many calls
    are still running: Python cannot stop a thread, so the process waits for them before it exits."""
    futures = [pool.submit(call, item) for item in items]
    try:
        for future in futures:
            yield future.result()
    except KeyboardInterrupt:
        for future in futures:
            future.cancel()
        running = sum(not future.done() for future in futures)
        if running:
            print(f"waiting for the {running} reward call(s) already running to return before exiting (Python "
                  "cannot stop a thread); Ctrl-C again to quit without waiting", file=sys.stderr, flush=True)
        raise
    finally:
        for future in futures:
            future.cancel()


def same_components(b, first):
    """The RolloutBatch `b` with its reward components in `first`'s column order: a dict reward's components are
    named in the order the first row of each scoring returned them (each process's, each sampling round's).
    RewardError naming a row when the two batches' rewards differ in kind or keys."""
    if b.reward_names == first.reward_names:
        return b
    if set(b.reward_names) != set(first.reward_names):
        def kind(x) -> str:
            return f"the components {list(x.reward_names)}" if x.reward_names else "a number"
        raise RewardError(f"the reward returned {kind(first)} for {first.examples[0].where()} but {kind(b)} for "
                          f"{b.examples[0].where()}: every row must return the same kind, with the same keys")
    order = [b.reward_names.index(n) for n in first.reward_names]
    return dataclasses.replace(b, reward_components=b.reward_components[:, order], reward_names=first.reward_names)
