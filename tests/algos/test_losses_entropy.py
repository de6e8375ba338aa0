"""Hand-derived values, reference loops and state round trips for losses_entropy.py."""

from __future__ import annotations

import math

import pytest
import torch

from policyforge.algos.losses_entropy import AepoState, aepo, clip_cov, kl_cov, lp_reg
from tests.algos.inputs import make_batch


def _cov_batch():
    # logp = [[-0.5, -2.5], [-1.5, -1.5]]: mean -1.5, centred [[1, -1], [0, 0]].
    # adv = [3, -1] per row: token mean 1, centred [[2, 2], [-2, -2]].
    # Cov = [[2, -2], [0, 0]]: only token (0, 0) lies in (1, 5) and it is the top covariance.
    logp = torch.tensor([[-0.5, -2.5], [-1.5, -1.5]], requires_grad=True)
    return logp, torch.tensor([3.0, -1.0]), torch.ones(2, 2)


def test_clip_cov_hand_value():
    # On-policy (ratio 1, nothing PPO-clipped); n = max(floor(2e-4 * 4), 1) = 1 token -> (0, 0).
    # Loss = -A r elsewhere: [[0, -3], [1, 1]]; gradient in logp = -A r = same numbers.
    logp, adv, mask = _cov_batch()
    loss, m = clip_cov(logp, logp.detach(), adv, mask)
    assert torch.allclose(loss, torch.tensor([[0.0, -3.0], [1.0, 1.0]]))
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[0.0, -3.0], [1.0, 1.0]]))
    assert torch.allclose(m["cov_clip_frac"], torch.tensor(0.25))


def test_kl_cov_hand_value():
    # Top covariance token (0, 0) gets + |log r| with log r = 0.2: -3 e^0.2 + 0.2 = -3.464208;
    # others -A * 1.
    logp, adv, mask = _cov_batch()
    old = logp.detach().clone()
    old[0, 0] -= 0.2
    loss, _ = kl_cov(logp, old, adv, mask, kl_frac=0.25)
    expect = torch.tensor([[-3 * math.exp(0.2) + 0.2, -3.0], [1.0, 1.0]])
    assert torch.allclose(loss, expect, atol=1e-6)


def test_kl_cov_zero_advantage_selects_nothing():
    logp, _, mask = _cov_batch()
    old = logp.detach() - 0.3
    loss, m = kl_cov(logp, old, torch.zeros(2), mask)
    assert (loss == 0).all() and m["kl_cov_frac"] == 0


def _slow_cov(logp, a, mask):
    vals = [(i, t) for i in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[i, t] > 0]
    ml = sum(float(logp[i, t]) for i, t in vals) / len(vals)
    ma = sum(float(a[i, t]) for i, t in vals) / len(vals)
    return {(i, t): (float(logp[i, t]) - ml) * (float(a[i, t]) - ma) for i, t in vals}


@pytest.mark.parametrize("clip_frac", [0.1, 0.5])
def test_clip_cov_matches_reference_loop(clip_frac):
    # 34 tokens, 10 of them eligible (1 < Cov < 5 and not PPO-clipped): clip_frac 0.1 -> n = 3 of the 10 are drawn,
    # 0.5 -> n = 17 > 10, so every eligible token and nothing else.
    b = make_batch(seed=1)
    a = b["adv"][:, None].expand_as(b["mask"]) * 4  # large advantages so some Cov land in (1, 5)
    loss, _ = clip_cov(b["logp"], b["old_logp"], a, b["mask"], clip_frac=clip_frac, seed=7)
    cov = _slow_cov(b["logp"], a, b["mask"])
    n = max(int(clip_frac * float(b["mask"].sum())), 1)
    zeroed, eligible = set(), set()
    for (i, t), c in cov.items():
        r = math.exp(float(b["logp"][i, t] - b["old_logp"][i, t]))
        A = float(a[i, t])
        ppo = max(-A * r, -A * min(max(r, 0.8), 1.2))
        assert abs(ppo) > 1e-3, "every token's PPO loss is nonzero, so a zeroed one shows"
        clipped = -A * min(max(r, 0.8), 1.2) > -A * r
        if 1 < c < 5 and not clipped:
            eligible.add((i, t))
        if abs(float(loss[i, t]) - ppo) > 1e-5:
            assert float(loss[i, t]) == 0
            zeroed.add((i, t))
    assert len(eligible) == 10 and len(zeroed) == min(n, len(eligible))
    # Which ones: the documented draw is a uniform score per (B, T) position from a torch.Generator seeded with
    # seed + step (step None -> 0); the n eligible tokens with the highest scores are chosen.
    score = torch.rand(b["mask"].shape, generator=torch.Generator().manual_seed(7))
    by_score = sorted(eligible, key=lambda it: float(score[it]), reverse=True)
    assert zeroed == set(by_score[:n])
    again, _ = clip_cov(b["logp"], b["old_logp"], a, b["mask"], clip_frac=clip_frac, seed=7)
    assert torch.equal(loss, again), "seeded draw is deterministic"


def _lp_case(token):
    # pi = [0.6, 0.39, 0.01]; min_p 0.02 -> threshold 0.02 * 0.6 = 0.012 filters token 2; kept mass 0.99.
    logits = torch.log(torch.tensor([[[0.6, 0.39, 0.01]]]))
    logp = torch.log_softmax(logits, -1)[..., token].clone().requires_grad_(True)
    return logp, logits


def test_lp_reg_defaults_are_the_authors_recipe():
    # CarlanLark/Lp-Reg-dev recipe/lp_reg/Qwen3_14b_lp_reg_onpolicy_64gpu.sh: minp_p_threshold 0.02,
    # logp_neg_k_percent 0.01, ppo_kl_coef 1, clip_ratio_low 1.0, clip_ratio_high 9.0; low_var_kl clamps at 10.
    from policyforge.algos import table

    h = table("loss")["lp_reg"].hyper()
    assert (h["min_p"], h["rho"], h["kl_coef"], h["eps_low"], h["eps_high"], h["kl_max"]) == (0.02, 0.01, 1.0, 1.0, 9.0, 10.0)


def test_lp_reg_regularises_kept_low_probability_negative_token():
    # token 1, A = -1, on-policy: d = log(0.39/0.99) - log 0.39 = -ln 0.99 = 0.0100503
    # loss = -A r + (e^d - d - 1) = 1 + (1.0101010 - 0.0100503 - 1) = 1.0000507
    # d loss / d logp = -A r + (1 - e^d) = 1 - 0.0101010 = 0.9898990
    logp, logits = _lp_case(1)
    loss, m = lp_reg(logp, logp.detach(), torch.tensor([-1.0]), torch.ones(1, 1), logits=logits)
    assert torch.allclose(loss, torch.tensor([[1.0000507]]), atol=1e-6)
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[0.9898990]]), atol=1e-6)
    assert m["lp_reg_frac"] == 1


def test_lp_reg_leaves_filtered_noise_token_to_ppo():
    # token 2 (pi = 0.01 < 0.012) has proxy 0: not regularised, plain -A r = 1, gradient 1.
    logp, logits = _lp_case(2)
    loss, m = lp_reg(logp, logp.detach(), torch.tensor([-1.0]), torch.ones(1, 1), logits=logits)
    assert torch.allclose(loss, torch.tensor([[1.0]]))
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[1.0]])) and m["lp_reg_frac"] == 0


def test_lp_reg_threshold_is_inclusive():
    # pi = [0.5, 0.25, 0.125, 0.125], min_p = 0.5 -> threshold 0.25. The authors keep p >= threshold, so
    # token 1 (0.25) is kept: Z = 0.75, pi_proxy = 1/3, d = ln(4/3) = 0.2876821,
    # KL = 4/3 - 0.2876821 - 1 = 0.0456513; A = -1 on-policy -> loss = 1.0456513.
    # (With a strict '>' it would be filtered and the loss would be 1.)
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.125, 0.125]]]))
    logp = torch.log_softmax(logits, -1)[..., 1].clone().requires_grad_(True)
    loss, m = lp_reg(logp, logp.detach(), torch.tensor([-1.0]), torch.ones(1, 1), logits=logits, min_p=0.5)
    assert torch.allclose(loss, torch.tensor([[1.0456513]]), atol=1e-6) and m["lp_reg_frac"] == 1


def test_lp_reg_kl_is_clamped_at_ten():
    # 101 tokens: one at 0.02 (the max), 100 at 0.0098. min_p = 0.9 -> threshold 0.018 keeps only it.
    # d = log(0.02 / 0.02) - log 0.02 = 3.912; e^d - d - 1 = 50 - 3.912 - 1 = 45.09 -> clamped to 10.
    # A = -1 on-policy: loss = 1 + 10 = 11; the clamp stops the KL gradient, so d loss / d logp = -A r = 1.
    probs = torch.cat([torch.tensor([0.02]), torch.full((100,), 0.0098)])
    logits = probs.log().view(1, 1, 101)
    logp = torch.log_softmax(logits, -1)[..., 0].clone().requires_grad_(True)
    loss, m = lp_reg(logp, logp.detach(), torch.tensor([-1.0]), torch.ones(1, 1), logits=logits, min_p=0.9)
    assert torch.allclose(loss, torch.tensor([[11.0]]), atol=1e-5) and m["lp_reg_frac"] == 1
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[1.0]]), atol=1e-6)


def test_lp_reg_matches_reference_loop():
    b = make_batch(seed=2)
    kw = dict(rho=0.3, min_p=0.2, eps_low=0.2, eps_high=0.3)
    loss, _ = lp_reg(b["logp"], b["old_logp"], b["adv"], b["mask"], logits=b["logits"], **kw)
    mask, a = b["mask"], b["adv"]
    negs = [(float(b["logp"][i, t]), i, t) for i in range(8) for t in range(6) if mask[i, t] > 0 and a[i] < 0]
    k = max(1, int(0.3 * len(negs)))
    lowest = {(i, t) for _, i, t in sorted(negs)[:k]}
    for i in range(8):
        for t in range(6):
            if mask[i, t] == 0:
                assert loss[i, t] == 0
                continue
            p = torch.softmax(b["logits"][i, t].double(), -1).tolist()
            thr = 0.2 * max(p)
            pt = math.exp(float(b["logp"][i, t]))
            kept = sum(v for v in p if v >= thr)
            r = math.exp(float(b["logp"][i, t] - b["old_logp"][i, t]))
            A = float(a[i])
            if (i, t) in lowest and pt >= thr and pt / kept > pt:
                d = math.log(pt / kept) - math.log(pt)
                want = -A * r + min(math.exp(d) - d - 1, 10.0)
            else:
                want = max(-A * r, -A * min(max(r, 0.8), 1.3))
            assert abs(float(loss[i, t]) - want) < 1e-5


def test_aepo_hand_value():
    # Row 0 fresh, A = 0.5 -> -0.5 r; row 1 tempered, A = 0.3 > 0.05 -> A' = alpha = 2 -> -2 r;
    # row 2 tempered, A = 0.01 -> A' = 0. On-policy r = 1.
    logp = torch.zeros(3, 2, requires_grad=True)
    ent = torch.tensor([[0.5, 0.5], [9.0, 9.0], [9.0, 9.0]])
    loss, m = aepo(logp, logp.detach(), torch.tensor([0.5, 0.3, 0.01]), torch.ones(3, 2),
                   source=["fresh", "tempered", "tempered"], entropy=ent, alpha=2.0)
    assert torch.allclose(loss, torch.tensor([[-0.5, -0.5], [-2.0, -2.0], [0.0, 0.0]]))
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.5, -0.5], [-2.0, -2.0], [0.0, 0.0]]))
    assert torch.allclose(m["tempered_frac"], torch.tensor(2 / 3))


def test_aepo_defaults_are_the_authors_config():
    # 597358816/AEPO verl/trainer/config.py: temperature_high 1.2, temperature_low 0.8, entropy_base 0.5;
    # ray_trainer.py: _select_by_advantage(threshold=0.05), advantage set to 1.
    from policyforge.algos import table

    h = table("loss")["aepo"].hyper()
    assert (h["t_high"], h["t_low"], h["target_entropy"], h["pos_threshold"], h["alpha"]) == (1.2, 0.8, 0.5, 0.05, 1.0)


def test_aepo_temperature_state():
    # The loop asks for the temperature before each step's rollout.
    # Before any step: t_high (the authors' trainer starts from entropy 0 <= target).
    # Step 0 records fresh-row entropy 0.5 (tempered rows, entropy 9, are ignored): 0.5 <= 0.75 -> t_high,
    # already before step 1 (one step of lag, as the authors: the entropy of the update just made).
    # Step 1 records 1.0 > 0.75 -> t_low before step 2; the value survives a state round trip.
    logp = torch.zeros(3, 2)
    ent = torch.tensor([[0.5, 0.5], [9.0, 9.0], [9.0, 9.0]])
    s = AepoState()
    assert s.temperature() == 1.2
    kw = dict(source=["fresh", "tempered", "tempered"], state=s, target_entropy=0.75, t_high=1.5, t_low=0.7)
    aepo(logp, logp, torch.zeros(3), torch.ones(3, 2), entropy=ent, step=0, **kw)
    assert s.temperature() == 1.5
    aepo(logp, logp, torch.zeros(3), torch.ones(3, 2), entropy=torch.full((3, 2), 1.0), step=1, **kw)
    assert s.temperature() == 0.7
    t = AepoState()
    t.load_state_dict(s.state_dict())
    assert t.temperature() == 0.7
    # Two micro-batches of step 2: 0.25 on 2 fresh tokens and 1.0 on 2 -> token mean 0.625 <= 0.75 -> t_high.
    kw2 = dict(kw, state=t)
    aepo(logp, logp, torch.zeros(3), torch.ones(3, 2), entropy=torch.full((3, 2), 0.25), step=2, **kw2)
    assert t.temperature() == 1.5
    aepo(logp, logp, torch.zeros(3), torch.ones(3, 2), entropy=torch.full((3, 2), 1.0), step=2, **kw2)
    assert t.temperature() == 1.5


def test_aepo_without_tempered_rows_is_ppo_clip():
    from policyforge.algos.losses import ppo_clip

    b = make_batch(seed=4)
    loss, _ = aepo(b["logp"], b["old_logp"], b["adv"], b["mask"], source=b["source"], entropy=b["entropy"])
    ref, _ = ppo_clip(b["logp"], b["old_logp"], b["adv"], b["mask"])
    assert torch.allclose(loss, ref)
