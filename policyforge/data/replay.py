"""RLEP's experience pool ("RLEP: Reinforcement Learning with Experience Replay for LLM Reasoning", arXiv
2507.07451): verified completions of the training prompts, collected once from a seed policy and replayed into
every later step's groups.

RLEP has two phases. First a seed policy (a checkpoint of an earlier, plain RL run) decodes several completions
of each training problem, and those the verifier accepts are kept in a pool, per problem (`policyforge collect`
writes one). Then training starts again from the base model: at every step each prompt's group of G fresh
completions is joined by n completions drawn from its pool, and the advantages are computed over the G + n
(RLEP: G = 16, n = 2, GRPO's group z-score over the 18).

The pool file is JSON Lines, one completion a line: {"prompt": ..., "completion": ..., "ending": ...}. The
completion is the text the reward saw; "ending" (optional, "" by default) is the text that ended it when that was
not the end token: the stop string (rollout.stop) the sampler cut off, which a replayed row then ends with as the
sampled one did, where one without an ending ends with the tokenizer's EOS. Further keys, such as the "reward"
collect records, are kept for people and ignored here. A prompt is looked up by its exact text, the one the
reward function sees, so a pool serves runs whose data.* settings render the prompts alike.

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
from policyforge.data.user import json_objects


Pooled = tuple[str, str]  # (completion text, the stop string that ended it or "" for the end token)


class ReplayPool:
    """Completions per prompt text, read from a pool file."""

    def __init__(self, by_prompt: dict[str, list[Pooled]], path: str = ""):
        self.by_prompt, self.path = by_prompt, path
        self.lengths: dict[Pooled, int] = {}  # token counts the run measured once (train/replay.py)

    def __len__(self) -> int:
        return sum(map(len, self.by_prompt.values()))

    def completions(self, prompt: str) -> list[Pooled]:
        return self.by_prompt.get(prompt, [])

    def draw(self, prompt: str, n: int, seed: int, step: int, fits=lambda _: True) -> list[Pooled]:
        """Up to `n` of `prompt`'s completions that `fits` accepts, uniformly without replacement, the same for the
        same (seed, step, prompt) in any process and after any resume."""
        cands = [c for c in self.completions(prompt) if fits(c)]
        return random.Random(f"replay-{seed}-{step}-{prompt}").sample(cands, min(n, len(cands)))


def training_prompts(source, positions: int) -> list:
    """The distinct training examples at data positions 0..positions-1 of `source`, in order (a file's rows repeat
    each epoch; a built-in task's problems rarely do)."""
    seen, out = set(), []
    for i in range(positions):
        ex = source.train_example(i)
        if ex.prompt not in seen:
            seen.add(ex.prompt)
            out.append(ex)
    return out


def read_pool(path: str) -> ReplayPool:
    """The pool file at `path`; DataError naming the file (and line) when it cannot be one."""
    file = Path(path)
    if file.is_dir():
        raise DataError(f"data.replay_pool {path!r} is a directory: give the .jsonl file `policyforge collect --out` "
                        "wrote")
    if not file.is_file():
        raise DataError(f"data.replay_pool {path!r}: no such file; `policyforge collect` writes one")
    by_prompt: dict[str, list[Pooled]] = defaultdict(list)
    for number, row in json_objects(file, f"data.replay_pool {path}"):
        if not all(isinstance(row.get(k), str) for k in ("prompt", "completion")) \
                or not isinstance(row.get("ending", ""), str):
            raise DataError(f"data.replay_pool {path}, line {number}: a pool line has string \"prompt\" and "
                            '"completion" (and "ending", if any), as `policyforge collect` writes')
        by_prompt[row["prompt"]].append((row["completion"], row.get("ending", "")))
    if not by_prompt:
        raise DataError(f"data.replay_pool {path}: the file holds no completions")
    return ReplayPool(dict(by_prompt), path)


def pool_lines(prompt: str, kept: list[Pooled], rewards: list[float]) -> list[str]:
    """The pool file's lines for `prompt`'s kept (completion, ending) pairs."""
    return [json.dumps({"prompt": prompt, "completion": c, **({"ending": e} if e else {}), "reward": r}) + "\n"
            for (c, e), r in zip(kept, rewards)]
