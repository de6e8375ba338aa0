"""Hand-derived values, on-policy reductions and slow reference loops for losses_offpolicy.py."""

from __future__ import annotations

import math

import pytest
import torch

from policyforge.algos import table
from policyforge.algos.aggregate import seq_mean_token_sum, token_mean
from policyforge.algos.losses_offpolicy import asymre, opmd, topr
from tests.algos.test_losses_ratio import const, grad_of, leaf, rand_batch, seq_adv

E = math.e


# ---------------------------------------------------------------- topr
def test_topr_hand_values():
    # logp = (-1, -1), mu's = (-0.5, -0.5): trajectory ratio pi/mu = e^-1.
    logp = leaf([-1.0, -1.0])
    mu = const([-0.5, -0.5])
    mask = const([1.0, 1.0])
    # Negative (A = -1): alpha = [e^-1]_0^1 = e^-1, per-token L = -e^-1 * -1 * -1 = -e^-1,
    # per-token gradient -alpha A = e^-1.
    loss, m = topr(logp, mu, seq_adv(-1.0), mask)
    assert loss[0].tolist() == pytest.approx([-math.exp(-1)] * 2)
    assert grad_of(loss.sum(), logp)[0].tolist() == pytest.approx([math.exp(-1)] * 2)
    assert m["topr_alpha_mean"].item() == pytest.approx(math.exp(-1))
    # Positive (A = +1): no IS, alpha = 1: L = -1 * -1 = 1 per token.
    loss, _ = topr(logp, mu, seq_adv(1.0), mask)
    assert loss[0].tolist() == pytest.approx([1.0, 1.0])
    # Token level: alpha = e^-0.5 per token.
    loss, _ = topr(logp, mu, seq_adv(-1.0), mask, level="token")
    assert loss[0].tolist() == pytest.approx([-math.exp(-0.5)] * 2)
    # pi > mu on a negative: the ratio is truncated at 1 (reported as clip_frac_high).
    loss, m = topr(logp, const([-2.0, -2.0]), seq_adv(-1.0), mask)
    assert loss[0].tolist() == pytest.approx([-1.0, -1.0]) and m["clip_frac_high"].item() == 1.0
    with pytest.raises(ValueError, match="level"):
        topr(logp, mu, seq_adv(1.0), mask, level="bogus")


def test_topr_reference_loop_sequence_objective():
    """seq_mean_token_sum(loss) == (1/N) sum_tau -sg(alpha) A log pi(tau), value and gradient."""
    logp, mu, adv, mask = rand_batch(11)
    loss, _ = topr(logp, mu, adv, mask)
    objective = 0.0
    for i in range(logp.shape[0]):
        n, a = int(mask[i].sum()), adv[i].item()
        log_pi = logp[i, :n].sum()
        ratio = math.exp((log_pi - mu[i, :n].sum()).item())
        alpha = 1.0 if a >= 0 else min(max(ratio, 0.0), 1.0)
        objective = objective - alpha * a * log_pi / logp.shape[0]
    agg = seq_mean_token_sum(loss, mask)
    assert agg.item() == pytest.approx(objective.item())
    assert torch.allclose(grad_of(agg, logp), grad_of(objective, logp))


# ---------------------------------------------------------------- opmd
def test_opmd_hand_values():
    # logp = (-1, -2), old = (-1.5, -2.5): sequence log-ratio l = 1, (tau/2) l^2 = 0.5 spread as
    # 0.25 per token. A = +1: L_t = -logp_t + 0.25 = (1.25, 2.25).
    logp = leaf([-1.0, -2.0])
    old = const([-1.5, -2.5])
    mask = const([1.0, 1.0])
    loss, m = opmd(logp, old, seq_adv(1.0), mask)
    assert loss[0].tolist() == pytest.approx([1.25, 2.25])
    assert m["opmd_reg"].item() == pytest.approx(0.25)  # its token mean (0.5 per sequence over 2 tokens)
    # Gradient per token: -A + tau * l = -1 + 1 = 0: the regulariser cancels the pull here.
    assert grad_of(loss.sum(), logp)[0].tolist() == pytest.approx([0.0, 0.0])
    # Token level: each token (tau/2) 0.5^2 = 0.125; gradient -1 + 0.5.
    loss, _ = opmd(logp, old, seq_adv(1.0), mask, level="token")
    assert loss[0].tolist() == pytest.approx([1.125, 2.125])
    assert grad_of(loss.sum(), logp)[0].tolist() == pytest.approx([-0.5, -0.5])


def test_opmd_reference_loop():
    logp, old, adv, mask = rand_batch(12)
    loss, _ = opmd(logp, old, adv, mask, tau=0.7)
    objective = 0.0
    for i in range(logp.shape[0]):
        n = int(mask[i].sum())
        ell = logp[i, :n].sum() - old[i, :n].sum()
        objective = objective + (-adv[i] * logp[i, :n].sum() + 0.35 * ell**2) / logp.shape[0]
    agg = seq_mean_token_sum(loss, mask)
    assert agg.item() == pytest.approx(objective.item())
    assert torch.allclose(grad_of(agg, logp), grad_of(objective, logp))


def test_opmd_token_level_matches_trinity_k2_coefficient():
    # Trinity-RFT's rec "k2" regulariser is coef * (logp - old)^2 per token with the 1/2
    # absorbed, so its coef 0.1 (the paper's rec_gsm8k OPMD config) is tau = 0.2 here.
    # logp = -1, old = -1.5: (0.2 / 2) * 0.5^2 = 0.1 * 0.25 = 0.025; A = 0.5: L = 0.5 + 0.025.
    logp = leaf([-1.0])
    loss, _ = opmd(logp, const([-1.5]), seq_adv(0.5), const([1.0]), tau=0.2, level="token")
    assert loss.item() == pytest.approx(0.5 + 0.1 * 0.25)
    # Gradient: -A + tau * (logp - old) = -0.5 + 0.2 * 0.5 = -0.4.
    assert grad_of(loss.sum(), logp).item() == pytest.approx(-0.4)


# ---------------------------------------------------------------- asymre
def test_asymre_hand_values():
    # A = 0.5, tau = 0.1, logp = -2: L = -(0.6)(-2) = 1.2; gradient -(A + tau) = -0.6.
    logp = leaf([-2.0])
    loss, _ = asymre(logp, const([-2.0]), seq_adv(0.5), const([1.0]))
    assert loss.item() == pytest.approx(1.2)
    assert grad_of(loss.sum(), logp).item() == pytest.approx(-0.6)
    # Zero advantage: still -tau grad logp (hence zero_adv_exempt).
    loss, _ = asymre(logp, const([-2.0]), seq_adv(0.0), const([1.0]))
    assert grad_of(loss.sum(), logp).item() == pytest.approx(-0.1)
    assert table("loss")["asymre"].fn.zero_adv_exempt


def test_asymre_reference_loop():
    logp, old, adv, mask = rand_batch(13)
    loss, _ = asymre(logp, old, adv, mask, tau=0.3)
    for i in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            ref = -(adv[i].item() + 0.3) * logp[i, t].item() * mask[i, t].item()
            assert loss[i, t].item() == pytest.approx(ref, abs=1e-12)


# ---------------------------------------------------------------- on-policy reductions
@pytest.mark.parametrize("name,kw", [("topr", {}), ("topr", {"level": "token"}), ("opmd", {}),
                                     ("opmd", {"level": "token"}), ("asymre", {"tau": 0.0})])
def test_reduces_to_reinforce_on_policy(name, kw):
    """old_logp == logp: the gradient equals REINFORCE's -A grad logp (token_mean here)."""
    logp, _, adv, mask = rand_batch(14)
    loss, _ = table("loss")[name].fn(logp, logp.detach(), adv, mask, **kw)
    ref = -adv[:, None] * logp * mask
    assert torch.allclose(grad_of(token_mean(loss, mask), logp), grad_of(token_mean(ref, mask), logp))


def test_refinement_shaping_is_minus_a_times_pi_over_pi_plus_gamma_with_its_gradient():
    from policyforge.algos.losses_offpolicy import refinement_shaping

    logp = torch.log(torch.tensor([[0.1, 0.5], [0.9, 0.02]])).requires_grad_()
    adv, mask = torch.tensor([1.0, -2.0]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss = refinement_shaping(logp, adv, mask, gamma=0.1)
    p = logp.detach().exp()
    want = -adv[:, None] * p / (p + 0.1) * mask
    torch.testing.assert_close(loss, want)
    loss.sum().backward()  # d/dlogp of -A p/(p+g) = -A g p / (p+g)^2: largest at p = g
    torch.testing.assert_close(logp.grad, -adv[:, None] * 0.1 * p / (p + 0.1) ** 2 * mask)


def test_hindsight_shaping_is_minus_a_times_r_over_r_plus_gamma_of_the_ratio_with_its_gradient():
    from policyforge.algos.losses_offpolicy import hindsight_shaping

    old = torch.log(torch.tensor([[0.2, 0.5], [0.9, 0.02]]))
    logp = (old + torch.tensor([[0.0, 0.3], [-0.2, 25.0]])).requires_grad_()  # the last ratio is past the clamp
    adv, mask = torch.tensor([1.0, -2.0]), torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    loss = hindsight_shaping(logp, old, adv, mask, gamma=1.0)
    r = torch.exp(torch.clamp(logp.detach() - old, -20, 20))
    torch.testing.assert_close(loss, -adv[:, None] * r / (r + 1.0) * mask)
    assert float(loss[0, 0].detach()) == pytest.approx(-0.5)  # r = 1: -A / (1 + gamma)
    loss.sum().backward()  # d/dlogp of -A r/(r+g) = -A g r / (r+g)^2; nothing through the clamp
    want = -adv[:, None] * 1.0 * r / (r + 1.0) ** 2 * mask
    want[1, 1] = 0.0
    torch.testing.assert_close(logp.grad, want)
