"""data.reward as 'path/to/file.py:function' (rewards/reward_file.py), beside 'module:function'."""

import concurrent.futures
import multiprocessing
import pickle
import textwrap

import pytest

from policyforge.rewards.score import RewardError, load_reward_fn, load_rewards, score
from policyforge.data.tasks import Example
from policyforge.rewards.spec import reward_spec

ROWS = [Example("rev:ab=", "ba", {}, 0), Example("rev:dog=", "god", {}, 1)]


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_a_file_loads_once_with_its_neighbours_importable(tmp_path, monkeypatch):
    _write(tmp_path / "rw" / "helpers_for_file_reward.py", "def vowels(text):\n    return sum(c in 'aeiou' for c in text)\n")
    _write(tmp_path / "rw" / "rewards.py", """
        from helpers_for_file_reward import vowels  # a module beside the file
        CALLS = []
        def score(prompt, completion, **kw):
            CALLS.append(completion)
            return float(vowels(completion))
        def calls(prompt, completion, **kw):
            return float(len(CALLS))
    """)
    monkeypatch.chdir(tmp_path)
    fn = load_reward_fn("rw/rewards.py:score")
    assert score(fn, ROWS, ["oa", "xyz"]).tolist() == [2.0, 0.0]
    assert load_reward_fn(str(tmp_path / "rw" / "rewards.py") + ":score") is fn  # one module per file
    assert reward_spec([fn]) == f"{tmp_path / 'rw' / 'rewards.py'}:score"  # given from Python: by its file
    both = load_rewards("rw/rewards.py:score, rw/rewards.py:calls")  # one file's functions share its globals
    assert score(both, ROWS[:1], ["a"]).tolist() == [1.0 + 3.0]


def test_two_files_of_one_name_stay_apart(tmp_path, monkeypatch):
    for folder, value in (("a", 1.0), ("b", 2.0)):
        _write(tmp_path / folder / "rewards.py", f"def score(prompt, completion):\n    return {value}\n")
    monkeypatch.chdir(tmp_path)
    assert [score(load_reward_fn(f"{d}/rewards.py:score"), ROWS[:1], ["x"]).item() for d in "ab"] == [1.0, 2.0]


def test_a_missing_file_or_function_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RewardError) as info:
        load_reward_fn("nowhere/rewards.py:score")
    assert str(info.value) == f"reward 'nowhere/rewards.py:score': no file 'nowhere/rewards.py' (looked for from {tmp_path})"
    _write(tmp_path / "r.py", "def score(prompt, completion):\n    return 1.0\n")
    with pytest.raises(RewardError, match="^reward 'r.py:scor': file 'r.py' has no function 'scor'$"):
        load_reward_fn("r.py:scor")


def test_a_file_that_fails_loads_again_once_fixed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "fix_me.py", "def score(prompt, completion):\n    return 1.0\ndef broken(:\n")
    with pytest.raises(RewardError, match="importing file 'fix_me.py' raised SyntaxError"):
        load_reward_fn("fix_me.py:score")
    _write(tmp_path / "fix_me.py", "def score(prompt, completion):\n    return 1.0\n")
    assert score(load_reward_fn("fix_me.py:score"), ROWS[:1], ["x"]).tolist() == [1.0]


def test_a_file_s_functions_pickle_into_a_spawned_pool(tmp_path, monkeypatch):
    _write(tmp_path / "spawnable_reward_file.py", """
        import dataclasses
        @dataclasses.dataclass
        class Settings:
            bonus: float = 0.5
        def score(prompt, completion, **kw):
            return float(len(completion)) + Settings().bonus
    """)
    _write(tmp_path / "my.dotted.rewards.py", "def score(prompt, completion, **kw):\n    return 2.0\n")
    monkeypatch.chdir(tmp_path)
    fn = load_reward_fn("spawnable_reward_file.py:score")
    assert fn.__module__ == "spawnable_reward_file"  # its own name: a spawned process imports it from sys.path
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(fn, "p", "abc").result(timeout=120) == 3.5
    dotted = load_reward_fn("my.dotted.rewards.py:score")  # not a module name: a private one, usable here
    assert dotted.__module__.startswith("policyforge_reward_file_my_dotted_rewards_")
    assert pickle.loads(pickle.dumps(dotted)) is dotted


def test_one_function_named_twice_is_refused(tmp_path, monkeypatch):
    _write(tmp_path / "twice_reward_file.py", "def score(prompt, completion):\n    return 1.0\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RewardError, match="^data.reward names one function twice: 'twice_reward_file.py:score' and "
                                          f"'{tmp_path}/twice_reward_file.py:score'$"):
        load_rewards(f"twice_reward_file.py:score, {tmp_path}/twice_reward_file.py:score")
