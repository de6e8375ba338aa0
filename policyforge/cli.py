"""`policyforge sft | train | eval | report | algos | bench`.

Options come from the nested config dataclasses (train/config.py) through tyro, so
`policyforge train --help` lists every field with its docstring. A YAML file given
with `--config FILE` sets the defaults that command-line flags then override.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
import textwrap

USAGE = """usage: policyforge COMMAND [--config FILE] [--section.option VALUE ...]

commands:
  sft     teacher-forced fine-tuning on task solutions (the RL warm start)
  train   RL post-training (GRPO / PPO family); --resume RUN_DIR continues a run exactly;
          data-parallel over N processes: torchrun --nproc-per-node N -m policyforge.cli train ...,
          or on Ray: train --ray-workers N [--ray-gpus-per-worker G] [--ray-address ADDR]
  eval    held-out accuracy and pass@k of a model, or of a run's checkpoint with the run's settings
          (`eval RUN_DIR` scores its latest checkpoint)
  collect RLEP's experience pool: a policy's verified completions of the training prompts, which
          train replays with --data.replay-pool FILE (`collect RUN_DIR --out pool.jsonl`)
  report  how runs learned and drifted: a figure of their curves and a summary with warnings
  export  a run's policy as a standalone Hugging Face model folder, LoRA merged (`export RUN_DIR --out DIR`)
  algos   list the advantage estimators, losses, drift terms and aggregations; `algos NAME` for one
  bench   one RL step of policyforge vs TRL's GRPOTrainer, side by side (bench/vs_trl.py; needs .[bench])

`policyforge COMMAND --help` lists every option with its meaning and default.
"""


FLAG_VALUES = {"--resume": "RUN_DIR", "--config": "FILE", "--ray-workers": "N", "--ray-gpus-per-worker": "0 or 1",
               "--ray-address": "ADDRESS", "--lora-base": "DIR", "--plugins": "MODULE_OR_FILE[,MODULE_OR_FILE]", "--model.path": "DIR"}


def _pop(args: list[str], flag: str) -> str | None:
    """Remove `flag VALUE` (or `flag=VALUE`) from args and return VALUE; SystemExit naming the flag when it is given
    without a value or twice (tyro would call it an unrecognised option: it is one of the command's own)."""
    places = [i for i, a in enumerate(args) if a == flag or a.startswith(flag + "=")]
    if not places:
        return None
    if len(places) > 1:
        raise SystemExit(f"error: {flag} is given {len(places)} times; give it once")
    i = places[0]
    given = args[i].split("=", 1)[1] if "=" in args[i] else args[i + 1] if i + 1 < len(args) else None
    if not given or (given.startswith("--") and "=" not in args[i]):
        raise SystemExit(f"error: {flag} needs a value ({flag} {FLAG_VALUES.get(flag, 'VALUE')})")
    del args[i : i + (1 if "=" in args[i] else 2)]
    return given


def parse_config(prog: str, args: list[str], description: str, launch: list[str] | None = None):
    import tyro

    from policyforge.cli_checks import check_dict_flags, check_peer_flags
    from policyforge.data.chat import typed_option
    from policyforge.train.config import Config, load_yaml

    command = [w for w in prog.split() if not w.startswith("[")][-1]  # "policyforge eval [RUN_DIR]": eval
    if launch is None:  # else cmd_train checked the command line before its --resume became a --config
        check_peer_flags(args, command)  # verl's overrides too
    path = _pop(args, "--config")
    base = load_yaml(path) if path else Config()
    description += " --config FILE reads the options from a YAML file first; flags override it."
    # tyro turns a non-empty dict default into fixed sub-flags (--algo.loss-kwargs.eps-low), so once a
    # file set one, `--algo.loss-kwargs eps_low 0.2` would be refused: parse with the dicts empty,
    # then keep each file value whose flag was not given (a given flag replaces the whole dict).
    from_file = {}
    for section_name, section in vars(base).items():
        for name, value in vars(section).items():
            if isinstance(value, dict) and value:
                from_file[(section_name, name)] = value
                setattr(section, name, {})
    if command != "train" and any(a in ("-h", "--help") for a in args):  # the options this command reads
        from policyforge.cli_help import help_view

        view = help_view(command, base)
        tyro.cli(type(view), args=["--help"], default=view, prog=prog, description=description)
    cfg = tyro.cli(Config, args=args, default=base, prog=prog, description=description)
    check_dict_flags(args, cfg)
    for (section_name, name), value in from_file.items():
        flags = {f"--{section_name}.{n}" for n in (name, name.replace("_", "-"))}
        if not any(a.split("=", 1)[0] in flags for a in args):
            setattr(getattr(cfg, section_name), name, value)
            owner = name[:-len("_kwargs")] if name.endswith("_kwargs") else None  # algo.loss for algo.loss_kwargs
            section = getattr(cfg, section_name)
            if owner and hasattr(section, owner):
                # the file's own value of the owner (algo.drift is a dict too, emptied above for the parse)
                in_file = from_file.get((section_name, owner), getattr(getattr(base, section_name), owner))
                if getattr(section, owner) != in_file:
                    print(f"note: {section_name}.{name} {value} comes from {path}, where it is set for "
                          f"{section_name}.{owner} {in_file}; the command line's {getattr(section, owner)} gets it "
                          f"too (give --{section_name}.{name.replace('_', '-')} to set its own)", file=sys.stderr)
    # the command line gives template options as text; typed here, config.yaml records what the template gets
    cfg.data.chat_template_kwargs = {k: typed_option(v) for k, v in cfg.data.chat_template_kwargs.items()}
    return cfg


def cmd_train(args: list[str]) -> None:
    from pathlib import Path

    from policyforge.cli_checks import check_peer_flags
    from policyforge.train.loop import train

    resume = _pop(args, "--resume")
    ray_workers, ray_gpus, ray_address, lora_base = (_pop(args, f) for f in (
        "--ray-workers", "--ray-gpus-per-worker", "--ray-address", "--lora-base"))
    launch = [w for flag, value in (("--resume", resume), ("--ray-workers", ray_workers), ("--ray-gpus-per-worker",
              ray_gpus), ("--ray-address", ray_address), ("--lora-base", lora_base)) if value is not None
              for w in (flag, value)]
    check_peer_flags(args, "train", launch)  # a peer's flags answered with a whole command that keeps these
    if resume:
        if not (Path(resume) / "config.yaml").exists():
            raise SystemExit(f"error: --resume {resume!r}: not a run directory (no config.yaml)")
        if any(a == "--config" or a.startswith("--config=") for a in args):
            raise SystemExit(f"error: --resume takes the run's own settings ({Path(resume) / 'config.yaml'}); drop "
                             "--config (a flag may still change what a resume allows, e.g. --train.steps)")
        args = ["--config", str(Path(resume) / "config.yaml")] + args
    cfg = parse_config("policyforge train", args, "RL post-training. Add --resume RUN_DIR to continue a run exactly. "
                       "--lora-base DIR: where the base model now is, when model.path is a LoRA checkpoint whose recorded "
                       "base is not on this machine. Data-parallel over N processes (N GPUs, or CPU cores): `torchrun --nproc-per-node N -m "
                       "policyforge.cli train ...` (rollout.prompts_per_step must divide by N), or on Ray: "
                       "--ray-workers N [--ray-gpus-per-worker G] [--ray-address ADDR] (needs the ray extra).",
                       launch)
    if ray_workers is None:
        if ray_gpus or ray_address:
            raise SystemExit("error: --ray-gpus-per-worker and --ray-address go with --ray-workers N")
        from policyforge.models.lora import moved_base

        with moved_base(lora_base):  # model.path a LoRA checkpoint whose own base is elsewhere on this machine
            train(cfg, resume=resume)
        return
    if lora_base:
        raise SystemExit("error: --lora-base is not passed on to Ray workers: run with torchrun, or put the base "
                         "back at the path the checkpoint's adapter_config.json names")
    from policyforge.train.ray_launch import train_on_ray

    train_on_ray(cfg, resume, _number("--ray-workers", ray_workers, int), _number("--ray-gpus-per-worker",
                                                                                  ray_gpus or "0", float), ray_address)


def _number(flag: str, text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise SystemExit(f"error: {flag} {text!r}: not a{'n integer' if kind is int else ' number'}") from None


def note_ignored_flags(command: str, args: list[str], hint: str) -> None:
    """One line naming the flags `command` ignores (cli_help.ignores): not an error, so that one flag list or
    --config file can serve train, sft and eval."""
    from policyforge.cli_help import ignores

    flags = [a.split("=", 1)[0].replace("_", "-") for a in args if a.startswith("--")]
    ignored = [f for f in flags if ignores(command, f)]
    if ignored:
        print(f"note: policyforge {command} ignores {', '.join(ignored)} (`policyforge {command} --help` lists the "
              f"options it reads); {hint}", file=sys.stderr)


def cmd_sft(args: list[str]) -> None:
    from policyforge.train.sft import sft

    note_ignored_flags("sft", args, "sft's own are --sft.steps, --sft.batch-size, --sft.lr, --sft.out, "
                                   "--sft.noise")
    sft(parse_config("policyforge sft", args, "Teacher-forced fine-tuning on task solutions; options under --sft.*."))


EVAL_HELP = ("Held-out accuracy (greedy), pass@k, and the greedy answers' mean reward and length (and what a TRL-form "
             "reward logs) of --model.path. Given a run directory (`policyforge eval RUN_DIR` "
             "or --model.path RUN_DIR: its latest complete checkpoint) or one of a run's checkpoints "
             "(--model.path RUN_DIR/checkpoints/step_N) and no --config, eval starts from the run's config.yaml (its "
             "task or data, reward, held-out split, seed, chat template and sampling settings, relative paths read "
             "where the run started) and flags override it; a flag that changes the held-out rows (data.path, "
             "data.eval_path, data.task_size, a larger data.eval_size) gets a warning that they may include rows the "
             "run trained on. --lora-base DIR: where the base model is now, for a LoRA checkpoint whose recorded base "
             "(an absolute path) is not on this machine.")


def eval_target(args: list[str], command: str = "eval") -> tuple | None:
    """(run directory, checkpoint) when `policyforge eval` is given a run directory (first argument, or
    --model.path) or a run's checkpoint, with `args` then naming that checkpoint by its absolute path as
    --model.path; None otherwise, `args` naming the same model as before."""
    from policyforge.train.evaluate import run_of

    given = args.pop(0) if args and not args[0].startswith("-") else None
    flag = _pop(args, "--model.path")
    if given is not None and flag is not None:
        raise SystemExit(f"error: policyforge {command} {given}: give a run directory or --model.path, not both")
    found = run_of(given if given is not None else flag) if (given or flag) else None
    if found is None and given is not None:
        raise SystemExit(f"error: policyforge {command} {given}: not a run directory (one with config.yaml and "
                         f"checkpoints/); to {'evaluate' if command == 'eval' else 'sample from'} a model folder, "
                         "give it as --model.path")
    if flag is not None or found is not None:
        args += ["--model.path", str(found[1].resolve()) if found else flag]
    return found


def run_config(command: str, args: list[str], description: str) -> tuple:
    """(config, eval_target's (run, checkpoint) or None, whether the settings come from that run's config.yaml:
    a run directory or checkpoint given without --config) of `policyforge COMMAND [RUN_DIR] ARGS`."""
    target = eval_target(args, command)
    from_run = target is not None and not any(a.split("=", 1)[0] == "--config" for a in args)
    if from_run:
        args[:0] = ["--config", str(target[0] / "config.yaml")]
    return parse_config(f"policyforge {command} [RUN_DIR]", args, description), target, from_run


def cmd_eval(args: list[str]) -> None:
    from policyforge.models.lora import moved_base

    with moved_base(_pop(args, "--lora-base")):  # a LoRA checkpoint whose base is elsewhere on this machine
        _eval(args)


def _eval(args: list[str]) -> None:
    from pathlib import Path

    from policyforge.rewards.batched import TrainerState
    from policyforge.train.checkpoint import base_changed, step_of
    from policyforge.train.config import load_yaml
    from policyforge.train.evaluate import split_changes, trainer_state
    from policyforge.train.resume import in_start_dir
    from policyforge.train.validate import validate

    note_ignored_flags("eval", args, "eval reads --model.path / dtype / device, --data.*, --rollout.max-new-tokens / "
                                    "temperature / stop and --train.pass-k / --train.seed")
    say = lambda line: print(line, file=sys.stderr)  # noqa: E731  (stdout is the result's JSON line)
    cfg, target, from_run = run_config("eval", args, EVAL_HELP)
    if from_run and cfg.data.eval_size == 0:
        raise SystemExit(f"error: run {target[0]} held no rows out (data.eval_size 0: every row trained); give "
                         "--data.eval-path FILE (and --data.eval-size N) to score other prompts")
    validate(cfg, "eval")
    step = (step_of(target[1]) or 0) if target else 0  # a TRL reward's trainer_state, with the run's max_steps
    if not from_run:
        if target is not None:
            say(f"eval: {target[1].name} of run {target[0]}")
        _score(cfg, say, trainer_state(load_yaml(target[0] / "config.yaml"), step) if target is not None
               else TrainerState.outside_a_run())
        return
    run, ckpt = target
    say(f"eval: {ckpt.name} of run {run}; settings from {run / 'config.yaml'} (the run this checkpoint belongs "
        "to); flags on the command line override them")
    for warning in base_changed(ckpt):
        say(warning)
    ran = load_yaml(run / "config.yaml")
    _absolute_flag_paths(cfg, ran)
    here = Path.cwd()
    with in_start_dir(run, lambda *_: None):
        if Path.cwd() != here:
            say(f"eval: the run's relative paths are read from {Path.cwd()}, where it started")
        for change in split_changes(ran.data, cfg.data):
            say(f"warning: {change} differs from the run's: the held-out rows scored may include rows the run "
                "trained on, so the figures may overstate held-out accuracy; leave the flag out to score the run's "
                "own held-out rows")
        _score(cfg, say, trainer_state(ran, step))


def _absolute_flag_paths(cfg, ran) -> None:
    """Files a flag names (data.path, data.eval_path, data.reward_model, and data.reward's module or file) are
    found from the current directory, while eval works in the run's start directory (resume.in_start_dir)."""
    for key in ("path", "eval_path"):
        value = getattr(cfg.data, key)
        if value and value != getattr(ran.data, key) and os.path.exists(value):
            setattr(cfg.data, key, os.path.abspath(value))
    from policyforge.rewards.spec import reward_model_paths

    if cfg.data.reward_model and cfg.data.reward_model != ran.data.reward_model:  # one folder, or an ensemble's
        cfg.data.reward_model = ",".join(os.path.abspath(p) if os.path.exists(p) else p
                                         for p in reward_model_paths(cfg.data.reward_model))
    if cfg.data.reward and cfg.data.reward != ran.data.reward:
        from policyforge.rewards.spec import reward_specs

        cfg.data.reward = ", ".join(_absolute_file(spec) for spec in reward_specs(cfg.data.reward))
        if os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())  # after the start directory, which the reward's loader puts first


def _absolute_file(spec: str) -> str:
    """A 'path/to/file.py:function' reward with an existing relative path made absolute; any other as it is."""
    from policyforge.rewards.reward_file import is_file_spec

    path, _, name = spec.rpartition(":")
    return f"{os.path.abspath(path)}:{name}" if is_file_spec(path) and os.path.isfile(path) else spec


def _score(cfg, say, state) -> None:
    """Evaluate as `cfg` says (train/eval_job.py) and print the result's JSON line; `state` is what a TRL-form
    reward sees as its trainer_state (a run's checkpoint's, from the run's config.yaml; else
    TrainerState.outside_a_run())."""
    import json

    from policyforge.train.eval_job import evaluate

    print(json.dumps(evaluate(cfg, say, state)))


def cmd_report(args: list[str]) -> None:
    import argparse

    from policyforge.metrics.report import report

    ap = argparse.ArgumentParser(
        prog="policyforge report",
        description="Draw one or more run directories' curves side by side (reward, held-out accuracy, KL to the "
                    "reference, entropy, clip fractions, lengths, gradient norm, step time) and print each run's "
                    "start -> end figures with warnings (entropy collapse, growing KL, clipping, gradient spikes).",
        epilog="example: policyforge report runs/grpo runs/dapo --out compare.png")
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (runs/<name>), one colour each")
    ap.add_argument("--out", help="the figure's file (.png, .svg or .pdf); default: report.png in the first run")
    ap.add_argument("--smooth", type=int, metavar="N",
                    help="moving-average window in steps for the per-step curves; default: a fiftieth of the run")
    a = ap.parse_args(args)
    report(a.runs, a.out, a.smooth)


def cmd_algos(args: list[str]) -> None:
    from policyforge.algos.recipes import RECIPES, recipe_text
    from policyforge.algos.registry import KINDS, UnknownAlgorithm, find, table

    if args and args[0] in ("-h", "--help"):
        print("usage: policyforge algos [NAME] [--plugins MODULE_OR_FILE[,...]]\n\nWithout NAME: every advantage "
              "estimator, loss, drift term, aggregation and recipe, a line each with its paper.\nWith NAME: that one's "
              "formula, hyper-parameters and defaults, batch inputs, paper, peers' conventions and state; a recipe's "
              "options together.\n--plugins: your own functions too (modules or .py files that register them with "
              "policyforge.algos.register, as algo.plugins of a run).\n"
              "Choose them with --algo.advantage, --algo.loss, --algo.drift and --algo.aggregation.")
        return
    plugins = _pop(args, "--plugins")  # the modules a run names in algo.plugins: their functions are listed too
    if plugins is not None:
        from policyforge.train.plugins import load_plugins

        load_plugins([s.strip() for s in plugins.split(",") if s.strip()])
    if args:
        entries = find(args[0])
        if not entries and args[0] in RECIPES:
            print(recipe_text(args[0]))
            return
        if not entries:
            names = sorted({n for k in KINDS for n in table(k)})
            raise UnknownAlgorithm(f"no algorithm {args[0]!r}; valid names: {', '.join(names)}; recipes (several "
                                   f"options together): {', '.join(sorted(RECIPES))}")
        for e in entries:
            print(f"{e.name} ({e.kind})\n")
            print(textwrap.indent(inspect.getdoc(e.fn) or "", "  "))
            print(f"\n  hyper-parameters: {', '.join(f'{k}={v!r}' for k, v in e.hyper().items()) or '(none)'}")
            print(f"  batch inputs:     {', '.join(e.needs) or '(none)'}")
            print(f"  paper:            {e.paper}" + (f" (arXiv {e.arxiv})" if e.arxiv else ""))
            print(f"  peers:            {e.peers or '-'}")
            print(f"  state:            {e.state.__name__ if e.state else '(stateless)'}")
            if e.kind == "loss":
                print("  zero advantage:   " + ("inert; those samples skip the backward (optim.skip_zero_advantage)"
                                              if e.zero_adv_inert else "not inert; every sample runs backward"))
            if e.kind == "advantage":
                print("  reward read as:   " + ("success, 1 solved and 0 not (refused with algo.overlong_buffer)"
                                              if e.success_reward else "any number"))
            print()
        return
    for kind in KINDS:
        print(f"{kind} ({len(table(kind))}):")
        for name, e in sorted(table(kind).items()):
            print(f"  {name:<24} {e.summary()}")
            print(f"  {'':<24} {e.paper}" + (f" (arXiv {e.arxiv})" if e.arxiv else ""))
        print()
    print(f"recipe ({len(RECIPES)}), several options together:")
    for name, r in sorted(RECIPES.items()):
        print(f"  {name:<24} {r.flags}\n  {'':<24} {r.paper}")
    print("\n`policyforge algos NAME` shows one in full.")


def cmd_collect(args: list[str]) -> None:
    from policyforge.cli_collect import cmd_collect as run

    run(args)


def cmd_export(args: list[str]) -> None:
    from policyforge.cli_export import cmd_export as run

    run(args)


def cmd_bench(args: list[str]) -> None:
    """Run bench/vs_trl.py of the source checkout with `args` (its --help lists them)."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "vs_trl.py"
    if not script.exists():
        raise SystemExit("error: policyforge bench runs bench/vs_trl.py, which ships with the source checkout, "
                         "not the installed package: clone the repository and `pip install -e '.[bench]'`")
    sys.argv = [str(script)] + args
    runpy.run_path(str(script), run_name="__main__")


COMMANDS = {"sft": cmd_sft, "train": cmd_train, "eval": cmd_eval, "collect": cmd_collect, "report": cmd_report,
            "export": cmd_export, "algos": cmd_algos, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        if args and args[0] not in ("-h", "--help"):  # a typo: the one line, not the whole usage again
            import difflib

            close = difflib.get_close_matches(args[0], COMMANDS, 1)
            raise SystemExit(f"error: unknown command {args[0]!r}; " + (
                f"did you mean `policyforge {close[0]}`?" if close else f"the commands are {', '.join(COMMANDS)} "
                "(policyforge --help)"))
        print(USAGE, end="")
        raise SystemExit(0)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args[0] != "train":  # N copies would write the same files
        raise SystemExit(f"error: policyforge {args[0]} runs in one process; only `train` runs data-parallel under "
                         "torchrun")
    from policyforge.errors import DISK_ERRNOS, USER_ERRORS
    from policyforge.train.preempt import Preempted

    listing = args[0] in ("algos", "report") or any(a in ("-h", "--help") for a in args[1:])  # output for a reader
    try:
        try:
            COMMANDS[args[0]](args[1:])
        except SystemExit as e:  # --help ends inside the parser
            if listing and not e.code:
                sys.stdout.flush()
            raise
        if listing:
            sys.stdout.flush()  # here, so a reader that left shows up as the BrokenPipeError below
    except USER_ERRORS as e:  # one clear line for mistakes a user can make; tracebacks for bugs
        raise SystemExit(f"error: {e}") from None
    except BrokenPipeError:
        if not listing:  # a run's broken pipe (a reward server, `train | tee` dying) is a real failure
            raise
        # `policyforge algos | head`: the reader had what it wanted; the exit-time flush goes nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    except Preempted:  # SIGTERM: the run saved and said how to continue; not finished, so not a success
        raise SystemExit(128 + signal.SIGTERM) from None
    except KeyboardInterrupt:  # Ctrl-C: the run has said where it stopped; no traceback
        # Python's exit waits for threads still running (a slow reward's calls, rewards/score.py in_threads says
        # so): a second Ctrl-C quits at once, rather than as a traceback from inside that wait
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))
        raise SystemExit(130) from None
    except OSError as e:  # a full or read-only disk names its path too: one line; other OS errors stay tracebacks
        if e.errno in DISK_ERRNOS:
            raise SystemExit(f"error: {e}") from None
        raise


if __name__ == "__main__":
    main()
