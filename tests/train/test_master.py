"""bfloat16 parameters train through float32 master copies: the updates AdamW computes are kept, not rounded away."""

import pytest
import torch

from policyforge.train.config import ConfigError
from policyforge.train.master import MasterAdamW
from policyforge.train.setup import adamw


def _params(dtype):
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(64, 32).to(dtype)), torch.nn.Parameter(torch.randn(32).to(dtype))]


def _grads(step):
    g = torch.Generator().manual_seed(step)
    return [torch.randn(64, 32, generator=g).bfloat16(), torch.randn(32, generator=g).bfloat16()]


def test_masters_follow_float32_adamw_exactly_and_the_weights_are_their_rounding():
    half, full = _params(torch.bfloat16), [torch.nn.Parameter(p.detach().float()) for p in _params(torch.bfloat16)]
    opt_half = adamw(half, lr=1e-6, betas=(0.9, 0.99), weight_decay=0.01)
    opt_full = torch.optim.AdamW(full, lr=1e-6, betas=(0.9, 0.99), weight_decay=0.01)
    assert isinstance(opt_half, MasterAdamW) and type(adamw(full, lr=1e-6)) is torch.optim.AdamW
    for step in range(5):
        for params in (half, full):
            for p, g in zip(params, _grads(step)):
                p.grad = g.to(p.dtype)
        opt_half.step()
        opt_full.step()
        opt_half.zero_grad()
    for m, f, h in zip(opt_half.masters, full, half):
        assert torch.equal(m, f.detach())  # the same float32 arithmetic on the same gradients
        assert torch.equal(h.detach(), m.bfloat16())
    moved = [(m != p0.float()).float().mean().item() for m, p0 in zip(opt_half.masters, _params(torch.bfloat16))]
    assert min(moved) > 0.9  # steps of ~1e-6 (some cancel); in the bfloat16 weights nearly all of that rounds away


def test_plain_adamw_on_bfloat16_parameters_loses_rl_sized_updates():
    """Why MasterAdamW exists: the same five steps on the bfloat16 parameters themselves."""
    half = _params(torch.bfloat16)
    opt = torch.optim.AdamW(half, lr=1e-6, betas=(0.9, 0.99))
    for step in range(5):
        for p, g in zip(half, _grads(step)):
            p.grad = g
        opt.step()
    moved = (half[0].detach() != _params(torch.bfloat16)[0]).float().mean().item()
    assert moved < 0.05


def test_state_dict_carries_the_masters_and_a_state_without_them_starts_them_from_the_weights():
    half = _params(torch.bfloat16)
    opt = adamw(half, lr=1e-3)
    for p, g in zip(half, _grads(0)):
        p.grad = g
    opt.step()
    state = opt.state_dict()
    fresh_params = _params(torch.bfloat16)
    fresh = adamw(fresh_params, lr=1e-3)
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(fresh.masters, opt.masters))
    assert all(torch.equal(a.detach(), b.detach()) for a, b in zip(fresh_params, half))
    plain = torch.optim.AdamW([torch.nn.Parameter(p.detach().float()) for p in half], lr=1e-3).state_dict()
    fresh.load_state_dict(plain)  # e.g. a bfloat16 checkpoint written before the masters existed
    assert all(torch.equal(m, p.detach().float()) for m, p in zip(fresh.masters, fresh_params))
    with pytest.raises(ConfigError, match="holds 2 master weights for 1 trained parameters"):
        adamw([torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))], lr=1e-3).load_state_dict(state)
