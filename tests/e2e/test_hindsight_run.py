"""HeRL in whole runs: a group none of whose answers meets every rubric item has its best answers rewritten from
their hindsight, and rewrites (or copies of its best answers) take the place of k of its rows; a resume continues
exactly; settings it cannot use fail before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policyforge.train.config import ConfigError
from policyforge.train.loop import train
from tests.e2e.test_data_parallel import _metrics, assert_resume_is_exact


def never_right(prompt, completion, **_):
    """Two rubric items: an answer is never right, and says something or not."""
    return {"correct": 0.0, "said_something": float(bool(completion.strip()))}


def a_number(prompt, completion, **_):
    return 0.0


@pytest.fixture
def herl_cfg(tiny_cfg):
    tiny_cfg.rollout.refinements, tiny_cfg.rollout.refine_method, tiny_cfg.rollout.critique = 1, "herl", "rubric"
    tiny_cfg.data.reward = "tests.e2e.test_hindsight_run:never_right"  # every group fails: each gets hindsight
    tiny_cfg.train.steps, tiny_cfg.train.log_rollouts = 3, 100
    return tiny_cfg


def test_each_failed_group_keeps_its_size_with_k_rows_replaced(herl_cfg):
    run = train(herl_cfg, log=lambda *_: None)
    lines = [json.loads(x) for x in (run / "rollouts.jsonl").read_text().splitlines()]
    refined = 0
    for step in (1, 2, 3):
        rows = [x for x in lines if x["step"] == step]
        assert [x["group"] for x in rows] == [0] * 4 + [1] * 4  # the groups keep their size
        for x in rows:
            if x["source"] == "refined":
                refined += 1
                assert x["extra"]["critique"].startswith("met: ") and "unmet: correct" in x["extra"]["critique"]
                assert x["reward"] >= max(y["reward"] for y in rows if y["group"] == x["group"] and
                                          y["source"] != "refined") - 0.05  # it reached the group's best
        # a rewritten answer's reward carries its bonus: alpha (r_rewrite - r)
        assert any("hindsight_bonus" in x.get("extra", {}) for x in rows)
    assert refined > 0
    assert all(r["refined_groups"] <= 2 for r in _metrics(run))


def test_a_herl_run_resumes_exactly(herl_cfg):
    assert_resume_is_exact(herl_cfg, stop_after=2)


@pytest.mark.parametrize("changes, says", [
    ({"refine_method": "herl2"}, "rollout.refine_method='herl2': one of critique_grpo, herl"),
    ({"refine_method": "critique_grpo"}, "rollout.critique rubric is HeRL's hindsight"),
    ({"hindsight_bonus": -0.1}, "rollout.hindsight_bonus=-0.1: alpha"),
    ({"refine_method": "critique_grpo", "critique": "indicative", "hindsight_bonus": 0.1},
     "rollout.hindsight_bonus is read only by HeRL"),
    ({"refinements": 0}, "rollout.refine_method is read only by Critique-GRPO and HeRL"),
    ({"allocation": "knapsack"}, "knapsack with rollout.refine_method herl"),
    ({"advantage": "gdpo"}, "refinements=1 with algo.advantage=gdpo .*set rollout.hindsight_bonus 0"),
])
def test_settings_herl_cannot_use_fail_before_anything_is_written(herl_cfg, changes, says):
    for k, v in changes.items():
        setattr(herl_cfg.algo if k == "advantage" else herl_cfg.rollout, k, v)
    with pytest.raises(ConfigError, match=says):
        train(herl_cfg, log=lambda *_: None)
    assert not (Path(herl_cfg.train.out_dir) / "run").exists()


def test_a_rubric_needs_a_reward_with_components_before_anything_is_written(herl_cfg):
    herl_cfg.data.reward = "tests.e2e.test_hindsight_run:a_number"
    with pytest.raises(ConfigError, match="the reward gave one number a row: return a dict of rubric items"):
        train(herl_cfg, log=lambda *_: None)
    assert not any(Path(herl_cfg.train.out_dir).glob("*/config.yaml"))


def test_herl_with_a_critique_of_its_own_needs_no_rubric(herl_cfg):
    herl_cfg.rollout.critique, herl_cfg.data.reward = "indicative", "tests.e2e.test_hindsight_run:a_number"
    run = train(herl_cfg, log=lambda *_: None)
    lines = [json.loads(x) for x in (run / "rollouts.jsonl").read_text().splitlines()]
    assert {x["extra"]["critique"] for x in lines if x["source"] == "refined"} <= {"the answer is incorrect."}
    assert len(lines) == 3 * 8


def shouting_items(prompt, completion, **_):
    return {"Correct": 0.0, "said_something": 1.0}


def test_a_rubric_item_the_tokenizer_cannot_read_is_found_at_start_up(herl_cfg):
    from policyforge.data.tasks import DataError

    herl_cfg.data.reward = "tests.e2e.test_hindsight_run:shouting_items"
    with pytest.raises(DataError, match="refinement prompt.*characters the tokenizer does not know \\('C'\\)"):
        train(herl_cfg, log=lambda *_: None)


def test_torchrun_runs_hindsight_on_each_process_s_groups_and_resumes_exactly(small_model_dir, tmp_path):
    from tests.e2e.test_data_parallel import assert_torchrun_resume_is_exact

    herl = ["--data.reward", "tests.e2e.test_hindsight_run:never_right", "--rollout.refinements", "1",
            "--rollout.refine-method", "herl", "--rollout.critique", "rubric", "--train.log-rollouts", "1000"]
    whole = assert_torchrun_resume_is_exact(small_model_dir, tmp_path, herl, stop_after=2)
    rows = [json.loads(x) for x in (whole / "rollouts.jsonl").read_text().splitlines()]
    for step in (1, 2, 3):  # 4 groups of 4 every step, each group whole, from both processes
        assert sorted(x["group"] for x in rows if x["step"] == step) == [g for g in range(4) for _ in range(4)]
    assert any(x["source"] == "refined" or x.get("extra", {}).get("hindsight_copy") for x in rows)
