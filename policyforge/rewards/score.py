"""Scoring completions with a reward function, and loading a user's one.

A reward function is called as `fn(prompt, completion, **extra)`, where `extra`
holds the row's other columns (TRL's convention of passing dataset columns as
keywords), and returns a finite number.
"""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch

from policyforge.data.tasks import Example

RewardFn = Callable[..., float]


class RewardError(RuntimeError):
    """A reward function that cannot be loaded, raises, or returns a non-finite value."""


def load_reward_fn(spec: str) -> RewardFn:
    """Import `module:function` (the current directory is searched first)."""
    if ":" not in spec:
        raise RewardError(f"reward {spec!r}: expected 'module:function', e.g. 'my_rewards:score'")
    mod_name, fn_name = spec.split(":", 1)
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise RewardError(f"reward {spec!r}: cannot import module {mod_name!r} ({e})") from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise RewardError(f"reward {spec!r}: module {mod_name!r} has no function {fn_name!r}")
    return fn


def score(fn: RewardFn, examples: Sequence[Example], completions: Sequence[str]) -> torch.Tensor:
    """Rewards (B,) float32 for each (example, completion) pair; errors name the row."""
    out = []
    for ex, completion in zip(examples, completions):
        try:
            value = fn(ex.prompt, completion, **ex.extra)
        except Exception as e:  # the user's code: report which row made it fail
            raise RewardError(
                f"reward function raised on row {ex.index} (prompt {ex.prompt[:60]!r}, "
                f"completion {completion[:60]!r}): {type(e).__name__}: {e}"
            ) from e
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise RewardError(f"reward function returned {value!r} for row {ex.index}; expected a number") from None
        if not math.isfinite(value):
            raise RewardError(
                f"reward function returned {value} for row {ex.index} (prompt {ex.prompt[:60]!r}); rewards must be finite"
            )
        out.append(value)
    return torch.tensor(out, dtype=torch.float32)
