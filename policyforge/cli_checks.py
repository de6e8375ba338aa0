"""Checks on the command line itself, around tyro's parse: what a TRL user types first, and dict
flags whose repeated keys the parse would silently merge.

tyro answers an unknown flag with the closest policyforge name, which for a peer's name can
mislead (TRL's `--beta`, the KL coefficient, is closest to `--optim.betas`, AdamW's). So peers'
names are recognised first and answered with the option that does the same thing here: every peer
name given (verl's overrides too, and the keys of a peer's --config file) in one error, each translated
with the user's value where one flag does its job, then the whole command translated.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shlex
import typing

from policyforge.cli_port import (Ported, many, number, hydra_values, report, together, rebuilt, translate,
                                  config_mapping)
from policyforge.cli_trl import MULTI, PEER_FLAGS, PEER_TO, PEER_TOGETHER, SFT_FLAGS, SFT_TO, SWITCHES
from policyforge.cli_verl import VERL_FLAGS, VERL_KEYS, VERL_SECTIONS, VERL_TOGETHER, verl_answer
from policyforge.train.config import ConfigError

# flags whose value is a dict given as KEY VALUE ... pairs
DICT_FLAGS = {"--algo.loss-kwargs": ("algo", "loss_kwargs"), "--algo.advantage-kwargs": ("algo", "advantage_kwargs"),
              "--algo.drift": ("algo", "drift"), "--algo.drift-kwargs": ("algo", "drift_kwargs"),
              "--data.chat-template-kwargs": ("data", "chat_template_kwargs")}


def _flag(arg: str) -> str:
    return arg.split("=", 1)[0].replace("_", "-")


def peer_answer(name: str, command: str = "train") -> str | None:
    """The policyforge option that does the job of TRL's / OpenRLHF's `name` (a flag without its dashes, or a
    config key: `beta`, `max_completion_length`), or None."""
    answers = {**PEER_FLAGS, **SFT_FLAGS} if command == "sft" else PEER_FLAGS
    return answers.get(name.replace("_", "-"))


@functools.cache
def _own_flags() -> dict[str, float]:
    """Every policyforge option as a flag, `--section.option-name` (and a yes/no one's `--section.no-option`
    form), with how many words it takes: none (yes/no, or a dict flag, whose keys are names), one, or any (a list)."""
    from policyforge.cli_help import flag_name
    from policyforge.train.config import Config

    out = {}
    for section in dataclasses.fields(Config):
        options = section.default_factory()
        hints = typing.get_type_hints(type(options))
        for f in dataclasses.fields(options):
            kind = typing.get_origin(hints[f.name])
            words = 0 if hints[f.name] is bool or kind is dict else float("inf") if kind in (list, tuple) else 1
            out[flag_name(section.name, f.name)] = 0 if flag_name(section.name, f.name) in DICT_FLAGS else words
            out[flag_name(section.name, "no_" + f.name)] = 0
    return out


def _peer_name(arg: str, command: str) -> str | None:
    """The TRL / OpenRLHF name flag `arg` gives, dashed: bare (`--beta`; policyforge's own flags all have a
    section, so none is shadowed) or under a section guessed for it (`--algo.beta`, not an option here)."""
    if not arg.startswith("--"):
        return None
    flag = _flag(arg)
    bare, _, rest = flag[2:].partition(".")
    if "." in rest or (rest and flag in _own_flags()):
        return None
    name = rest or bare
    return name if peer_answer(name, command) else None


def _override(arg: str) -> str | None:
    """verl's dotted key, when `arg` is a Hydra override naming one (`actor_rollout_ref.rollout.n=4`, also written
    as a flag, `--actor_rollout_ref.rollout.n=4`); not a flag's `--data.stop=a.b=c`, nor a dict flag's `x=1` or a
    run directory."""
    key, eq, _ = arg.partition("=")
    key = key[2:] if key.startswith("--") and key[2:3].isalpha() else key
    return key if not key.startswith("-") and eq and "." in key and verl_answer(key) else None


def _values(args: list[str], i: int, name: str) -> list[str]:
    """The values flag args[i] was given: after its `=`, or the words that follow it (one; several for a
    MULTI name; for a SWITCHES name, one only when it says true or false), up to the next flag or override."""
    if "=" in args[i]:
        return [args[i].split("=", 1)[1]]
    words = []
    for arg in args[i + 1:]:
        if (arg.startswith("-") and number(arg) != number(arg)) or _override(arg):
            break
        words.append(arg)
    if name in SWITCHES:
        return words[:1] if words and words[0].lower() in ("true", "false", "1", "0") else []
    return words if name in MULTI else words[:1]


def _command_items(args: list[str], command: str) -> tuple[list[Ported], set[int]]:
    """Each peer flag (with its values) and verl override in `args`, translated, in order; the places they fill."""
    items, used, own_values = [], set(), 0
    for i, arg in enumerate(args):
        if arg.startswith("-"):  # the words after one of policyforge's own flags are its values, as they look
            own_values = 0 if "=" in arg else _own_flags().get(_flag(arg), 0)
        elif own_values:
            own_values -= 1
            continue
        if i in used:
            continue
        if key := _override(arg):
            key = key.lstrip("+")
            answer = VERL_KEYS.get(key)  # None: a key of a section only verl has, answered together
            items.append(translate(VERL_FLAGS, Ported(arg, key, hydra_values(arg.partition("=")[2]), answer, at=i)))
            used.add(i)
        elif name := _peer_name(arg, command):
            values = _values(args, i, name)
            taken = 1 if "=" in arg else 1 + len(values)
            table = {**PEER_TO, **SFT_TO} if command == "sft" else PEER_TO
            items.append(translate(table, Ported(shlex.join(args[i:i + taken]), name, values,
                                                 peer_answer(name, command), at=i, source="flag")))
            used |= set(range(i, i + taken))
    return together(together(items, VERL_TOGETHER), PEER_TOGETHER), used


def _unknown_flags(args: list[str], used: set[int]) -> list[Ported]:
    """The flags of `args` outside `used` that are neither policyforge's nor a peer's known name (OpenRLHF's
    --rollout_batch_size where it had no entry, a typo): each with its value, answered as having no counterpart."""
    own, out = _own_flags(), []
    for i, arg in enumerate(args):
        if i in used or not arg.startswith("--") or _flag(arg) in own or _flag(arg) in ("--config", "--help"):
            continue
        values = _values(args, i, _flag(arg)[2:])
        taken = 1 if "=" in arg else 1 + len(values)
        out.append(Ported(shlex.join(args[i:i + taken]), _flag(arg)[2:], values, None, at=i, source="unknown"))
        used |= set(range(i, i + taken))
    return out


def _file_items(cls, data: dict, where: str, command: str) -> tuple[list[Ported], bool]:
    """The keys of config `data` (of dataclass `cls`, at `where`) that are not policyforge's, each answered and
    translated, and whether any key is policyforge's (then the file stays and the command is not rebuilt)."""
    items, own = [], False
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key in hints and dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            inner, inner_own = _file_items(hints[key], value, f"{where}{key}.", command)
            items, own = items + inner, own or inner_own
        elif key in hints:
            own = True
        else:
            items += [_file_item(k, v, command) for k, v in _leaves(f"{where}{key}", value)]
    return items, own


def _leaves(key: str, value, depth: int = 0) -> list[tuple[str, object]]:
    """The dotted keys under `key` with their values; a null is verl's unset, with nothing to port."""
    if depth > 32:  # a YAML alias inside itself (a: &x {b: *x}) nests without end
        raise ConfigError(f"config key {key.split('.')[0]!r} nests more than 32 levels deep")
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(f"{key}.{k}", v, depth + 1)]
    return [] if value is None else [(key, value)]


def _file_item(key: str, value, command: str) -> Ported:
    """Config key `key` (dotted) of a peer's file, with its value, answered and translated."""
    values = [str(v).lower() if isinstance(v, bool) else str(v) for v in (value if isinstance(value, list) else
                                                                          [value])]
    shown = f"{key}: {value if isinstance(value, str) else json.dumps(value, default=str)}"
    name = key.rsplit(".", 1)[-1].replace("_", "-")
    if key in VERL_KEYS:
        return translate(VERL_FLAGS, Ported(shown, key, values, VERL_KEYS[key], source="key"))
    if home := _home(key):
        return translate({key: lambda v: _home_flag(key, v)}, Ported(shown, key, values, home, source="key"))
    table = {**PEER_TO, **SFT_TO} if command == "sft" else PEER_TO
    answer = peer_answer(name, command)
    return translate(table, Ported(shown, name if answer else key, values, answer, source="key"))


def _homes(key: str) -> list[str]:
    """The sections that have an option named as dotted `key` ends, when it is at the top or in a section."""
    from policyforge.train.config import Config

    name = key.rsplit(".", 1)[-1]
    return [] if key.count(".") > 1 else [f.name for f in dataclasses.fields(Config)
                                          if any(g.name == name for g in dataclasses.fields(f.default_factory()))]


def _home(key: str) -> str | None:
    """'it belongs under optim: (optim.lr)' for an option of policyforge's put in another section, or at the top."""
    name = key.rsplit(".", 1)[-1]
    return ("it belongs under " + " or ".join(f"{h}: ({h}.{name})" for h in _homes(key))) if _homes(key) else None


def _home_flag(key: str, values: list[str]) -> str | None:
    """The flag of the one section with `key`'s option, with `values` (`--train.seed 3`; a yes/no one as
    --train.progress or --train.no-progress); None where two sections have it (lr: optim's or sft's?)."""
    homes, option = _homes(key), key.rsplit(".", 1)[-1].replace("_", "-")
    if len(homes) != 1:
        return None
    if values in (["true"], ["false"]):
        return f"--{homes[0]}.{'no-' * (values == ['false'])}{option}"
    return many(f"--{homes[0]}.{option} {{}}")(values)


def _peer_file(cls, data: dict, where: str, command: str, always: bool = False):
    """The keys of config `data` that are not policyforge's, answered (with whether any key is policyforge's), when
    it is a peer's config (a verl section at its top, or two or more keys a peer names) or `always`; else None:
    a single wrong key keeps its one-line answer (unknown_key_error)."""
    items, own = _file_items(cls, data, where, command)
    answered = [i for i in items if i.answer is not None and not i.answer.startswith("it belongs")]
    if always or (not where and any(str(k) in VERL_SECTIONS for k in data)) or len(answered) > 1:
        return together(together(items, VERL_TOGETHER), PEER_TOGETHER), own
    return None


def check_peer_flags(args: list[str], command: str = "train", launch: list[str] = ()) -> None:
    """ConfigError answering every TRL / OpenRLHF flag and verl override in `args` (and a peer's --config file's
    keys) with the policyforge option that does its job in `command`, in one message: a port takes one run.
    `launch` (--resume RUN, the Ray flags: the command's own, taken out of `args`) leads the whole command."""
    items, used = _command_items(args, command)
    if items:  # a whole command to paste must hold nothing the parse would refuse: other unknown flags are named
        items += _unknown_flags(args, used)
    path = next((i for i, a in enumerate(args) if a.split("=", 1)[0] == "--config"), None)
    data = config_mapping(args, path) if path is not None else None
    file_items, own = [], False
    if data is not None:  # from_dict meets a file's keys a section at a time and stops at the first wrong one: a
        from policyforge.train.config import Config  # verl YAML starts with data:, whose keys would hide the rest

        file_items, own = _peer_file(Config, data, "", command, always=bool(items)) or ([], False)
    if not items and not file_items:
        return
    for item in file_items:
        item.at = path
    if file_items and not own:
        used |= {path, path + 1} if "=" not in args[path] else {path}
    whole = None if own and file_items else [*launch, *rebuilt(args, items + file_items, used)]
    raise report(items + file_items, whole, command)


def unknown_key_error(cls, data: dict, where: str, key) -> ConfigError:
    """from_dict's error for `key`, not an option of `cls` at `where`: every peer key of `data` answered at once
    when it is a peer's config, else the one key's answer (its section, a peer's name, or the valid keys)."""
    ported = _peer_file(cls, data, where, "train")
    if ported:
        items, own = ported
        whole = None if own or where else [t for i in items for t in shlex.split(i.flags or "")]  # where: a part
        return report(items, whole, "train")
    dotted = f"{where}{key}"
    peer, verl = peer_answer(str(key)), verl_answer(dotted)
    home = _home(dotted)
    return ConfigError(f"unknown config key {dotted!r}; " + (
        home if home else f"it is TRL's or OpenRLHF's name: here it is {peer}" if peer else
        f"it is {verl}" if verl else f"valid keys here: {', '.join(f.name for f in dataclasses.fields(cls))}"))


def check_dict_flags(args: list[str], cfg) -> None:
    """ConfigError for a dict flag given twice or naming a key twice: the parse keeps one value and drops the
    other without a word (`--algo.drift k3 0.04 k3 0.1` would run with 0.1)."""
    for flag, (section, name) in DICT_FLAGS.items():
        starts = [i for i, a in enumerate(args) if _flag(a) == flag]
        if len(starts) > 1:
            raise ConfigError(f"{flag} is given {len(starts)} times; give it once, with all its keys "
                              "(a later one would replace the earlier one whole)")
        if not starts:
            continue
        tokens = []
        for a in args[starts[0] + 1:]:
            if a.startswith("--"):
                break
            tokens.append(a)
        for key in getattr(getattr(cfg, section), name):  # the keys the parse kept, each given how often
            if tokens.count(key) > 1:
                raise ConfigError(f"{flag} names {key!r} {tokens.count(key)} times; name each key once "
                                  "(only the last value would be used)")
    # `--algo.drift-kwargs k3 clamp 10 entropy target 0.3`: the parse cannot tell where k3's options end and
    # files entropy under k3
    for term, options in cfg.algo.drift_kwargs.items():
        inner = [k for k in (options if isinstance(options, dict) else {}) if k in cfg.algo.drift]
        if inner and "--algo.drift-kwargs" in map(_flag, args):
            raise ConfigError(f"--algo.drift-kwargs: the command line cannot tell where {term}'s options end and "
                              f"{inner[0]}'s begin; give the options of several drift terms in a --config file (algo: {{drift_kwargs: {{{term}: {{...}}, {inner[0]}: {{...}}}}}})")
