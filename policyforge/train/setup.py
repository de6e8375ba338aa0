"""Building the pieces of a run from its config: data, reward, optimiser, rollouts.

Kept apart from loop.py so the loop reads top to bottom without set-up detail.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from policyforge.data.chat import ChatRenderer, RenderedTask
from policyforge.data.curriculum import DistributionStream, describe, split_notes
from policyforge.data.tasks import Example, MixedTask, builtin_task
from policyforge.data.user import DataError, RowStream, hold_out, load_rows
from policyforge.models import lora
from policyforge.models.load import load_tokenizer
from policyforge.rewards.batched import TrainerState, scoring
from policyforge.rewards.score import (CORRECT, Combined, Pooled, RewardError, RewardFn, load_rewards, probe,
                                      takes_completion_ids)
from policyforge.rollout.batch import RolloutBatch
from policyforge.rollout.sampler import SamplingSettings, check_fits, ended_rows
from policyforge.train.config import Config, ConfigError, DataConfig, ModelConfig, RolloutConfig
from policyforge.train.evaluate import end_token_ids, generate_text, stop_matchers
from policyforge.train.master import MasterAdamW


def build_data(cfg: DataConfig, seed: int, training: bool = True, log=lambda *_: None, needs_reward: bool = True,
               device="cpu", model_path: str = "builtin:tiny", dtype: str = "float32"):
    """(training source, held-out examples, reward): `data_and_reward`, with prompts rendered by the chat
    template of `model_path`'s tokenizer where data.chat_template says (data/chat.py), and data.reward_model
    (loaded on `device`, in the policy's `dtype`) added to the reward as an Ensemble when set."""
    render = ChatRenderer(model_path, cfg.chat_template, cfg.system_prompt, cfg.chat_template_kwargs)
    # a reward model alone is a reward: no function is needed then
    source, held, reward = data_and_reward(cfg, seed, training, log, needs_reward and cfg.reward_model is None, render)
    if isinstance(reward, Combined) and CORRECT not in reward.fns:
        log(f"data.reward: {len(reward.fns)} functions, none named '{CORRECT}', so accuracy and pass@k count a row "
            "solved when the weighted sum is >= 1")
    if reward is not None and cfg.reward_workers > 1:
        reward = Pooled(reward, cfg.reward_workers)
    elif cfg.reward_workers > 1:
        log("data.reward_workers: no reward function to call (the reward model scores whole batches)")
    if cfg.reward_model is None:
        return source, held, reward
    from policyforge.models.load import pick_dtype
    from policyforge.rewards.model import Ensemble, RewardModel, check_folder

    from policyforge.rewards.spec import reward_model_paths

    paths = reward_model_paths(cfg.reward_model)
    how = "" if len(paths) == 1 else f", an ensemble of {len(paths)} by {cfg.reward_model_ensemble}" + (
        f" with lambda {cfg.reward_model_uncertainty}" if cfg.reward_model_ensemble == "uncertainty" else "")
    log(f"reward: {cfg.reward_model} (weight {cfg.reward_model_weight}{how})"
        + (" + the function's reward" if reward else ""))
    for p in paths:  # every member's folder before any loads
        try:
            check_folder(p)
        except RewardError as e:
            raise RewardError(f"{e} (data.reward_model is split at commas)" if len(paths) > 1 else str(e)) from None
    scorers = [RewardModel(p, device, dtype=pick_dtype(dtype)) for p in paths]
    return source, held, Ensemble(reward, scorers, cfg.reward_model_weight, cfg.reward_model_ensemble,
                                  cfg.reward_model_uncertainty)


def data_and_reward(cfg: DataConfig, seed: int, training: bool, log, needs_reward: bool, render: ChatRenderer):
    """(training source with .train_example(i), held-out examples, reward function), prompts through `render`.

    `needs_reward` False (policyforge sft) lets a data file come without data.reward: the
    reward is then None, and only the held-out solutions' loss is measured.

    With data.path and no data.eval_path, the first eval_size rows of the file (at most half
    of them) are the held-out set; with data.eval_path, its first eval_size rows. Training
    rows whose prompt is also a held-out prompt are left out (said through `log`), so held-out
    accuracy measures unseen prompts. `policyforge eval` (`training` False) scores the same
    held-out rows as training did; to score a whole file, pass it as data.eval_path, which
    needs no data.path there.
    """
    if cfg.path is None:
        if cfg.eval_path and training:
            raise ConfigError(f"data.eval_path={cfg.eval_path!r} without data.path: a built-in task evaluates on its "
                              "own held-out problems; set data.path to train on a file")
        if cfg.eval_path:  # policyforge eval on a file alone
            if cfg.reward is None and needs_reward:
                raise DataError(f"data.eval_path={cfg.eval_path!r} needs a reward function: set data.reward")
            held = load_rows(cfg.eval_path, cfg.prompt_column, cfg.solution_column)[: cfg.eval_size]
            return None, render.examples(held), load_rewards(cfg.reward, cfg.reward_weights) if cfg.reward else None
        task = builtin_task(cfg.task, cfg.task_size, cfg.eval_size, seed)
        mixed = isinstance(task, MixedTask)  # several built-in tasks, each row tagged with its own
        reward = load_rewards(cfg.reward, cfg.reward_weights) if cfg.reward else task.reward
        parts = getattr(task, "parts", {})
        if render.mode == "on":  # an instruct model given the built-in tasks: each prompt as the user's turn
            task, parts = RenderedTask(task, render), {k: RenderedTask(v, render) for k, v in parts.items()}
        elif cfg.system_prompt is not None or cfg.chat_template_kwargs:  # they would be dropped without a word
            given = "system_prompt" if cfg.system_prompt is not None else "chat_template_kwargs"
            raise DataError(f"data.{given} is set, but the built-in task's plain-text prompts are not rendered "
                            f"(data.chat_template={cfg.chat_template}); set data.chat_template to on to render them")
        log(f"data: built-in task{'s' * mixed} {cfg.task}" + ("" if mixed else f" (size {task.size})")
            + f", {len(task.held_out)} held-out problems")
        if training and cfg.curriculum == "dump":
            if not mixed:
                raise ConfigError(f"data.curriculum dump draws prompts across distributions, and data.task={cfg.task!r} "
                                  "is one: give several built-in tasks (e.g. reversal:4,reversal:8) or data.path with "
                                  "data.distribution_column")
            stream = DistributionStream(parts, task, "task", seed, cfg.curriculum_window, cfg.curriculum_temperature)
            log(describe(stream))
            return stream, task.held_out, reward
        return task, task.held_out, reward
    rows = load_rows(cfg.path, cfg.prompt_column, cfg.solution_column)
    if cfg.reward is None and needs_reward:
        raise DataError(f"data.path={cfg.path!r} needs a reward: set data.reward to 'module:function' "
                        "or data.reward_model to a reward model's folder")
    if cfg.eval_path:
        held = load_rows(cfg.eval_path, cfg.prompt_column, cfg.solution_column)[: cfg.eval_size]
    else:
        held, rows = hold_out(rows, cfg.eval_size)
    held = render.examples(held)
    reward = load_rewards(cfg.reward, cfg.reward_weights) if cfg.reward else None
    if not training:  # policyforge eval: nothing trains, so nothing to keep apart (or to render)
        return RowStream(rows, seed), held, reward
    rows = render.examples(rows)  # rendered before comparing with the held-out prompts
    seen = {e.prompt for e in held}
    unseen = [e for e in rows if e.prompt not in seen]
    if not unseen:
        raise DataError(f"every training row of {cfg.path!r} has a held-out prompt"
                        + (f" (data.eval_path {cfg.eval_path!r})" if cfg.eval_path else "")
                        + ": held-out accuracy would measure prompts the model trained on")
    if len(unseen) < len(rows):
        log(f"data: {len(rows) - len(unseen)} training row(s) repeat a held-out prompt and are left out of training")
    log(f"data: {len(unseen)} training row{'s' * (len(unseen) != 1)} from {cfg.path}, {len(held)} held out"
        + (f" (from {cfg.eval_path})" if cfg.eval_path else " (its first rows)"))
    if cfg.distribution_column is not None:  # every row names its distribution, or the run fails now
        for note in split_notes(held, unseen, cfg.distribution_column, eval_file=cfg.eval_path is not None):
            log(note)
    if cfg.curriculum == "dump":
        stream = DistributionStream.from_rows(unseen, cfg.distribution_column, seed, cfg.curriculum_window,
                                              cfg.curriculum_temperature)
        log(describe(stream))
        return stream, held, reward
    return RowStream(unseen, seed), held, reward


def writable_dir(path: Path, option: str) -> None:
    """ConfigError naming `option` unless directory `path` exists writable or could be created: a run
    must not load a model and train, then fail to write its results. Creates nothing, so a run that
    fails its other start-up checks leaves no trace."""
    path = Path(os.path.abspath(path))
    ancestor = next(p for p in (path, *path.parents) if p.exists())
    if not ancestor.is_dir():
        raise ConfigError(f"{option}: {str(ancestor)!r} is a file, so {str(path)!r} cannot be a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{option}: {str(ancestor)!r} is not writable" +
                          ("" if ancestor == path else f", so {str(path)!r} cannot be created there"))


def check_reward_on(reward: RewardFn, example: Example, held_out: Sequence[Example] = (),
                    model_path: str | None = None, state: TrainerState | None = None) -> int:
    """Call the reward on a real training row (and the first held-out one, which the step-0 evaluation scores)
    before any model work, so a broken function fails first, before a run directory is written.

    `model_path` (model.path, already checked to exist): for a reward that reads completion_ids, its tokenizer
    gives the stand-in completions' ids; it is loaded only for such a reward, so every other one starts as fast
    as before. Without it no ids are given. `state` (the run's state at global step 0): what a TRL-form function
    gets as trainer_state, with a log_metric whose values are dropped (rewards/batched.py); without it, neither.
    Returns how many components it gives (a dict's keys; 1 for a number).
    """
    tokenizer = load_tokenizer(model_path) if model_path and takes_completion_ids(reward) else None
    # each row's solution (or "") as its completion; one call per row, as training and evaluation never score
    # the two files' rows together (a batched function may rightly see other columns in each)
    with scoring(state) if state is not None else contextlib.nullcontext():
        for row in held_out[:1]:
            probe(reward, [row], tokenizer)
        return len(probe(reward, [example], tokenizer).names) or 1


def check_reward_model_fits(reward, source, held_out: Sequence[Example], max_new_tokens: int) -> None:
    """RewardError naming the row when a reward model's context cannot hold a prompt plus max_new_tokens
    (counted in its own tokens), checked at start-up like the policy's (check_prompt_lengths), not mid-run."""
    from policyforge.rewards.model import Ensemble

    if not isinstance(reward, Ensemble):
        return
    rows = list(held_out) + probe_rows(source)
    for model in reward.models:  # the text each will score (its own chat template's, if any)
        model.check_fits(rows, max_new_tokens)


BUILTIN_PROBES = 1000  # training problems of a built-in task whose prompts the start-up length checks measure


def probe_rows(source) -> list[Example]:
    """The training rows the start-up checks measure: every row of a data file, a built-in task's first
    BUILTIN_PROBES problems, none for `source` None (policyforge eval)."""
    if source is None:
        return []
    if hasattr(source, "rows"):
        return list(source.rows)
    return [source.train_example(i) for i in range(BUILTIN_PROBES)]


def check_prompt_lengths(model, tokenizer, source, held_out: Sequence[Example], max_new_tokens: int) -> None:
    """DataError, naming the row, when a prompt plus `max_new_tokens` exceeds the model's context.

    Call it right after the model and tokenizer load, before any rollout or evaluation. It
    measures every held-out and training row of a data file, and for a built-in task the
    held-out set and its first BUILTIN_PROBES training problems (the sampler checks every
    batch as well); `source` None checks the held-out rows only (`policyforge eval`). An empty
    prompt counts as one token (it starts from BOS; see evaluate.encode_prompts), and without
    a BOS token it fails here too.
    """
    rows = [("held-out", e) for e in held_out] + [("training", e) for e in probe_rows(source)]
    if not rows:
        return
    seqs = encoded_rows(tokenizer, rows)
    for (kind, ex), seq in zip(rows, seqs):
        if not seq and tokenizer.bos_token_id is None:
            raise DataError(f"{ex.where()} ({kind}): its prompt {ex.prompt!r} encodes to no tokens and the tokenizer has "
                            "no BOS token to start it from; give every row a non-empty prompt")
    for (kind, ex), seq in zip(rows, seqs):
        unknown = read_as_padding(tokenizer, ex.prompt, seq)
        if unknown:
            raise DataError(f"{ex.where()} ({kind}): the prompt {ex.prompt[:40]!r} has {unknown}")
    lengths = [len(seq) or 1 for seq in seqs]  # an empty prompt is sampled from BOS alone
    i = max(range(len(rows)), key=lengths.__getitem__)  # the first longest
    kind, ex = rows[i]
    check_fits(model, lengths[i], max_new_tokens, f"the prompt of {ex.where()} ({kind}: {ex.prompt[:40]!r})")


BUILTIN_ALPHABET = "lower-case letters, digits, +-*=:,;?!.()[]<>/ and space"


def read_as_padding(tokenizer, text: str, ids: list[int]) -> str:
    """Words for the characters of `text` (encoded as `ids`) that the tokenizer reads as padding, as the built-in
    character tokenizer does with one it does not know; "" when there are none."""
    pad = tokenizer.pad_token_id
    if pad not in ids or tokenizer.pad_token in text:
        return ""
    unknown = sorted({c for c in text if tokenizer(c, add_special_tokens=False)["input_ids"] == [pad]})
    return (f"characters the tokenizer does not know ({''.join(unknown)!r}), which it would read as padding (the "
            f"built-in tokenizer knows {BUILTIN_ALPHABET})") if unknown else ""


def encoded_rows(tokenizer, rows: list) -> list[list[int]]:
    """Each (kind, Example)'s prompt ids; DataError naming the first row the tokenizer cannot encode (a word-level
    vocabulary without an unknown token fails on a word it lacks)."""
    try:
        return tokenizer([e.prompt for _, e in rows], add_special_tokens=False)["input_ids"]
    except Exception:  # the tokenizer's own error names no row: find the first that fails, alone
        for kind, ex in rows:
            try:
                tokenizer(ex.prompt, add_special_tokens=False)
            except Exception as e:
                raise DataError(f"{ex.where()} ({kind}): the tokenizer cannot encode its prompt {ex.prompt[:40]!r}: "
                                f"{type(e).__name__}: {e}") from None
        raise


def frozen_copy(model):
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def with_lora(model, m: ModelConfig, log=lambda *_: None):
    """`model` wrapped with peft LoRA adapters as model.lora_* say, only they trainable, with one log line of the
    parameter counts; `model` as is when model.lora_rank is 0 (full fine-tuning)."""
    if not m.lora_rank:
        return model
    model = lora.wrap(model, m.lora_rank, m.lora_alpha, m.lora_dropout, m.lora_targets, m.path)
    trainable, total = lora.parameter_counts(model)
    log(f"LoRA: {trainable:,} trainable parameters of {total:,} ({trainable / total:.2%}): rank {m.lora_rank}, "
        f"alpha {m.lora_alpha:g}, dropout {m.lora_dropout:g}, on {' '.join(m.lora_targets)}")
    return model


def reference_policy(model, ref_model=None):
    """The reference policy (also kdrl's teacher): `ref_model` (model.ref_path) when given, else the initial
    policy. A LoRA policy's initial policy is its base model, which it computes with its adapters off, so it is
    its own reference (see logprobs.reference_logprobs): no copy. Any other policy's is a frozen copy of it."""
    if ref_model is None and lora.is_lora(model):
        return model
    return frozen_copy(ref_model if ref_model is not None else model)


def build_optimizer(model, cfg: Config):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay)
    warm = max(cfg.optim.warmup_steps, 0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    return opt, sched


def adamw(params: list, **kwargs) -> torch.optim.AdamW:
    """torch's AdamW, fused on CUDA and CPU (one kernel for all parameters: 0.5-0.7 ms against 2.5-3.6 ms per
    step for the tiny bench model's 1.06M; transformers' default, so TRL's, is fused too); over float32 master
    copies when the parameters are bfloat16 (train/master.py: RL-sized updates would round away)."""
    kwargs["fused"] = True if params and all(p.device.type in ("cuda", "cpu") for p in params) else None
    if params and all(p.dtype == torch.bfloat16 for p in params):
        return MasterAdamW(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def run_name(cfg: Config) -> str:
    task = Path(cfg.data.path).stem if cfg.data.path else cfg.data.task.replace(",", "+").replace(":", "")
    return cfg.train.run_name or f"{task}-{cfg.algo.loss}-{time.strftime('%Y%m%d-%H%M%S')}"


def new_run_dir(cfg: Config) -> Path:
    """Where a new run goes: train.out_dir / train.run_name, or for a name made from the time (run_name) the first
    of NAME, NAME-2, NAME-3, ... that does not exist yet, so that runs started in the same second (a loop of
    api.train calls) each get their own."""
    base = Path(cfg.train.out_dir) / run_name(cfg)
    if cfg.train.run_name:
        return base
    names = (base if n == 1 else base.with_name(f"{base.name}-{n}") for n in itertools.count(1))
    return next(path for path in names if not path.exists())


def rollout(model, tokenizer, examples: Sequence[Example], cfg: RolloutConfig, generator,
            sizes: Sequence[int] | None = None) -> RolloutBatch:
    """Sample `group_size` completions for each example (`sizes[i]` for example i, when given: Knapsack RL's
    allocation): one fresh group per prompt."""
    sizes = [cfg.group_size] * len(examples) if sizes is None else list(sizes)
    reps = [ex for ex, n in zip(examples, sizes) for _ in range(n)]
    settings = SamplingSettings(cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.top_k, tuple(cfg.stop))
    device = next(model.parameters()).device
    group = torch.arange(len(examples), device=device).repeat_interleave(torch.tensor(sizes, device=device))
    ids, attn, out, mask, logp, texts = generate_text(model, tokenizer, [e.prompt for e in reps], settings, generator,
                                                      group)  # in eval mode (no dropout), as every sampling is
    # truncated: every token of the budget was used and the last one neither is EOS nor completes a stop string
    ended = ended_rows(out, mask, end_token_ids(model, tokenizer), **stop_matchers(tokenizer, settings.stop))
    truncated = (mask.sum(-1) >= cfg.max_new_tokens) & ~ended
    return RolloutBatch(ids, attn, out, mask, logp, truncated, group, reps, texts, ["fresh"] * len(reps),
                        temperature=torch.full((len(reps),), float(cfg.temperature), device=device))


def add_tempered_rows(batch: RolloutBatch, model, tokenizer, examples: Sequence[Example], cfg: RolloutConfig,
                      generator, temperature: float) -> RolloutBatch:
    """A second set of groups for the same prompts sampled at `temperature`, tagged "tempered" (AEPO).

    They form groups of their own, so group-relative advantages compare them with each other.
    Their behav_logp stays the sampler's (at `temperature`), but the trainer scores them
    at the run's temperature like every other row: AEPO's REINFORCE term is
    grad log pi_theta(o) for o drawn from pi^T, not grad log pi^T(o).
    """
    extra = rollout(model, tokenizer, examples, replace(cfg, temperature=temperature), generator)
    extra.temperature = torch.full_like(extra.temperature, float(cfg.temperature))
    extra.group = extra.group + int(batch.group.max()) + 1
    extra.source = ["tempered"] * len(extra)
    return RolloutBatch.concat(batch, extra)


def reference_batch(model, tokenizer, examples: Sequence[Example], cfg: RolloutConfig, optim) -> RolloutBatch:
    """The examples' reference solutions (+ EOS) as a batch, for teacher-forced losses (psft, otr).

    behav_logp is the current policy's log-prob of the solution tokens, so ratio-based
    supervised losses see the policy that "produced" the batch.
    """
    missing = [ex.where() for ex in examples if ex.solution is None]
    if missing:
        raise DataError(f"this loss trains on reference solutions, but {missing[0]} has none: set data.solution_column")
    return completion_batch(model, tokenizer, examples, [(e.solution, "") for e in examples], cfg, optim, "fresh")


def completion_tokens(tokenizer, text: str, ending: str, budget: int) -> list[int]:
    """The tokens of a given completion `text`: with the stop string `ending` that ended it, or else the EOS token
    after it (then the text is cut to budget - 1 tokens, so that EOS fits)."""
    if ending:
        return tokenizer(text + ending, add_special_tokens=False)["input_ids"][:budget]
    return tokenizer(text, add_special_tokens=False)["input_ids"][: budget - 1] + [tokenizer.eos_token_id]


@torch.no_grad()
def completion_batch(model, tokenizer, examples: Sequence[Example], given: Sequence[tuple[str, str]],
                     cfg: RolloutConfig, optim, source: str, behaviour: bool = True) -> RolloutBatch:
    """Given completions of `examples`' prompts, (text, ending) pairs (completion_tokens), as a batch of one-row
    groups tagged `source`. Their behav_logp is the current policy's at the rollout temperature, forwarded in
    optim's micro-batches (eval mode: no dropout, as a sampler would); with `behaviour` False, when nothing
    will read it, no forward runs and it stays 0."""
    from policyforge.train.evaluate import encode_prompts
    from policyforge.train.logprobs import logprobs_in_chunks
    from policyforge.train.step import micro_batches

    device = next(model.parameters()).device
    ids, attn = encode_prompts(tokenizer, [e.prompt for e in examples], device)
    seqs = [completion_tokens(tokenizer, text, ending, cfg.max_new_tokens) for text, ending in given]
    width = max(map(len, seqs))
    out = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1.0] * len(s) + [0.0] * (width - len(s)) for s in seqs], device=device)
    n = len(examples)
    batch = RolloutBatch(ids, attn, out, mask, torch.zeros_like(mask), torch.zeros(n, dtype=torch.bool, device=device),
                         torch.arange(n, device=device), list(examples), [text for text, _ in given], [source] * n,
                         temperature=torch.full((n,), float(cfg.temperature), device=device))
    if behaviour:
        chunks = micro_batches(batch, optim.micro_batch_size, optim.micro_batch_tokens)
        batch.behav_logp = logprobs_in_chunks(model, batch, cfg.temperature, chunks)["logp"]
    return batch
