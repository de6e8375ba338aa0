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
