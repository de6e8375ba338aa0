"""AdamW for half-precision parameters, stepping float32 master copies of them.

A bfloat16 weight has 8 bits of mantissa: an update smaller than ~1/256 of the weight
rounds away, and RL learning rates (1e-6 .. 1e-5) are far below that, so AdamW run on
the bfloat16 parameters themselves silently leaves most of them unchanged. Here the
forward and backward still run in the model's dtype (its memory and speed), while the
optimiser keeps a float32 copy of every trained parameter, applies the update to that
copy, and writes it back rounded. The copies are part of the optimiser's state_dict, so
a resumed run continues from the exact float32 values, not from the rounded weights.
"""

from __future__ import annotations

from typing import Any

import torch

from policyforge.train.config import ConfigError


class MasterAdamW(torch.optim.AdamW):
    """torch AdamW over float32 masters of `params`; their gradients are read at each step."""

    def __init__(self, params: list[torch.nn.Parameter], **kwargs: Any):
        self.model_params = list(params)
        masters = [p.detach().float().clone() for p in self.model_params]
        super().__init__(masters, **kwargs)
        self.masters = masters

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("MasterAdamW.step takes no closure")
        for p, m in zip(self.model_params, self.masters):
            m.grad = None if p.grad is None else p.grad.float()
            p.grad = None  # one gradient copy alive per parameter: the step reads the float32 ones
        super().step()
        for p, m in zip(self.model_params, self.masters):
            p.copy_(m)
            m.grad = None  # the float32 copy of the gradient is not needed between steps
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.model_params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()
        super().zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "masters": list(self.masters)}  # references, as the base's state is

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        masters = state.pop("masters", None)
        if masters is not None and len(masters) != len(self.masters):
            raise ConfigError(f"the optimiser state holds {len(masters)} master weights for {len(self.masters)} "
                              "trained parameters: it was saved for another model")
        super().load_state_dict(state)
        if masters is None:  # saved without masters (float32, or bfloat16 before them): start them from the weights
            masters = [p.detach() for p in self.model_params]
        for m, saved, p in zip(self.masters, masters, self.model_params):
            m.copy_(saved)
            p.copy_(m)
