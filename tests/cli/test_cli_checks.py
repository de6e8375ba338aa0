"""The command line around tyro's parse: a peer's flag names its policyforge option, and a dict flag never
drops a repeated key."""

import pytest

from policyforge.cli import main
from policyforge.cli_checks import PEER_FLAGS


def _error(args: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(args)
    return str(e.value)


@pytest.mark.parametrize("flag, answer", [
    ("--beta", "--algo.drift k3 BETA"),  # tyro alone suggests --optim.betas, AdamW's
    ("--num_generations", "--rollout.group-size N"),  # TRL's spelling, underscores and all
    ("--learning-rate", "--optim.lr LR"),
    ("--max-completion-length", "--rollout.max-new-tokens N"),
    ("--loss-type", "--algo.aggregation (TRL's dapo = token_mean"),
])
def test_a_trl_flag_is_answered_with_the_policyforge_option(flag, answer):
    message = _error(["train", flag, "1", "--train.steps", "1"])
    assert message.startswith(f"error: {flag.replace('_', '-')} is not a policyforge option; here it is {answer}")


@pytest.mark.parametrize("flag, answer", [
    ("--algo.beta", "--algo.drift k3 BETA"),  # a TRL name under the section a user guessed for it
    ("--algo.eps-high", "--algo.loss-kwargs eps_high EPS"),
    ("--rollout.max-completion-length", "--rollout.max-new-tokens N"),
    ("--soft-punish-cache", "--algo.overlong-buffer N"),
    ("--multi-objective-aggregation", "--algo.advantage (TRL's sum_then_normalize = grpo"),
])
def test_a_trl_name_under_a_section_or_newer_is_answered_too(flag, answer):
    assert _error(["train", flag, "1"]).startswith(f"error: {flag} is not a policyforge option; here it is {answer}")


def test_no_policyforge_option_is_taken_for_a_peer_name():
    from policyforge.cli_checks import _own_flags, check_peer_flags

    own = sorted(_own_flags())
    assert "--rollout.max-new-tokens" in own and "--optim.max-grad-norm" in own  # also TRL / OpenRLHF names
    check_peer_flags(own)
    check_peer_flags(own, "sft")


def test_a_trl_key_in_a_config_file_is_answered(tmp_path):
    (tmp_path / "run.yaml").write_text("beta: 0.04\nalgo:\n  epsilon_high: 0.28\n")
    assert _error(["train", "--config", str(tmp_path / "run.yaml")]) == (
        "error: unknown config key 'beta'; it is TRL's or OpenRLHF's name: here it is --algo.drift k3 BETA (TRL's "
        "beta is the coefficient of a k3 KL penalty to the reference; beta 0, TRL's default, is no --algo.drift)")
    (tmp_path / "run.yaml").write_text("algo:\n  epsilon_high: 0.28\n")
    assert "unknown config key 'algo.epsilon_high'; it is TRL's or OpenRLHF's name: here it is --algo.loss-kwargs " \
           "eps_high" in _error(["train", "--config", str(tmp_path / "run.yaml")])


def test_an_option_in_another_section_of_a_config_file_is_pointed_to_its_section(tmp_path):
    (tmp_path / "run.yaml").write_text("train:\n  max_grad_norm: 1.0\n")
    assert _error(["train", "--config", str(tmp_path / "run.yaml")]) == (
        "error: unknown config key 'train.max_grad_norm'; it belongs under optim: (optim.max_grad_norm)")
    (tmp_path / "run.yaml").write_text("lr: 0.1\n")
    assert _error(["train", "--config", str(tmp_path / "run.yaml")]).endswith(
        "it belongs under optim: (optim.lr) or sft: (sft.lr)")


def test_every_option_a_peer_flag_points_to_exists(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    listed = capsys.readouterr().out
    for flag, answer in PEER_FLAGS.items():
        for word in answer.split():
            word = word.rstrip(":,)")
            if word.startswith("--") and not word.endswith("_estimator"):
                assert word in listed, (flag, word)


def test_a_key_named_twice_in_a_dict_flag_is_refused():
    assert _error(["train", "--algo.drift", "k3", "0.04", "k3", "0.1"]) == (
        "error: --algo.drift names 'k3' 2 times; name each key once (only the last value would be used)")
    assert "--algo.loss-kwargs names 'eps_low' 2 times" in _error(
        ["train", "--algo.loss-kwargs", "eps_low", "0.1", "eps_high", "0.3", "eps_low", "0.3"])


def test_a_dict_flag_given_twice_is_refused():
    assert "--algo.drift is given 2 times; give it once" in _error(
        ["train", "--algo.drift", "k3", "0.04", "--algo.drift", "k2", "0.1"])


def test_distinct_keys_pass_and_options_of_two_drift_terms_on_one_flag_are_refused():
    from policyforge.cli import parse_config

    cfg = parse_config("t", ["--algo.drift", "k3", "0.04", "entropy", "0.01", "--algo.drift-kwargs", "k3", "clamp",
                             "10"], "")
    assert cfg.algo.drift == {"k3": 0.04, "entropy": 0.01} and cfg.algo.drift_kwargs == {"k3": {"clamp": 10}}
    # the parse would file entropy's options under k3 ({'k3': {'clamp': 5, 'entropy': []}})
    assert "cannot tell where k3's options end and entropy's begin" in _error(
        ["train", "--algo.drift", "k3", "0.04", "entropy", "0.01", "--algo.drift-kwargs", "k3", "clamp", "10",
         "entropy", "clamp", "5"])


def test_under_sft_a_peer_flag_names_sft_s_own_option():
    assert "here it is --sft.lr LR" in _error(["sft", "--learning-rate", "1e-3"])
    assert "here it is --sft.steps N" in _error(["sft", "--max-steps", "5"])
    assert "here it is --optim.lr LR" in _error(["train", "--learning-rate", "1e-3"])
