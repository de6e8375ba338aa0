"""DUMP's distribution-level curriculum ("DUMP: Automated Distribution-Level Curriculum Learning for RL-based LLM
Post-training", Wang et al. 2025, arXiv 2504.09710).

Training data often mixes distributions: sources, or difficulty levels of one source. DUMP treats each
distribution d_j as an arm of a bandit. Its learnability is the expected absolute advantage of its completions,

    L(d_j) = E_{x ~ d_j} E_{o ~ pi(.|x)} |A(o)|,

large while the policy still moves on d_j, near zero once d_j is solved or out of reach (every group scores
alike). It is estimated over a sliding window of the k most recent completions of d_j, and a UCB bonus keeps
rarely sampled distributions in play:

    UCB_j = L_j + sqrt(2 ln(N + 1) / (n_j + 1)),     p_j = softmax_j(UCB_j / tau),

n_j the completions d_j has had, N their sum over distributions; each prompt of a batch draws its
distribution from p (with replacement), and the weights are recomputed after every step from that step's
advantages. The values follow the authors' code (ZhentingWang/DUMP, verl/utils/curriculum_learning.py):
k = 300 completions, tau = 0.1, the +1s (so before any sample every bonus is 0 and the draw is uniform),
n_j counted in completions (a prompt's group adds its size), a completion's |A| the mean over its tokens.

One departure: within a distribution the authors draw rows uniformly with replacement; here each
distribution serves its rows in a fresh seeded order per pass, so no row repeats before all have been served
(the schedule across distributions is the same).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Sequence

import torch
from torch import Tensor

from policyforge.data.tasks import DataError, Example
from policyforge.data.user import RowStream

CURRICULA = ("off", "dump")  # data.curriculum


def ucb_scores(learnability: Tensor, counts: Tensor) -> Tensor:
    """UCB_j = L_j + sqrt(2 ln(N + 1) / (n_j + 1)) for each distribution j (N = sum of `counts`)."""
    total = counts.sum()
    return learnability + torch.sqrt(2 * torch.log(total + 1) / (counts + 1))


def sampling_weights(scores: Tensor, temperature: float) -> Tensor:
    """softmax(scores / temperature): the probability each distribution is drawn for a prompt."""
    return torch.softmax(scores / temperature, dim=-1)


def completion_abs_advantages(adv: Tensor, mask: Tensor) -> Tensor:
    """(B,) |A| of each completion: its advantage, or the mean of its per-token advantages over its tokens."""
    if adv.dim() == 1:
        return adv.abs()
    per_row = (adv * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_row.abs()


class Curriculum:
    """DUMP's per-distribution statistics: a window of recent |A| and a count of completions for each."""

    def __init__(self, names: Sequence[str], window: int = 300, temperature: float = 0.1):
        self.names, self.temperature = list(names), temperature
        self.recent = {name: deque(maxlen=window) for name in self.names}
        self.counts = {name: 0 for name in self.names}

    def observe(self, labels: Sequence[str], abs_adv: Sequence[float]) -> None:
        """Add each completion's |A| to its distribution's window (`labels[i]` names completion i's)."""
        for label, value in zip(labels, abs_adv):
            self.recent[label].append(float(value))
            self.counts[label] += 1

    def learnability(self) -> Tensor:
        """L_j: the mean |A| of each distribution's window (0 before it has any sample)."""
        return torch.tensor([sum(w) / len(w) if w else 0.0 for w in self.recent.values()], dtype=torch.float64)

    def weights(self) -> Tensor:
        """p_j, in `names` order."""
        counts = torch.tensor([float(self.counts[n]) for n in self.names], dtype=torch.float64)
        return sampling_weights(ucb_scores(self.learnability(), counts), self.temperature)

    def state_dict(self) -> dict:
        return {"recent": {n: list(w) for n, w in self.recent.items()}, "counts": dict(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        if set(state["counts"]) != set(self.names):
            raise DataError(f"the checkpoint's curriculum has distributions {sorted(state['counts'])}, the data has "
                            f"{sorted(self.names)}: resume with the data the run started with")
        for name in self.names:
            self.recent[name].clear()
            self.recent[name].extend(state["recent"][name])
            self.counts[name] = int(state["counts"][name])


def distribution_of(example: Example, column: str) -> str:
    """The distribution `example` belongs to: its `column` value, as text (levels may be numbers)."""
    if column not in example.extra:
        raise DataError(f"{example.where()} has no column {column!r} (data.distribution_column); its columns: "
                        f"{', '.join(sorted(example.extra)) or 'none besides the prompt'}")
    value = example.extra[column]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{example.where()} has no value in data.distribution_column {column!r}: every row needs "
                        "the name of the distribution (source, difficulty level) it comes from")
    if isinstance(value, (dict, list)):
        raise DataError(f"{example.where()}: data.distribution_column {column!r} holds {type(value).__name__} "
                        f"{value!r}; it should name a distribution (text or a number)")
    return str(value)


class DistributionStream:
    """Training rows served by DUMP: each prompt draws its distribution from the curriculum's weights, then takes
    that distribution's next row. `train_example(i)` still serves the data in its plain order (start-up checks and
    `policyforge collect` read the data through it).

    `streams` maps each distribution to its rows in serving order (anything with `train_example(i)`), `whole` is
    the data in its plain order; `sizes` (rows a distribution has, for the log) is None for endless built-in tasks.
    """

    def __init__(self, streams: dict, whole, column: str, seed: int = 0, window: int = 300,
                 temperature: float = 0.1, sizes: dict[str, int] | None = None):
        if len(streams) < 2:
            raise DataError(f"data.curriculum dump schedules training across distributions, but every training row "
                            f"has the same {column!r} value ({next(iter(streams), None)!r})")
        self.column, self.seed, self.sizes, self.whole = column, seed, sizes, whole
        self.names = sorted(streams)
        self.streams = streams
        self.positions = {name: 0 for name in self.names}
        self.curriculum = Curriculum(self.names, window, temperature)
        if hasattr(whole, "rows"):  # a data file: the start-up checks read every row (train/setup.probe_rows)
            self.rows = whole.rows

    @classmethod
    def from_rows(cls, rows: list[Example], column: str, seed: int = 0, window: int = 300,
                  temperature: float = 0.1) -> "DistributionStream":
        """A data file's rows, grouped by their `column` value; each group in a fresh seeded order per pass."""
        by_name: dict[str, list[Example]] = {}
        for ex in rows:
            by_name.setdefault(distribution_of(ex, column), []).append(ex)
        streams = {name: RowStream(group, f"{seed}-{name}") for name, group in by_name.items()}
        return cls(streams, RowStream(rows, seed), column, seed, window, temperature,
                   {name: len(group) for name, group in by_name.items()})

    def train_example(self, i: int) -> Example:
        return self.whole.train_example(i)

    def take(self, n: int, draw: int) -> list[Example]:
        """The next `n` prompts; `draw` (the data position) seeds the distribution draws, so a resume redraws alike."""
        weights = self.curriculum.weights().tolist()
        picks = random.Random(f"{self.seed}-dump-{draw}").choices(self.names, weights=weights, k=n)
        out = []
        for name in picks:
            out.append(self.streams[name].train_example(self.positions[name]))
            self.positions[name] += 1
        return out

    def observe(self, examples: Sequence[Example], adv: Tensor, mask: Tensor, own: Sequence[bool] | None = None) -> None:
        """Feed one step's advantages (one completion per row of `examples`) to the curriculum; with `own`, only the
        rows it marks (the policy's own samples: RLEP's replayed and AEPO's tempered rows are not)."""
        keep = range(len(examples)) if own is None else [i for i, yes in enumerate(own) if yes]
        values = completion_abs_advantages(adv, mask).tolist()
        self.curriculum.observe([distribution_of(examples[i], self.column) for i in keep], [values[i] for i in keep])

    def record(self) -> dict[str, float]:
        """The weights the next step draws with and each distribution's learnability, for metrics.jsonl."""
        out = {f"curriculum_weight/{n}": float(w) for n, w in zip(self.names, self.curriculum.weights())}
        out.update({f"curriculum_abs_adv/{n}": float(v) for n, v in zip(self.names, self.curriculum.learnability())})
        return out

    def state_dict(self) -> dict:
        return {"positions": dict(self.positions), "curriculum": self.curriculum.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.curriculum.load_state_dict(state["curriculum"])
        self.positions = {name: int(state["positions"][name]) for name in self.names}


def accuracy_by_distribution(examples: Sequence[Example], solved: Sequence[bool], column: str) -> dict[str, float]:
    """{"accuracy/<distribution>": greedy solve rate} of held-out `examples` (`solved[i]` is row i's result)."""
    hits: dict[str, list[int]] = {}
    for ex, ok in zip(examples, solved):
        hits.setdefault(distribution_of(ex, column), []).append(int(bool(ok)))
    return {f"accuracy/{name}": sum(h) / len(h) for name, h in sorted(hits.items())}


def describe(stream: DistributionStream) -> str:
    """One line for the run's log: the distributions and their training rows."""
    names = ", ".join(f"{n} ({stream.sizes[n]})" if stream.sizes else n for n in stream.names)
    return f"data.curriculum dump: {len(stream.names)} distributions by {stream.column!r}: {names}"


def distribution_column(dc) -> str | None:
    """The column naming each row's distribution for data config `dc`: data.distribution_column, or `task` for a
    mixture of built-in tasks (data.task "reversal,sorting"), else None."""
    if dc.distribution_column is not None:
        return dc.distribution_column
    return "task" if dc.path is None and dc.eval_path is None and "," in dc.task else None


def split_notes(held: Sequence[Example], train: Sequence[Example], column: str, eval_file: bool = False) -> list[str]:
    """Notes for a held-out split that leaves a distribution without training rows or without held-out rows (a file
    sorted by it, whose first rows are held out; or a data.eval_path, `eval_file`, without some distribution)."""
    held_names = {distribution_of(ex, column) for ex in held}
    train_names = {distribution_of(ex, column) for ex in train}
    fix = ("add its rows to data.eval_path" if eval_file else
           "shuffle the file (its first rows are held out) or give the held-out rows in data.eval_path")
    out = [f"note: distribution {name!r} ({column!r}) is held out but has no training rows" + (
           "" if eval_file else f"; {fix}") for name in sorted(held_names - train_names)]
    out += [f"note: distribution {name!r} ({column!r}) has no held-out rows, so no accuracy/{name} is recorded; {fix}"
            for name in (sorted(train_names - held_names) if held else [])]
    return out
