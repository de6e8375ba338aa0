"""rollout.allocation knapsack in the loop (Knapsack RL; the rules are in data/budget.py): each step's prompts get
group sizes from their success rates when last trained on, and the step's fresh rows update those rates."""

from __future__ import annotations

from typing import Sequence

import torch

from policyforge.data.budget import ALLOCATIONS, PromptHistory, allocate
from policyforge.rewards.score import solved_rows
from policyforge.rollout.batch import RolloutBatch
from policyforge.train.config import ConfigError, RolloutConfig, refuse
from policyforge.train.hints import steered_by_success


class Budget:
    """The prompts' history and the allocation settings; in checkpoints through state_dict."""

    def __init__(self, rc: RolloutConfig):
        self.rc, self.history, self.estimated = rc, PromptHistory(), 0

    def sizes(self, examples: Sequence) -> list[int]:
        """Each prompt's group size this step (they add up to len(examples) x group_size)."""
        estimates = [self.history.estimate(ex.prompt) for ex in examples]
        self.estimated = sum(p is not None for p in estimates)
        return allocate(estimates, self.rc.group_size, self.rc.allocation_min_group, self.rc.allocation_max_group)

    def observe(self, batch: RolloutBatch) -> dict[str, float]:
        """Record the step's fresh rows (solved or not) under their prompts; returns the step's allocation figures:
        the smallest and largest group, the prompts sized by an estimate, and the share of the fresh rows whose
        advantage is not 0 (the paper's effective-gradient ratio)."""
        fresh = [i for i, src in enumerate(batch.source) if src == "fresh"]
        solved = solved_rows(batch).tolist()
        self.history.observe([batch.examples[i].prompt for i in fresh], [solved[i] for i in fresh])
        sizes = torch.unique(batch.group[fresh], return_counts=True)[1]
        adv = batch.advantages if batch.advantages.dim() == 1 else batch.advantages.abs().amax(-1)
        return {"group_size_min": float(sizes.min()), "group_size_max": float(sizes.max()),
                "prompts_estimated": float(self.estimated),
                "effective_rows_frac": float((adv[fresh] != 0).float().mean())}

    def state_dict(self) -> dict:
        return self.history.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.history.load_state_dict(state)


def check_allocation(cfg, algo, reward) -> None:
    """ConfigError for a rollout.allocation setting this run cannot use."""
    rc = cfg.rollout
    if rc.allocation not in ALLOCATIONS:
        raise ConfigError(f"rollout.allocation={rc.allocation!r}; valid: {', '.join(ALLOCATIONS)}")
    if rc.allocation == "uniform":
        if (rc.allocation_min_group, rc.allocation_max_group) != (2, 128):
            raise ConfigError("rollout.allocation_min_group / allocation_max_group are read only by rollout.allocation "
                              "knapsack (it is uniform): set that, or leave them out")
        return
    if not 2 <= rc.allocation_min_group <= rc.group_size <= rc.allocation_max_group:
        raise ConfigError(f"rollout.allocation_min_group={rc.allocation_min_group}, group_size={rc.group_size}, "
                          f"allocation_max_group={rc.allocation_max_group}: need 2 <= min <= group_size <= max "
                          "(Knapsack RL: 2 <= N_i <= 128 around an average of group_size)")
    refuse("rollout.allocation=knapsack", {
        **steered_by_success(algo, reward, cfg.data),
        "rollout.dynamic_sampling (it samples more prompts instead of sizing each one's group)":
            rc.dynamic_sampling != "off",
        "rollout.hints (a hinted group is sampled again at group_size)": rc.hints != "off",
        "rollout.refine_method herl (its copies and replaced rows would skew each prompt's success rate)":
            rc.refinements > 0 and rc.refine_method == "herl"},
        "set rollout.allocation to uniform")


def allocation_notes(cfg, source) -> list[str]:
    """A note when rollout.allocation knapsack cannot act: a built-in task's prompts do not recur, so no prompt
    ever has an estimate and every group keeps group_size."""
    if cfg.rollout.allocation != "knapsack" or hasattr(source, "rows"):
        return []
    return ["note: rollout.allocation knapsack sizes a group by its prompt's earlier visits, and the built-in "
            f"task's prompts do not recur: every group keeps rollout.group_size={cfg.rollout.group_size}; it pays "
            "on a data file trained for several epochs (data.path)"]
