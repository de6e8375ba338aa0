"""data.reward as config.yaml records it: 'module:function' text, which a resume or `policyforge eval` imports
again (score.load_reward_fn); from Python, a function, a callable object or a list of them is recorded by the
name it has in its module."""

from __future__ import annotations

import inspect
import os
import sys

from policyforge.rewards import reward_file
from policyforge.rewards.score import CORRECT, Combined, RewardError
from policyforge.rewards.user_code import LIBRARY_DIRS


def reward_spec(reward) -> str | None:
    """data.reward as config.yaml records it: text as given; from Python, a function (or a list of functions,
    objects and texts) as its 'module:function' name. A function that name cannot reach again (a lambda, one
    defined inside another, a method) is refused: put it at the top level of a module. A callable object
    (TRL's get_soft_overlong_punishment returns one) has no name of its own: the top-level name of a module of
    the user's that holds it is used (`overlong = get_soft_overlong_punishment(32, 8)` in my_rewards.py)."""
    if reward is None or isinstance(reward, str):
        return reward
    specs = []
    for fn in reward if isinstance(reward, (list, tuple)) else [reward]:
        if isinstance(fn, str):
            specs.append(fn)
            continue
        specs.append(_function_spec(fn) if inspect.isroutine(fn) or inspect.isclass(fn) else _object_spec(fn))
    return ", ".join(specs)


def reward_specs(spec: str) -> list[str]:
    """The 'module:function' parts of data.reward, in order ('a:f,b:g' and 'a:f, b:g' give the same list)."""
    return [part.strip() for part in spec.split(",") if part.strip()]


def reward_model_paths(spec) -> list[str]:
    """data.reward_model's folders: one, or several separated by commas (an ensemble), or a list of them from
    Python; a folder that exists under the whole text is that one folder, commas and all (a path object too)."""
    if spec is None:
        return []
    if isinstance(spec, (list, tuple)):  # from Python, a list of folders
        return [os.fspath(p) for p in spec]
    spec = os.fspath(spec)
    if "," in spec and os.path.isdir(spec):
        return [spec]
    return [p.strip() for p in spec.split(",") if p.strip()]


def _unnamed(fn, how: str) -> RewardError:
    return RewardError(f"data.reward={fn!r}: a reward given from Python is recorded by its 'module:function' name so "
                       f"that a resume can import it again, and this one has none; {how}")


def _function_spec(fn) -> str:
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or not name.isidentifier() or getattr(sys.modules.get(module), name, None) is not fn:
        raise _unnamed(fn, "define it with def at the top level of a module (or give 'module:function' as text)")
    return _recorded(module, name)


def _recorded(module: str, name: str) -> str:
    """'module:name', or 'path/to/file.py:name' for a module data.reward loaded from a file (reward_file.py),
    which a new process may only reach by its file."""
    return f"{reward_file.LOADED[module]}:{name}" if module in reward_file.LOADED else f"{module}:{name}"


def _object_spec(obj) -> str:
    """'module:name' of a top-level name that holds `obj` in the user's modules: one an import can reach again
    (a module of its own, when the script holds it too), else the running script's own (`__main__:name`)."""
    if not callable(obj):
        raise RewardError(f"data.reward={obj!r}: not callable; give a function, 'module:function' text, or a list")
    found = sorted({_recorded(m, k) for m, k in _user_globals() if getattr(sys.modules[m], k, None) is obj})
    importable = [f for f in found if not f.startswith("__main__:")]
    if importable or found:
        return (importable or found)[0]  # any one imports the same object again
    raise _unnamed(obj, "give it a top-level name in a module (`overlong = get_soft_overlong_punishment(32, 8)` in "
                        "my_rewards.py) and that name as text, data.reward='my_rewards:overlong'")


def _user_globals():
    """(module name, global name) of every module of the user's loaded now, each module once (the running script
    is also `__mp_main__` once torch is imported; it counts as `__main__`): not policyforge's, the standard
    library's or an installed package's."""
    seen = set()
    for name, module in sorted(sys.modules.items(), key=lambda item: item[0] != "__main__"):  # __main__ first
        path = getattr(module, "__file__", None)
        if id(module) in seen or not path or os.path.realpath(path).startswith(LIBRARY_DIRS):
            continue
        seen.add(id(module))
        for key in list(vars(module)):
            if key.isidentifier() and not key.startswith("__"):
                yield name, key


def reward_model_alone(dc) -> bool:
    """Whether data config `dc` scores with its reward model(s) alone: no function beside them (a built-in task
    keeps its verifier), so "solved" (rewards.score.is_correct) can only mean a logit >= 1."""
    return bool(dc.reward_model) and not dc.reward and dc.path is not None


def solved_is_unclear(reward, dc) -> bool:
    """Whether "solved" (rewards.score.is_correct) means little for this run's reward: a reward model alone (a
    logit >= 1), or several functions none named `correct` (their weighted sum >= 1). Methods that steer by
    success (hints, Knapsack RL's budget) refuse such rewards."""
    return (isinstance(reward, Combined) and CORRECT not in reward.fns) or reward_model_alone(dc)
