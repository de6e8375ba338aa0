"""Knapsack RL end to end: with rollout.allocation knapsack a prompt seen often enough gets a group size from its
success rate when last trained on, the step's rollouts still add up to prompts x group_size, the run records the
allocation, resumes exactly (also under torchrun), and refuses settings it cannot use."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from policyforge.data.budget import PromptHistory, allocate
from policyforge.train.config import ConfigError
from policyforge.train.loop import train
from tests.e2e.test_data_parallel import _metrics, assert_resume_is_exact, assert_torchrun_resume_is_exact


def _rows(path: Path, n: int = 6) -> str:
    path.write_text("".join(json.dumps({"prompt": f"rev:{w}=", "answer": w[::-1]}) + "\n"
                            for w in ("abc", "dog", "cat", "fig", "hen", "owl", "yak", "elk")[:n]))
    return str(path)


@pytest.fixture
def knap_cfg(tiny_cfg, tmp_path):
    tiny_cfg.data.path, tiny_cfg.data.eval_size = _rows(tmp_path / "rows.jsonl"), 2  # 4 training rows: 2 steps an epoch
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"  # solved (>= 1) when a vowel is sampled: p in (0, 1)
    tiny_cfg.rollout.allocation, tiny_cfg.optim.lr = "knapsack", 1e-6  # the policy stays near random: p stays mixed
    tiny_cfg.train.steps, tiny_cfg.train.log_rollouts = 8, 1000  # every row
    tiny_cfg.optim.micro_batch_size = 3  # a group larger than a micro-batch is trained in pieces
    return tiny_cfg


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_group_sizes_follow_the_prompts_success_rates_within_the_uniform_budget(knap_cfg):
    run = train(knap_cfg, log=lambda *_: None)
    rows = _lines(run / "rollouts.jsonl")
    records = _metrics(run)
    history = PromptHistory()
    for r in records:
        step_rows = [x for x in rows if x["step"] == r["step"]]
        assert len(step_rows) == 2 * 4  # prompts_per_step x group_size, however shared out
        sizes = Counter(x["prompt"] for x in step_rows)
        prompts = list(dict.fromkeys(x["prompt"] for x in step_rows))  # in group order
        estimates = [history.estimate(p) for p in prompts]
        assert [sizes[p] for p in prompts] == allocate(estimates, 4, 2, 128)  # what the history then said
        assert r["prompts_estimated"] == sum(e is not None for e in estimates)
        assert (r["group_size_min"], r["group_size_max"]) == (min(sizes.values()), max(sizes.values()))
        history.observe([x["prompt"] for x in step_rows], [x["reward"] >= 1 for x in step_rows])
    assert records[0]["prompts_estimated"] == 0 and records[-1]["prompts_estimated"] == 2  # seen 8 times by then
    assert any(r["group_size_max"] > 4 for r in records)  # the knapsack moved rollouts between prompts


def test_a_knapsack_run_resumes_exactly(knap_cfg):
    assert_resume_is_exact(knap_cfg, stop_after=5)  # the history of steps 1-5 comes back from the checkpoint


def test_settings_knapsack_cannot_use_fail_before_anything_is_written(knap_cfg):
    for change, message in (({"allocation": "greedy"}, "rollout.allocation='greedy'; valid: uniform, knapsack"),
                            ({"allocation_min_group": 5}, "need 2 <= min <= group_size <= max"),
                            ({"allocation_max_group": 3}, "need 2 <= min <= group_size <= max"),
                            ({"dynamic_sampling": "reward"}, "allocation=knapsack with rollout.dynamic_sampling"),
                            ({"allocation": "uniform", "allocation_max_group": 64},
                             "read only by rollout.allocation knapsack")):
        saved = {k: getattr(knap_cfg.rollout, k) for k in change}
        for k, v in change.items():
            setattr(knap_cfg.rollout, k, v)
        with pytest.raises(ConfigError, match=message):
            train(knap_cfg, log=lambda *_: None)
        for k, v in saved.items():
            setattr(knap_cfg.rollout, k, v)
    knap_cfg.data.reward = "tests.e2e.test_train:vowel_reward, policyforge.data.tasks:exact_match"
    with pytest.raises(ConfigError, match="knapsack with a reward whose 'solved' is unclear"):
        train(knap_cfg, log=lambda *_: None)
    assert not (Path(knap_cfg.train.out_dir) / "run").exists()


def test_torchrun_shares_out_the_allocated_groups_and_resumes_exactly(small_model_dir, tmp_path):
    knap = ["--data.path", _rows(tmp_path / "rows.jsonl", 8), "--data.eval-size", "0", "--rollout.allocation",
            "knapsack", "--train.steps", "6", "--train.log-rollouts", "1000"]  # 8 rows, 4 a step: 2 steps an epoch
    assert_torchrun_resume_is_exact(small_model_dir, tmp_path, knap, stop_after=3)
    rows = _lines(tmp_path / "whole" / "rollouts.jsonl")
    assert all(sum(x["step"] == s for x in rows) == 16 for s in range(1, 7))  # 4 prompts x 4, every step


def test_knapsack_on_a_built_in_task_says_it_cannot_act(tiny_cfg):
    tiny_cfg.rollout.allocation, tiny_cfg.train.steps = "knapsack", 1
    logged = []
    train(tiny_cfg, log=logged.append)
    assert any("the built-in task's prompts do not recur: every group keeps rollout.group_size=4" in x for x in logged)
