"""Built-in verifiable tasks: prompt generators with a held-out split and a verifier.

A task makes problem number `i` deterministically from `(seed, i)`, so the data
position of a run is a single integer and resuming replays nothing twice. The
held-out problems are a fixed list; training problems equal to one of them are
skipped, so the two splits never overlap.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Example:
    """One prompt with its reference solution and any extra columns of its row."""

    prompt: str
    solution: str | None = None  # a correct completion (for `sft`); None when unknown
    extra: dict = field(default_factory=dict)  # passed to the reward function as keywords
    index: int = 0  # position of the row in its dataset (names the row in errors)


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


def distractor(task: str, prompt: str, answer: str) -> str:
    """A plausible wrong answer a weak teacher gives: the task's most common mistake.

    addition: the last digit of the sum is off by one; reversal: the word copied
    unreversed; sorting: the letters in descending order. `policyforge sft
    --sft.noise P` trains on these for a fraction P of the demonstrations, a warm
    start that RL with the verifier must correct.
    """
    body = prompt.split(":", 1)[-1].rstrip("=")
    if task == "reversal":
        return body if body != answer else answer[1:] + answer[0]
    if task == "sorting":
        return answer[::-1] if answer[::-1] != answer else answer + answer[-1]
    return answer[:-1] + str((int(answer[-1]) + 1) % 10)


def exact_match(prompt: str, completion: str, *, answer: str, **_) -> float:
    """Verifier of the built-in tasks: 1.0 when the completion is exactly the answer."""
    return 1.0 if completion.strip() == answer else 0.0


class BuiltinTask:
    """A named generator with a fixed held-out split of `eval_size` problems."""

    def __init__(self, name: str, size: int | None = None, eval_size: int = 200, seed: int = 0):
        if name not in GENERATORS:
            raise ValueError(f"unknown built-in task {name!r}; valid: {', '.join(GENERATORS)}")
        self.name = name
        self._gen, default, _ = GENERATORS[name]
        self.size = size or default
        eval_rng = random.Random(f"{name}-heldout-{self.size}")
        self.held_out = self._unique(eval_rng, eval_size, exclude=set())
        self._held_prompts = {e.prompt for e in self.held_out}
        self.seed = seed

    def _make(self, rng: random.Random, index: int) -> Example:
        prompt, answer = self._gen(rng, self.size)
        return Example(prompt, answer, {"answer": answer}, index)

    def _unique(self, rng: random.Random, n: int, exclude: set) -> list[Example]:
        out, seen = [], set(exclude)
        while len(out) < n:
            ex = self._make(rng, len(out))
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                out.append(ex)
        return out

    def train_example(self, i: int) -> Example:
        """Training problem number `i` (never one of the held-out prompts)."""
        rng = random.Random(f"{self.name}-{self.size}-{self.seed}-{i}")
        while True:
            ex = self._make(rng, i)
            if ex.prompt not in self._held_prompts:
                return ex

    reward = staticmethod(exact_match)
