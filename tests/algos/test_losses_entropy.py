"""Hand-derived values, reference loops and state round trips for losses_entropy.py."""

from __future__ import annotations

import math

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


def test_clip_cov_matches_reference_loop():
    b = make_batch(seed=1)
    a = b["adv"][:, None].expand_as(b["mask"]) * 4  # large advantages so some Cov land in (1, 5)
    loss, _ = clip_cov(b["logp"], b["old_logp"], a, b["mask"], clip_frac=0.1, seed=7)
    cov = _slow_cov(b["logp"], a, b["mask"])
    n = max(int(0.1 * float(b["mask"].sum())), 1)
    zeroed = 0
    for (i, t), c in cov.items():
        r = math.exp(float(b["logp"][i, t] - b["old_logp"][i, t]))
        A = float(a[i, t])
        ppo = max(-A * r, -A * min(max(r, 0.8), 1.2))
        clipped = -A * min(max(r, 0.8), 1.2) > -A * r
        if abs(float(loss[i, t]) - ppo) > 1e-5:
            assert float(loss[i, t]) == 0 and 1 < c < 5 and not clipped
            zeroed += 1
    eligible = sum(1 for (i, t), c in cov.items() if 1 < c < 5)
    assert zeroed <= min(n, eligible)
    again, _ = clip_cov(b["logp"], b["old_logp"], a, b["mask"], clip_frac=0.1, seed=7)
    assert torch.equal(loss, again), "seeded draw is deterministic"


def _lp_case(token):
    # pi = [0.6, 0.39, 0.01]; min_p 0.02 -> threshold 0.012 filters token 2; kept mass 0.99.
    logits = torch.log(torch.tensor([[[0.6, 0.39, 0.01]]]))
    logp = torch.log_softmax(logits, -1)[..., token].clone().requires_grad_(True)
    return logp, logits


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


def test_lp_reg_matches_reference_loop():
    b = make_batch(seed=2)
    kw = dict(rho=0.3, min_p=0.2)
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
            kept = sum(v for v in p if v > thr)
            r = math.exp(float(b["logp"][i, t] - b["old_logp"][i, t]))
            A = float(a[i])
            if (i, t) in lowest and pt > thr and pt / kept > pt:
                d = math.log(pt / kept) - math.log(pt)
                want = -A * r + math.exp(d) - d - 1
            else:
                want = max(-A * r, -A * min(max(r, 0.8), 1.2))
            assert abs(float(loss[i, t]) - want) < 1e-5


def test_aepo_hand_value_and_temperature_state():
    # Row 0 fresh, A = 0.5 -> -0.5 r; row 1 tempered, A = 0.3 > 0.05 -> A' = alpha = 2 -> -2 r;
    # row 2 tempered, A = 0.01 -> A' = 0. On-policy r = 1.
    logp = torch.zeros(3, 2, requires_grad=True)
    ent = torch.tensor([[0.5, 0.5], [9.0, 9.0], [9.0, 9.0]])
    s = AepoState()
    kw = dict(source=["fresh", "tempered", "tempered"], entropy=ent, state=s, alpha=2.0)
    loss, m = aepo(logp, logp.detach(), torch.tensor([0.5, 0.3, 0.01]), torch.ones(3, 2), step=0, **kw)
    assert torch.allclose(loss, torch.tensor([[-0.5, -0.5], [-2.0, -2.0], [0.0, 0.0]]))
    assert s.temperature() == 1.0  # nothing closed yet
    # Next step closes step 0: mean fresh entropy 0.5 <= 0.75 -> t_high; tempered rows are ignored.
    aepo(logp, logp.detach(), torch.zeros(3), torch.ones(3, 2), step=1, **kw)
    assert s.temperature() == 1.2
    t = AepoState()
    t.load_state_dict(s.state_dict())
    assert t.temperature() == 1.2
    kw2 = dict(kw, entropy=torch.full((3, 2), 1.0), state=t)
    aepo(logp, logp.detach(), torch.zeros(3), torch.ones(3, 2), step=2, **kw2)
    assert t.temperature() == 1.2  # closes step 1, recorded with entropy 0.5
    aepo(logp, logp.detach(), torch.zeros(3), torch.ones(3, 2), step=3, **kw2)
    assert t.temperature() == 0.8  # closes step 2: entropy 1.0 > 0.75 -> t_low


def test_aepo_without_tempered_rows_is_ppo_clip():
    from policyforge.algos.losses import ppo_clip

    b = make_batch(seed=4)
    loss, _ = aepo(b["logp"], b["old_logp"], b["adv"], b["mask"], source=b["source"], entropy=b["entropy"])
    ref, _ = ppo_clip(b["logp"], b["old_logp"], b["adv"], b["mask"])
    assert torch.allclose(loss, ref)
