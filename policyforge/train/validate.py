"""Checks on a whole Config that need no model: each command fails before any work with one line naming the option.

They run after the config is built from YAML and flags (config.py turns values into the right
types; these check ranges and combinations).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

from policyforge.data.chat import CHAT_MODES
from policyforge.models import lora
from policyforge.rewards.spec import reward_model_paths
from policyforge.train.config import (Config, ConfigError, DataConfig, ModelConfig, RolloutConfig, SFTConfig,
                                      check_attributes, from_dict, plain_values, refuse)

COMMANDS = ("train", "sft", "eval", "collect")


def validate(cfg: Config, command: str = "train") -> None:
    """Checks that need no model: fail before any work is wasted, with one line naming the option.

    `command` is the one about to run ("train", "sft", "eval" or "collect"): each checks the options it uses,
    and only training needs rollout.temperature > 0 (evaluation may sample greedily).
    """
    if command not in COMMANDS:
        raise ValueError(f"validate: unknown command {command!r}; valid: {', '.join(COMMANDS)}")
    check_attributes(cfg)  # a misspelt attribute set from Python (cfg.optim.lrr) is no option
    for option in ("advantage", "loss", "aggregation"):  # from Python, a function where its registry name goes
        if callable(getattr(cfg.algo, option)):
            raise ConfigError(f"algo.{option} is a function ({getattr(cfg.algo, option).__name__}); give the name it is "
                              "registered under with @policyforge.algos.register(...) (README \"Your own algorithm\")")
    # every value through the checks a config file's get (types, finite numbers): values set on the command
    # line or in Python skip from_dict, and `--rollout.temperature nan` would otherwise fail deep in sampling
    from_dict(Config, plain_values(dataclasses.asdict(cfg)))
    _check_model(cfg.model)
    if cfg.data.chat_template not in CHAT_MODES:
        raise ConfigError(f"data.chat_template={cfg.data.chat_template!r}; valid: {', '.join(CHAT_MODES)}")
    _check_sampling(cfg.rollout, greedy_ok=command != "train")
    # train and sft may hold nothing out (0: every row trains, and no held-out accuracy is measured)
    _at_least([("data.eval_size", cfg.data.eval_size, int(command == "eval")), ("data.task_size", cfg.data.task_size, 1),
               ("data.reward_workers", cfg.data.reward_workers, 1),
               ("rollout.max_new_tokens", cfg.rollout.max_new_tokens, 1), ("train.pass_k", cfg.train.pass_k, 0)])
    if command in ("train", "sft"):
        _check_lora_unread(cfg.model)
    if command in ("train", "sft") and cfg.model.dtype == "float16":
        # float16 needs loss scaling, and AdamW's eps (1e-8) is 0 in float16: the first step writes inf / NaN
        raise ConfigError(f"model.dtype=float16 cannot be trained here ({command}): its gradients under- and "
                          "overflow without loss scaling; use bfloat16 (float32 master weights) or float32. "
                          "float16 is fine for policyforge eval")
    if cfg.data.eval_path and cfg.data.eval_size == 0:
        raise ConfigError("data.eval_path with data.eval_size 0: the file would not be read (0 holds nothing out); "
                          "give data.eval_size, or leave data.eval_path out")
    if cfg.data.reward_weights and not cfg.data.reward:
        raise ConfigError("data.reward_weights without data.reward: the weights are for its functions")
    _check_reward_models(cfg.data)
    _check_curriculum(cfg, command)
    if cfg.data.distribution_column is not None and cfg.data.path is None and cfg.data.eval_path is None:
        raise ConfigError(f"data.distribution_column={cfg.data.distribution_column!r} without data.path: a built-in "
                          "task's rows have no columns (a mixture, data.task 'reversal,sorting', names each row's task "
                          "by itself); set data.path to a file whose rows name their distribution")
    if command == "train" and cfg.train.tensorboard:
        _check_tensorboard()
    if command == "train":
        _check_train(cfg)
    if command == "sft":
        _check_sft(cfg.sft)
    if command == "collect":  # it samples train.steps x prompts_per_step prompts, prompts_per_step at a time
        _at_least([("train.steps", cfg.train.steps, 1), ("rollout.prompts_per_step", cfg.rollout.prompts_per_step, 1)])
    if command in ("train", "sft"):  # eval reads no lora_* option: a LoRA checkpoint loads merged
        _check_lora_run(cfg)


def _check_reward_models(d) -> None:
    """data.reward_model's folders (one, or an ensemble) and how an ensemble combines them."""
    from policyforge.rewards.model_ensemble import HOW

    if d.reward_model_ensemble not in HOW:
        raise ConfigError(f"data.reward_model_ensemble={d.reward_model_ensemble!r}; valid: {', '.join(HOW)}")
    if not (d.reward_model_uncertainty >= 0):
        raise ConfigError(f"data.reward_model_uncertainty={d.reward_model_uncertainty}: at least 0 (UWO's lambda)")
    paths = reward_model_paths(d.reward_model)
    if d.reward_model is not None and not paths:
        raise ConfigError(f"data.reward_model={d.reward_model!r} names no folder")
    real = [os.path.realpath(p) for p in paths]
    twice = [p for p, r in zip(paths, real) if real.count(r) > 1]
    if twice:
        raise ConfigError(f"data.reward_model names the folder {twice[0]!r} twice ({' and '.join(map(repr, twice))}): "
                          "an ensemble's members should differ")
    if not paths and d.reward_model_weight != DataConfig.reward_model_weight:
        raise ConfigError(f"data.reward_model_weight={d.reward_model_weight} without data.reward_model: the weight is "
                          "the reward model's; give a folder, or leave the weight out")
    if paths and d.reward_model_weight == 0:
        raise ConfigError("data.reward_model_weight=0: the reward model would add nothing to the reward (and alone, "
                          "every reward would be 0); leave data.reward_model out instead")
    default = DataConfig.reward_model_uncertainty
    if d.reward_model_uncertainty != default and d.reward_model_ensemble != "uncertainty":
        raise ConfigError(f"data.reward_model_uncertainty={d.reward_model_uncertainty} is read only by "
                          f"data.reward_model_ensemble uncertainty (it is {d.reward_model_ensemble}): set that rule, "
                          "or leave lambda out")
    if d.reward_model_weight < 0 and d.reward_model_ensemble != "mean":
        raise ConfigError(f"data.reward_model_weight={d.reward_model_weight} with data.reward_model_ensemble "
                          f"{d.reward_model_ensemble}: a negative weight turns the conservative rule into the most "
                          "optimistic one; use mean, or a positive weight")
    if d.reward_model_ensemble != "mean" and len(paths) < 2:
        raise ConfigError(f"data.reward_model_ensemble={d.reward_model_ensemble} combines several reward models, but "
                          f"data.reward_model names {len(paths)}: give two or more folders separated by commas, or "
                          "--data.reward-model-ensemble mean")


def _at_least(checks: list[tuple[str, int | float | None, int]]) -> None:
    """Each (option, value, lowest allowed); None is an unset optional value."""
    for name, value, low in checks:
        if value is not None and value < low:
            raise ConfigError(f"{name}={value}: must be at least {low}")


def _check_model(m: ModelConfig) -> None:
    from policyforge.models.load import DTYPES, pick_device  # torch is imported only when a run is checked

    if m.dtype not in DTYPES:
        raise ConfigError(f"model.dtype={m.dtype!r}; valid: {', '.join(DTYPES)}")
    pick_device(m.device)  # a name torch does not know, or a device this machine lacks, fails here
    _check_lora(m)


def _check_lora(m: ModelConfig) -> None:
    _at_least([("model.lora_rank", m.lora_rank, 0)])
    if not m.lora_alpha > 0:
        raise ConfigError(f"model.lora_alpha={m.lora_alpha}: must be greater than 0 (the adapters' scale is "
                          "lora_alpha / lora_rank)")
    if not 0 <= m.lora_dropout < 1:
        raise ConfigError(f"model.lora_dropout={m.lora_dropout}: a probability, must be in [0, 1)")
    if not m.lora_targets or any(not t for t in m.lora_targets):
        raise ConfigError(f"model.lora_targets={list(m.lora_targets)}: name the modules LoRA adapts "
                          "(e.g. q_proj v_proj), or give all-linear")
    if "all-linear" in m.lora_targets and len(m.lora_targets) > 1:
        raise ConfigError(f"model.lora_targets={list(m.lora_targets)}: all-linear already names every linear "
                          "layer; give it alone or list module names")


def _check_lora_unread(m: ModelConfig) -> None:
    """Training only (eval and collect read no LoRA option): a LoRA setting without a rank would be dropped."""
    defaults = ModelConfig()
    unread = [k for k in ("lora_alpha", "lora_dropout", "lora_targets") if getattr(m, k) != getattr(defaults, k)]
    if not m.lora_rank and unread:  # else the run fine-tunes every weight and the setting is silently dropped
        raise ConfigError(f"model.{unread[0]} is read only with LoRA (model.lora_rank > 0; it is 0, full "
                          "fine-tuning): set model.lora_rank, or leave it out")


def _check_sampling(r: RolloutConfig, greedy_ok: bool) -> None:
    if r.temperature < 0 or (r.temperature == 0 and not greedy_ok):
        # at 0 the sampler is greedy but log-probs are unscaled: the ratio and KL numbers would be meaningless
        raise ConfigError(f"rollout.temperature={r.temperature}: training samples from the policy, so it must be "
                          "greater than 0 (0 = greedy is for evaluation only)")
    if not 0 < r.top_p <= 1:
        raise ConfigError(f"rollout.top_p={r.top_p}: must be in (0, 1] (1 = off)")
    _at_least([("rollout.top_k", r.top_k, 0)])


def _check_train(cfg: Config) -> None:
    if cfg.rollout.group_size < 2:
        raise ConfigError(
            f"rollout.group_size={cfg.rollout.group_size}: group-relative advantages need at least 2 completions "
            "per prompt"
        )
    o, t = cfg.optim, cfg.train
    _at_least([("rollout.prompts_per_step", cfg.rollout.prompts_per_step, 1),
               ("optim.micro_batch_size", o.micro_batch_size, 1), ("optim.updates_per_batch", o.updates_per_batch, 1),
               ("optim.micro_batch_tokens", o.micro_batch_tokens, 0), ("optim.warmup_steps", o.warmup_steps, 0),
               ("optim.lr", o.lr, 0), ("optim.weight_decay", o.weight_decay, 0),
               ("optim.max_grad_norm", o.max_grad_norm, 0),
               ("train.steps", t.steps, 1), ("train.save_every", t.save_every, 1),  # step % save_every
               ("train.eval_every", t.eval_every, 0),  # 0 = only at the start and end
               ("train.keep_checkpoints", t.keep_checkpoints, 1),  # 0 would silently keep 1, -1 all but one
               ("train.log_samples", t.log_samples, 0), ("train.log_rollouts", t.log_rollouts, 0),
               ("train.stop_after", t.stop_after, 1)])
    if not all(0 <= b < 1 for b in o.betas):
        raise ConfigError(f"optim.betas={tuple(o.betas)}: each must be in [0, 1)")
    _check_drift_control(cfg)
    _check_overlong(cfg)


def _check_curriculum(cfg: Config, command: str) -> None:
    """data.curriculum and the distribution column it schedules by (data/curriculum.py); train alone draws
    prompts by it (sft and eval read a run's config and leave it be)."""
    from policyforge.data.curriculum import CURRICULA

    d = cfg.data
    if d.curriculum not in CURRICULA:
        raise ConfigError(f"data.curriculum={d.curriculum!r}; valid: {', '.join(CURRICULA)}")
    if d.curriculum == "off":
        if (d.curriculum_window, d.curriculum_temperature) != (300, 0.1):
            raise ConfigError("data.curriculum_window / curriculum_temperature are read only by data.curriculum dump "
                              "(it is off): set that, or leave them out")
        return
    if d.distribution_column is None and d.path is not None:
        raise ConfigError("data.curriculum dump draws each prompt's distribution: set data.distribution_column to "
                          "the column of data.path naming it (a source, a difficulty level)")
    _at_least([("data.curriculum_window", d.curriculum_window, 1)])
    if not d.curriculum_temperature > 0:
        raise ConfigError(f"data.curriculum_temperature={d.curriculum_temperature}: DUMP's softmax temperature, "
                          "must be greater than 0")
    if command == "collect":  # it samples the training prompts in the plain order, which a DUMP run does not use
        raise ConfigError("policyforge collect with data.curriculum dump: an experience pool serves runs without a "
                          "curriculum (a replay pool and DUMP do not combine); pass --data.curriculum off")
    if command != "train":
        return
    refuse("data.curriculum dump", {
        "rollout.dynamic_sampling (the groups it drops would never reach the curriculum, so a solved distribution's "
        "weight would grow)": cfg.rollout.dynamic_sampling != "off",
        "data.replay_pool (RLEP's pool holds completions of the prompts in the plain order)": d.replay_pool is not None},
        "set data.curriculum to off")


def _check_overlong(cfg: Config) -> None:
    a, budget = cfg.algo, cfg.rollout.max_new_tokens
    if not 0 <= a.overlong_buffer <= budget:
        raise ConfigError(f"algo.overlong_buffer={a.overlong_buffer}: the tokens before rollout.max_new_tokens="
                          f"{budget} in which the penalty grows, so in [0, {budget}] (0 = off)")
    if a.overlong_penalty < 0 or (a.overlong_penalty == 0 and a.overlong_buffer):
        raise ConfigError(f"algo.overlong_penalty={a.overlong_penalty}: the size of a penalty (it is subtracted), "
                          "must be greater than 0 (0 would add nothing; algo.overlong_buffer 0 turns it off)")


def _check_tensorboard() -> None:
    """Imported here, not first when the board opens after the model load and the step-0 evaluation."""
    from policyforge.metrics.tensorboard import INSTALL

    if importlib.util.find_spec("tensorboardX") is None:
        raise ConfigError(f"train.tensorboard needs tensorboardX, which is not installed: {INSTALL}")
    try:
        importlib.import_module("tensorboardX")
    except Exception as e:  # installed but broken (a protobuf it cannot use, say)
        raise ConfigError(f"train.tensorboard: tensorboardX does not import ({type(e).__name__}: {e}): {INSTALL}")


def _check_drift_control(cfg: Config) -> None:
    a = cfg.algo
    _at_least([("algo.ref_sync_every", a.ref_sync_every, 0), ("algo.elastic_reset_every", a.elastic_reset_every, 0)])
    if not 0 < a.ref_sync_alpha <= 1:
        raise ConfigError(f"algo.ref_sync_alpha={a.ref_sync_alpha}: must be in (0, 1]; 1 copies the policy")
    if not 0 <= a.elastic_ema_decay < 1:
        raise ConfigError(f"algo.elastic_ema_decay={a.elastic_ema_decay}: must be in [0, 1)")
    if a.ref_sync_every and cfg.model.lora_rank:
        raise ConfigError("algo.ref_sync_every with model.lora_rank: a LoRA policy's reference is its own base "
                          "(adapters off), which cannot move without moving the policy; train without LoRA")
    if a.ref_sync_every and a.ref_sync_alpha < 1 and cfg.model.dtype == "bfloat16":
        raise ConfigError(f"algo.ref_sync_alpha={a.ref_sync_alpha} with model.dtype bfloat16: a partial move of a "
                          "bfloat16 reference rounds away (it stalls short of the policy); use alpha 1 or float32")
    if a.elastic_reset_every and cfg.model.dtype == "bfloat16":
        raise ConfigError("algo.elastic_reset_every with model.dtype bfloat16: the reset would write the bfloat16 "
                          "weights while the optimiser steps their float32 master copies; use float32")


def _check_lora_run(cfg: Config) -> None:
    if cfg.model.lora_rank and importlib.util.find_spec("peft") is None:
        raise ConfigError(f"model.lora_rank={cfg.model.lora_rank} needs peft, which is not installed: {lora.INSTALL}")
    if cfg.model.lora_rank and cfg.model.path == "builtin:tiny":
        # an adapter names the weights it adapts by path, and builtin:tiny's are drawn afresh from train.seed
        raise ConfigError("model.lora_rank on model.path builtin:tiny: LoRA adapts a saved model (its checkpoints "
                          "name it), and builtin:tiny is made afresh from train.seed; give a saved model, e.g. "
                          "checkpoints/demo-sft")


def _check_sft(s: SFTConfig) -> None:
    _at_least([("sft.steps", s.steps, 1), ("sft.batch_size", s.batch_size, 1), ("sft.lr", s.lr, 0)])
    if not 0 <= s.noise <= 1:
        raise ConfigError(f"sft.noise={s.noise}: a fraction of demonstrations, must be in [0, 1]")
