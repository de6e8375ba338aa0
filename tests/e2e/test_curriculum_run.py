"""DUMP end to end: a run with data.curriculum dump draws its prompts distribution by distribution, records the
weights it drew with and the held-out accuracy of each distribution, resumes exactly (also under torchrun), and
refuses settings it cannot use before anything is written."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from policyforge.data.curriculum import DistributionStream
from policyforge.data.tasks import DataError
from policyforge.data.user import hold_out, load_rows
from policyforge.train.config import ConfigError
from policyforge.train.loop import train
from tests.e2e.test_data_parallel import _metrics, assert_resume_is_exact, assert_torchrun_resume_is_exact


def _mixture(path: Path, per_level: int = 12) -> str:
    """Reversals of 3-letter ("short") and 4-letter ("long") words, interleaved, with their answers."""
    rng, rows = random.Random(0), []
    for i in range(per_level):
        for level, n in (("short", 3), ("long", 4)):
            word = "".join(rng.choice("abcdefgh") for _ in range(n)) + str(i)  # the index keeps prompts apart
            rows.append({"prompt": f"rev:{word}=", "answer": word[::-1], "level": level})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def dump_cfg(tiny_cfg, tmp_path):
    tiny_cfg.data.path = _mixture(tmp_path / "mix.jsonl")
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"  # varies on an untrained model's text
    tiny_cfg.data.distribution_column, tiny_cfg.data.curriculum = "level", "dump"
    tiny_cfg.data.curriculum_window = 6
    tiny_cfg.train.steps, tiny_cfg.train.log_rollouts = 4, 8
    tiny_cfg.rollout.prompts_per_step = 4
    return tiny_cfg


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_dump_run_records_its_weights_and_each_distribution_s_held_out_accuracy(dump_cfg):
    logged = []
    run = train(dump_cfg, log=logged.append)
    assert any("data.curriculum dump: 2 distributions by 'level': long (10), short (10)" in x for x in logged)
    records = _metrics(run)
    first = records[0]
    assert first["curriculum_weight/long"] == first["curriculum_weight/short"] == 0.5  # nothing seen yet
    for r in records:
        assert r["curriculum_weight/long"] + r["curriculum_weight/short"] == pytest.approx(1.0)
    assert any(r["curriculum_abs_adv/long"] > 0 for r in records[1:])  # learnability from the step's advantages
    evals = _lines(run / "eval.jsonl")
    assert {"accuracy/long", "accuracy/short"} <= set(evals[0])  # 2 held-out rows each (the file's first 4)
    samples = _lines(run / "samples.jsonl")
    assert all(isinstance(s["correct"], bool) for s in samples)


def test_the_learnability_is_the_window_s_mean_absolute_advantage(dump_cfg):
    dump_cfg.data.curriculum_window = 10_000  # every completion so far
    dump_cfg.train.log_rollouts = 16  # every row of a step
    run = train(dump_cfg, log=lambda *_: None)
    rows = _lines(run / "rollouts.jsonl")
    levels = {json.loads(x)["prompt"]: json.loads(x)["level"] for x in Path(dump_cfg.data.path).read_text().splitlines()}
    records = _metrics(run)
    for r in records[1:]:  # what steps before r's saw
        for level in ("long", "short"):
            seen = [abs(x["advantage"]) for x in rows if x["step"] < r["step"] and levels[x["prompt"]] == level]
            want = sum(seen) / len(seen) if seen else 0.0
            assert r[f"curriculum_abs_adv/{level}"] == pytest.approx(want, abs=1e-5)


def test_a_dump_run_resumes_exactly(dump_cfg):
    assert_resume_is_exact(dump_cfg, stop_after=2)


def test_settings_dump_cannot_use_fail_before_anything_is_written(dump_cfg, tmp_path):
    dump_cfg.data.distribution_column = None
    with pytest.raises(ConfigError, match="set data.distribution_column"):
        train(dump_cfg, log=lambda *_: None)
    dump_cfg.data.distribution_column, dump_cfg.data.curriculum = "level", "bandit"
    with pytest.raises(ConfigError, match="data.curriculum='bandit'; valid: off, dump"):
        train(dump_cfg, log=lambda *_: None)
    dump_cfg.data.curriculum, dump_cfg.data.curriculum_temperature = "dump", 0.0
    with pytest.raises(ConfigError, match="data.curriculum_temperature=0.0"):
        train(dump_cfg, log=lambda *_: None)
    dump_cfg.data.curriculum_temperature, dump_cfg.data.distribution_column = 0.1, "colour"
    with pytest.raises(DataError, match="mix.jsonl, line 1 has no column 'colour' .*its columns: answer, level"):
        train(dump_cfg, log=lambda *_: None)
    dump_cfg.data.distribution_column, dump_cfg.rollout.dynamic_sampling = "level", "reward"
    with pytest.raises(ConfigError, match="dump with rollout.dynamic_sampling"):
        train(dump_cfg, log=lambda *_: None)
    dump_cfg.rollout.dynamic_sampling, dump_cfg.data.replay_pool = "off", str(tmp_path / "pool.jsonl")
    with pytest.raises(ConfigError, match="dump with data.replay_pool"):
        train(dump_cfg, log=lambda *_: None)
    dump_cfg.data.replay_pool, dump_cfg.data.curriculum = None, "off"
    with pytest.raises(ConfigError, match="curriculum_window / curriculum_temperature are read only by"):
        train(dump_cfg, log=lambda *_: None)
    dump_cfg.data.curriculum, dump_cfg.data.curriculum_window = "dump", 300
    dump_cfg.data.path = None
    with pytest.raises(ConfigError, match="without data.path: a built-in task.s rows have no columns"):
        train(dump_cfg, log=lambda *_: None)
    assert not (Path(dump_cfg.train.out_dir) / "run").exists()


def test_torchrun_processes_draw_the_same_prompts_and_resume_exactly(small_model_dir, tmp_path):
    dump = ["--data.path", _mixture(tmp_path / "mix.jsonl"), "--data.distribution-column", "level",
            "--data.curriculum", "dump", "--train.log-rollouts", "16"]
    assert_torchrun_resume_is_exact(small_model_dir, tmp_path, dump, stop_after=2)
    # both processes drew from one stream: the prompts of every step are what a single DistributionStream fed
    # the gathered batches' advantages draws (process 0 trains on the first 2, process 1 on the last 2)
    held, train_rows = hold_out(load_rows(dump[1]), 4)
    stream, rows = DistributionStream.from_rows(train_rows, "level"), _lines(tmp_path / "whole" / "rollouts.jsonl")
    by_prompt = {ex.prompt: ex for ex in train_rows}
    for step in (1, 2, 3):
        logged = [x for x in rows if x["step"] == step]
        assert list(dict.fromkeys(x["prompt"] for x in logged)) == [ex.prompt for ex in stream.take(4, 4 * (step - 1))]
        stream.observe([by_prompt[x["prompt"]] for x in logged], torch.tensor([x["advantage"] for x in logged]),
                       torch.ones(len(logged), 1))


def test_eval_gives_each_distribution_s_accuracy_of_a_file(small_model_dir, tmp_path, capsys):
    from policyforge.cli import main

    data = _mixture(tmp_path / "mix.jsonl", per_level=3)
    main(["eval", "--model.path", small_model_dir, "--data.eval-path", data, "--data.distribution-column", "level",
          "--data.reward", "tests.e2e.test_train:vowel_reward", "--rollout.max-new-tokens", "4", "--train.pass-k", "0"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["accuracy"] == pytest.approx((line["accuracy/long"] + line["accuracy/short"]) / 2)  # 3 rows each
    with pytest.raises(SystemExit, match="without data.path: a built-in task.s rows have no columns"):
        main(["eval", "--model.path", small_model_dir, "--data.task", "reversal", "--data.eval-size", "2",
              "--data.distribution-column", "level"])


def test_collect_refuses_a_curriculum_run_s_order(dump_cfg, tmp_path):
    from policyforge.cli import main

    with pytest.raises(SystemExit, match="collect with data.curriculum dump: .*pass --data.curriculum off"):
        main(["collect", "--model.path", dump_cfg.model.path, "--data.path", dump_cfg.data.path, "--data.reward",
              dump_cfg.data.reward, "--data.distribution-column", "level", "--data.curriculum", "dump", "--out",
              str(tmp_path / "pool.jsonl")])


@pytest.fixture
def mix_cfg(tiny_cfg):
    tiny_cfg.data.task, tiny_cfg.data.eval_size = "reversal:3,reversal:5,sorting:4", 6
    tiny_cfg.rollout.max_new_tokens, tiny_cfg.train.steps, tiny_cfg.train.log_rollouts = 6, 4, 100
    tiny_cfg.rollout.prompts_per_step = 3
    return tiny_cfg


def test_a_mixture_of_built_in_tasks_records_each_task_s_held_out_accuracy(mix_cfg):
    run = train(mix_cfg, log=lambda *_: None)
    for e in _lines(run / "eval.jsonl"):
        per = [e[f"accuracy/{t}"] for t in ("reversal:3", "reversal:5", "sorting:4")]  # 2 held-out rows each
        assert e["accuracy"] == pytest.approx(sum(per) / 3)
    first = [x["prompt"] for x in _lines(run / "rollouts.jsonl") if x["step"] == 1][::4]
    assert [p.split(":")[0] for p in first] == ["rev", "rev", "sort"]  # one of each part in turn
    assert not any(k.startswith("curriculum") for k in _metrics(run)[0])


def test_dump_draws_built_in_tasks_by_their_learnability_and_resumes_exactly(mix_cfg):
    mix_cfg.data.curriculum, mix_cfg.data.reward = "dump", "tests.e2e.test_train:vowel_reward"
    logged = []
    run = train(mix_cfg, log=logged.append)
    assert any("data.curriculum dump: 3 distributions by 'task': reversal:3, reversal:5, sorting:4" in x
               for x in logged)
    assert _metrics(run)[0]["curriculum_weight/sorting:4"] == pytest.approx(1 / 3)
    mix_cfg.train.run_name = "again"
    assert_resume_is_exact(mix_cfg, stop_after=2)


def test_dump_needs_several_built_in_tasks(mix_cfg):
    mix_cfg.data.task, mix_cfg.data.curriculum = "reversal", "dump"
    with pytest.raises(ConfigError, match="data.task='reversal' is one: give several built-in tasks"):
        train(mix_cfg, log=lambda *_: None)


def test_sft_on_a_mixture_teaches_each_task_with_its_own_mistakes(mix_cfg, tmp_path, capsys):
    from policyforge.cli import main

    main(["sft", "--model.path", mix_cfg.model.path, "--data.task", mix_cfg.data.task, "--data.eval-size", "6",
          "--sft.steps", "2", "--sft.batch-size", "4", "--sft.noise", "0.5", "--sft.out", str(tmp_path / "m"),
          "--rollout.max-new-tokens", "6", "--train.no-progress"])
    assert (tmp_path / "m" / "config.json").exists()
