"""Porting a peer's command line or config: each name a user gave (a TRL / OpenRLHF flag, a verl override, a
config key) with its answer here and, where one flag does its job, that flag with the user's value; one error
answers them all and offers the whole command (cli_checks.check_peer_flags builds the items, cli_verl and
cli_checks hold the tables of names)."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from policyforge.train.config import ConfigError

OWN_SECTIONS = ("policyforge's sections are model, data, rollout, algo, optim, train and sft (flags --SECTION.OPTION, "
                "or SECTION: {OPTION: VALUE} in a --config file; `policyforge train --help`), and README \"Coming "
                "from TRL\" and \"Coming from verl\" map peers' names")



def one(template: str):
    """A translation that puts one value into `template` ('--rollout.group-size {}'); None for several."""
    return lambda v: template.format(shlex.quote(v[0])) if len(v) == 1 and v[0] != "" else None


def many(template: str):
    return lambda v: template.format(" ".join(map(shlex.quote, v))) if v else None


def switch(flag: str):
    """A yes/no option: given bare or true, `flag`; false, nothing (off is the default here)."""
    return lambda v: flag if not v or v[0].lower() in TRUE else "" if v[0].lower() in FALSE else None


def choice(flag: str, names: dict[str, str]):
    """A choice spelled differently: the peer's name -> ours; None for a name with no counterpart."""
    return lambda v: f"{flag} {names[v[0].lower()]}" if len(v) == 1 and v[0].lower() in names else None


def positive(template: str):
    """verl's -1 (never, or unset) has no counterpart among these options' values."""
    return lambda v: one(template)(v) if len(v) == 1 and number(v[0]) > 0 else None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")
TOP_K_OFF = ("-1", "0", "none", "null")  # verl, vLLM and OpenRLHF turn top-k off with -1; 0 is off here


def top_k(v: list[str]) -> str | None:
    return "" if len(v) == 1 and v[0].lower() in TOP_K_OFF else one("--rollout.top-k {}")(v)


def both_eps(v: list[str]) -> str | None:
    """One clip range for both sides of the ratio."""
    return "--algo.loss-kwargs eps_low {0} eps_high {0}".format(shlex.quote(v[0])) if len(v) == 1 else None


def low_and_high(low: list[str], high: list[str]) -> str | None:
    """Both clip ranges from two peer names (TRL's epsilon and epsilon_high, verl's clip_ratio(_low) and
    clip_ratio_high): the high one wins on its side whichever came first."""
    if len(low) != 1 or len(high) != 1:
        return None
    return f"--algo.loss-kwargs eps_low {shlex.quote(low[0])} eps_high {shlex.quote(high[0])}"


def or_nothing(flag: str, off: str):
    """A value whose `off` (verl's default: no entropy bonus, no KL in the reward) is the default here too."""
    return lambda v: ("" if len(v) == 1 and (v[0].lower() == off or number(v[0]) == number(off)) else
                      one(flag)(v) if "{}" in flag else None)




def hydra_values(value: str) -> list[str]:
    """A Hydra override's value as tokens: quotes dropped, a list `[a,b]` split, null (unset) none."""
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        return [x.strip().strip("'\"") for x in value[1:-1].split(",") if x.strip()]
    return [] if value.lower() in ("null", "~") else [value.strip("'\"")]


class NoCounterpart(str):
    """A together-rule's answer for names that have a counterpart each but none together (TRL's sequence-level
    ratios with its cispo loss): these words on one line, and no command offered."""


@dataclass
class Ported:
    """One peer name a user gave (a flag with its values, an override, a config key) and its answer here."""

    shown: str  # as given: `--num_generations 4`, `actor_rollout_ref.rollout.n=4`, `trainer.logger: console`
    key: str  # verl's dotted key, or TRL's name with dashes (`num-generations`)
    values: list[str]  # its value as tokens
    answer: str | None  # the words that say what does its job here; None: no counterpart (one shared line)
    flags: str | None = None  # the flags that do it with the user's value; "" nothing needed; None no clean one
    at: int = -1  # where it stood on the command line (to rebuild the whole command in order)
    source: str = "override"  # override, flag or key


def translate(table: dict, item: Ported) -> Ported:
    """`item` with its flags from `table`; none for an interpolation (`${...}`), whose value is not known here."""
    fn = table.get(item.key)
    if item.answer and item.answer.startswith("nothing:"):
        item.flags = ""
    elif fn is not None and not any("${" in v for v in item.values):
        item.flags = fn(item.values)
    return item


def together(items: list[Ported], rules: list) -> list[Ported]:
    """`items` with those that one option does together (rules as VERL_TOGETHER) merged into one line, at the
    first one's place."""
    for needed, folded, fn in rules:
        given = {i.key: i for i in items}
        if not all(k in given for k in needed):
            continue
        members = sorted((given[k] for k in needed + folded if k in given), key=items.index)
        flags = None if any("${" in v for m in members for v in m.values) else fn({m.key: m.values for m in members})
        if flags is None:
            continue
        first = members[0]
        answer, flags = (str(flags), None) if isinstance(flags, NoCounterpart) else (first.answer, flags)
        merged = Ported(" ".join(m.shown for m in members), " ".join(m.key for m in members), first.values,
                        answer, flags, first.at, first.source)  # a key no later rule matches
        items = [merged if i is first else i for i in items if i is first or i not in members]
    return items


SOURCES = {"override": ("a Hydra override of verl's", "Hydra overrides of verl's"),
           "flag": ("a TRL / OpenRLHF flag", "TRL / OpenRLHF flags"), "key": ("a config key", "config keys"),
           "unknown": ("an unknown flag", "unknown flags")}  # a typo beside a peer's flags
MERGED = ("--algo.loss-kwargs", "--algo.drift", "--algo.advantage-kwargs")  # dict flags the translations give, KEY
# VALUE pairs, once each


def report(items: list[Ported], whole: list[str] | None, command: str) -> ConfigError:
    """One error answering every item, a line each (those with no counterpart share one), then, when each has a
    clean translation and `whole` is given (the command line with each item's flags in its place), the command."""
    counts = {s: sum(len(i.key.split()) for i in items if i.source == s) for s in SOURCES}
    parts = [SOURCES[s][0] if n == 1 else f"{n} {SOURCES[s][1]}" for s, n in counts.items() if n]
    verl = any(i.source in ("override", "key") and "." in i.key for i in items)  # verl: dotted keys
    peer = any(i.source == "flag" for i in items) or not verl  # a typo alone: both guides
    guides = " and ".join(f'"Coming from {p}"' for p, hit in (("verl", verl), ("TRL", peer)) if hit)
    lines = [f"not policyforge options: {' and '.join(parts)}; here each is the option that does its job "
             f"(README {guides} map{'' if ' and ' in guides else 's'} the rest):"]
    for i in items:
        if i.answer is None:
            continue
        if i.flags is None:
            bare = i.answer.startswith(("it belongs", "no counterpart"))
            lines.append(f"  {i.shown}: {'' if bare else 'here it is '}{i.answer}")
        else:
            nothing = i.answer[len("nothing: "):] if i.answer.startswith("nothing:") else "the default here"
            lines.append(f"  {i.shown}  ->  {i.flags or f'(nothing: {nothing})'}")
    rest = [i.key if i.source == "key" else i.shown for i in items if i.answer is None]
    if rest:
        more = f" and {len(rest) - 8} more" if len(rest) > 8 else ""
        lines.append(f"  {', '.join(rest[:8])}{more}: no counterpart here; {OWN_SECTIONS}")
    if whole is not None and all(i.flags is not None and i.answer is not None for i in items):
        tokens, dropped = fitted_to_loss(merged(whole))
        lines += [f"  note: {flag} is given twice, {first!r} and then {last!r}: the parse keeps the last; keep the "
                  "one you mean" for flag, first, last in _repeated(tokens)]
        lines += [f"  note: {loss} has no hyper-parameter {key} here (`policyforge algos {loss}`): left out of the "
                  "command" for loss, key in dropped]
        lines.append(f"the whole command: policyforge {command} {shlex.join(tokens)}".rstrip())
    return ConfigError("\n".join(lines))


def _repeated(tokens: list[str]) -> list[tuple[str, str, str]]:
    """(flag, its first and last settings) for each flag a command line gives twice with different values (a
    translation's and the user's own): the parse would silently keep the last."""
    given: dict[str, list[str]] = {}
    for i, tok in enumerate(tokens):
        if tok.startswith("--") and tok not in MERGED:
            j = i + 1
            while j < len(tokens) and not tokens[j].startswith("--"):
                j += 1
            given.setdefault(tok.split("=", 1)[0], []).append(shlex.join(tokens[i:j]))
    return [(flag, ways[0], ways[-1]) for flag, ways in given.items() if len(set(ways)) > 1]


def merged(tokens: list[str]) -> list[str]:
    """`tokens` with each MERGED dict flag given once, holding every KEY VALUE pair it was given (a later value
    for a key wins), since the command line refuses one given twice (`--epsilon 0.2 --epsilon_high 0.28`), and a
    flag given twice alike (the file's --train.no-progress and the user's) once."""
    out, pairs, seen, i = [], {}, set(), 0
    while i < len(tokens):
        j = i + 1
        while j < len(tokens) and not tokens[j].startswith("--"):
            j += 1
        segment = tokens[i:j]
        if segment[0] in MERGED:
            if segment[0] not in pairs:
                pairs[segment[0]] = {}
                out.append(segment[0])  # its pairs are filled in below, at its first place
            pairs[segment[0]].update(zip(segment[1::2], segment[2::2]))
            out.extend(segment[len(segment) - (len(segment) - 1) % 2:])  # an odd word after the pairs: a run dir
        elif tuple(segment) not in seen or not segment[0].startswith("--"):
            out.extend(segment)
        seen.add(tuple(segment))
        i = j
    return [t for tok in out for t in ([tok, *(x for kv in pairs[tok].items() for x in kv)] if tok in pairs
                                       else [tok])]


def fitted_to_loss(tokens: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """`tokens` (merged) without the --algo.loss-kwargs keys the chosen loss (--algo.loss, else ppo_clip) has no
    hyper-parameter for, and (loss, key) for each left out: a peer reads its clip ranges, delta or temperatures
    only in the losses they belong to, and the command here would refuse them."""
    from policyforge.algos.registry import table

    loss = next((tokens[i + 1] for i in range(len(tokens) - 2, -1, -1) if tokens[i] == "--algo.loss"), "ppo_clip")
    entry = table("loss").get(loss)
    if entry is None or "--algo.loss-kwargs" not in tokens:
        return tokens, []
    start = tokens.index("--algo.loss-kwargs")
    end = next((j for j in range(start + 1, len(tokens)) if tokens[j].startswith("--")), len(tokens))
    pairs = tokens[start + 1:end]
    known = entry.hyper()
    kept = [x for k, v in zip(pairs[0::2], pairs[1::2]) if k in known for x in (k, v)]
    dropped = [(loss, k) for k in pairs[0::2] if k not in known]
    tail = pairs[len(pairs) - len(pairs) % 2:]  # an odd word after the pairs (a run directory) stays
    flag = ["--algo.loss-kwargs", *kept] if kept else []
    return tokens[:start] + flag + tail + tokens[end:], dropped


def rebuilt(args: list[str], items: list[Ported], used: set[int]) -> list[str]:
    """`args` with each item's flags in its place and the user's other arguments kept as given."""
    out = []
    for i, arg in enumerate(args):
        out += [t for item in items if item.at == i and item.flags for t in shlex.split(item.flags)]
        if i not in used:
            out.append(arg)
    return out


def config_mapping(args: list[str], at: int):
    """The mapping of the --config file at args[at], or None (a file that cannot be read is load_yaml's to say)."""
    import yaml

    path = args[at].split("=", 1)[1] if "=" in args[at] else args[at + 1] if at + 1 < len(args) else None
    if not (path and os.path.isfile(path)):  # a pipe (--config <(...)) could be read once only, by load_yaml
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, TypeError, ValueError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None
