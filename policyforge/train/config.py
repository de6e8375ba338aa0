"""The one configuration of a run: nested dataclasses, a docstring per field.

Loaded from YAML (`--config FILE`), overridden on the command line
(`--rollout.group-size 16`), printed in full at the start of a run and saved as
`config.yaml` in the run directory. Values derived from others are computed in
`derived()`, and only there.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from policyforge.algos.registry import finite_number
from policyforge.data.critique import REFINE_TEMPLATE
from policyforge.data.hints import HINT_RATIOS, HINT_TEMPLATE

# Hyper-parameter values as the command line can give them: `--algo.loss-kwargs eps_high 0.28 level token`;
# a list as separate numbers: `--algo.advantage-kwargs weights 1.0 0.5`. Each value is coerced to its
# parameter's own type at start-up (algos/registry.py check_kwargs), e.g. `scale_by_std false` to False.
Hyper = dict[str, bool | int | float | str | list[float] | None]


@dataclass
class ModelConfig:
    path: str = "builtin:tiny"
    """A local Hugging Face model directory (AutoModelForCausalLM + tokenizer), a LoRA run's checkpoint folder (its
    base with the adapter merged), or 'builtin:tiny' (a fresh tiny model drawn from train.seed)."""
    ref_path: str | None = None
    """Reference model for the KL drift terms; None means the initial policy (a frozen copy; with LoRA, the
    policy with its adapters disabled, i.e. the base model, with no copy)."""
    dtype: str = "float32"
    """Parameter dtype: float32 or bfloat16 (trained through float32 master weights); float16 for eval only."""
    device: str = "auto"
    """'auto' (cuda if available, else cpu), or a torch device name: 'cpu', 'cuda', 'cuda:1', 'mps'."""
    disable_dropout: bool = True
    """Dropout off for RL, as TRL does (on, each forward is a random draw and log-probs disagree by noise)."""
    lora_rank: int = 0
    """LoRA rank (policyforge train and sft): 0 = full fine-tuning; >0 trains only peft LoRA adapters, and checkpoints
    save only them (needs pip install 'policyforge[lora]')."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator: the adapter adds (lora_alpha / lora_rank) * B A to each adapted weight."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA adapters' input during the update (kept with model.disable_dropout, which is the model's own)."""
    lora_targets: list[str] = field(default_factory=lambda: ["all-linear"])
    """Modules LoRA adapts, by name (e.g. q_proj v_proj), or 'all-linear': every linear layer but the output
    head, on any causal LM (on Llama: q/k/v/o_proj, gate/up/down_proj)."""


@dataclass
class DataConfig:
    task: str = "addition"
    """Built-in task (addition, reversal, sorting), optionally with its size (reversal:6); ignored when `path` is
    set. Several separated by commas (e.g. reversal:4,reversal:8,sorting) make a mixture served in turn, each row
    tagged with its task: held-out accuracy is also recorded per task, and data.curriculum dump schedules by it."""
    task_size: int | None = None
    """Difficulty of the built-in task (digits per operand / maximum word length), also of a mixture's parts that
    give no size of their own; None = each task's default."""
    path: str | None = None
    """Your own prompts: a .jsonl, .json (array of objects), .parquet or .csv file with a prompt column and any extra columns."""
    eval_path: str | None = None
    """Held-out prompts, same format as `path` (its first eval_size rows); None = the task's held-out split, or
    `path`'s first rows (untrained). `policyforge eval` scores it alone, without `path`."""
    prompt_column: str = "prompt"
    """Column of `path` holding the prompt text."""
    solution_column: str | None = None
    """Column of `path` holding a reference completion (needed by `policyforge sft` on your data, and by
    rollout.hints ghpo, which hints with its beginning)."""
    reward: str | None = None
    """'module:function' or 'path/to/file.py:function' called as fn(prompt, completion, **columns) -> float or
    dict (or in TRL's batched form, a parameter named prompts, completions or completion_ids: called once per batch
    with lists, completion_ids, trainer_state, log_metric and log_extra -> one float per row: rewards/batched.py),
    or several separated by commas, each a component (TRL's reward_funcs); None = the task's verifier (with `path`,
    train and eval need this or reward_model; sft needs neither)."""
    reward_weights: list[float] = field(default_factory=list)
    """One weight per function of `reward` (TRL's reward_weights); empty = all 1."""
    reward_workers: int = 1
    """Rows a reward function scores at once, in threads: for rewards that wait (tests in a subprocess, a server)."""
    reward_model: str | None = None
    """A local reward model (HF ...ForSequenceClassification, one output) scoring prompt + completion: alone, or
    added to `reward` (or the task's verifier) as the component reward_model; several folders separated by commas
    are an ensemble (reward_model_ensemble); see README "Reward models"."""
    reward_model_weight: float = 1.0
    """Weight of the reward model's logit: its share of the summed reward (alone, the reward is weight x logit)."""
    reward_model_ensemble: str = "mean"
    """How several reward models' scores make one (Coste et al., "Reward Model Ensembles Help Mitigate
    Overoptimization"): mean, worst (their minimum: WCO) or uncertainty (the mean less
    reward_model_uncertainty x their variance: UWO)."""
    reward_model_uncertainty: float = 0.1
    """lambda of reward_model_ensemble uncertainty: how much the members' variance lowers the mean (0.1, the
    paper's value for PPO; it used 0.5 for best-of-n and found most reasonable values work)."""
    chat_template: str = "auto"
    """When prompts go through model.path's chat template: auto (prompts that are conversations, lists of
    {role, content} messages), on (every prompt; plain text becomes the user's message), off (never)."""
    system_prompt: str | None = None
    """A system message put first in every prompt rendered with the chat template (unless it has one)."""
    chat_template_kwargs: Hyper = field(default_factory=dict)
    """Options the chat template reads, e.g. `--data.chat-template-kwargs enable_thinking false` for Qwen3."""
    hint_column: str | None = None
    """Scaf-GRPO's hints (rollout.hints scaf): the column holding each row's list of hint texts, least revealing
    first (its data: knowledge, planning, then solution hints, each tier as its first 1, 2, 3, 4 items)."""
    replay_pool: str | None = None
    """RLEP's experience pool ("RLEP: Reinforcement Learning with Experience Replay for LLM Reasoning"): a .jsonl of
    verified completions of the training prompts, as `policyforge collect` writes from an earlier run's policy;
    each step's groups are then joined by replay_per_prompt of their prompt's completions. None = no replay."""
    replay_per_prompt: int = 2
    """Completions of data.replay_pool added to each prompt's group (RLEP's n, 2 in its runs; fewer when the pool
    has fewer); the group's advantages are computed over its fresh and replayed rows together."""
    distribution_column: str | None = None
    """Column of `path` naming the distribution each row comes from (a source, a difficulty level): held-out
    accuracy is then also recorded per distribution (accuracy/<name>), and data.curriculum dump schedules by it."""
    curriculum: str = "off"
    """How training prompts are drawn: off (the rows in a fresh shuffled order each epoch) or dump (DUMP,
    "Automated Distribution-Level Curriculum Learning for RL-based LLM Post-training": each prompt's distribution
    drawn by a UCB score of its recent mean |advantage|; needs data.distribution_column; data/curriculum.py)."""
    curriculum_window: int = 300
    """DUMP's sliding window: the most recent completions of a distribution whose mean |advantage| is its score."""
    curriculum_temperature: float = 0.1
    """DUMP's softmax temperature over the UCB scores (0.1 as in the authors' code; lower favours the best more)."""
    eval_size: int = 200
    """Number of held-out prompts evaluated (from `path` without `eval_path`: at most half its rows); 0 holds
    nothing out (train and sft then train on every row and measure no held-out accuracy)."""


@dataclass
class RolloutConfig:
    prompts_per_step: int = 16
    """Prompts sampled per RL step."""
    group_size: int = 8
    """Completions sampled per prompt (the group of GRPO); at least 2."""
    max_new_tokens: int = 8
    """Generation budget per completion (also Dr. GRPO's normalising constant)."""
    temperature: float = 1.0
    """Sampling temperature; log-probs are computed at this temperature, as TRL and verl do."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 = off)."""
    top_k: int = 0
    """Top-k filter (0 = off)."""
    stop: list[str] = field(default_factory=list)
    """Stop strings: a completion ends after the first one (it is cut from the text the reward sees)."""
    dynamic_sampling: str = "off"
    """DAPO's dynamic sampling: groups whose completions all score alike are dropped and more prompts sampled
    until prompts_per_step groups remain. "accuracy" keeps a group with some completions right and some not
    (DAPO's eq. 11), "reward" one whose rewards are not all equal (a non-zero GRPO advantage); off by default."""
    max_sampling_rounds: int = 10
    """Dynamic sampling samples at most this many rounds of prompts_per_step prompts a step (verl's
    max_num_gen_batches); when they run out, groups that scored alike fill the batch up."""
    hints: str = "off"
    """Hints for a group with no correct completion. "ghpo" (GHPO: Adaptive Guidance for Stable and Efficient LLM
    Reinforcement Learning) samples it again with the beginning of the row's reference solution appended to its
    prompt (data.solution_column; a built-in task's answer), a larger beginning at each stage; "scaf"
    (Scaf-GRPO) samples every level of the row's own hints (data.hint_column) and puts the least revealing
    level's first success in place of one row; off by default."""
    hint_ratios: list[float] = field(default_factory=lambda: list(HINT_RATIOS))
    """The fractions of the solution's characters the hint stages give, in order (GHPO's 0.25, 0.5, 0.75)."""
    hint_warmup_steps: int = 0
    """No hints before step hint_warmup_steps + 1 (Scaf-GRPO's guidance exemption: 50 steps in its script)."""
    hint_template: str = HINT_TEMPLATE
    """The text appended to the prompt (to the user's turn of a chat prompt), {hint} the hint (ghpo: the solution's
    beginning; scaf: a level of data.hint_column);
    GHPO's wording by default (the built-in tokenizer reads lower case only: give e.g. ' hint:{hint}')."""
    refinements: int = 0
    """Critique-GRPO ("Critique-GRPO: Advancing LLM Reasoning with Natural Language and Numerical Feedback"): for a
    group with no correct completion, each completion is critiqued, the policy answers again from a prompt holding
    the critique, and this many of those refinements (correct ones first; the paper's k = 1) join the group,
    trained as answers to the question with the shaped loss -A x/(x + gamma); 0 = off (train/refine.py)."""
    refine_method: str = "critique_grpo"
    """What rollout.refinements runs: critique_grpo (every completion of a group with no correct one is critiqued;
    k refinements join the group, trained as answers to the question with -A pi/(pi + gamma)) or herl (HeRL,
    "Experience is the Best Teacher: Motivating Effective Exploration in Reinforcement Learning for LLMs", as its
    authors' code: the group's best answers are shown what they met and missed, rewritten at temperature 0.3, k
    rewrites that reach the group's best take the place of k of its rows, trained under the rewrite prompt with
    -A r/(r + gamma), and each rewritten answer earns rollout.hindsight_bonus x (rewrite's reward - its own);
    train/hindsight.py)."""
    critique: str = "ground_truth"
    """The critique of a wrong answer: ground_truth (it is wrong, and the right answer: the row's
    reference solution, data.solution_column: a column of final answers), indicative (only that it is wrong),
    rubric (the reward's components it met and missed, each component one rubric item, met at >= 1: HeRL's
    hindsight), or 'module:function' called
    fn(prompt, completion, reward, **columns) -> text (your critic, e.g. a model's chain-of-thought critique)."""
    hindsight_bonus: float = 0.05
    """HeRL's alpha: a rewritten answer's reward r becomes r + alpha (r_rewrite - r) (the authors' script's 0.05;
    0 = no bonus). Read only with rollout.refine_method herl."""
    refine_template: str = REFINE_TEMPLATE
    """The refinement prompt, with {question}, {response} and {critique} (for a chat prompt: the last user
    message's text becomes this); the default keeps to the built-in tokenizer's characters."""
    refine_shaping_gamma: float = 0.1
    """gamma of the shaping f(x) = x / (x + gamma) on refined tokens: Critique-GRPO's on pi (0.1 in the paper),
    HeRL's on the ratio r (0.1 the authors' code's default; 1 in their instruction-following script)."""
    allocation: str = "uniform"
    """Completions per prompt: uniform (group_size each) or knapsack (Knapsack RL, "Unlocking Exploration of LLMs
    via Optimizing Budget Allocation": the same prompts_per_step x group_size rollouts shared out by each prompt's
    success rate when last trained on, more to prompts rarely solved; data/budget.py). It pays when prompts recur
    (epochs over a data file); a prompt seen fewer than 8 times keeps group_size."""
    allocation_min_group: int = 2
    """Knapsack RL's N_low: the fewest completions a prompt gets (an always- or never-solved one gets this)."""
    allocation_max_group: int = 128
    """Knapsack RL's N_up: the most completions its knapsack gives one prompt."""


@dataclass
class AlgoConfig:
    plugins: list[str] = field(default_factory=list)
    """Your own algorithms: modules (my_algos) or files (path/my_algos.py) imported before the names below are
    looked up, whose functions register themselves with policyforge.algos.register (README "Your own
    algorithm"). config.yaml records them, so --resume imports them again."""
    advantage: str = "grpo"
    """Advantage estimator (see `policyforge algos`)."""
    advantage_kwargs: Hyper = field(default_factory=dict)
    """Hyper-parameters of the advantage estimator."""
    loss: str = "ppo_clip"
    """Policy loss (see `policyforge algos`)."""
    loss_kwargs: Hyper = field(default_factory=dict)
    """Hyper-parameters of the policy loss: `--algo.loss-kwargs eps_low 0.2 eps_high 0.28`, in YAML
    {eps_low: 0.2, eps_high: 0.28}."""
    drift: dict[str, float] = field(default_factory=dict)
    """Drift terms and their coefficients: on the command line `--algo.drift k3 0.04`, in YAML {k3: 0.04};
    empty = no KL to the reference."""
    drift_kwargs: dict[str, Hyper] = field(default_factory=dict)
    """Hyper-parameters per drift term: `--algo.drift-kwargs k3 clamp 10`, or in YAML drift_kwargs: {k3: {clamp: 10}}."""
    drift_unbiased: bool = False
    """Weight each token's drift penalty (the terms estimated from the sampled token: k1, k2, k3, k3_st; not the
    full-vocabulary forward_kl and js, nor the entropy bonus) by its importance ratio pi/pi_old, value and gradient (DeepSeek-V3.2's unbiased KL estimate: the tokens were sampled from pi_old, not
    pi; TRL's use_bias_correction_kl, on by default in TRL 1.16). It changes the gradient even with one update per
    batch, where the ratio's value is 1."""
    aggregation: str = "token_mean"
    """How per-token losses become one scalar (token_mean, seq_mean_token_mean, seq_mean_token_sum_norm, ...)."""
    ref_sync_every: int = 0
    """Every this many steps the reference moves toward the policy, ref <- alpha * policy + (1 - alpha) * ref
    (TR-DPO's reference update); 0 = a fixed reference."""
    ref_sync_alpha: float = 0.6
    """alpha of the reference sync (TRL's default 0.6); 1 copies the policy (TR-DPO's hard update)."""
    elastic_reset_every: int = 0
    """Elastic Reset: every this many steps the policy takes an EMA of its weights and the EMA restarts from
    the initial weights; 0 = off."""
    elastic_ema_decay: float = 0.995
    """Elastic Reset's EMA decay d: ema <- d * ema + (1 - d) * policy after every step."""
    mask_truncated: bool = False
    """Completions cut at rollout.max_new_tokens add nothing to the loss (DAPO's overlong filtering, TRL's
    mask_truncated_completions); they still count in their group's advantages and in the logged rewards."""
    overlong_buffer: int = 0
    """DAPO's soft overlong punishment (L_cache of its eq. 13): a completion longer than rollout.max_new_tokens
    minus this many tokens loses reward linearly, reaching -overlong_penalty at max_new_tokens; 0 = off.
    DAPO sampled 20,480 tokens with a buffer of 4,096 (TRL's get_soft_overlong_punishment, verl's overlong_buffer)."""
    overlong_penalty: float = 1.0
    """The soft overlong punishment's full penalty, at max_new_tokens (DAPO's is 1, against rule rewards of +1
    and -1; 0.5 keeps that size for 0/1 rewards; verl's penalty_factor)."""


@dataclass
class OptimConfig:
    lr: float = 1e-4
    """AdamW learning rate (after warm-up)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.99)
    """AdamW betas."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up, in optimiser steps."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm (0 = off)."""
    updates_per_batch: int = 1
    """Optimiser steps taken on each rollout batch (PPO epochs); >1 uses the stored old log-probs."""
    micro_batch_size: int = 64
    """Most sequences per forward/backward; gradients accumulate to exactly the full-batch gradient."""
    micro_batch_tokens: int = 0
    """Token budget per forward/backward (sequences x padded prompt+completion length); 0 = no budget."""
    shared_prefix: bool = True
    """Encode each group's prompt once (Prefix Grouper): same log-probs and gradients, less compute; off = per sequence."""
    skip_zero_advantage: bool = True
    """Zero-advantage samples (equal rewards in a group) skip the backward when the loss allows: same update, less compute."""


@dataclass
class TrainConfig:
    steps: int = 100
    """RL steps (rollout batches) in the run."""
    seed: int = 0
    """Seed of sampling, data order and initialisation."""
    out_dir: str = "runs"
    """Parent folder of run directories."""
    run_name: str | None = None
    """Run directory name; None = '<task or data file name>-<loss>-<YYYYmmdd-HHMMSS>' (-2, -3, ... when taken)."""
    eval_every: int = 10
    """Held-out evaluation every this many steps (and always at the start and end); 0 = only start and end."""
    pass_k: int = 4
    """k of the pass@k held-out metric (k samples per prompt at the rollout temperature); 0 = no pass@k."""
    save_every: int = 25
    """Checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep."""
    track_ref_kl: bool = True
    """Log KL to the reference even when no drift term needs it. Costs one reference forward per step and,
    unless the policy is LoRA (its base is its reference), a frozen copy of the model in memory: turn it off
    for a model near the memory limit."""
    log_samples: int = 4
    """Completions written to samples.jsonl at each evaluation."""
    log_rollouts: int = 4
    """Sampled completions written to rollouts.jsonl at every RL step, with their rewards and advantages: the
    first rows of the step's batch (the first group's completions). 0 = none; each line holds one completion's
    text, so lower it for long completions over many steps."""
    stop_after: int | None = None
    """Stop (after checkpointing) once this step is reached, as if interrupted; `--resume` continues."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = False
    """Also write the records as TensorBoard events in <run>/tensorboard (the tensorboard extra: tensorboardX)."""


@dataclass
class SFTConfig:
    steps: int = 300
    """Optimiser steps of teacher-forced fine-tuning."""
    batch_size: int = 64
    """Examples per step."""
    lr: float = 1e-3
    """AdamW learning rate (cosine decay to 10%)."""
    out: str = "checkpoints/sft"
    """Where the fine-tuned model and tokenizer are saved (save_pretrained)."""
    noise: float = 0.0
    """Fraction of demonstrations replaced by the task's typical mistake (a weak teacher, as for the demo's start)."""


@dataclass
class Config:
    """A policyforge run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)

    def derived(self) -> dict[str, int]:
        """Values computed from others, in one place."""
        return {"batch_size": self.rollout.prompts_per_step * self.rollout.group_size}


class ConfigError(ValueError):
    """A configuration the user gave that cannot run."""


def check_attributes(cfg: "Config") -> None:
    """ConfigError for an attribute set from Python that is no option (`cfg.optim.lrr = 0.5`): a dataclass takes
    any attribute, and the run would go on at the default while config.yaml records that."""
    import difflib

    for section, obj in [("", cfg)] + [(f"{f.name}.", getattr(cfg, f.name)) for f in dataclasses.fields(cfg)]:
        known = [f.name for f in dataclasses.fields(obj)]
        for attr in vars(obj):
            if attr not in known:
                close = difflib.get_close_matches(attr, known, 1)
                hint = (f"did you mean cfg.{section}{close[0]}?" if close
                        else f"{section.rstrip('.') or 'Config'} has {', '.join(known)}")
                raise ConfigError(f"cfg.{section}{attr} is not an option: {hint}")


def refuse(setting: str, refused: dict[str, bool], fix: str) -> None:
    """ConfigError "<setting> with <culprit>: <fix>" for the first culprit of `refused` ({culprit in words: present})
    that is present; nothing when none is."""
    for what, present in refused.items():
        if present:
            raise ConfigError(f"{setting} with {what}: {fix}")


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass `cls` from nested dicts; an unknown key raises naming it and the valid ones, and every
    value is checked against its field's type (see `_fit`)."""
    if not isinstance(data, dict):
        section = where.rstrip(".") or "(top)"
        raise ConfigError(f"config section {section!r} must be a mapping, got {type(data).__name__}")
    valid = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in valid:  # answered with every peer key of `data` where it is a peer's config (cli_checks)
            from policyforge.cli_checks import unknown_key_error  # it imports this module

            raise unknown_key_error(cls, data, where, key)
        if dataclasses.is_dataclass(hints[key]):  # a section; an empty one (`rollout:`) keeps its defaults
            kwargs[key] = from_dict(hints[key], {} if value is None else value, f"{where}{key}.")
        else:
            kwargs[key] = _fit(value, hints[key], f"{where}{key}")
    return cls(**kwargs)


# PyYAML follows YAML 1.1, whose floats need a dot and a signed exponent: `1e-3` and `1.0e3` load as strings.
_YAML_MISSED_FLOAT = re.compile(r"[-+]?(\d[\d_]*\.?[\d_]*|\.\d+)[eE][-+]?\d+")


def _fit(value, hint, key: str):
    """`value` as the type `hint` names, or ConfigError naming `key`, the value and the type.

    Lenient only where YAML itself is: ints and numeric strings are floats, and an empty key
    (None) is an empty dict or list. Anything else that does not fit is refused here, before
    it reaches torch as a TypeError after the model is loaded.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _fit_union(value, args, key)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _mismatch(key, value, hint)
        return {_fit(k, args[0], f"{key} key"): _fit(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        return _fit_sequence(value, origin, args, key)
    return _fit_scalar(value, hint, key)


COMMA_LISTS = {"data.reward": ", ", "data.reward_model": ","}  # text options that name several things


def _fit_union(value, args: tuple, key: str):
    if value is None and type(None) in args:
        return None
    if key in COMMA_LISTS and isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return COMMA_LISTS[key].join(value)  # a YAML list of functions or folders: the text a flag gives
    if float in args and isinstance(value, str) and _YAML_MISSED_FLOAT.fullmatch(value):
        return float(value)  # e.g. loss_kwargs {eps_high: 2e-1}: meant as a number
    if type(value) in args:
        return value
    for arg in args:
        try:
            return _fit(value, arg, key)
        except ConfigError:
            pass
    raise _mismatch(key, value, " or ".join(_type_name(a) for a in args))


def _fit_sequence(value, origin, args: tuple, key: str):
    if value is None and origin is list:
        return []
    if isinstance(value, str) and origin is list and args == (str,):  # `stop: "\n"` means one stop string
        return [value]
    if not isinstance(value, (list, tuple)):
        raise _mismatch(key, value, _type_name(origin[args]))
    if origin is tuple and Ellipsis not in args:  # fixed length, e.g. betas: [0.9, 0.99]
        if len(value) != len(args):
            raise ConfigError(f"{key}={list(value)!r}: expected {len(args)} values ({_type_name(origin[args])})")
        return tuple(_fit(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, args)))
    return origin(_fit(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))


def _fit_scalar(value, hint, key: str):
    if hint is float and not isinstance(value, bool):
        number = finite_number(value)
        if number is not None:
            return number
        if isinstance(value, float):  # inf or nan: the type fits, the value does not
            raise ConfigError(f"{key}={value!r}: expected a finite number")
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):  # bool is an int subclass: `steps: yes` is wrong
            return value
    elif hint is type(None):
        if value is None:
            return None
    elif isinstance(value, hint):  # str, bool
        return value
    raise _mismatch(key, value, hint)


def _type_name(hint) -> str:
    if isinstance(hint, type) and not typing.get_args(hint):
        return "None" if hint is type(None) else hint.__name__
    return str(hint).replace("NoneType", "None")


def _mismatch(key: str, value, hint) -> ConfigError:
    expected = hint if isinstance(hint, str) else _type_name(hint)
    if hint is str and isinstance(value, bool):  # YAML 1.1 reads unquoted off / on / yes / no as booleans
        word = "off" if value is False else "on"
        return ConfigError(f"{key}={value!r}: YAML reads an unquoted off, on, yes, no, true or false as a boolean, but "
                           f"this option is text: quote the word you meant ({key.rpartition('.')[2]}: \"{word}\")")
    return ConfigError(f"{key}={value!r} ({type(value).__name__}): expected {expected}")


def load_yaml(path: str | Path) -> Config:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(e, "problem", None) or e
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{line}: {problem}") from None
    return from_dict(Config, data or {})


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(plain_values(dataclasses.asdict(cfg)), sort_keys=False)


def plain_values(x):
    """Nested dicts/lists of YAML scalars; a Path, torch.device or numpy / torch scalar set in Python becomes
    the str or number it stands for."""
    if isinstance(x, dict):
        return {k: plain_values(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain_values(v) for v in x]
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    if type(x).__name__ == "device":  # torch.device, without importing torch here
        return str(x)
    if hasattr(x, "item") and getattr(x, "ndim", None) == 0:  # numpy / torch 0-d scalars
        return x.item()
    return x
