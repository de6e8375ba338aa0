"""Hand-derived values and slow reference loops for policyforge/algos/advantages_shaped.py."""

from __future__ import annotations

import math

import pytest
import torch

from policyforge.algos.advantages_shaped import bnpo, mapo, passk, seed, unlikely
from tests.algos.test_advantages_batch import mean, members, ragged_batch, std

# ---------------------------------------------------------------- passk


def test_passk_hand():
    # N=4, one correct, k=2: N_neg=3. R_bar = 1 - C(3,2)/C(4,2) = 1 - 3/6 = .5, sigma = .5
    # A_pos = (1 - .5)/.5 = 1 ; A_neg = (1 - .5 - C(2,1)/C(3,1))/.5 = (.5 - 2/3)/.5 = -1/3
    # group {4,5} all wrong: R_bar = 0, sigma = 0 -> 0
    adv = passk(torch.tensor([1.0, 0, 0, 0, 0, 0]), torch.tensor([0, 0, 0, 0, 1, 1]), k=2)
    assert torch.allclose(adv, torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3, 0, 0]), atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_passk_reference(k):
    s, grp, _ = ragged_batch(20)
    sl, gl = s.tolist(), grp.tolist()
    ref = []
    for i in range(len(sl)):
        m = [sl[j] for j in members(gl, i)]
        n, n_neg = len(m), sum(1 for x in m if x <= 0.5)
        kk = min(k, n)
        r_bar = 1 - math.comb(n_neg, kk) / math.comb(n, kk)
        sig = math.sqrt(r_bar * (1 - r_bar))
        if sig <= 1e-6:
            ref.append(0.0)
        elif sl[i] > 0.5:
            ref.append((1 - r_bar) / sig)
        else:
            ref.append((1 - r_bar - math.comb(n_neg - 1, kk - 1) / math.comb(n - 1, kk - 1)) / sig)
    assert torch.allclose(passk(s, grp, k=k), torch.tensor(ref, dtype=s.dtype))


def test_passk_k1_is_grpo_population_std():
    # k = 1: R_bar = p, sigma = sqrt(p(1-p)); A_pos = (1-p)/sigma, A_neg = -p/sigma: GRPO with population std
    s, grp, _ = ragged_batch(21)
    p = torch.stack([s[grp == g].mean() for g in grp])
    sig = (p * (1 - p)).sqrt()
    expect = torch.where(sig > 0, (s - p) / sig.clamp(min=1e-12), torch.zeros_like(s))
    assert torch.allclose(passk(s, grp, k=1), expect)


def test_passk_best_mode_matches_verl():
    # verl grpo_passk: group 0 r=[.2,.9,.5]: best .9 (index 1), second .5 -> gap .4,
    #   Bessel std of [.2,.9,.5] = sqrt(((.3)^2+(.4)^2+(0)^2... )): mean .5333, devs [-.3333,.3667,-.0333],
    #   sum sq = .1111+.1344+.0011 = .2467, /2 = .12333, std = .35119 -> .4/.35119 = 1.13899
    # group 1 r=[1,1]: tie -> first index (2) gets 1 - 1 = 0.
    s, g = torch.tensor([0.2, 0.9, 0.5, 1.0, 1.0]), torch.tensor([0, 0, 0, 1, 1])
    adv = passk(s, g, mode="best")
    assert torch.allclose(adv, torch.tensor([0.0, 0.4 / (0.35119 + 1e-6), 0.0, 0.0, 0.0]), atol=1e-4)
    raw = passk(s, g, mode="best", scale_by_std=False)
    assert torch.allclose(raw, torch.tensor([0.0, 0.4, 0.0, 0.0, 0.0]), atol=1e-6)
    with pytest.raises(ValueError):
        passk(s, g, mode="nope")


# ---------------------------------------------------------------- bnpo


def test_bnpo_single_prompt_is_reinforce():
    # one prompt: the authors' code uses mean 0, var 1 -> a = 0, b = -1 -> alpha = beta = 1 -> A = r - p
    adv = bnpo(torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 0, 0, 0]))
    assert torch.allclose(adv, torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_bnpo_hand_reduces_to_reinforce():
    # groups: [1,0] p=.5, [1,1] p=1, [0,0] p=0. Prompt-level p = [.5,1,0]: mu=.5, Bessel var .25
    # nu = .25/.25 - 1 = 0 -> a=b=0 -> alpha=beta=1 -> f_N = 1 -> A = r - p = [.5,-.5,0,0,0,0]
    adv = bnpo(torch.tensor([1.0, 0, 1, 1, 0, 0]), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert torch.allclose(adv, torch.tensor([0.5, -0.5, 0, 0, 0, 0]))


def test_bnpo_hand_beta_13_12():
    # prompt-level p = [.5, 1, 0, .5]: mu=.5, Bessel var (0+.25+.25+0)/3 = 1/6
    # nu = .25*6 - 1 = .5 -> a = b = .25 -> alpha = beta = 1 + .25/3 = 13/12
    # f_N(.5) = .5^(1/12) * .5^(1/12) / B(13/12, 13/12), B = Gamma(13/12)^2 / Gamma(13/6)
    f = 0.5 ** (1 / 6) * math.gamma(13 / 6) / math.gamma(13 / 12) ** 2
    adv = bnpo(torch.tensor([1.0, 0, 1, 1, 0, 0, 1, 0]), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    expect = torch.tensor([0.5 / f, -0.5 / f, 0, 0, 0, 0, 0.5 / f, -0.5 / f])
    assert torch.allclose(adv, expect, atol=1e-6)


def test_bnpo_reference():
    s, grp, _ = ragged_batch(22)
    sl, gl = s.tolist(), grp.tolist()
    ps = {g: mean([sl[j] for j in range(len(sl)) if gl[j] == g]) for g in sorted(set(gl))}
    pv = list(ps.values())
    mu, var = mean(pv), std(pv) ** 2
    nu = max(mu * (1 - mu) / max(var, 1e-6) - 1, 0.0)
    al, be = 1 + mu * nu / 3, 1 + (1 - mu) * nu / 3
    beta_fn = math.gamma(al) * math.gamma(be) / math.gamma(al + be)
    ref = []
    for i in range(len(sl)):
        p = ps[gl[i]]
        f = p ** (al - 1) * (1 - p) ** (be - 1) / beta_fn
        ref.append((sl[i] - p) / f if f > 0 else 0.0)
    assert torch.allclose(bnpo(s, grp), torch.tensor(ref, dtype=s.dtype))


# ---------------------------------------------------------------- mapo


def test_mapo_hand():
    # r=[1,0,0,0]: mu=.25=p, lambda = 1 - 4*.25*.75 = .25, Bessel sigma = sqrt(.75/3) = .5
    # z = [1.5,-.5,-.5,-.5], percent deviation (r-mu)/mu = [3,-1,-1,-1]
    # A = .75*z + .25*apd = [1.125+.75, -.375-.25, ...] = [1.875,-.625,-.625,-.625]
    adv = mapo(torch.tensor([1.0, 0, 0, 0]), torch.zeros(4, dtype=torch.long))
    assert torch.allclose(adv, torch.tensor([1.875, -0.625, -0.625, -0.625]), atol=1e-4)


def test_mapo_reference():
    s, grp, _ = ragged_batch(23)
    sl, gl = s.tolist(), grp.tolist()
    ref = []
    for i in range(len(sl)):
        m = [sl[j] for j in members(gl, i)]
        mu, sig = mean(m), std(m)
        p = mean([1.0 if x > 0.5 else 0.0 for x in m])
        lam = 1 - 4 * p * (1 - p)
        ref.append((1 - lam) * (sl[i] - mu) / (sig + 1e-6) + lam * (sl[i] - mu) / (abs(mu) + 1e-6))
    assert torch.allclose(mapo(s, grp), torch.tensor(ref, dtype=s.dtype))


# ---------------------------------------------------------------- unlikely


def test_unlikely_hand():
    # G=4, r=[1,1,0,1], seq_logp=[-1,-3,-.5,-2], beta=.25, no mask (no length normalisation).
    # Ascending likelihood rank over the whole group (0 = least likely):
    #   idx1 (-3) 0, idx3 (-2) 1, idx0 (-1) 2, idx2 (-.5) 3
    # factor 1 - .25*rank/4: idx0 .875, idx1 1, idx2 .8125 (but r=0 -> 0), idx3 .9375
    # shaped = [.875, 1, 0, .9375]: mean .703125; deviations [.171875, .296875, -.703125, .234375]
    # sum of squares .6669922, /3 -> var .2223307, std .4715196
    # A = dev / (std + 1e-6) = [.364512, .629612, -1.491186, .497062]
    lp = torch.tensor([-1.0, -3, -0.5, -2])
    adv = unlikely(torch.tensor([1.0, 1, 0, 1]), torch.zeros(4, dtype=torch.long), seq_logp=lp)
    assert torch.allclose(adv, torch.tensor([0.364512, 0.629612, -1.491186, 0.497062]), atol=1e-5)


def test_unlikely_length_normalised_likelihood():
    # seq_logp sums [-4, -3] over 4 and 1 tokens: mean log-probs [-1, -3], so idx0 is the more likely
    # (by the sum it would be the less likely). G=2, r=[1,1], beta=.25:
    # ranks idx1 0, idx0 1 -> shaped [1 - .25*1/2, 1] = [.875, 1]; mean .9375, Bessel std
    # sqrt(2 * .0625^2 / 1) = .0883883 -> A = [-.0625, .0625] / (.0883883 + 1e-6) = [-.707099, .707099]
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 0, 0, 0]])
    lp = torch.tensor([-4.0, -3.0])
    r, grp = torch.tensor([1.0, 1.0]), torch.zeros(2, dtype=torch.long)
    assert torch.allclose(unlikely(r, grp, mask=mask, seq_logp=lp), torch.tensor([-0.707099, 0.707099]), atol=1e-5)
    # without length normalisation the order flips: idx0 (-4) rank 0 keeps 1, idx1 gets .875
    out = unlikely(r, grp, mask=mask, seq_logp=lp, length_normalize=False)
    assert torch.allclose(out, torch.tensor([0.707099, -0.707099]), atol=1e-5)


def test_unlikely_single_sample_group_uses_mean0_std1():
    # authors' code: a group of one sample has mean 0, std 1 -> A = r~ / (1 + eps); its rank is 0 so r~ = r
    adv = unlikely(torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0, 1, 1]), seq_logp=torch.tensor([-1.0, -1, -2]))
    assert torch.allclose(adv[0], torch.tensor(1.0 / (1 + 1e-6)))


def test_unlikely_reference():
    s, grp, mask = ragged_batch(24, binary=False)
    g = torch.Generator().manual_seed(25)
    lp = torch.randn(len(s), generator=g).double() * mask.sum(-1)
    i, j = members(grp.tolist(), 0)[:2]
    lp[i], lp[j] = -0.5 * mask[i].sum(), -0.5 * mask[j].sum()  # mean log-prob exactly -.5 for both: a tie
    sl, gl = s.tolist(), grp.tolist()
    ll = (lp / mask.sum(-1)).tolist()
    shaped = []
    for i in range(len(sl)):
        m = members(gl, i)
        rank = sum(1 for j in m if ll[j] < ll[i] or (ll[j] == ll[i] and j < i))
        shaped.append(sl[i] * (1 - 0.3 * rank / len(m)))
    ref = []
    for i in range(len(sl)):
        m = [shaped[j] for j in members(gl, i)]
        mu, sd = (mean(m), std(m)) if len(m) > 1 else (0.0, 1.0)
        ref.append((shaped[i] - mu) / (sd + 1e-6))
    out = unlikely(s, grp, mask=mask, seq_logp=lp, beta_rank=0.3)
    assert torch.allclose(out, torch.tensor(ref, dtype=s.dtype))


# ---------------------------------------------------------------- seed


def test_seed_hand():
    # answers [a,a,b,c]: p = [1/2, 1/4, 1/4] over K=3 clusters
    # SE = -(1/3)(log 1/2 + 2 log 1/4) = (5/3) log 2 ; SE_max = log 4 = 2 log 2 -> SE/SE_max = 5/6
    # alpha=.5 -> f = 1 - 5/12 = 7/12 ; A = (r - .5) * 7/12 with r=[1,1,0,0]
    # second group [x,x]: SE = 0 -> f = 1 -> A = r - mean = [.5,-.5]
    adv = seed(
        torch.tensor([1.0, 1, 0, 0, 1, 0]), torch.tensor([0, 0, 0, 0, 1, 1]), answers=["a", "a", "b", "c", "x", "x"]
    )
    assert torch.allclose(adv, torch.tensor([7 / 24, 7 / 24, -7 / 24, -7 / 24, 0.5, -0.5]))


def test_seed_same_string_in_two_groups_is_two_clusters():
    adv = seed(torch.tensor([1.0, 0, 1, 0]), torch.tensor([0, 0, 1, 1]), answers=["a", "b", "a", "a"])
    # group 0: two clusters of 1/2: SE = log 2 = SE_max -> f = 1 - .5 ; group 1: SE = 0 -> f = 1
    assert torch.allclose(adv, torch.tensor([0.25, -0.25, 0.5, -0.5]))


def test_seed_all_distinct_answers_give_one_minus_alpha():
    # answers [a,b,c]: K=3 clusters of 1/3 -> SE = log 3 = SE_max -> f = 1 - alpha = .5
    # r=[1,0,0]: A = r - 1/3 = [2/3, -1/3, -1/3] -> [1/3, -1/6, -1/6]
    adv = seed(torch.tensor([1.0, 0, 0]), torch.zeros(3, dtype=torch.long), answers=["a", "b", "c"])
    assert torch.allclose(adv, torch.tensor([1 / 3, -1 / 6, -1 / 6]))


@pytest.mark.parametrize("scale_by_std", [False, True])
def test_seed_reference(scale_by_std):
    s, grp, _ = ragged_batch(26)
    g = torch.Generator().manual_seed(27)
    answers = [str(int(x)) for x in torch.randint(0, 3, (len(s),), generator=g)]
    sl, gl = s.tolist(), grp.tolist()
    ref = []
    for i in range(len(sl)):
        m = members(gl, i)
        n = len(m)
        counts = {}
        for j in m:
            counts[answers[j]] = counts.get(answers[j], 0) + 1
        se = -sum(math.log(c / n) for c in counts.values()) / len(counts)
        x = 0.7 * se / math.log(n) if n > 1 else 0.0
        a = sl[i] - mean([sl[j] for j in m])
        if scale_by_std:
            a /= std([sl[j] for j in m]) + 1e-6
        ref.append(a * (1 - x))
    out = seed(s, grp, answers=answers, alpha=0.7, scale_by_std=scale_by_std)
    assert torch.allclose(out, torch.tensor(ref, dtype=s.dtype))


def test_mapo_population_std_takes_the_papers_eq_2_and_its_worked_example():
    # MAPO's Eq. 2 divides the group variance by G; its example group [0.1, 0.1, 1, 1] (p = 1/2, so lambda = 0 and
    # the z-score alone) gets advantages [-1, -1, 1, 1]; the authors' code (torch.std, G - 1) gives +-0.866
    scores, group = torch.tensor([0.1, 0.1, 1.0, 1.0]), torch.zeros(4, dtype=torch.long)
    torch.testing.assert_close(mapo(scores, group, population_std=True), torch.tensor([-1.0, -1.0, 1.0, 1.0]),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(mapo(scores, group), torch.tensor([-1.0, -1.0, 1.0, 1.0]) * (3 / 4) ** 0.5,
                               atol=1e-5, rtol=0)
