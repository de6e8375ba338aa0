"""Policy-level drift control: moving the reference, and Elastic Reset. Both act on weights between
optimiser steps, not on the loss.

Reference sync ("Learn Your Reference Model for Real Good Alignment", Gorbatovski et al., arXiv
2404.09656, TR-DPO / TR-IPO): every tau steps the reference policy moves toward the policy,
    theta_ref <- alpha * theta + (1 - alpha) * theta_ref,
the paper's soft update with alpha < 1 and its hard update (a copy every tau steps) with alpha = 1.
Both run every tau steps (`algo.ref_sync_every`), as in TRL's SyncRefModelCallback
(ref_model_mixup_alpha, ref_model_sync_steps; its default alpha 0.6 is ours), so tau = 1 mixes
at every step. With a reference the loss pulls toward (a KL drift term), the policy may then
travel further from its start in a trust region that moves with it.

Elastic Reset ("Language Model Alignment with Elastic Reset", Noukhovitch et al., NeurIPS 2023,
arXiv 2312.07551): an exponential moving average of the trained weights follows the policy,
    theta_ema <- d * theta_ema + (1 - d) * theta        after every RL step,
and every n steps the policy is reset to it and it to the initial weights:
    theta <- theta_ema,  theta_ema <- theta_0.
As in the authors' code (torch_ema over the trainable parameters, LoRA adapters in their
LLaMA run), only trainable parameters take part and the optimiser state is kept.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


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
        self.ref, self.policy, self.every, self.alpha = ref, policy, every, alpha
        ref_shapes = [p.shape for p in ref.parameters()]
        if ref_shapes != [p.shape for p in policy.parameters()]:
            raise ValueError("algo.ref_sync_every needs a reference model of the policy's architecture (the same "
                             "parameters, in the same shapes); model.ref_path's model differs")

    def after_step(self, step: int) -> bool:
        """Sync when `step` is a multiple of `every`; True when it did."""
        if step % self.every:
            return False
        mix_into(list(self.ref.parameters()), [p.detach() for p in self.policy.parameters()], self.alpha)
        return True

    def state_dict(self) -> dict:
        return {"ref": {k: v.detach().clone() for k, v in self.ref.state_dict().items()}}

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
    def after_step(self, step: int) -> bool:
        """Update the EMA with the weights of optimiser step `step`; reset when `step` is a multiple of
        `every`. True when it reset."""
        mix_into(self.ema, [p.detach() for p in self.params], 1.0 - self.decay)
        if step % self.every:
            return False
        mix_into(self.params, self.ema, 1.0)
        mix_into(self.ema, self.initial, 1.0)
        return True

    def state_dict(self) -> dict:
        return {"ema": [t.clone() for t in self.ema], "initial": [t.clone() for t in self.initial]}

    def load_state_dict(self, d: dict) -> None:
        for mine, saved in ((self.ema, d["ema"]), (self.initial, d["initial"])):
            mix_into(mine, [t.to(m.device) for t, m in zip(saved, mine)], 1.0)


def build(algo_cfg, policy: torch.nn.Module, ref: torch.nn.Module | None) -> dict:
    """The controls `algo_cfg` (a train.config.AlgoConfig) asks for, by the metric each logs (1 on the steps it
    acts): {"ref_synced": ReferenceSync, "elastic_reset": ElasticReset}; train/validate.py checked the options."""
    out = {}
    if algo_cfg.ref_sync_every:
        out["ref_synced"] = ReferenceSync(ref, policy, algo_cfg.ref_sync_every, algo_cfg.ref_sync_alpha)
    if algo_cfg.elastic_reset_every:
        out["elastic_reset"] = ElasticReset(policy, algo_cfg.elastic_reset_every, algo_cfg.elastic_ema_decay)
    return out
