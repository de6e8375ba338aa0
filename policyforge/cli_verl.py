"""verl's names, answered: a verl user types Hydra overrides (`algorithm.adv_estimator=grpo`) or hands over a
verl YAML, and gets the policyforge option that does the same job rather than tyro's "unrecognized argument".

The keys are verl's ppo_trainer.yaml names (and its DAPO recipe's); each answer names the flag here, with the
value mapping where the two spell a choice differently. VERL_FLAGS turns a key's value into that flag, ready to
paste; cli_port.report makes the one error that answers every peer name given (TRL's too).
"""

from __future__ import annotations

import shlex

from policyforge.cli_port import OWN_SECTIONS, TRUE, choice, many, one, or_nothing, positive, top_k
from policyforge.data.dynamic_sampling import VERL_METRICS

FILTER_METRIC_ANSWER = (
    "--rollout.dynamic-sampling accuracy or reward (verl's acc = accuracy, here a score of at least 1 or a dict "
    "reward's \"correct\" component of at least 1, where verl reads the reward dict's own acc key: the same for DAPO's +1/-1 reward; "
    "score, seq_reward and seq_final_reward = reward, groups whose training rewards differ, which here include "
    "--algo.overlong-buffer's penalty: verl's score is before it, and its seq_final_reward includes a KL-in-reward)")

VERL_KEYS = {  # verl's dotted key -> what does that job in policyforge
    "algorithm.adv_estimator": "--algo.advantage NAME (verl's grpo = grpo, rloo = rloo, reinforce_plus_plus = "
                               "reinforce_pp, reinforce_plus_plus_baseline = reinforce_pp_baseline, opo = opo, "
                               "grpo_passk = passk, gpg = gpg; gae and remax need a critic or a greedy baseline "
                               "rollout, which policyforge does not train)",
    "algorithm.norm_adv_by_std_in_grpo": "--algo.advantage dr_grpo (False: the group mean subtracted, no std)",
    "algorithm.use_kl_in_reward": "--algo.drift k1 COEF (the KL is a loss term here, not a reward penalty)",
    "algorithm.kl_ctrl.kl_coef": "--algo.drift ESTIMATOR COEF (a loss term here)",
    "actor_rollout_ref.actor.use_kl_loss": "--algo.drift ESTIMATOR COEF (with kl_loss_coef and kl_loss_type; verl's "
                                           "default is False, no KL loss, as here)",
    "actor_rollout_ref.actor.kl_loss_coef": "--algo.drift ESTIMATOR COEF (verl reads it only with use_kl_loss=True, "
                                            "and its default is False)",
    "actor_rollout_ref.actor.kl_loss_type": "--algo.drift ESTIMATOR COEF (verl's kl = k1, mse = k2, low_var_kl = k3, "
                                            "read only with use_kl_loss=True; verl's low_var_kl also clamps its "
                                            "log-ratio to [-20, 20] and its value to [-10, 10], which only extreme "
                                            "ratios reach; k3 here is exact)",
    "actor_rollout_ref.actor.entropy_coeff": "--algo.drift entropy COEF (an entropy bonus; `policyforge algos "
                                             "entropy`)",
    "actor_rollout_ref.actor.clip_ratio": "nothing: verl reads clip_ratio only where clip_ratio_low / clip_ratio_high "
                                          "are null, and they are 0.2 by default (ppo_clip's eps_low / eps_high "
                                          "here; give those)",
    "actor_rollout_ref.actor.clip_ratio_low": "--algo.loss-kwargs eps_low EPS",
    "actor_rollout_ref.actor.clip_ratio_high": "--algo.loss-kwargs eps_high EPS",
    "actor_rollout_ref.actor.policy_loss.loss_mode": "--algo.loss NAME (verl's vanilla = ppo_clip with dual_clip 3, "
                                                     "its clip_ratio_c; gspo, cispo and geo_mean (= gmpo) with "
                                                     "clip_ratio_low and clip_ratio_high given, as verl's 0.2 "
                                                     "defaults are not these losses' own here, and gspo and geo_mean "
                                                     "with --algo.aggregation seq_mean_token_mean, which verl uses for "
                                                     "them whatever loss_agg_mode says; sapo, kl_cov and "
                                                     "clip_cov with their settings given: verl's defaults differ)",
    "actor_rollout_ref.actor.clip_ratio_c": "--algo.loss-kwargs dual_clip C (ppo_clip's dual clip)",
    "actor_rollout_ref.actor.policy_loss.kl_cov_ratio": "--algo.loss-kwargs kl_frac X (with --algo.loss kl_cov)",
    "actor_rollout_ref.actor.policy_loss.ppo_kl_coef": "--algo.loss-kwargs kl_coef X (with --algo.loss kl_cov)",
    "actor_rollout_ref.actor.policy_loss.clip_cov_ratio": "--algo.loss-kwargs clip_frac X (with --algo.loss "
                                                          "clip_cov)",
    "actor_rollout_ref.actor.policy_loss.clip_cov_lb": "--algo.loss-kwargs cov_low X (with --algo.loss clip_cov)",
    "actor_rollout_ref.actor.policy_loss.clip_cov_ub": "--algo.loss-kwargs cov_high X (with --algo.loss clip_cov)",
    "actor_rollout_ref.actor.loss_agg_mode": "--algo.aggregation (verl's token-mean = token_mean, token-sum = "
                                             "token_sum, seq-mean-token-sum = seq_mean_token_sum, seq-mean-token-mean "
                                             "= seq_mean_token_mean, seq-mean-token-sum-norm = "
                                             "seq_mean_token_sum_norm; verl's gspo and geo_mean ignore it and use "
                                             "seq-mean-token-mean)",
    "actor_rollout_ref.actor.optim.lr": "--optim.lr LR",
    "actor_rollout_ref.actor.optim.weight_decay": "--optim.weight-decay X",
    "actor_rollout_ref.actor.optim.lr_warmup_steps": "--optim.warmup-steps N",
    "actor_rollout_ref.actor.grad_clip": "--optim.max-grad-norm X",
    "actor_rollout_ref.actor.ppo_epochs": "--optim.updates-per-batch N",
    "actor_rollout_ref.actor.ppo_mini_batch_size": "--optim.updates-per-batch N for several optimiser steps on a "
                                                   "batch (each over the whole batch; no mini-batches here)",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": "--optim.micro-batch-size N",
    "actor_rollout_ref.actor.use_dynamic_bsz": "--optim.micro-batch-tokens N (micro-batches by a token budget)",
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": "--optim.micro-batch-tokens N",
    "actor_rollout_ref.model.path": "--model.path DIR",
    "actor_rollout_ref.model.lora_rank": "--model.lora-rank R",
    "actor_rollout_ref.model.lora_alpha": "--model.lora-alpha A",
    "actor_rollout_ref.model.target_modules": "--model.lora-targets NAME [NAME ...]",
    "actor_rollout_ref.rollout.n": "--rollout.group-size N",
    "actor_rollout_ref.rollout.temperature": "--rollout.temperature T",
    "actor_rollout_ref.rollout.top_p": "--rollout.top-p P",
    "actor_rollout_ref.rollout.top_k": "--rollout.top-k K",
    "actor_rollout_ref.rollout.name": "nothing: policyforge samples with its own KV-cache sampler",
    "data.train_files": "--data.path FILE",
    "data.val_files": "--data.eval-path FILE",
    "data.prompt_key": "--data.prompt-column NAME",
    "data.train_batch_size": "--rollout.prompts-per-step N",
    "data.max_response_length": "--rollout.max-new-tokens N",
    "data.max_prompt_length": "nothing: prompts are never cut; one longer than the model's context with "
                              "--rollout.max-new-tokens is refused at start-up, naming the row",
    "custom_reward_function.path": "--data.reward PATH:NAME (custom_reward_function.path and .name as one value)",
    "custom_reward_function.name": "--data.reward PATH:NAME",
    "reward_model.model.path": "--data.reward-model DIR",
    "algorithm.filter_groups.enable": "--rollout.dynamic-sampling accuracy or reward (DAPO's dynamic sampling; "
                                      "verl's filter_groups.metric acc = accuracy, score / seq_reward / "
                                      "seq_final_reward = reward)",
    "algorithm.filter_groups.metric": FILTER_METRIC_ANSWER,
    "algorithm.filter_groups.max_num_gen_batches": "--rollout.max-sampling-rounds N (rounds here are of "
                                                   "--rollout.prompts-per-step prompts, verl's of data.gen_batch_size: "
                                                   "scale N by gen_batch_size / train_batch_size; 10 by default, and no "
                                                   "unlimited: when the rounds run out, groups that scored alike fill "
                                                   "the batch rather than the run stopping)",
    "data.gen_batch_size": "no separate size: each dynamic sampling round samples --rollout.prompts-per-step prompts "
                           "(verl's train_batch_size); to sample as much a step, scale --rollout.max-sampling-rounds "
                           "by gen_batch_size / train_batch_size",
    "reward_model.overlong_buffer.len": "--algo.overlong-buffer N",
    "reward_model.overlong_buffer.penalty_factor": "--algo.overlong-penalty X",
    "trainer.total_training_steps": "--train.steps N",
    "trainer.total_epochs": "--train.steps N (RL steps; each takes --rollout.prompts-per-step prompts)",
    "trainer.save_freq": "--train.save-every N",
    "trainer.test_freq": "--train.eval-every N",
    "trainer.default_local_dir": "--train.out-dir DIR",
    "trainer.experiment_name": "--train.run-name NAME",
    "trainer.logger": "--train.tensorboard (metrics.jsonl is always written)",
    "trainer.n_gpus_per_node": "torchrun --nproc-per-node N -m policyforge.cli train ... (or --ray-workers N)",
    "trainer.nnodes": "torchrun --nnodes N ... (or --ray-workers N on a Ray cluster)",
}
VERL_SECTIONS = ("actor_rollout_ref", "algorithm", "trainer", "critic", "custom_reward_function", "reward_model",
                 "ray_init")  # sections of verl's config that policyforge does not have


def verl_answer(key: str) -> str | None:
    """What does the job of verl's dotted config key `key` here (Hydra's leading + or ++ allowed); a pointer to
    policyforge's sections for another key of a section only verl has; None for anything else."""
    key = key.lstrip("+")  # Hydra's +key=value (add) and ++key=value (add or override)
    if key in VERL_KEYS:
        return f"verl's; here it is {VERL_KEYS[key]}"
    if key.split(".", 1)[0] in VERL_SECTIONS:
        return f"in a section of verl's config, which policyforge does not have: {OWN_SECTIONS}"
    return None


KL_TYPES = {"kl": "k1", "k1": "k1", "mse": "k2", "k2": "k2", "low_var_kl": "k3", "k3": "k3",
            "k3+": "k3_st"}  # abs, full: none


VERL_FLAGS = {  # verl's key -> its value (as tokens) turned into the flag here; "" = nothing needed, None = no
    # single flag does it (VERL_KEYS' words say what does); keys not here have no clean translation
    "algorithm.adv_estimator": choice("--algo.advantage", {
        "grpo": "grpo", "rloo": "rloo", "reinforce_plus_plus": "reinforce_pp", "opo": "opo", "gpg": "gpg",
        "reinforce_plus_plus_baseline": "reinforce_pp_baseline", "grpo_passk": "passk"}),
    "algorithm.norm_adv_by_std_in_grpo": choice("--algo.advantage", {"false": "dr_grpo", "true": "grpo"}),
    "algorithm.use_kl_in_reward": or_nothing("", "false"),
    "actor_rollout_ref.actor.use_kl_loss": or_nothing("", "false"),
    "actor_rollout_ref.actor.entropy_coeff": or_nothing("--algo.drift entropy {}", "0"),
    "actor_rollout_ref.actor.clip_ratio": lambda v: "",  # clip_ratio_low / _high (0.2 by default) decide
    "actor_rollout_ref.actor.clip_ratio_low": one("--algo.loss-kwargs eps_low {}"),
    "actor_rollout_ref.actor.clip_ratio_high": one("--algo.loss-kwargs eps_high {}"),
    # verl's vanilla: PPO's clip (clip_ratio_low / _high, 0.2 each as here) with its dual clip at clip_ratio_c = 3
    "actor_rollout_ref.actor.policy_loss.loss_mode": choice("--algo.loss", {
        "vanilla": "ppo_clip --algo.loss-kwargs dual_clip 3"}),
    "actor_rollout_ref.actor.clip_ratio_c": one("--algo.loss-kwargs dual_clip {}"),
    "actor_rollout_ref.actor.policy_loss.kl_cov_ratio": one("--algo.loss-kwargs kl_frac {}"),
    "actor_rollout_ref.actor.policy_loss.ppo_kl_coef": one("--algo.loss-kwargs kl_coef {}"),
    "actor_rollout_ref.actor.policy_loss.clip_cov_ratio": one("--algo.loss-kwargs clip_frac {}"),
    "actor_rollout_ref.actor.policy_loss.clip_cov_lb": one("--algo.loss-kwargs cov_low {}"),
    "actor_rollout_ref.actor.policy_loss.clip_cov_ub": one("--algo.loss-kwargs cov_high {}"),
    "actor_rollout_ref.actor.loss_agg_mode": choice("--algo.aggregation", {
        m: m.replace("-", "_") for m in ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean",
                                         "seq-mean-token-sum-norm")}),
    # verl reads the KL loss's coefficient and type only with use_kl_loss=True (VERL_TOGETHER), False by default
    "actor_rollout_ref.actor.kl_loss_coef": lambda v: "",
    "actor_rollout_ref.actor.kl_loss_type": lambda v: "",
    "actor_rollout_ref.actor.optim.lr": one("--optim.lr {}"),
    "actor_rollout_ref.actor.optim.weight_decay": one("--optim.weight-decay {}"),
    "actor_rollout_ref.actor.optim.lr_warmup_steps": positive("--optim.warmup-steps {}"),
    "actor_rollout_ref.actor.grad_clip": one("--optim.max-grad-norm {}"),
    "actor_rollout_ref.actor.ppo_epochs": one("--optim.updates-per-batch {}"),
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": one("--optim.micro-batch-size {}"),
    "actor_rollout_ref.actor.use_dynamic_bsz": or_nothing("", "false"),
    "actor_rollout_ref.model.path": one("--model.path {}"),
    "actor_rollout_ref.model.lora_rank": one("--model.lora-rank {}"),
    "actor_rollout_ref.model.lora_alpha": one("--model.lora-alpha {}"),
    "actor_rollout_ref.model.target_modules": lambda v: None if v == ["all-linear"] else many(
        "--model.lora-targets {}")(v),
    "actor_rollout_ref.rollout.n": one("--rollout.group-size {}"),
    "actor_rollout_ref.rollout.temperature": one("--rollout.temperature {}"),
    "actor_rollout_ref.rollout.top_p": one("--rollout.top-p {}"),
    "actor_rollout_ref.rollout.top_k": top_k,
    "data.train_files": one("--data.path {}"),
    "data.val_files": one("--data.eval-path {}"),
    "data.prompt_key": one("--data.prompt-column {}"),
    "data.train_batch_size": one("--rollout.prompts-per-step {}"),
    "data.max_response_length": one("--rollout.max-new-tokens {}"),
    # verl's custom_reward_function.name defaults to compute_score
    "custom_reward_function.path": lambda v: one("--data.reward {}")([v[0] + ":compute_score"]) if v else None,
    "reward_model.model.path": one("--data.reward-model {}"),
    "algorithm.filter_groups.enable": or_nothing("", "false"),  # on: with its metric (VERL_TOGETHER)
    "algorithm.filter_groups.max_num_gen_batches": lambda v: (one("--rollout.max-sampling-rounds {}")(v) if len(v) == 1
                                                              and v[0].isdigit() and int(v[0]) > 0 else None),
    "reward_model.overlong_buffer.len": one("--algo.overlong-buffer {}"),
    "reward_model.overlong_buffer.penalty_factor": one("--algo.overlong-penalty {}"),
    "trainer.total_training_steps": one("--train.steps {}"),
    "trainer.save_freq": positive("--train.save-every {}"),
    "trainer.test_freq": positive("--train.eval-every {}"),
    "trainer.default_local_dir": one("--train.out-dir {}"),
    "trainer.experiment_name": one("--train.run-name {}"),
    "trainer.logger": lambda v: "--train.tensorboard" if "tensorboard" in v else "",
}

_ACTOR = "actor_rollout_ref.actor."
_POLICY = _ACTOR + "policy_loss."
CLIPPED_LOSSES = {"vanilla": "ppo_clip", "gspo": "gspo", "cispo": "cispo", "geo_mean": "gmpo"}
SEQUENCE_MEAN_LOSSES = ("gspo", "geo_mean")  # verl aggregates these seq-mean-token-mean, whatever loss_agg_mode says


def _clipped_loss(v: dict[str, list[str]]) -> str | None:
    """verl's loss_mode with clip_ratio_low / _high as --algo.loss and its eps_low / eps_high (vanilla keeps its
    dual clip, clip_ratio_c or verl's 3; the others read none)."""
    mode = v[_POLICY + "loss_mode"]
    if not _single(v) or mode[0] not in CLIPPED_LOSSES:
        return None
    flags = (f"--algo.loss {CLIPPED_LOSSES[mode[0]]} --algo.loss-kwargs eps_low {v[_ACTOR + 'clip_ratio_low'][0]} "
             f"eps_high {v[_ACTOR + 'clip_ratio_high'][0]}")
    flags += f" dual_clip {(v.get(_ACTOR + 'clip_ratio_c') or ['3'])[0]}" if mode[0] == "vanilla" else ""
    if mode[0] in SEQUENCE_MEAN_LOSSES:
        return flags + " --algo.aggregation seq_mean_token_mean"
    agg = v.get(_ACTOR + "loss_agg_mode")
    aggregation = VERL_FLAGS[_ACTOR + "loss_agg_mode"](agg) if agg else ""
    return None if aggregation is None else f"{flags} {aggregation}".rstrip()
VERL_TOGETHER = [  # (keys all given, keys folded in when given, their values -> one flag): verl spreads these
    # over several keys where one option does the job here; None leaves each key to its own line
    # a clipped loss other than vanilla, with both of its clip ranges (verl's 0.2 defaults are not its own here)
    ((_POLICY + "loss_mode", _ACTOR + "clip_ratio_low", _ACTOR + "clip_ratio_high"),
     (_ACTOR + "clip_ratio_c", _ACTOR + "loss_agg_mode"), lambda v: _clipped_loss(v)),
    ((_POLICY + "loss_mode", _ACTOR + "clip_ratio_c"), (), lambda v: (  # vanilla with its own dual clip
        one("--algo.loss ppo_clip --algo.loss-kwargs dual_clip {}")(v[_ACTOR + "clip_ratio_c"])
        if v[_POLICY + "loss_mode"] == ["vanilla"] else None)),
    # lora_rank 0 is verl's off: its alpha and target modules are then read by nothing, here too
    (("actor_rollout_ref.model.lora_rank", "actor_rollout_ref.model.lora_alpha"),
     ("actor_rollout_ref.model.target_modules",),
     lambda v: "" if v["actor_rollout_ref.model.lora_rank"] == ["0"] else None),
    (("custom_reward_function.path", "custom_reward_function.name"), (),
     lambda v: (one("--data.reward {}")([f"{v['custom_reward_function.path'][0]}:"
                                          f"{v['custom_reward_function.name'][0]}"]) if _single(v) else None)),
    (("algorithm.adv_estimator", "algorithm.norm_adv_by_std_in_grpo"), (),
     lambda v: (None if v["algorithm.adv_estimator"] != ["grpo"] else
                VERL_FLAGS["algorithm.norm_adv_by_std_in_grpo"](v["algorithm.norm_adv_by_std_in_grpo"]))),
    ((_ACTOR + "kl_loss_coef", _ACTOR + "kl_loss_type"), (_ACTOR + "use_kl_loss",), lambda v: _kl(v, "")),
    ((_ACTOR + "use_kl_loss", _ACTOR + "kl_loss_coef"), (_ACTOR + "kl_loss_type",),
     lambda v: _kl(v, "low_var_kl")),  # verl's default type
    (("algorithm.filter_groups.enable", "algorithm.filter_groups.metric"), (), lambda v: (
        None if not _single(v) else "" if v["algorithm.filter_groups.enable"][0].lower() not in TRUE else
        choice("--rollout.dynamic-sampling", VERL_METRICS)(v["algorithm.filter_groups.metric"]))),
    (("algorithm.filter_groups.max_num_gen_batches", "data.gen_batch_size", "data.train_batch_size"), (),
     lambda v: _rounds(v)),
    ((_ACTOR + "use_dynamic_bsz", _ACTOR + "ppo_max_token_len_per_gpu"), (),
     lambda v: (one("--optim.micro-batch-tokens {}")(v[_ACTOR + "ppo_max_token_len_per_gpu"])
                if _single(v) and v[_ACTOR + "use_dynamic_bsz"][0].lower() in TRUE else None)),
]


def _single(v: dict[str, list[str]]) -> bool:
    """Whether every key was given one value (verl's null gives none, a list several: no clean translation)."""
    return all(len(values) == 1 for values in v.values())


def _rounds(v: dict[str, list[str]]) -> str | None:
    """verl's max_num_gen_batches rounds of gen_batch_size prompts as rounds of train_batch_size (prompts_per_step)
    prompts here, rounded up, with train_batch_size itself; None for values that are not positive whole numbers."""
    if not _single(v) or not all(x[0].isdigit() and int(x[0]) > 0 for x in v.values()):
        return None
    n, gen, train = (int(v[k][0]) for k in ("algorithm.filter_groups.max_num_gen_batches", "data.gen_batch_size",
                                            "data.train_batch_size"))
    return f"--rollout.max-sampling-rounds {-(-n * gen // train)} --rollout.prompts-per-step {train}"


def _kl(v: dict[str, list[str]], kind: str) -> str | None:
    """verl's KL loss (use_kl_loss, kl_loss_coef, kl_loss_type) as one drift term; nothing when it is off (verl's
    default: its coefficient and type are then read by nothing)."""
    if [x.lower() for x in v.get(_ACTOR + "use_kl_loss", ["false"])] != ["true"]:
        return ""
    estimator = KL_TYPES.get("".join(v.get(_ACTOR + "kl_loss_type", [kind])).lower())
    coef = v[_ACTOR + "kl_loss_coef"]
    return f"--algo.drift {estimator} {shlex.quote(coef[0])}" if estimator and len(coef) == 1 else None


def check_verl_overrides(args: list[str]) -> None:
    """ConfigError answering every Hydra-style `key=value` argument (verl's command line) that names a verl key,
    and every TRL / OpenRLHF flag with them, each with the flag that does its job here (cli_checks' report)."""
    from policyforge.cli_checks import check_peer_flags  # it imports this module

    check_peer_flags(args, "train")
