"""A TRL batched reward function through the real loop: it trains as its per-row twin does, is called once per
batch with lists, and a failure at start-up says it is the start-up check and where in the user's code."""

import json
import sys
import textwrap
from pathlib import Path

import pytest

from policyforge.rewards.score import RewardError
from policyforge.train.loop import train

CALLS = []  # (number of completions, the answer column) of each call of vowels_trl


def vowels_trl(completions, answer, **kwargs):
    """tests.e2e.test_train:vowel_reward in TRL's form."""
    CALLS.append((len(completions), list(answer)))
    return [float(sum(ch in "aeiou" for ch in c)) for c in completions]


def _rewards(cfg, spec: str, name: str) -> list[float]:
    cfg.data.reward, cfg.train.run_name = spec, name
    run = train(cfg, log=lambda *_: None)
    return [json.loads(line)["reward_mean"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_trl_function_trains_as_its_per_row_twin(tiny_cfg):
    CALLS.clear()
    batched = _rewards(tiny_cfg, "tests.e2e.test_reward_trl_form:vowels_trl", "trl")
    per_row = _rewards(tiny_cfg, "tests.e2e.test_train:vowel_reward", "per-row")
    assert len(batched) == 2 and batched == pytest.approx(per_row, abs=1e-6) and sum(batched) > 0
    # one call each: the start-up check (a held-out row, then a training row), the step-0 evaluation of the 4
    # held-out rows, then each step's 2 prompts x 4 completions
    assert [n for n, _ in CALLS[:5]] == [1, 1, 4, 8, 8]
    assert all(len(a) == n and all(isinstance(x, str) for x in a) for n, a in CALLS)  # the answer column as a list


def test_a_reward_failing_at_start_up_is_labelled_and_located(tiny_cfg, tmp_path, monkeypatch):
    (tmp_path / "trl_form_rewards.py").write_text(textwrap.dedent("""
        def score(completions, target, **kwargs):
            return {"oops": 1}["missing"]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("trl_form_rewards", None)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"rev:{w}=", "target": w[::-1]}) + "\n"
                            for w in ("abc", "dog", "frog", "cat", "owl", "bee")))
    tiny_cfg.data.path, tiny_cfg.data.eval_size, tiny_cfg.data.reward = str(data), 2, "trl_form_rewards:score"
    with pytest.raises(RewardError, match=r"^start-up check \(empty completion, not a model output\): batched "
                                          r"reward function 'score' raised on .*data.jsonl, line 1: KeyError: "
                                          r"'missing' \(at .*trl_form_rewards.py:3 in score\)$"):
        train(tiny_cfg)
    assert not (Path(tiny_cfg.train.out_dir) / tiny_cfg.train.run_name).exists()


def exact_trl(completions, target, **kwargs):
    return [float(c.strip() == t) for c, t in zip(completions, target)]


def test_a_held_out_file_with_other_columns_is_checked_apart_from_the_training_file(tiny_cfg, tmp_path):
    """Training and evaluation never score the two files' rows in one call, so neither does the start-up check."""
    rows = [{"prompt": f"rev:{w}=", "target": w[::-1]} for w in ("abc", "dog", "frog", "cat")]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "e.jsonl").write_text("".join(json.dumps({**r, "id": i}) + "\n" for i, r in enumerate(rows[:2])))
    tiny_cfg.data.path, tiny_cfg.data.eval_path = str(tmp_path / "d.jsonl"), str(tmp_path / "e.jsonl")
    tiny_cfg.data.reward, tiny_cfg.train.steps = "tests.e2e.test_reward_trl_form:exact_trl", 1
    run = train(tiny_cfg, log=lambda *_: None)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
