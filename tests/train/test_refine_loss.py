"""Critique-GRPO's loss in the update: rows tagged "refined" take -A pi/(pi + gamma) on their tokens, the others the
run's loss, aggregated together (train/step.py)."""

from __future__ import annotations

import pytest
import torch

from policyforge.data.tasks import Example
from policyforge.models.load import load_model
from policyforge.train.algorithm import resolve
from policyforge.train.config import AlgoConfig, Config
from policyforge.train.logprobs import forward_logprobs
from policyforge.train.setup import build_optimizer, rollout
from policyforge.train.step import BatchTensors, update


@pytest.mark.parametrize("shared_prefix", [False, True])
def test_refined_rows_take_the_shaped_loss_and_the_others_the_run_s(shared_prefix):
    model, tok = load_model("builtin:tiny", "float32", "cpu", 0)
    cfg = Config()
    cfg.rollout.group_size, cfg.rollout.max_new_tokens, cfg.optim.lr = 4, 5, 0.0
    batch = rollout(model, tok, [Example("rev:abc=", "cba")], cfg.rollout, torch.Generator().manual_seed(0))
    batch.source = ["fresh", "refined", "fresh", "refined"]
    adv = torch.tensor([1.0, -0.5, 0.25, 2.0])
    algo = resolve(AlgoConfig(advantage="grpo", loss="ppo_clip", aggregation="token_mean"))
    optimizer, scheduler = build_optimizer(model, cfg)
    m = update(model, optimizer, scheduler, batch, BatchTensors(adv, None), algo, step=1, updates=1,
               micro_batch_size=2, max_grad_norm=0.0, temperature=1.0, max_len=5, shared_prefix=shared_prefix,
               refine=("critique_grpo", 0.3))
    with torch.no_grad():
        p = forward_logprobs(model, batch, 1.0)["logp"].exp()
    mask = batch.completion_mask
    refined = torch.tensor([False, True, False, True])
    per_token = torch.where(refined[:, None], -adv[:, None] * p / (p + 0.3), -adv[:, None].expand_as(p))  # ratio 1
    assert m["loss"] == pytest.approx(float((per_token * mask).sum() / mask.sum()), rel=1e-5)


def test_herl_s_rewrites_take_the_ratio_shaping_and_the_others_the_run_s_loss():
    model, tok = load_model("builtin:tiny", "float32", "cpu", 0)
    cfg = Config()
    cfg.rollout.group_size, cfg.rollout.max_new_tokens, cfg.optim.lr = 4, 5, 0.0
    batch = rollout(model, tok, [Example("rev:abc=", "cba")], cfg.rollout, torch.Generator().manual_seed(0))
    batch.source = ["refined", "fresh", "fresh", "refined"]
    adv = torch.tensor([1.0, -0.5, 0.25, 2.0])
    algo = resolve(AlgoConfig(advantage="grpo", loss="ppo_clip", aggregation="token_mean"))
    optimizer, scheduler = build_optimizer(model, cfg)
    m = update(model, optimizer, scheduler, batch, BatchTensors(adv, None), algo, step=1, updates=1,
               micro_batch_size=2, max_grad_norm=0.0, temperature=1.0, max_len=5, refine=("herl", 0.3))
    mask = batch.completion_mask
    refined = torch.tensor([True, False, False, True])
    # one update: the old policy is the current one, r = 1, so a rewrite's token loss is -A / (1 + gamma)
    per_token = torch.where(refined[:, None], -adv[:, None] / 1.3, -adv[:, None]).expand_as(mask)
    assert m["loss"] == pytest.approx(float((per_token * mask).sum() / mask.sum()), rel=1e-5)
