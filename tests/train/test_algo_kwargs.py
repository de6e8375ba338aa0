"""Hyper-parameter values are coerced to their types at start-up, or refused there with one line.

Covers: text booleans and numbers from the command line, the fixed values of string options,
list-valued hyper-parameters (gdpo's weights) from YAML and the command line, drift_kwargs
without the drift term, and resuming a checkpoint with another stateful algorithm.
"""

import json

import pytest
import yaml

from policyforge.algos.registry import KINDS, UnknownAlgorithm, check_kwargs, table
from policyforge.cli import main, parse_config
from policyforge.train.algorithm import resolve
from policyforge.train.config import AlgoConfig, ConfigError, load_yaml, to_yaml
from tests.algos.inputs import call_entry, make_batch

QUICK = ["--model.path", "builtin:tiny", "--data.task", "reversal", "--data.task-size", "4", "--data.eval-size", "4",
         "--rollout.prompts-per-step", "2", "--rollout.group-size", "2", "--rollout.max-new-tokens", "3",
         "--train.pass-k", "2", "--train.eval-every", "0", "--train.no-progress"]


# --- 1. values are coerced to the type of each hyper-parameter ---------------------------------------------------

@pytest.mark.parametrize("text, value", [("false", False), ("FALSE", False), ("no", False), ("0", False), (0, False),
                                         (False, False), ("true", True), ("Yes", True), ("1", True), (True, True)])
def test_bool_text_is_a_bool(text, value):
    cfg = AlgoConfig(advantage="gpg", advantage_kwargs={"scale_by_std": text})
    assert resolve(cfg).advantage_kwargs == {"scale_by_std": value}
    assert cfg.advantage_kwargs == {"scale_by_std": value}  # what config.yaml records


def test_numbers_from_text_and_ints():
    algo = resolve(AlgoConfig(advantage="passk", advantage_kwargs={"k": "4"}, loss_kwargs={"eps_low": "0.1",
                                                                                           "eps_high": 1}))
    assert algo.advantage_kwargs == {"k": 4} and type(algo.advantage_kwargs["k"]) is int
    assert algo.loss_kwargs == {"eps_low": 0.1, "eps_high": 1.0} and type(algo.loss_kwargs["eps_high"]) is float


def test_optional_number_takes_none_or_a_number():
    cfg = AlgoConfig(drift={"k3": 0.04}, drift_kwargs={"k3": {"clamp": "10"}}, loss="cpgd",
                     loss_kwargs={"drift_clip": "None"})
    algo = resolve(cfg)
    assert algo.drift[0][2] == {"clamp": 10.0} and algo.loss_kwargs == {"drift_clip": None}
    assert cfg.drift_kwargs == {"k3": {"clamp": 10.0}}


@pytest.mark.parametrize("algo, match", [
    (dict(advantage="gpg", advantage_kwargs={"scale_by_std": "maybe"}),
     r"advantage 'gpg' hyper-parameter scale_by_std='maybe': expected a bool"),
    (dict(loss_kwargs={"eps_low": "abc"}), r"loss 'ppo_clip' hyper-parameter eps_low='abc': expected a number"),
    (dict(loss_kwargs={"eps_low": True}), r"eps_low=True: expected a number"),
    (dict(loss="topr", loss_kwargs={"level": "tokn"}),
     r"loss 'topr' hyper-parameter level='tokn': expected one of 'token', 'sequence'"),
    (dict(advantage="copo", advantage_kwargs={"gate": "Zero"}),
     r"gate='Zero': expected one of 'zero', 'forced', 'none'"),
    (dict(advantage="passk", advantage_kwargs={"k": 4.5}), r"passk' hyper-parameter k=4.5: expected a whole number"),
    (dict(drift={"k3": 0.04}, drift_kwargs={"k3": {"clamp": "abc"}}),
     r"drift 'k3' hyper-parameter clamp='abc': expected a number \(float\) or None"),
    (dict(advantage="gdpo", advantage_kwargs={"weights": "[1.0,x]"}), r"gdpo' hyper-parameter weights='\[1.0,x\]'"),
])
def test_bad_values_fail_at_start_up_naming_algorithm_key_value_and_type(algo, match):
    with pytest.raises(UnknownAlgorithm, match=match):
        resolve(AlgoConfig(**algo))


def test_cli_bad_value_is_one_line_before_any_work(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["train", *QUICK, "--algo.loss", "topr", "--algo.loss-kwargs", "level", "tokn",
              "--train.out-dir", str(tmp_path / "runs"), "--train.run-name", "r"])
    assert str(e.value) == "error: loss 'topr' hyper-parameter level='tokn': expected one of 'token', 'sequence'"
    assert not (tmp_path / "runs").exists()


def test_every_text_option_lists_its_values_and_they_match_the_function():
    # The start-up list and the function's own check must agree: each listed value runs, another raises.
    batch = make_batch()
    for kind in KINDS:
        for entry in table(kind).values():
            for key, default in entry.hyper().items():
                if isinstance(default, str):
                    assert key in entry.choices, f"{kind} {entry.name}: text option {key} lists no choices"
            for key, allowed in entry.choices.items():
                for value in allowed:
                    call_entry(entry, batch, **{key: value})
                with pytest.raises(ValueError):
                    call_entry(entry, batch, **{key: "not-a-choice"})


def test_every_default_passes_its_own_check():
    for kind in KINDS:
        for entry in table(kind).values():
            hyper = entry.hyper()
            assert check_kwargs(entry, hyper) == hyper, f"{kind} {entry.name}"


def test_coerced_values_are_saved_in_config_yaml(tmp_path):
    main(["train", *QUICK, "--train.steps", "1", "--algo.advantage", "gpg", "--algo.advantage-kwargs", "scale_by_std",
          "false", "--train.out-dir", str(tmp_path / "runs"), "--train.run-name", "r"])
    saved = yaml.safe_load((tmp_path / "runs" / "r" / "config.yaml").read_text())
    assert saved["algo"]["advantage_kwargs"] == {"scale_by_std": False}


# --- 2. list-valued hyper-parameters (gdpo's weights) ------------------------------------------------------------

def test_list_from_yaml(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("algo:\n  advantage: gdpo\n  advantage_kwargs: {weights: [1.0, 0.5]}\n")
    cfg = load_yaml(p)
    assert resolve(cfg.algo).advantage_kwargs == {"weights": [1.0, 0.5]}
    assert "- 0.5" in to_yaml(cfg)


@pytest.mark.parametrize("args", [["weights", "1.0", "0.5"], ["weights", "[1.0,0.5]"], ["weights", "1,0.5"]])
def test_list_from_the_command_line(args):
    cfg = parse_config("t", ["--algo.advantage", "gdpo", "--algo.advantage-kwargs", *args], "")
    assert resolve(cfg.algo).advantage_kwargs == {"weights": [1.0, 0.5]}
    assert cfg.algo.advantage_kwargs == {"weights": [1.0, 0.5]}


def test_list_between_other_hyper_parameters():
    cfg = parse_config("t", ["--algo.advantage", "gdpo", "--algo.advantage-kwargs", "weights", "1", "0.5", "eps",
                             "1e-4"], "")
    assert resolve(cfg.algo).advantage_kwargs == {"weights": [1.0, 0.5], "eps": 1e-4}


def test_gdpo_weights_train_end_to_end(tmp_path):
    main(["train", *QUICK, "--train.steps", "1", "--data.path", "examples/reverse.jsonl", "--data.reward",
          "examples.my_rewards:exact_and_length", "--algo.advantage", "gdpo", "--algo.advantage-kwargs", "weights",
          "1.0", "0.5", "--train.out-dir", str(tmp_path / "runs"), "--train.run-name", "r"])
    run = tmp_path / "runs" / "r"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert yaml.safe_load((run / "config.yaml").read_text())["algo"]["advantage_kwargs"] == {"weights": [1.0, 0.5]}


# --- 3. drift_kwargs for a drift term the run does not use -------------------------------------------------------

def test_drift_kwargs_without_the_drift_is_a_config_error():
    with pytest.raises(ConfigError, match=r"algo.drift_kwargs names \['k3'\] which are not in algo.drift \[\]"):
        resolve(AlgoConfig(drift_kwargs={"k3": {"clamp": 10}}))


# --- 4. resuming with another stateful algorithm -----------------------------------------------------------------

def test_state_of_another_algorithm_is_refused():
    saved = resolve(AlgoConfig(loss="aepo")).state_dict()
    with pytest.raises(ConfigError, match=r"holds algorithm state for loss 'aepo', but this run asks for loss 'bapo'"
                                          r".*trained with loss 'aepo'; resume it with the same algorithm"):
        resolve(AlgoConfig(loss="bapo")).load_state_dict(saved)
    with pytest.raises(ConfigError, match=r"holds no algorithm state, but this run asks for loss 'bapo'"):
        resolve(AlgoConfig(loss="bapo")).load_state_dict({})
    with pytest.raises(ConfigError, match=r"asks for no stateful algorithm: the run was trained with loss 'aepo'"):
        resolve(AlgoConfig()).load_state_dict(saved)
    resolve(AlgoConfig(loss="aepo")).load_state_dict(saved)  # the same algorithm resumes


def test_cli_resume_with_another_stateful_loss(tmp_path):
    run = tmp_path / "runs" / "r"
    main(["train", *QUICK, "--train.steps", "2", "--train.stop-after", "1", "--algo.loss", "aepo",
          "--train.out-dir", str(tmp_path / "runs"), "--train.run-name", "r"])
    with pytest.raises(SystemExit) as e:
        main(["train", "--resume", str(run), "--algo.loss", "bapo"])
    assert str(e.value).startswith(f"error: --resume continues {run} as it was configured, but algo.loss: "
                                   "'aepo' -> 'bapo' differs from its config.yaml")
    assert str(e.value).endswith(f"(--model.path {run}/checkpoints/step_000001)")  # the checkpoint it has
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1]


def test_gdpo_weights_that_do_not_match_the_reward_fail_before_any_work(tmp_path):
    import pytest as _pytest

    from policyforge.cli import main

    with _pytest.raises(SystemExit) as e:
        main(["train", "--model.path", "builtin:tiny", "--data.path", "examples/reverse.jsonl",
              "--data.eval-size", "4", "--data.reward", "examples.my_rewards:exact_and_length",
              "--algo.advantage", "gdpo", "--algo.advantage-kwargs", "weights", "1.0", "0.5", "0.25",
              "--train.out-dir", str(tmp_path / "runs"), "--train.no-progress"])
    assert "weights [1.0, 0.5, 0.25] has 3 entries, but the reward gives 2 component(s)" in str(e.value)
    assert not (tmp_path / "runs").exists()


def test_int_hyper_parameters_are_kept_exactly():
    from policyforge.algos.registry import check_kwargs, get

    big = 2**53 + 1  # a float round trip would make it 2**53
    assert check_kwargs(get("loss", "otr"), {"seed": big})["seed"] == big


def test_aepo_first_tempered_rollout_uses_the_configured_t_high():
    """Before any loss call the state has recorded no settings: the run's own t_high must still apply."""
    algo = resolve(AlgoConfig(loss="aepo", loss_kwargs={"t_high": 1.5, "t_low": 0.7}))
    assert algo.tempered_temperature() == 1.5
