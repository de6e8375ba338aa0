"""Run-directory safety through the command line: resuming a stopped run, sft.out, a run without a checkpoint."""

import json

import pytest

from policyforge.cli import main
from policyforge.train.config import ConfigError

QUICK = ["--model.path", "builtin:tiny", "--data.task", "reversal", "--data.task-size", "4", "--data.eval-size", "4",
         "--rollout.prompts-per-step", "2", "--rollout.group-size", "2", "--rollout.max-new-tokens", "3",
         "--train.pass-k", "2", "--train.eval-every", "0", "--train.no-progress"]


def _steps(run) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_after_stop_after_runs_to_the_end(tmp_path):
    run = tmp_path / "runs" / "r"
    main(["train", *QUICK, "--train.steps", "3", "--train.stop-after", "1", "--train.out-dir", str(tmp_path / "runs"),
          "--train.run-name", "r"])
    assert _steps(run) == [1]
    main(["train", "--resume", str(run)])  # the saved stop_after ended the first invocation only
    assert _steps(run) == [1, 2, 3]
    assert json.loads((run / "summary.json").read_text())["steps"] == 3


def test_resume_keeps_a_stop_after_given_again(tmp_path):
    run = tmp_path / "runs" / "r"
    main(["train", *QUICK, "--train.steps", "4", "--train.stop-after", "1", "--train.out-dir", str(tmp_path / "runs"),
          "--train.run-name", "r"])
    main(["train", "--resume", str(run), "--train.stop-after", "2"])
    assert _steps(run) == [1, 2]


def test_a_run_without_checkpoint_is_not_sent_to_resume(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(SystemExit) as e:
        main(["train", *QUICK, "--train.steps", "1", "--train.out-dir", str(tmp_path / "runs"), "--train.run-name", "r"])
    assert "ended before its first checkpoint" in str(e.value) and "--resume" not in str(e.value)


@pytest.mark.parametrize("make", ["file", "dir_with_other_files", "dot"])
def test_sft_out_never_replaces_what_is_not_a_model(tmp_path, monkeypatch, make):
    monkeypatch.chdir(tmp_path)
    if make == "file":
        out = tmp_path / "notes.txt"
        out.write_text("keep me")
    elif make == "dir_with_other_files":
        out = tmp_path / "results"
        out.mkdir()
        (out / "important.txt").write_text("keep me")
    else:
        out = "."
    with pytest.raises(SystemExit) as e:
        main(["sft", "--sft.steps", "1", "--sft.out", str(out), *QUICK])
    assert str(e.value).startswith("error: sft.out")
    if make == "file":
        assert (tmp_path / "notes.txt").read_text() == "keep me"
    elif make == "dir_with_other_files":
        assert (tmp_path / "results" / "important.txt").read_text() == "keep me"


def test_dict_options_from_a_file_can_be_replaced_or_emptied_by_flags(tmp_path):
    from policyforge.cli import parse_config

    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("algo:\n  loss_kwargs: {eps_low: 0.2, eps_high: 0.28}\n  drift: {k3: 0.04}\n")
    kept = parse_config("t", ["--config", str(yaml_file)], "")
    assert kept.algo.loss_kwargs == {"eps_low": 0.2, "eps_high": 0.28} and kept.algo.drift == {"k3": 0.04}
    replaced = parse_config("t", ["--config", str(yaml_file), "--algo.loss-kwargs", "eps_low", "0.1",
                                  "--algo.drift", "k2", "0.5"], "")
    assert replaced.algo.loss_kwargs == {"eps_low": 0.1} and replaced.algo.drift == {"k2": 0.5}
    emptied = parse_config("t", ["--config", str(yaml_file), "--algo.loss", "reinforce", "--algo.loss-kwargs"], "")
    assert emptied.algo.loss_kwargs == {} and emptied.algo.drift == {"k3": 0.04}


def test_pass_k_zero_records_no_pass_at_k(tmp_path):
    run = tmp_path / "runs" / "r"
    main(["train", *QUICK, "--train.pass-k", "0", "--train.steps", "1", "--train.out-dir", str(tmp_path / "runs"),
          "--train.run-name", "r"])
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert [sorted(e) for e in evals] == [["accuracy", "completion_len_mean", "reward_mean", "step"]] * 2


@pytest.mark.parametrize("command", ["train", "eval", "sft"])
def test_prompt_plus_budget_beyond_the_context_is_one_error_before_any_work(tmp_path, command):
    from policyforge.models.load import load_model

    limit = load_model("builtin:tiny")[0].config.max_position_embeddings
    with pytest.raises(SystemExit) as e:
        main([command, *QUICK, "--rollout.max-new-tokens", str(limit), "--train.out-dir", str(tmp_path / "runs"),
              "--sft.out", str(tmp_path / "sft")])
    assert f"rollout.max_new_tokens is {limit}" in str(e.value) and f"at most {limit}" in str(e.value)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sft").exists()


def test_eval_on_a_file_scores_the_rows_training_held_out_and_eval_path_scores_a_whole_file(tmp_path):
    from policyforge.train.config import DataConfig
    from policyforge.train.setup import build_data

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"rev:{w}=", "target": w[::-1]}) + "\n"
                            for w in ("abc", "dog", "cat", "sun", "map")))
    cfg = DataConfig(path=str(data), reward="examples.my_rewards:exact", eval_size=4)
    _, held_for_eval, _ = build_data(cfg, 0, training=False)
    source, held_for_training, _ = build_data(cfg, 0)
    assert [e.prompt for e in held_for_eval] == [e.prompt for e in held_for_training] == ["rev:abc=", "rev:dog="]
    assert {e.prompt for e in source.rows} == {"rev:cat=", "rev:sun=", "rev:map="}  # never scored as held out
    only_eval = DataConfig(eval_path=str(data), reward="examples.my_rewards:exact", eval_size=4)
    source, held, _ = build_data(only_eval, 0, training=False)  # a file to score, no training: no half cap
    assert source is None and [e.prompt for e in held] == ["rev:abc=", "rev:dog=", "rev:cat=", "rev:sun="]
    with pytest.raises(ConfigError, match="data.eval_path=.* without data.path"):
        build_data(only_eval, 0)  # training on the built-in task would ignore it


def test_training_rows_that_repeat_a_held_out_prompt_are_left_out(tmp_path):
    from policyforge.data.tasks import DataError
    from policyforge.train.config import DataConfig
    from policyforge.train.setup import build_data

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "target": "x"}) + "\n" for p in ("abc", "dog", "abc", "cat")))
    lines = []
    source, held, _ = build_data(DataConfig(path=str(data), reward="examples.my_rewards:exact", eval_size=2), 0,
                                 log=lines.append)
    assert [e.prompt for e in held] == ["abc", "dog"] and [e.prompt for e in source.rows] == ["cat"]
    assert lines == ["data: 1 training row(s) repeat a held-out prompt and are left out of training",
                     f"data: 1 training row from {data}, 2 held out (its first rows)"]
    same = DataConfig(path=str(data), eval_path=str(data), reward="examples.my_rewards:exact")
    with pytest.raises(DataError, match="every training row .* has a held-out prompt"):
        build_data(same, 0)
    assert len(build_data(same, 0, training=False)[1]) == 4  # policyforge eval trains nothing: no overlap to refuse


def test_algos_piped_into_a_reader_that_has_stopped_exits_quietly():
    # What is checked happens in a real interpreter and at its exit (the last flush of stdout), so this runs one.
    # The reader is gone before the child writes anything (the read end of its stdout pipe is closed first), so
    # every write meets EPIPE, as after `| head -1` exits. (Reading some output and then closing raced with the
    # child: its 11 KB listing fits in the pipe buffer, and the child often wrote it all before the close, so
    # the broken pipe was never met and the check passed with the handler removed.)
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        # A hang guard, not a speed check: a child process can hang (e.g. blocked at exit), and without a bound
        # it would stop the whole suite. 120 s is far above the few seconds it needs to start.
        proc = subprocess.run([sys.executable, "-m", "policyforge.cli", "algos"], stdout=write_end,
                              stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    err = proc.stderr.decode()
    assert proc.returncode == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_help_piped_into_a_reader_that_has_stopped_exits_quietly():
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # as after `| head -1` exits: every write meets EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "policyforge.cli", "train", "--help"], stdout=write_end,
                              stderr=subprocess.PIPE, timeout=120)  # a hang guard, as in the algos test above
    finally:
        os.close(write_end)
    err = proc.stderr.decode()
    assert proc.returncode == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_ctrl_c_during_a_run_says_how_to_resume_without_a_traceback(tmp_path, capsys, monkeypatch):
    from policyforge.train import loop

    real, calls = loop.train_step, []

    def interrupted_at_step_2(parts, step, examples, **more):
        calls.append(step)
        if step == 2:
            raise KeyboardInterrupt
        return real(parts, step, examples, **more)

    monkeypatch.setattr(loop, "train_step", interrupted_at_step_2)
    with pytest.raises(SystemExit) as e:
        main(["train", *QUICK, "--train.steps", "3", "--train.save-every", "1", "--train.out-dir", str(tmp_path),
              "--train.run-name", "r"])
    assert e.value.code == 130 and calls == [1, 2]
    assert f"interrupted at step 2; the newest checkpoint is kept: continue with --resume {tmp_path / 'r'}" in \
        capsys.readouterr().out
    assert (tmp_path / "r" / "checkpoints" / "latest").read_text().strip() == "step_000001"


def test_ctrl_c_before_the_first_checkpoint_says_there_is_nothing_to_resume(tmp_path, capsys, monkeypatch):
    from policyforge.train import loop

    real = loop.train_step

    def interrupted_at_step_2(parts, step, examples, **more):
        if step == 2:
            raise KeyboardInterrupt
        return real(parts, step, examples, **more)

    monkeypatch.setattr(loop, "train_step", interrupted_at_step_2)
    with pytest.raises(SystemExit):
        main(["train", *QUICK, "--train.steps", "3", "--train.save-every", "5", "--train.out-dir", str(tmp_path),
              "--train.run-name", "r"])
    out = capsys.readouterr().out
    assert "before the first checkpoint (train.save_every): nothing to resume; delete" in out and "--resume" not in out


def test_a_reward_that_fails_mid_run_leaves_a_line_saying_how_to_resume(tmp_path, capsys, monkeypatch):
    from policyforge.rewards.score import RewardError
    from policyforge.train import loop

    real = loop.train_step

    def fails_at_step_2(parts, step, examples, **more):
        if step == 2:
            raise RewardError("reward function raised on row 3: RuntimeError: flaky")
        return real(parts, step, examples, **more)

    monkeypatch.setattr(loop, "train_step", fails_at_step_2)
    with pytest.raises(SystemExit) as e:
        main(["train", *QUICK, "--train.steps", "3", "--train.save-every", "1", "--train.out-dir", str(tmp_path),
              "--train.run-name", "r"])
    assert (f"stopped at step 2 by the error below; the newest checkpoint is kept: once it is mended, continue with "
            f"--resume {tmp_path / 'r'}") in capsys.readouterr().out
    assert "flaky" in str(e.value.code)
    # before the first checkpoint: nothing to resume, and the line says so rather than leaving --resume to find out
    with pytest.raises(SystemExit):
        main(["train", *QUICK, "--train.steps", "3", "--train.save-every", "5", "--train.out-dir", str(tmp_path),
              "--train.run-name", "r2"])
    assert (f"stopped at step 2 by the error below, before the first checkpoint (train.save_every): nothing to "
            f"resume; once it is mended, delete {tmp_path / 'r2'} and start again") in capsys.readouterr().out


def test_resume_of_a_run_without_a_checkpoint_says_so_before_printing_its_config(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("train:\n  steps: 2\n")
    with pytest.raises(SystemExit, match=r"the run has no checkpoint to continue from .*delete it and start again"):
        main(["train", "--resume", str(run)])
    assert "--- config ---" not in capsys.readouterr().out


def test_resume_with_a_config_file_says_the_run_s_settings_are_used(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("train:\n  steps: 2\n")
    with pytest.raises(SystemExit, match="--resume takes the run's own settings .*drop --config"):
        main(["train", "--resume", str(run), "--config", "configs/demo.yaml"])
