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


def _a_group_with_two_rewrites():
    """The built-in model, a config of groups of 2, and one group of 4 rows: 2 sampled from the question, then 2
    (tagged "refined") from a longer rewrite prompt, as HeRL trains them."""
    model, tok = load_model("builtin:tiny", "float32", "cpu", 0)
    cfg = Config()
    cfg.rollout.group_size, cfg.rollout.max_new_tokens, cfg.optim.lr = 2, 5, 0.0
    gen = torch.Generator().manual_seed(0)
    own = rollout(model, tok, [Example("rev:abc=", "cba")], cfg.rollout, gen)
    rewrites = rollout(model, tok, [Example("rev:abc= draft: cab unmet: correct. again: ", "cba")], cfg.rollout, gen)
    rewrites.source = ["refined"] * 2
    return model, tok, cfg, own.regrouped(rewrites)  # one group: its own rows first, then the rewrites


@pytest.mark.parametrize("shared_prefix", [False, True])
def test_herl_s_rewrites_take_the_ratio_shaping_and_the_others_the_run_s_loss(shared_prefix):
    """Rows 0 and 3 are rewrites under a longer prompt of their own (the rewrite prompt), in a group with rows 1 and
    2; the old log-probs are the current ones moved by delta, so r = exp(delta) != 1 and PPO's ratio too."""
    model, tok, cfg, batch = _a_group_with_two_rewrites()
    assert batch.source == ["fresh", "fresh", "refined", "refined"]
    with torch.no_grad():
        logp = forward_logprobs(model, batch, 1.0)["logp"]
    mask = batch.completion_mask
    delta = torch.tensor([[0.1], [-0.05], [0.3], [-0.2]]) * mask
    adv = torch.tensor([1.0, -0.5, 0.25, 2.0])
    algo = resolve(AlgoConfig(advantage="grpo", loss="ppo_clip", aggregation="token_mean"))
    optimizer, scheduler = build_optimizer(model, cfg)
    m = update(model, optimizer, scheduler, batch, BatchTensors(adv, (logp - delta) * mask), algo, step=1,
               updates=1, micro_batch_size=4, max_grad_norm=0.0, temperature=1.0, max_len=5,
               shared_prefix=shared_prefix, refine=("herl", 0.3))
    r = torch.exp(delta)
    a = adv[:, None].expand_as(r)
    ppo = torch.maximum(-a * r, -a * r.clamp(0.8, 1.2))
    refined = torch.tensor([False, False, True, True])
    per_token = torch.where(refined[:, None], -a * r / (r + 0.3), ppo)
    assert m["loss"] == pytest.approx(float((per_token * mask).sum() / mask.sum()), rel=1e-4)


@pytest.mark.parametrize("shared_prefix", [False, True])
def test_micro_batches_without_the_longest_prompt_give_the_whole_batch_s_log_probs_and_loss(shared_prefix):
    """A micro-batch drops the prompt columns that are padding in all its rows (RolloutBatch.trimmed): a rewrite's
    long prompt widens the batch, not the micro-batches of the other rows."""
    from policyforge.train.logprobs import logprobs_in_chunks
    from policyforge.train.step import micro_batches

    model, tok, cfg, batch = _a_group_with_two_rewrites()
    assert int(batch.prompt_mask[0].sum()) < batch.prompt_ids.shape[1]  # its own rows are left-padded
    whole = logprobs_in_chunks(model, batch, 1.0, [torch.arange(4)], shared_prefix=shared_prefix)["logp"]
    ones = logprobs_in_chunks(model, batch, 1.0, [torch.tensor([i]) for i in range(4)],
                              shared_prefix=shared_prefix)["logp"]
    torch.testing.assert_close(ones, whole, rtol=1e-5, atol=1e-5)
    assert [len(c) for c in micro_batches(batch, 1)] == [1, 1, 1, 1]
    adv = torch.tensor([1.0, -0.5, 0.25, 2.0])
    algo = resolve(AlgoConfig(advantage="grpo", loss="ppo_clip", aggregation="token_mean"))
    losses = []
    for size in (4, 1):
        optimizer, scheduler = build_optimizer(model, cfg)
        losses.append(update(model, optimizer, scheduler, batch, BatchTensors(adv, None), algo, step=1, updates=1,
                             micro_batch_size=size, max_grad_norm=0.0, temperature=1.0, max_len=5,
                             shared_prefix=shared_prefix, refine=("herl", 0.3))["loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
