"""Advantage estimators that reshape the group-relative advantage.

Same contract as advantages.py: `fn(scores, group, *, mask=None, **hyper) -> adv`,
`scores` (B,), `group` (B,) int ids, `adv` (B,). Each estimator changes the per-group
advantage with a closed form (pass@k), an adaptive normaliser (Beta density, mixed
percent deviation), a likelihood rank, or the semantic entropy of the answers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from policyforge.algos.advantages_batch import per_group_mean
from policyforge.algos.grouping import group_count, group_ids, group_max, group_mean, group_std, group_sum
from policyforge.algos.registry import register


def _log_comb(n: Tensor, k: Tensor) -> Tensor:
    """log C(n, k) for real n >= k >= 0 (lgamma form)."""
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def _comb_ratio(n_top: Tensor, n_bot: Tensor, k: Tensor) -> Tensor:
    """C(n_top, k) / C(n_bot, k) with C(n, k) = 0 for n < k (n_bot >= k assumed)."""
    ok = n_top >= k
    safe_top = torch.where(ok, n_top, k)
    return torch.where(ok, torch.exp(_log_comb(safe_top, k) - _log_comb(n_bot, k)), torch.zeros_like(n_top))


@register(
    "advantage",
    "passk",
    paper="Pass@k Training for Adaptively Balancing Exploration and Exploitation of Large Reasoning Models",
    arxiv="2508.10751",
    peers="authors' code RUCAIBox/Passk_Training code/passk_adv.py (mode='analytical'); "
    "verl adv_estimator=grpo_passk (mode='best')",
    choices={"mode": ("analytical", "best")},
    success_reward=True,
)
def passk(
    scores: Tensor,
    group: Tensor,
    *,
    mask: Tensor | None = None,
    k: int = 4,
    mode: str = "analytical",
    scale_by_std: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """Pass@k advantage: the paper's analytical per-response form, or verl's best-of-group rule.

    mode="analytical" (default, the paper's proposal): with N responses, N_neg wrong,
    R_bar = 1 - C(N_neg, k) / C(N, k),  sigma = sqrt(R_bar (1 - R_bar)),
    A_pos = (1 - R_bar) / (sigma + eps),  A_neg = (1 - R_bar - C(N_neg - 1, k - 1) / C(N - 1, k - 1)) / (sigma + eps)
    (arXiv 2508.10751, "analytical derivation"; checked against the authors' code,
    RUCAIBox/Passk_Training code/passk_adv.py, which divides by sigma + 1e-6 as here;
    the paper's text itself was not reachable). All-right or all-wrong groups get 0.
    mode="best" (verl grpo_passk, after "Optimizing language models for inference time
    objectives"): only the group's best sample is non-zero, A = r_max - r_2nd, divided by
    (std_g(r) + eps) when `scale_by_std` (verl's norm_adv_by_std_in_grpo, default True);
    checked against verl trainer/ppo/core_algos.py compute_grpo_passk_outcome_advantage.
    Shapes: scores (B,), group (B,) -> (B,).
    Choices: analytical: a response is correct when r > 0.5; a group smaller than k uses
    k_eff = N (the authors' code would divide by C(N, k) = 0). best: ties for the maximum
    go to the lowest batch index; a group of one sample gets 0 (verl raises).
    """
    if mode == "best":
        return _passk_best(scores, group, scale_by_std, eps)
    if mode != "analytical":
        raise ValueError(f"passk mode must be 'analytical' or 'best', got {mode!r}")
    correct = (scores > 0.5).to(scores.dtype)
    n = group_count(group, scores.dtype)
    n_neg = n - group_sum(correct, group)
    kk = torch.minimum(torch.full_like(n, float(k)), n)
    r_bar = 1.0 - _comb_ratio(n_neg, n, kk)
    sigma = (r_bar * (1.0 - r_bar)).clamp(min=0).sqrt()
    miss = _comb_ratio(n_neg - 1.0, n - 1.0, kk - 1.0)
    adv = torch.where(correct > 0, 1.0 - r_bar, 1.0 - r_bar - miss)
    return adv / (sigma + eps)


def _passk_best(scores: Tensor, group: Tensor, scale_by_std: bool, eps: float) -> Tensor:
    """verl grpo_passk: r_max - r_2nd on the first arg-max of each group, 0 elsewhere."""
    ids, g = group_ids(group)
    idx = torch.arange(scores.numel(), device=scores.device)
    top = group_max(scores, group)
    is_top = scores == top
    first = torch.full((g,), scores.numel(), dtype=torch.long, device=scores.device)
    first = first.scatter_reduce(0, ids, torch.where(is_top, idx, scores.numel()), reduce="amin")
    best = first[ids] == idx
    second = group_max(torch.where(best, torch.full_like(scores, float("-inf")), scores), group)
    gap = torch.where(torch.isfinite(second), top - second, torch.zeros_like(top))
    if scale_by_std:
        gap = gap / (group_std(scores, group) + eps)
    return torch.where(best, gap, torch.zeros_like(gap))


def _beta_log_pdf(p: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """log Beta(p; a, b) density; -inf where the density is 0 (p on the boundary, a or b > 1)."""
    log_norm = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    return torch.xlogy(a - 1, p) + torch.xlogy(b - 1, 1 - p) - log_norm


@register(
    "advantage",
    "bnpo",
    paper="BNPO: Beta Normalization Policy Optimization",
    arxiv="2506.02864",
    peers="none of TRL / verl / OpenRLHF / Trinity-RFT (authors' code: changyi7231/BNPO)",
    success_reward=True,
)
def bnpo(scores: Tensor, group: Tensor, *, mask: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """BNPO: A = (r - p(q)) / f_N(p(q); alpha, beta), f_N a Beta density with adaptive parameters.

    p(q) = mean_g(r) (Monte-Carlo success rate); the batch's p(q) values are fitted by a
    Beta(a, b) with the method of moments (nu = mu(1 - mu)/var - 1, a = mu nu,
    b = (1 - mu) nu) and alpha = 1 + a/3, beta = 1 + b/3 minimise the gradient variance
    (arXiv 2506.02864, Theorem 2 and eq. 9). alpha = beta = 1 is REINFORCE with baseline,
    alpha = beta = 3/2 is GRPO's std up to a constant. Checked against the authors' code
    (changyi7231/BNPO recipe/bnpo/src/bnpo_ray_trainer.py, compute_bnpo_outcome_advantage:
    alpha = max(1 + a/3, 1), beta = max(1 + b/3, 1), a, b from the batch's per-prompt p with
    torch.var); the paper's text itself was not reachable.
    Shapes: scores (B,) binary in {0, 1}, group (B,) -> (B,).
    Choices: each group's p(q) counts once in the moment fit (Bessel-corrected var);
    nu is clamped at 0 (alpha = beta = 1) when the fit is not a valid Beta (the same as the
    authors' clamp of alpha, beta at 1), and var is floored at eps; a batch with a single
    prompt uses alpha = beta = 1 (the authors' code sets mean 0, var 1 there, which gives
    the same); a sample whose f_N is 0 (p = 0 or 1, so r = p) gets advantage 0 (the
    authors clamp 1/f_N at 1e6 and multiply by r - p = 0). The paper's
    advantage decomposition for multi-part rewards is not applied (one scalar reward).
    """
    p = group_mean(scores, group).clamp(0.0, 1.0)
    per_prompt, _ = per_group_mean(scores, group)
    g = per_prompt.numel()
    mu = per_prompt.mean()
    var = ((per_prompt - mu) ** 2).sum() / max(g - 1, 1)
    nu = (mu * (1 - mu) / var.clamp(min=eps) - 1.0).clamp(min=0.0) * float(g > 1)
    alpha, beta = 1.0 + mu * nu / 3.0, 1.0 + (1 - mu) * nu / 3.0
    log_f = _beta_log_pdf(p, alpha, beta)
    ok = torch.isfinite(log_f)
    return torch.where(ok, (scores - p) * torch.exp(-torch.where(ok, log_f, torch.zeros_like(log_f))), 0.0 * p)


@register(
    "advantage",
    "mapo",
    paper="MAPO: Mixed Advantage Policy Optimization",
    arxiv="2509.18849",
    peers="none of TRL / verl / OpenRLHF / Trinity-RFT (authors' code: WenkeHuang/MAPO)",
    success_reward=True,
)
def mapo(scores: Tensor, group: Tensor, *, mask: Tensor | None = None, eps: float = 1e-6,
         population_std: bool = False) -> Tensor:
    """MAPO: A = (1 - lambda(p)) * (r - mu)/sigma + lambda(p) * (r - mu)/mu, lambda(p) = 1 - 4p(1 - p).

    p = N_success / G is the group's trajectory certainty; (r - mu)/mu is the advantage
    percent deviation, used more as the group becomes certain (p near 0 or 1)
    (arXiv 2509.18849, sec. 3.2, Eqs. 2-6). Checked against the authors' code (mirror of
    WenkeHuang/MAPO at ARGROB2023/MAPO, code/verl/trainer/ray_trainer.py, estimator
    "grpomixpro": weight 4p(1-p) on the GRPO z-score, 1 - 4p(1-p) on (r - mu)/(mu + eps),
    p = count(r == 1)/G), which equals this to 1e-16.
    Shapes: scores (B,), group (B,) -> (B,).
    Choices: p = fraction of r > 0.5 in the group (= the code's count for 0/1 rewards); eps added to both
    denominators, so an all-zero group gets advantage 0. sigma is Bessel-corrected (torch.std), as the authors'
    code and `grpo` take it; the paper's Eq. 2 divides by G (its worked examples, [0.9, 1, 1, 1] -> min A = -1.73,
    follow that): `population_std=True` takes Eq. 2 as printed (8.5% larger z-scores at G = 4, 2% at G = 16).
    """
    mu = group_mean(scores, group)
    sigma = group_std(scores, group, unbiased=not population_std)
    p = group_mean((scores > 0.5).to(scores.dtype), group)
    lam = 1.0 - 4.0 * p * (1.0 - p)
    centred = scores - mu
    return (1.0 - lam) * centred / (sigma + eps) + lam * centred / (mu.abs() + eps)


def _ascending_rank(lik: Tensor, group: Tensor) -> Tensor:
    """Rank of each sample within its group by `lik`, 0 = least likely; ties: lower batch index ranks lower."""
    idx = torch.arange(lik.numel(), device=lik.device)
    same = group[:, None] == group[None, :]
    other, me = lik[None, :], lik[:, None]
    below = (other < me) | ((other == me) & (idx[None, :] < idx[:, None]))
    return (same & below).sum(-1).to(lik.dtype)


@register(
    "advantage",
    "unlikely",
    paper="Rewarding the Unlikely: Lifting GRPO Beyond Distribution Sharpening",
    arxiv="2506.02355",
    peers="none of TRL / verl / OpenRLHF / Trinity-RFT (authors' code: AndreHe02/rewarding-unlikely-release)",
)
def unlikely(
    scores: Tensor,
    group: Tensor,
    *,
    mask: Tensor | None = None,
    seq_logp: Tensor,
    beta_rank: float = 0.25,
    length_normalize: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """Unlikeliness reward: r~_i = r_i * (1 - beta_rank * rank_i / G), then the GRPO z-score of r~.

    rank_i in {0, ..., G-1} is sample i's rank within its group of G by its likelihood
    under the sampling policy, in ascending order: the least likely sample has rank 0 and
    keeps its whole reward, the most likely has rank G-1 and loses beta_rank (G-1)/G of
    it. Then A_i = (r~_i - mean_g(r~)) / (std_g(r~) + eps), std Bessel-corrected.
    Source status: verified against the authors' code, AndreHe02/rewarding-unlikely-release
    verl/trainer/ppo/ray_lean_trainer.py (RayLeanTrainer._compute_advantages, option
    lean.rank_penalty) and its run script examples/lean/grpo.sh (rank_penalty=0.25, our
    default). NOT verified against the paper's text (arXiv 2506.02355, its method
    section was not reachable): no equation number is cited, and the formula above is the
    authors' implementation, not a transcription of the paper.
    Shapes: scores (B,), group (B,), seq_logp (B,) summed behaviour log-prob of each
    completion, mask (B, T) optional -> (B,).
    Choices, all as in the authors' code: the likelihood is the mean per-token log-prob
    (seq_logp / number of completion tokens, when `length_normalize` and a mask is given;
    without a mask seq_logp is used as given); every sample of the group is ranked,
    correct or not, and the factor multiplies every reward (a wrong sample with r = 0
    stays 0, so only correct samples are reshaped under a 0/1 verifier); a group of one
    sample uses mean 0 and std 1 (A = r~ / (1 + eps)), as the authors' code does.
    Ours: ties in likelihood are broken by batch order (the lower index ranks as less
    likely); the authors' double argsort leaves tie order unspecified. The paper's
    de-duplication of identical proofs is left to the reward function.
    """
    lik = seq_logp.detach().to(scores.dtype)
    if length_normalize and mask is not None:
        lik = lik / mask.sum(-1).to(scores.dtype).clamp(min=1.0)
    g = group_count(group, scores.dtype)
    shaped = scores * (1.0 - beta_rank * _ascending_rank(lik, group) / g)
    single = g < 2
    mu = torch.where(single, torch.zeros_like(g), group_mean(shaped, group))
    sd = torch.where(single, torch.ones_like(g), group_std(shaped, group))
    return (shaped - mu) / (sd + eps)


def _answer_ids(answers: list[str], device: torch.device) -> Tensor:
    """Dense integer id per distinct answer string (exact-match semantic clusters)."""
    table: dict[str, int] = {}
    return torch.tensor([table.setdefault(a, len(table)) for a in answers], dtype=torch.long, device=device)


@register(
    "advantage",
    "seed",
    paper="SEED-GRPO: Semantic Entropy Enhanced GRPO for Uncertainty-Aware Policy Optimization",
    arxiv="2505.12346",
    peers="none of TRL / verl / OpenRLHF / Trinity-RFT (authors' code: Dreamer312/SEED-GRPO)",
)
def seed(
    scores: Tensor,
    group: Tensor,
    *,
    mask: Tensor | None = None,
    answers: list[str],
    alpha: float = 0.5,
    scale_by_std: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    """SEED-GRPO: A^_i = A_i * f(alpha * SE(q) / SE_max(q)), f(x) = 1 - x, SE = semantic entropy of the answers.

    A_i = r_i - mean_g(r);  SE(q) = -(1/K) sum_{k=1..K} log p(C_k | q) over the K answer
    clusters of the group;  SE_max(q) = log G, the largest value of this estimator (all
    G answers distinct).
    Source status: the paper's text (arXiv 2505.12346) and the authors' code were NOT
    reachable (Dreamer312/SEED-GRPO holds only a README). The structure above -- A_i = r_i
    minus the group mean with no std, the Monte-Carlo form -(1/K) sum_k log p(C_k|q) with
    p(C_k|q) the cluster's probability mass under pi_old, and A^ = A * f(alpha SE/SE_max)
    with f one of a linear, an exponential or a focal function, SE_max the maximum possible
    semantic entropy -- is confirmed only by a third-party summary of the paper
    (themoonlight.io review of 2505.12346). Unconfirmed: SE_max = log G (our reading),
    the exact forms of f (we implement only the linear one, as 1 - x), the value of alpha
    used in the paper (0.5 here is our choice), and how the cluster mass is estimated.
    Shapes: scores (B,), group (B,), answers list[str] of length B -> (B,).
    Choices: clusters are exact matches of the extracted answer strings (a string seen in
    two groups is two clusters); p(C_k|q) is the cluster's frequency n_k/G, the
    Monte-Carlo estimate of its mass under pi_old, which keeps 0 <= SE <= log G = SE_max,
    so f lies in [1 - alpha, 1] (summing raw sequence probabilities would not be bounded
    by log G); a group of one sample has SE_max = 0 and keeps f = 1; `scale_by_std`
    (default off, as the summary's A_i) divides A by the group std + eps first (GRPO form).
    """
    gid, _ = group_ids(group)
    aid = _answer_ids(answers, scores.device)
    _, cluster, counts = torch.unique(gid * len(answers) + aid, return_inverse=True, return_counts=True)
    n = group_count(group, scores.dtype)
    log_p = torch.log(counts[cluster].to(scores.dtype) / n)
    weight = _first_occurrence(cluster).to(scores.dtype)  # one term per cluster
    k = group_sum(weight, group)
    se = -group_sum(weight * log_p, group) / k
    se_max = torch.log(n)
    x = torch.where(se_max > 0, alpha * se / se_max.clamp(min=eps), torch.zeros_like(se))
    adv = scores - group_mean(scores, group)
    if scale_by_std:
        adv = adv / (group_std(scores, group) + eps)
    return adv * (1.0 - x)


def _first_occurrence(ids: Tensor) -> Tensor:
    """True at the first position of each distinct value of `ids`."""
    pos = torch.arange(ids.numel(), device=ids.device)
    first = torch.full((int(ids.max()) + 1,), ids.numel(), dtype=torch.long, device=ids.device)
    first = first.scatter_reduce(0, ids, pos, reduce="amin")
    return first[ids] == pos
