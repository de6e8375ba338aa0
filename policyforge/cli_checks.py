"""Checks on the command line itself, around tyro's parse: what a TRL user types first, and dict
flags whose repeated keys the parse would silently merge.

tyro answers an unknown flag with the closest policyforge name, which for a peer's name can
mislead (TRL's `--beta`, the KL coefficient, is closest to `--optim.betas`, AdamW's). So peers'
names are recognised first and answered with the option that does the same thing here.
"""

from __future__ import annotations

from policyforge.train.config import ConfigError

# a flag of TRL's GRPOConfig / transformers' TrainingArguments (or OpenRLHF's) -> what does that here
PEER_FLAGS = {
    "beta": "--algo.drift k3 BETA (TRL's beta is the coefficient of a k3 KL penalty to the reference; "
            "beta 0, TRL's default, is no --algo.drift)",
    "init-kl-coef": "--algo.drift ESTIMATOR COEF (k1, k2 or k3, as OpenRLHF's --kl_estimator)",
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
    "scale-rewards": "--algo.advantage (TRL's group = grpo, none = dr_grpo, batch = lite)",
    "importance-sampling-level": "--algo.loss gspo for sequence-level ratios (TRL's 'sequence')",
    "reward-weights": "--data.reward-weights W [W ...]",
    "reward-funcs": "--data.reward 'module:function, module:other' (or 'path/to/file.py:function')",
    "remote-rm-url": "--data.reward path/to/file.py:function (OpenRLHF's local reward-function file; a reward "
                     "model folder is --data.reward-model DIR)",
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
    "max-grad-norm": "--optim.max-grad-norm X",
    "weight-decay": "--optim.weight-decay X",
    "warmup-steps": "--optim.warmup-steps N",
    "bf16": "--model.dtype bfloat16",
    "use-peft": "--model.lora-rank R (LoRA is on when R > 0)",
    "lora-r": "--model.lora-rank R",
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
    "sync-ref-model": "--algo.ref-sync-every STEPS (with --algo.ref-sync-alpha A)",
    "ref-model-sync-steps": "--algo.ref-sync-every STEPS",
    "ref-model-mixup-alpha": "--algo.ref-sync-alpha A",
}

# under `policyforge sft`, the names whose sft option differs from train's
SFT_FLAGS = {"learning-rate": "--sft.lr LR", "max-steps": "--sft.steps N",
             "per-device-train-batch-size": "--sft.batch-size N", "output-dir": "--sft.out DIR"}

# flags whose value is a dict given as KEY VALUE ... pairs
DICT_FLAGS = {"--algo.loss-kwargs": ("algo", "loss_kwargs"), "--algo.advantage-kwargs": ("algo", "advantage_kwargs"),
              "--algo.drift": ("algo", "drift"), "--algo.drift-kwargs": ("algo", "drift_kwargs"),
              "--data.chat-template-kwargs": ("data", "chat_template_kwargs")}


def _flag(arg: str) -> str:
    return arg.split("=", 1)[0].replace("_", "-")


def peer_answer(name: str, command: str = "train") -> str | None:
    """The policyforge option that does the job of TRL's / OpenRLHF's `name` (a flag without its dashes, or a
    config key: `beta`, `max_completion_length`), or None."""
    answers = {**PEER_FLAGS, **SFT_FLAGS} if command == "sft" else PEER_FLAGS
    return answers.get(name.replace("_", "-"))


def _own_flags() -> set[str]:
    """Every policyforge option as a flag, `--section.option-name`, with a flag's `--section.no-option` form."""
    import dataclasses

    from policyforge.cli_help import flag_name
    from policyforge.train.config import Config

    out = set()
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default_factory()):
            out |= {flag_name(section.name, f.name), flag_name(section.name, "no_" + f.name)}
    return out


def check_peer_flags(args: list[str], command: str = "train") -> None:
    """ConfigError for the first flag that is a TRL / OpenRLHF name rather than a policyforge one, naming the
    policyforge option that does its job in `command`: given bare (`--beta`; policyforge's own flags all have
    a section, so none is shadowed) or under a section guessed for it (`--algo.beta`, not an option here)."""
    own = None
    for arg in args:
        if not arg.startswith("--"):
            continue
        flag = _flag(arg)
        bare, _, rest = flag[2:].partition(".")
        name = rest if rest else bare
        if rest and "." not in rest:  # a sectioned guess: only when it is not one of policyforge's own flags
            own = own if own is not None else _own_flags()
            if flag in own:
                continue
        answer = peer_answer(name, command) if (rest or "." not in bare) else None
        if answer:
            raise ConfigError(f"{flag} is not a policyforge option; here it is {answer}. "
                              "README \"Coming from TRL\" maps the rest")


def check_dict_flags(args: list[str], cfg) -> None:
    """ConfigError for a dict flag given twice or naming a key twice: the parse keeps one value and drops the
    other without a word (`--algo.drift k3 0.04 k3 0.1` would run with 0.1)."""
    for flag, (section, name) in DICT_FLAGS.items():
        starts = [i for i, a in enumerate(args) if _flag(a) == flag]
        if len(starts) > 1:
            raise ConfigError(f"{flag} is given {len(starts)} times; give it once, with all its keys "
                              "(a later one would replace the earlier one whole)")
        if not starts:
            continue
        tokens = []
        for a in args[starts[0] + 1:]:
            if a.startswith("--"):
                break
            tokens.append(a)
        for key in getattr(getattr(cfg, section), name):  # the keys the parse kept, each given how often
            if tokens.count(key) > 1:
                raise ConfigError(f"{flag} names {key!r} {tokens.count(key)} times; name each key once "
                                  "(only the last value would be used)")
    # `--algo.drift-kwargs k3 clamp 10 entropy target 0.3`: the parse cannot tell where k3's options end and
    # files entropy under k3
    for term, options in cfg.algo.drift_kwargs.items():
        inner = [k for k in (options if isinstance(options, dict) else {}) if k in cfg.algo.drift]
        if inner and "--algo.drift-kwargs" in map(_flag, args):
            raise ConfigError(f"--algo.drift-kwargs: the command line cannot tell where {term}'s options end and "
                              f"{inner[0]}'s begin; give the options of several drift terms in a --config file (algo: {{drift_kwargs: {{{term}: {{...}}, {inner[0]}: {{...}}}}}})")
