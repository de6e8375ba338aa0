"""A user's own algorithms: the modules named in algo.plugins, imported before any name is looked up.

A plugin is a module (found from the current directory first, as a reward module is) or a .py file whose
functions register themselves with `policyforge.algos.register`. config.yaml records the plugins, so
`--resume`, `--config runs/X/config.yaml` and every torchrun or Ray process import them again. A function
registered from a module that algo.plugins does not name (a script's or notebook's own, through
policyforge.api) is recorded by its module when that module can be imported again.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from policyforge.algos.registry import Entry, is_builtin, where
from policyforge.rewards.reward_file import PREFIX, is_file_spec, module_from_file
from policyforge.rewards.user_code import raised_at
from policyforge.train.config import AlgoConfig, ConfigError


def load_plugins(specs: list[str]) -> None:
    """Import each module or .py file of `specs`; ConfigError naming the one that fails and why."""
    cwd = str(Path.cwd())
    if specs and cwd not in sys.path:
        sys.path.insert(0, cwd)
    for spec in specs:
        if not isinstance(spec, str) or not spec.strip() or ":" in spec:
            raise ConfigError(f"algo.plugins {spec!r}: expected a module name (my_algos) or a file (path/my_algos.py), "
                              "whose functions register themselves with policyforge.algos.register")
        try:
            module_from_file(spec) if is_file_spec(spec) else importlib.import_module(spec)
        except FileNotFoundError as e:
            raise ConfigError(f"algo.plugins {spec!r}: {e}") from None
        except ModuleNotFoundError as e:
            if e.name and spec.split(".")[0] == e.name.split(".")[0]:
                raise ConfigError(f"algo.plugins {spec!r}: no module {e.name!r} (looked for from {cwd} and the "
                                  "installed packages; a file is named with its .py)") from None
            raise ConfigError(_import_failed(spec, e)) from e
        except Exception as e:  # its own code failed: a syntax error, a bad top-level line, a refused registration
            raise ConfigError(_import_failed(spec, e)) from e


def _import_failed(spec: str, e: BaseException) -> str:
    return f"algo.plugins {spec!r}: importing it raised {type(e).__name__}: {e}{raised_at(e)}"


def record_origins(cfg: AlgoConfig, entries: list[Entry], log=print) -> None:
    """Add to cfg.plugins the module of each user-registered entry it does not name yet, so that config.yaml lets
    a resumed run (or another process) import it again; a note when that module cannot be imported by name."""
    for entry in (e for e in entries if not is_builtin(e)):
        module = entry.fn.__module__
        named = {Path(s).resolve() if is_file_spec(s) else s for s in cfg.plugins}
        source = Path(where(entry.fn).rsplit(":", 1)[0])
        if module in named or (source.suffix == ".py" and source.resolve() in named):
            continue
        if module == "__main__":
            log(f"note: {entry.kind} {entry.name!r} is defined in the script that started the run; resume it from "
                "that script (train(cfg, resume=RUN_DIR)), or move it to a module named in algo.plugins so "
                "that `policyforge train --resume` can import it")
        else:  # a file loaded under a private name (rewards/reward_file.py) is recorded by its path
            cfg.plugins.append(str(source) if module.startswith(PREFIX) else module)
