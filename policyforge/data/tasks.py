"""Built-in verifiable tasks: prompt generators with a held-out split and a verifier.

A task makes problem number `i` deterministically from `(seed, i)`, so the data
position of a run is a single integer and resuming replays nothing twice. The
held-out problems are a fixed list; training problems equal to one of them are
skipped, so the two splits never overlap.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Callable


class DataError(ValueError):
    """A dataset the user gave (a file or a built-in task's settings) that cannot be used as it is.

    Defined here beside Example, which data.user imports, so both data modules can raise it
    without a circular import; data.user re-exports it.
    """


@dataclass
class Example:
    """One prompt with its reference solution and any extra columns of its row."""

    prompt: str
    solution: str | None = None  # a correct completion (for `sft`); None when unknown
    extra: dict = field(default_factory=dict)  # passed to the reward function as keywords
    index: int = 0  # position of the row in its dataset (names the row in errors)
    source: str = ""  # where a data file's row is, e.g. "data.jsonl, line 7"; "" for a built-in problem
    # the messages the chat template rendered into `prompt` (data.system_prompt's included), kept because `prompt`
    # is text from then on: the reward function gets them as `prompt_messages`, a reward model renders them with its
    # own template; None when the prompt was not rendered. Plain lists and dicts: Examples are pickled between
    # processes in data-parallel runs.
    messages: list[dict] | None = None

    def where(self) -> str:
        """The row in words, for errors: its place in its file, or its index."""
        return self.source or f"row {self.index}"


def _addition(rng: random.Random, digits: int) -> tuple[str, str]:
    a, b = rng.randrange(10**digits), rng.randrange(10**digits)
    return f"{a}+{b}=", str(a + b)


def _reversal(rng: random.Random, length: int) -> tuple[str, str]:
    n = rng.randint(3, length)
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))
    return f"rev:{word}=", word[::-1]


def _sorting(rng: random.Random, length: int) -> tuple[str, str]:
    n = rng.randint(3, length)
    word = "".join(rng.choice("abcdefghij") for _ in range(n))
    return f"sort:{word}=", "".join(sorted(word))


GENERATORS: dict[str, tuple[Callable[[random.Random, int], tuple[str, str]], int, str]] = {
    # name: (generator, default size, what the size means)
    "addition": (_addition, 3, "digits per operand"),
    "reversal": (_reversal, 8, "maximum word length"),
    "sorting": (_sorting, 8, "maximum word length"),
}

# The smallest size each generator accepts: words have at least 3 letters, numbers at least 1 digit.
MIN_SIZE = {"addition": 1, "reversal": 3, "sorting": 3}


def distinct_prompts(name: str, size: int) -> int:
    """How many different prompts task `name` can make at `size` (every operand pair / every word)."""
    if name == "addition":
        return 10 ** (2 * size)
    letters = 26 if name == "reversal" else 10
    return sum(letters**n for n in range(3, size + 1))


def check_task_name(name: str) -> None:
    if name not in GENERATORS:
        raise DataError(f"data.task={name!r} is not a built-in task; valid: {', '.join(GENERATORS)} "
                        "(or set data.path to your own data)")


def check_task_size(name: str, size: int, eval_size: int) -> None:
    """Fail with one line when the task cannot make `eval_size` held-out prompts and still train.

    At most half the distinct prompts may be held out: sampling them stays quick (each new
    one is found within a few draws) and training problems remain plentiful.
    """
    meaning, low = GENERATORS[name][2], MIN_SIZE[name]
    if size < low:
        raise DataError(f"data.task_size={size} is too small for {name} ({meaning}): use at least {low}")
    n = distinct_prompts(name, size)
    if not 0 <= eval_size <= n // 2:
        raise DataError(f"data.eval_size={eval_size} cannot be held out of {name} with task_size {size}: it makes "
                        f"only {n} distinct prompts and at most half ({n // 2}) may be held out; "
                        "lower data.eval_size or raise data.task_size")


def distractor(task: str, prompt: str, answer: str) -> str:
    """A plausible wrong answer a weak teacher gives: the task's most common mistake.

    addition: the last digit of the sum is off by one; reversal: the word copied
    unreversed; sorting: the letters in descending order. `policyforge sft
    --sft.noise P` trains on these for a fraction P of the demonstrations, a warm
    start that RL with the verifier must correct.
    """
    body = prompt.split(":", 1)[-1].rstrip("=")
    if task == "reversal":  # a palindrome's copy is right: rotate it; a one-letter word ("aaa"): one letter more
        wrong = body if body != answer else answer[1:] + answer[0]
        return wrong if wrong != answer else answer + answer[-1]
    if task == "sorting":
        return answer[::-1] if answer[::-1] != answer else answer + answer[-1]
    return answer[:-1] + str((int(answer[-1]) + 1) % 10)


def exact_match(prompt: str, completion: str, *, answer: str, **_) -> float:
    """Verifier of the built-in tasks: 1.0 when the completion is exactly the answer."""
    return 1.0 if completion.strip() == answer else 0.0


class BuiltinTask:
    """A named generator with a fixed held-out split of `eval_size` problems."""

    # Draw limits: with at most half the prompts held out these are never reached (a held-out
    # prompt is drawn with probability about 1/2 or less), but no setting can make a loop spin.
    MAX_DRAWS_PER_HELD_OUT = 50
    MAX_DRAWS_PER_TRAIN = 1000

    def __init__(self, name: str, size: int | None = None, eval_size: int = 200, seed: int = 0):
        check_task_name(name)
        self.name = name
        self._gen, default, _ = GENERATORS[name]
        self.size = default if size is None else size
        check_task_size(name, self.size, eval_size)
        eval_rng = random.Random(f"{name}-heldout-{self.size}")
        self.held_out = self._unique(eval_rng, eval_size, exclude=set())
        self._held_prompts = {e.prompt for e in self.held_out}
        self.seed = seed

    def _make(self, rng: random.Random, index: int) -> Example:
        prompt, answer = self._gen(rng, self.size)
        return Example(prompt, answer, {"answer": answer}, index)

    def _unique(self, rng: random.Random, n: int, exclude: set) -> list[Example]:
        out, seen, draws = [], set(exclude), 0
        while len(out) < n:
            if draws == self.MAX_DRAWS_PER_HELD_OUT * n:
                raise DataError(f"{self.name} with task_size {self.size}: found only {len(out)} of {n} distinct "
                                "held-out prompts; lower data.eval_size or raise data.task_size")
            draws += 1
            ex = self._make(rng, len(out))
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                out.append(ex)
        return out

    def train_example(self, i: int) -> Example:
        """Training problem number `i` (never one of the held-out prompts)."""
        rng = random.Random(f"{self.name}-{self.size}-{self.seed}-{i}")
        for _ in range(self.MAX_DRAWS_PER_TRAIN):
            ex = self._make(rng, i)
            if ex.prompt not in self._held_prompts:
                return ex
        raise DataError(f"{self.name} with task_size {self.size}: training problem {i} drew only held-out prompts "
                        f"in {self.MAX_DRAWS_PER_TRAIN} tries; lower data.eval_size or raise data.task_size")

    reward = staticmethod(exact_match)


def task_parts(spec: str, size: int | None) -> list[tuple[str, str, int]]:
    """(label, generator name, size) of each task in `spec`: one name, or several separated by commas, each
    `name` or `name:size` (e.g. "reversal:4,reversal:8,sorting"); a part without a size takes `size` (data.task_size)
    or its generator's default. The label names the part's distribution (its rows' `task` column)."""
    parts = []
    for entry in (e.strip() for e in spec.split(",")):
        name, colon, given = entry.partition(":")
        if not name:
            raise DataError(f"data.task={spec!r} has an empty entry: name each task, separated by commas")
        check_task_name(name)
        if colon and not given.isdigit():
            raise DataError(f"data.task entry {entry!r}: the size after ':' is a whole number (e.g. {name}:6)")
        part_size = int(given) if colon else (GENERATORS[name][1] if size is None else size)
        if part_size < MIN_SIZE[name]:
            where = f"data.task entry {entry!r}: size {part_size}" if colon else f"data.task_size={part_size}"
            raise DataError(f"{where} is too small for {name} ({GENERATORS[name][2]}): use at least {MIN_SIZE[name]}")
        parts.append((f"{name}:{int(given)}" if colon else name, name, part_size))  # reversal:03 is reversal:3
    problems = [(name, part_size) for _, name, part_size in parts]  # "reversal" is "reversal:8": the same problems
    if len(set(problems)) < len(problems):
        name, part_size = next(x for x in problems if problems.count(x) > 1)
        raise DataError(f"data.task={spec!r} names {name} of size {part_size} twice; to mix sizes of one task give "
                        f"each its own, e.g. {name}:4,{name}:8")
    return parts


def builtin_task(spec: str, size: int | None = None, eval_size: int = 200, seed: int = 0):
    """data.task's dataset: one task (`name`, or `name:size`) or a mixture of several (MixedTask)."""
    parts = task_parts(spec, size)
    if len(parts) == 1:
        return BuiltinTask(parts[0][1], parts[0][2], eval_size, seed)
    return MixedTask(spec, size, eval_size, seed)


class TaskPart:
    """One task of a mixture: its problems tagged with the mixture's `task` column."""

    def __init__(self, label: str, task: BuiltinTask):
        self.label, self.task = label, task

    def train_example(self, i: int) -> Example:
        ex = self.task.train_example(i)
        return Example(ex.prompt, ex.solution, {**ex.extra, "task": self.label}, ex.index)


class MixedTask:
    """Several built-in tasks as one dataset (data.task "reversal,sorting"): training problem i is part i mod K's
    problem i div K, so each part has an equal share; held-out problems are data.eval_size split across the parts
    (the first ones get the remainder), and no part trains on another part's held-out prompt. Every row has a
    `task` column naming its part: held-out accuracy is also recorded per part, and data.curriculum dump draws
    parts by it (data/curriculum.py)."""

    reward = staticmethod(exact_match)

    def __init__(self, spec: str, size: int | None = None, eval_size: int = 200, seed: int = 0):
        found = task_parts(spec, size)
        shares = [eval_size // len(found) + (k < eval_size % len(found)) for k in range(len(found))]
        tasks = [BuiltinTask(name, part_size, share, seed) for (_, name, part_size), share in zip(found, shares)]
        held = set().union(*(t._held_prompts for t in tasks))
        for t in tasks:  # a reversal:4 problem may be a reversal:8 held-out one
            t._held_prompts = held
        self.parts = {label: TaskPart(label, t) for (label, _, _), t in zip(found, tasks)}
        self.held_out = [Example(ex.prompt, ex.solution, {**ex.extra, "task": label}, n)
                         for n, (label, ex) in enumerate((label, ex) for label, t in zip(self.parts, tasks)
                                                         for ex in t.held_out)]
        self.size = ", ".join(f"{label} {t.size}" for label, t in zip(self.parts, tasks))
        self.order = list(self.parts.values())

    def train_example(self, i: int) -> Example:
        k, j = i % len(self.order), i // len(self.order)
        return replace(self.order[k].train_example(j), index=i)
