"""`policyforge collect`: RLEP's experience pool from a policy (train/collect.py does the work)."""

from __future__ import annotations

import os
import sys

COLLECT_HELP = (
    "RLEP's first phase (\"RLEP: Reinforcement Learning with Experience Replay for LLM Reasoning\"): sample "
    "--samples completions (default 8) of each training prompt a run of these settings trains on (the data "
    "positions 0 .. train.steps x rollout.prompts_per_step - 1, or the first --prompts N: dynamic sampling reads "
    "further) with --model.path, keep "
    "those the reward accepts (reward >= 1, or a dict reward's 'correct' >= 1; never one cut at the budget), and "
    "write them to --out FILE (JSON Lines; a file already there is replaced). RUN_DIR, when given, goes first. Train with --data.replay-pool FILE to replay them into each group. Given a "
    "run directory (`policyforge collect RUN_DIR`: its latest checkpoint) and no --config, the settings come from "
    "the run's config.yaml and flags override them; RLEP collects from a finished plain run and then trains afresh "
    "from the base model.")


def cmd_collect(args: list[str]) -> None:
    from policyforge.cli import _absolute_flag_paths, _number, _pop, note_ignored_flags, run_config
    from policyforge.train.collect import collect
    from policyforge.train.config import load_yaml
    from policyforge.train.resume import in_start_dir
    from policyforge.train.validate import validate

    helping = any(a in ("-h", "--help") for a in args)
    out, samples, prompts = (_pop(args, f) for f in ("--out", "--samples", "--prompts"))
    if out is None and not helping:
        raise SystemExit("error: policyforge collect needs --out FILE, the pool file to write (e.g. pool.jsonl); "
                         "`policyforge collect --help` says more")
    note_ignored_flags("collect", args, "collect reads --model.*, --data.*, --rollout.* sampling options and "
                                        "--train.steps / seed, besides its own --out, --samples, --prompts")
    say = lambda line: print(line, file=sys.stderr)  # noqa: E731
    cfg, target, from_run = run_config("collect", args, COLLECT_HELP + " Its own flags: --out FILE, --samples K "
                                       "(default 8), --prompts N.")
    validate(cfg, "collect")
    out = os.path.abspath(out)  # a run's relative paths are read where it started; --out is the caller's
    samples = _number("--samples", samples, int) if samples is not None else 8
    prompts = _number("--prompts", prompts, int) if prompts is not None else None
    if not from_run:
        collect(cfg, out, samples, prompts, log=say)
        return
    run, ckpt = target
    say(f"collect: {ckpt.name} of run {run}; settings from {run / 'config.yaml'}; flags on the command line "
        "override them")
    _absolute_flag_paths(cfg, load_yaml(run / "config.yaml"))
    with in_start_dir(run, lambda *_: None):
        collect(cfg, out, samples, prompts, log=say)
