"""The Python entry: `from policyforge.api import Config, train`, with the reward given as a function."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from policyforge import api
from policyforge.rewards.score import RewardError
from tests.e2e.test_train import vowel_reward


def _rewards(run):
    return [json.loads(line)["reward_mean"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_reward_function_trains_as_its_name_does_and_is_recorded_by_it(tiny_cfg):
    from policyforge.api import Config, train

    assert isinstance(tiny_cfg, Config)
    tiny_cfg.data.reward, tiny_cfg.train.stop_after, tiny_cfg.train.steps = vowel_reward, 1, 2
    run = train(tiny_cfg, log=lambda *_: None)
    assert "reward: tests.e2e.test_train:vowel_reward" in (run / "config.yaml").read_text()
    tiny_cfg.train.stop_after = None
    train(tiny_cfg, resume=str(run), log=lambda *_: None)  # the function again: the same setting as recorded
    by_function = _rewards(run)

    tiny_cfg.data.reward, tiny_cfg.train.run_name = "tests.e2e.test_train:vowel_reward", "by-name"
    assert _rewards(train(tiny_cfg, log=lambda *_: None)) == by_function


@pytest.mark.parametrize("fn", [lambda p, c, **_: 1.0, vowel_reward.__call__])
def test_a_function_its_name_cannot_reach_is_refused_before_the_run(tiny_cfg, fn):
    tiny_cfg.data.reward = fn
    with pytest.raises(RewardError, match="define it with def at the top level of a module"):
        api.train(tiny_cfg, log=lambda *_: None)


class LengthReward:
    """A callable object, as TRL's get_soft_overlong_punishment returns."""

    def __call__(self, prompt, completion, **_):
        return float(len(completion))


LENGTH = LengthReward()  # as `overlong = get_soft_overlong_punishment(32, 8)` at the top of a user's module


def test_a_callable_object_is_recorded_by_the_top_level_name_that_holds_it(tiny_cfg):
    tiny_cfg.data.reward, tiny_cfg.train.steps = [vowel_reward, LENGTH], 1
    run = api.train(tiny_cfg, log=lambda *_: None)
    assert api.load_yaml(run / "config.yaml").data.reward == ("tests.e2e.test_train:vowel_reward, "
                                                              "tests.e2e.test_python_api:LENGTH")
    assert json.loads((run / "metrics.jsonl").read_text())["reward/LENGTH"] > 0


def test_a_script_s_objects_are_recorded_by_an_importable_name_where_there_is_one(tmp_path):
    """Run as a script (its module is __main__, and __mp_main__ too once torch is imported): an object it
    imported is recorded by its module's name, one it made itself by __main__'s."""
    (tmp_path / "my_rewards.py").write_text("class Length:\n    def __call__(self, p, c, **_):\n"
                                            "        return float(len(c))\n\noverlong = Length()\n")
    (tmp_path / "script.py").write_text(
        "import torch\nfrom my_rewards import Length, overlong\nfrom policyforge.rewards.spec import reward_spec\n"
        "mine = Length()\nprint(reward_spec([overlong, mine]))\n")
    repo = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": repo})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "my_rewards:overlong, __main__:mine"


def test_a_callable_object_is_refused_with_how_to_name_it(tiny_cfg):
    tiny_cfg.data.reward = LengthReward()
    with pytest.raises(RewardError, match="give it a top-level name in a module .* data.reward='my_rewards:overlong'"):
        api.train(tiny_cfg, log=lambda *_: None)


def test_several_functions_and_texts_make_one_spec(tiny_cfg):
    from policyforge.rewards.spec import reward_spec

    assert reward_spec([vowel_reward, "examples.my_rewards:brief"]) == (
        "tests.e2e.test_train:vowel_reward, examples.my_rewards:brief")


def test_import_policyforge_stays_cheap():
    """The command line imports torch only for the commands that need it."""
    code = "import sys, policyforge; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_a_reward_defined_in_the_script_itself_gets_a_note(tmp_path):
    """A top-level function of the running script is `__main__:name`: only that script can resume the run."""
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"prompt": f"rev:{w}=", "target": w[::-1]}) + "\n"
                                                 for w in ("abc", "dog", "frog", "cat")))
    script = tmp_path / "job.py"
    script.write_text('''
from policyforge.api import Config, train

def exact(prompt, completion, target, **_):
    return float(completion.strip() == target)

cfg = Config()
cfg.model.path, cfg.data.path, cfg.data.eval_size, cfg.data.reward = "builtin:tiny", "rows.jsonl", 1, exact
cfg.rollout.prompts_per_step, cfg.rollout.group_size, cfg.train.steps, cfg.train.progress = 2, 2, 1, False
train(cfg)
''')
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "note: data.reward '__main__:exact' is defined in the script itself" in done.stdout


def test_evaluate_gives_what_policyforge_eval_prints_and_export_a_loadable_folder(tiny_cfg, tmp_path, capsys):
    from policyforge.cli import main

    run = api.train(tiny_cfg, log=lambda *_: None)
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    tiny_cfg.model.path = str(ckpt)
    capsys.readouterr()
    result = api.evaluate(tiny_cfg, log=lambda *_: None)
    assert set(result) >= {"accuracy", "pass@2", "reward_mean", "completion_len_mean"}
    main(["eval", "--model.path", str(ckpt), "--data.task", "reversal", "--data.task-size", "4",
          "--data.eval-size", "4", "--rollout.max-new-tokens", "4", "--train.pass-k", "2"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    out = api.export(str(run), str(tmp_path / "policy"), log=lambda *_: None)
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
