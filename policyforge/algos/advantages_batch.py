"""Advantage estimators that normalise with batch-level statistics.

Same contract as advantages.py: `fn(scores, group, *, mask=None, **hyper) -> adv`,
`scores` (B,), `group` (B,) int ids, `adv` (B,) or (B, T). Estimators here use a
statistic of the whole batch (batch std, global whitening, a count over the batch,
a persistent per-prompt tracker) on top of, or instead of, per-group statistics.
"""

from __future__ import annotations

import torch
from torch import Tensor

from policyforge.algos.grouping import group_ids, group_mean, group_std, group_sum
from policyforge.algos.masked import whiten
from policyforge.algos.registry import register


def _batch_std(x: Tensor) -> Tensor:
    """Bessel-corrected std over all of `x` (0 for a single element)."""
    n = x.numel()
    return ((x - x.mean()) ** 2).sum().div(max(n - 1, 1)).sqrt()


@register(
    "advantage",
    "lite",
    paper="Part I: Tricks or Traps? A Deep Dive into RL for LLM Reasoning",
    arxiv="2508.08221",
    peers="TRL scale_rewards='batch'; ROLL (the paper's framework)",
)
def lite(scores: Tensor, group: Tensor, *, mask: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Lite PPO advantage: group-mean baseline, batch-level std: A_i = (r_i - mean_g(r)) / (std_B(r) + eps).

    arXiv 2508.08221, sec. 4.1 / 5 ("group-level mean, batch-level std").
    Shapes: scores (B,), group (B,) -> (B,).
    Peers: TRL scale_rewards='batch' computes the same thing; we follow it and the
    paper in taking the batch std of the raw rewards r (not of r - mean_g), Bessel-
    corrected as torch.std. Pair with token-level aggregation (`token_mean`) as the
    paper's Lite PPO does.
    """
    return (scores - group_mean(scores, group)) / (_batch_std(scores) + eps)


def per_group_mean(x: Tensor, group: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of `x` in each group, one value per group (G,), and the dense ids (B,)."""
    ids, g = group_ids(group)
    sums = torch.zeros(g, dtype=x.dtype, device=x.device).index_add_(0, ids, x)
    counts = torch.zeros(g, dtype=x.dtype, device=x.device).index_add_(0, ids, torch.ones_like(x))
    return sums / counts, ids


def _kl_return(ref_logp: Tensor, behav_logp: Tensor, mask: Tensor) -> Tensor:
    """sum_{i >= t} KL(i) per token, with KL(i) = log pi_old(o_i) - log pi_ref(o_i) (k1), masked."""
    kl = (behav_logp - ref_logp) * mask
    return kl.flip(-1).cumsum(-1).flip(-1) * mask


@register(
    "advantage",
    "reinforce_pp",
    paper="REINFORCE++: An Efficient RLHF Algorithm with Robustness to Both Prompt and Reward Models",
    arxiv="2501.03262",
    peers="OpenRLHF advantage_estimator=reinforce; verl adv_estimator=reinforce_plus_plus",
)
def reinforce_pp(
    scores: Tensor,
    group: Tensor,
    *,
    mask: Tensor | None = None,
    ref_logp: Tensor,
    behav_logp: Tensor,
    kl_coef: float = 0.01,
    eps: float = 1e-8,
) -> Tensor:
    """REINFORCE++: KL-shaped token return, whitened over every token of the batch.

    A_t = r(x, y) - beta * sum_{i=t}^{T} KL(i),  KL(i) = log pi_old(o_i|.) - log pi_ref(o_i|.)
    A_norm = (A_t - mean_batch(A)) / std_batch(A)   (eqs. 8-10, arXiv 2501.03262)
    Shapes: scores (B,), group (B,) unused, mask / ref_logp / behav_logp (B, T) -> (B, T),
    zero on masked tokens. `behav_logp` stands for pi_old (the sampling policy).
    Peers: OpenRLHF (reinforce, init_kl_coef) and verl (reinforce_plus_plus with
    use_kl_in_reward) both whiten over the valid tokens; we do the same (so longer
    completions weigh more in the batch statistics), with gamma = 1 as the paper.
    Convention: kl_coef = 0 gives plain globally-whitened REINFORCE; the k2 KL-loss
    variant of the paper's later versions is the drift term `k2` with kl_coef = 0.
    """
    if mask is None:
        mask = torch.ones_like(ref_logp)
    ret = scores[:, None] * mask - kl_coef * _kl_return(ref_logp, behav_logp, mask)
    return whiten(ret, mask, eps=eps)


@register(
    "advantage",
    "reinforce_pp_baseline",
    paper="REINFORCE++: An Efficient RLHF Algorithm with Robustness to Both Prompt and Reward Models",
    arxiv="2501.03262",
    peers="OpenRLHF advantage_estimator=reinforce_baseline; verl adv_estimator=reinforce_plus_plus_baseline",
)
def reinforce_pp_baseline(scores: Tensor, group: Tensor, *, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """REINFORCE++ w/ baseline: A = r - mean_g(r), then whitened over the whole batch.

    A'_i = r_i - mean_g(r);  A_norm = (A' - mean_batch(A')) / std_batch(A')  (arXiv 2501.03262, sec. 3).
    Shapes: scores (B,), group (B,), mask (B, T) -> (B, T) zero on masked tokens;
    without a mask -> (B,), whitened over sequences.
    Peers: verl and OpenRLHF broadcast A' over tokens and whiten over the valid
    tokens; we follow them when a mask is given. The KL term goes in the loss (the
    paper recommends the k2 estimator: drift `k2`), not in the reward.
    """
    centred = scores - group_mean(scores, group)
    if mask is None:
        return whiten(centred, eps=eps)
    return whiten(centred[:, None] * mask, mask, eps=eps)


@register(
    "advantage",
    "opo",
    paper="On-Policy RL with Optimal Reward Baseline",
    arxiv="2505.23585",
    peers="verl adv_estimator=opo",
)
def opo(scores: Tensor, group: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """OPO: optimal baseline b = sum_g(l_i r_i) / sum_g(l_i), A_i = r_i - b (l_i = completion length).

    arXiv 2505.23585, eq. for b* under ||grad log pi(y)||^2 proportional to l_y.
    Shapes: scores (B,), group (B,), mask (B, T) -> (B,).
    Peers: verl's opo is the same length-weighted group baseline, with no std scaling;
    we agree. Without a mask every length counts as 1 and b is the group mean. A group
    of one sample gets A = 0 (verl uses b = 0 there; we keep the exact baseline r_i).
    The paper pairs this with exact on-policy updates (one gradient step per batch).
    """
    lengths = torch.ones_like(scores) if mask is None else mask.sum(-1).to(scores.dtype)
    base = group_sum(lengths * scores, group) / group_sum(lengths, group).clamp(min=1e-12)
    return scores - base


@register(
    "advantage",
    "gpg",
    paper="GPG: A Simple and Strong Reinforcement Learning Baseline for Model Reasoning",
    arxiv="2504.02546",
    peers="verl adv_estimator=gpg",
)
def gpg(
    scores: Tensor,
    group: Tensor,
    *,
    mask: Tensor | None = None,
    f_norm: float = 1.0,
    scale_by_std: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    """GPG: A_i = alpha * (r_i - mean_g(r)) / F_norm, alpha = B / (B - M) (accurate gradient estimation).

    arXiv 2504.02546, sec. 3: M is the number of samples whose group has all-equal
    rewards (they get zero advantage), so the batch-mean loss is rescaled to the
    valid samples. F_norm = 1 by default; `scale_by_std` uses F_norm = std_g(r) + eps.
    Shapes: scores (B,), group (B,) -> (B,).
    Peers: verl's gpg sets alpha = B / count_nonzero(scores), which counts non-zero
    *rewards*; we follow the paper's M (zero-advantage samples) instead, since that
    is the quantity the paper's bias argument is about.
    """
    centred = scores - group_mean(scores, group)
    degenerate = (group_std(scores, group) == 0).to(scores.dtype)
    b = scores.new_tensor(float(scores.numel()))
    alpha = b / (b - degenerate.sum()).clamp(min=1.0)
    denom = group_std(scores, group) + eps if scale_by_std else f_norm
    return alpha * centred / denom


@register(
    "advantage",
    "gdpo",
    paper="GDPO: Group reward-Decoupled Normalization Policy Optimization for Multi-reward RL Optimization",
    arxiv="2601.05242",
    peers="TRL multi_objective_aggregation='normalize_then_sum'; verl GDPO",
)
def gdpo(
    scores: Tensor,
    group: Tensor,
    *,
    mask: Tensor | None = None,
    reward_components: Tensor,
    weights: tuple[float, ...] | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """GDPO: z-score each reward within its group, weighted sum, then whiten over the batch.

    A_i^k = (r_i^k - mean_g(r^k)) / (std_g(r^k) + eps);  S_i = sum_k w_k A_i^k;
    A_i = (S_i - mean_B(S)) / (std_B(S) + eps)   (arXiv 2601.05242, sec. 3).
    Shapes: reward_components (B, K), group (B,) -> (B,). `scores` (the pre-weighted
    sum) is ignored: GDPO needs the separate components.
    Where the components come from: a reward function that returns a dict
    {name: value} gives K = len(dict) columns in the order the first row returned
    them (the trainer stores them as RolloutBatch.reward_components); a reward that
    returns a number gives K = 1 (scores[:, None]), where GDPO is the group z-score
    followed by batch whitening.
    Peers: TRL and verl follow the same decoupled-then-batch order; std is Bessel-
    corrected as torch.std in both steps, weights default to 1 per component.
    """
    comps = reward_components.to(scores.dtype)
    k = comps.shape[-1]
    if weights is not None and len(weights) != k:
        raise ValueError(f"gdpo weights {tuple(weights)} has {len(weights)} entries but the reward has {k} components "
                         "(one weight per reward component, in the order the reward function returns them)")
    w = comps.new_tensor(weights if weights is not None else [1.0] * k)
    per = torch.stack(
        [(comps[:, j] - group_mean(comps[:, j], group)) / (group_std(comps[:, j], group) + eps) for j in range(k)],
        dim=-1,
    )
    s = (per * w).sum(-1)
    return (s - s.mean()) / (_batch_std(s) + eps)


class SPOTracker:
    """Persistent per-prompt Beta(alpha, beta) success tracker of SPO.

    `ids` (N,) sorted int64 prompt ids; `alpha`, `beta` (N,) float64 parameters.
    """

    def __init__(self) -> None:
        self.ids = torch.zeros(0, dtype=torch.long)
        self.alpha = torch.zeros(0, dtype=torch.float64)
        self.beta = torch.zeros(0, dtype=torch.float64)

    def state_dict(self) -> dict:
        return {"ids": self.ids.clone(), "alpha": self.alpha.clone(), "beta": self.beta.clone()}

    def load_state_dict(self, d: dict) -> None:
        self.ids, self.alpha, self.beta = d["ids"].clone(), d["alpha"].clone(), d["beta"].clone()

    def lookup(self, prompt_ids: Tensor, prior_a: float, prior_b: float) -> Tensor:
        """Insert unseen prompts with the prior; return each sample's row in the tables."""
        ids = torch.unique(torch.cat([self.ids, prompt_ids.to("cpu", torch.long)]))
        old_rows = torch.searchsorted(ids, self.ids)
        alpha = torch.full(ids.shape, prior_a, dtype=torch.float64)
        beta = torch.full(ids.shape, prior_b, dtype=torch.float64)
        alpha[old_rows], beta[old_rows] = self.alpha, self.beta
        self.ids, self.alpha, self.beta = ids, alpha, beta
        return torch.searchsorted(ids, prompt_ids.to("cpu", torch.long))


@register(
    "advantage",
    "spo",
    paper="Single-stream Policy Optimization",
    arxiv="2509.13232",
    peers="verl recipe/spo (the authors' implementation)",
    state=SPOTracker,
    success_reward=True,
)
def spo(
    scores: Tensor,
    group: Tensor,
    *,
    mask: Tensor | None = None,
    prompt_ids: Tensor,
    state: SPOTracker,
    rho: float = 0.96,
    prior_value: float = 0.5,
    prior_count: float = 1.0,
    eps: float = 1e-8,
) -> Tensor:
    """SPO: A = r - v_hat(x) from a persistent per-prompt Beta tracker, whitened over the batch; no groups.

    v_hat(x) = alpha(x) / (alpha(x) + beta(x)), read *before* this batch's update;
    A_i = r_i - v_hat(x_i);  A_norm = (A - mean_B(A)) / (std_B(A) + eps), std Bessel-corrected;
    then, for every prompt x in the batch, alpha <- rho * alpha + r, beta <- rho * beta + (1 - r).
    Paper: "Single-stream Policy Optimization", arXiv 2509.13232 (Xu & Ding).
    Source status: verified against the authors' implementation in verl,
    verl-project/verl-recipe spo/spo_ray_trainer.py (RayPPOTrainer.fit: p_hats = alpha/(alpha+beta),
    advantages = r - p_hats, (adv - mean)/(adv.std() + 1e-8); after the actor update
    alpha = rho*alpha + r, beta = rho*beta + (1 - r); _get_spo_rho for rho) and
    volcengine/verl recipe/spo/run_spo.sh (rho.type=kl, rho.clip_lower=0.875). The
    paper's text (method section) was NOT reachable, so no equation number is cited.
    Forgetting rule of the authors (not applied here, see Choices): rho(x) =
    clip(2^(-D(x)/D_half), rho_min, rho_max), D_half = 0.06, rho_min = 0.875,
    rho_max = 0.96, where D(x) is the mean over tokens of |log pi(y) - log pi'(y)| on the
    response y of x's previous visit, pi' the policy right after that visit's update and
    pi the policy after the current step's update (D = 0, so rho = 0.96, on a prompt's
    first visit).
    Shapes: scores (B,) rewards in [0, 1] (success indicators), prompt_ids (B,) ->
    (B,); `group` is ignored. Updates `state` in place.
    Choices: rho is a fixed constant: the KL-adaptive rule needs, per prompt, the
    log-probs of its previous response under the current policy, which no batch input
    carries; the default 0.96 is rho_max, the rule's value at D = 0 (always the value on
    a first visit). Unseen prompts start from Beta(prior_count*v0, prior_count*(1 - v0)),
    v0 = prior_value; the defaults give Beta(0.5, 0.5), the authors' start without
    offline estimates (their offline start, N_init = 1/(1 - rho_min) pseudo-counts,
    can be loaded through `state.load_state_dict`). eps = 1e-8 as in the authors' code.
    Several samples of one prompt in a batch (the authors run one response per prompt
    and draw a prompt twice only when the batch outnumbers the pool) all read the same
    v_hat and are added in one update with a single discount: alpha <- rho * alpha +
    sum r; the authors' code would keep only the last sample's update.
    """
    rows = state.lookup(prompt_ids, prior_count * prior_value, prior_count * (1.0 - prior_value))
    v_hat = (state.alpha / (state.alpha + state.beta))[rows].to(scores.device, scores.dtype)
    r = scores.detach().to("cpu", torch.float64)
    n = state.ids.numel()
    hits = torch.zeros(n, dtype=torch.float64).index_add_(0, rows, torch.ones_like(r))
    seen = hits > 0
    state.alpha = torch.where(seen, rho * state.alpha, state.alpha).index_add_(0, rows, r)
    state.beta = torch.where(seen, rho * state.beta, state.beta).index_add_(0, rows, 1.0 - r)
    adv = scores - v_hat
    return (adv - adv.mean()) / (_batch_std(adv) + eps)


@register(
    "advantage",
    "copo",
    paper="COPO: Consistency-Aware Policy Optimization",
    arxiv="2508.04138",
    peers="none of TRL / verl / OpenRLHF / Trinity-RFT (authors' code: hijih/copo-code)",
    choices={"gate": ("zero", "forced", "none")},
    success_reward=True,
)
def copo(
    scores: Tensor,
    group: Tensor,
    *,
    mask: Tensor | None = None,
    answers: list[str],
    k: float = 5.0,
    b: float = 1.0,
    gate: str = "zero",
    consistency_coef: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    """COPO: blend the local GRPO advantage with a batch-global consistency advantage by answer entropy.

    A_loc = (r - mean_g) / (std_g + eps);  H_g = entropy (bits) of the group's answer distribution;
    R_g = mean_g(r) * c_g, c_g = 1 - lambda_G H_g with lambda_G = (1 - 1/G) / log2 G if
    `consistency_coef` else 1;  A_glob = (R_g - mean_prompts(R)) / (std_prompts(R) + eps);
    w_i = sigmoid(k (H_g - b)) * gate_i;  A_i = w_i A_loc,i + (1 - w_i) A_glob,g.
    gate_i: "zero" = 1[r_i != 0] (a wrong sample learns only from the global term),
    "forced" = 1[A_loc,i != 0] (a group whose rewards are all equal learns only from
    the global term), "none" = 1.
    Source: the authors' code, hijih/copo-code verl/trainer/ppo/core_algos.py
    (compute_score_global, compute_grpo_outcome_advantage_with_global,
    compute_policy_loss_with_global) and verl/run_copo.sh (global_flg soft-with-zero,
    k = 5, b = 1, reward_coef_flg false), whose values are our defaults; the paper's
    method section (arXiv 2508.04138) was not reachable, so equation numbers are not cited.
    Shapes: scores (B,), group (B,), answers list[str] of length B -> (B,).
    Choices: answers are clustered by exact string match (the authors count extracted
    answer strings); std is Bessel-corrected as torch.std in both places. The authors
    blend the two clipped PPO *losses* with w; blending the advantages is the same
    objective wherever the ratio is inside the clip range (always on-policy).
    """
    if gate not in ("zero", "forced", "none"):
        raise ValueError(f"copo gate must be 'zero', 'forced' or 'none', got {gate!r}")
    a_loc = (scores - group_mean(scores, group)) / (group_std(scores, group) + eps)
    ent = _answer_entropy_bits(answers, group).to(scores.dtype)
    n = group_sum(torch.ones_like(scores), group)
    ret = group_mean(scores, group)
    if consistency_coef:
        lam = torch.where(n > 1, (1 - 1 / n) / torch.log2(n.clamp(min=2.0)), torch.zeros_like(n))
        ret = ret * (1 - lam * ent)
    per_prompt, ids = per_group_mean(ret, group)
    glob = (per_prompt - per_prompt.mean()) / (_batch_std(per_prompt) + eps)
    w = torch.sigmoid(k * (ent - b))
    if gate == "zero":
        w = w * (scores != 0).to(w.dtype)
    elif gate == "forced":
        w = w * (a_loc != 0).to(w.dtype)
    return w * a_loc + (1 - w) * glob[ids]


def _answer_entropy_bits(answers: list[str], group: Tensor) -> Tensor:
    """Shannon entropy (base 2) of the exact-match answer distribution of each sample's group, (B,)."""
    gid, _ = group_ids(group)
    table: dict[str, int] = {}
    aid = torch.tensor([table.setdefault(a, len(table)) for a in answers], dtype=torch.long, device=group.device)
    _, cluster, counts = torch.unique(gid * max(len(table), 1) + aid, return_inverse=True, return_counts=True)
    n = torch.zeros(int(gid.max()) + 1, dtype=torch.float64, device=group.device).index_add_(
        0, gid, torch.ones(gid.shape, dtype=torch.float64, device=group.device))[gid]
    q = counts[cluster].to(torch.float64) / n
    # each sample contributes -(1/n) log2 q of its cluster: summed over the group this is -sum_c q_c log2 q_c
    h = group_sum(-torch.log2(q) / n, group)
    return h
