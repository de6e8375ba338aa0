"""data/replay.py: RLEP's pool file and its draws."""

from __future__ import annotations

import json

import pytest

from policyforge.data.replay import ReplayPool, pool_lines, read_pool
from policyforge.data.tasks import DataError


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_the_pool_groups_completions_by_prompt_and_keeps_repeats(tmp_path):
    pool = read_pool(_write(tmp_path / "p.jsonl", [
        {"prompt": "rev:ab=", "completion": "ba", "reward": 1.0}, {"prompt": "rev:cd=", "completion": "dc"},
        {"prompt": "rev:ab=", "completion": "ba"}, {"prompt": "rev:cd=", "completion": "dc", "ending": "</a>"}]))
    assert pool.by_prompt == {"rev:ab=": [("ba", "")] * 2, "rev:cd=": [("dc", ""), ("dc", "</a>")]} and len(pool) == 4
    assert pool.completions("rev:zz=") == []


def test_pool_lines_read_back(tmp_path):
    (tmp_path / "p.jsonl").write_text("".join(pool_lines("q", [("a", ""), ("b", "\n##")], [1.0, 2.0])))
    assert read_pool(str(tmp_path / "p.jsonl")).by_prompt == {"q": [("a", ""), ("b", "\n##")]}
    assert "ending" not in json.loads(pool_lines("q", [("a", "")], [1.0])[0])  # the end token: no key


def test_draws_repeat_for_the_same_seed_step_and_prompt_and_take_without_replacement():
    pool = ReplayPool({"q": [(f"c{i}", "") for i in range(20)], "r": [("x", "")]})
    first = pool.draw("q", 2, seed=0, step=5)
    assert first == pool.draw("q", 2, seed=0, step=5) and len(set(first)) == 2
    assert len({tuple(pool.draw("q", 2, seed=0, step=s)) for s in range(10)}) > 1  # a new pair most steps
    assert sorted(pool.draw("q", 20, 0, 1)) == sorted(pool.completions("q"))  # all of them, each once
    assert pool.draw("r", 2, 0, 1) == [("x", "")]  # fewer than n: all it has
    assert pool.draw("missing", 2, 0, 1) == []


def test_draws_skip_what_does_not_fit():
    pool = ReplayPool({"q": [("short", ""), ("far too long", "")]})
    assert pool.draw("q", 2, 0, 1, fits=lambda c: len(c[0]) < 6) == [("short", "")]


@pytest.mark.parametrize("text, says", [
    ('{"prompt": "q", "completion": "a"}\nnot json\n', "line 2: not valid JSON"),
    ('{"prompt": "q"}\n', 'line 1: a pool line has string "prompt" and "completion"'),
    ('{"prompt": "q", "completion": "a", "ending": 1}\n', "line 1: a pool line has string"),
    ('["q", "a"]\n', "line 1: expected a JSON object, got list"),
    ("\n\n", "holds no completions"),
    (b'{"prompt": "q", "completion": "a"}\n{"prompt": "q", "completion": "\xff"}\n', r"line 2: not UTF-8 text"),
])
def test_a_bad_pool_file_is_named_with_its_line(tmp_path, text, says):
    if isinstance(text, bytes):
        (tmp_path / "p.jsonl").write_bytes(text)
    else:
        (tmp_path / "p.jsonl").write_text(text)
    with pytest.raises(DataError, match=f"data.replay_pool .*p.jsonl.*{says}"):
        read_pool(str(tmp_path / "p.jsonl"))


def test_a_missing_pool_says_what_writes_one(tmp_path):
    with pytest.raises(DataError, match="no such file; `policyforge collect` writes one"):
        read_pool(str(tmp_path / "none.jsonl"))
    with pytest.raises(DataError, match="is a directory: give the .jsonl file"):
        read_pool(str(tmp_path))
