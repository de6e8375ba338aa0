"""verl's Hydra overrides and config keys are answered with the policyforge option that does their job."""

import re

import pytest

from policyforge.algos import registry
from policyforge.cli import main
from policyforge.cli_verl import VERL_KEYS, check_verl_overrides, verl_answer


def _error(args: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(args)
    return str(e.value)


@pytest.mark.parametrize("override, answer", [
    ("algorithm.adv_estimator=grpo", "--algo.advantage NAME (verl's grpo = grpo"),
    ("actor_rollout_ref.rollout.n=8", "--rollout.group-size N"),
    ("+actor_rollout_ref.actor.kl_loss_type=low_var_kl", "--algo.drift ESTIMATOR COEF (verl's kl = k1, mse = k2, "
                                                         "low_var_kl = k3)"),
    ("custom_reward_function.path=my_reward.py", "--data.reward PATH:NAME"),
])
def test_a_verl_override_is_answered_with_the_flag(override, answer):
    key = override.split("=")[0].lstrip("+")
    assert _error(["train", override, "--train.steps", "1"]) == (
        f"error: {override} is a Hydra override; {key} is verl's; here it is {answer}"
        + VERL_KEYS[key][len(answer):])


def test_another_key_of_a_verl_section_points_to_policyforge_s_sections():
    message = _error(["train", "++trainer.val_before_train=False"])
    assert message.startswith("error: ++trainer.val_before_train=False is a Hydra override; trainer.val_before_train "
                              "is in a section of verl's config, which policyforge does not have: policyforge's "
                              "sections are model, data, rollout, algo, optim, train and sft")
    check_verl_overrides(["--algo.loss-kwargs", "eps_low", "0.2", "x=1", "--data.stop=a.b=c", "run/dir"])  # not verl's
    assert verl_answer("model.path") is None


def test_a_verl_config_file_is_answered(tmp_path):
    (tmp_path / "verl.yaml").write_text("data:\n  train_files: train.parquet\n")
    assert _error(["train", "--config", str(tmp_path / "verl.yaml")]) == (
        "error: unknown config key 'data.train_files'; it is verl's; here it is --data.path FILE")
    (tmp_path / "verl.yaml").write_text("actor_rollout_ref:\n  rollout:\n    n: 8\n")
    assert _error(["train", "--config", str(tmp_path / "verl.yaml")]).startswith(
        "error: unknown config key 'actor_rollout_ref'; it is in a section of verl's config, which policyforge does "
        "not have")


def test_every_flag_and_name_an_answer_gives_exists(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    listed = capsys.readouterr().out
    names = {name for kind in ("advantage", "loss", "drift", "aggregation") for name in registry.table(kind)}
    for key, answer in VERL_KEYS.items():
        for flag in re.findall(r"--[a-z-]+\.[a-z-]+", answer):
            assert flag in listed, (key, flag)
        for ours in re.findall(r"= (\w+)", answer):  # verl's name = policyforge's, for a choice spelled differently
            assert ours in names or ours in ("k1", "k2", "k3"), (key, ours)
