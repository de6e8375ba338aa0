"""Which options each command reads, for its note on ignored flags and for its --help.

One Config serves train, sft and eval, so that one --config file or flag list can run all three: sft and
eval accept the options only train reads and say once that they ignore them (cli.note_ignored_flags). Their
--help leaves those options out, so that it lists what the command does read; train's lists every option.
"""

from __future__ import annotations

import dataclasses
import typing

# flags (and flag prefixes) that only train reads: sft and eval ignore them
TRAIN_ONLY = ("--algo.", "--optim.", "--train.steps", "--train.out-dir", "--train.run-name", "--train.eval-every",
              "--train.save-every", "--train.keep-checkpoints", "--train.stop-after", "--train.track-ref-kl",
              "--train.log-samples", "--train.log-rollouts", "--train.tensorboard", "--rollout.prompts-per-step",
              "--rollout.group-size", "--rollout.dynamic-sampling", "--rollout.max-sampling-rounds", "--model.ref-path",
              "--model.disable-dropout",
              "--rollout.top-p", "--rollout.top-k",  # evaluation samples pass@k at rollout.temperature alone
              "--data.replay-pool", "--data.replay-per-prompt", "--rollout.hint", "--data.hint-column")
# and those eval ignores besides: it trains nothing and loads a LoRA checkpoint merged
EVAL_IGNORES = ("--sft.", "--model.lora-", "--train.progress")
# collect samples like a run's rollout (prompts_per_step at a time, train.steps x prompts_per_step prompts), so it
# reads those; it trains nothing
COLLECT_READS = ("--train.steps", "--train.seed", "--train.progress", "--rollout.prompts-per-step", "--rollout.top-p",
                 "--rollout.top-k")
COLLECT_IGNORES = TRAIN_ONLY + ("--sft.", "--model.lora-", "--train.")


def flag_name(section: str, option: str) -> str:
    """The command-line flag of config option `section.option`: --section.option-name."""
    return f"--{section}.{option.replace('_', '-')}"


def ignores(command: str, flag: str) -> bool:
    """Whether `policyforge COMMAND` ignores `flag` (written --section.option-name, or --section.no-option-name
    for a boolean turned off)."""
    if command == "train":
        return False
    section, dot, option = flag.partition(".")
    if dot and option.startswith("no-"):  # tyro's off switch of a boolean: the option it names
        flag = f"{section}.{option[3:]}"
    if command == "collect":
        return flag.startswith(COLLECT_IGNORES) and not flag.startswith(COLLECT_READS)
    return flag.startswith(TRAIN_ONLY) or (command == "eval" and flag.startswith(EVAL_IGNORES))


def help_view(command: str, cfg):
    """An instance of a Config-like dataclass holding `cfg`'s values, whose fields `command` ignores are hidden
    from tyro's --help (tyro.conf.Suppress); a section it ignores whole is hidden whole. Field docstrings are
    still read from the config classes, which the view's sections subclass."""
    import tyro

    sections = []
    for top in dataclasses.fields(cfg):
        section = getattr(cfg, top.name)
        kind = type(section)
        hints = typing.get_type_hints(kind)
        hidden = [f for f in dataclasses.fields(section)
                  if ignores(command, flag_name(top.name, f.name))]
        values = vars(section)
        if len(hidden) == len(dataclasses.fields(section)):
            sections.append((top.name, typing.Annotated[kind, tyro.conf.Suppress],
                             dataclasses.field(default_factory=lambda s=section: s)))
            continue
        view = dataclasses.make_dataclass(kind.__name__, [
            (f.name, typing.Annotated[hints[f.name], tyro.conf.Suppress], dataclasses.field(default=None))
            for f in hidden], bases=(kind,))
        sections.append((top.name, view, dataclasses.field(default_factory=lambda v=view, d=values: v(**d))))
    return dataclasses.make_dataclass(type(cfg).__name__, sections)()
