"""RLEP's experience pool ("RLEP: Reinforcement Learning with Experience Replay for LLM Reasoning", arXiv
2507.07451): verified completions of the training prompts, collected once from a seed policy and replayed into
every later step's groups.

RLEP has two phases. First a seed policy (a checkpoint of an earlier, plain RL run) decodes several completions
of each training problem, and those the verifier accepts are kept in a pool, per problem (`policyforge collect`
writes one). Then training starts again from the base model: at every step each prompt's group of G fresh
completions is joined by n completions drawn from its pool, and the advantages are computed over the G + n
(RLEP: G = 16, n = 2, GRPO's group z-score over the 18).

The pool file is JSON Lines, one completion a line: {"prompt": ..., "completion": ...} (further keys, such as
the "reward" collect records, are kept for people and ignored here). A prompt is looked up by its exact text,
the one the reward function sees, so a pool serves runs whose data.* settings render the prompts alike.

Draws follow RLEP's code (Kwai-Klear/RLEP, its dataset's random.sample): n of the prompt's completions,
uniformly without replacement; the same completion text may be in the pool more than once (the seed policy
sampled it more than once), and is then drawn in proportion. A prompt with fewer than n gives all it has; RLEP
instead pads its group with empty responses, which its pool never needed (it kept problems with 2 or more
successes). Each draw depends only on (seed, step, prompt), so a resumed run draws what an uninterrupted one did.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

from policyforge.data.tasks import DataError


class ReplayPool:
    """Completions per prompt text, read from a pool file."""

    def __init__(self, by_prompt: dict[str, list[str]], path: str = ""):
        self.by_prompt, self.path = by_prompt, path

    def __len__(self) -> int:
        return sum(map(len, self.by_prompt.values()))

    def completions(self, prompt: str) -> list[str]:
        return self.by_prompt.get(prompt, [])

    def draw(self, prompt: str, n: int, seed: int, step: int, fits=lambda _: True) -> list[str]:
        """Up to `n` of `prompt`'s completions that `fits` accepts, uniformly without replacement, the same for the
        same (seed, step, prompt) in any process and after any resume."""
        cands = [c for c in self.completions(prompt) if fits(c)]
        return random.Random(f"replay-{seed}-{step}-{prompt}").sample(cands, min(n, len(cands)))


def read_pool(path: str) -> ReplayPool:
    """The pool file at `path`; DataError naming the file (and line) when it cannot be one."""
    file = Path(path)
    if not file.is_file():
        hint = " (a directory: give the .jsonl file `policyforge collect --out` wrote)" if file.is_dir() else ""
        raise DataError(f"data.replay_pool {path!r}: no such file{hint}; `policyforge collect` writes one")
    by_prompt: dict[str, list[str]] = defaultdict(list)
    with open(file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"data.replay_pool {path}, line {number}: not JSON ({e.msg})") from None
            if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("prompt", "completion")):
                raise DataError(f"data.replay_pool {path}, line {number}: a pool line is an object with string "
                                '"prompt" and "completion" (as `policyforge collect` writes)')
            by_prompt[row["prompt"]].append(row["completion"])
    if not by_prompt:
        raise DataError(f"data.replay_pool {path}: the file holds no completions")
    return ReplayPool(dict(by_prompt), path)


def pool_lines(prompt: str, completions: list[str], rewards: list[float]) -> list[str]:
    """The pool file's lines for `prompt`'s kept completions."""
    return [json.dumps({"prompt": prompt, "completion": c, "reward": r}) + "\n" for c, r in zip(completions, rewards)]
