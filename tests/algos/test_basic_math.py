"""Hand-derived values for the foundation math: grpo, dr_grpo, rloo, ppo_clip, reinforce, k1-k3, aggregations."""

import math

import torch

from policyforge.algos.advantages import dr_grpo, grpo, rloo
from policyforge.algos.aggregate import seq_mean_token_mean, seq_mean_token_sum, seq_mean_token_sum_norm, token_mean, token_sum
from policyforge.algos.drift import k1, k2, k3
from policyforge.algos.losses import ppo_clip, reinforce
from policyforge.algos.masked import masked_mean, masked_var, whiten

SCORES = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0])
GROUP = torch.tensor([0, 0, 0, 0, 1, 1])


def test_grpo_by_hand():
    # group 0: mean 0.5, unbiased std = sqrt(((.5^2)*4)/3) = sqrt(1/3) = 0.57735
    # A = +-0.5 / 0.57735 = +-0.866025; group 1 all equal -> 0
    adv = grpo(SCORES, GROUP, eps=0.0)
    expect = torch.tensor([0.866025, -0.866025, -0.866025, 0.866025, 0.0, 0.0])
    assert torch.allclose(adv[:4], expect[:4], atol=1e-5)
    assert torch.equal(grpo(SCORES, GROUP)[4:], torch.zeros(2))


def test_dr_grpo_by_hand():
    # r - group mean: group 0 mean 0.5, group 1 mean 2
    assert torch.allclose(dr_grpo(SCORES, GROUP), torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0]))


def test_rloo_by_hand():
    # sample 0: others 0,0,1 -> baseline 1/3 -> A = 2/3; sample 1: others 1,0,1 -> 2/3 -> A = -2/3
    adv = rloo(SCORES, GROUP)
    assert torch.allclose(adv, torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0.0, 0.0]), atol=1e-6)


def test_groups_may_interleave():
    g = torch.tensor([0, 1, 0, 1])
    s = torch.tensor([1.0, 3.0, 0.0, 5.0])
    assert torch.allclose(dr_grpo(s, g), torch.tensor([0.5, -1.0, -0.5, 1.0]))


def test_ppo_clip_by_hand():
    # token 0: ratio e (log ratio 1), A=+1 -> clipped at 1.2 -> loss -1.2, clip high
    # token 1: ratio e^-1 = 0.3679, A=-1 -> min(-0.3679, -0.8) = -0.8 -> loss 0.8, clip low
    # token 2: ratio 1, A=+1 -> loss -1
    logp = torch.tensor([[1.0, -1.0, 0.0]])
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, -1.0, 1.0]])
    mask = torch.ones(1, 3)
    loss, m = ppo_clip(logp, old, adv, mask)
    assert torch.allclose(loss, torch.tensor([[-1.2, 0.8, -1.0]]))
    assert math.isclose(float(m["clip_frac_high"]), 1 / 3, rel_tol=1e-6)
    assert math.isclose(float(m["clip_frac_low"]), 1 / 3, rel_tol=1e-6)
    assert math.isclose(float(m["ratio_max"]), math.e, rel_tol=1e-6)


def test_ppo_clip_higher_and_dual_clip():
    # eps_high 0.28: ratio e, A=+1 -> 1.28
    logp, old, mask = torch.tensor([[1.0]]), torch.zeros(1, 1), torch.ones(1, 1)
    loss, _ = ppo_clip(logp, old, torch.tensor([1.0]), mask, eps_high=0.28)
    assert torch.allclose(loss, torch.tensor([[-1.28]]))
    # A = -1, ratio e: min(-e, -1.2) = -e -> loss e = 2.718; dual clip c=2 caps it at -c*A = 2
    loss, _ = ppo_clip(logp, old, torch.tensor([-1.0]), mask, dual_clip=2.0)
    assert torch.allclose(loss, torch.tensor([[2.0]]))


def test_ppo_on_policy_gradient_equals_reinforce():
    logp = torch.randn(3, 4, requires_grad=True)
    adv = torch.tensor([1.0, -2.0, 0.5])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    (g_ppo,) = torch.autograd.grad(ppo_clip(logp, logp.detach(), adv, mask)[0].sum(), logp)
    (g_rf,) = torch.autograd.grad(reinforce(logp, logp.detach(), adv, mask)[0].sum(), logp)
    assert torch.allclose(g_ppo, g_rf)
    assert torch.allclose(g_rf, -adv[:, None] * mask)


def test_kl_estimators_by_hand():
    # log pi = 0, log ref = -1: k1 = 1, k2 = 0.5, k3 = e^-1 - (-1) - 1 = 0.36788
    logp, ref, mask = torch.zeros(1, 2), torch.tensor([[-1.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    assert torch.allclose(k1(logp, ref, mask), torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(k2(logp, ref, mask), torch.tensor([[0.5, 0.0]]))
    assert torch.allclose(k3(logp, ref, mask), torch.tensor([[math.exp(-1.0), 0.0]]), atol=1e-6)


def test_aggregations_by_hand():
    # seq 0: losses 1,2,3 (3 tokens); seq 1: loss 4 (1 token); padded length 3
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert math.isclose(float(token_mean(loss, mask)), 10 / 4)
    assert math.isclose(float(token_sum(loss, mask)), 10.0)
    assert math.isclose(float(seq_mean_token_mean(loss, mask)), (2.0 + 4.0) / 2)
    assert math.isclose(float(seq_mean_token_sum(loss, mask)), 10 / 2)
    assert math.isclose(float(seq_mean_token_sum_norm(loss, mask, max_len=5)), 10 / (2 * 5))


def test_masked_helpers():
    x = torch.tensor([1.0, 2.0, 3.0, 100.0])
    m = torch.tensor([1.0, 1.0, 1.0, 0.0])
    assert float(masked_mean(x, m)) == 2.0
    assert math.isclose(float(masked_var(x, m)), 1.0)  # unbiased: (1+0+1)/2
    w = whiten(x, m, eps=0.0)
    assert torch.allclose(w, torch.tensor([-1.0, 0.0, 1.0, 0.0]))


def test_groups_of_equal_non_dyadic_rewards_get_exactly_zero():
    """The rounded float32 mean of 16 x 0.7 is 1 ulp off 0.7; a constant group must still give 0 (and a 0 std)."""
    from policyforge.algos.advantages_batch import gpg
    from policyforge.algos.grouping import group_std

    scores = torch.tensor([0.7] * 16 + [0.0] * 8 + [1.0] * 8)
    group = torch.tensor([0] * 16 + [1] * 16)
    assert torch.equal(grpo(scores, group)[:16], torch.zeros(16))
    assert torch.equal(dr_grpo(scores, group)[:16], torch.zeros(16))
    assert torch.equal(group_std(scores, group)[:16], torch.zeros(16))
    assert torch.equal(grpo(torch.full((8,), 0.1), torch.zeros(8, dtype=torch.long)), torch.zeros(8))
    # GPG: alpha = B / (B - M) = 32 / 16 with M = 16 samples in the all-equal group
    assert torch.allclose(gpg(scores, group)[16:], torch.tensor([-1.0] * 8 + [1.0] * 8))


def test_constant_groups_are_exactly_zero_for_rloo_and_int_scores_average():
    from policyforge.algos.grouping import group_mean

    scores, group = torch.tensor([0.7] * 16 + [0.1] * 7), torch.tensor([0] * 16 + [1] * 7)
    assert torch.equal(rloo(scores, group), torch.zeros(23))
    assert torch.equal(group_mean(torch.tensor([1, 2, 3, 3]), torch.tensor([0, 0, 1, 1])), torch.tensor([1.5, 1.5, 3.0, 3.0]))


def test_k3_with_the_sampling_side_first_estimates_kl_from_the_sampler():
    """kl_old = k3(old, pi) on tokens drawn from pi_old estimates KL(pi_old || pi), not KL(pi || pi_old)."""
    g = torch.Generator().manual_seed(0)
    old, new = torch.log_softmax(torch.randn(50, generator=g), -1), torch.log_softmax(torch.randn(50, generator=g), -1)
    x = torch.multinomial(old.exp(), 200_000, replacement=True, generator=g)
    est = k3(old[x][None], new[x][None], torch.ones(1, x.numel())).mean()
    kl_old_new = (old.exp() * (old - new)).sum()
    kl_new_old = (new.exp() * (new - old)).sum()
    assert abs(est - kl_old_new) < 0.02 * kl_old_new and kl_new_old - kl_old_new > 0.3  # 1.02 vs 1.03, 1.35
