"""Policy-level drift control: moving the reference, and Elastic Reset. Both act on weights between
optimiser steps, not on the loss.

Reference sync ("Learn Your Reference Model for Real Good Alignment", Gorbatovski et al., arXiv
2404.09656, TR-DPO / TR-IPO): every tau steps the reference policy moves toward the policy,
    theta_ref <- alpha * theta + (1 - alpha) * theta_ref,
the paper's soft update with alpha < 1 and its hard update (a copy every tau steps) with alpha = 1.
Both run every tau RL steps (`algo.ref_sync_every`), as in TRL's SyncRefModelCallback
(ref_model_mixup_alpha, ref_model_sync_steps; its default alpha 0.6 is ours; TRL counts optimiser
steps, which differ from RL steps when optim.updates_per_batch > 1), so tau = 1 mixes at every step. With a reference the loss pulls toward (a KL drift term), the policy may then
travel further from its start in a trust region that moves with it.

Elastic Reset ("Language Model Alignment with Elastic Reset", Noukhovitch et al., NeurIPS 2023,
arXiv 2312.07551): an exponential moving average of the trained weights follows the policy,
    theta_ema <- d * theta_ema + (1 - d) * theta        after every optimiser step,
and every n RL steps the policy is reset to it and it to the initial weights:
    theta <- theta_ema,  theta_ema <- theta_0.
As in the authors' code (torch_ema over the trainable parameters, LoRA adapters in their
LLaMA run, updated after each PPO epoch: each of our optim.updates_per_batch optimiser steps;
reset every n batches: our RL steps), only trainable parameters take part and the optimiser
state is kept.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from policyforge.train.config import ConfigError


@torch.no_grad()
def mix_into(target: Sequence[Tensor], source: Sequence[Tensor], alpha: float) -> None:
    """target <- alpha * source + (1 - alpha) * target, tensor by tensor (alpha = 1 copies)."""
    for t, s in zip(target, source, strict=True):
        if alpha == 1.0:
            t.copy_(s)
        else:
            t.lerp_(s.to(t.dtype), alpha)


class ReferenceSync:
    """Moves the reference model's weights toward the policy's every `every` steps (TR-DPO)."""

    def __init__(self, ref: torch.nn.Module, policy: torch.nn.Module, every: int, alpha: float):
        check_same_shapes(ref, policy)
        self.ref, self.policy, self.every, self.alpha = ref, policy, every, alpha

    def after_step(self, step: int) -> bool:
        """Sync when RL step `step` is a multiple of `every`; True when it did."""
        if step % self.every:
            return False
        mix_into(list(self.ref.parameters()), [p.detach() for p in self.policy.parameters()], self.alpha)
        return True

    def state_dict(self) -> dict:  # the tensors themselves: a checkpoint writes them at once, a copy would
        return {"ref": self.ref.state_dict()}  # cost a model's worth of device memory at every save

    def load_state_dict(self, d: dict) -> None:
        self.ref.load_state_dict(d["ref"])


class ElasticReset:
    """An EMA of the trainable weights; every `every` steps the policy takes it and it restarts from the start."""

    def __init__(self, policy: torch.nn.Module, every: int, decay: float):
        self.params = [p for p in policy.parameters() if p.requires_grad]
        self.every, self.decay = every, decay
        self.initial = [p.detach().clone() for p in self.params]
        self.ema = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update_ema(self) -> None:
        """After every optimiser step (each of optim.updates_per_batch), as the authors' PPO trainer does after
        each PPO epoch."""
        mix_into(self.ema, [p.detach() for p in self.params], 1.0 - self.decay)

    @torch.no_grad()
    def after_step(self, step: int) -> bool:
        """Reset when RL step `step` is a multiple of `every`; True when it did."""
        if step % self.every:
            return False
        mix_into(self.params, self.ema, 1.0)
        mix_into(self.ema, self.initial, 1.0)
        return True

    def state_dict(self) -> dict:  # the tensors themselves, written at once (see ReferenceSync.state_dict)
        return {"ema": list(self.ema), "initial": list(self.initial)}

    def load_state_dict(self, d: dict) -> None:
        for mine, saved in ((self.ema, d["ema"]), (self.initial, d["initial"])):
            mix_into(mine, [t.to(m.device) for t, m in zip(saved, mine)], 1.0)


def check_algorithm(algo_cfg, algo) -> None:
    """ConfigError when a reference sync would do nothing or harm: no term of the loss uses the reference
    (a logged KL alone is no reason to move it), or the reference is kdrl's teacher, whose knowledge a
    sync would overwrite with the student's."""
    if not algo_cfg.ref_sync_every:
        return
    if "teacher_logp" in algo.needs():
        raise ConfigError(f"algo.ref_sync_every with algo.loss={algo_cfg.loss!r}: the reference is its teacher, and "
                          "a sync would replace the teacher by the student")
    if not algo.uses_reference():
        raise ConfigError("algo.ref_sync_every moves the reference, but no term of the loss uses it (train."
                          "track_ref_kl only logs the KL): add a drift term, e.g. --algo.drift k3 0.04")


def check_same_shapes(ref: torch.nn.Module, policy: torch.nn.Module) -> None:
    if [p.shape for p in ref.parameters()] != [p.shape for p in policy.parameters()]:
        raise ConfigError("algo.ref_sync_every mixes the policy into the reference, which needs the policy's "
                          "architecture (the same parameters, in the same shapes); model.ref_path's model differs")


def build(algo_cfg, policy: torch.nn.Module, ref: torch.nn.Module | None) -> dict:
    """The controls `algo_cfg` (a train.config.AlgoConfig) asks for, by the metric each logs (1 on the steps it
    acts): {"ref_synced": ReferenceSync, "elastic_reset": ElasticReset}; train/validate.py checked the options."""
    out = {}
    if algo_cfg.ref_sync_every:
        out["ref_synced"] = ReferenceSync(ref, policy, algo_cfg.ref_sync_every, algo_cfg.ref_sync_alpha)
    if algo_cfg.elastic_reset_every:
        out["elastic_reset"] = ElasticReset(policy, algo_cfg.elastic_reset_every, algo_cfg.elastic_ema_decay)
    return out
