"""Every registered estimator, loss and drift term trains the tiny model for 2 steps."""

import json

import pytest

from policyforge.algos import table
from policyforge.train.loop import train


def _run(cfg):
    run = train(cfg, log=lambda *_: None)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert all(r["loss"] == r["loss"] for r in rows), "loss is NaN"
    return rows


@pytest.mark.parametrize("name", sorted(table("advantage")))
def test_advantage_runs_end_to_end(tiny_cfg, name):
    tiny_cfg.algo.advantage = name
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"
    _run(tiny_cfg)


@pytest.mark.parametrize("name", sorted(table("loss")))
def test_loss_runs_end_to_end(tiny_cfg, name):
    tiny_cfg.algo.loss = name
    tiny_cfg.optim.updates_per_batch = 2
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"
    _run(tiny_cfg)


@pytest.mark.parametrize("name", sorted(table("drift")))
def test_drift_runs_end_to_end(tiny_cfg, name):
    tiny_cfg.algo.drift = {name: 0.05}
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"
    _run(tiny_cfg)


@pytest.mark.parametrize("name", sorted(table("aggregation")))
def test_aggregation_runs_end_to_end(tiny_cfg, name):
    tiny_cfg.algo.aggregation = name
    tiny_cfg.optim.micro_batch_size = 3
    _run(tiny_cfg)
