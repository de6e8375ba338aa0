"""Knapsack RL's rollout budget allocation ("Knapsack RL: Unlocking Exploration of LLMs via Optimizing Budget
Allocation", Li et al. 2025, arXiv 2509.25849).

GRPO learns from a prompt only when its group holds both a success and a failure. With success rate p and N
rollouts that happens with probability 1 - p^N - (1-p)^N, so a uniform N spends most of its budget on prompts that
are (nearly) always solved or never. Knapsack RL gives each prompt of a step its own group size N_i, solving

    max sum_i Value(N_i, p_i)   subject to   sum_i N_i = B (the uniform budget, prompts x group_size),
                                             N_low <= N_i <= N_up,
    Value(N, p) = (1 - p^N - (1-p)^N) * p (1-p)^2,

where p (1-p)^2 is the paper's estimate of how much one gradient step on the prompt raises its success rate (it
peaks at p = 1/3) and p_i is estimated from the prompt's rollouts the last time it was trained on (an earlier
epoch). The increase of Value from N to N + 1, (p^N (1-p) + (1-p)^N p) p (1-p)^2, shrinks as N grows, so
handing out the budget one rollout at a time to the largest increase (`knapsack`) reaches this objective's optimum,
which a dynamic programme over (prompt, budget) also finds (tests/data/test_budget.py compares the two). The
authors' programme scores a prompt left at N_low as 0 rather than Value(N_low, p), which can shift its optimum
slightly; this module keeps the paper's objective.

Rules and constants from the authors' code (liziniu/KnapsackRL, verl/trainer/ppo/exploration_utils.py):
- a prompt with fewer than 8 rollouts on record has no estimate and gets the uniform group size; its estimate is
  its last visit's success rate, or, when that visit had fewer than 16 rollouts, its 16 latest rollouts' rate;
- N_low = 2 and N_up = 128 (rollout.allocation_min_group / allocation_max_group); a prompt always solved or never
  solved (p = 1 or 0: Value 0) gets N_low;
- fallback: a prompt with 0 < p < 1 needs N_low + int(ln(1 - 0.9) / ln(max(p, 1-p))) rollouts, at most N_up (the
  second term: enough to hold a success and a failure with probability 0.9); when the budget left exceeds what
  they need together, the knapsack
  gets only that much and the surplus goes, evenly, to the never-solved prompts (more tries at a first success:
  the "exploration" of the title), or, when there are none, to every prompt without 0 < p < 1. With no prompt
  in 0 < p < 1 at all, the budget left goes to the never-solved prompts, or every prompt gets the uniform size;
- what the knapsack cannot place (every prompt at N_up) is spread evenly over its prompts.
"Solved" is held-out accuracy's rule (reward >= 1, or a dict reward's `correct`); the authors read a 0/1 reward.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import Sequence

ALLOCATIONS = ("uniform", "knapsack")  # rollout.allocation
MIN_ESTIMATE_ROLLOUTS = 8  # a prompt's rollouts on record before its success rate is trusted
ESTIMATE_WINDOW = 16  # a last visit with fewer rollouts is estimated from this many latest ones
FALLBACK_CONFIDENCE = 0.9  # chance that a prompt's "needed" rollouts hold both a success and a failure


def nonzero_gradient_prob(n: int, p: float) -> float:
    """Probability that n rollouts at success rate p hold a success and a failure: 1 - p^n - (1-p)^n."""
    return 1.0 - p**n - (1.0 - p) ** n


def info_gain(p: float) -> float:
    """p (1-p)^2: the paper's estimate of a prompt's gain in success rate from one gradient step."""
    return p * (1.0 - p) ** 2


def allocation_value(n: int, p: float) -> float:
    """Value(n, p) = (1 - p^n - (1-p)^n) p (1-p)^2."""
    return nonzero_gradient_prob(n, p) * info_gain(p)


def marginal_value(n: int, p: float) -> float:
    """Value(n + 1, p) - Value(n, p) = (p^n (1-p) + (1-p)^n p) p (1-p)^2, written out: the difference of two
    values near their limit rounds to 0 in floating point long before the gain itself does (n ~ 50 at p = 0.5)."""
    return (p**n * (1.0 - p) + (1.0 - p) ** n * p) * info_gain(p)


def rollouts_needed(p: float, low: int, cap: int, confidence: float = FALLBACK_CONFIDENCE) -> int:
    """The fallback's need of a prompt at success rate 0 < p < 1, as the authors' code counts it: `low` plus
    int(ln(1 - confidence) / ln(max(p, 1-p))), the rollouts for a success and a failure with about `confidence`;
    at most `cap` (N_up: the authors cap the second term alone, so their need can pass N_up by N_low)."""
    return min(cap, low + int(min(cap, math.log(1.0 - confidence) / math.log(max(p, 1.0 - p)))))


def knapsack(rates: Sequence[float], budget: int, low: int, high: int) -> list[int]:
    """Group sizes in [low, high] for prompts at success `rates` maximising the summed Value within `budget`
    rollouts (fewer only when every prompt is at `high`). Greedy on the marginal value, which is exact because
    Value is concave in n; ties go to the earlier prompt."""
    sizes = [low] * len(rates)
    left = budget - low * len(rates)
    if left < 0:
        raise ValueError(f"a budget of {budget} rollouts cannot give {len(rates)} prompts {low} each")
    heap = [(-marginal_value(low, p), i) for i, p in enumerate(rates) if high > low]
    heapq.heapify(heap)
    while left > 0 and heap:
        _, i = heapq.heappop(heap)
        sizes[i] += 1
        left -= 1
        if sizes[i] < high:
            p, n = rates[i], sizes[i]
            heapq.heappush(heap, (-marginal_value(n, p), i))
    return sizes


def _spread(sizes: list[int], targets: Sequence[int], extra: int) -> None:
    """Add `extra` rollouts to the prompts `targets` as evenly as integers allow (the first ones get the rest)."""
    each, rest = divmod(extra, len(targets))
    for k, i in enumerate(targets):
        sizes[i] += each + (k < rest)


def allocate(estimates: Sequence[float | None], group_size: int, low: int, high: int) -> list[int]:
    """Each prompt's group size for a step, from its estimated success rate (None: no estimate yet); the sizes
    add up to len(estimates) x group_size. See the module's docstring for the rules."""
    sizes = [group_size if p is None else low for p in estimates]
    mixed = [i for i, p in enumerate(estimates) if p is not None and 0.0 < p < 1.0]
    never = [i for i, p in enumerate(estimates) if p == 0.0]
    rest = [i for i in range(len(estimates)) if i not in set(mixed)]
    left = len(estimates) * group_size - sum(sizes[i] for i in rest)
    if not mixed:
        if not never:
            return [group_size] * len(estimates)
        _spread(sizes, never, left)
        return sizes
    rates = [estimates[i] for i in mixed]
    needed = sum(rollouts_needed(p, low, high) for p in rates)
    if needed < left and (never or rest):  # the authors' fallback: what the mixed prompts do not need explores
        _spread(sizes, never or rest, left - needed)
        left = needed
    placed = knapsack(rates, left, low, high)
    for i, n in zip(mixed, placed):
        sizes[i] = n
    unplaced = left - sum(placed)
    if unplaced > 0:
        _spread(sizes, mixed, unplaced)
    return sizes


class PromptHistory:
    """Each prompt's recent outcomes (1 solved, 0 not), keyed by its text: the estimates `allocate` reads."""

    def __init__(self):
        self.last: dict[str, list[int]] = {}  # the latest visit's outcomes
        self.recent: dict[str, deque] = {}  # the ESTIMATE_WINDOW latest outcomes over visits
        self.count: dict[str, int] = {}  # every outcome on record

    def estimate(self, prompt: str) -> float | None:
        if self.count.get(prompt, 0) < MIN_ESTIMATE_ROLLOUTS:
            return None
        last = self.last[prompt]
        window = last if len(last) >= ESTIMATE_WINDOW else self.recent[prompt]
        return sum(window) / len(window)

    def observe(self, prompts: Sequence[str], solved: Sequence[bool]) -> None:
        """One step's rollouts: row i of prompt `prompts[i]` solved or not. Each prompt's rows are one visit."""
        visits: dict[str, list[int]] = {}
        for prompt, ok in zip(prompts, solved):
            visits.setdefault(prompt, []).append(int(bool(ok)))
        for prompt, outcomes in visits.items():
            self.last[prompt] = outcomes
            self.recent.setdefault(prompt, deque(maxlen=ESTIMATE_WINDOW)).extend(outcomes)
            self.count[prompt] = self.count.get(prompt, 0) + len(outcomes)

    def state_dict(self) -> dict:
        return {"last": dict(self.last), "recent": {k: list(v) for k, v in self.recent.items()},
                "count": dict(self.count)}

    def load_state_dict(self, state: dict) -> None:
        self.last = {k: list(v) for k, v in state["last"].items()}
        self.recent = {k: deque(v, maxlen=ESTIMATE_WINDOW) for k, v in state["recent"].items()}
        self.count = {k: int(v) for k, v in state["count"].items()}
