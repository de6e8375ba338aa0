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
    The means, N and the draw are over the tensors given, i.e. one micro-batch, as in verl
    and the authors' code (built on verl): with optim.micro_batch_size below the batch, the
    selection is per micro-batch (tests/e2e/test_micro_batching.py names this exception).
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
    Cov and the top-k are over the tensors given, i.e. one micro-batch, as in verl and the
    authors' code: with optim.micro_batch_size below the batch, the selection is per
    micro-batch (tests/e2e/test_micro_batching.py names this exception).
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
    """log pi_proxy(y_t) = log pi(y_t) - log Z_t if pi(y_t) >= threshold_t, else -inf (detached).

    threshold_t = min_p * max_v pi(v | s_t) (min-p filter), or the fixed `tau` if given;
    Z_t = total probability of the kept tokens, so pi_proxy is pi restricted to the kept
    tokens and renormalised. Shapes: logp (B, T), logits (B, T, V) -> (B, T).
    """
    probs = torch.softmax(logits.detach().float(), -1)
    thr = probs.amax(-1) * min_p if tau is None else torch.full_like(probs[..., 0], tau)
    kept_mass = (probs * (probs >= thr[..., None])).sum(-1)
    lp = logp.detach().float()
    keep = lp.exp() >= thr
    out = torch.where(keep, lp - kept_mass.clamp(min=1e-30).log(), lp.new_full((), -float("inf")))
    return out.to(logp.dtype)


@register("loss", "lp_reg",
          paper="Low-probability Tokens Sustain Exploration in Reinforcement Learning with Verifiable Reward",
          arxiv="2510.03222", peers="authors' verl fork (CarlanLark/Lp-Reg, dev repo CarlanLark/Lp-Reg-dev); "
          "not in TRL / verl / OpenRLHF")
def lp_reg(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    logits: Tensor,
    eps_low: float = 1.0,
    eps_high: float = 9.0,
    rho: float = 0.01,
    min_p: float = 0.02,
    tau: float | None = None,
    kl_coef: float = 1.0,
    kl_max: float = 10.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Lp-Reg: PPO-clip, but low-probability negative tokens kept by a filtered proxy are regularised toward it.

    Proxy (arXiv 2510.03222): pi_proxy(v | s_t) = pi(v | s_t) 1[pi(v | s_t) >= thr_t] / Z_t,
    thr_t = min_p * max_v pi(v | s_t) (kappa in the paper; or a fixed `tau`),
    Z_t = sum of the kept probabilities (see `proxy_logp`).
    Selection: I = the max(1, floor(rho * N_neg)) tokens of lowest pi(y_t) among the N_neg
    real tokens with A_t < 0, kept only where pi_proxy(y_t) > pi(y_t) (i.e. not filtered
    as noise; a kept token always has pi_proxy > pi unless nothing was filtered).
    Loss: on I,  L_t = -r_t A_t + kl_coef * min(KL_t, kl_max),
                 KL_t = e^{d} - d - 1,  d = log pi_proxy(y_t) - log pi(y_t) (pi_proxy detached)
          (the authors' k3 / "low_var_kl" term at the sampled token, clamped at 10 as their code:
          on tokens sampled from pi it estimates KL(pi || pi_proxy); no ratio clipping on I);
          elsewhere L_t = max(-r_t A_t, -clip(r_t, 1 - eps_low, 1 + eps_high) A_t).
    Defaults are those of the authors' released recipes (Qwen3-14B / Qwen2.5-32B scripts):
    min_p 0.02 (minp_p_threshold), rho 1% (logp_neg_k_percent; 0.5% in the 32B run),
    kl_coef 1 (ppo_kl_coef), eps_low 1.0 / eps_high 9.0 (clip_ratio_low / _high, i.e. r
    clipped to [0, 10]), k3 estimator (kl_type=low_var_kl), positive tokens never
    regularised (logp_pos_k_percent 0).
    Choices left open / our departures: (1) the proxy is built from the detached current
    logits of this call; the authors' runs build it from pi_old (minp_old_log_prob=True),
    which is the same numbers on the first (on-policy) update of a batch, not on later
    ones. (2) the authors apply min-p to the raw logits and then divide by the sampling
    temperature; `logits` here are already temperature-scaled (identical at T = 1).
    (3) the authors' code skips the regulariser when floor(rho * N_neg) <= 1; we keep at
    least one token (the rho-percentile of a small batch still exists). (4) the lowest-rho
    selection is over the tokens of one call (the authors' code also selects per micro-batch).
    Source status: verified against the authors' code, CarlanLark/Lp-Reg-dev (development
    repo of CarlanLark/Lp-Reg): verl/trainer/ppo/core_algos.py (compute_policy_loss_lp_reg,
    kl_penalty), verl/workers/actor/dp_actor.py (apply_min_p, proxy forward),
    recipe/lp_reg/*.sh and verl/trainer/config/ppo_trainer.yaml (defaults). The paper's
    paper (arXiv 2510.03222v2, Eq. 6) writes the regulariser as the full-vocabulary
    KL(pi_proxy || pi) on tokens below the rho-th percentile of ALL the batch's sampling
    probabilities that have A < 0, and its first term as clip(r, 0, U) A; the formula above
    follows the authors' code instead (percentile among the negative tokens, the sampled-token
    k3 term, PPO's min form), the runs the paper reports. Measured against Eq. 6 as printed
    (rho 0.3, 30 seeds): |d loss| up to 4e-3, |d grad| up to 3e-3, nearly all from the KL term.
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
    kl = (torch.exp(d) - d - 1.0).clamp(max=kl_max)
    reg = -a * ratio + kl_coef * kl
    loss = torch.where(chosen, reg, loss)
    with torch.no_grad():
        metrics = {"lp_reg_frac": masked_mean(chosen.to(logp.dtype), mask),
                   "clip_frac": masked_mean(clipped.to(logp.dtype), mask)}
        metrics.update(ratio_metrics(ratio, mask))
    return loss * mask, metrics


# The authors' trainer defaults (597358816/AEPO, verl/trainer/config.py: temperature_high,
# temperature_low, entropy_base); AepoState starts from them so that the very first
# tempered rollout, which happens before any loss call, follows their rule.
_AEPO_T_HIGH, _AEPO_T_LOW, _AEPO_TARGET = 1.2, 0.8, 0.5


class AepoState:
    """AEPO's temperature controller: entropy of the latest step -> sampling temperature of the next.

    `temperature()` is t_high if H <= target else t_low, with H the token-mean policy
    entropy of the most recent step that recorded any (all its micro-batches); before
    any step it is t_high (the authors' trainer starts with entropy 0). Read between
    steps (before the next rollout), the most recent step is the one just finished, so
    the lag is one step, as in the authors' trainer. The three settings are the loss's
    hyper-parameters, recorded at each call (the class defaults until the first call).
    """

    def __init__(self) -> None:
        self.tracker = StepMean()
        self.t_high, self.t_low, self.target = _AEPO_T_HIGH, _AEPO_T_LOW, _AEPO_TARGET

    def observe(self, step, entropy: Tensor, mask: Tensor, t_high: float, t_low: float, target: float) -> None:
        self.t_high, self.t_low, self.target = t_high, t_low, target
        self.tracker.add(step, (entropy.detach() * mask).sum(), mask.sum())

    def entropy(self) -> Tensor | None:
        """Token-mean entropy of the most recent step with tokens (the open one if it has any)."""
        if self.tracker.step is not None and bool(self.tracker.count > 0):
            return self.tracker.total / self.tracker.count
        return self.tracker.last

    def temperature(self, t_high: float | None = None, t_low: float | None = None,
                    target: float | None = None) -> float:
        """The next tempered rollout's temperature; the settings default to the last ones recorded."""
        t_high = self.t_high if t_high is None else t_high
        t_low = self.t_low if t_low is None else t_low
        target = self.target if target is None else target
        h = self.entropy()
        if h is None:
            return t_high
        return t_high if float(h) <= target else t_low

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
    target_entropy: float = _AEPO_TARGET,
    t_high: float = _AEPO_T_HIGH,
    t_low: float = _AEPO_T_LOW,
) -> tuple[Tensor, dict[str, Tensor]]:
    """AEPO: GRPO surrogate plus REINFORCE on positive samples drawn at an entropy-controlled temperature.

    grad J_AEPO = grad J_GRPO + alpha * E_{q, o ~ pi_theta^T}[grad log pi_theta(o | q) R(q, o)],
    T = T_high if H(pi_theta_old) < H_target else T_low (arXiv 2510.08141; the equations
    as given in the authors' README). Rows whose `source` is "tempered" are the
    temperature-T samples (their own GRPO groups): their advantage is replaced by
    alpha * 1[A > pos_threshold], i.e. R in {0, 1} with R = 1 for a tempered sample
    above its group mean by more than 0.05 (the authors keep those and set their
    advantage to 1; negatives are dropped: one-sided REINFORCE). Other rows keep their
    GRPO advantage. Both go through the clipped surrogate, as the authors' trainer
    (tempered rows join the PPO batch). Sampling the tempered rows is the loop's job: it
    reads `state.temperature()` = t_high if the latest step's token-mean `entropy` of
    the non-tempered tokens (recorded per `step`, all micro-batches) is <= target_entropy,
    else t_low; t_high before any step.
    Defaults are the authors' code's: t_high 1.2, t_low 0.8, target 0.5 (entropy_base in
    config.py and examples/qwen-math-7b-AEPO.sh; the README's headline run uses 0.75),
    threshold 0.05, advantage 1 (alpha = 1). The comparison is `<=` as their trainer
    (the README writes `<`).
    Choices left open / departures from the authors' trainer: (1) it replaces up to
    reinforce_sample_num = 60 fresh rows (30 when H > target) by selected tempered rows;
    here every selected tempered row is added (one tempered group per prompt) and
    alpha weights them; unselected tempered rows have zero loss but still count in a
    token-mean denominator. (2) its entropy is the update's mean entropy over all rows,
    tempered ones included; we take the non-tempered rows only (H of pi_theta_old on its
    own samples, as the equation reads). The loop scores tempered rows at the run's
    temperature (train/setup.py add_tempered_rows), so their gradient is grad log pi_theta(o)
    as in the equation and the authors' trainer.
    Source status: verified against the authors' code 597358816/AEPO: README.md (the two
    equations), verl/trainer/ray_trainer.py (RayPPOTrainer.fit, _select_by_advantage),
    verl/trainer/config.py (TrainerConfig defaults), examples/qwen-math-7b-AEPO.sh. The
    paper's method section (equation numbers, its alpha) could NOT be read; only its
    abstract was reachable.
    Shapes: logp, old_logp, mask, entropy (B, T); adv (B,) or (B, T); source list of B -> loss (B, T).
    On-policy: -A grad logp on fresh rows, -alpha 1[A>thr] grad logp on tempered rows.
    """
    a = token_adv(adv, mask)
    tempered = torch.tensor([s == "tempered" for s in source], device=mask.device)[:, None].expand_as(mask)
    a = torch.where(tempered, alpha * (a > pos_threshold).to(a.dtype), a)
    ratio = torch.exp(logp - old_logp)
    loss, clipped = clipped_surrogate(ratio, a, eps_low, eps_high)
    if state is not None:  # the entropy of the policy's own samples: neither tempered rows nor RLEP's replayed ones
        own = torch.tensor([s not in ("tempered", "replayed") for s in source], device=mask.device)[:, None]
        state.observe(step, entropy, mask * own.to(mask.dtype), t_high, t_low, target_entropy)
    with torch.no_grad():
        metrics = {"tempered_frac": masked_mean(tempered.to(logp.dtype), mask),
                   "clip_frac": masked_mean(clipped.to(logp.dtype), mask)}
        metrics.update(ratio_metrics(ratio, mask))
    return loss * mask, metrics

# The trainer samples the "tempered" rows at this temperature before each step (train/setup.py).
# The run's own t_high / t_low / target_entropy are passed in, so the first step (before any loss call has
# recorded them in the state) samples at the configured t_high, not the default.
aepo.tempered_rollout = lambda state, t_high=_AEPO_T_HIGH, t_low=_AEPO_T_LOW, target_entropy=_AEPO_TARGET, **_: \
    state.temperature(t_high, t_low, target_entropy)
