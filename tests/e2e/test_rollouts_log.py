"""rollouts.jsonl through the real loop: each step's first completions with the reward the function gave and
the group advantage, TRL log_extra columns beside them (and in samples.jsonl), truncated exactly on resume."""

import json

import pytest

from policyforge.train.loop import train


def scored(completions, answer, log_extra, **kwargs):
    """A TRL-form reward that logs two columns per completion."""
    log_extra("chars", [len(c) for c in completions])
    log_extra("first", [c[:1] or None for c in completions])
    return [float(sum(ch in "aeiou" for ch in c)) for c in completions]


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def _run(cfg, name, **train_options):
    cfg.data.reward, cfg.train.run_name = "tests.e2e.test_rollouts_log:scored", name
    for key, value in train_options.items():
        setattr(cfg.train, key, value)
    return train(cfg, log=lambda *_: None)


def test_each_step_logs_its_first_group_with_rewards_advantages_and_columns(tiny_cfg):
    tiny_cfg.train.steps, tiny_cfg.train.log_rollouts = 3, 4  # one whole group of 4 per step
    run = _run(tiny_cfg, "whole")
    lines = _lines(run / "rollouts.jsonl")
    assert [r["step"] for r in lines] == [1] * 4 + [2] * 4 + [3] * 4
    for r in lines:
        assert r["reward"] == sum(ch in "aeiou" for ch in r["completion"])  # what the function gave this text
        assert r["extra"] == {"chars": len(r["completion"]), "first": r["completion"][:1] or None}
        assert r["source"] == "fresh" and r["group"] == 0 and r["prompt"].startswith("rev:")
        assert r["completion_tokens"] in range(1, tiny_cfg.rollout.max_new_tokens + 1)
        assert isinstance(r["truncated"], bool)  # cut at max_new_tokens: no EOS among its tokens
        assert not r["truncated"] or r["completion_tokens"] == tiny_cfg.rollout.max_new_tokens
    for step in (1, 2, 3):  # GRPO's advantages: zero-mean within the group, zero where every reward is equal
        group = [r for r in lines if r["step"] == step]
        assert sum(r["advantage"] for r in group) == pytest.approx(0, abs=1e-5)
        if len({r["reward"] for r in group}) == 1:
            assert all(r["advantage"] == 0 for r in group)
        else:
            best = max(group, key=lambda r: r["reward"])
            assert best["advantage"] > 0
    samples = _lines(run / "samples.jsonl")  # the greedy answers of each evaluation carry the columns too
    assert samples and all(s["extra"]["chars"] == len(s["completion"]) for s in samples)


def test_a_resumed_run_logs_what_an_uninterrupted_one_does(tiny_cfg):
    tiny_cfg.train.steps, tiny_cfg.train.log_rollouts = 3, 2
    whole = _lines(_run(tiny_cfg, "once") / "rollouts.jsonl")
    run = _run(tiny_cfg, "twice", save_every=1, stop_after=2)
    with (run / "rollouts.jsonl").open("a") as f:  # a step that ran past the checkpoint before a crash
        f.write(json.dumps({"step": 3, "completion": "lost"}) + "\n")
    tiny_cfg.train.stop_after = None
    train(tiny_cfg, resume=str(run), log=lambda *_: None)
    assert _lines(run / "rollouts.jsonl") == whole and len(whole) == 6


def test_zero_rollouts_writes_no_file(tiny_cfg):
    run = _run(tiny_cfg, "none", log_rollouts=0)
    assert not (run / "rollouts.jsonl").exists() and (run / "metrics.jsonl").exists()
