"""TRL's and OpenRLHF's names, answered: a TRL user types GRPOConfig's fields as flags (`--num_generations 8`), an
OpenRLHF user its own (`--n_samples_per_prompt 8`), and gets the policyforge option that does the same job.

PEER_FLAGS answers each name (dashed) in words; PEER_TO turns its value into the flag here, ready to paste;
PEER_TOGETHER does the names one option here does together. cli_checks finds the names on a command line or in a
--config file, and cli_port.report makes the one error that answers them all (verl's too, cli_verl.py).
"""

from __future__ import annotations

import shlex

from policyforge.cli_port import (NoCounterpart, both_eps, choice, low_and_high, many, number, one, or_nothing, switch,
                                  top_k)

TRL_STD = "grpo --algo.advantage-kwargs eps 1e-4"  # TRL divides by (group std + 1e-4)

# a flag of TRL's GRPOConfig / transformers' TrainingArguments (or OpenRLHF's) -> what does that here
PEER_FLAGS = {
    "beta": "--algo.drift k3 BETA --algo.drift-unbiased (TRL's beta is the coefficient of a k3 KL penalty to the "
            "reference, weighted by the importance ratio unless use_bias_correction_kl is False; beta 0, TRL's "
            "default, is no --algo.drift)",
    "use-bias-correction-kl": "--algo.drift-unbiased (with a drift term, TRL's beta: each token's KL weighted by "
                              "pi/pi_old, DeepSeek-V3.2's unbiased estimate)",
    "use-vllm": "nothing for False; for True, policyforge samples with its own KV-cache sampler (TRL's vLLM "
                "importance-sampling correction, on with vLLM there, is --algo.loss tis here)",
    "top-entropy-quantile": "no counterpart below 1 (TRL's mask keeping only the highest-entropy tokens in the "
                            "loss); 1.0, TRL's default, is nothing",
    "entropy-coef": "--algo.drift entropy COEF (an entropy bonus; TRL averages it over each micro-batch's tokens "
                    "apart from the loss, the same as here with --algo.aggregation token_mean and one micro-batch)",
    "init-kl-coef": "--algo.drift ESTIMATOR COEF (k1, k2 or k3, as OpenRLHF's --kl_estimator)",
    "kl-estimator": "--algo.drift k1 / k2 / k3 COEF (OpenRLHF's estimator, with init_kl_coef's value)",
    "kl-coef": "--algo.drift ESTIMATOR COEF (k1, k2 or k3)",
    "num-generations": "--rollout.group-size N (completions per prompt)",
    "n-samples-per-prompt": "--rollout.group-size N (completions per prompt)",
    "learning-rate": "--optim.lr LR",
    "actor-learning-rate": "--optim.lr LR",
    "max-completion-length": "--rollout.max-new-tokens N",
    "generate-max-len": "--rollout.max-new-tokens N",
    "max-new-tokens": "--rollout.max-new-tokens N",
    "temperature": "--rollout.temperature T",
    "top-p": "--rollout.top-p P",
    "top-k": "--rollout.top-k K",
    "epsilon": "--algo.loss-kwargs eps_low EPS eps_high EPS (with --algo.loss ppo_clip, the default)",
    "epsilon-high": "--algo.loss-kwargs eps_high EPS (for TRL's cispo, whose epsilon_high caps the ratio itself, "
                    "eps_high = epsilon_high - 1)",
    "eps-clip": "--algo.loss-kwargs eps_low EPS eps_high EPS",
    "eps-low": "--algo.loss-kwargs eps_low EPS (with --algo.loss ppo_clip, the default)",
    "eps-high": "--algo.loss-kwargs eps_high EPS (with --algo.loss ppo_clip, the default)",
    "num-iterations": "--optim.updates-per-batch N",
    "loss-type": "--algo.aggregation (TRL's dapo = token_mean, grpo = seq_mean_token_mean, dr_grpo = "
                 "seq_mean_token_sum_norm; bnpo is token_mean over each micro-batch, and token_mean here is over "
                 "the whole batch) and --algo.loss (TRL's cispo = cispo with eps_high = TRL's epsilon_high - 1; "
                 "sapo = sapo with --algo.aggregation seq_mean_token_mean)",
    "scale-rewards": "--algo.advantage (TRL's group = grpo, none = dr_grpo, batch = lite; TRL adds 1e-4 to the std, "
                     "--algo.advantage-kwargs eps 1e-4, where grpo and lite add verl's 1e-6 by default)",
    "sapo-temperature-pos": "--algo.loss-kwargs tau_pos T (with --algo.loss sapo)",
    "sapo-temperature-neg": "--algo.loss-kwargs tau_neg T (with --algo.loss sapo)",
    "delta": "--algo.loss-kwargs dual_clip DELTA (TRL caps the ratio at delta; with ppo_clip's min that bounds "
             "the loss of a negative-advantage token at -delta A, the dual clip; the same loss only when delta >= 1 "
             "+ epsilon_high, as TRL advises)",
    "importance-sampling-level": "--algo.loss gspo for sequence-level ratios (TRL's 'sequence'), with TRL's clip "
                                 "ranges (epsilon, 0.2 by default: gspo's own defaults here are the paper's 3e-4 / "
                                 "4e-4) and its loss_type's aggregation",
    "reward-weights": "--data.reward-weights W [W ...]",
    "reward-funcs": "--data.reward 'module:function, module:other' (or 'path/to/file.py:function')",
    "remote-rm-url": "--data.reward path/to/file.py:function (OpenRLHF's local reward-function file; a reward "
                     "model folder is --data.reward-model DIR, several folders separated by commas an ensemble)",
    "log-completions": "nothing: rollouts.jsonl records --train.log-rollouts N completions of every step",
    "max-steps": "--train.steps N",
    "output-dir": "--train.out-dir DIR (each run gets its own folder inside; --train.run-name names it)",
    "model-name-or-path": "--model.path DIR",
    "pretrain": "--model.path DIR",
    "dataset-name": "--data.path FILE (a local .jsonl, .json, .csv or .parquet file)",
    "prompt-data": "--data.path FILE",
    "seed": "--train.seed N",
    "save-steps": "--train.save-every N",
    "logging-steps": "nothing: every step is a line of metrics.jsonl",
    "eval-steps": "--train.eval-every N",
    "per-device-train-batch-size": "--optim.micro-batch-size N (completions per backward); TRL's completions a "
                                   "step, per_device_train_batch_size x processes x gradient_accumulation_steps, "
                                   "are --rollout.prompts-per-step x --rollout.group-size here",
    "gradient-accumulation-steps": "--optim.micro-batch-size or --optim.micro-batch-tokens: one optimiser step "
                                   "per batch, accumulated over its micro-batches",
    "rollout-batch-size": "--rollout.prompts-per-step N (OpenRLHF's prompts sampled per rollout)",
    "micro-train-batch-size": "--optim.micro-batch-size N (completions per backward)",
    "micro-rollout-batch-size": "nothing: the sampler generates the whole batch at once, stopping rows as they end",
    "train-batch-size": "--optim.updates-per-batch N for several optimiser steps on a batch (each over the whole "
                        "batch; no mini-batches here)",
    "max-grad-norm": "--optim.max-grad-norm X",
    "weight-decay": "--optim.weight-decay X",
    "warmup-steps": "--optim.warmup-steps N",
    "bf16": "--model.dtype bfloat16",
    "use-peft": "--model.lora-rank R (LoRA is on when R > 0)",
    "lora-r": "--model.lora-rank R (TRL reads lora_r only with use_peft)",
    "lora-rank": "--model.lora-rank R",
    "lora-alpha": "--model.lora-alpha A",
    "lora-dropout": "--model.lora-dropout P",
    "lora-target-modules": "--model.lora-targets NAME [NAME ...]",
    "mask-truncated-completions": "--algo.mask-truncated",
    "overlong-buffer-len": "--algo.overlong-buffer N (DAPO's soft overlong punishment)",
    "soft-punish-cache": "--algo.overlong-buffer N (TRL's get_soft_overlong_punishment's soft_punish_cache; its "
                         "max_completion_len is --rollout.max-new-tokens)",
    "multi-objective-aggregation": "--algo.advantage (TRL's sum_then_normalize = grpo, the default; "
                                   "normalize_then_sum = gdpo, with --algo.advantage-kwargs weights W [W ...] for "
                                   "TRL's reward_weights)",
    "max-prompt-length": "nothing: prompts are never cut; one longer than the model's context with "
                         "--rollout.max-new-tokens is refused at start-up, naming the row",
    "overlong-penalty-factor": "--algo.overlong-penalty X",
    "dynamic-filtering": "--rollout.dynamic-sampling accuracy (a group dropped when its completions are all right or "
                         "all wrong, and more prompts sampled; OpenRLHF keeps a group whose mean score lies strictly "
                         "inside its dynamic_filtering_reward_range, by default 0 1: the same groups for 0/1 scores)",
    "dynamic-filtering-reward-range": "--rollout.dynamic-sampling accuracy (some completions right, some not: "
                                      "OpenRLHF's default range 0 1 for 0/1 scores) or reward (rewards not all "
                                      "equal); no other range",
    "sync-ref-model": "--algo.ref-sync-every STEPS (with --algo.ref-sync-alpha A)",
    "ref-model-sync-steps": "--algo.ref-sync-every STEPS (TRL reads it only with sync_ref_model)",
    "ref-model-mixup-alpha": "--algo.ref-sync-alpha A",
}

# under `policyforge sft`, the names whose sft option differs from train's
SFT_FLAGS = {"learning-rate": "--sft.lr LR", "max-steps": "--sft.steps N",
             "per-device-train-batch-size": "--sft.batch-size N", "output-dir": "--sft.out DIR"}

PEER_TO = {  # a peer's name -> its value (as tokens) turned into the flag here; "" = nothing needed, None = no
    # single flag does it (PEER_FLAGS' words say what does); names not here have no clean translation
    "beta": or_nothing("--algo.drift k3 {} --algo.drift-unbiased", "0"),  # TRL 1.16's use_bias_correction_kl
    "use-bias-correction-kl": lambda v: "" if switch("on")(v) is not None else None,  # read only with beta
    "use-vllm": lambda v: "" if switch("on")(v) == "" else None,
    "top-entropy-quantile": lambda v: "" if len(v) == 1 and number(v[0]) == 1 else None,
    "entropy-coef": or_nothing("--algo.drift entropy {}", "0"),
    "reward-funcs": lambda v: _reward_funcs(v),
    **dict.fromkeys(("num-generations", "n-samples-per-prompt"), one("--rollout.group-size {}")),
    **dict.fromkeys(("learning-rate", "actor-learning-rate"), one("--optim.lr {}")),
    **dict.fromkeys(("max-completion-length", "generate-max-len", "max-new-tokens"),
                    one("--rollout.max-new-tokens {}")),
    "temperature": one("--rollout.temperature {}"), "top-p": one("--rollout.top-p {}"), "top-k": top_k,
    "epsilon": both_eps, "eps-clip": both_eps, "eps-low": one("--algo.loss-kwargs eps_low {}"),
    **dict.fromkeys(("eps-high", "epsilon-high"), one("--algo.loss-kwargs eps_high {}")),  # cispo: PEER_TOGETHER
    "num-iterations": one("--optim.updates-per-batch {}"),
    "loss-type": lambda v: {"dapo": "--algo.aggregation token_mean",  # bnpo's micro-batch mean: no clean one
                            "grpo": "--algo.aggregation seq_mean_token_mean",
                            "dr_grpo": "--algo.aggregation seq_mean_token_sum_norm",
                            "sapo": "--algo.loss sapo --algo.aggregation seq_mean_token_mean"}.get(
        v[0].lower() if len(v) == 1 else ""),
    "sapo-temperature-pos": one("--algo.loss-kwargs tau_pos {}"),
    "sapo-temperature-neg": one("--algo.loss-kwargs tau_neg {}"),
    "delta": lambda v: None,  # PEER_TOGETHER decides, with epsilon / epsilon_high when given
    "scale-rewards": choice("--algo.advantage", {"group": TRL_STD, "true": TRL_STD, "none": "dr_grpo",
                                                  "false": "dr_grpo", "batch": "lite --algo.advantage-kwargs eps 1e-4"}),
    # TRL's default clip range (epsilon 0.2); PEER_TOGETHER folds in the user's own and the loss type
    "importance-sampling-level": lambda v: {"sequence": "--algo.loss gspo --algo.loss-kwargs eps_low 0.2 eps_high 0.2",
                                            "token": ""}.get("".join(v)),
    "reward-weights": many("--data.reward-weights {}"),
    "max-steps": one("--train.steps {}"), "output-dir": one("--train.out-dir {}"),
    **dict.fromkeys(("model-name-or-path", "pretrain"), one("--model.path {}")),
    # a hub name is not a file here: only a local file of a kind --data.path reads is a clean translation
    **dict.fromkeys(("dataset-name", "prompt-data"), lambda v: one("--data.path {}")(v) if len(v) == 1 and v[0]
                    .endswith((".jsonl", ".json", ".csv", ".parquet")) else None),
    "seed": one("--train.seed {}"), "save-steps": one("--train.save-every {}"),
    "eval-steps": one("--train.eval-every {}"), "max-grad-norm": one("--optim.max-grad-norm {}"),
    "weight-decay": one("--optim.weight-decay {}"), "warmup-steps": one("--optim.warmup-steps {}"),
    "bf16": switch("--model.dtype bfloat16"), "mask-truncated-completions": switch("--algo.mask-truncated"),
    "lora-rank": one("--model.lora-rank {}"),  # OpenRLHF's: on by itself; TRL's lora_r only with use_peft
    "lora-alpha": one("--model.lora-alpha {}"), "lora-dropout": one("--model.lora-dropout {}"),
    "lora-target-modules": many("--model.lora-targets {}"),
    **dict.fromkeys(("overlong-buffer-len", "soft-punish-cache"), one("--algo.overlong-buffer {}")),
    "overlong-penalty-factor": one("--algo.overlong-penalty {}"),
    "dynamic-filtering": switch("--rollout.dynamic-sampling accuracy"),
    "rollout-batch-size": one("--rollout.prompts-per-step {}"),
    "micro-train-batch-size": one("--optim.micro-batch-size {}"),
    "micro-rollout-batch-size": lambda v: "" if len(v) == 1 else None,
    "dynamic-filtering-reward-range": lambda v: "" if list(map(number, v)) == [0, 1] else None,  # accuracy's
    "multi-objective-aggregation": choice("--algo.advantage", {"sum_then_normalize": "grpo"}),
    "sync-ref-model": or_nothing("", "false"),  # ref_model_sync_steps: only with it (PEER_TOGETHER)
    "ref-model-mixup-alpha": one("--algo.ref-sync-alpha {}"),
}
SEQUENCE_AGGREGATIONS = {"grpo": "seq_mean_token_mean", "dapo": "token_mean",  # TRL's loss_type (1.16's default
                         "dr_grpo": "seq_mean_token_sum_norm"}  # dapo) over sequence-level ratios, as gspo here


def _reward_funcs(values: list[str]) -> str | None:
    """TRL's reward_funcs as --data.reward: a `module:function` or file path's as it is, a dotted import path
    (`my_lib.rewards.fn`) as module:function; None for a hub model or a built-in name, which have no file here."""
    specs = []
    for value in (x.strip() for v in values for x in v.split(",") if x.strip()):
        if ":" in value:
            specs.append(value)
        elif "." in value and "/" not in value and not value.endswith(".py"):
            module, _, name = value.rpartition(".")
            specs.append(f"{module}:{name}")
        else:
            return None
    return f"--data.reward {shlex.quote(', '.join(specs))}" if specs else None


def _sequence_level(v: dict[str, list[str]]) -> str | None:
    """TRL's importance_sampling_level='sequence' with the names that change what it computes: gspo with TRL's
    clip ranges and its loss_type's aggregation, and beta's KL; NoCounterpart for what has none together."""
    switches = {"use-bias-correction-kl"}  # bare: true
    if v["importance-sampling-level"] != ["sequence"] or any(len(x) != 1 for k, x in v.items() if k not in switches):
        return None  # 'token' (each name answers alone), or a value missing or doubled: no counterpart
    loss_type = v.get("loss-type", ["dapo"])[0].lower()
    if loss_type not in SEQUENCE_AGGREGATIONS:
        return NoCounterpart(f"no counterpart here for sequence-level ratios with TRL's loss_type {loss_type} (gspo "
                             "here is the sequence-level form of TRL's grpo, dapo and dr_grpo)")
    if "delta" in v:
        return NoCounterpart("no counterpart here for sequence-level ratios with TRL's delta (gspo here does not cap "
                             "the sequence ratio)")
    eps = v.get("epsilon", ["0.2"])[0]
    flags = (f"--algo.loss gspo --algo.loss-kwargs eps_low {shlex.quote(eps)} eps_high "
             f"{shlex.quote(v.get('epsilon-high', [eps])[0])} --algo.aggregation {SEQUENCE_AGGREGATIONS[loss_type]}")
    beta = v.get("beta", ["0"])[0]
    if number(beta) == 0:
        return flags
    if switch("on")(v.get("use-bias-correction-kl", ["true"])) == "":  # False: the plain k3 term
        return f"{flags} --algo.drift k3 {shlex.quote(beta)}"
    return NoCounterpart("no counterpart here for beta's KL with sequence-level ratios and use_bias_correction_kl "
                         "(TRL weights each token's KL by the sequence's ratio; --algo.drift-unbiased weights it by "
                         "the token's): give use_bias_correction_kl False for the plain k3 term")


def _beta(v: dict[str, list[str]]) -> str | None:
    """beta's k3 KL, weighted by the ratio (--algo.drift-unbiased) unless use_bias_correction_kl is False."""
    plain = switch("on")(v["use-bias-correction-kl"]) == ""
    return or_nothing("--algo.drift k3 {}" + ("" if plain else " --algo.drift-unbiased"), "0")(v["beta"])


SFT_TO = {"learning-rate": one("--sft.lr {}"), "max-steps": one("--sft.steps {}"),
          "per-device-train-batch-size": one("--sft.batch-size {}"), "output-dir": one("--sft.out {}")}
def _delta(v: dict[str, list[str]]) -> str | None:
    """TRL's delta caps the ratio before PPO's min: the dual clip's bound on a negative-advantage token, and no
    change for a positive one only when delta >= 1 + epsilon_high (TRL's default epsilon_high is epsilon, 0.2);
    with epsilon / epsilon_high given, their ranges go in the same flag."""
    eps = v.get("epsilon", ["0.2"])
    high = v.get("epsilon-high", eps)
    if any(len(x) != 1 for x in (v["delta"], eps, high)) or number(v["delta"][0]) < 1 + number(high[0]):
        return None
    ranges = f"eps_low {eps[0]} eps_high {high[0]} " if len(v) > 1 else ""
    return f"--algo.loss-kwargs {ranges}dual_clip {v['delta'][0]}"


PEER_TOGETHER = [  # as VERL_TOGETHER: TRL names that one option here does together
    (("importance-sampling-level",), ("loss-type", "epsilon", "epsilon-high", "delta", "beta",
                                      "use-bias-correction-kl"), _sequence_level),
    (("beta", "use-bias-correction-kl"), (), _beta),
    (("loss-type", "epsilon-high"), ("epsilon",), lambda v: (  # TRL's cispo caps the ratio at epsilon_high itself
        f"--algo.loss cispo --algo.loss-kwargs eps_high {number(v['epsilon-high'][0]) - 1:g}"  # and reads no epsilon
        if v["loss-type"] == ["cispo"] and v["epsilon-high"] and number(v["epsilon-high"][0]) > 1 else None)),
    (("delta",), ("epsilon", "epsilon-high"), _delta),
    (("epsilon", "epsilon-high"), (), lambda v: low_and_high(v["epsilon"], v["epsilon-high"])),
    (("init-kl-coef", "kl-estimator"), (), lambda v: (  # OpenRLHF's KL: its coefficient and estimator
        f"--algo.drift {v['kl-estimator'][0]} {v['init-kl-coef'][0]}" if len(v["init-kl-coef"]) == 1
        and v["kl-estimator"] in (["k1"], ["k2"], ["k3"]) and number(v["init-kl-coef"][0]) > 0 else None)),
    (("sync-ref-model", "ref-model-sync-steps"), (), lambda v: (
        one("--algo.ref-sync-every {}")(v["ref-model-sync-steps"]) if switch("on")(v["sync-ref-model"]) else None)),
    *[(("use-peft", r), (), lambda v, r=r: one("--model.lora-rank {}")(v[r]) if switch("on")(v["use-peft"])
       else None) for r in ("lora-r", "lora-rank")],
    (("multi-objective-aggregation", "reward-weights"), (), lambda v: (
        many("--algo.advantage gdpo --algo.advantage-kwargs weights {}")(v["reward-weights"])
        if v["multi-objective-aggregation"] == ["normalize_then_sum"] else None)),
]
MULTI = ("reward-weights", "lora-target-modules", "reward-funcs",
         "dynamic-filtering-reward-range")  # names that take several values
SWITCHES = ("bf16", "mask-truncated-completions", "use-peft", "sync-ref-model", "log-completions",
            "dynamic-filtering", "use-bias-correction-kl", "use-vllm")  # take 0 or 1
