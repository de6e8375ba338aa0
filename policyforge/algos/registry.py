"""Name -> function tables for the four families of interchangeable math.

Each entry records the function, the paper it implements, the extra batch inputs it
needs (so the trainer computes them only when asked) and, for estimators that keep
state across steps, the class of that state object. Hyper-parameters are the
function's keyword-only arguments with defaults; `check_kwargs` validates a user's
`loss_kwargs` against them at start-up, before any work is done.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

KINDS = ("advantage", "loss", "drift", "aggregation")

# Inputs the trainer knows how to supply on request (see train/step.py).
# Everything else in a function's keyword-only arguments is a hyper-parameter.
BATCH_INPUTS = frozenset(
    {
        "mask",  # (B, T) completion-token mask (advantages only take it as a keyword)
        "ref_logp",  # (B, T) reference-policy log-prob of each sampled token
        "behav_logp",  # (B, T) log-prob the rollout sampler assigned to each token
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

    def hyper(self) -> dict[str, Any]:
        """Keyword-only hyper-parameters and their defaults."""
        out = {}
        for p in inspect.signature(self.fn).parameters.values():
            if p.kind is p.KEYWORD_ONLY and p.name not in BATCH_INPUTS:
                out[p.name] = p.default
        return out

    def summary(self) -> str:
        """First line of the docstring."""
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""


_TABLES: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}


def register(kind: str, name: str, *, paper: str, arxiv: str = "", peers: str = "", state: type | None = None):
    """Decorator adding `fn` to the `kind` table under `name`.

    The batch inputs an entry needs are read off its keyword-only arguments that are
    named in BATCH_INPUTS (without a default, or defaulting to None).
    """
    if kind not in _TABLES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")

    def deco(fn):
        if name in _TABLES[kind]:
            raise ValueError(f"{kind} {name!r} registered twice")
        params = inspect.signature(fn).parameters.values()
        needs = tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name in BATCH_INPUTS)
        _TABLES[kind][name] = Entry(kind, name, fn, paper, arxiv, peers, state, needs)
        return fn

    return deco


class UnknownAlgorithm(ValueError):
    """A name or hyper-parameter that is not in the registry."""


def table(kind: str) -> dict[str, Entry]:
    _load_all()
    return _TABLES[kind]


def get(kind: str, name: str) -> Entry:
    tab = table(kind)
    if name not in tab:
        raise UnknownAlgorithm(f"unknown {kind} {name!r}; valid names: {', '.join(sorted(tab))}")
    return tab[name]


def check_kwargs(entry: Entry, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Return `kwargs` if every key is a hyper-parameter of `entry`, else raise naming the bad keys."""
    valid = entry.hyper()
    bad = sorted(set(kwargs) - set(valid))
    if bad:
        shown = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "(none)"
        raise UnknownAlgorithm(f"{entry.kind} {entry.name!r} has no hyper-parameter {', '.join(bad)}; valid: {shown}")
    return dict(kwargs)


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
