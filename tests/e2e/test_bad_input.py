"""Each mistake a user can make fails at once, with one message naming the culprit."""

import json
import textwrap

import pytest

from policyforge.algos.registry import UnknownAlgorithm
from policyforge.data.user import DataError
from policyforge.models.load import ModelError
from policyforge.rewards.score import RewardError
from policyforge.train.config import ConfigError, load_yaml
from policyforge.train.loop import train


def _no_run_dir(cfg):
    from pathlib import Path

    return not (Path(cfg.train.out_dir) / cfg.train.run_name).exists()


def test_unknown_config_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("rollout:\n  group_sise: 4\n")
    with pytest.raises(ConfigError, match="rollout.group_sise.*group_size"):
        load_yaml(p)


def test_unknown_algorithm_lists_valid_names(tiny_cfg):
    tiny_cfg.algo.loss = "ppo_clipp"
    with pytest.raises(UnknownAlgorithm, match="'ppo_clipp'.*ppo_clip.*reinforce"):
        train(tiny_cfg)
    assert _no_run_dir(tiny_cfg)


def test_unknown_hyper_parameter(tiny_cfg):
    tiny_cfg.algo.loss_kwargs = {"eps_hi": 0.3}
    with pytest.raises(UnknownAlgorithm, match="eps_hi.*eps_high"):
        train(tiny_cfg)


def test_group_size_below_two(tiny_cfg):
    tiny_cfg.rollout.group_size = 1
    with pytest.raises(ConfigError, match="group_size=1"):
        train(tiny_cfg)
    assert _no_run_dir(tiny_cfg)


def test_model_path_missing(tiny_cfg, tmp_path):
    tiny_cfg.model.path = str(tmp_path / "nope")
    with pytest.raises(ModelError, match="nope.*does not exist"):
        train(tiny_cfg)
    assert _no_run_dir(tiny_cfg)


def _dataset(tmp_path, rows):
    p = tmp_path / "data.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def _reward_module(tmp_path, monkeypatch, body):
    (tmp_path / "user_rewards.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys

    sys.modules.pop("user_rewards", None)


def test_missing_dataset_column(tiny_cfg, tmp_path):
    tiny_cfg.data.path = str(_dataset(tmp_path, [{"prompt": "a"}, {"question": "b"}]))
    tiny_cfg.data.reward = "user_rewards:score"
    with pytest.raises(DataError, match="row 1: missing column 'prompt'"):
        train(tiny_cfg)


def test_reward_that_raises_names_the_row(tiny_cfg, tmp_path, monkeypatch):
    _reward_module(tmp_path, monkeypatch, """
        def score(prompt, completion, target):
            return 1.0 / 0
    """)
    tiny_cfg.data.path = str(_dataset(tmp_path, [{"prompt": "rev:ab=", "target": "ba"}]))
    tiny_cfg.data.reward = "user_rewards:score"
    with pytest.raises(RewardError, match="raised on row 0.*ZeroDivisionError"):
        train(tiny_cfg)
    assert _no_run_dir(tiny_cfg)


def test_reward_that_returns_nan_names_the_row(tiny_cfg, tmp_path, monkeypatch):
    _reward_module(tmp_path, monkeypatch, """
        def score(prompt, completion, target):
            return float("nan")
    """)
    tiny_cfg.data.path = str(_dataset(tmp_path, [{"prompt": "rev:ab=", "target": "ba"}]))
    tiny_cfg.data.reward = "user_rewards:score"
    with pytest.raises(RewardError, match="returned nan for row 0"):
        train(tiny_cfg)


def test_user_data_and_reward_run_end_to_end(tiny_cfg, tmp_path, monkeypatch):
    _reward_module(tmp_path, monkeypatch, """
        def score(prompt, completion, target):
            return float(completion.strip() == target)
    """)
    rows = [{"prompt": f"rev:{w}=", "target": w[::-1]} for w in ("abc", "dog", "cat", "pig")]
    tiny_cfg.data.path = str(_dataset(tmp_path, rows))
    tiny_cfg.data.reward = "user_rewards:score"
    run = train(tiny_cfg, log=lambda *_: None)
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
