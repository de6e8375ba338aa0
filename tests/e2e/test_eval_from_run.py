"""`policyforge eval` of a run's checkpoint (or of a run directory) starts from the run's config.yaml: the run's
task, data, reward, held-out split and sampling settings, flags on top, with a warning when a flag changes
the held-out rows; a model folder outside a run is evaluated as before."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from policyforge.cli import main
from policyforge.train.loop import train


def _eval(capsys, *args) -> tuple[dict, str]:
    """(the result's JSON line, stderr) of `policyforge eval ARGS`."""
    capsys.readouterr()
    main(["eval", *map(str, args)])
    out, err = capsys.readouterr()
    return json.loads(out.strip().splitlines()[-1]), err


@pytest.fixture
def run(tiny_cfg) -> Path:
    """A 3-step run of the reversal task (not eval's default addition) keeping checkpoints 2 and 3."""
    tiny_cfg.train.steps, tiny_cfg.train.save_every = 3, 1
    return train(tiny_cfg, log=lambda *_: None)


def test_a_run_s_checkpoint_is_evaluated_with_the_run_s_settings(run, capsys):
    ckpt = run / "checkpoints" / "step_000003"
    got, err = _eval(capsys, "--model.path", ckpt)
    assert f"settings from {run / 'config.yaml'} (the run this checkpoint belongs to)" in err
    assert "built-in task reversal (size 4), 4 held-out problems" in err
    assert "warning" not in err
    with_config, err = _eval(capsys, "--model.path", ckpt, "--config", run / "config.yaml")
    assert "settings from" not in err  # the file given is the one read
    final = json.loads((run / "eval.jsonl").read_text().splitlines()[-1])
    final.pop("step")
    assert got == with_config == final  # the run's own last evaluation, pass@2 included


def test_a_run_directory_is_evaluated_at_its_latest_checkpoint(run, capsys):
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_000002", "step_000003"]
    got, err = _eval(capsys, run)
    assert f"step_000003 of run {run}" in err and "built-in task reversal" in err
    for model_path in (run, run / "checkpoints" / "latest"):  # the same through --model.path
        assert _eval(capsys, "--model.path", model_path)[0] == got
    assert got == _eval(capsys, "--model.path", run / "checkpoints" / "step_000003", "--config",
                        run / "config.yaml")[0]


def test_flags_override_the_run_s_settings(run, capsys):
    got, err = _eval(capsys, run, "--train.pass-k", "3", "--rollout.max-new-tokens", "2", "--data.eval-size", "2")
    assert set(got) == {"accuracy", "pass@3", "reward_mean", "completion_len_mean"}
    assert "built-in task reversal (size 4), 2 held-out problems" in err
    assert "warning" not in err  # two of the run's four held-out problems: none was trained on


@pytest.mark.parametrize("flags, warned", [
    (["--data.eval-size", "6"], "data.eval_size 4 -> 6"),
    (["--data.task-size", "5"], "data.task_size 4 -> 5"),
    (["--data.task", "sorting"], None),  # another task: none of its prompts was a training row of the run
])
def test_a_flag_that_changes_the_held_out_split_is_warned_about(run, capsys, flags, warned):
    _, err = _eval(capsys, run, "--train.pass-k", "0", *flags)
    if warned:
        assert f"warning: {warned} differs from the run's: the held-out rows scored may include rows the run " \
               "trained on" in err
    else:
        assert "warning" not in err


def test_a_run_on_user_data_is_evaluated_from_elsewhere_with_its_relative_paths(tiny_cfg, tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the reward's loader puts the run's folder on it
    project, other = tmp_path / "project", tmp_path / "other"
    project.mkdir(), other.mkdir()
    rows = [{"prompt": f"rev:{w}=", "target": w[::-1]} for w in ("abc", "dog", "frog", "cat", "bird", "fish")]
    (project / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (project / "eval_run_reward.py").write_text("def exact(prompt, completion, target, **_):\n"
                                                "    return float(completion.strip() == target)\n")
    (other / "more.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[::-1]))
    monkeypatch.chdir(project)
    tiny_cfg.data.path, tiny_cfg.data.reward, tiny_cfg.data.eval_size = "rows.jsonl", "eval_run_reward:exact", 2
    tiny_cfg.train.out_dir = "runs"
    run = project / train(tiny_cfg, log=lambda *_: None)

    monkeypatch.chdir(other)  # neither rows.jsonl nor the reward module is here
    got, err = _eval(capsys, run)
    assert f"the run's relative paths are read from {project}, where it started" in err
    assert "eval: 2 held-out rows (data.eval_size=2)" in err and "warning" not in err
    assert set(got) == {"accuracy", "pass@2", "reward_mean", "completion_len_mean"} and Path.cwd() == other
    # Repro B: another eval_size holds out other rows of the file, which the run trained on
    _, err = _eval(capsys, run, "--data.eval-size", "3")
    assert "warning: data.eval_size 2 -> 3 differs from the run's" in err
    # a file named on the command line is found here, and it is another split
    _, err = _eval(capsys, run, "--data.eval-path", "more.jsonl")
    assert f"warning: data.eval_path None -> '{other / 'more.jsonl'}' differs" in err
    assert "eval: 2 held-out rows" in err and "of data.eval_path " in err and "more.jsonl, model" in err


def test_a_model_folder_outside_a_run_is_evaluated_as_before(run, tmp_path, capsys):
    copy = tmp_path / "elsewhere" / "checkpoints" / "step_000003"  # a checkpoint's files, no run around them
    shutil.copytree(run / "checkpoints" / "step_000003", copy)
    got, err = _eval(capsys, "--model.path", copy, "--data.task-size", "2", "--data.eval-size", "3",
                     "--rollout.max-new-tokens", "2", "--train.pass-k", "0")
    assert "built-in task addition (size 2), 3 held-out problems" in err  # eval's defaults, not the run's
    assert "settings from" not in err and "of run" not in err and set(got) == {"accuracy", "reward_mean", "completion_len_mean"}


def test_eval_names_what_is_not_a_run(tmp_path, run):
    with pytest.raises(SystemExit, match="not a run directory .one with config.yaml and checkpoints/.; to evaluate "
                                         "a model folder, give it as --model.path"):
        main(["eval", str(tmp_path)])
    with pytest.raises(SystemExit, match="give a run directory or --model.path, not both"):
        main(["eval", str(run), "--model.path", str(run)])
    empty = tmp_path / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "config.yaml", empty / "config.yaml")
    with pytest.raises(SystemExit, match="has no complete checkpoint yet"):
        main(["eval", str(empty)])


def test_a_run_that_held_nothing_out_says_so(tiny_cfg, tmp_path, capsys):
    tiny_cfg.data.eval_size, tiny_cfg.train.steps = 0, 1
    run = train(tiny_cfg, log=lambda *_: None)
    with pytest.raises(SystemExit, match=r"held no rows out \(data.eval_size 0: every row trained\); give "
                                         r"--data.eval-path FILE"):
        main(["eval", str(run)])
    got, _ = _eval(capsys, run, "--data.eval-size", "3")  # a size given: the task's held-out problems
    assert set(got) == {"accuracy", "pass@2", "reward_mean", "completion_len_mean"}
