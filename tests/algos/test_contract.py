"""Contract tests run over every registry entry (DESIGN.md, "The contract of the math")."""

from __future__ import annotations

import pytest
import torch

from policyforge.algos import table
from tests.algos.inputs import B, T, call_entry, make_batch

ADVANTAGES = sorted(table("advantage"))
LOSSES = sorted(table("loss"))
DRIFTS = sorted(table("drift"))
AGGREGATIONS = sorted(table("aggregation"))


@pytest.mark.parametrize("name", ADVANTAGES)
def test_advantage_shape_and_finite(name):
    batch = make_batch()
    adv = call_entry(table("advantage")[name], batch)
    assert adv.shape in {(B,), (B, T)}
    assert torch.isfinite(adv).all()


@pytest.mark.parametrize("name", ADVANTAGES)
def test_advantage_docstring_names_paper(name):
    e = table("advantage")[name]
    assert e.paper and e.fn.__doc__ and "Shapes" in e.fn.__doc__


@pytest.mark.parametrize("name", LOSSES)
def test_loss_shape_metrics_and_masked_gradient(name):
    batch = make_batch(grad=True)
    loss, metrics = call_entry(table("loss")[name], batch)
    assert loss.shape == (B, T)
    assert torch.isfinite(loss).all()
    assert (loss[batch["mask"] == 0] == 0).all(), "loss must be zero on masked tokens"
    for k, v in metrics.items():
        assert v.dim() == 0 and not v.requires_grad, k
    loss.sum().backward()
    grad = batch["logits"].grad
    assert grad is not None and torch.isfinite(grad).all()
    assert (grad[batch["mask"] == 0] == 0).all(), "masked tokens must get zero gradient"


@pytest.mark.parametrize("name", LOSSES)
def test_zero_advantage_gives_zero_policy_gradient(name):
    e = table("loss")[name]
    if getattr(e.fn, "zero_adv_exempt", None):
        pytest.skip(e.fn.zero_adv_exempt)
    batch = make_batch(grad=True)
    batch["adv"] = torch.zeros(B)
    loss, _ = call_entry(e, batch)
    loss.sum().backward()
    assert torch.allclose(batch["logits"].grad, torch.zeros_like(batch["logits"]), atol=1e-7)


@pytest.mark.parametrize("name", LOSSES)
def test_loss_docstring(name):
    e = table("loss")[name]
    assert e.paper and e.fn.__doc__ and "Shapes" in e.fn.__doc__


@pytest.mark.parametrize("name", DRIFTS)
def test_drift_shape_and_masked_gradient(name):
    batch = make_batch(grad=True)
    pen = call_entry(table("drift")[name], batch)
    assert pen.shape == (B, T) and torch.isfinite(pen).all()
    assert (pen[batch["mask"] == 0] == 0).all()
    pen.sum().backward()
    assert (batch["logits"].grad[batch["mask"] == 0] == 0).all()


@pytest.mark.parametrize("name", AGGREGATIONS)
def test_aggregation_is_exact_under_micro_batching(name):
    """Sum of micro-batch losses with global counts == the full-batch loss, and so are gradients."""
    e = table("aggregation")[name]
    batch = make_batch(grad=True)
    mask = batch["mask"]
    per_token = -batch["logp"]
    full = e.fn(per_token, mask)
    (g_full,) = torch.autograd.grad(full, batch["logits"], retain_graph=True)
    counts = {"num_tokens": int(mask.sum()), "num_seqs": mask.shape[0], "max_len": mask.shape[1]}
    acc = 0.0
    for idx in (slice(0, 3), slice(3, 5), slice(5, B)):
        acc = acc + e.fn(per_token[idx], mask[idx], **counts)
    (g_acc,) = torch.autograd.grad(acc, batch["logits"])
    assert torch.allclose(acc, full, atol=1e-6)
    assert torch.allclose(g_acc, g_full, atol=1e-6)


def _select(batch: dict, keep: torch.Tensor) -> dict:
    """The batch restricted to the samples `keep` (every per-sample input indexed)."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == B:
            out[k] = v[keep]
        elif isinstance(v, list):
            out[k] = [v[i] for i in keep.tolist()]
        else:
            out[k] = v
    return out


def zero_adv_violation(entry, token_level: bool, **hyper) -> str | None:
    """Why samples with zero advantage are not inert under `entry`, or None when they are.

    Inert: their loss and the gradient reaching their logits are exactly zero, and the other
    samples' losses are the same with them removed from the batch.
    """
    batch = make_batch(grad=True)
    zero = torch.tensor([1, 4, 6])
    adv = torch.randn(B, T, generator=torch.Generator().manual_seed(3)) if token_level else batch["adv"].clone()
    adv[zero] = 0.0
    batch["adv"] = adv
    loss, _ = call_entry(entry, batch, **hyper)
    loss.sum().backward()
    if not (loss[zero] == 0).all():
        return "zero-advantage samples have a nonzero loss"
    if not (batch["logits"].grad[zero] == 0).all():
        return "zero-advantage samples get a gradient"
    keep = torch.tensor([i for i in range(B) if i not in zero.tolist()])
    sub, _ = call_entry(entry, _select(batch, keep), **hyper)
    if not torch.allclose(sub, loss[keep].detach(), atol=1e-6):
        return "the other samples' losses change when zero-advantage samples are removed"
    return None


INERT = sorted(n for n, e in table("loss").items() if e.zero_adv_inert)


@pytest.mark.parametrize("token_level", [False, True])
@pytest.mark.parametrize("name", INERT)
def test_zero_adv_inert_losses_are_inert(name, token_level):
    """The flag that lets the trainer skip the backward of zero-advantage samples holds."""
    assert not getattr(table("loss")[name].fn, "zero_adv_exempt", None), "inert and exempt contradict each other"
    assert zero_adv_violation(table("loss")[name], token_level) is None


@pytest.mark.parametrize("name,hyper,why", [
    ("cpgd", {}, "nonzero loss"),  # its drift term pulls toward pi_old
    ("opmd", {}, "nonzero loss"),  # its mirror-descent term does too
    ("clip_cov", {"clip_frac": 0.3, "cov_low": -100.0, "cov_high": 100.0}, "change when"),  # batch-wide draw
])
def test_zero_adv_check_catches_losses_that_are_not_inert(name, hyper, why):
    """The check above can fail: a pull toward pi_old and a batch-wide token selection are caught."""
    assert not table("loss")[name].zero_adv_inert
    assert why in (zero_adv_violation(table("loss")[name], False, **hyper) or "")


def test_a_loss_paper_aggregation_names_a_registered_one():
    declared = {name: e.aggregation for name, e in table("loss").items() if e.aggregation}
    assert {"gspo", "gmpo", "sapo"} <= set(declared)  # the sequence-level losses
    assert set(declared.values()) <= set(AGGREGATIONS)


@pytest.mark.parametrize("kind,name", [(k, n) for k in ("advantage", "loss", "drift", "aggregation")
                                       for n in sorted(table(k))])
def test_every_builtin_passes_the_start_up_check(kind, name):
    """The check the trainer runs on a user's functions (algos/contract.py) passes every built-in, on a batch with a
    zero-variance group."""
    from policyforge.algos.contract import check_entry

    check_entry(table(kind)[name])
