"""Where in the user's code an error was raised: the line a reward's error message points at."""

from __future__ import annotations

import os
import site
import sysconfig
import traceback


def _library_dirs() -> tuple[str, ...]:
    """Where code that is not the user's lives: policyforge, the standard library, installed packages."""
    paths = sysconfig.get_paths()
    dirs = [POLICYFORGE_DIR] + [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    dirs += getattr(site, "getsitepackages", list)()  # absent from some virtualenvs' site module
    return tuple(sorted({os.path.join(os.path.realpath(d), "") for d in dirs}))


POLICYFORGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "")
LIBRARY_DIRS = _library_dirs()


def raised_at(error: BaseException) -> str:
    """' (at FILE:LINE in FUNCTION)': where in the user's code `error` was raised, or "" when nowhere.

    The rule: of the traceback's frames below policyforge's own call, the deepest one outside policyforge, the
    standard library and installed packages (the user's reward module, or a helper of theirs it calls); when
    there is none (the reward is an installed package's function), the reward function's own frame. An error
    raised by the call itself (a wrong argument) has no frame below it: "". FILE is relative to the current
    directory when inside it."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not os.path.realpath(f.filename).startswith(POLICYFORGE_DIR)]
    if not frames:
        return ""
    users = [f for f in frames if not f.filename.startswith("<frozen")
             and not os.path.realpath(f.filename).startswith(LIBRARY_DIRS)]
    frame = users[-1] if users else frames[0]
    path = os.path.abspath(frame.filename)
    shown = os.path.relpath(path) if path.startswith(os.path.join(os.getcwd(), "")) else frame.filename
    return f" (at {shown}:{frame.lineno} in {frame.name})"
