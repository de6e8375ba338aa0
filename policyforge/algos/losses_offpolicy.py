"""Off-policy REINFORCE-family losses: TOPR, OPMD, AsymRE.

Contract as in losses.py: `fn(logp, old_logp, adv, mask, **hyper) -> (per_token_loss, metrics)`.
Here `old_logp` is the behaviour policy mu that produced the batch. These papers write
a sequence objective in log pi(y) = sum_t logp_t; a per-token loss is given whose sum
over a sequence's tokens is that sequence's loss, so `seq_mean_token_sum` (sum over
tokens, mean over sequences) gives the papers' (1/K) sum_i exactly; `token_mean`
gives the length-weighted variant that peers use.
"""

from __future__ import annotations

import torch
from torch import Tensor

from policyforge.algos.losses import ratio_metrics, token_adv
from policyforge.algos.masked import masked_mean, masked_sum
from policyforge.algos.registry import register

_GROUP_RELATIVE = ("Group-Relative REINFORCE Is Secretly an Off-Policy Algorithm: Demystifying Some Myths "
                   "About GRPO and Its Friends")


def _check_level(level: str) -> None:
    if level not in ("token", "sequence"):
        raise ValueError(f"level must be 'token' or 'sequence', got {level!r}")


@register("loss", "topr", paper="Tapered Off-Policy REINFORCE: Stable and efficient reinforcement learning for LLMs",
          arxiv="2503.14286", peers="Trinity-RFT topr (token-level ratio, split at advantage_threshold=0)",
          choices={"level": ("token", "sequence")}, zero_adv_inert=True, aggregation="seq_mean_token_mean")
def topr(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *,
         level: str = "sequence") -> tuple[Tensor, dict[str, Tensor]]:
    """Tapered off-policy REINFORCE: plain REINFORCE on positives, truncated IS on negatives.

    Formula (sequence y with advantage A, behaviour policy mu = `old_logp`):
        L(y) = -sg(alpha) * A * log pi(y),  alpha = 1 if A >= 0 else [pi(y) / mu(y)]_0^1
    whose gradient is TOPR's (Eq. 7, the canonical case of the truncation limits of Eq. 8 /
    Table 1 with a- = 0 and a+ = b+ = b- = 1):
        grad J = sum_{T+} mu(y) R(y) grad log pi(y) + sum_{T-} mu(y) [pi(y)/mu(y)]_0^1 R(y) grad log pi(y).
    "Tapered Off-Policy REINFORCE: Stable and efficient reinforcement learning for LLMs",
    arXiv 2503.14286. Per token the loss is -alpha A logp_t, so summing a sequence's tokens
    gives L(y); seq_mean_token_sum gives the paper's (1/N) sum_y.
    Choices: R here is the baselined reward A = R - c the trainer supplies and the split is on
    its sign (the paper's experiments use R = +-1 with no baseline, and study c as a data-mix
    knob, Sec. 4.3). `level="sequence"` (the paper) uses the trajectory ratio
    exp(sum_t (logp - old_logp)); `"token"` uses the per-token ratio (Trinity-RFT's choice;
    verl's topr uses the length-normalised sequence ratio instead). The paper's experiments
    divide the loss by the sequence length, i.e. aggregate with seq_mean_token_mean.
    Source status: checked against a public excerpt of arXiv v2 Sec. 3 (Eqs. 7-8, Table 1:
    canonical a- = 0, other limits 1; positives not importance-weighted) and Sec. 4.1
    (reward +-1, loss divided by sequence length); the paper PDF itself was not read here.
    Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T) -> loss (B, T).
    On-policy (old_logp == logp) alpha = 1: exactly REINFORCE.
    """
    _check_level(level)
    a = token_adv(adv, mask)
    log_ratio = (logp - old_logp).detach()
    if level == "sequence":
        log_ratio = masked_sum(log_ratio, mask, dim=-1).unsqueeze(-1).expand_as(mask)
    alpha = torch.where(a < 0, torch.exp(log_ratio.clamp(max=0.0)), torch.ones_like(log_ratio))
    loss = -alpha * a * logp * mask
    with torch.no_grad():
        metrics = {"clip_frac_high": masked_mean(((a < 0) & (log_ratio > 0)).to(mask.dtype), mask),
                   "topr_alpha_mean": masked_mean(alpha, mask)}
        metrics.update(ratio_metrics(torch.exp(logp - old_logp), mask))
    return loss, metrics


@register("loss", "opmd", paper=_GROUP_RELATIVE, arxiv="2509.24203",
          peers="Trinity-RFT rec (regularizer=k2, token level, 1/2 absorbed in the coefficient); "
          "Trinity-RFT opmd is a different simplified form, -A logp / (1 + tau)",
          choices={"level": ("token", "sequence")})
def opmd(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, tau: float = 1.0,
         level: str = "sequence") -> tuple[Tensor, dict[str, Tensor]]:
    """Online policy mirror descent: group-relative REINFORCE plus a squared log-ratio regulariser.

    Formula (K responses y_i to one prompt, l_i = log pi(y_i) - log pi_old(y_i)):
        L = (1/K) sum_i [ -A_i log pi(y_i) + (tau / 2) l_i^2 ],  A_i = r_i - mean_j r_j
    "Group-Relative REINFORCE Is Secretly an Off-Policy Algorithm: Demystifying Some Myths
    About GRPO and Its Friends", arXiv 2509.24203: Kimi k1.5's OPMD read as the REINFORCE loss
    plus the mean-squared regulariser (beta / 2K) sum_i l_i^2 with beta = tau. Per token the
    loss is -A_i logp_t plus 1/|y_i| of (tau/2) l_i^2, so seq_mean_token_sum gives L exactly.
    Choices: `level="sequence"` squares the sequence log-ratio (the paper); `level="token"`
    squares each token's log-ratio (Trinity-RFT's rec loss, regularizer="k2", which absorbs
    the 1/2 into its coefficient: its coef 0.1 in the paper's rec_gsm8k OPMD config equals
    tau = 0.2 here). tau = 1.0 is Trinity-RFT's opmd default; the paper's own value for its
    OPMD runs was not confirmed. A_i without std normalisation (std_normalize: false).
    Source status: the paper text was NOT read; the formula was checked against a public
    note on arXiv 2509.24203 (its OPMD/AsymRE unification section: REINFORCE + (beta/2K)
    sum_i (log pi - log pi_old)^2, beta = tau) and against Trinity-RFT (modelscope/Trinity-RFT):
    examples/rec_gsm8k/README.md (OPMD = rec, regularizer k2, coef 0.1, no std normalisation),
    the rec policy loss (coef * (logp - old_logp)^2 per token, "1/2 absorbed") and
    trinity/algorithm/policy_loss_fn/opmd_policy_loss.py (a different simplified form,
    -A logp / (1 + tau), default tau = 1.0). No equation numbers are claimed.
    Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T) -> loss (B, T).
    On-policy (old_logp == logp) the regulariser's gradient tau * l * grad l is zero and the
    gradient is REINFORCE's, -A grad logp.
    """
    _check_level(level)
    a = token_adv(adv, mask)
    diff = logp - old_logp
    if level == "sequence":
        n = mask.sum(-1, keepdim=True).clamp(min=1.0)
        reg = 0.5 * tau * masked_sum(diff, mask, dim=-1).unsqueeze(-1) ** 2 / n
    else:
        reg = 0.5 * tau * diff**2
    loss = (-a * logp + reg) * mask
    with torch.no_grad():
        metrics = {"opmd_reg": masked_sum(reg, mask) / mask.sum().clamp(min=1)}  # a token mean, merged by tokens
        metrics.update(ratio_metrics(torch.exp(diff), mask))
    return loss, metrics


opmd.zero_adv_exempt = "OPMD's mirror-descent term (tau/2)(log pi - log pi_old)^2 pulls toward pi_old at zero advantage"


@register("loss", "asymre", paper=_GROUP_RELATIVE + "; Asymmetric REINFORCE for off-Policy Reinforcement Learning: "
          "Balancing positive and negative rewards", arxiv="2509.24203; 2506.20520",
          peers="Trinity-RFT rec (regularizer=forward-kl, coefficient tau)")
def asymre(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *,
           tau: float = 0.1) -> tuple[Tensor, dict[str, Tensor]]:
    """Asymmetric REINFORCE: the baseline shifted down by tau, L = -(A + tau) log pi(y).

    With A = r - mean(r), the baseline is mean(r) - tau (AsymRE, arXiv 2506.20520: a
    baseline below the behaviour policy's value keeps off-policy REINFORCE stable).
    arXiv 2509.24203 reads the shift as a regulariser: -tau log pi(y) maximises the
    likelihood of the sampled data, a forward-KL(mu || pi) pull. tau = 0.1 is our default
    (the papers sweep it). Per token -(A + tau) logp_t; seq_mean_token_sum gives the sum form.
    Source status: checked against Trinity-RFT
    trinity/algorithm/advantage_fn/asymre_advantage.py (baseline = group mean + baseline_shift,
    default -0.1, i.e. our tau = 0.1); the paper text was not reachable.
    Shapes: logp, old_logp, mask (B, T); adv (B,) or (B, T) -> loss (B, T).
    On-policy with tau = 0 it is REINFORCE; tau > 0 adds -tau grad logp.
    """
    loss = -(token_adv(adv, mask) + tau) * logp * mask
    with torch.no_grad():
        metrics = ratio_metrics(torch.exp(logp - old_logp), mask)
    return loss, metrics


asymre.zero_adv_exempt = "AsymRE's shifted baseline gives -tau * grad log pi (a pull toward the data) at zero advantage"


def refinement_shaping(logp: Tensor, adv: Tensor, mask: Tensor, *, gamma: float = 0.1) -> Tensor:
    """Critique-GRPO's loss on the tokens of a critique-guided refinement (arXiv 2506.03106), per token:

        -A * f(pi_theta(y_t)),   f(x) = x / (x + gamma),

    with pi_theta(y_t) = exp(logp_t), conditioned on the original question; no importance ratio and no clip (the
    refinement was sampled from another prompt, so there is no behaviour probability of it under this one). The
    gradient, -A gamma pi / (pi + gamma)^2 * grad log pi, is largest at pi = gamma: it lifts tokens the policy
    finds unlikely more than ones it already takes, where a plain -A log pi would lift the unlikely ones
    without bound. Not a registry entry: the loop applies it to the rows tagged "refined" in place of the run's
    loss (train/refine.py). gamma = 0.1 in the paper (LUFFY's shaping, which Critique-GRPO takes up).
    """
    p = torch.exp(logp)
    return -token_adv(adv, mask) * (p / (p + gamma)) * mask


def hindsight_shaping(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, gamma: float = 0.1) -> Tensor:
    """HeRL's loss on the tokens of a hindsight rewrite (arXiv 2603.20046; the authors' code, core_algos'
    mixpolicy loss on the rows its he_mask marks), per token:

        -A * f(r_t),   f(r) = r / (r + gamma),   r_t = exp(logp_t - old_logp_t),

    r the ratio to the policy before this update (not to the sampler, which drew the rewrite at another
    temperature), clamped at exp(+-20) as the code does; no clip. The gradient,
    -A gamma r / (r + gamma)^2 * grad log pi, is -A gamma / (1 + gamma)^2 * grad log pi at r = 1. Where
    Critique-GRPO's refinement_shaping shapes the probability itself, this shapes the ratio. Not a registry
    entry: the loop applies it to the rows tagged "refined" when rollout.refine_method is herl (train/hindsight.py).
    """
    r = torch.exp(torch.clamp(logp - old_logp, -20.0, 20.0))
    return -token_adv(adv, mask) * (r / (r + gamma)) * mask
