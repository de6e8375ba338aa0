"""Policy losses that control entropy: Clip-Cov, KL-Cov, Lp-Reg, AEPO.

Contract as in losses.py: `fn(logp, old_logp, adv, mask, **hyper) -> (per_token_loss, metrics)`.
Token selections (covariance ranks, percentiles) are made over the tokens of one
call: pass the whole mini-batch in one call to get the papers' batch-level selection.
"""

from __future__ import annotations

import torch
from torch import Tensor

from policyforge.algos.drift_vocab import StepMean
from policyforge.algos.losses import clipped_surrogate, ratio_metrics, token_adv
from policyforge.algos.masked import masked_mean
from policyforge.algos.registry import register

_ENTROPY_PAPER = "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models"


def token_covariance(logp: Tensor, a: Tensor, mask: Tensor) -> Tensor:
    """Cov_i = (log pi(y_i) - mean log pi) * (A_i - mean A), means over real tokens (detached)."""
    lp = logp.detach()
    return (lp - masked_mean(lp, mask)) * (a - masked_mean(a, mask))


@register("loss", "clip_cov", paper=_ENTROPY_PAPER, arxiv="2505.22617",
          peers="verl policy_loss=clip_cov (clip_cov_ratio, clip_cov_lb, clip_cov_ub); SkyRL clip_cov")
def clip_cov(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    step: int | None = None,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    clip_frac: float = 2e-4,
    cov_low: float = 1.0,
    cov_high: float = 5.0,
    seed: int = 0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clip-Cov: PPO-clip surrogate, with gradients stopped on a few random high-covariance tokens.

    Cov_i = (log pi(y_i) - mean log pi)(A_i - mean A) (arXiv 2505.22617, eq. 12);
    I = max(1, floor(clip_frac * N)) tokens drawn uniformly from {i : cov_low < Cov_i <
    cov_high}; L_i = 0 (no gradient) for i in I, else max(-r A, -clip(r) A).
    Paper defaults r = 2e-4, omega_low = 1, omega_high = 5. As verl (from the
    authors' code), tokens already clipped by PPO are not eligible. The draw uses a
    torch.Generator seeded with seed + step, so it is deterministic.
    Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T) -> loss (B, T).
    On-policy and with nothing selected, the gradient is REINFORCE's, -A grad logp.
    """
    a = token_adv(adv, mask)
    ratio = torch.exp(logp - old_logp)
    loss, clipped = clipped_surrogate(ratio, a, eps_low, eps_high)
    cov = token_covariance(logp, a, mask)
    eligible = (mask > 0) & ~clipped.detach() & (cov > cov_low) & (cov < cov_high)
    n = max(int(clip_frac * float(mask.sum())), 1)
    g = torch.Generator().manual_seed(seed + (step or 0))
    score = torch.rand(mask.shape, generator=g).to(mask.device)
    score = torch.where(eligible, score, score.new_full((), -1.0)).flatten()
    chosen = torch.zeros_like(score, dtype=torch.bool)
    top = score.topk(min(n, score.numel())).indices
    chosen[top] = score[top] >= 0
    chosen = chosen.view_as(mask)
    loss = torch.where(chosen, torch.zeros_like(loss), loss)
    with torch.no_grad():
        metrics = {"cov_clip_frac": masked_mean(chosen.to(logp.dtype), mask),
                   "clip_frac": masked_mean(clipped.to(logp.dtype), mask)}
        metrics.update(ratio_metrics(ratio, mask))
    return loss * mask, metrics


@register("loss", "kl_cov", paper=_ENTROPY_PAPER, arxiv="2505.22617",
          peers="verl policy_loss=kl_cov (kl_cov_ratio, ppo_kl_coef; penalty |log r|); SkyRL kl_cov")
def kl_cov(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    kl_frac: float = 2e-3,
    kl_coef: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """KL-Cov: unclipped surrogate plus a KL penalty on the top-covariance tokens.

    L_i = -r_i A_i + kl_coef * 1[i in I] * |log pi(y_i) - log pi_old(y_i)|, with I the
    max(1, floor(kl_frac * N)) tokens of largest Cov_i (arXiv 2505.22617, eq. 13; paper
    k = 2e-3 or 2e-4, beta = 1). The KL(pi_old || pi) of the paper is estimated, as
    in the authors' code and verl, by the absolute log ratio. Our choice: only tokens
    with Cov_i > 0 may be selected (the top tokens have positive covariance in
    practice; with A = 0 everywhere nothing is "high-covariance", so no penalty).
    Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T) -> loss (B, T).
    On-policy the penalty's gradient is that of |0|, i.e. the loss is REINFORCE's.
    """
    a = token_adv(adv, mask)
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    cov = token_covariance(logp, a, mask)
    on = (mask > 0) & (cov > 0)
    n = max(int(kl_frac * float(mask.sum())), 1)
    flat = torch.where(on, cov, cov.new_full((), -float("inf"))).flatten()
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    top = flat.topk(min(n, flat.numel())).indices
    chosen[top] = torch.isfinite(flat[top])
    chosen = chosen.view_as(mask)
    loss = -a * ratio + kl_coef * chosen.to(logp.dtype) * log_ratio.abs()
    with torch.no_grad():
        metrics = {"kl_cov_frac": masked_mean(chosen.to(logp.dtype), mask)}
        metrics.update(ratio_metrics(ratio, mask))
    return loss * mask, metrics


def proxy_logp(logp: Tensor, logits: Tensor, min_p: float, tau: float | None) -> Tensor:
    """log pi_proxy(y_t): pi(y_t) / Z if pi(y_t) > threshold else -inf (detached).

    threshold = tau if given, else min_p * max_v pi(v); Z = mass of the kept tokens.
    """
    probs = torch.softmax(logits.detach().float(), -1)
    thr = probs.amax(-1) * min_p if tau is None else torch.full_like(probs[..., 0], tau)
    kept_mass = (probs * (probs > thr[..., None])).sum(-1)
    lp = logp.detach().float()
    keep = lp.exp() > thr
    out = torch.where(keep, lp - kept_mass.clamp(min=1e-30).log(), lp.new_full((), -float("inf")))
    return out.to(logp.dtype)


@register("loss", "lp_reg",
          paper="Low-probability Tokens Sustain Exploration in Reinforcement Learning with Verifiable Reward",
          arxiv="2510.03222", peers="authors' verl fork (CarlanLark/Lp-Reg); not in TRL / verl / OpenRLHF")
def lp_reg(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    logits: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    rho: float = 0.01,
    min_p: float = 0.02,
    tau: float | None = None,
    kl_coef: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Lp-Reg: PPO-clip, but low-probability negative tokens kept by a filtered proxy are regularised toward it.

    pi_proxy = pi restricted to {v : pi(v) > threshold} and renormalised
    (threshold = min_p * max pi, or a fixed tau). Selected I = tokens with A < 0,
    among the lowest-probability rho fraction of negative tokens, with
    pi_proxy(y) > pi(y) (not filtered as noise). On I: L = -r A + kl_coef * KL_t,
    KL_t = e^{d} - d - 1, d = log pi_proxy(y) - log pi(y) (the k3 form used by the
    authors' code; the paper's forward KL(pi_proxy || pi) at the sampled token);
    elsewhere max(-r A, -clip(r) A). Proxy built from the detached current logits.
    rho = 1% as the authors' code; min_p default is our choice.
    Source status: NOT verified against the paper text or CarlanLark/Lp-Reg (not reached in
    time); min_p = 0.02 is unconfirmed.
    Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T); logits (B, T, V) -> loss (B, T).
    """
    a = token_adv(adv, mask)
    ratio = torch.exp(logp - old_logp)
    loss, clipped = clipped_surrogate(ratio, a, eps_low, eps_high)
    plp = proxy_logp(logp, logits, min_p, tau)
    neg = (mask > 0) & (a < 0)
    n_neg = int(neg.sum())
    chosen = torch.zeros_like(neg)
    if n_neg > 0:
        k = max(1, int(rho * n_neg))
        score = torch.where(neg, -logp.detach(), logp.new_full((), -float("inf"))).flatten()
        top = score.topk(k).indices
        chosen.view(-1)[top] = True
        chosen &= plp > logp.detach()
    d = torch.where(chosen, plp - logp, torch.zeros_like(logp))
    reg = -a * ratio + kl_coef * (torch.exp(d) - d - 1.0)
    loss = torch.where(chosen, reg, loss)
    with torch.no_grad():
        metrics = {"lp_reg_frac": masked_mean(chosen.to(logp.dtype), mask),
                   "clip_frac": masked_mean(clipped.to(logp.dtype), mask)}
        metrics.update(ratio_metrics(ratio, mask))
    return loss * mask, metrics


class AepoState:
    """AEPO's temperature controller: entropy of the last step -> sampling temperature of the next.

    `temperature()` gives t_high while the last closed step's mean entropy is
    <= target (as the authors' code), else t_low; 1.0 before any step has closed.
    The three settings are the loss's hyper-parameters, recorded at each call.
    """

    def __init__(self) -> None:
        self.tracker = StepMean()
        self.t_high, self.t_low, self.target = 1.0, 1.0, 0.0

    def observe(self, step, entropy: Tensor, mask: Tensor, t_high: float, t_low: float, target: float) -> None:
        self.t_high, self.t_low, self.target = t_high, t_low, target
        self.tracker.add(step, (entropy.detach() * mask).sum(), mask.sum())

    def temperature(self) -> float:
        if self.tracker.last is None:
            return 1.0
        return self.t_high if float(self.tracker.last) <= self.target else self.t_low

    def state_dict(self) -> dict:
        return {"tracker": self.tracker.state_dict(), "t_high": self.t_high, "t_low": self.t_low, "target": self.target}

    def load_state_dict(self, d: dict) -> None:
        self.tracker.load_state_dict(d["tracker"])
        self.t_high, self.t_low, self.target = d["t_high"], d["t_low"], d["target"]


@register("loss", "aepo",
          paper="Arbitrary Entropy Policy Optimization: Entropy Is Controllable in Reinforcement Fine-tuning",
          arxiv="2510.08141", peers="authors' EasyR1 fork (597358816/AEPO); not in TRL / verl / OpenRLHF", state=AepoState)
def aepo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    source: list[str],
    entropy: Tensor,
    state: AepoState | None = None,
    step: int | None = None,
    alpha: float = 1.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    pos_threshold: float = 0.05,
    target_entropy: float = 0.75,
    t_high: float = 1.2,
    t_low: float = 0.8,
) -> tuple[Tensor, dict[str, Tensor]]:
    """AEPO: GRPO surrogate plus REINFORCE on positive samples drawn at an entropy-controlled temperature.

    grad J = grad J_GRPO + alpha * E_{o ~ pi^T}[R(o) grad log pi(o)], T = T_high if
    H(pi_old) < H_target else T_low (arXiv 2510.08141). Rows whose `source` is
    "tempered" are those temperature-T samples: their advantage is replaced by
    alpha * 1[A > pos_threshold] (the authors keep tempered samples with GRPO
    advantage > 0.05 and set it to 1, i.e. R in {0, 1}: one-sided REINFORCE); other
    rows use their GRPO advantage. Both go through the clipped surrogate (as the
    authors' code). Sampling the tempered rows is the rollout's job: it reads
    `state.temperature()`, i.e. t_high if the last step's mean `entropy` of
    non-tempered tokens (recorded per `step`, all micro-batches) is <= target_entropy,
    else t_low. target 0.75 is one of the paper's runs; t_high / t_low are our defaults.
    Source status: NOT verified against the paper text or 597358816/AEPO; t_high / t_low
    defaults are unconfirmed.
    Shapes: logp, old_logp, mask, entropy (B, T); adv (B,) or (B, T); source list of B -> loss (B, T).
    On-policy: -A grad logp on fresh rows, -alpha 1[A>thr] grad logp on tempered rows.
    """
    a = token_adv(adv, mask)
    tempered = torch.tensor([s == "tempered" for s in source], device=mask.device)[:, None].expand_as(mask)
    a = torch.where(tempered, alpha * (a > pos_threshold).to(a.dtype), a)
    ratio = torch.exp(logp - old_logp)
    loss, clipped = clipped_surrogate(ratio, a, eps_low, eps_high)
    if state is not None:
        state.observe(step, entropy, mask * (~tempered).to(mask.dtype), t_high, t_low, target_entropy)
    with torch.no_grad():
        metrics = {"tempered_frac": masked_mean(tempered.to(logp.dtype), mask),
                   "clip_frac": masked_mean(clipped.to(logp.dtype), mask)}
        metrics.update(ratio_metrics(ratio, mask))
    return loss * mask, metrics

# The trainer samples the "tempered" rows at this temperature before each step (train/setup.py).
aepo.tempered_rollout = lambda state: state.temperature()
