"""Hand-derived values and reference loops for losses_supervised.py."""

from __future__ import annotations

import math

import torch

from policyforge.algos.losses_supervised import kdrl, nft, otr, psft
from tests.algos.inputs import make_batch


def test_nft_hand_values():
    # adv = r - r_q with r_q = 0.25: row 0 correct (A = 0.75), row 1 wrong (A = -0.25), row 2 A = 0.
    # R = 2 on every token. omega = 1 - r_q = 0.75. Default floor neg_eps = 1.0 (NVlabs/NFT clamp_negative).
    # correct: -0.75 ln 2 = -0.519860, d/dlogp = -0.75.
    # wrong: negative ratio (1 - 0.25 * 2) / 0.75 = 0.6667 < 1 -> value -0.75 ln 1 = 0;
    #   gradient passes with the floored value in the denominator: 0.75 * (0.25 * 2 / 0.75) / 1 = 0.5.
    logp = torch.full((3, 1), math.log(2.0), requires_grad=True)
    loss, m = nft(logp, torch.zeros(3, 1), torch.tensor([0.75, -0.25, 0.0]), torch.ones(3, 1))
    assert torch.allclose(loss, torch.tensor([[-0.519860], [0.0], [0.0]]), atol=1e-6)
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.75], [0.5], [0.0]]), atol=1e-6)
    assert torch.allclose(m["neg_floor_frac"], torch.tensor(1 / 3))


def test_nft_wrong_answer_above_floor():
    # wrong, r_q = 0.25, R = 0.5: negative ratio (1 - 0.125) / 0.75 = 7/6 > 1 (no floor)
    # value -0.75 ln(7/6) = -0.75 * 0.1541507 = -0.115613
    # d/dlogp = 0.75 * (0.25 * 0.5 / 0.75) / (7/6) = 0.125 * 6/7 = 0.107143
    logp = torch.full((1, 1), math.log(0.5), requires_grad=True)
    loss, m = nft(logp, torch.zeros(1, 1), torch.tensor([-0.25]), torch.ones(1, 1))
    assert torch.allclose(loss, torch.tensor([[-0.115613]]), atol=1e-6)
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[0.107143]]), atol=1e-6) and m["neg_floor_frac"] == 0


def test_nft_floor_in_value_only():
    # neg_eps = 0.05 (a smaller floor than the default):
    # wrong, r_q = 0.25, R = 3.9: (1 - 0.975) / 0.75 = 0.0333 < eps = 0.05 -> value -0.75 ln 0.05 = 2.246799
    # gradient passes: 0.75 * (0.25 R / 0.75) / 0.05 = 0.75 * 1.3 / 0.05 = 19.5
    logp = torch.full((1, 1), math.log(3.9), requires_grad=True)
    loss, m = nft(logp, torch.zeros(1, 1), torch.tensor([-0.25]), torch.ones(1, 1), neg_eps=0.05)
    assert torch.allclose(loss, torch.tensor([[2.246799]]), atol=1e-5)
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[19.5]]), atol=1e-4) and m["neg_floor_frac"] == 1


def test_nft_log_ratio_cap():
    # correct, r_q = 0.25, log R = 11 > 10: value -0.75 * 10 = -7.5, no gradient past the cap (authors' clamp).
    logp = torch.full((1, 1), 11.0, requires_grad=True)
    loss, _ = nft(logp, torch.zeros(1, 1), torch.tensor([0.75]), torch.ones(1, 1))
    assert torch.allclose(loss, torch.tensor([[-7.5]]))
    loss.sum().backward()
    assert logp.grad.abs().max() == 0


def test_nft_on_policy_gradient_is_dr_grpo():
    # Paper section 4: on-policy NFT gradient = -(r - r_q) grad log pi = -A grad log pi.
    logp = torch.zeros(2, 3, requires_grad=True)
    adv = torch.tensor([0.6, -0.4])
    loss, _ = nft(logp, logp.detach(), adv, torch.ones(2, 3))
    loss.sum().backward()
    assert torch.allclose(logp.grad, -adv[:, None].expand(2, 3), atol=1e-6)


def test_nft_matches_reference_loop():
    b = make_batch(seed=5)
    adv = torch.tensor([0.75, -0.25, 0.5, -0.5, 0.0, 0.9, -0.1, 0.0])
    loss, _ = nft(b["logp"], b["old_logp"], adv, b["mask"])
    for i in range(8):
        for t in range(6):
            A = float(adv[i])
            R = math.exp(float(b["logp"][i, t] - b["old_logp"][i, t]))
            rq = min(max(1 - A if A > 0 else -A, 0.02), 0.98)
            if b["mask"][i, t] == 0 or A == 0:
                want = 0.0
            elif A > 0:
                want = -(1 - rq) * math.log(R)
            else:
                want = -(1 - rq) * math.log(max((1 - rq * R) / (1 - rq), 1.0))
            assert abs(float(loss[i, t]) - want) < 1e-5


def test_psft_hand_values():
    # Defaults eps_low = 0.2, eps_high = 0.28 (zwhong714/PSFT run_psft.sh). A = 1, loss -min(r, clip(r, 0.8, 1.28)):
    # r = 1.5 > 1.28: loss -1.28, no gradient; r = 0.5: min(0.5, 0.8) = 0.5 -> loss -0.5, d/dlogp = -r = -0.5;
    # r = 1: loss -1, gradient -1 (SFT); r = 1.25 (inside): loss -1.25, gradient -1.25.
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.0, 1.25]])).requires_grad_(True)
    loss, m = psft(logp, torch.zeros(1, 4), torch.zeros(1), torch.ones(1, 4))
    assert torch.allclose(loss, torch.tensor([[-1.28, -0.5, -1.0, -1.25]]), atol=1e-6)
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[0.0, -0.5, -1.0, -1.25]]), atol=1e-6)
    assert torch.allclose(m["clip_frac_high"], torch.tensor(1 / 4))


def test_otr_hand_value_from_match_rate():
    # V = 2, pi = [0.5, 0.5], target 0: loss = -(1/K) sum_k R_k log 0.5 with R = 1 (hit) or -0.1 (miss):
    # = -ln 0.5 * (m - 0.1 (1 - m)), m = fraction of the K samples that hit.
    K = 4000
    logits = torch.zeros(1, 1, 2, requires_grad=True)
    z = torch.zeros(1, 1)
    target = torch.zeros(1, 1, dtype=torch.long)
    loss, met = otr(z, z, torch.zeros(1), torch.ones(1, 1), logits=logits, target_ids=target, num_samples=K)
    m = float(met["match_rate"])
    # m is reported by otr itself, so first check it independently: K fair coin flips hit Binomial(K, 1/2)
    # times, so m lies within 5 standard deviations (sqrt(0.25 / K) = 0.0079) of 1/2
    assert abs(m - 0.5) < 5 * math.sqrt(0.25 / K)
    assert torch.allclose(loss, torch.tensor([[-math.log(0.5) * (m - 0.1 * (1 - m))]]), atol=1e-6)


def test_otr_hand_values_when_the_sample_is_certain():
    # logits [2, 0]: pi = softmax = [1 / (1 + e^-2), e^-2 / (1 + e^-2)], log pi(0) = -ln(1 + e^-2) = -0.126928.
    # Sampling is at temperature 0.01: the tempered probability of token 1 is e^-200 (0 in float32), so every
    # sample is token 0 while the loss still uses the untempered log pi(0).
    logits = torch.tensor([[[2.0, 0.0]]])
    z, one = torch.zeros(1, 1), torch.ones(1, 1)
    log_p0 = -math.log(1 + math.exp(-2.0))
    # target 0: every sample hits, R = 1 -> loss = -log pi(0)
    hit, met = otr(z, z, torch.zeros(1), one, logits=logits, target_ids=torch.zeros(1, 1, dtype=torch.long),
                   temperature=0.01)
    assert float(met["match_rate"]) == 1.0 and abs(float(hit) + log_p0) < 1e-6
    # target 1: every sample misses, R = wrong_reward = -0.1 -> loss = 0.1 log pi(0)
    miss, met = otr(z, z, torch.zeros(1), one, logits=logits, target_ids=torch.ones(1, 1, dtype=torch.long),
                    temperature=0.01)
    assert float(met["match_rate"]) == 0.0 and abs(float(miss) - 0.1 * log_p0) < 1e-6


def test_otr_is_deterministic_and_matches_expectation_loop():
    b = make_batch(seed=6, grad=True)
    kw = dict(logits=b["logits"], target_ids=b["target_ids"], num_samples=20000, seed=3)
    loss, _ = otr(b["logp"], b["old_logp"], b["adv"], b["mask"], **kw)
    loss = loss.detach()
    again, _ = otr(b["logp"], b["old_logp"], b["adv"], b["mask"], **kw)
    assert torch.equal(loss, again.detach())
    # Slow loop: exact expectation over the vocabulary, -sum_v pi(v) R(v) log pi(v).
    for i in range(8):
        for t in range(6):
            p = torch.softmax(b["logits"][i, t].detach().double(), -1).tolist()
            y = int(b["target_ids"][i, t])
            want = -sum(pv * (1.0 if v == y else -0.1) * math.log(pv) for v, pv in enumerate(p))
            want *= float(b["mask"][i, t])
            assert abs(float(loss[i, t]) - want) < 0.05


def test_kdrl_hand_values_and_annealing():
    # A = 1, r = 1, log pi = ln 0.5, log pi_T = ln 0.25: k2 = (ln 2)^2 / 2 = 0.240227.
    # step 5 of 10, beta from 5e-3 to 1e-3: beta = 3e-3 -> loss = -1 + 3e-3 * 0.240227
    logp = torch.full((1, 1), math.log(0.5))
    teacher = torch.full((1, 1), math.log(0.25))
    kw = dict(teacher_logp=teacher, step=5, kl_coef_end=1e-3, anneal_steps=10)
    loss, m = kdrl(logp, logp, torch.tensor([1.0]), torch.ones(1, 1), **kw)
    assert torch.allclose(loss, torch.tensor([[-1 + 3e-3 * 0.240227]]), atol=1e-7)
    assert torch.allclose(m["kd_coef"], torch.tensor(3e-3))
    masked, _ = kdrl(logp, logp, torch.tensor([1.0]), torch.ones(1, 1), kd_on_correct=False, **kw)
    assert torch.allclose(masked, torch.tensor([[-1.0]])), "reward-guided masking: no KD on a correct row"


def test_kdrl_matches_reference_loop():
    b = make_batch(seed=7)
    loss, _ = kdrl(b["logp"], b["old_logp"], b["adv"], b["mask"], teacher_logp=b["teacher_logp"], kl_coef=0.1)
    for i in range(8):
        for t in range(6):
            r = math.exp(float(b["logp"][i, t] - b["old_logp"][i, t]))
            A = float(b["adv"][i])
            kd = 0.5 * (float(b["logp"][i, t]) - float(b["teacher_logp"][i, t])) ** 2
            want = (max(-A * r, -A * min(max(r, 0.8), 1.2)) + 0.1 * kd) * float(b["mask"][i, t])
            assert abs(float(loss[i, t]) - want) < 1e-5
