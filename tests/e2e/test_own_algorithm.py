"""A researcher's own algorithm in whole runs: named in algo.plugins, recorded, resumed, and stopped when it breaks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from policyforge import api
from policyforge.algos import register
from policyforge.algos.registry import _TABLES
from policyforge.train.step import NonFiniteUpdate

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "my_algorithm.py")


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_example_plugin_trains_records_itself_and_resumes_in_a_new_process(tiny_cfg):
    tiny_cfg.algo.plugins = [EXAMPLE]
    tiny_cfg.algo.advantage, tiny_cfg.algo.loss, tiny_cfg.algo.drift = "rank_centred", "soft_clip", {"sq_log": 0.01}
    tiny_cfg.algo.loss_kwargs = {"width": 0.3}
    tiny_cfg.train.stop_after = 1
    run = api.train(tiny_cfg, log=lambda *_: None)
    saved = api.load_yaml(run / "config.yaml").algo
    assert saved.plugins == [EXAMPLE] and saved.loss == "soft_clip" and saved.loss_kwargs == {"width": 0.3}
    first = _records(run)[0]
    assert {"soft_ratio_mean", "soft_saturated_frac", "drift/sq_log", "kl_ref"} <= set(first)
    # a fresh interpreter knows nothing of the example until config.yaml's algo.plugins imports it
    out = subprocess.run([sys.executable, "-m", "policyforge.cli", "train", "--resume", str(run)],
                         capture_output=True, text=True, cwd=run.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [r["step"] for r in _records(run)] == [1, 2]


def _module_level_loss(logp, old_logp, adv, mask):
    """-A log pi, registered from a test module that algo.plugins does not name."""
    a = adv[:, None] if adv.dim() == 1 else adv
    return -a * logp * mask, {}


@pytest.fixture
def registered_here():
    register("loss", "t_here", paper="x")(_module_level_loss)
    yield
    _TABLES["loss"].pop("t_here", None)


def test_a_function_registered_outside_plugins_is_recorded_by_its_module(tiny_cfg, registered_here):
    tiny_cfg.algo.loss, tiny_cfg.train.steps = "t_here", 1
    run = api.train(tiny_cfg, log=lambda *_: None)
    assert api.load_yaml(run / "config.yaml").algo.plugins == ["tests.e2e.test_own_algorithm"]


NAN_AT_STEP_2 = '''
import torch
from policyforge.algos import register


@register("loss", "t_nan_later", paper="x")
def nan_later(logp, old_logp, adv, mask, *, step):
    """-A log pi, NaN from step 2 on (the start-up check calls it at step 0)."""
    a = adv[:, None] if adv.dim() == 1 else adv
    loss = -a * logp * mask
    return (loss * float("nan") if step >= 2 else loss), {}
'''


def test_a_nan_gradient_stops_the_run_before_the_update_and_keeps_the_last_checkpoint(tiny_cfg, tmp_path):
    plugin = tmp_path / "nan_later.py"
    plugin.write_text(NAN_AT_STEP_2)
    tiny_cfg.algo.plugins, tiny_cfg.algo.loss = [str(plugin)], "t_nan_later"
    tiny_cfg.train.steps, tiny_cfg.train.save_every = 3, 1
    try:
        with pytest.raises(NonFiniteUpdate, match=r"step 2: the gradient is not finite \(norm nan.*the update was not "
                                                  r"applied.*loss 't_nan_later' \(.*nan_later\.py:\d+\)"):
            api.train(tiny_cfg, log=lambda *_: None)
    finally:
        _TABLES["loss"].pop("t_nan_later", None)
    run = Path(tiny_cfg.train.out_dir) / tiny_cfg.train.run_name
    assert [r["step"] for r in _records(run)] == [1]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000001"
    weights = load_file(run / "checkpoints" / "step_000001" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert all(math.isfinite(v) for v in _records(run)[0].values() if isinstance(v, float))
