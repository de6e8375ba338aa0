"""Reference sync (TR-DPO) and Elastic Reset on hand-computed weights (runs: tests/e2e/test_drift_control_run.py)."""

from __future__ import annotations

import pytest
import torch

from policyforge.train.config import ConfigError
from policyforge.train.drift_control import ElasticReset, ReferenceSync, mix_into


def _linear(weight: list[float]) -> torch.nn.Linear:
    layer = torch.nn.Linear(len(weight), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weight]))
    return layer


def test_mix_into_by_hand():
    t = [torch.tensor([1.0, 2.0])]
    mix_into(t, [torch.tensor([3.0, 6.0])], 0.25)
    assert t[0].tolist() == [1.5, 3.0]  # 0.25 * 3 + 0.75 * 1, 0.25 * 6 + 0.75 * 2
    mix_into(t, [torch.tensor([-1.0, 0.5])], 1.0)
    assert t[0].tolist() == [-1.0, 0.5]


def test_reference_sync_every_tau_steps():
    policy, ref = _linear([4.0, 8.0]), _linear([0.0, 0.0])
    sync = ReferenceSync(ref, policy, every=3, alpha=0.5)
    assert [sync.after_step(s) for s in (1, 2)] == [False, False]
    assert ref.weight.tolist() == [[0.0, 0.0]]
    assert sync.after_step(3)
    assert ref.weight.tolist() == [[2.0, 4.0]]  # 0.5 * policy + 0.5 * ref
    assert sync.after_step(6)
    assert ref.weight.tolist() == [[3.0, 6.0]]
    with pytest.raises(ConfigError, match="the policy's architecture"):
        ReferenceSync(_linear([0.0, 0.0, 0.0]), policy, every=1, alpha=1.0)


def test_elastic_reset_takes_the_ema_then_restarts_it():
    policy = _linear([1.0, 1.0])
    reset = ElasticReset(policy, every=2, decay=0.5)
    with torch.no_grad():
        policy.weight.copy_(torch.tensor([[3.0, 5.0]]))  # an optimiser step
    reset.update_ema()
    assert not reset.after_step(1)
    assert reset.ema[0].tolist() == [[2.0, 3.0]]  # 0.5 * initial + 0.5 * policy
    with torch.no_grad():
        policy.weight.copy_(torch.tensor([[6.0, 1.0]]))  # another
    reset.update_ema()
    assert reset.after_step(2)
    assert policy.weight.tolist() == [[4.0, 2.0]]  # the EMA: 0.5 * [2, 3] + 0.5 * [6, 1]
    assert reset.ema[0].tolist() == [[1.0, 1.0]]  # back to the initial weights
    saved = reset.state_dict()
    other = ElasticReset(_linear([9.0, 9.0]), every=2, decay=0.5)
    other.load_state_dict(saved)
    assert other.ema[0].tolist() == [[1.0, 1.0]] and other.initial[0].tolist() == [[1.0, 1.0]]
