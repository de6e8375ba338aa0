"""Every algorithm that keeps state across steps resumes exactly: stopped and resumed, a run logs
what an uninterrupted run logs (the state is in the checkpoint, not rebuilt from scratch)."""

import json

import pytest
import torch

from policyforge.algos.registry import KINDS, table
from policyforge.train.algorithm import resolve
from policyforge.train.loop import train

STATEFUL = [(kind, name) for kind in KINDS for name, e in table(kind).items() if e.state]
TIMING = {"step_s", "tokens_per_s", "rollout_s", "update_s"}


def _metrics(run) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _plain(x):
    """Nested state as plain Python values, so states with tensors of different sizes compare."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x.tolist() if isinstance(x, torch.Tensor) else x


def _same_prompts_every_step(cfg, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("rev:abc=", "rev:dog=", "x", "y")))
    cfg.data.path, cfg.data.eval_size = str(data), 2  # the first 2 rows are held out: 2 left, both every step


# For each state, settings under which it changes what the later steps do (checked by running this
# file with Algorithm.load_state_dict disabled: aepo, spo and entropy then fail; bapo does not, as
# it searches its clip bounds afresh at every step and its state only carries them within one).
def _aepo(cfg, tmp_path):
    cfg.algo.loss = "aepo"


def _bapo(cfg, tmp_path):  # two updates, so the second sees ratios the bounds act on
    cfg.algo.loss, cfg.optim.updates_per_batch = "bapo", 2


def _spo(cfg, tmp_path):  # per-prompt value estimates are reused only when prompts come back
    cfg.algo.advantage = "spo"
    _same_prompts_every_step(cfg, tmp_path)


def _entropy(cfg, tmp_path):  # the bonus keeps state in its adaptive mode, on while under the target
    cfg.algo.drift = {"entropy": 1.0}
    cfg.algo.drift_kwargs = {"entropy": {"adaptive": True, "target": 100.0, "delta": 0.1, "max_coef": 1.0}}


SETUPS = {("loss", "aepo"): _aepo, ("loss", "bapo"): _bapo, ("advantage", "spo"): _spo, ("drift", "entropy"): _entropy}


def test_every_stateful_algorithm_has_a_setup():
    assert set(STATEFUL) == set(SETUPS)


@pytest.mark.parametrize("kind,name", STATEFUL)
def test_stateful_algorithm_resumes_exactly(tiny_cfg, tmp_path, kind, name):
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"
    tiny_cfg.train.steps, tiny_cfg.train.save_every = 4, 100
    SETUPS[(kind, name)](tiny_cfg, tmp_path)
    whole = _metrics(train(tiny_cfg, log=lambda *_: None))

    tiny_cfg.train.run_name, tiny_cfg.train.stop_after = "interrupted", 2
    part = train(tiny_cfg, log=lambda *_: None)
    saved = torch.load(part / "checkpoints" / "step_000002" / "trainer.pt", weights_only=False)["algo"]
    fresh = resolve(tiny_cfg.algo).state_dict()
    assert _plain(saved) != _plain(fresh), "the state never moved: this run would not test resuming it"
    tiny_cfg.train.stop_after = None
    resumed = _metrics(train(tiny_cfg, resume=str(part), log=lambda *_: None))
    assert len(resumed) == 4
    assert resumed == whole
