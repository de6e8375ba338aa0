"""verl's Hydra overrides and config keys are answered with the policyforge option that does their job."""

import re

import pytest

from policyforge.algos import registry
from policyforge.cli import main
from policyforge.cli_verl import VERL_FLAGS, VERL_KEYS, check_verl_overrides, verl_answer
from policyforge.data.dynamic_sampling import MODES as DYNAMIC_SAMPLING
from policyforge.train.config import ConfigError, load_yaml
from tests.cli.test_cli_checks import _error  # the CLI's error line


VERL_FIRST = ("error: not policyforge options: {}; here each is the option that does its job (README \"Coming from "
              "verl\" maps the rest):")


@pytest.mark.parametrize("override, line", [
    ("algorithm.adv_estimator=grpo_passk", "  ->  --algo.advantage passk"),  # verl's name for it differs
    ("actor_rollout_ref.rollout.n=8", "  ->  --rollout.group-size 8"),
    ("++actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm",
     "  ->  --algo.aggregation seq_mean_token_sum_norm"),
    ("custom_reward_function.path=my_reward.py", "  ->  --data.reward my_reward.py:compute_score"),  # verl's default
    ("actor_rollout_ref.rollout.top_k=-1", "  ->  (nothing: the default here)"),  # verl's off, as 0 is here
    ("+actor_rollout_ref.rollout.name=vllm", "  ->  (nothing: policyforge samples with its own KV-cache sampler)"),
])
def test_a_verl_override_is_translated_with_its_value(override, line):
    flags = line.split("  ->  ")[1]
    assert _error(["train", override, "--train.steps", "1"]).split("\n") == [
        VERL_FIRST.format("a Hydra override of verl's"), f"  {override}{line}",
        f"the whole command: policyforge train {flags + ' ' if flags[0] == '-' else ''}--train.steps 1"]


@pytest.mark.parametrize("override", [
    "algorithm.adv_estimator=gae",  # needs a critic
    "actor_rollout_ref.actor.ppo_mini_batch_size=64",
    "data.train_files=[a.parquet,b.parquet]",  # two files: --data.path takes one
    "actor_rollout_ref.rollout.n=${oc.env:N}",  # an interpolation: its value is not known here
])
def test_a_verl_override_with_no_clean_translation_keeps_its_answer_and_no_command_is_offered(override):
    key = override.split("=")[0].lstrip("+")
    assert _error(["train", override, "--train.steps", "1"]).split("\n") == [
        VERL_FIRST.format("a Hydra override of verl's"), f"  {override}: here it is {VERL_KEYS[key]}"]


def test_the_value_names_verl_spells_differently_are_translated():
    for key, flag in (("algorithm.adv_estimator", "--algo.advantage"),
                      ("actor_rollout_ref.actor.loss_agg_mode", "--algo.aggregation")):
        pairs = re.findall(r"([\w-]+) = (\w+)", VERL_KEYS[key])
        assert len(pairs) >= 4
        for theirs, ours in pairs:
            assert VERL_FLAGS[key]([theirs]) == f"{flag} {ours}", (key, theirs)
    for theirs, ours in (("kl", "k1"), ("mse", "k2"), ("low_var_kl", "k3")):
        assert _error(["train", "actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.actor.kl_loss_coef=0.01",
                       "actor_rollout_ref.actor.kl_loss_type=" + theirs]).split("\n")[1].endswith(
            f"  ->  --algo.drift {ours} 0.01")


@pytest.mark.parametrize("overrides", [
    ["+actor_rollout_ref.actor.kl_loss_type=low_var_kl"], ["actor_rollout_ref.actor.kl_loss_coef=0.001"],
    ["actor_rollout_ref.actor.kl_loss_coef=0.001", "actor_rollout_ref.actor.kl_loss_type=low_var_kl"],
    ["actor_rollout_ref.actor.use_kl_loss=False", "actor_rollout_ref.actor.kl_loss_coef=0.001"],
])
def test_a_kl_loss_verl_does_not_read_is_no_drift_term_and_leaves_the_command_whole(overrides):
    """verl reads kl_loss_coef and kl_loss_type only with use_kl_loss=True, False by default (its configs carry a
    coefficient regardless): nothing here, and the command is still offered."""
    lines = _error(["train", *overrides, "--train.steps", "1"]).split("\n")
    assert lines[-1] == "the whole command: policyforge train --train.steps 1"
    assert "--algo.drift" not in "\n".join(lines)


def test_every_override_is_answered_at_once_with_the_whole_command():
    # the porting user's command: one run answers all of it, path and name joined into one --data.reward
    assert _error(["train", "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=4",
                   "custom_reward_function.path=r.py", "custom_reward_function.name=score", "--train.steps",
                   "3"]) == "\n".join([
        VERL_FIRST.format("4 Hydra overrides of verl's"),
        "  algorithm.adv_estimator=grpo  ->  --algo.advantage grpo",
        "  actor_rollout_ref.rollout.n=4  ->  --rollout.group-size 4",
        "  custom_reward_function.path=r.py custom_reward_function.name=score  ->  --data.reward r.py:score",
        "the whole command: policyforge train --algo.advantage grpo --rollout.group-size 4 --data.reward r.py:score "
        "--train.steps 3"])


def test_verl_s_overrides_and_trl_s_flags_are_answered_together_in_order():
    lines = _error(["train", "actor_rollout_ref.actor.use_kl_loss=True", "--num_generations", "4",
                    "actor_rollout_ref.actor.kl_loss_coef=0.001", "algorithm.adv_estimator=grpo",
                    "algorithm.norm_adv_by_std_in_grpo=False", "--max_steps=3"]).split("\n")
    assert lines == [
        "error: not policyforge options: 4 Hydra overrides of verl's and 2 TRL / OpenRLHF flags; here each is the "
        "option that does its job (README \"Coming from verl\" and \"Coming from TRL\" map the rest):",
        # verl's kl_loss_type defaults to low_var_kl, k3 here
        "  actor_rollout_ref.actor.use_kl_loss=True actor_rollout_ref.actor.kl_loss_coef=0.001  ->  --algo.drift k3 "
        "0.001",
        "  --num_generations 4  ->  --rollout.group-size 4",
        "  algorithm.adv_estimator=grpo algorithm.norm_adv_by_std_in_grpo=False  ->  --algo.advantage dr_grpo",
        "  --max_steps=3  ->  --train.steps 3",
        "the whole command: policyforge train --algo.drift k3 0.001 --rollout.group-size 4 --algo.advantage dr_grpo "
        "--train.steps 3"]


def test_another_key_of_a_verl_section_points_to_policyforge_s_sections():
    lines = _error(["train", "++trainer.val_before_train=False", "ray_init.num_cpus=4", "trainer.save_freq=5"]
                   ).split("\n")
    assert lines[1] == "  trainer.save_freq=5  ->  --train.save-every 5"
    assert lines[2].startswith("  ++trainer.val_before_train=False, ray_init.num_cpus=4: no counterpart here; "
                               "policyforge's sections are model, data, rollout, algo, optim, train and sft")
    assert len(lines) == 3  # no whole command: two overrides have no counterpart


def test_a_dict_flag_s_words_and_a_run_directory_are_not_overrides():
    check_verl_overrides(["--algo.loss-kwargs", "eps_low", "0.2", "x=1", "--data.stop=a.b=c", "run/dir"])  # not verl's
    assert verl_answer("model.path") is None
    assert _error(["train", "--algo.loss-kwargs", "eps_low", "0.2", "actor_rollout_ref.actor.clip_ratio_high=0.28",
                   "run/dir"]).split("\n")[-1] == (
        "the whole command: policyforge train --algo.loss-kwargs eps_low 0.2 eps_high 0.28 run/dir")
    with pytest.raises(ConfigError, match="actor_rollout_ref.rollout.n=4  ->  --rollout.group-size 4"):
        check_verl_overrides(["actor_rollout_ref.rollout.n=4"])


VERL_YAML = """\
data:
  tokenizer: null
  train_files: rev.parquet
  max_prompt_length: 512
actor_rollout_ref:
  actor:
    use_kl_loss: true
    kl_loss_coef: 0.001
    kl_loss_type: mse
    optim:
      lr: 1.0e-6
  rollout:
    n: 8
algorithm:
  adv_estimator: grpo_passk
trainer:
  total_training_steps: 3
  seed: 7
"""


def test_a_verl_config_file_is_answered(tmp_path):
    (tmp_path / "verl.yaml").write_text("data:\n  train_files: train.parquet\n")  # one key: one line, as before
    assert _error(["train", "--config", str(tmp_path / "verl.yaml")]) == (
        "error: unknown config key 'data.train_files'; it is verl's; here it is --data.path FILE")


def test_a_verl_config_file_s_nested_keys_are_answered_at_once(tmp_path):
    (tmp_path / "verl.yaml").write_text(VERL_YAML)
    assert _error(["train", "--config", str(tmp_path / "verl.yaml"), "--train.no-progress"]) == "\n".join([
        VERL_FIRST.format("10 config keys"),
        "  data.train_files: rev.parquet  ->  --data.path rev.parquet",
        "  data.max_prompt_length: 512  ->  (nothing: prompts are never cut; one longer than the model's context "
        "with --rollout.max-new-tokens is refused at start-up, naming the row)",
        "  actor_rollout_ref.actor.use_kl_loss: true actor_rollout_ref.actor.kl_loss_coef: 0.001 "
        "actor_rollout_ref.actor.kl_loss_type: mse  ->  --algo.drift k2 0.001",
        "  actor_rollout_ref.actor.optim.lr: 1e-06  ->  --optim.lr 1e-06",
        "  actor_rollout_ref.rollout.n: 8  ->  --rollout.group-size 8",
        "  algorithm.adv_estimator: grpo_passk  ->  --algo.advantage passk",
        "  trainer.total_training_steps: 3  ->  --train.steps 3",
        "  trainer.seed: 7  ->  --train.seed 7",  # verl's trainer.seed is policyforge's train.seed
        # the file is verl's whole: its flags replace --config FILE, the user's own flags stay
        "the whole command: policyforge train --data.path rev.parquet --algo.drift k2 0.001 --optim.lr 1e-06 "
        "--rollout.group-size 8 --algo.advantage passk --train.steps 3 --train.seed 7 --train.no-progress"])


def test_a_verl_config_s_keys_with_no_counterpart_share_one_line(tmp_path):
    (tmp_path / "verl.yaml").write_text("actor_rollout_ref:\n  rollout:\n    n: 8\n    mode: async\n"
                                        "trainer:\n  val_before_train: false\nrollout:\n  temperature: 0.7\n")
    lines = _error(["train", "--config", str(tmp_path / "verl.yaml")]).split("\n")
    assert lines[1] == "  actor_rollout_ref.rollout.n: 8  ->  --rollout.group-size 8"
    assert lines[2].startswith("  actor_rollout_ref.rollout.mode, trainer.val_before_train: no counterpart here; "
                               "policyforge's sections are")
    assert len(lines) == 3  # rollout.temperature is policyforge's: the file has to be edited, not replaced
    with pytest.raises(ConfigError) as e:  # loaded outside the command line, the same answer
        load_yaml(tmp_path / "verl.yaml")
    assert str(e.value).split("\n")[1:] == lines[1:]


def test_every_flag_and_name_an_answer_gives_exists(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    listed = capsys.readouterr().out
    names = {name for kind in ("advantage", "loss", "drift", "aggregation") for name in registry.table(kind)}
    for key, answer in VERL_KEYS.items():
        for flag in re.findall(r"--[a-z-]+\.[a-z-]+", answer):
            assert flag in listed, (key, flag)
        for ours in re.findall(r"= (\w+)", answer):  # verl's name = policyforge's, for a choice spelled differently
            assert ours in names or ours in ("k1", "k2", "k3", *DYNAMIC_SAMPLING), (key, ours)
    for key, to in VERL_FLAGS.items():  # and every flag a translation gives
        for word in (to(["1"]) or "").split() + (to(["grpo"]) or "").split():
            assert not word.startswith("--") or word in listed, (key, word)


def test_values_verl_leaves_unset_or_lists_are_answered_not_crashed_on():
    for args in (["custom_reward_function.path=null", "custom_reward_function.name=my_fn"],
                 ["custom_reward_function.path=[]", "custom_reward_function.name=f"],
                 ["actor_rollout_ref.actor.use_dynamic_bsz=null",
                  "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=100"]):
        assert _error(["train", *args]).startswith("error: not policyforge options: 2 Hydra overrides of verl's")


def test_a_policyforge_flag_s_value_is_never_taken_for_an_override():
    from policyforge.cli import parse_config

    cfg = parse_config("policyforge train", ["--train.run-name", "algorithm.adv_estimator=grpo", "--rollout.stop",
                                             "trainer.x=1", "data.train_files=x"], "")
    assert cfg.train.run_name == "algorithm.adv_estimator=grpo" and cfg.rollout.stop == ["trainer.x=1",
                                                                                         "data.train_files=x"]


def test_verl_s_dynamic_sampling_keys_become_policyforge_s():
    assert _error(["train", "algorithm.filter_groups.enable=True", "algorithm.filter_groups.metric=seq_reward",
                   "algorithm.filter_groups.max_num_gen_batches=4"]).split("\n")[1:] == [
        "  algorithm.filter_groups.enable=True algorithm.filter_groups.metric=seq_reward  ->  "
        "--rollout.dynamic-sampling reward",
        "  algorithm.filter_groups.max_num_gen_batches=4  ->  --rollout.max-sampling-rounds 4",
        "the whole command: policyforge train --rollout.dynamic-sampling reward --rollout.max-sampling-rounds 4"]
    assert _error(["train", "algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=acc"]).endswith(
        "the whole command: policyforge train --rollout.dynamic-sampling accuracy")
    off = _error(["train", "algorithm.filter_groups.enable=False", "algorithm.filter_groups.metric=acc"])
    assert off.endswith("the whole command: policyforge train")  # off is the default here
    # verl's 0 (no limit) has no counterpart: the answer says so instead of a flag
    unlimited = _error(["train", "algorithm.filter_groups.max_num_gen_batches=0"]).split("\n")
    assert len(unlimited) == 2 and "no unlimited" in unlimited[1]


def test_verl_s_generation_rounds_are_scaled_to_rounds_of_the_training_batch():
    lines = _error(["train", "algorithm.filter_groups.max_num_gen_batches=10", "data.gen_batch_size=96",
                    "data.train_batch_size=32"]).split("\n")
    assert lines[1].endswith("  ->  --rollout.max-sampling-rounds 30 --rollout.prompts-per-step 32")
    assert len(_error(["train", "algorithm.filter_groups.max_num_gen_batches=2.5"]).split("\n")) == 2  # no flag


def test_a_verl_override_written_as_a_flag_is_answered_too():
    lines = _error(["train", "--actor_rollout_ref.rollout.n=8", "--rollout.stop=a.b=c"]).split("\n")
    assert lines[1:] == ["  --actor_rollout_ref.rollout.n=8  ->  --rollout.group-size 8",
                         "the whole command: policyforge train --rollout.group-size 8 --rollout.stop=a.b=c"]


def test_a_translation_that_repeats_a_flag_the_user_gave_is_pointed_out():
    lines = _error(["train", "--rollout.dynamic-sampling", "reward", "algorithm.filter_groups.enable=True",
                    "algorithm.filter_groups.metric=acc"]).split("\n")
    assert lines[-2] == ("  note: --rollout.dynamic-sampling is given twice, '--rollout.dynamic-sampling reward' and then "
                         "'--rollout.dynamic-sampling accuracy': the parse keeps the last; keep the one you mean")
