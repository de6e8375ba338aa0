"""Name -> function tables for the four families of interchangeable math.

Each entry records the function, the paper it implements, the extra batch inputs it
needs (so the trainer computes them only when asked) and, for estimators that keep
state across steps, the class of that state object. Hyper-parameters are the
function's keyword-only arguments with defaults; `check_kwargs` validates a user's
`loss_kwargs` against them at start-up, before any work is done: names, and values
coerced to each parameter's type (see `coerce_hyper`), so a typo or a wrong type fails
in the first second instead of inside the math after the model is loaded.
"""

from __future__ import annotations

import difflib
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

KINDS = ("advantage", "loss", "drift", "aggregation")

# Inputs the trainer knows how to supply on request (see train/step.py).
# Everything else in a function's keyword-only arguments is a hyper-parameter.
BATCH_INPUTS = frozenset(
    {
        "mask",  # (B, T) completion-token mask (advantages only take it as a keyword)
        "ref_logp",  # (B, T) reference-policy log-prob of each sampled token
        "behav_logp",  # (B, T) the sampler's log-prob of each token at its temperature, before top-p/top-k
        "teacher_logp",  # (B, T) teacher-model log-prob of each sampled token
        "entropy",  # (B, T) full-vocabulary entropy of the current policy (differentiable)
        "logits",  # (B, T, V) current policy logits (differentiable)
        "ref_logits",  # (B, T, V) reference-policy logits
        "target_ids",  # (B, T) reference-solution tokens, for supervised-style losses
        "seq_logp",  # (B,) behaviour log-likelihood of each completion
        "prompt_ids",  # (B,) integer id of each sample's prompt in its dataset
        "answers",  # list[str] of length B, the answer each completion gives
        "reward_components",  # (B, K) separate reward signals before weighting
        "source",  # list[str] of length B: fresh | replayed | refined | hinted
        "state",  # the entry's persistent state object (see Entry.state)
        "step",  # int, the optimiser step about to be taken
        "num_tokens",  # global completion-token count of the whole batch (aggregation)
        "num_seqs",  # global sequence count of the whole batch (aggregation)
        "max_len",  # the generation budget, max_new_tokens (aggregation)
    }
)


@dataclass(frozen=True)
class Entry:
    """One registered function and what the trainer needs to know about it."""

    kind: str
    name: str
    fn: Callable[..., Any]
    paper: str
    arxiv: str = ""
    peers: str = ""
    state: type | None = None
    needs: tuple[str, ...] = field(default=())
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    """String hyper-parameter -> its allowed values (e.g. level: token, sequence)."""
    zero_adv_inert: bool = False
    """Loss only: a sample whose advantage is zero on all its tokens adds exactly nothing to the loss or
    its gradient, and the other samples' losses do not depend on it. The trainer may then skip its
    backward pass (optim.skip_zero_advantage); tests/algos/test_contract.py checks every such entry."""
    aggregation: str = ""
    """Loss only: the aggregation its paper defines it with, when that is not the run's default
    token_mean (sequence-level losses: seq_mean_token_mean); the trainer says so at start-up when
    a run picks another."""
    success_reward: bool = False
    """Advantage only: its formula reads the reward as success, 1 solved and 0 not (a count of r > 0.5, a
    success rate, a Beta-distributed rate); a run that adds a length penalty to the reward
    (algo.overlong_buffer) is refused with it."""

    def hyper(self) -> dict[str, Any]:
        """Keyword-only hyper-parameters and their defaults."""
        out = {}
        for p in inspect.signature(self.fn).parameters.values():
            if p.kind is p.KEYWORD_ONLY and p.name not in BATCH_INPUTS:
                out[p.name] = p.default
        return out

    def hyper_types(self) -> dict[str, Any]:
        """Hyper-parameter -> the type its value must have: the annotation, else the default's type.

        The annotation says more than the default where the default is None (`clamp: float | None`,
        `weights: tuple[float, ...] | None`) or where None is also allowed (cpgd's drift_clip). A None
        default without an annotation maps to None: any value is taken as given.
        """
        try:
            hints = typing.get_type_hints(self.fn)
        except (NameError, TypeError):  # an annotation that does not resolve: fall back to the defaults
            hints = {}
        return {k: hints.get(k, None if v is None else type(v)) for k, v in self.hyper().items()}

    def summary(self) -> str:
        """First line of the docstring."""
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""


_TABLES: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}

def register(kind: str, name: str, *, paper: str, arxiv: str = "", peers: str = "", state: type | None = None,
             choices: dict[str, tuple[str, ...]] | None = None, zero_adv_inert: bool = False,
             aggregation: str = "", success_reward: bool = False):
    """Decorator adding `fn` to the `kind` table under `name`.

    The batch inputs an entry needs are read off its keyword-only arguments that are
    named in BATCH_INPUTS (without a default, or defaulting to None). `choices` names the
    allowed values of string hyper-parameters, so `check_kwargs` refuses a typo at start-up
    (the math functions refuse it too, but only when first called). `zero_adv_inert`, `aggregation`,
    `success_reward`: see Entry.
    """
    if kind not in _TABLES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    choices = dict(choices or {})

    def deco(fn):
        if not _is_builtin(fn):  # the built-ins first, so a user's name that collides with one is refused here
            _load_all()
        old = _TABLES[kind].get(name)
        if old is not None and _origin(old.fn) != _origin(fn):  # the same function again (a reloaded module) replaces
            raise ValueError(f"{kind} {name!r} is already registered by {_origin(old.fn)} ({where(old.fn)}); "
                             f"register {_origin(fn)} under another name")
        check_signature(kind, name, fn, state)
        params = inspect.signature(fn).parameters.values()
        needs = tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name in BATCH_INPUTS)
        entry = Entry(kind, name, fn, paper, arxiv, peers, state, needs, choices, zero_adv_inert, aggregation,
                      success_reward)
        hyper = entry.hyper()
        for key, allowed in choices.items():  # a programming error, caught when the module is imported
            if key not in hyper or hyper[key] not in allowed:
                raise ValueError(f"{kind} {name!r}: choices {key}={allowed} miss the default or name no parameter")
        _TABLES[kind][name] = entry
        return fn

    return deco


# The positional inputs of each kind (DESIGN.md, "The contract of the math"); names may differ, not the count.
CONTRACT = {
    "advantage": ("scores", "group"),
    "loss": ("logp", "old_logp", "adv", "mask"),
    "drift": ("logp", "ref_logp", "mask"),
    "aggregation": ("per_token_loss", "mask"),
}
COUNTS = ("num_tokens", "num_seqs", "max_len")  # what the trainer passes every aggregation


def check_signature(kind: str, name: str, fn: Callable, state: type | None = None) -> None:
    """ValueError, naming the function and its file:line, when `fn` cannot be called the way the trainer calls a
    `kind`: its positional inputs, keyword-only hyper-parameters with defaults (so a config's typo can be refused at
    start-up), keyword-only batch inputs the trainer knows (BATCH_INPUTS), and a `state` class it can checkpoint."""
    def refuse(why: str):
        raise ValueError(f"{kind} {name!r} ({_origin(fn)}, {where(fn)}): {why}")

    params = list(inspect.signature(fn).parameters.values())
    contract = CONTRACT[kind]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            refuse(f"takes {'*' if p.kind is p.VAR_POSITIONAL else '**'}{p.name}; name each hyper-parameter as a "
                   f"keyword-only argument with a default (after `*`), so that a misspelt one is refused at start-up")
    if len(positional) > len(contract) and positional[len(contract)].default is not inspect.Parameter.empty:
        refuse(f"{positional[len(contract)].name!r} is positional; hyper-parameters are keyword-only: write "
               f"`def {fn.__name__}({', '.join(contract)}, *, {positional[len(contract)].name}=...)`")
    if len(positional) != len(contract):
        refuse(f"takes {len(positional)} positional inputs; a {kind} takes {len(contract)}: ({', '.join(contract)})")
    for p in params:
        if p.kind is p.KEYWORD_ONLY and p.default is inspect.Parameter.empty and p.name not in BATCH_INPUTS:
            close = difflib.get_close_matches(p.name, sorted(BATCH_INPUTS), n=1)
            refuse(f"keyword-only {p.name!r} has no default and is no batch input the trainer supplies"
                   + (f" (did you mean {close[0]!r}?)" if close else "")
                   + f"; batch inputs: {', '.join(sorted(BATCH_INPUTS))}; a hyper-parameter needs a default")
    if kind == "aggregation":
        missing = [c for c in COUNTS if c not in {p.name for p in params if p.kind is p.KEYWORD_ONLY}]
        if missing:
            refuse(f"takes no keyword-only {', '.join(missing)}; the trainer passes an aggregation the whole batch's "
                   "counts (num_tokens=None, num_seqs=None, max_len=None), so that micro-batch losses add up to the "
                   "full-batch loss")
    if state is not None and not all(callable(getattr(state, m, None)) for m in ("state_dict", "load_state_dict")):
        refuse(f"state class {state.__name__} has no state_dict() and load_state_dict(d): checkpoints save it "
               "and exact resume restores it")


def _is_builtin(fn: Callable) -> bool:
    return (getattr(fn, "__module__", None) or "").startswith("policyforge.")


def _origin(fn: Callable) -> str:
    """module.qualname of a function: who registered an entry."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def where(fn: Callable) -> str:
    """FILE:LINE where `fn` is defined, or "?" (a builtin or C function)."""
    fn = inspect.unwrap(fn)
    try:
        return f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (OSError, TypeError):
        return "?"


def is_builtin(entry: "Entry") -> bool:
    """Whether policyforge itself defines `entry` (its tests check it), or a user's module does."""
    return _is_builtin(entry.fn)


class UnknownAlgorithm(ValueError):
    """A name or hyper-parameter that is not in the registry."""


def table(kind: str) -> dict[str, Entry]:
    _load_all()
    return _TABLES[kind]


def get(kind: str, name: str) -> Entry:
    tab = table(kind)
    if name not in tab:
        from policyforge.algos.recipes import RECIPES

        recipe = (f" ({name!r} is a recipe of several options: {RECIPES[name].flags}; `policyforge algos {name}`)"
                  if name in RECIPES else "")
        raise UnknownAlgorithm(f"unknown {kind} {name!r}; valid names: {', '.join(sorted(tab))}{recipe}")
    return tab[name]


def check_kwargs(entry: Entry, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` with each value coerced to its hyper-parameter's type (`coerce_hyper`).

    Raises UnknownAlgorithm naming the bad keys, or the first value that does not fit, its key
    and the type expected.
    """
    valid = entry.hyper()
    bad = sorted(set(kwargs) - set(valid))
    if bad:
        shown = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "(none)"
        raise UnknownAlgorithm(f"{entry.kind} {entry.name!r} has no hyper-parameter {', '.join(bad)}; valid: {shown}")
    hints = entry.hyper_types()
    out = {}
    for key, value in kwargs.items():
        allowed = entry.choices.get(key, ())
        try:
            out[key] = coerce_hyper(value, hints[key], allowed)
        except _NoFit:
            raise UnknownAlgorithm(f"{entry.kind} {entry.name!r} hyper-parameter {key}={value!r}: expected "
                                   f"{_expected(hints[key], allowed, key)}") from None
    return out


class _NoFit(Exception):
    """A value that does not fit a type (internal: check_kwargs turns it into UnknownAlgorithm)."""


_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0"}


def coerce_hyper(value: Any, hint: Any, choices: tuple[str, ...] = ()) -> Any:
    """`value` as type `hint`, leniently where a command line or YAML file gives text; else _NoFit.

    - bool: True/False, 1/0, or the text true/false, yes/no, 1/0 in any case ('false' is truthy
      text, so taking it as given would silently switch the option on);
    - float: an int, float or numeric text, finite; int: a whole number, or text of one;
    - str: text, one of `choices` when the parameter has a fixed set;
    - list/tuple of floats: a list of numbers, one number, or text '[1.0, 0.5]' / '1.0,0.5';
    - X | None: None (or the text none/null), else X;
    - hint None (a None default without annotation), or a type not listed here: the value as given.
    """
    origin = typing.get_origin(hint)
    if hint is None or (origin is None and hint not in (bool, int, float, str, type(None))):
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(hint), choices)
    if origin in (list, tuple):
        return _coerce_floats(value)
    if hint is bool:
        return _coerce_bool(value)
    if hint is int and type(value) is int:  # exact: a float round trip would change ints beyond 2**53
        return value
    if hint in (int, float) and not isinstance(value, bool):  # True is an int, but never meant as a number
        number = finite_number(value)
        if number is not None and (hint is float or number.is_integer()):
            return hint(number)
    elif hint is str and isinstance(value, str) and (not choices or value in choices):
        return value
    elif hint is type(None) and value is None:
        return None
    raise _NoFit


def _coerce_union(value: Any, args: tuple, choices: tuple[str, ...]) -> Any:
    if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
        return None
    for arg in args:
        if arg is not type(None):
            try:
                return coerce_hyper(value, arg, choices)
            except _NoFit:
                pass
    raise _NoFit


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise _NoFit


def _coerce_floats(value: Any) -> list[float]:
    # The command line gives a list as separate numbers (tyro parses them), or as one quoted text.
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        value = text.replace(",", " ").split()
    elif not isinstance(value, (list, tuple)):
        value = [value]
    numbers = [None if isinstance(v, bool) else finite_number(v) for v in value]
    if not numbers or None in numbers:
        raise _NoFit
    return numbers


def finite_number(value: Any) -> float | None:
    """A finite float from an int, float or numeric text, else None."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _expected(hint: Any, choices: tuple[str, ...], key: str) -> str:
    """The type `hint` of hyper-parameter `key` in words, for an error message."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_expected(a, choices, key) for a in typing.get_args(hint))
    if typing.get_origin(hint) in (list, tuple):
        return f"a list of numbers, e.g. [1.0, 0.5] (on the command line: {key} 1.0 0.5)"
    if choices:
        return "one of " + ", ".join(repr(c) for c in choices)
    names = {bool: "a bool (true/false, yes/no, 1/0)", int: "a whole number (int)", float: "a number (float)",
             str: "text (str)", type(None): "None"}
    return names.get(hint, str(hint))


def find(name: str) -> list[Entry]:
    """Every entry called `name`, across kinds."""
    _load_all()
    return [t[name] for t in _TABLES.values() if name in t]


def _load_all() -> None:
    # Importing every module of the algos package fills the tables (each module
    # registers its functions); after the first call the imports are cached.
    import importlib
    import pkgutil

    import policyforge.algos as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"policyforge.algos.{mod.name}")
