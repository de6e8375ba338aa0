"""What --resume refuses and what it survives: settings that would change the run midway, a step
count below the checkpoint, a second process on the same run, a checkpoint that cannot fit on the
disk or in the model; a pointer file lost to a kill, and half-written folders left by one."""

import errno
import json
import subprocess
import sys

import pytest

from policyforge.cli import main
from policyforge.train import checkpoint
from policyforge.train.config import ConfigError
from policyforge.train.loop import train
from policyforge.train.resume import LOCK


def quiet(*_):
    pass


@pytest.fixture
def stopped(tiny_cfg):
    """A run stopped after step 2 of 4 (checkpoints at 1 and 2), and the config it was started with."""
    tiny_cfg.train.steps, tiny_cfg.train.save_every, tiny_cfg.train.stop_after = 4, 1, 2
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"
    run = train(tiny_cfg, log=quiet)
    tiny_cfg.train.stop_after = None
    return run, tiny_cfg


def _steps(run):
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_setting_that_would_change_the_run_midway_is_refused_and_config_yaml_kept(stopped):
    run, cfg = stopped
    saved = (run / "config.yaml").read_text()
    cfg.optim.lr, cfg.train.seed = 0.5, 7
    with pytest.raises(ConfigError, match=r"optim.lr: 0.001 -> 0.5; train.seed: 0 -> 7 differ from its config.yaml"):
        train(cfg, resume=str(run), log=quiet)
    assert (run / "config.yaml").read_text() == saved and _steps(run) == [1, 2]


def test_data_reward_is_compared_function_by_function_not_as_text(stopped):
    """'a:f,b:g' and 'a:f, b:g' name the same functions; another function is a change."""
    run, cfg = stopped
    cfg.data.reward = "tests.e2e.test_train:vowel_reward , "
    train(cfg, resume=str(run), log=quiet)
    assert _steps(run) == [1, 2, 3, 4]
    cfg.data.reward = "tests.e2e.test_train:vowel_reward,examples.my_rewards:brief"
    with pytest.raises(ConfigError, match="data.reward: 'tests.e2e.test_train:vowel_reward' -> "):
        train(cfg, resume=str(run), log=quiet)


def test_length_logging_and_keeping_may_change_on_resume(stopped):
    run, cfg = stopped
    cfg.train.steps, cfg.train.eval_every, cfg.train.keep_checkpoints, cfg.train.log_samples = 5, 1, 3, 1
    train(cfg, resume=str(run), log=quiet)
    assert _steps(run) == [1, 2, 3, 4, 5]
    assert [p.name for p in checkpoint.complete_checkpoints(run / "checkpoints")] == [
        "step_000003", "step_000004", "step_000005"]
    assert not (run / LOCK).exists()  # released at the end


def test_steps_below_the_checkpoint_are_refused(stopped):
    run, cfg = stopped
    cfg.train.steps = 1
    with pytest.raises(ConfigError, match="train.steps=1 but the checkpoint step_000002 is at step 2"):
        train(cfg, resume=str(run), log=quiet)


def test_a_lost_latest_pointer_resumes_from_the_newest_complete_checkpoint(stopped):
    """A kill between a checkpoint's rename and the pointer's write leaves no `latest`; half-written
    .tmp folders (a kill mid-save) are never taken for checkpoints and are cleared at the next save."""
    run, cfg = stopped
    root = run / "checkpoints"
    (root / "latest").unlink()
    (root / "step_000003.tmp").mkdir()
    assert checkpoint.latest(run) == root / "step_000002"
    train(cfg, resume=str(run), log=quiet)
    assert _steps(run) == [1, 2, 3, 4] and not list(root.glob("*.tmp"))


def test_a_run_another_live_process_holds_is_refused_and_a_dead_ones_claim_lapses(stopped):
    run, cfg = stopped
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK).write_text(f"{other.pid}\n")
        with pytest.raises(ConfigError, match=f"in use by process {other.pid}"):
            train(cfg, resume=str(run), log=quiet)
    finally:
        other.kill()
        other.wait()
    train(cfg, resume=str(run), log=quiet)  # the holder is gone: its claim no longer counts
    assert _steps(run) == [1, 2, 3, 4]


@pytest.mark.parametrize("stop_after", [1, 2])
def test_a_stop_the_checkpoint_has_passed_is_refused_before_a_step(stopped, stop_after, monkeypatch):
    run, cfg = stopped
    cfg.train.stop_after = stop_after
    loaded = []
    monkeypatch.setattr("policyforge.train.loop.load_model", lambda *a, **k: loaded.append(a))
    with pytest.raises(ConfigError, match=f"train.stop_after={stop_after} but the run's checkpoint is at step 2 "
                                          "already: give a later step, or leave it out"):
        train(cfg, resume=str(run), log=quiet)
    assert not loaded  # refused before any model is loaded
    monkeypatch.undo()
    assert _steps(run) == [1, 2]
    cfg.train.stop_after = 3
    train(cfg, resume=str(run), log=quiet)
    assert _steps(run) == [1, 2, 3]


def test_a_new_run_whose_name_another_process_just_took_says_so(tiny_cfg, tmp_path):
    from policyforge.train.resume import claim

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK).write_text(f"{other.pid}\n")
        with pytest.raises(ConfigError, match=f"was just taken by process {other.pid}, a run started at the same time "
                                              "under the same name: give each run its own train.run_name"):
            claim(tmp_path, fresh=True)
    finally:
        other.kill()
        other.wait()


def test_runs_named_by_the_time_in_the_same_second_get_their_own_directories(tiny_cfg, monkeypatch):
    from policyforge.train import setup

    monkeypatch.setattr(setup.time, "strftime", lambda fmt: "20261202-000000")  # both start in one second
    tiny_cfg.train.run_name, tiny_cfg.train.steps = None, 1
    first, second = train(tiny_cfg, log=quiet), train(tiny_cfg, log=quiet)
    assert (first.name, second.name) == ("reversal-ppo_clip-20261202-000000", "reversal-ppo_clip-20261202-000000-2")
    assert _steps(first) == _steps(second) == [1]
    tiny_cfg.train.run_name = first.name  # a name given is never changed: that run is refused instead
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tiny_cfg, log=quiet)


def test_a_checkpoint_that_cannot_fit_on_the_disk_is_not_started(stopped, monkeypatch):
    run, cfg = stopped
    before = sorted(p.name for p in (run / "checkpoints").iterdir())

    class Full:
        free = 1 << 20  # 1 MB: less than the model and its optimiser state

    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda _: Full)
    with pytest.raises(OSError, match="no room for checkpoint step_000003") as e:
        train(cfg, resume=str(run), log=quiet)
    assert e.value.errno == errno.ENOSPC
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # nothing half-written


def test_the_cli_reports_a_full_disk_in_one_line(stopped, monkeypatch):
    run, cfg = stopped

    class Full:
        free = 0

    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda _: Full)
    with pytest.raises(SystemExit) as e:
        main(["train", "--resume", str(run), "--train.no-progress"])
    assert str(e.value).startswith("error: [Errno 28] no room for checkpoint step_000003")


def test_a_checkpoint_of_another_shape_is_one_clear_error(stopped, tmp_path):
    from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model

    run, cfg = stopped
    wide = tiny_model(char_tokenizer(), TinySpec(hidden=96, layers=2, heads=4, intermediate=128))
    with pytest.raises(ConfigError, match=r"does not fit model.path's model \(size mismatch for"):
        checkpoint.load_weights(wide, checkpoint.latest(run))


def test_where_the_run_lives_cannot_change_on_resume(stopped):
    # the resume runs in the run's own folder; a new run_name or out_dir would be written to config.yaml untrue
    run, cfg = stopped
    cfg.train.run_name = "renamed"
    with pytest.raises(ConfigError, match="train.run_name: 'run' -> 'renamed' differ"):
        train(cfg, resume=str(run), log=quiet)


def test_a_resume_warns_when_model_path_was_replaced_since_the_run_began(tiny_cfg, tmp_path):
    import os
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_cfg.model.path, model)
    tiny_cfg.model.path = str(model)
    tiny_cfg.train.steps, tiny_cfg.train.save_every, tiny_cfg.train.stop_after = 2, 1, 1
    run = train(tiny_cfg, log=quiet)
    tiny_cfg.train.stop_after = None
    lines = []
    train(tiny_cfg, resume=str(run), log=lines.append)  # unchanged: no word
    assert not any(x.startswith("warning: the weight files") for x in lines)
    tiny_cfg.train.steps = 3
    weights = model / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # rewritten since
    lines = []
    train(tiny_cfg, resume=str(run), log=lines.append)
    assert any(x.startswith(f"warning: the weight files of model.path {str(model)!r} changed") for x in lines)


def test_resuming_a_finished_run_says_it_is_finished_and_how_to_train_on(stopped):
    run, cfg = stopped
    train(cfg, resume=str(run), log=quiet)  # to the end: step 4 of 4
    lines = []
    train(cfg, resume=str(run), log=lines.append)
    assert any("the run was finished (train.steps 4): give --train.steps above 4 to train on" in x for x in lines)


def test_a_run_started_from_another_run_s_checkpoint_is_told_that_run_may_delete_it(stopped, tmp_path):
    run, cfg = stopped
    cfg.model.path, cfg.train.run_name, cfg.train.steps = str(run / "checkpoints" / "step_000002"), "borrower", 1
    lines = []
    train(cfg, log=lines.append)
    assert any(x.startswith(f"note: model.path is a checkpoint of the run {str(run)!r}, which keeps only its newest")
               for x in lines)
