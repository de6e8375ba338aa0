"""A slow reward (a judge, tests in a subprocess) in a whole run: the step record says how long scoring took
(reward_s, every round of it), and the progress bar names the phase that is running while it runs."""

from __future__ import annotations

import json
import time

from policyforge.train import phases
from policyforge.train.loop import train

PAUSE_S = 0.02  # per row: 8 rows a round


def slow_exact(prompt, completion, **_):
    """The reversal's exact match, after a pause per row, as a reward that waits on something would."""
    time.sleep(PAUSE_S)
    word = prompt[len("rev:"):-1]
    return float(completion.strip() == word[::-1])


def _records(cfg) -> list[dict]:
    run = train(cfg, log=lambda *_: None)
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_reward_s_counts_the_time_spent_scoring_within_the_rollout(tiny_cfg):
    tiny_cfg.data.reward = "tests.e2e.test_slow_reward:slow_exact"
    records = _records(tiny_cfg)
    rows = tiny_cfg.rollout.prompts_per_step * tiny_cfg.rollout.group_size
    for r in records:
        assert rows * PAUSE_S <= r["reward_s"] <= r["rollout_s"] <= r["step_s"]


def test_reward_s_adds_up_every_dynamic_sampling_round(tiny_cfg):
    tiny_cfg.data.reward = "tests.e2e.test_slow_reward:slow_exact"
    tiny_cfg.rollout.dynamic_sampling = "reward"
    tiny_cfg.rollout.max_sampling_rounds = 3
    records = _records(tiny_cfg)
    rows = tiny_cfg.rollout.prompts_per_step * tiny_cfg.rollout.group_size
    for r in records:
        assert r["reward_s"] >= r["sampling_rounds"] * rows * PAUSE_S


def test_the_bar_names_scoring_while_a_slow_reward_runs(tiny_cfg, monkeypatch, capsys):
    monkeypatch.setattr(phases, "SHOW_AFTER_S", PAUSE_S)  # shorter than a round's scoring (8 rows x PAUSE_S)
    tiny_cfg.data.reward = "tests.e2e.test_slow_reward:slow_exact"
    tiny_cfg.train.progress = True
    tiny_cfg.train.steps = 1
    train(tiny_cfg, log=lambda *_: None)
    shown = capsys.readouterr().err  # tqdm writes to stderr
    assert "RL: scoring 8 completions" in shown
