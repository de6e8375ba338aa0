"""The training step uses the algorithm and optimiser settings it is given.

Each test runs one real step (`train_step`: rollout, reward, advantages, update) of the small
saved model on 3 prompts x 4 completions, with a reward that varies within groups so that
advantages, losses and gradients are non-zero, and checks the step against values worked out
here by hand from the sampled batch: the advantage from the rewards, the recorded loss from a
plain forward of the policy and of the reference, the parameter change under plain SGD.
If the step ignored `algo.advantage_kwargs`, `algo.loss_kwargs`, a drift coefficient,
`algo.aggregation`, `optim.max_grad_norm` or `optim.micro_batch_tokens`, one of them would fail.
"""

import copy

import pytest
import torch

import policyforge.train.loop as loop
import policyforge.train.step as step
from policyforge.models.load import load_model
from policyforge.train.algorithm import resolve
from policyforge.train.loop import StepParts, train_step
from policyforge.train.setup import build_data, frozen_copy

LR = 0.1


@pytest.fixture(scope="module")
def policy(small_model_dir):
    """(policy, reference away from it, tokenizer); tests train deep copies, so these stay as loaded."""
    model, tok = load_model(small_model_dir, "float32", "cpu", 0)
    ref = frozen_copy(model)
    with torch.no_grad():  # a reference away from the policy, so a drift term is non-zero
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    return model, ref, tok


@pytest.fixture
def cfg(tiny_cfg):
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"  # rewards that vary within a group
    tiny_cfg.rollout.prompts_per_step, tiny_cfg.rollout.group_size, tiny_cfg.rollout.max_new_tokens = 3, 4, 5
    tiny_cfg.rollout.stop = list("0123456789")  # the untrained model writes digits: completions of several lengths
    return tiny_cfg


def one_step(cfg, policy):
    """One step on a copy of the policy under plain SGD (lr LR, constant schedule).

    Returns (metrics record, scored batch, trained copy of the policy)."""
    model, ref, tok = policy
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    source, _, reward = build_data(cfg.data, cfg.train.seed)
    parts = StepParts(cfg, resolve(cfg.algo), model, tok, ref, opt, sched, torch.Generator().manual_seed(0), reward)
    record, batch = train_step(parts, 1, [source.train_example(i) for i in range(cfg.rollout.prompts_per_step)])
    return record, batch, model


def completion_logp(model, batch):
    """(B, T) log-prob of each completion token at temperature 1 (0 on padding), from one plain forward
    over the left-padded prompt and the completion; independent of the trainer's packed forward."""
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
    attn = torch.cat([batch.prompt_mask, torch.ones_like(batch.completion_ids)], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits
    p, t = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    logp = logits[:, p - 1:p + t - 1].float().log_softmax(-1)
    return logp.gather(-1, batch.completion_ids[..., None]).squeeze(-1) * batch.completion_mask


def gpg_by_hand(scores, group, f_norm=1.0, scale_by_std=False):
    """GPG (arXiv 2504.02546, sec. 3): alpha * (r - mean_g r) / F, alpha = B / (B - #samples in
    all-equal groups), F = f_norm or the group's Bessel std (+1e-6), computed group by group."""
    out = torch.zeros_like(scores)
    degenerate = 0
    for g in group.unique():
        r = scores[group == g]
        degenerate += len(r) if bool((r == r[0]).all()) else 0
        denom = float(r.std()) + 1e-6 if scale_by_std else f_norm
        out[group == g] = (r - r.mean()) / denom
    return out * len(scores) / (len(scores) - degenerate)


AGGREGATIONS = {  # per-token loss l (B, T), mask m (B, T), generation budget L -> the scalar loss
    "token_mean": lambda l, m, L: (l * m).sum() / m.sum(),
    "token_sum": lambda l, m, L: (l * m).sum(),
    "seq_mean_token_mean": lambda l, m, L: ((l * m).sum(-1) / m.sum(-1)).mean(),
    "seq_mean_token_sum": lambda l, m, L: (l * m).sum(-1).mean(),
    "seq_mean_token_sum_norm": lambda l, m, L: (l * m).sum() / (m.shape[0] * L),
}


@pytest.mark.parametrize("kwargs", [{"f_norm": 4.0}, {"scale_by_std": True}])
def test_advantages_use_the_configured_advantage_kwargs(cfg, policy, monkeypatch, kwargs):
    cfg.algo.advantage, cfg.algo.advantage_kwargs = "gpg", dict(kwargs)
    seen = []

    def spy(*args, **kw):  # the real computation; the spy only keeps its result
        seen.append(step.compute_advantages(*args, **kw))
        return seen[-1]

    monkeypatch.setattr(loop, "compute_advantages", spy)
    _, batch, _ = one_step(cfg, policy)
    expected = gpg_by_hand(batch.scores, batch.group, **kwargs)
    assert expected.abs().max() > 0.1, "every advantage is zero: the check would be empty"
    # the defaults (f_norm 1, no std scaling) give other values on this batch, so ignoring the kwargs fails here
    assert not torch.allclose(gpg_by_hand(batch.scores, batch.group), expected, atol=1e-3)
    torch.testing.assert_close(seen[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("aggregation", sorted(AGGREGATIONS))
def test_recorded_loss_uses_loss_kwargs_drift_coefficient_and_aggregation(cfg, policy, aggregation):
    """The step's loss equals aggregation(-(A + tau) logp + coef * k3(logp, ref_logp)) worked out by hand.

    AsymRE's tau changes the loss value on-policy (unlike a clip range, which only matters once the
    ratio moves from 1), and every setting here differs from its default: tau 0.5 (default 0.1),
    gpg f_norm 2 (default 1), k3 coefficient 0.3 (a dropped coefficient reads as 1).
    """
    tau, f_norm, coef = 0.5, 2.0, 0.3
    cfg.algo.loss, cfg.algo.loss_kwargs = "asymre", {"tau": tau}
    cfg.algo.advantage, cfg.algo.advantage_kwargs = "gpg", {"f_norm": f_norm}
    cfg.algo.drift, cfg.algo.aggregation = {"k3": coef}, aggregation
    record, batch, _ = one_step(cfg, policy)

    model, ref, _ = policy  # as before the step: one update, so the loss is taken at these weights
    m = batch.completion_mask
    logp, ref_logp = completion_logp(model, batch), completion_logp(ref, batch)
    adv = gpg_by_hand(batch.scores, batch.group, f_norm=f_norm)
    pg = -(adv[:, None] + tau) * logp
    d = ref_logp - logp
    drift = torch.exp(d) - d - 1.0  # k3 (DeepSeekMath eq. 4)
    agg = AGGREGATIONS[aggregation]
    L = cfg.rollout.max_new_tokens
    assert adv.abs().max() > 0.1 and float(agg(drift, m, L)) > 1e-3, "no advantage or no drift: the check is empty"
    expected = float(agg(pg + coef * drift, m, L))
    if aggregation != "token_mean":  # completions of several lengths: each aggregation gives its own value
        assert abs(expected - float(AGGREGATIONS["token_mean"](pg + coef * drift, m, L))) > 1e-2
    assert record["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("max_grad_norm", [1e-3, 0.0, 1e6])
def test_sgd_step_is_clipped_to_max_grad_norm(cfg, policy, max_grad_norm):
    """Under plain SGD the parameter change is lr * grad, so its global norm is lr * max_grad_norm when
    the gradient is clipped, and lr * the recorded (unclipped) grad_norm when it is not (0 = off)."""
    cfg.optim.max_grad_norm = max_grad_norm
    before = [p.detach().clone() for p in policy[0].parameters()]
    record, _, model = one_step(cfg, policy)
    change = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())]).norm()
    raw = record["grad_norm"]
    assert raw > 1e-2, "no gradient: the check would be empty"
    clipped = 0 < max_grad_norm < raw
    assert clipped == (max_grad_norm == 1e-3)  # the small limit bites; off and the huge one do not
    assert float(change) == pytest.approx(LR * (max_grad_norm if clipped else raw), rel=1e-3)


@pytest.mark.parametrize("shared_prefix", [False, True])
def test_micro_batch_tokens_bounds_each_micro_batch_and_leaves_the_update_unchanged(cfg, policy, monkeypatch,
                                                                                    shared_prefix):
    """A token budget splits the update into micro-batches of at most `micro_batch_tokens` padded tokens
    (rows x (prompt width + longest completion)), unless one unit alone exceeds it (a row; a whole group
    with the shared-prefix forward), and accumulating them gives the whole-batch update."""
    cfg.algo.drift = {"k3": 0.1}  # every sample carries a gradient, so all 12 go through the update's micro-batches
    cfg.optim.skip_zero_advantage, cfg.optim.shared_prefix = False, shared_prefix
    real, chunks = step.micro_batches, []

    def spy(batch, *args, **kw):  # the real split; the spy keeps the micro-batches and their padded token counts
        out = real(batch, *args, **kw)
        width = batch.prompt_ids.shape[1]
        chunks.append([(idx, len(idx) * (width + int(batch.completion_mask[idx].sum(-1).max()))) for idx in out])
        return out

    _, batch, whole = one_step(cfg, policy)
    rows = 8 if shared_prefix else 3  # room for 2 of the 3 groups of 4, or for about 3 of the 12 rows
    budget = rows * (batch.prompt_ids.shape[1] + cfg.rollout.max_new_tokens)
    cfg.optim.micro_batch_tokens = budget
    monkeypatch.setattr(step, "micro_batches", spy)  # the update's split (the loop's log-prob chunks are its own)
    _, split_batch, split = one_step(cfg, policy)

    assert torch.equal(split_batch.completion_ids, batch.completion_ids)  # the same samples in both runs
    [plan] = chunks  # one update, one split
    assert len(plan) > 1, "the budget did not split the batch: the check would be empty"
    for idx, tokens in plan:
        one_unit = len(batch.group[idx].unique()) == 1 if shared_prefix else len(idx) == 1
        assert tokens <= budget or one_unit, f"micro-batch of {len(idx)} rows has {tokens} > {budget} tokens"
        if shared_prefix:  # a group's samples stay together for the shared-prefix forward
            assert all(int((batch.group[idx] == g).sum()) == 4 for g in batch.group[idx].unique())
    assert sorted(torch.cat([idx for idx, _ in plan]).tolist()) == list(range(len(batch)))  # each sample once
    moved = max(float((a - b).detach().abs().max()) for a, b in zip(whole.parameters(), policy[0].parameters()))
    assert moved > 1e-4, "the update moved nothing: the check would be empty"
    for a, b in zip(split.parameters(), whole.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def completion_logp_with_grad(model, batch):
    """completion_logp, differentiable, and each completion position's full-vocabulary entropy (B, T)."""
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
    attn = torch.cat([batch.prompt_mask, torch.ones_like(batch.completion_ids)], 1)
    logits = model(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits
    p, t = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    logp = logits[:, p - 1:p + t - 1].float().log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(-1, batch.completion_ids[..., None]).squeeze(-1) * batch.completion_mask, entropy


@pytest.mark.parametrize("unbiased", [False, True])
def test_drift_unbiased_weights_the_penalty_by_the_ratio_and_moves_its_gradient(cfg, policy, monkeypatch, unbiased):
    """algo.drift_unbiased: the SGD step equals the one from token_mean(-A r + coef * k3 * r - bonus * H), r = pi/pi_old
    (DeepSeek-V3.2's unbiased KL estimate; TRL's use_bias_correction_kl), worked out by hand with autograd, and
    differs from the step without the weight, though r is 1 in value."""
    coef, bonus = 0.5, 0.3
    cfg.algo.drift, cfg.algo.drift_unbiased = {"k3": coef, "entropy": bonus}, unbiased
    cfg.optim.max_grad_norm = 0.0  # the plain gradient, unclipped
    seen = []

    def spy(*args, **kw):
        seen.append(step.compute_advantages(*args, **kw))
        return seen[-1]

    monkeypatch.setattr(loop, "compute_advantages", spy)
    _, batch, trained = one_step(cfg, policy)

    model, ref, _ = policy
    by_hand = copy.deepcopy(model)
    m = batch.completion_mask
    (logp, entropy), ref_logp = completion_logp_with_grad(by_hand, batch), completion_logp(ref, batch)
    ratio = torch.exp(logp - logp.detach())
    d = ref_logp - logp
    k3 = torch.exp(d) - d - 1.0
    for weighted in (False, True):
        by_hand.zero_grad()
        # the entropy bonus is never weighted: it is no divergence from pi_old's samples to correct
        per_tok = -seen[0][:, None] * ratio + coef * k3 * (ratio if weighted else 1.0) - bonus * entropy
        (((per_tok * m).sum() / m.sum())).backward(retain_graph=True)
        moved = [p.detach() - LR * p.grad for p in by_hand.parameters()]
        gap = max(float((a - b.detach()).abs().max()) for a, b in zip(moved, trained.parameters()))
        if weighted == unbiased:
            assert gap < 1e-5
        else:
            assert gap > 1e-4, "the weight did not change the step: the check would be empty"


def test_drift_unbiased_without_a_drift_term_is_refused(cfg):
    from policyforge.train.config import ConfigError

    cfg.algo.drift_unbiased = True
    with pytest.raises(ConfigError, match="algo.drift_unbiased.*names none"):
        resolve(cfg.algo)
