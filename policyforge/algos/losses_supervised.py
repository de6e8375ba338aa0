"""Policy losses that bridge supervised fine-tuning and RL: NFT, PSFT, OTR, KDRL.

Contract as in losses.py: `fn(logp, old_logp, adv, mask, **hyper) -> (per_token_loss, metrics)`.
For PSFT and OTR the batch is a teacher-forced reference solution: `logp` is the
log-prob of each reference token and `adv` is not used (they are marked exempt from
the zero-advantage contract test, with the reason).
"""

from __future__ import annotations

import torch
from torch import Tensor

from policyforge.algos.losses import clipped_surrogate, ratio_metrics, token_adv
from policyforge.algos.masked import masked_mean
from policyforge.algos.registry import register


def _floor_keep_grad(x: Tensor, floor: float) -> Tensor:
    """max(x, floor) in value, with the gradient of x (straight-through floor)."""
    return x + (x.clamp(min=floor) - x).detach()


@register("loss", "nft", paper="Bridging Supervised Learning and Reinforcement Learning in Math Reasoning",
          arxiv="2505.18116", peers="authors' verl fork (NVlabs/NFT, ratio_type=token, normalize=1); not in TRL / OpenRLHF")
def nft(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    neg_eps: float = 0.05,
    rate_min: float = 0.02,
    rate_max: float = 0.98,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Negative-aware fine-tuning: likelihood on correct answers, implicit negative policy on wrong ones.

    With R_t = pi(y_t) / pi_old(y_t) and r_q the group's accuracy (arXiv 2505.18116, eq. 9):
    correct: L = -(1 - r_q) log R_t;  wrong: L = -(1 - r_q) log max((1 - r_q R_t) / (1 - r_q), neg_eps),
    the max taken in value only (gradient passes, as the authors' clamp). The weight
    omega(q) = 1 - r_q is the paper's prompt weighting. Our convention for the
    inputs: `adv` is the unnormalised group-centred binary reward r - r_q
    (advantage "dr_grpo" on 0/1 scores): A > 0 means correct with r_q = 1 - A,
    A < 0 wrong with r_q = -A; A = 0 (group all right or all wrong, which the
    paper filters out) gives no loss. r_q is clamped to [rate_min, rate_max] as the
    authors' code. neg_eps default is our choice.
    Source status: NOT verified against the paper text or NVlabs/NFT; neg_eps = 0.05 is
    unconfirmed.
    Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T) -> loss (B, T).
    On-policy the gradient is Dr. GRPO's, -(r - r_q) grad log pi (paper, section 4).
    """
    a = token_adv(adv, mask)
    correct = (a > 0).to(logp.dtype)
    live = (a != 0).to(logp.dtype)
    rate = torch.where(a > 0, 1.0 - a, -a).clamp(rate_min, rate_max)
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    pos = -log_ratio
    neg = -torch.log(_floor_keep_grad((1.0 - rate * ratio) / (1.0 - rate), neg_eps))
    loss = (1.0 - rate) * (correct * pos + (1.0 - correct) * neg) * live
    with torch.no_grad():
        floor_hit = ((1.0 - rate * ratio) / (1.0 - rate) < neg_eps) & (a < 0)
        metrics = {"neg_floor_frac": masked_mean(floor_hit.to(logp.dtype), mask)}
        metrics.update(ratio_metrics(ratio, mask))
    return loss * mask, metrics


@register("loss", "psft", paper="Proximal Supervised Fine-Tuning", arxiv="2508.17784",
          peers="none of TRL / verl / OpenRLHF (equals their PPO-clip loss with advantage 1 on SFT data)")
def psft(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PSFT: the PPO clipped surrogate on reference-solution tokens with advantage 1.

    L_t = -min(r_t, clip(r_t, 1 - eps_low, 1 + eps_high)), r_t = pi(y*_t) / pi_old(y*_t)
    (arXiv 2508.17784: SFT seen as a policy gradient with A = 1, trust region from
    PPO-clip). With A = 1 only the upper bound binds: tokens whose ratio passed
    1 + eps_high get no gradient. `adv` is not used. old_logp is the policy before
    this round of updates on the batch.
    Source status: NOT verified against the paper text.
    Shapes: logp, old_logp, mask (B, T) -> loss (B, T).
    On-policy the gradient is SFT's, -grad log pi(y*_t).
    """
    ratio = torch.exp(logp - old_logp)
    loss = -torch.minimum(ratio, ratio.clamp(1.0 - eps_low, 1.0 + eps_high))
    with torch.no_grad():
        metrics = {"clip_frac_high": masked_mean((ratio > 1.0 + eps_high).to(logp.dtype), mask)}
        metrics.update(ratio_metrics(ratio, mask))
    return loss * mask, metrics


psft.zero_adv_exempt = "supervised: every reference token has advantage 1 (PSFT); the batch's adv is not used"


@register("loss", "otr", paper="One-Token Rollout: Guiding Supervised Fine-Tuning of LLMs with Policy Gradient",
          arxiv="2509.26313", peers="none of TRL / verl / OpenRLHF")
def otr(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    logits: Tensor,
    target_ids: Tensor,
    step: int | None = None,
    num_samples: int = 8,
    temperature: float = 1.0,
    wrong_reward: float = -0.1,
    seed: int = 0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One-token rollout: at each reference position sample K tokens, reward a match with the reference token.

    a_1..a_K ~ pi_sg(. | x, y*_<t)^(1/temperature) (detached current policy);
    R_k = 1 if a_k == y*_t else wrong_reward;  L_t = -(1/K) sum_k R_k log pi(a_k | x, y*_<t)
    (arXiv 2509.26313: each token is a one-step episode, REINFORCE over K samples;
    the negative reward on wrong samples is the paper's second term). Sampling uses
    a torch.Generator seeded with seed + step (deterministic). K and wrong_reward
    defaults are ours. `adv` and `logp` are not used except for metrics.
    Source status: NOT verified against the paper text; K = 8 and wrong_reward = -0.1 are
    unconfirmed.
    Shapes: logits (B, T, V); target_ids, mask (B, T) -> loss (B, T).
    """
    logp_full = torch.log_softmax(logits.float(), -1)
    probs = torch.softmax(logits.detach().float() / temperature, -1)
    g = torch.Generator(device=probs.device).manual_seed(seed + (step or 0))
    flat = probs.reshape(-1, probs.shape[-1])
    samples = torch.multinomial(flat, num_samples, replacement=True, generator=g).view(*mask.shape, num_samples)
    hit = samples == target_ids[..., None]
    reward = torch.where(hit, torch.ones_like(samples, dtype=logp_full.dtype),
                         torch.full_like(samples, wrong_reward, dtype=logp_full.dtype))
    lp = logp_full.gather(-1, samples)
    loss = -(reward * lp).mean(-1).to(logp.dtype)
    with torch.no_grad():
        metrics = {"match_rate": masked_mean(hit.to(logp.dtype).mean(-1), mask)}
        metrics.update(ratio_metrics(torch.exp(logp - old_logp), mask))
    return loss * mask, metrics


otr.zero_adv_exempt = "supervised: the reward is the match with the reference token, not the batch's adv"


@register("loss", "kdrl",
          paper="KDRL: Post-Training Reasoning LLMs via Unified Knowledge Distillation and Reinforcement Learning",
          arxiv="2506.02208", peers="none of TRL / verl / OpenRLHF as one loss (verl/TRL: GRPO + KL with the teacher as reference)")
def kdrl(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    teacher_logp: Tensor,
    step: int | None = None,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    kl_coef: float = 5e-3,
    kl_coef_end: float | None = None,
    anneal_steps: int = 0,
    kd_on_correct: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """KDRL: GRPO clipped surrogate plus beta * k2 estimate of the reverse KL to a teacher.

    L_t = max(-r A, -clip(r) A) + beta * 1/2 (log pi(y_t) - log pi_T(y_t))^2
    (arXiv 2506.02208: J = J_GRPO - beta KL(pi || pi_T), token-level, k2 estimator,
    whose gradient is the reverse KL's on-policy). beta anneals linearly from kl_coef
    to kl_coef_end over anneal_steps (paper: 5e-3 -> 1e-3) when kl_coef_end is set.
    kd_on_correct=False is the paper's reward-guided masking (no distillation on
    correct answers), read off the advantage: only rows with A <= 0 are distilled
    (groups that are all correct have A = 0 and are still distilled).
    Source status: NOT verified against the paper text; KL form (k2) and the 5e-3 -> 1e-3
    schedule are unconfirmed.
    teacher_logp is detached. Shapes: logp, old_logp, teacher_logp, mask (B, T); adv (B,) or (B, T) -> (B, T).
    """
    a = token_adv(adv, mask)
    ratio = torch.exp(logp - old_logp)
    surrogate, _ = clipped_surrogate(ratio, a, eps_low, eps_high)
    beta = kl_coef
    if kl_coef_end is not None and anneal_steps > 0:
        frac = min(max((step or 0) / anneal_steps, 0.0), 1.0)
        beta = kl_coef + (kl_coef_end - kl_coef) * frac
    kd = 0.5 * (logp - teacher_logp.detach()) ** 2
    if not kd_on_correct:
        kd = kd * (a <= 0).to(kd.dtype)
    loss = surrogate + beta * kd
    with torch.no_grad():
        metrics = {"kd_k2": masked_mean(kd, mask), "kd_coef": torch.tensor(float(beta))}
        metrics.update(ratio_metrics(ratio, mask))
    return loss * mask, metrics


kdrl.zero_adv_exempt = "the reverse-KL-to-teacher term has a gradient whatever the advantage (KDRL)"

# The trainer builds the batch from the reference solutions for these (see train/setup.py).
psft.teacher_forced = True
otr.teacher_forced = True
