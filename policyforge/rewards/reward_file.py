"""data.reward given as a file: 'path/to/rewards.py:function', as verl's custom_reward_function.path and
OpenRLHF's reward-function file take one, beside the 'module:function' form (score.load_reward_fn).

The file is run once per process and absolute path. Its folder joins the end of sys.path, as `python
path/to/rewards.py` would put it first, so the file can import modules beside it without hiding an installed
package of the same name. It is imported under its own name (`rewards`) when that name finds this very file,
so that its functions and classes pickle by reference, also into the spawned processes of a pool (they are
given the parent's sys.path); otherwise (a name taken by another module or file, or not an identifier, such as
my.rewards.py) it gets a private name, under which it works in this process but a spawned process cannot
import it. A relative path is read from the current directory: a resume and `policyforge eval` of a run work
in the directory the run started in (resume.in_start_dir).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import keyword
import re
import sys
from pathlib import Path
from types import ModuleType

PREFIX = "policyforge_reward_file_"  # private names: PREFIX + the file's stem + a hash of its path
LOADED: dict[str, Path] = {}  # module name -> the file it was loaded from (spec.py records such a module by file)


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
    for name, loaded in LOADED.items():
        if loaded == path and name in sys.modules:
            return sys.modules[name]
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    name = _own_name(path)
    if name is not None:
        module = importlib.import_module(name)
    else:
        name = f"{PREFIX}{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it, as an import does: a dataclass or pickle inside looks it up
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]  # a fixed file loads again on the next try
            raise
    LOADED[name] = path
    return module


def _own_name(path: Path) -> str | None:
    """The file's stem when importing that name gives this very file (sys.path holds its folder); else None."""
    stem = path.stem
    if not stem.isidentifier() or keyword.iskeyword(stem):
        return None
    if stem in sys.modules:
        origin = getattr(sys.modules[stem], "__file__", None)
    else:
        try:
            found = importlib.util.find_spec(stem)
        except (ImportError, ValueError):
            return None
        origin = found.origin if found is not None else None
    return stem if origin and Path(origin).resolve() == path else None
