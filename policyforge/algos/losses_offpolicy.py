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
          arxiv="2503.14286", peers="Trinity-RFT topr (token-level ratio, split at advantage_threshold=0)")
def topr(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *,
         level: str = "sequence") -> tuple[Tensor, dict[str, Tensor]]:
    """Tapered off-policy REINFORCE: plain REINFORCE on positives, truncated IS on negatives.

    L = -sg(alpha) * A * log pi(y), alpha = 1 if A >= 0 else [pi(y) / mu(y)]_0^1 (TOPR eq. 7:
    grad J = sum_{R>=0} mu R grad log pi + sum_{R<0} mu [pi/mu]_0^1 R grad log pi), mu = the
    policy that sampled the batch (`old_logp`). A is the baselined reward R - c the trainer
    supplies; the split is on its sign. `level="sequence"` (the paper) uses the trajectory
    ratio exp(sum_t (logp - old_logp)); `"token"` the per-token ratio (Trinity-RFT's choice).
    Per token the loss is -alpha A logp_t; aggregate with seq_mean_token_sum for the paper's sum.
    Source status: NOT verified against the paper text; Trinity-RFT's topr loss is not in the
    stored index.
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
          "Trinity-RFT opmd is a different simplified form, -A logp / (1 + tau)")
def opmd(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, tau: float = 1.0,
         level: str = "sequence") -> tuple[Tensor, dict[str, Tensor]]:
    """Online policy mirror descent: group-relative REINFORCE plus a squared log-ratio regulariser.

    L_i = -A_i log pi(y_i) + (tau / 2) (log pi(y_i) - log pi_old(y_i))^2: the Kimi k1.5 OPMD
    gradient read as a regularised REINFORCE loss (arXiv 2509.24203, sec. 4; A_i = r_i - mean
    of the group). `level="sequence"` squares the sequence log-ratio, as the paper; each
    token carries 1/|y_i| of that term, so summing a sequence's tokens gives L_i.
    `level="token"` squares each token's log-ratio (Trinity-RFT's rec/k2 implementation).
    Source status: checked against Trinity-RFT
    trinity/algorithm/policy_loss_fn/opmd_policy_loss.py (tau = 1.0 default; its opmd is the
    simplified -A logp / (1 + tau)) and advantage_fn/opmd_advantage.py (A = r - group mean); our
    squared-log-ratio form follows Kimi k1.5's OPMD gradient and was NOT verified against arXiv
    2509.24203's text.
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
        metrics = {"opmd_reg": masked_sum(reg, mask) / mask.shape[0]}
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
