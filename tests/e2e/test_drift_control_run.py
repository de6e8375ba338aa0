"""Reference sync and Elastic Reset in runs: option checks, the records, a hard sync's zero KL, exact resume."""

from __future__ import annotations

import json

import pytest

from policyforge.metrics.step_record import TIMING
from policyforge.train.config import ConfigError
from policyforge.train.loop import train
from policyforge.train.validate import validate


@pytest.mark.parametrize("change, message", [
    (lambda c: setattr(c.algo, "ref_sync_alpha", 0.0), "ref_sync_alpha=0.0: must be in"),
    (lambda c: setattr(c.algo, "elastic_ema_decay", 1.0), "elastic_ema_decay=1.0: must be in"),
    (lambda c: setattr(c.algo, "ref_sync_every", -1), "algo.ref_sync_every"),
    (lambda c: (setattr(c.algo, "ref_sync_every", 2), setattr(c.model, "lora_rank", 4)), "its own base"),
    (lambda c: (setattr(c.algo, "elastic_reset_every", 2), setattr(c.model, "dtype", "bfloat16")), "master copies"),
    (lambda c: (setattr(c.algo, "ref_sync_every", 2), setattr(c.model, "dtype", "bfloat16")), "rounds away"),
])
def test_bad_drift_control_options_are_refused(tiny_cfg, change, message):
    change(tiny_cfg)
    with pytest.raises(ConfigError, match=message):
        validate(tiny_cfg)


def test_a_reference_sync_that_would_change_no_loss_or_a_teacher_is_refused(tiny_cfg):
    tiny_cfg.algo.ref_sync_every = 2  # train.track_ref_kl is on, but it only logs the KL
    with pytest.raises(ConfigError, match="no term of the loss uses it"):
        train(tiny_cfg, log=lambda *_: None)
    tiny_cfg.algo.loss = "kdrl"
    with pytest.raises(ConfigError, match="the reference is its teacher"):
        train(tiny_cfg, log=lambda *_: None)
    assert not (tiny_cfg.train.out_dir and __import__("pathlib").Path(tiny_cfg.train.out_dir, "run").exists())


def _metrics(run) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_a_hard_sync_every_step_keeps_the_reference_at_the_policy(tiny_cfg):
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"
    tiny_cfg.train.steps, tiny_cfg.optim.lr = 4, 1e-2
    tiny_cfg.algo.drift = {"k3": 0.1}
    fixed = _metrics(train(tiny_cfg, log=lambda *_: None))
    tiny_cfg.train.run_name = "synced"
    tiny_cfg.algo.ref_sync_every, tiny_cfg.algo.ref_sync_alpha = 1, 1.0
    synced = _metrics(train(tiny_cfg, log=lambda *_: None))
    assert [r["ref_synced"] for r in synced] == [1.0] * 4
    assert fixed[-1]["kl_ref"] > 1e-3  # the policy moved away from a fixed reference
    # each step samples from the policy the reference was just set to: KL 0 up to the sampler's rounding
    assert all(abs(r["kl_ref"]) < 1e-5 for r in synced[1:])


def test_resume_is_exact_with_reference_sync_and_elastic_reset(tiny_cfg):
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"
    tiny_cfg.train.steps, tiny_cfg.train.save_every, tiny_cfg.optim.lr = 7, 100, 1e-2
    tiny_cfg.optim.updates_per_batch = 2  # the EMA follows both optimiser steps of each RL step
    tiny_cfg.algo.drift = {"k3": 0.1}
    tiny_cfg.algo.ref_sync_every, tiny_cfg.algo.ref_sync_alpha = 2, 0.5
    tiny_cfg.algo.elastic_reset_every, tiny_cfg.algo.elastic_ema_decay = 3, 0.8
    whole = _metrics(train(tiny_cfg, log=lambda *_: None))
    assert [r["ref_synced"] for r in whole] == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert [r["elastic_reset"] for r in whole] == [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    # stopped between two resets: the resumed run needs the saved EMA (one step in) and moved reference
    tiny_cfg.train.run_name, tiny_cfg.train.stop_after = "interrupted", 4
    part = train(tiny_cfg, log=lambda *_: None)
    tiny_cfg.train.stop_after = None
    assert _metrics(train(tiny_cfg, resume=str(part), log=lambda *_: None)) == whole


def test_the_ema_follows_every_optimiser_step(tiny_cfg):
    """Decay 0: the EMA is the weights of the last optimiser step, so a reset changes nothing, and the run is
    the run without Elastic Reset. An EMA that missed steps would reset the policy to older weights."""
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"
    tiny_cfg.train.steps, tiny_cfg.optim.lr, tiny_cfg.optim.updates_per_batch = 4, 1e-2, 2
    plain = _metrics(train(tiny_cfg, log=lambda *_: None))
    tiny_cfg.train.run_name = "reset"
    tiny_cfg.algo.elastic_reset_every, tiny_cfg.algo.elastic_ema_decay = 2, 0.0
    reset = _metrics(train(tiny_cfg, log=lambda *_: None))
    assert [r.pop("elastic_reset") for r in reset] == [0.0, 1.0, 0.0, 1.0]
    assert reset == plain
