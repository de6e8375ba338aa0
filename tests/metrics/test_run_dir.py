"""The run directory survives a torn append, and refuses damage it cannot explain."""

import pytest

from policyforge.metrics.run_dir import RunDir


def test_a_last_line_cut_short_is_dropped(tmp_path):
    run = RunDir(tmp_path)
    run.append("metrics.jsonl", {"step": 1})
    run.append("metrics.jsonl", {"step": 2})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "reward_me')  # the process died mid-write
    assert run.read("metrics.jsonl") == [{"step": 1}, {"step": 2}]
    run.truncate("metrics.jsonl", lambda r: r["step"] <= 2)  # what resume does: the file is whole again
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'


def test_a_bad_line_in_the_middle_is_an_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        RunDir(tmp_path).read("metrics.jsonl")
