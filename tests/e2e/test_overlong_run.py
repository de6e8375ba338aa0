"""algo.overlong_buffer (DAPO's soft overlong punishment) in the RL step: the penalty is added to the reward the
advantages see, logged, and left out of what counts as solved."""

import json
from pathlib import Path

import pytest
import torch

from policyforge.data.tasks import BuiltinTask
from policyforge.models.load import load_model
from policyforge.rewards.overlong import soft_overlong_punishment
from policyforge.train.algorithm import resolve
from policyforge.train.config import ConfigError
from policyforge.train.loop import StepParts, train_step
from policyforge.train.setup import build_optimizer


def always_one(prompt, completion, **_):
    """Every completion solved: without the penalty every group's rewards are equal."""
    return 1.0


def _step_with_varied_lengths(cfg):
    """A step whose groups hold completions of different lengths (the generator seed is searched)."""
    model, tok = load_model(cfg.model.path, "float32", "cpu", 0)
    task = BuiltinTask("reversal", size=4, seed=0)
    examples = [task.train_example(i) for i in range(cfg.rollout.prompts_per_step)]
    for seed in range(40):
        opt, sched = build_optimizer(model, cfg)
        parts = StepParts(cfg, resolve(cfg.algo), model, tok, None, opt, sched, torch.Generator().manual_seed(seed),
                          always_one)
        rec, batch = train_step(parts, 1, examples)
        lengths = batch.completion_mask.sum(-1)
        if any(len(set(lengths[batch.group == g].tolist())) > 1 for g in batch.group.unique()):
            return rec, batch
    pytest.fail("no step had completions of different lengths in a group")


def test_the_penalty_is_in_the_reward_and_the_record_but_not_in_accuracy(tiny_cfg):
    tiny_cfg.rollout.max_new_tokens = 6
    tiny_cfg.algo.overlong_buffer, tiny_cfg.algo.overlong_penalty = 4, 0.5
    tiny_cfg.train.track_ref_kl = False
    rec, batch = _step_with_varied_lengths(tiny_cfg)
    lengths = batch.completion_mask.sum(-1)
    want = soft_overlong_punishment(lengths, 6, 4, 0.5)
    torch.testing.assert_close(batch.length_penalty, want)
    torch.testing.assert_close(batch.scores, 1.0 + want)
    assert rec["accuracy"] == 1.0  # every row solved, however long
    assert rec["overlong_penalty"] == pytest.approx(float(want.mean()))
    assert rec["reward_mean"] == pytest.approx(1.0 + float(want.mean()))
    assert rec["zero_var_group_frac"] < 1.0 and rec["grad_norm"] > 0.0  # lengths differ, so advantages do


def test_without_the_option_nothing_changes(tiny_cfg):
    tiny_cfg.rollout.max_new_tokens = 6
    tiny_cfg.train.track_ref_kl = False
    rec, batch = _step_with_varied_lengths(tiny_cfg)
    assert batch.length_penalty is None and "overlong_penalty" not in rec
    assert torch.equal(batch.scores, torch.ones(len(batch))) and rec["grad_norm"] == 0.0


def test_the_options_reach_the_run_from_the_command_line(tiny_cfg, tmp_path):
    from policyforge.cli import main

    main(["train", "--model.path", tiny_cfg.model.path, "--data.task", "reversal", "--data.task-size", "4",
          "--data.eval-size", "2", "--rollout.prompts-per-step", "2", "--rollout.group-size", "4",
          "--rollout.max-new-tokens", "3", "--train.steps", "1", "--train.out-dir", str(tmp_path),
          "--train.run-name", "r", "--train.no-progress", "--train.no-track-ref-kl",
          "--algo.overlong-buffer", "3", "--algo.overlong-penalty", "2"])
    rec = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    # a buffer of the whole budget: every token costs 2/3, so the mean penalty is -2/3 of the mean length
    assert rec["overlong_penalty"] == pytest.approx(-2 / 3 * rec["completion_len_mean"], rel=1e-5)
    text = (tmp_path / "r" / "config.yaml").read_text()
    assert "overlong_buffer: 3" in text and "overlong_penalty: 2.0" in text


def test_tempered_rows_stay_out_of_the_logged_penalty(tiny_cfg):
    """AEPO's tempered rows are left out of reward_mean, so out of its overlong share too."""
    from policyforge.metrics.step_record import step_record

    tiny_cfg.rollout.max_new_tokens = 6
    tiny_cfg.algo.overlong_buffer = 6
    tiny_cfg.train.track_ref_kl = False
    _, batch = _step_with_varied_lengths(tiny_cfg)
    own = torch.arange(len(batch)) % 2 == 0
    batch.source = ["fresh" if o else "tempered" for o in own.tolist()]
    rec = step_record(1, batch, {}, None, 0.1)
    assert rec["overlong_penalty"] == pytest.approx(float(batch.length_penalty[own].mean()))
    assert rec["reward_mean"] == pytest.approx(1.0 + rec["overlong_penalty"])
    assert rec["overlong_penalty"] != pytest.approx(float(batch.length_penalty.mean()))


def test_evaluation_never_adds_the_penalty(tiny_cfg):
    """Every completion pays (a buffer of the whole budget), yet every held-out answer counts as solved."""
    from policyforge.train.loop import train

    tiny_cfg.data.reward = "tests.e2e.test_overlong_run:always_one"
    tiny_cfg.algo.overlong_buffer = tiny_cfg.rollout.max_new_tokens
    tiny_cfg.train.steps = 1
    run = train(tiny_cfg, log=lambda *_: None)
    evals = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert [e["accuracy"] for e in evals] == [1.0, 1.0]
    rec = json.loads((run / "metrics.jsonl").read_text())
    assert rec["accuracy"] == 1.0 and rec["reward_mean"] < 1.0 and rec["overlong_penalty"] < 0.0


def test_the_estimators_that_read_the_reward_as_success_are_marked():
    from policyforge.algos.registry import table

    marked = {name for name, e in table("advantage").items() if e.success_reward}
    assert marked == {"passk", "bnpo", "mapo", "spo", "copo"}


@pytest.mark.parametrize("setting, match", [
    ({"overlong_buffer": 5}, r"algo.overlong_buffer=5: .* in \[0, 4\]"),
    ({"overlong_penalty": 0.5}, r"algo.overlong_penalty=0.5 without algo.overlong_buffer"),
    *[({"overlong_buffer": 2, "advantage": name}, rf"algo.overlong_buffer with algo.advantage='{name}': it reads "
       "the reward as success") for name in ("passk", "bnpo", "mapo", "spo", "copo")],
    ({"overlong_buffer": -1}, r"algo.overlong_buffer=-1"),
    ({"overlong_buffer": 2, "overlong_penalty": -1.0}, r"algo.overlong_penalty=-1.0: .* greater than 0"),
    ({"overlong_buffer": 2, "overlong_penalty": 0.0}, r"algo.overlong_penalty=0.0: .*\(0 would add nothing"),
    ({"overlong_buffer": 2, "loss": "psft"}, r"algo.overlong_buffer with algo.loss='psft'"),
    ({"overlong_buffer": 2, "advantage": "gdpo"}, r"algo.overlong_buffer with algo.advantage='gdpo'"),
])
def test_bad_settings_are_refused_by_name(tiny_cfg, setting, match):
    from policyforge.train.loop import train

    for k, v in setting.items():
        setattr(tiny_cfg.algo, k, v)
    with pytest.raises(ConfigError, match=match):
        train(tiny_cfg, log=lambda *_: None)
    assert not Path(tiny_cfg.train.out_dir, "run").exists()  # refused before anything was written
