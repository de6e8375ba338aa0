"""Ratio-based policy losses: CPGD, BAPO, GSPO, GMPO, CISPO, SAPO, TIS.

Contract as in losses.py: `fn(logp, old_logp, adv, mask, **hyper) -> (per_token_loss, metrics)`,
`per_token_loss` (B, T) zero where `mask` is zero, metrics detached 0-d tensors.
Sequence-level objectives (GSPO, GMPO) give every token of sequence i the value of
that sequence's loss L_i, so the `seq_mean_token_mean` aggregation returns
(1/G) sum_i L_i, the papers' objective, with the papers' gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from policyforge.algos.losses import ppo_clip, ratio_metrics, token_adv
from policyforge.algos.masked import masked_mean, masked_sum
from policyforge.algos.registry import register


def _frac(cond: Tensor, mask: Tensor) -> Tensor:
    return masked_mean(cond.to(mask.dtype), mask).detach()


@register("loss", "cpgd", paper="CPGD: Toward Stable Rule-based Reinforcement Learning for Language Models",
          arxiv="2505.12504", peers="siiRL (core_algos.compute_policy_loss_cpgd + dp_actor policy drift); LightRFT "
          "PolicyLoss(use_cpg_loss); MM-EUREKA --use_cpg_loss/--use_policy_drift; not in TRL / verl / OpenRLHF")
def cpgd(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, eps_low: float = 0.2,
         eps_high: float = 0.2, drift_coef: float = 0.01,
         drift_clip: float | None = 2.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped log-ratio policy gradient plus a clipped policy-drift KL(pi_old || pi) penalty.

    Formula (per token, l = logp - old_logp, r = exp(l), A the advantage, alpha = `drift_coef`,
    c = `drift_clip`):
        L = -min(l * A, clip(l, ln(1 - eps_low), ln(1 + eps_high)) * A) + alpha * D_c(l)
        D_c(l) = r - 1 - l                                   if r - 1 <= c
               = c - ln(1 + c) + c * (l - ln(1 + c))         otherwise
    D_c is Schulman's k3 estimate of KL(pi_old || pi) on tokens drawn from pi_old, continued
    linearly in l once r > 1 + c, so that its gradient is alpha * min(r - 1, c) * grad logp.
    CPGD, "CPGD: Toward Stable Rule-based Reinforcement Learning for Language Models",
    arXiv 2505.12504: the surrogate is the policy-gradient objective ln pi * A with the
    *logarithm* of the ratio clipped (the ratio itself never multiplies the gradient), and a
    policy-drift term KL(pi_old || pi_theta) is subtracted from the objective.
    Choices: the min/clip form above differs from the peers' -A * clipped(logp) only by the
    constant -A * old_logp, so the gradient is identical (A > 0: logp capped at
    old_logp + ln(1 + eps_high); A < 0: floored at old_logp + ln(1 - eps_low)). The drift clip
    c = 2.0 (ratio weight min(r - 1, 2)) is siiRL's; c=None gives the plain k3 gradient
    alpha * (r - 1). alpha = 0.01 is the default the CPGD-version MM-EUREKA README states for
    --policy_drift_coef (siiRL's example scripts use 0.001). eps = 0.2 symmetric as the peers.
    Source status: the paper's method section was NOT reachable (only its abstract, which
    confirms the log-ratio clip and a KL-based drift term); no equation numbers are claimed.
    Surrogate checked against sii-research/siiRL siirl/dag_worker/core_algos.py
    (compute_policy_loss_cpgd) and LightRFT's PolicyLoss(use_cpg_loss=True) (same clip);
    drift term checked against siiRL siirl/engine/actor/dp_actor.py (update_policy:
    clamp(r - 1, max=2.0) * logp with the ratio detached). MM-EUREKA's own drift code (its
    --policy_drift_clip_eps, default 0.2) was not in the stored index and is unconfirmed.
    Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T) -> loss (B, T).
    On-policy (old_logp == logp) the drift gradient alpha * min(0, c) vanishes and the
    gradient is REINFORCE's, -A grad logp. Aggregate with token_mean as the peers do.
    """
    a = token_adv(adv, mask)
    log_ratio = logp - old_logp
    lo, hi = math.log(1.0 - eps_low), math.log(1.0 + eps_high)
    surrogate = torch.minimum(log_ratio * a, log_ratio.clamp(lo, hi) * a)
    if drift_clip is None:
        drift = torch.exp(log_ratio) - 1.0 - log_ratio
    else:
        l_c = math.log1p(drift_clip)
        l_in = log_ratio.clamp(max=l_c)  # k3 below the clip, linear in l above it
        drift = torch.exp(l_in) - 1.0 - l_in + drift_clip * (log_ratio - l_in)
    loss = (-surrogate + drift_coef * drift) * mask
    with torch.no_grad():
        ratio = torch.exp(log_ratio)
        metrics = {"clip_frac_low": _frac((log_ratio < lo) & (a < 0), mask),
                   "clip_frac_high": _frac((log_ratio > hi) & (a > 0), mask),
                   "policy_drift": masked_mean(drift, mask)}
        if drift_clip is not None:
            metrics["drift_clip_frac"] = _frac(ratio - 1.0 > drift_clip, mask)
        metrics.update(ratio_metrics(ratio, mask))
    return loss, metrics


cpgd.zero_adv_exempt = "CPGD's policy-drift term alpha*KL(pi_old||pi) pulls toward pi_old whatever the advantage"


class BapoState:
    """Clip bounds BAPO chose for the optimiser step `step` (0-d tensors; None before the first call).

    The bounds are searched once per optimiser step, on the first call that carries a new
    `step`, and reused by every later micro-batch of that step, so one update optimises
    one objective. With `step=None` they are searched again on every call.
    """

    def __init__(self) -> None:
        self.step: int | None = None
        self.c_low: Tensor | None = None
        self.c_high: Tensor | None = None
        self.pos_frac: Tensor | None = None

    def state_dict(self) -> dict:
        f = lambda t: None if t is None else float(t)  # noqa: E731
        return {"step": self.step, "c_low": f(self.c_low), "c_high": f(self.c_high), "pos_frac": f(self.pos_frac)}

    def load_state_dict(self, d: dict) -> None:
        t = lambda v: None if v is None else torch.tensor(float(v), dtype=torch.float64)  # noqa: E731
        self.step, self.c_low, self.c_high, self.pos_frac = d["step"], t(d["c_low"]), t(d["c_high"]), t(d["pos_frac"])


def _bapo_grid(start: float, stop: float, step: float) -> list[float]:
    """start, start + step, ... up to `stop`; the last move is capped at `stop` (authors' recipe)."""
    grid = [start]
    while step > 0 and grid[-1] < stop - 1e-12:
        grid.append(min(grid[-1] + step, stop))
    return grid


def _bapo_bounds(ratio: Tensor, a: Tensor, mask: Tensor, low: tuple, high: tuple, target: float):
    """BAPO Alg. 1: from (c_low, c_high) = (a-, a+), raise c_high by delta_1 up to b+, then c_low
    by delta_2 up to b-, stopping at the first pair whose positive share rho reaches `target`.

    rho = sum_{A>0} A min(r, c_high) / (sum_{A>0} A min(r, c_high) + sum_{A<0} |A| max(r, c_low)),
    the |min(r A, clip(r, ., c_high) A)| magnitudes of the paper's condition summed over the
    sampled tokens. Returns (c_low, c_high, rho) as 0-d tensors; no host sync."""
    (lo0, lo1, dlo), (hi0, hi1, dhi) = low, high
    his, los = _bapo_grid(hi0, hi1, dhi), _bapo_grid(lo0, lo1, dlo)
    cands = [(lo0, h) for h in his] + [(lo, his[-1]) for lo in los[1:]]
    r, pos_a, neg_a = ratio.detach(), a.clamp(min=0) * mask, (-a).clamp(min=0) * mask
    frac = []
    for c_lo, c_hi in cands:
        pos = (torch.clamp(r, max=c_hi) * pos_a).sum()
        neg = (torch.clamp(r, min=c_lo) * neg_a).sum()
        frac.append(torch.where(pos + neg > 0, pos / (pos + neg).clamp(min=1e-30), torch.ones_like(pos)))
    frac_t = torch.stack(frac)
    ok = frac_t >= target
    idx = torch.where(ok.any(), ok.long().argmax(), torch.tensor(len(cands) - 1, device=r.device))
    c_lo_t = r.new_tensor([c[0] for c in cands])
    c_hi_t = r.new_tensor([c[1] for c in cands])
    return c_lo_t[idx], c_hi_t[idx], frac_t[idx]


@register("loss", "bapo", paper="BAPO: Stabilizing Off-Policy Reinforcement Learning for LLMs via Balanced "
          "Policy Optimization with Adaptive Clipping", arxiv="2510.18927",
          peers="authors' verl recipe (WooooDyy/BAPO recipe/bapo/policy_loss.py)", state=BapoState)
def bapo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, state: BapoState | None = None,
         step: int | None = None, target: float = 0.4, low_start: float = 0.6, low_max: float = 0.9,
         low_step: float = 0.02, high_start: float = 1.2, high_max: float = 3.0,
         high_step: float = 0.05) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO surrogate with adaptive asymmetric bounds that balance positive and negative tokens.

    Formula (per token, r = exp(logp - old_logp)):
        L = -min(r A, clip(r, c_low, c_high) A)
    with c_low / c_high explicit ratio bounds chosen once per update (Algorithm 1): start at
    (a-, a+) = (`low_start`, `high_start`); while rho < rho_0: if c_high < b+ raise c_high by
    delta_1 (`high_step`, capped at b+ = `high_max`), else raise c_low by delta_2 (`low_step`,
    capped at b- = `low_max`); stop when both are at their maxima. rho is the positive tokens'
    share of the clipped-surrogate magnitude:
        rho = sum_{A>0} |min(r A, clip(r, 0, c_high) A)|
              / sum_{all} |min(r A, clip(r, c_low, c_high) A)|
            = sum_{A>0} A min(r, c_high) / (sum_{A>0} A min(r, c_high) + sum_{A<0} |A| max(r, c_low)).
    BAPO, "BAPO: Stabilizing Off-Policy Reinforcement Learning for LLMs via Balanced Policy
    Optimization with Adaptive Clipping", arXiv 2510.18927.
    Defaults are the paper's (untuned) settings: rho_0 = 0.4, [a-, b-] = [0.6, 0.9],
    [a+, b+] = [1.2, 3.0], delta_1 = 0.05, delta_2 = 0.02. The authors' README says rho_0 = 0.5.
    Choices: the paper writes the sums with a pi_rollout(y_t) weight (its expectation over
    tokens); on sampled tokens that weight is the sampling itself, so we sum the sampled
    tokens unweighted, as the authors' recipe does. The recipe differs from Alg. 1: it moves
    c_low first, then c_high, tests a pos/neg *ratio* (not the share rho), and adds a dual-clip
    (c = 3) on negatives; we follow Alg. 1 and keep no dual clip. Under this rho, raising
    c_low never raises rho (max(r, c_low) only grows); it filters more low-probability
    negative tokens out of the gradient, which is why Alg. 1 moves it only after c_high.
    Source status: the paper PDF (WooooDyy/BAPO paper.pdf) is not readable here, and no
    equation numbers are claimed. Alg. 1's order (c_high first, then c_low), the rho
    condition and the defaults above are from two independent public readings of the paper
    (which agree; one also cross-checks the recipe), not from the paper text itself; the
    surrogate, the |clipped surrogate| contribution and the capped steps were checked
    against WooooDyy/BAPO recipe/bapo/policy_loss.py and README.md.
    State: see BapoState. Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T) -> loss (B, T).
    On-policy r = 1 lies inside [c_low, c_high] (c_low <= b- < 1 < a+), so the gradient is
    REINFORCE's. Scope of the search: it runs once per RL step (`step`), on the first call, i.e.
    the first micro-batch of the first update, where r = 1 (so rho reflects the advantage signs
    only), and its bounds serve every micro-batch and update of that step. With micro-batches
    smaller than the batch they depend on the samples in that first one (the authors' verl
    recipe searches per micro-batch); set optim.micro_batch_size to the batch for Alg. 1's
    whole-batch bounds.
    """
    state = state if state is not None else BapoState()
    a = token_adv(adv, mask)
    ratio = torch.exp(logp - old_logp)
    if step is None or state.step != step or state.c_low is None:
        bounds = _bapo_bounds(ratio, a, mask, (low_start, low_max, low_step), (high_start, high_max, high_step), target)
        state.step, (state.c_low, state.c_high, state.pos_frac) = step, bounds
    c_lo, c_hi = state.c_low.to(ratio), state.c_high.to(ratio)
    clipped = torch.minimum(torch.maximum(ratio, c_lo), c_hi)
    loss = -torch.minimum(ratio * a, clipped * a) * mask
    with torch.no_grad():
        metrics = {"clip_frac_low": _frac((ratio < c_lo) & (a < 0), mask),
                   "clip_frac_high": _frac((ratio > c_hi) & (a > 0), mask),
                   "bapo_c_low": c_lo.detach(), "bapo_c_high": c_hi.detach(), "bapo_pos_frac": state.pos_frac.detach()}
        metrics.update(ratio_metrics(ratio, mask))
    return loss, metrics


@register("loss", "gspo", paper="Group Sequence Policy Optimization", arxiv="2507.18071",
          peers="verl policy_loss=gspo; TRL importance_sampling_level=sequence; Trinity-RFT gspo",
          zero_adv_inert=True, aggregation="seq_mean_token_mean")
def gspo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, eps_low: float = 3e-4,
         eps_high: float = 4e-4) -> tuple[Tensor, dict[str, Tensor]]:
    """Sequence-level clipped surrogate on s_i = exp(mean_t ln(pi / pi_old)).

    L_i = -min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i) (GSPO eq. 5-7), written in
    the GSPO-token form (eq. 13-14): s_it = sg[s_i] * pi(y_it) / sg[pi(y_it)], whose value is
    s_i and whose gradient is s_i grad ln pi(y_it). Every token of sequence i carries L_i
    (with a (B,) advantage); `seq_mean_token_mean` then gives (1/G) sum_i L_i and exactly
    GSPO's gradient; a (B, T) advantage gives GSPO-token. Bounds 3e-4 / 4e-4 as in the paper.
    Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T) -> loss (B, T).
    On-policy (s = 1) each token's gradient is -A grad logp: REINFORCE's, averaged per
    sequence under seq_mean_token_mean. Peers (verl, TRL, Trinity) use the same token form.
    """
    a = token_adv(adv, mask)
    seq_log_ratio = masked_mean(logp - old_logp, mask, dim=-1).unsqueeze(-1)
    s = torch.exp(logp - logp.detach() + seq_log_ratio.detach())
    loss = -torch.minimum(s * a, s.clamp(1.0 - eps_low, 1.0 + eps_high) * a) * mask
    with torch.no_grad():
        metrics = {"clip_frac_low": _frac((s < 1.0 - eps_low) & (a < 0), mask),
                   "clip_frac_high": _frac((s > 1.0 + eps_high) & (a > 0), mask)}
        metrics.update(ratio_metrics(s, mask))
    return loss, metrics


@register("loss", "gmpo", paper="GMPO: Geometric-Mean Policy Optimization", arxiv="2507.20673",
          peers="verl policy_loss=geo_mean; callsys/GMPO", zero_adv_inert=True, aggregation="seq_mean_token_mean")
def gmpo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, eps_low: float = 0.4,
         eps_high: float = 0.4) -> tuple[Tensor, dict[str, Tensor]]:
    """Geometric mean of token-level clipped surrogates, clipped in log space.

    L_i = -A_i exp((1/|o_i|) sum_t sgn(A_i) min(sgn(A_i) ln r_it, sgn(A_i) clip(ln r_it,
    -eps_low, eps_high))), which equals -sgn(A_i) (prod_t |min(r A, clip(r, e^-eps_low,
    e^eps_high) A)|)^(1/|o_i|) (GMPO eq. 4, clip range (e^-0.4, e^0.4) as in the paper).
    GMPO uses a sequence advantage; a (B, T) advantage is averaged over the sequence (as verl).
    Every token of sequence i carries L_i, so `seq_mean_token_mean` gives (1/G) sum_i L_i.
    Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T) -> loss (B, T).
    On-policy the gradient of L_i is -A_i (1/|o_i|) sum_t grad logp: REINFORCE's under
    seq_mean_token_mean. Peers: verl geo_mean (same log-space clip), the authors' code.
    """
    a = masked_mean(token_adv(adv, mask), mask, dim=-1)
    sgn = torch.sign(a).unsqueeze(-1)
    log_ratio = logp - old_logp
    log_clip = log_ratio.clamp(-eps_low, eps_high)
    kept = sgn * torch.minimum(sgn * log_ratio, sgn * log_clip)
    seq_loss = -a * torch.exp(masked_mean(kept, mask, dim=-1))
    loss = seq_loss.unsqueeze(-1) * mask
    with torch.no_grad():
        metrics = {"clip_frac_low": _frac((log_ratio < -eps_low) & (sgn < 0), mask),
                   "clip_frac_high": _frac((log_ratio > eps_high) & (sgn > 0), mask)}
        metrics.update(ratio_metrics(torch.exp(log_ratio), mask))
    return loss, metrics


@register("loss", "cispo", paper="MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning Attention",
          arxiv="2506.13585", peers="verl policy_loss=cispo (clip_ratio_low/high); TRL loss_type=cispo; "
          "Trinity-RFT cispo (clip_range_low=1.0, clip_range_high=0.28)", zero_adv_inert=True)
def cispo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, eps_low: float = 1.0,
          eps_high: float = 0.28, mask_eps_low: float | None = None,
          mask_eps_high: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """REINFORCE weighted by the stop-gradient clipped ratio: every token keeps its gradient.

    L = -sg(clip(r, 1 - eps_low, 1 + eps_high)) * A * logp * M (MiniMax-M1 eq. 4-5, unified
    form eq. 6-7), M = 0 where A > 0 and r > 1 + mask_eps_high or A < 0 and r < 1 - mask_eps_low
    (each None = no mask, plain CISPO). Peers disagree on the default lower bound: verl uses
    its PPO clip_ratio_low (0.2); we follow the paper, which imposes no lower bound ("set
    eps_low to a large value"), hence eps_low = 1.0 (bound 0, as Trinity-RFT); eps_high =
    0.28 as Trinity-RFT (the paper tunes only the upper bound). Normalise with token_mean.
    Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T) -> loss (B, T).
    On-policy (r = 1) the loss is -A logp: exactly REINFORCE.
    """
    a = token_adv(adv, mask)
    ratio = torch.exp(logp - old_logp).detach()
    weight = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    keep = torch.ones_like(ratio, dtype=torch.bool)
    if mask_eps_high is not None:
        keep &= ~((a > 0) & (ratio > 1.0 + mask_eps_high))
    if mask_eps_low is not None:
        keep &= ~((a < 0) & (ratio < 1.0 - mask_eps_low))
    loss = -weight * a * logp * keep.to(logp.dtype) * mask
    metrics = {"clip_frac_low": _frac(ratio < 1.0 - eps_low, mask),
               "clip_frac_high": _frac(ratio > 1.0 + eps_high, mask),
               "masked_frac": _frac(~keep, mask)}
    metrics.update(ratio_metrics(ratio, mask))
    return loss, metrics


@register("loss", "sapo", paper="Soft Adaptive Policy Optimization", arxiv="2511.20347",
          peers="verl policy_loss=sapo (tau_pos, tau_neg); Trinity-RFT sapo", zero_adv_inert=True,
          aggregation="seq_mean_token_mean")
def sapo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, tau_pos: float = 1.0,
         tau_neg: float = 1.05) -> tuple[Tensor, dict[str, Tensor]]:
    """Soft sigmoid gate in place of the hard clip, temperature chosen by the sign of A.

    L = -f(r) A, f(r) = (4 / tau) sigmoid(tau (r - 1)), tau = tau_pos if A > 0 else tau_neg
    (SAPO eq. 5-6; defaults 1.0 / 1.05 as in the paper and verl). The gradient is
    -4 sigmoid (1 - sigmoid) r A grad logp: a weight that is 1 at r = 1 and decays smoothly
    away from it (reported as `soft_gate_mean`). The paper averages per sequence, then over
    the group: aggregate with seq_mean_token_mean. No hard clip, so no clip fractions.
    Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T) -> loss (B, T).
    On-policy (r = 1) the gradient is REINFORCE's, -A grad logp.
    """
    a = token_adv(adv, mask)
    ratio = torch.exp(logp - old_logp)
    tau = torch.where(a > 0, torch.full_like(a, tau_pos), torch.full_like(a, tau_neg))
    sig = torch.sigmoid(tau * (ratio - 1.0))
    loss = -(4.0 / tau) * sig * a * mask
    with torch.no_grad():
        metrics = {"soft_gate_mean": masked_mean(4.0 * sig * (1.0 - sig) * ratio, mask)}
        metrics.update(ratio_metrics(ratio, mask))
    return loss, metrics


@register("loss", "tis", paper="Your Efficient RL Framework Secretly Brings You Off-Policy RL Training (TIS; "
          "blog post, Yao et al. 2025); IcePop masking from the Ring-1T report (Every Step Evolves: Scaling "
          "Reinforcement Learning for Trillion-Scale Thinking Model)", arxiv="",
          peers="verl rollout_is (token / sequence, threshold 2.0) and icepop masking; TRL vllm_importance_sampling_cap",
          choices={"level": ("token", "sequence")}, zero_adv_inert=True)
def tis(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, behav_logp: Tensor, cap: float = 2.0,
        level: str = "token", icepop: bool = False, icepop_low: float = 0.5, icepop_high: float = 5.0,
        eps_low: float = 0.2, eps_high: float = 0.2) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO-clip corrected for the sampler-vs-trainer mismatch by a truncated importance weight.

    L = w * L_ppo_clip, w = sg(min(rho, C)), rho = pi_trainer(y; theta_old) / pi_sampler(y;
    theta_old) = exp(old_logp - behav_logp) per token (`level="token"`) or its product over
    the sequence (`"sequence"`), C = `cap` (2 in the TIS post). `icepop=True` replaces the
    truncation by IcePop's mask: w = rho if icepop_low <= rho <= icepop_high else 0.
    Shapes: logp, old_logp, behav_logp, mask (B, T); adv (B,) or (B, T) -> loss (B, T).
    On-policy with a matching sampler (behav_logp == old_logp == logp) w = 1 and the
    gradient is REINFORCE's. Peers: verl rollout-correction (same token/sequence weights).
    behav_logp is the sampler's log-prob under the temperature-scaled distribution before
    top-p / top-k filtering (verl's raw log-probs), so w corrects numeric mismatch, not the
    truncation: with filtering the tokens come from a renormalised subset w does not see.
    """
    if level not in ("token", "sequence"):
        raise ValueError(f"tis level must be 'token' or 'sequence', got {level!r}")
    loss, metrics = ppo_clip(logp, old_logp, adv, mask, eps_low=eps_low, eps_high=eps_high)
    log_rho = (old_logp - behav_logp).detach()
    if level == "sequence":
        log_rho = masked_sum(log_rho, mask, dim=-1).unsqueeze(-1).expand_as(mask)
    if icepop:
        lo, hi = math.log(icepop_low), math.log(icepop_high)
        kept = (log_rho >= lo) & (log_rho <= hi)
        weight = torch.where(kept, torch.exp(log_rho.clamp(max=hi)), torch.zeros_like(log_rho))
        metrics["icepop_frac_masked"] = _frac(~kept, mask)
    else:
        weight = torch.exp(log_rho.clamp(max=math.log(cap)))
        metrics["tis_frac_truncated"] = _frac(log_rho > math.log(cap), mask)
    metrics["tis_weight_mean"] = masked_mean(weight, mask)
    return loss * weight * mask, metrics
