"""The training forward: log-probs of completion tokens under a model.

Only the completion positions' logits are turned into log-probs, at the sampling
temperature (TRL and verl do the same), so the result matches what the sampler
recorded when the weights are the same.
"""

from __future__ import annotations

import torch
from torch import Tensor

from policyforge.rollout.batch import RolloutBatch
from policyforge.rollout.sampler import position_ids


def forward_logprobs(model, batch: RolloutBatch, temperature: float, *, want_logits: bool = False) -> dict[str, Tensor]:
    """{'logp': (B, T), 'entropy': (B, T)[, 'logits': (B, T, V)]} for the batch's completion tokens."""
    ids, attn = batch.input_ids()
    p = batch.prompt_ids.shape[1]
    out = model(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn))
    logits = out.logits[:, p - 1 : -1].float()
    if temperature > 0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    res = {"logp": logp * batch.completion_mask, "entropy": entropy * batch.completion_mask}
    if want_logits:
        res["logits"] = logits
    return res
