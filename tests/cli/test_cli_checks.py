"""The command line around tyro's parse: a peer's flag names its policyforge option, and a dict flag never
drops a repeated key."""

import shlex

import pytest

from policyforge.train.validate import validate

from policyforge.cli import main
from policyforge.cli_trl import PEER_FLAGS, PEER_TO, SFT_TO


def _error(args: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(args)
    return str(e.value)


TRL_FIRST = ("error: not policyforge options: {}; here each is the option that does its job (README \"Coming from "
             "TRL\" maps the rest):")


@pytest.mark.parametrize("args, line", [
    # tyro alone suggests --optim.betas, AdamW's; TRL 1.16 weights the KL by the ratio (use_bias_correction_kl)
    (["--beta", "0.04"], "--beta 0.04  ->  --algo.drift k3 0.04 --algo.drift-unbiased"),
    (["--beta", "0.04", "--use_bias_correction_kl", "false"],
     "--beta 0.04 --use_bias_correction_kl false  ->  --algo.drift k3 0.04"),
    (["--use_bias_correction_kl"], "--use_bias_correction_kl  ->  (nothing: the default here)"),  # no beta: no KL
    (["--use_vllm", "false"], "--use_vllm false  ->  (nothing: the default here)"),
    (["--top_entropy_quantile", "1.0"], "--top_entropy_quantile 1.0  ->  (nothing: the default here)"),
    (["--entropy_coef", "0.01"], "--entropy_coef 0.01  ->  --algo.drift entropy 0.01"),
    (["--scale_rewards", "group"], "--scale_rewards group  ->  --algo.advantage grpo --algo.advantage-kwargs eps 1e-4"),
    (["--scale_rewards", "batch"], "--scale_rewards batch  ->  --algo.advantage lite --algo.advantage-kwargs eps 1e-4"),
    (["--reward_funcs", "my_rewards.py:exact, pkg.rewards.brief"],
     "--reward_funcs 'my_rewards.py:exact, pkg.rewards.brief'  ->  --data.reward 'my_rewards.py:exact, pkg.rewards:brief'"),
    # sequence-level ratios: gspo with TRL's clip range (0.2, not gspo's own 3e-4 / 4e-4) and loss_type's aggregation
    (["--importance_sampling_level", "sequence"], "--importance_sampling_level sequence  ->  --algo.loss gspo "
     "--algo.loss-kwargs eps_low 0.2 eps_high 0.2 --algo.aggregation token_mean"),
    (["--loss_type", "grpo", "--importance_sampling_level", "sequence", "--epsilon", "3e-4", "--epsilon_high", "4e-4"],
     "--loss_type grpo --importance_sampling_level sequence --epsilon 3e-4 --epsilon_high 4e-4  ->  --algo.loss gspo "
     "--algo.loss-kwargs eps_low 3e-4 eps_high 4e-4 --algo.aggregation seq_mean_token_mean"),
    (["--importance_sampling_level", "sequence", "--beta", "0.1", "--use_bias_correction_kl", "false"],
     "--importance_sampling_level sequence --beta 0.1 --use_bias_correction_kl false  ->  --algo.loss gspo "
     "--algo.loss-kwargs eps_low 0.2 eps_high 0.2 --algo.aggregation token_mean --algo.drift k3 0.1"),
    (["--num_generations", "4"], "--num_generations 4  ->  --rollout.group-size 4"),  # TRL's spelling, all of it
    (["--num_generations=4"], "--num_generations=4  ->  --rollout.group-size 4"),
    (["--learning-rate", "1e-6"], "--learning-rate 1e-6  ->  --optim.lr 1e-6"),
    (["--max-completion-length", "64"], "--max-completion-length 64  ->  --rollout.max-new-tokens 64"),
    (["--loss-type", "dr_grpo"], "--loss-type dr_grpo  ->  --algo.aggregation seq_mean_token_sum_norm"),
    (["--beta", "0"], "--beta 0  ->  (nothing: the default here)"),  # TRL's default: no KL term, as here
    (["--bf16"], "--bf16  ->  --model.dtype bfloat16"),
    (["--logging_steps", "5"], "--logging_steps 5  ->  (nothing: every step is a line of metrics.jsonl)"),
])
def test_a_trl_flag_is_translated_with_the_user_s_value(args, line):
    flags = line.split("  ->  ")[1]
    names = sum(a.startswith("--") for a in args)
    assert _error(["train", *args, "--train.steps", "1"]).split("\n") == [
        TRL_FIRST.format("a TRL / OpenRLHF flag" if names == 1 else f"{names} TRL / OpenRLHF flags"), f"  {line}",
        f"the whole command: policyforge train {flags + ' ' if flags[0] == '-' else ''}--train.steps 1"]


@pytest.mark.parametrize("flag, answer", [
    ("--loss-type", "--algo.aggregation (TRL's dapo = token_mean"),  # bnpo: no choice here does it exactly
    ("--per-device-train-batch-size", "--optim.micro-batch-size N (completions per backward)"),
    ("--multi-objective-aggregation", "--algo.advantage (TRL's sum_then_normalize = grpo"),
])
def test_a_trl_flag_with_no_clean_translation_keeps_its_answer_and_no_command_is_offered(flag, answer):
    lines = _error(["train", flag, "bnpo"]).split("\n")
    assert len(lines) == 2 and lines[1].startswith(f"  {flag} bnpo: here it is {answer}")


@pytest.mark.parametrize("flag, line", [
    ("--algo.beta", "--algo.beta 1  ->  --algo.drift k3 1 --algo.drift-unbiased"),  # a TRL name under the section a user guessed for it
    ("--algo.eps-high", "--algo.eps-high 1  ->  --algo.loss-kwargs eps_high 1"),
    ("--rollout.max-completion-length", "--rollout.max-completion-length 1  ->  --rollout.max-new-tokens 1"),
    ("--soft-punish-cache", "--soft-punish-cache 1  ->  --algo.overlong-buffer 1"),
    ("--dynamic-filtering", "--dynamic-filtering 1  ->  --rollout.dynamic-sampling accuracy"),  # OpenRLHF's
])
def test_a_trl_name_under_a_section_or_newer_is_answered_too(flag, line):
    assert _error(["train", flag, "1"]).split("\n")[1] == f"  {line}"


def test_every_trl_flag_is_answered_at_once_in_order_with_the_whole_command():
    assert _error(["train", "--num_generations", "4", "--max_steps", "3", "--config=run.yaml", "--learning_rate=1e-6",
                   "--rollout.temperature", "0.7"]) == "\n".join([
        TRL_FIRST.format("3 TRL / OpenRLHF flags"),
        "  --num_generations 4  ->  --rollout.group-size 4",
        "  --max_steps 3  ->  --train.steps 3",
        "  --learning_rate=1e-6  ->  --optim.lr 1e-6",
        "the whole command: policyforge train --rollout.group-size 4 --train.steps 3 --config=run.yaml --optim.lr "
        "1e-6 --rollout.temperature 0.7"])


def test_the_whole_command_gives_a_dict_flag_once_and_keeps_a_run_directory():
    # --epsilon and --epsilon_high both become --algo.loss-kwargs, which the command line refuses twice; --beta
    # joins the user's own --algo.drift; run/dir is not --beta's value
    lines = _error(["train", "--epsilon", "0.2", "--epsilon_high", "0.28", "--algo.drift", "k2", "0.1", "--beta",
                    "0.04", "run/dir"]).split("\n")
    assert lines[1:] == [
        "  --epsilon 0.2 --epsilon_high 0.28  ->  --algo.loss-kwargs eps_low 0.2 eps_high 0.28",
        "  --beta 0.04  ->  --algo.drift k3 0.04 --algo.drift-unbiased",
        "the whole command: policyforge train --algo.loss-kwargs eps_low 0.2 eps_high 0.28 --algo.drift k2 0.1 k3 "
        "0.04 --algo.drift-unbiased run/dir"]


@pytest.mark.parametrize("args, whole", [
    (["--epsilon_high", "0.28", "--epsilon", "0.2"], "--algo.loss-kwargs eps_low 0.2 eps_high 0.28"),
    (["--loss_type", "cispo", "--epsilon", "0.2", "--epsilon_high", "5.0"], "--algo.loss cispo --algo.loss-kwargs "
                                                                               "eps_high 4"),  # cispo reads no epsilon
    (["--loss_type", "sapo", "--sapo_temperature_neg", "1.1"], "--algo.loss sapo --algo.aggregation "
                                                               "seq_mean_token_mean --algo.loss-kwargs tau_neg 1.1"),
    (["--loss_type", "sapo", "--epsilon", "0.2"], "--algo.loss sapo --algo.aggregation seq_mean_token_mean"),
    (["--delta", "2.5"], "--algo.loss-kwargs dual_clip 2.5"),
    (["--delta", "2", "--epsilon_high", "0.28", "--epsilon", "0.2"],
     "--algo.loss-kwargs eps_low 0.2 eps_high 0.28 dual_clip 2"),
    (["actor_rollout_ref.actor.clip_ratio_high=0.28", "actor_rollout_ref.actor.clip_ratio=0.2"],
     "--algo.loss-kwargs eps_high 0.28"),  # verl reads clip_ratio only where _low / _high are null (0.2 by default)
    (["actor_rollout_ref.actor.policy_loss.loss_mode=vanilla"], "--algo.loss ppo_clip --algo.loss-kwargs dual_clip 3"),
    (["actor_rollout_ref.actor.policy_loss.loss_mode=vanilla", "actor_rollout_ref.actor.clip_ratio_c=10"],
     "--algo.loss ppo_clip --algo.loss-kwargs dual_clip 10"),
    (["actor_rollout_ref.actor.policy_loss.loss_mode=geo_mean", "actor_rollout_ref.actor.clip_ratio_low=0.4",
      "actor_rollout_ref.actor.clip_ratio_high=0.4", "actor_rollout_ref.actor.clip_ratio_c=3"],
     "--algo.loss gmpo --algo.loss-kwargs eps_low 0.4 eps_high 0.4 --algo.aggregation seq_mean_token_mean"),
    # verl's gspo aggregates seq-mean-token-mean whatever loss_agg_mode says; vanilla takes loss_agg_mode's
    (["actor_rollout_ref.actor.loss_agg_mode=token-mean", "actor_rollout_ref.actor.policy_loss.loss_mode=gspo",
      "actor_rollout_ref.actor.clip_ratio_low=3e-4", "actor_rollout_ref.actor.clip_ratio_high=4e-4"],
     "--algo.loss gspo --algo.loss-kwargs eps_low 3e-4 eps_high 4e-4 --algo.aggregation seq_mean_token_mean"),
    (["actor_rollout_ref.actor.policy_loss.loss_mode=vanilla", "actor_rollout_ref.actor.clip_ratio_low=0.2",
      "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum", "actor_rollout_ref.actor.clip_ratio_high=0.28"],
     "--algo.loss ppo_clip --algo.loss-kwargs eps_low 0.2 eps_high 0.28 dual_clip 3 "
     "--algo.aggregation seq_mean_token_sum"),
])
def test_a_peer_s_clip_ranges_and_losses_translate_whatever_their_order_into_a_command_that_runs(args, whole):
    from policyforge.cli import parse_config
    from policyforge.train.algorithm import resolve

    assert _error(["train", *args]).split("\n")[-1] == f"the whole command: policyforge train {whole}"
    cfg = parse_config("policyforge train", whole.split(), "")
    validate(cfg)
    resolve(cfg.algo)  # each hyper-parameter is one the loss has


@pytest.mark.parametrize("args, says", [
    (["--delta", "1.1"], "--delta 1.1: here it is --algo.loss-kwargs dual_clip DELTA"),  # below 1 + epsilon_high
    (["--epsilon_high", "0.28", "--delta", "1.25"], "--delta 1.25: here it is"),
    (["actor_rollout_ref.actor.policy_loss.loss_mode=gspo"], "loss_mode=gspo: here it is --algo.loss NAME"),
])
def test_a_peer_setting_without_an_exact_counterpart_gets_no_whole_command(args, says):
    error = _error(["train", *args])
    assert says in error and "the whole command" not in error


def test_trl_flags_one_option_does_together_are_one_line():
    lines = _error(["train", "--loss_type", "cispo", "--epsilon_high", "5", "--use_peft", "--lora_r", "16",
                    "--sync_ref_model", "true", "--ref_model_sync_steps", "64"]).split("\n")
    assert lines[1:] == [  # TRL's cispo caps the ratio at epsilon_high itself: eps_high is one less here
        "  --loss_type cispo --epsilon_high 5  ->  --algo.loss cispo --algo.loss-kwargs eps_high 4",
        "  --use_peft --lora_r 16  ->  --model.lora-rank 16",
        "  --sync_ref_model true --ref_model_sync_steps 64  ->  --algo.ref-sync-every 64",
        "the whole command: policyforge train --algo.loss cispo --algo.loss-kwargs eps_high 4 --model.lora-rank 16 "
        "--algo.ref-sync-every 64"]
    assert "--loss_type grpo  ->  --algo.aggregation seq_mean_token_mean" in _error(
        ["train", "--loss_type", "grpo", "--epsilon_high", "0.28"])


def test_no_policyforge_option_is_taken_for_a_peer_name():
    from policyforge.cli_checks import _own_flags, check_peer_flags

    own = sorted(_own_flags())
    assert "--rollout.max-new-tokens" in own and "--optim.max-grad-norm" in own  # also TRL / OpenRLHF names
    check_peer_flags(own)
    check_peer_flags(own, "sft")


def test_a_trl_key_in_a_config_file_is_answered(tmp_path):
    (tmp_path / "run.yaml").write_text("beta: 0.04\n")
    assert _error(["train", "--config", str(tmp_path / "run.yaml")]) == (
        "error: unknown config key 'beta'; it is TRL's or OpenRLHF's name: here it is --algo.drift k3 BETA "
        "--algo.drift-unbiased (TRL's beta is the coefficient of a k3 KL penalty to the reference, weighted by the "
        "importance ratio unless use_bias_correction_kl is False; beta 0, TRL's default, is no --algo.drift)")
    (tmp_path / "run.yaml").write_text("algo:\n  epsilon_high: 0.28\n")
    assert "unknown config key 'algo.epsilon_high'; it is TRL's or OpenRLHF's name: here it is --algo.loss-kwargs " \
           "eps_high" in _error(["train", "--config", str(tmp_path / "run.yaml")])


def test_the_trl_keys_of_a_config_file_are_answered_at_once(tmp_path):
    (tmp_path / "trl.yaml").write_text("learning_rate: 1.0e-6\nnum_generations: 4\nalgo:\n  epsilon_high: 0.28\n"
                                       "report_to: wandb\n")
    lines = _error(["train", "--config", str(tmp_path / "trl.yaml"), "--train.steps", "2"]).split("\n")
    assert lines == [
        TRL_FIRST.format("4 config keys"),
        "  learning_rate: 1e-06  ->  --optim.lr 1e-06",
        "  num_generations: 4  ->  --rollout.group-size 4",
        "  algo.epsilon_high: 0.28  ->  --algo.loss-kwargs eps_high 0.28",
        lines[4]]  # report_to: no counterpart, so no whole command
    assert lines[4].startswith("  report_to: no counterpart here; policyforge's sections are model, data, rollout")
    (tmp_path / "trl.yaml").write_text("learning_rate: 1.0e-6\nnum_generations: 4\n")  # the file becomes flags
    assert _error(["train", "--config", str(tmp_path / "trl.yaml"), "--train.steps", "2"]).split("\n")[-1] == (
        "the whole command: policyforge train --optim.lr 1e-06 --rollout.group-size 4 --train.steps 2")


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
    for name, to in {**PEER_TO, **SFT_TO}.items():  # and every flag a translation gives
        for values in (["1"], ["true"], ["a.jsonl"], ["sequence"], ["dapo"], ["group"], ["sum_then_normalize"]):
            for word in (to(values) or "").split():
                assert not word.startswith("--") or word in listed, (name, word)


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
    assert _error(["sft", "--learning-rate", "1e-3", "--max_steps", "5"]).split("\n")[1:] == [
        "  --learning-rate 1e-3  ->  --sft.lr 1e-3", "  --max_steps 5  ->  --sft.steps 5",
        "the whole command: policyforge sft --sft.lr 1e-3 --sft.steps 5"]
    assert "  --learning-rate 1e-3  ->  --optim.lr 1e-3" in _error(["train", "--learning-rate", "1e-3"])


def test_a_trl_option_that_is_off_alone_is_not_turned_on_by_the_translation():
    lines = _error(["train", "--lora_r", "16", "--ref_model_sync_steps", "64"]).splitlines()
    assert lines[1:] == ["  --lora_r 16: here it is --model.lora-rank R (TRL reads lora_r only with use_peft)",
                         "  --ref_model_sync_steps 64: here it is --algo.ref-sync-every STEPS (TRL reads it only "
                         "with sync_ref_model)"]  # no whole command: LoRA and syncing would be on here
    assert _error(["train", "--lora_rank", "8"]).splitlines()[1] == "  --lora_rank 8  ->  --model.lora-rank 8"


def test_a_config_read_from_a_pipe_is_read_once_and_a_self_nesting_one_is_refused(tmp_path):
    import os

    from policyforge.cli import parse_config

    read, write = os.pipe()  # `--config <(cat run.yaml)`: only one reader gets the text
    os.write(write, b"train:\n  steps: 7\n")
    os.close(write)
    assert parse_config("policyforge train", ["--config", f"/dev/fd/{read}"], "").train.steps == 7
    os.close(read)
    (tmp_path / "loop.yaml").write_text("foo: &a {b: *a}\n")
    assert _error(["train", "--config", str(tmp_path / "loop.yaml")]) == (
        "error: config key 'foo' nests more than 32 levels deep")
    assert _error(["train", "--beta=", "--num_generations", "4"]).splitlines()[1].startswith("  --beta=: here it is")


def test_the_whole_command_keeps_resume_and_the_ray_flags(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train:\n  steps: 3\n")
    assert _error(["train", "--resume", str(run), "--num_generations", "4"]).endswith(
        f"the whole command: policyforge train --resume {run} --rollout.group-size 4")  # not --config RUN/config.yaml
    assert _error(["train", "--ray-workers", "2", "--ray-address", "auto", "--num_generations", "4"]).endswith(
        "the whole command: policyforge train --ray-workers 2 --ray-address auto --rollout.group-size 4")


def test_openrlhf_s_batch_and_kl_flags_are_answered_and_an_unknown_flag_blocks_the_whole_command():
    assert _error(["train", "--rollout_batch_size", "8", "--init_kl_coef", "0.01", "--kl_estimator", "k3",
                   "--micro_train_batch_size", "4"]).endswith(
        "the whole command: policyforge train --rollout.prompts-per-step 8 --algo.drift k3 0.01 "
        "--optim.micro-batch-size 4")
    lines = _error(["train", "--n_samples_per_prompt", "8", "--made_up_flag", "3"]).split("\n")
    assert lines[-1].startswith("  --made_up_flag 3: no counterpart here")  # and no command that would not run
    assert not any(line.startswith("the whole command") for line in lines)


@pytest.mark.parametrize("args, why", [
    (["--loss_type", "cispo", "--epsilon_high", "5", "--importance_sampling_level", "sequence"], "loss_type cispo"),
    (["--loss_type", "sapo", "--importance_sampling_level", "sequence"], "loss_type sapo"),
    (["--importance_sampling_level", "sequence", "--delta", "3"], "delta"),
    (["--importance_sampling_level", "sequence", "--beta", "0.1"], "beta's KL with sequence-level ratios"),
])
def test_trl_names_with_a_counterpart_each_but_none_together_are_refused_together(args, why):
    """TRL's sequence-level ratios with its cispo or sapo loss, its delta, or beta's ratio-weighted KL: each name
    alone translates, but together they would run another loss here; one line says so, and no command is given."""
    lines = _error(["train", *args]).split("\n")
    assert len(lines) == 2 and lines[1].startswith(f"  {shlex.join(args)}: no counterpart here") and why in lines[1]


@pytest.mark.parametrize("bare", ["--loss_type", "--epsilon_high", "--beta"])
def test_sequence_level_ratios_beside_a_bare_flag_get_answers_not_a_traceback(bare):
    lines = _error(["train", "--importance_sampling_level", "sequence", bare]).split("\n")
    assert lines[0].startswith("error: not policyforge options") and not lines[-1].startswith("the whole command")
