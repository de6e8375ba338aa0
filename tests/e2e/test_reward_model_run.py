"""Runs scored by a reward model: added to the task's verifier, and alone on a data file with no function."""

import json

import pytest

from policyforge.cli import main
from policyforge.train.loop import train
from tests.rewards.test_reward_model import save_reward_model


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    return save_reward_model(tmp_path_factory.mktemp("rm"))


@pytest.fixture(scope="module")
def members(rm_dir, tmp_path_factory):
    """An ensemble's two members: rm_dir and a model that differs from it only by its initial seed."""
    return [rm_dir, save_reward_model(tmp_path_factory.mktemp("rm1"), seed=1)]


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_reward_model_is_added_to_the_task_verifier(tiny_cfg, rm_dir):
    tiny_cfg.data.reward_model, tiny_cfg.data.reward_model_weight = rm_dir, 0.5
    lines = []
    rows = _metrics(train(tiny_cfg, log=lines.append))
    assert f"reward: {rm_dir} (weight 0.5) + the function's reward" in lines
    for r in rows:
        assert r["reward_mean"] == pytest.approx(r["reward/correct"] + r["reward/reward_model"], abs=1e-5)
        assert r["reward/reward_model"] != 0.0 and r["reward_std"] > 0  # the model's scores vary across rows


def test_a_reward_model_alone_scores_a_data_file_and_eval(tiny_cfg, rm_dir, tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"rev:{w}="}) + "\n" for w in ("abc", "dog", "frog", "cat", "owl")))
    tiny_cfg.data.path, tiny_cfg.data.eval_size, tiny_cfg.data.reward_model = str(data), 2, rm_dir
    rows = _metrics(train(tiny_cfg, log=lambda *_: None))
    assert len(rows) == 2 and all("reward/reward_model" not in r and r["reward_std"] > 0 for r in rows)
    capsys.readouterr()
    main(["eval", "--model.path", tiny_cfg.model.path, "--data.path", str(data), "--data.eval-size", "2",
          "--data.reward-model", rm_dir, "--rollout.max-new-tokens", "4", "--train.pass-k", "0"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["accuracy"] in (0.0, 0.5, 1.0)  # 2 held-out rows, solved when the model's score is >= 1


def test_a_data_file_with_neither_reward_is_refused(tiny_cfg, tmp_path):
    from policyforge.data.user import DataError

    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "rev:abc="}\n{"prompt": "rev:dog="}\n')
    tiny_cfg.data.path = str(data)
    with pytest.raises(DataError, match="needs a reward: set data.reward to 'module:function' or data.reward_model"):
        train(tiny_cfg, log=lambda *_: None)


def test_reward_workers_score_a_run_s_rows_in_a_pool(tiny_cfg):
    from policyforge.rewards.score import Pooled
    from policyforge.train.setup import build_data

    tiny_cfg.data.reward, tiny_cfg.data.reward_workers = "tests.e2e.test_train:vowel_reward", 3
    reward = build_data(tiny_cfg.data, 0)[2]
    assert isinstance(reward, Pooled) and reward.workers == 3
    rows = _metrics(train(tiny_cfg, log=lambda *_: None))
    assert len(rows) == 2 and all(r["reward_std"] > 0 for r in rows)


def test_a_reward_model_too_short_for_prompt_plus_budget_is_refused_before_the_run(tiny_cfg, tmp_path):
    from policyforge.rewards.score import RewardError

    tiny_cfg.data.reward_model = save_reward_model(tmp_path / "short", positions=12)
    tiny_cfg.data.task_size = 6  # prompts "rev:" + up to 6 letters + "=": 11 tokens, + 4 new tokens > 12
    with pytest.raises(RewardError, match="takes at most 12 tokens, but row .*'s prompt is 11 and a completion may "
                                          "add rollout.max_new_tokens=4"):
        train(tiny_cfg, log=lambda *_: None)
    assert not (tmp_path / "runs").exists()


def test_eval_says_what_it_scored_on_stderr(capsys, small_model_dir):
    main(["eval", "--model.path", small_model_dir, "--data.task", "reversal", "--data.task-size", "4",
          "--data.eval-size", "3", "--rollout.max-new-tokens", "4", "--train.pass-k", "0"])
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["accuracy"] is not None  # stdout: the result alone
    assert "data: built-in task reversal (size 4), 3 held-out problems" in err
    assert "eval: 3 held-out rows (data.eval_size=3)" in err


def test_a_run_and_its_evaluation_score_with_an_ensemble(tiny_cfg, members, capsys):
    tiny_cfg.data.reward_model = ",".join(members)
    tiny_cfg.data.reward_model_ensemble, tiny_cfg.data.reward_model_uncertainty = "uncertainty", 1.0
    lines = []
    run = train(tiny_cfg, log=lines.append)
    assert f"reward: {tiny_cfg.data.reward_model} (weight 1.0, an ensemble of 2 by uncertainty with lambda 1.0) + " \
           "the function's reward" in lines
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    for r in rows:
        assert r["reward_mean"] == pytest.approx(r["reward/correct"] + r["reward/reward_model"], abs=1e-5)
        assert r["reward_model/logit_std"] > 0 and r["reward_model/logit_0"] != r["reward_model/logit_1"]
    assert all(e["reward_model/logit_std"] > 0 for e in evals)  # held-out scoring logs it too
    capsys.readouterr()
    main(["eval", str(run), "--data.eval-size", "2", "--train.pass-k", "0"])  # the run's own ensemble
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["reward_model/logit_std"] > 0


def test_a_resume_warns_when_a_reward_model_member_was_replaced(tiny_cfg, members, tmp_path):
    import os
    import shutil

    copies = [shutil.copytree(m, tmp_path / f"member{i}") for i, m in enumerate(members)]
    tiny_cfg.data.reward_model = ",".join(map(str, copies))
    tiny_cfg.train.steps, tiny_cfg.train.save_every, tiny_cfg.train.stop_after = 3, 1, 1
    run = train(tiny_cfg, log=lambda *_: None)
    tiny_cfg.train.stop_after = 2
    lines = []
    train(tiny_cfg, resume=str(run), log=lines.append)  # unchanged: no word
    assert not any("reward model" in x and x.startswith("warning") for x in lines)
    weights = copies[1] / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # rewritten since
    tiny_cfg.train.stop_after = None
    lines = []
    train(tiny_cfg, resume=str(run), log=lines.append)
    assert any(x.startswith(f"warning: the weight files of the reward model {str(copies[1])!r} (data.reward_model) "
                            "changed") for x in lines)
