"""data.reward given as a file: 'path/to/rewards.py:function', as verl's custom_reward_function.path and
OpenRLHF's reward-function file take one, beside the 'module:function' form (score.load_reward_fn).

The file is run once per process and absolute path, as a module of its own named after the path (two files
both called rewards.py stay apart, and several functions of one file share its globals). Its folder joins
the end of sys.path, as `python path/to/rewards.py` would put it first, so the file can import modules beside
it without hiding an installed package of the same name. A relative path is read from the current directory:
a resume and `policyforge eval` of a run work in the directory the run started in (resume.in_start_dir).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


PREFIX = "policyforge_reward_file_"  # the modules' names: PREFIX + the file's stem + a hash of its path


def is_file_spec(module_part: str) -> bool:
    """Whether the part before ':' of a data.reward spec names a Python file rather than a module."""
    return module_part.endswith(".py")


def module_from_file(module_part: str) -> ModuleType:
    """The module the file `module_part` defines, run on first use; FileNotFoundError naming the path (and the
    directory a relative one was looked for in) when there is no such file."""
    path = Path(module_part).expanduser()
    if not path.is_file():
        where = "" if path.is_absolute() else f" (looked for from {Path.cwd()})"
        raise FileNotFoundError(f"no file {module_part!r}{where}")
    path = path.resolve()
    name = f"{PREFIX}{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    sys.modules[name] = module  # before running it, as an import does: a dataclass or pickle inside may look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # a fixed file loads again on the next try
        raise
    return module
