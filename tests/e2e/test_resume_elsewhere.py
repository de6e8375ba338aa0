"""A run resumed from another working directory reads the data, reward and model its relative paths
named where it started (config.yaml records that directory), and the caller's directory is kept."""

import json
import os
import shutil
from pathlib import Path

from policyforge.train.loop import train
from policyforge.train.resume import start_dir

REWARD = '''def count_a(prompt, completion, **_):
    return float(completion.count("a"))
'''


def _project(root: Path) -> Path:
    """A user's folder with a data file and a reward module, both named by relative paths."""
    root.mkdir()
    rows = [{"prompt": f"rev:{w}=", "target": w[::-1]} for w in ("abc", "dog", "frog", "cat", "bird", "fish")]
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "elsewhere_reward.py").write_text(REWARD)
    return root


def _steps(run: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_resume_from_another_folder_reads_the_run_s_relative_paths_where_it_started(tiny_cfg, tmp_path,
                                                                                         monkeypatch):
    project, other = _project(tmp_path / "project"), tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(project)
    tiny_cfg.data.path, tiny_cfg.data.reward, tiny_cfg.data.eval_size = "rows.jsonl", "elsewhere_reward:count_a", 2
    tiny_cfg.train.out_dir, tiny_cfg.train.steps, tiny_cfg.train.save_every, tiny_cfg.train.stop_after = "runs", 3, 1, 1
    run = train(tiny_cfg, log=lambda *_: None)
    assert start_dir(project / run) == project

    monkeypatch.chdir(other)  # rows.jsonl and the reward module are not here
    tiny_cfg.train.stop_after = None
    lines = []
    done = train(tiny_cfg, resume=str(project / run), log=lines.append)
    assert _steps(done) == [1, 2, 3]
    assert Path.cwd() == other  # the caller's directory is given back
    assert f"resuming in {project}, where the run started" in lines[0]
    assert start_dir(done) == project  # the rewritten config.yaml still records it


def test_a_run_whose_start_folder_is_gone_resumes_where_it_is(tiny_cfg, tmp_path, monkeypatch):
    # moved with its data: the relative paths now hold from the new folder, where the resume is run
    project = _project(tmp_path / "project")
    monkeypatch.chdir(project)
    tiny_cfg.data.path, tiny_cfg.data.reward, tiny_cfg.data.eval_size = "rows.jsonl", "elsewhere_reward:count_a", 2
    tiny_cfg.train.out_dir, tiny_cfg.train.steps, tiny_cfg.train.save_every, tiny_cfg.train.stop_after = "runs", 2, 1, 1
    run = train(tiny_cfg, log=lambda *_: None)
    monkeypatch.chdir(tmp_path)
    shutil.move(project, tmp_path / "moved")
    os.chdir(tmp_path / "moved")
    tiny_cfg.train.stop_after = None
    lines = []
    done = train(tiny_cfg, resume=str(run), log=lines.append)
    assert _steps(done) == [1, 2] and not any("resuming in" in x for x in lines)
    assert start_dir(done) == tmp_path / "moved"


def test_a_data_file_changed_since_the_run_started_is_named_on_resume(tiny_cfg, tmp_path, monkeypatch):
    """The held-out split follows the file's contents: a resume over an edited file warns that held-out rows
    may have been trained on; over the same file (moved folder, new mtime) it says nothing."""
    project = _project(tmp_path / "project")
    monkeypatch.chdir(project)
    tiny_cfg.data.path, tiny_cfg.data.reward, tiny_cfg.data.eval_size = "rows.jsonl", "elsewhere_reward:count_a", 2
    tiny_cfg.train.out_dir, tiny_cfg.train.steps, tiny_cfg.train.save_every, tiny_cfg.train.stop_after = "runs", 3, 1, 1
    run = train(tiny_cfg, log=lambda *_: None)
    rows = (project / "rows.jsonl").read_text()
    (project / "rows.jsonl").write_text(rows)  # same contents, new modification time
    tiny_cfg.train.stop_after = 2
    lines = []
    train(tiny_cfg, resume=str(run), log=lines.append)
    assert not any("changed since this run started" in x for x in lines)
    (project / "rows.jsonl").write_text("".join(reversed(rows.splitlines(keepends=True))))
    tiny_cfg.train.stop_after = None
    lines = []
    train(tiny_cfg, resume=str(run), log=lines.append)
    warned = [x for x in lines if "changed since this run started" in x]
    assert len(warned) == 1 and "data.path 'rows.jsonl'" in warned[0] and "held-out rows may" in warned[0]
