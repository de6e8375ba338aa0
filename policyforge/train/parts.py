"""StepParts: the pieces `train` builds once and every RL step reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from policyforge.data.replay import ReplayPool
from policyforge.train.budget import Budget
from policyforge.train.algorithm import Algorithm
from policyforge.train.config import Config
from policyforge.train.distributed import World
from policyforge.train.phases import no_phases


@dataclass
class StepParts:
    """What one RL step works with (built once by `train`; bench/sides.py builds its own)."""

    cfg: Config
    algo: Algorithm
    model: torch.nn.Module
    tok: Any
    ref: torch.nn.Module | None  # reference policy (kdrl's teacher): a frozen model, or `model` itself for a LoRA
    #                              policy (run with its adapters off); None when nothing uses it
    optimizer: torch.optim.Optimizer
    scheduler: Any
    gen: torch.Generator
    reward: Callable
    world: World = World.single()  # the processes of a data-parallel run (train/distributed.py)
    replay: ReplayPool | None = None  # data.replay_pool's completions, joined to each group (RLEP; train/replay.py)
    budget: Budget | None = None  # rollout.allocation knapsack: each prompt's group size (Knapsack RL; train/budget.py)
    phase: Callable = no_phases  # `with p.phase("scoring ..."):` names a slow part of the step on the bar (phases.py)
    reward_s: float = 0.0  # seconds the running step has spent scoring so far (every round of it): its record's reward_s
