"""Data a user gets wrong fails at once with one line; valid data is split and read as documented."""

import hashlib
import json

import pytest

from policyforge.cli import main
from policyforge.data.tasks import BuiltinTask
from policyforge.data.user import DataError, load_rows
from policyforge.train.config import DataConfig
from policyforge.train.setup import build_data


# --- 1. built-in tasks ---

def test_unknown_task_is_one_line_error_listing_valid_names(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--data.task", "reverse"])
    assert str(e.value).startswith("error: data.task='reverse'") and "addition, reversal, sorting" in str(e.value)
    assert "\n" not in str(e.value)


# The sampling loops that once spun forever are bounded by construction: the size checks below run before
# any drawing, and BuiltinTask's MAX_DRAWS_* limits end the two loops that draw (tested with small limits below).
# So these tests need no wall-clock guard.

@pytest.mark.parametrize("name,size", [("reversal", 2), ("sorting", 1), ("addition", 0)])
def test_task_size_below_minimum(name, size):
    with pytest.raises(DataError, match=f"data.task_size={size} is too small for {name}"):
        BuiltinTask(name, size, eval_size=4)


@pytest.mark.parametrize("eval_size", [200, 100, 51])
def test_eval_size_too_close_to_distinct_prompts(eval_size):
    # addition with 1 digit makes 100 prompts: 200 used to hang in _unique, 100 in train_example
    with pytest.raises(DataError, match=rf"eval_size={eval_size}.*only 100 distinct.*at most.*50"):
        BuiltinTask("addition", 1, eval_size=eval_size)


def test_largest_allowed_eval_size_trains_on_the_rest():
    task = BuiltinTask("addition", 1, eval_size=50)
    held = {e.prompt for e in task.held_out}
    train = [task.train_example(i).prompt for i in range(200)]
    assert len(held) == 50 and not held & set(train)


def test_held_out_sampling_stops_at_its_draw_limit(monkeypatch):
    # One draw per wanted prompt: 50 draws from 100 prompts repeat one (all 50 distinct has probability
    # 100!/(50! 100^50), about 3e-7), so the loop must give up with a DataError instead of drawing on.
    monkeypatch.setattr(BuiltinTask, "MAX_DRAWS_PER_HELD_OUT", 1)
    with pytest.raises(DataError, match=r"found only \d+ of 50 distinct held-out prompts"):
        BuiltinTask("addition", 1, eval_size=50)


def test_training_sampling_stops_at_its_draw_limit(monkeypatch):
    # Half the 100 prompts are held out: with one draw allowed, about every second training problem draws a
    # held-out prompt first (all 100 missing them has probability about 2^-100), and must fail, not redraw.
    monkeypatch.setattr(BuiltinTask, "MAX_DRAWS_PER_TRAIN", 1)
    task = BuiltinTask("addition", 1, eval_size=50)
    with pytest.raises(DataError, match=r"training problem \d+ drew only held-out prompts in 1 tries"):
        for i in range(100):
            task.train_example(i)


def _digest(task: BuiltinTask) -> str:
    text = [e.prompt + e.solution for e in task.held_out] + [task.train_example(i).prompt for i in range(300)]
    return hashlib.sha256("\n".join(text).encode()).hexdigest()[:16]


def test_valid_settings_make_the_same_prompts_as_before():
    # digests taken from the code before the size checks and draw limits were added (the demo's data first)
    assert _digest(BuiltinTask("reversal", 6, eval_size=200, seed=0)) == "192d5485034beeb8"
    assert _digest(BuiltinTask("addition", 1, eval_size=50, seed=0)) == "d5ad3d46ad0b2abc"


# --- 2-4. your own data ---

def _jsonl(tmp_path, rows, name="data.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


def _rows(n):
    return [{"prompt": f"rev:w{i}=", "target": f"{i}w"} for i in range(n)]


def test_held_out_rows_are_not_trained_on(tmp_path):
    cfg = DataConfig(path=_jsonl(tmp_path, _rows(10)), reward="examples.my_rewards:exact", eval_size=3)
    source, held, _ = build_data(cfg, seed=0)
    trained = {source.train_example(i).prompt for i in range(30)}
    assert [e.prompt for e in held] == ["rev:w0=", "rev:w1=", "rev:w2="]
    assert trained == {f"rev:w{i}=" for i in range(3, 10)}


def test_small_file_holds_out_at_most_half(tmp_path):
    cfg = DataConfig(path=_jsonl(tmp_path, _rows(8)), reward="examples.my_rewards:exact")  # eval_size 200
    source, held, _ = build_data(cfg, seed=0)
    trained = {source.train_example(i).prompt for i in range(40)}
    assert len(held) == 4 and trained == {f"rev:w{i}=" for i in range(4, 8)}


def test_explicit_eval_path_splits_nothing_off_but_its_own_prompts(tmp_path):
    # the eval file's first two rows are held out (eval_size 2); the training file keeps every other row
    cfg = DataConfig(path=_jsonl(tmp_path, _rows(6)), eval_path=_jsonl(tmp_path, _rows(3), "eval.jsonl"),
                     reward="examples.my_rewards:exact", eval_size=2)
    source, held, _ = build_data(cfg, seed=0)
    assert [e.prompt for e in held] == ["rev:w0=", "rev:w1="]
    assert {source.train_example(i).prompt for i in range(24)} == {f"rev:w{i}=" for i in range(2, 6)}


def test_non_string_solution_names_row_and_column(tmp_path):
    path = _jsonl(tmp_path, [{"q": "1+1=", "a": "2"}, {"q": "1+1=", "a": 2}])
    with pytest.raises(DataError, match=r"data.jsonl, line 2: column 'a' must be a string, got int"):
        load_rows(path, prompt_column="q", solution_column="a")


@pytest.mark.parametrize("empty", ["", "  \n"])
def test_an_empty_prompt_is_refused_naming_its_line(tmp_path, empty):
    # a prompt field that lost its text: without this the policy would be trained on samples from an empty context
    path = _jsonl(tmp_path, [{"prompt": "rev:ab=", "target": "ba"}, {"prompt": empty, "target": "x"}])
    with pytest.raises(DataError, match=r"data.jsonl, line 2: the prompt \(column 'prompt'\) is empty"):
        load_rows(path)


def test_json_array_file_is_read(tmp_path):
    p = tmp_path / "data.json"
    p.write_text(json.dumps([{"prompt": "rev:ab=", "target": "ba"}, {"prompt": "rev:cd=", "target": "dc"}], indent=2))
    rows = load_rows(str(p))
    assert [r.prompt for r in rows] == ["rev:ab=", "rev:cd="]
    assert rows[1].extra == {"target": "dc"} and rows[1].index == 1


def test_json_array_of_non_objects_names_the_row(tmp_path):
    p = tmp_path / "data.json"
    p.write_text('[{"prompt": "a"}, "b"]')
    with pytest.raises(DataError, match=r"data.json, row 1: expected a JSON object, got str"):
        load_rows(str(p))


def test_json_file_of_json_lines_is_still_read(tmp_path):
    rows = load_rows(_jsonl(tmp_path, _rows(2), "data.json"))
    assert [r.prompt for r in rows] == ["rev:w0=", "rev:w1="]


def test_each_row_knows_its_place_in_its_file_for_errors(tmp_path):
    # JSON Lines: the line in an editor (blank lines count); a JSON array: the element, counted from 0
    lines = tmp_path / "rows.jsonl"
    lines.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n')
    assert [e.where() for e in load_rows(str(lines))] == [f"{lines}, line 1", f"{lines}, line 3"]
    array = tmp_path / "rows.json"
    array.write_text('[{"prompt": "a"},\n {"prompt": "b"}]')
    assert [(e.index, e.where()) for e in load_rows(str(array))] == [(0, f"{array}, row 0"), (1, f"{array}, row 1")]
    assert BuiltinTask("reversal", 4, eval_size=4).held_out[2].where() == "row 2"  # no file: its index


def test_a_reward_error_names_the_file_and_line_of_its_row(tmp_path):
    from policyforge.rewards.score import RewardError, score

    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "a", "n": 1}\n\n{"prompt": "b", "n": 0}\n')
    with pytest.raises(RewardError, match=f"raised on {data}, line 3 .*ZeroDivisionError"):
        score(lambda prompt, completion, n: 1 / n, load_rows(str(data)), ["x", "y"])


def test_a_csv_file_reads_like_the_others_and_a_ragged_row_is_named(tmp_path):
    data = tmp_path / "rows.csv"
    data.write_text('prompt,answer\nrev:abc=,cba\n"rev:a,b=","b,a"\n\n"two\nlines",x\nlast,y\n')
    rows = load_rows(str(data))
    assert [(r.prompt, r.extra, r.where()) for r in rows] == [
        ("rev:abc=", {"answer": "cba"}, f"{data}, line 2"), ("rev:a,b=", {"answer": "b,a"}, f"{data}, line 3"),
        ("two\nlines", {"answer": "x"}, f"{data}, line 5"), ("last", {"answer": "y"}, f"{data}, line 7")]
    data.write_text("prompt,answer\nrev:abc=,cba\nrev:dog=\n")
    with pytest.raises(DataError, match="line 3: fewer fields than the header's 2 \\(prompt, answer\\)"):
        load_rows(str(data))
    data.write_text("prompt,answer\nrev:abc=,cba,extra\n")
    with pytest.raises(DataError, match="line 2: more fields than the header's 2"):
        load_rows(str(data))


def test_a_system_prompt_on_a_built_in_task_s_unrendered_prompts_is_refused_not_dropped():
    from policyforge.train.config import DataConfig
    from policyforge.train.setup import build_data

    with pytest.raises(DataError, match=r"data.system_prompt is set, but the built-in task's plain-text prompts are "
                                        r"not rendered \(data.chat_template=auto\)"):
        build_data(DataConfig(task="reversal", system_prompt="be nice"), seed=0)
