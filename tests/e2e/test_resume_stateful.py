"""Every algorithm that keeps state across steps resumes exactly: stopped and resumed, a run logs
what an uninterrupted run logs (the state is in the checkpoint, not rebuilt from scratch)."""

import json

import pytest
import torch

from policyforge.algos.losses_ratio import BapoState, bapo
from policyforge.algos.registry import KINDS, table
from policyforge.train.algorithm import resolve
from policyforge.train.loop import train
from policyforge.metrics.step_record import TIMING
from tests.algos.inputs import make_batch

STATEFUL = [(kind, name) for kind in KINDS for name, e in table(kind).items() if e.state]


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
# file with Algorithm.load_state_dict disabled: aepo, spo and entropy then fail).
def _aepo(cfg, tmp_path):
    cfg.algo.loss = "aepo"


def _spo(cfg, tmp_path):  # per-prompt value estimates are reused only when prompts come back
    cfg.algo.advantage = "spo"
    _same_prompts_every_step(cfg, tmp_path)


def _entropy(cfg, tmp_path):  # the bonus keeps state in its adaptive mode, on while under the target
    cfg.algo.drift = {"entropy": 1.0}
    cfg.algo.drift_kwargs = {"entropy": {"adaptive": True, "target": 100.0, "delta": 0.1, "max_coef": 1.0}}


SETUPS = {("loss", "aepo"): _aepo, ("advantage", "spo"): _spo, ("drift", "entropy"): _entropy}

# Stateful, but with nothing a resume could lose. BAPO's state holds the clip bounds searched at the first call
# of an RL step, only so that the step's later micro-batches and updates reuse them; the next step searches
# afresh. A checkpoint is written only between steps, so a resumed run never reuses saved bounds: its resume
# test passed with Algorithm.load_state_dict disabled and checked nothing about state. What the exemption rests
# on, that saved bounds never reach the next step, is checked below.
NOTHING_TO_RESUME = {("loss", "bapo")}


def test_every_stateful_algorithm_has_a_setup():
    assert set(STATEFUL) == set(SETUPS) | NOTHING_TO_RESUME and not set(SETUPS) & NOTHING_TO_RESUME


def test_bapo_bounds_restored_from_a_checkpoint_do_not_reach_the_next_step():
    step0, step1 = make_batch(seed=0), make_batch(seed=3)  # their searches end at (0.9, 3.0) and (0.6, 1.2)
    args = lambda b: (b["logp"], b["old_logp"], b["adv"], b["mask"])  # noqa: E731
    trained = BapoState()
    bapo(*args(step0), state=trained, step=0)
    restored = BapoState()
    restored.load_state_dict(trained.state_dict())  # what a checkpoint after step 0 holds
    resumed, m = bapo(*args(step1), state=restored, step=1)
    fresh, m_fresh = bapo(*args(step1), state=BapoState(), step=1)
    assert torch.equal(resumed, fresh)
    assert m["bapo_c_low"] == m_fresh["bapo_c_low"] and m["bapo_c_high"] == m_fresh["bapo_c_high"]
    # not vacuous: step 0's bounds, were they used for step 1, would give another loss
    stale = BapoState()
    stale.load_state_dict({**trained.state_dict(), "step": 1})
    assert not torch.allclose(bapo(*args(step1), state=stale, step=1)[0], fresh)


@pytest.mark.parametrize("kind,name", list(SETUPS))
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
