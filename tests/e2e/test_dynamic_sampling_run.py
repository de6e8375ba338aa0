"""rollout.dynamic_sampling in whole runs: the trained batch holds only groups that pass DAPO's test (or says how
many filled in), the extra prompts come from the data stream and are saved with it, so a resume continues
exactly, in one process and under torchrun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policyforge.train import checkpoint, loop
from policyforge.train.loop import train
from tests.e2e.test_data_parallel import _metrics, _run_args, _torchrun

FOUR_LETTERS = len("rev:abcd=")


def alike_for_four_letters(prompt, completion, **_):
    """1 for every completion of a four-letter word's prompt (its group is uninformative, and all right);
    else the completion's vowel count, which an untrained model's random text varies on."""
    return 1.0 if len(prompt) == FOUR_LETTERS else float(sum(c in "aeiou" for c in completion))


def _run(cfg, log=lambda *_: None, **kw):
    return train(cfg, log=log, **kw)


def _lines(run: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (run / name).read_text().splitlines()]


@pytest.fixture
def ds_cfg(tiny_cfg):
    tiny_cfg.data.reward = "tests.e2e.test_dynamic_sampling_run:alike_for_four_letters"
    tiny_cfg.rollout.dynamic_sampling = "reward"
    tiny_cfg.train.steps = 4
    tiny_cfg.train.log_rollouts = 8
    return tiny_cfg


def test_the_trained_batch_holds_only_groups_whose_rewards_differ(ds_cfg, monkeypatch):
    batches, real = [], loop.train_step
    monkeypatch.setattr(loop, "train_step", lambda *a, **k: batches.append(real(*a, **k)) or batches[-1])
    run = _run(ds_cfg)
    records = [r for r, _ in batches]
    assert sum(r["sampling_rounds"] > 1 for r in records) >= 2, "no step needed a second round: nothing tested"
    for rec, batch in batches:
        assert rec["groups_sampled"] == 2 * rec["sampling_rounds"] and rec["groups_filled"] == 0
        assert rec["zero_var_group_frac"] == 0.0 and len(batch) == 8 and batch.group.tolist() == [0] * 4 + [1] * 4
        assert all(len(e.prompt) != FOUR_LETTERS for e in batch.examples)
    # the extra prompts come from the data stream: the checkpoint's position counts every round's prompts
    state = checkpoint.load_trainer_state(checkpoint.latest(run))
    assert state["data_position"] == 2 * sum(r["sampling_rounds"] for r in records)
    assert [r["groups_sampled"] for r in _metrics(run)] == [r["groups_sampled"] for r in records]


def test_groups_fill_the_batch_when_the_rounds_run_out_and_a_note_says_so(ds_cfg):
    ds_cfg.data.reward = "tests.e2e.test_overlong_run:always_one"  # every group alike
    ds_cfg.rollout.max_sampling_rounds = 3
    ds_cfg.train.steps = 2
    run = _run(ds_cfg)  # the note goes to the progress bar: test_the_fill_note_is_written_once
    for r in _metrics(run):
        assert (r["sampling_rounds"], r["groups_sampled"], r["groups_informative"], r["groups_filled"]) == (3, 6, 0, 2)
        assert r["zero_var_group_frac"] == 1.0 and r["grad_norm"] == 0.0
    state = checkpoint.load_trainer_state(checkpoint.latest(run))
    assert state["data_position"] == 2 * 6
    assert [line.get("filled") for line in _lines(run, "rollouts.jsonl")] == [True] * 16  # 2 steps x 8 logged


def test_the_fill_note_is_written_once():
    from policyforge.train.notes import Streaks

    streaks = Streaks(4)
    rec = {"step": 3, "zero_var_group_frac": 1.0, "truncation_rate": 0.0, "sampling_rounds": 10,
           "groups_informative": 1, "groups_filled": 15}
    first = streaks.after(rec)
    assert len(first) == 1 and first[0].startswith("note: at step 3, 10 sampling rounds (rollout.max_sampling_rounds)"
                                                   " found 1 group that passes") and "15 groups that scored alike" in first[0]
    assert streaks.after({**rec, "step": 4}) == []


def test_a_resumed_run_continues_exactly(ds_cfg):
    whole = _run(ds_cfg)
    ds_cfg.train.run_name, ds_cfg.train.stop_after = "interrupted", 2
    part = _run(ds_cfg)
    ds_cfg.train.stop_after = None
    resumed = _run(ds_cfg, resume=str(part))
    assert _metrics(resumed) == _metrics(whole)
    assert (resumed / "rollouts.jsonl").read_text() == (whole / "rollouts.jsonl").read_text()


def test_off_by_default_changes_nothing(ds_cfg):
    ds_cfg.rollout.dynamic_sampling = "off"
    rec = _metrics(_run(ds_cfg))
    assert "sampling_rounds" not in rec[0] and any(r["zero_var_group_frac"] > 0 for r in rec)


def test_torchrun_dynamic_sampling_shares_the_kept_groups_and_resumes_exactly(small_model_dir, tmp_path):
    repo = Path(__file__).resolve().parents[2]
    reward = "tests.e2e.test_dynamic_sampling_run:alike_for_four_letters"
    extra = ["--rollout.dynamic-sampling", "accuracy", "--train.log-rollouts", "16"]
    whole = _torchrun(_run_args(small_model_dir, tmp_path, "whole", reward) + extra, repo)
    assert whole.returncode == 0, whole.stderr[-3000:]
    records = _metrics(tmp_path / "whole")
    assert [r["step"] for r in records] == [1, 2, 3] and any(r["sampling_rounds"] > 1 for r in records)
    lines = _lines(tmp_path / "whole", "rollouts.jsonl")
    for r in records:  # four-letter groups are all right (1 each; the overlong penalty does not count): dropped
        assert r["groups_sampled"] == 4 * r["sampling_rounds"]
        step = [x for x in lines if x["step"] == r["step"]]
        assert [x["group"] for x in step] == [g for g in range(4) for _ in range(4)]
        assert r["groups_filled"] > 0 or all(len(x["prompt"]) != FOUR_LETTERS for x in step)
    split = _run_args(small_model_dir, tmp_path, "split", reward) + extra
    first = _torchrun([*split, "--train.stop-after", "2"], repo)
    assert first.returncode == 0, first.stderr[-3000:]
    second = _torchrun(["--resume", str(tmp_path / "split")], repo)
    assert second.returncode == 0, second.stderr[-3000:]
    assert _metrics(tmp_path / "split") == records
    assert (tmp_path / "split" / "rollouts.jsonl").read_text() == (tmp_path / "whole" / "rollouts.jsonl").read_text()
