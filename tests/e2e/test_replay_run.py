"""RLEP end to end: `policyforge collect` writes the verified completions of the training prompts a run will see,
and a run with data.replay_pool trains on its groups joined by them, records them apart, and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from policyforge.cli import main
from policyforge.data.tasks import BuiltinTask, DataError
from policyforge.train.loop import train
from tests.e2e.test_data_parallel import _metrics, _run_args, _torchrun, assert_resume_is_exact

ROOT = Path(__file__).resolve().parents[2]
DEMO_SFT = str(ROOT / "checkpoints" / "demo-sft")  # the shipped warm start: solves some reversals of up to 6 letters


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _answer_pool(path: Path, task: BuiltinTask, positions: int, copies: int = 2) -> str:
    """A pool holding each of the first `positions` training prompts' answer `copies` times."""
    rows = [task.train_example(i) for i in range(positions)]
    path.write_text("".join(json.dumps({"prompt": e.prompt, "completion": e.solution}) + "\n"
                            for e in rows for _ in range(copies)))
    return str(path)


@pytest.fixture
def replay_cfg(tiny_cfg, tmp_path):
    tiny_cfg.train.steps, tiny_cfg.train.log_rollouts = 4, 12
    tiny_cfg.rollout.max_new_tokens = 5  # a four-letter answer and its EOS
    tiny_cfg.data.replay_pool = _answer_pool(tmp_path / "pool.jsonl", BuiltinTask("reversal", 4, eval_size=4), 8)
    return tiny_cfg


def test_collect_keeps_the_verified_completions_of_the_run_s_training_prompts(tmp_path, capsys):
    out = tmp_path / "pool.jsonl"
    main(["collect", "--config", str(ROOT / "configs" / "demo.yaml"), "--model.path", DEMO_SFT, "--out", str(out),
          "--prompts", "12", "--samples", "4", "--train.no-progress"])
    err = capsys.readouterr().err
    lines = _lines(out)
    task = BuiltinTask("reversal", 6, eval_size=200)
    answers = {e.prompt: e.solution for e in (task.train_example(i) for i in range(12))}
    assert lines and all(line["prompt"] in answers and line["completion"] == answers[line["prompt"]]
                         and line["reward"] == 1.0 for line in lines)
    assert f"wrote {out}: {len(lines)} of 48 completions kept" in err and "--data.replay-pool" in err


def test_collect_from_a_run_directory_samples_the_prompts_that_run_trained_on(tiny_cfg, tmp_path, capsys):
    tiny_cfg.model.path, tiny_cfg.data.task_size, tiny_cfg.rollout.max_new_tokens = DEMO_SFT, 6, 8
    run = train(tiny_cfg, log=lambda *_: None)
    out = tmp_path / "pool.jsonl"
    main(["collect", str(run), "--out", str(out), "--samples", "16"])
    err = capsys.readouterr().err
    assert f"step_000002 of run {run}" in err and "16 completions of each of 4 training prompts" in err
    trained = {line["prompt"] for line in _lines(run / "rollouts.jsonl")}  # 2 steps x 2 prompts, group 0 logged
    task = BuiltinTask("reversal", 6, eval_size=4)
    assert {line["prompt"] for line in _lines(out)} <= {task.train_example(i).prompt for i in range(4)}
    assert trained <= {task.train_example(i).prompt for i in range(4)}


def test_collect_needs_an_out_file_and_a_policy_that_solves_something(tiny_cfg, tmp_path, capsys):
    with pytest.raises(SystemExit, match="needs --out FILE"):
        main(["collect", "--model.path", tiny_cfg.model.path])
    with pytest.raises(SystemExit, match="solved none of the 2 prompts in 2 samples, so there is no pool"):
        main(["collect", "--model.path", tiny_cfg.model.path, "--data.task", "reversal", "--out",
              str(tmp_path / "p.jsonl"), "--prompts", "2", "--samples", "1", "--train.no-progress"])
    assert not (tmp_path / "p.jsonl").exists()


def test_a_run_replays_pooled_completions_into_each_group_and_records_them_apart(replay_cfg):
    logged = []
    run = train(replay_cfg, log=logged.append)
    assert any("data.replay_pool: 16 completions of 8 prompts; 8 of the first 8 training prompts have some this run "
               "can replay (rollout.max_new_tokens 5), up to 2 a group" in x for x in logged)
    for rec in _metrics(run):
        assert rec["replayed_rows"] == 4 and rec["replayed_accuracy"] == 1.0  # 2 a group, the answers
        assert rec["accuracy"] < 1.0  # the untrained policy's own rows
    lines = _lines(run / "rollouts.jsonl")
    for step in range(1, 5):  # the first 12 rows: group 0's 4 fresh and 2 replayed, then group 1's
        rows = [x for x in lines if x["step"] == step]
        assert [x["source"] for x in rows] == (["fresh"] * 4 + ["replayed"] * 2) * 2
        assert [x["group"] for x in rows] == [0] * 6 + [1] * 6
        assert all(x["reward"] == 1.0 for x in rows if x["source"] == "replayed")
        assert len({x["prompt"] for x in rows[:6]}) == 1
        for group in (rows[:6], rows[6:]):  # GRPO's z-score over the fresh and replayed rows together (RLEP)
            r = torch.tensor([x["reward"] for x in group])
            assert torch.allclose(torch.tensor([x["advantage"] for x in group]), (r - r.mean()) / (r.std() + 1e-6),
                                  atol=1e-5)
            assert all(x["advantage"] > 0 for x in group if x["source"] == "replayed") or r.min() == 1.0


def test_dynamic_sampling_tests_a_group_with_its_replayed_rows(replay_cfg):
    replay_cfg.rollout.dynamic_sampling = "accuracy"
    for rec in _metrics(train(replay_cfg, log=lambda *_: None)):
        # replayed answers are right and the untrained policy's own rows are not: every group passes eq. 11
        assert (rec["sampling_rounds"], rec["groups_informative"], rec["replayed_rows"]) == (1, 2, 4)
        assert rec["completion_tokens_sampled"] < rec["completion_tokens"]  # the replayed rows were not sampled


def test_a_resumed_replay_run_continues_exactly(replay_cfg):
    assert_resume_is_exact(replay_cfg, stop_after=2)


def test_a_changed_pool_file_is_named_on_resume(replay_cfg):
    replay_cfg.train.stop_after = 2
    part = train(replay_cfg, log=lambda *_: None)
    _answer_pool(Path(replay_cfg.data.replay_pool), BuiltinTask("reversal", 4, eval_size=4), 8, copies=1)
    replay_cfg.train.stop_after, logged = None, []
    train(replay_cfg, resume=str(part), log=logged.append)
    assert any("data.replay_pool" in x and "changed since this run started: the completions it replays" in x
               for x in logged)


def test_a_pool_the_run_cannot_replay_from_fails_before_anything_is_written(replay_cfg, tmp_path):
    pool = Path(replay_cfg.data.replay_pool)
    _answer_pool(pool, BuiltinTask("reversal", 6, eval_size=4), 8)  # other problems
    with pytest.raises(DataError, match="none of the run's first 8 training prompts has a completion this run can "
                                        "replay: it was collected with other settings"):
        train(replay_cfg, log=lambda *_: None)
    _answer_pool(pool, BuiltinTask("reversal", 4, eval_size=4), 8)
    replay_cfg.rollout.max_new_tokens = 3  # no answer and its EOS fit
    with pytest.raises(DataError, match="the 8 that are in it have no completion that fits rollout.max_new_tokens 3"):
        train(replay_cfg, log=lambda *_: None)
    replay_cfg.data.replay_pool = str(tmp_path / "none.jsonl")
    with pytest.raises(DataError, match="data.replay_pool .*none.jsonl.*no such file"):
        train(replay_cfg, log=lambda *_: None)
    assert not (Path(replay_cfg.train.out_dir) / "run").exists()


def test_a_step_that_replays_nothing_records_zero_rows(replay_cfg, tmp_path):
    replay_cfg.data.replay_pool = _answer_pool(tmp_path / "two.jsonl", BuiltinTask("reversal", 4, eval_size=4), 2)
    rows = [r["replayed_rows"] for r in _metrics(train(replay_cfg, log=lambda *_: None))]
    assert rows == [4, 0, 0, 0]  # the pool holds step 1's two prompts alone


def test_torchrun_replays_into_every_process_s_groups(small_model_dir, tmp_path):
    pool = _answer_pool(tmp_path / "pool.jsonl", BuiltinTask("reversal", 4, eval_size=4), 12)
    args = _run_args(small_model_dir, tmp_path, "dp") + ["--data.replay-pool", pool, "--train.log-rollouts", "24"]
    done = _torchrun(args, ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    records = _metrics(tmp_path / "dp")
    assert [r["replayed_rows"] for r in records] == [8, 8, 8]  # 4 prompts (2 a process) x 2
    lines = _lines(tmp_path / "dp" / "rollouts.jsonl")
    assert [x["source"] for x in lines if x["step"] == 1] == (["fresh"] * 4 + ["replayed"] * 2) * 4
