"""Drift terms beyond the sampled KL estimators: straight-through k3, full-vocabulary
forward KL and Jensen-Shannon to the reference, and an (adaptive) entropy bonus.

Contract: `fn(logp, ref_logp, mask, **hyper) -> per_token_penalty (B, T)`, zero on
masked tokens, added to the per-token loss with a coefficient from the config.
Reference logits are treated as constants (detached) wherever they are used.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from policyforge.algos.registry import register


class StepMean:
    """Mean of a per-token statistic over every call made for one optimiser step.

    `add(step, total, count)` accumulates; when a call arrives with a different
    `step`, the previous step's mean is closed into `last` (and `add` returns True).
    So all micro-batches of one step see the same closed value, whatever their
    order. Values are kept as detached tensors (no host sync).
    """

    def __init__(self) -> None:
        self.step: int | None = None
        self.total = torch.zeros(())
        self.count = torch.zeros(())
        self.last: Tensor | None = None

    def add(self, step: int | None, total: Tensor, count: Tensor) -> bool:
        closed = False
        if step != self.step:
            if self.step is not None and bool(self.count > 0):
                self.last = (self.total / self.count).detach()
                closed = True
            self.step, self.total, self.count = step, torch.zeros(()), torch.zeros(())
        self.total = self.total.to(total.device) + total.detach()
        self.count = self.count.to(count.device) + count.detach()
        return closed

    def state_dict(self) -> dict:
        last = None if self.last is None else self.last.clone()
        return {"step": self.step, "total": self.total.clone(), "count": self.count.clone(), "last": last}

    def load_state_dict(self, d: dict) -> None:
        self.step = d["step"]
        self.total = torch.as_tensor(d["total"]).clone()
        self.count = torch.as_tensor(d["count"]).clone()
        self.last = None if d["last"] is None else torch.as_tensor(d["last"]).clone()


@register("drift", "k3_st", paper="Approximating KL Divergence (J. Schulman, 2020, blog post)",
          peers="verl kl_penalty=low_var_kl+ ('k3+': k3 value, k2 gradient)")
def k3_st(logp: Tensor, ref_logp: Tensor, mask: Tensor, *, clamp: float | None = None) -> Tensor:
    """Straight-through k3: the value of k3, the gradient of k2.

    d = log pi_ref - log pi;  out = k2 - sg(k2) + sg(k3), k2 = d^2 / 2, k3 = e^d - d - 1.
    The value is the unbiased, non-negative k3 estimate of KL(pi || pi_ref) (Schulman
    2020); the gradient is k2's, -d * grad log pi, whose expectation on-policy is the
    gradient of the reverse KL (k3's own gradient, (1 - e^d) grad log pi, is not).
    As verl's "k3+" (kl_penalty ending in "+"). `clamp` bounds d first (verl: 10).
    Shapes: logp, ref_logp, mask (B, T) -> (B, T).
    """
    d = ref_logp - logp
    if clamp is not None:
        d = d.clamp(-clamp, clamp)
    k2 = 0.5 * d**2
    k3 = torch.exp(d) - d - 1.0
    return (k2 - k2.detach() + k3.detach()) * mask


_DIV_PAPER = "The Choice of Divergence: A Neglected Key to Mitigating Diversity Collapse in Reinforcement Learning with Verifiable Reward"


@register("drift", "forward_kl", paper=_DIV_PAPER, arxiv="2509.07430", peers="none of TRL / verl / OpenRLHF (they use sampled reverse-KL estimators)")
def forward_kl(logp: Tensor, ref_logp: Tensor, mask: Tensor, *, logits: Tensor, ref_logits: Tensor) -> Tensor:
    """Full-vocabulary forward KL to the reference: KL(pi_ref || pi) at every position.

    KL_t = sum_v pi_ref(v | s_t) * (log pi_ref(v | s_t) - log pi(v | s_t)).
    The paper (DPH-RL, arXiv 2509.07430) argues for mass-covering divergences
    (forward KL, JS) to keep the initial policy's coverage; it estimates them on
    samples drawn from the initial policy. We take the exact expectation over the
    vocabulary at each completion position instead (no extra samples; same
    gradient in expectation over the next token). `ref_logits` are detached;
    `logp` / `ref_logp` are unused. Shapes: logits, ref_logits (B, T, V); mask (B, T) -> (B, T).
    """
    lp = torch.log_softmax(logits.float(), -1)
    lq = torch.log_softmax(ref_logits.detach().float(), -1)
    kl = (lq.exp() * (lq - lp)).sum(-1)
    return kl.to(logp.dtype) * mask


@register("drift", "js", paper=_DIV_PAPER, arxiv="2509.07430", peers="none of TRL / verl / OpenRLHF")
def js(logp: Tensor, ref_logp: Tensor, mask: Tensor, *, logits: Tensor, ref_logits: Tensor) -> Tensor:
    """Full-vocabulary Jensen-Shannon divergence between pi and pi_ref at every position.

    JS_t = 1/2 KL(pi_ref || m) + 1/2 KL(pi || m),  m = (pi + pi_ref) / 2, over the vocabulary.
    Bounded by log 2. DPH-RL (arXiv 2509.07430) estimates it from samples of both
    policies; we compute the exact per-position value (see `forward_kl`).
    `ref_logits` are detached. Shapes: logits, ref_logits (B, T, V); mask (B, T) -> (B, T).
    """
    lp = torch.log_softmax(logits.float(), -1)
    lq = torch.log_softmax(ref_logits.detach().float(), -1)
    lm = torch.logaddexp(lp, lq) - math.log(2.0)
    val = 0.5 * (lq.exp() * (lq - lm)).sum(-1) + 0.5 * (lp.exp() * (lp - lm)).sum(-1)
    return val.to(logp.dtype) * mask


class EntropyCoef:
    """State of the adaptive entropy coefficient (Skywork-OR1, section on adaptive entropy control).

    c_0 = 0; after each step k with mean entropy e_k: c_{k+1} = max(c_k + delta, 0)
    if e_k < target else max(c_k - delta, 0); alpha = c * 1[e_k <= target].
    """

    def __init__(self) -> None:
        self.c = torch.zeros(())
        self.alpha = torch.zeros(())
        self.tracker = StepMean()

    def observe(self, step, entropy: Tensor, mask: Tensor, target: float, delta: float) -> Tensor:
        """Record this call's entropy; when a new step starts, update c and alpha from the last one."""
        if self.tracker.add(step, (entropy.detach() * mask).sum(), mask.sum()):
            e = self.tracker.last
            up = torch.where(e < target, e.new_tensor(delta), e.new_tensor(-delta))
            self.c = (self.c.to(e.device) + up).clamp(min=0.0)
            self.alpha = self.c * (e <= target).to(self.c.dtype)
        return self.alpha

    def state_dict(self) -> dict:
        return {"c": self.c.clone(), "alpha": self.alpha.clone(), "tracker": self.tracker.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        self.c = torch.as_tensor(d["c"]).clone()
        self.alpha = torch.as_tensor(d["alpha"]).clone()
        self.tracker.load_state_dict(d["tracker"])


@register("drift", "entropy", paper="Skywork Open Reasoner 1 Technical Report", arxiv="2505.22312",
          peers="verl actor.entropy_coeff (fixed coefficient); TRL none; Skywork-OR1 adaptive_entropy", state=EntropyCoef)
def entropy(
    logp: Tensor,
    ref_logp: Tensor,
    mask: Tensor,
    *,
    entropy: Tensor,
    state: EntropyCoef | None = None,
    step: int | None = None,
    adaptive: bool = False,
    target: float = 0.2,
    delta: float = 0.005,
) -> Tensor:
    """Entropy bonus: penalty = -alpha * H(pi(. | s_t)), alpha = 1 or adaptive toward a target entropy.

    Fixed (`adaptive=False`): penalty = -H_t, scaled by the config coefficient
    (verl's entropy_coeff). Adaptive (Skywork-OR1, arXiv 2505.22312, "adaptive
    entropy control", tgt-ent 0.2, Delta 0.005): alpha_k = c_k * 1[e <= target],
    c_k = max(c_{k-1} +/- Delta, 0), up when e < target; set the config coefficient
    to 1. Departure: e is the token-mean entropy of the *previous* step (all its
    micro-batches, via `step`), not of the current batch, so every micro-batch of a
    step uses the same alpha whatever their order; `state` must then be given.
    Source status: NOT verified against the Skywork-OR1 report text or code; target 0.2, Delta
    0.005 and c_0 = 0 are unconfirmed.
    Shapes: entropy, mask (B, T) -> (B, T); logp / ref_logp unused.
    """
    if not adaptive:
        return -entropy * mask
    if state is None:
        raise ValueError("entropy drift with adaptive=True needs its state object (registry state=EntropyCoef)")
    alpha = state.observe(step, entropy, mask, target, delta)
    return -alpha.to(entropy.device, entropy.dtype) * entropy * mask
