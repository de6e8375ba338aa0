"""Held-out evaluation: greedy accuracy and pass@k; which run a model folder belongs to, and whether
`policyforge eval`'s held-out rows are still that run's."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from policyforge.data.tasks import DataError, Example, task_parts
from policyforge.metrics.rollouts import shortened
from policyforge.models.load import eval_mode
from policyforge.rewards.batched import TrainerState, logged_extras, unlogged
from policyforge.rewards.score import RewardFn, ids_for, score_parts
from policyforge.rollout.sampler import SamplingSettings, StopText, cut_at_stop, sample, stop_token_ids
from policyforge.train import checkpoint
from policyforge.train.config import ConfigError, DataConfig


def encode_prompts(tokenizer, prompts: Sequence[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids (B, P) and mask (B, P), whatever the tokenizer's padding side.

    A prompt that encodes to no tokens (an empty string) starts from the tokenizer's BOS token
    (as Hugging Face generate does), the one token the model can condition on; DataError when
    the tokenizer has no BOS.
    """
    seqs = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    for i, seq in enumerate(seqs):
        if not seq:
            if tokenizer.bos_token_id is None:
                raise DataError(f"prompt {i} ({prompts[i]!r}) encodes to no tokens and the tokenizer has no BOS "
                                "token to start it from: give every row a non-empty prompt")
            seqs[i] = [tokenizer.bos_token_id]
    width = max(map(len, seqs), default=0)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(q)) + q for q in seqs], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in seqs], dtype=torch.long)
    return ids.reshape(len(seqs), width).to(device), mask.reshape(len(seqs), width).to(device)


def stop_matchers(tokenizer, stop: Sequence[str]) -> dict:
    """sample()'s keyword arguments for the stop strings `stop`: their token sequences and text matcher."""
    stop = tuple(s for s in stop if s)
    return {"stop_ids": stop_token_ids(tokenizer, stop), "stop_text": StopText(tokenizer, stop) if stop else None}


def end_token_ids(model, tokenizer) -> list[int]:
    """The tokens that end a completion: the tokenizer's EOS and every id the model's generation config
    lists (instruct models often end turns with a second one, e.g. Qwen2.5's <|im_end|> and <|endoftext|>)."""
    ids = [tokenizer.eos_token_id]
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += [extra] if isinstance(extra, int) else list(extra or [])
    return list(dict.fromkeys(i for i in ids if i is not None))


def generate_text(model, tokenizer, prompts: Sequence[str], settings: SamplingSettings, generator=None, group=None):
    """(prompt ids, prompt mask, completion ids, mask, sampler log-probs, decoded texts) for `prompts`.

    `group` (B,) marks rows that repeat one prompt, so it is encoded once (see sampler.sample).
    A completion ends at EOS or once a stop string appears in its text; the mask keeps the
    tokens up to the one that completes it, and the text (what rewards see) ends before it.
    Sampling runs in eval mode (no dropout), whatever mode training left the model in, which
    is restored after, also when sampling raises.
    """
    device = next(model.parameters()).device
    ids, attn = encode_prompts(tokenizer, prompts, device)
    with eval_mode(model):
        out, mask, logp = sample(model, ids, attn, settings, end_token_ids(model, tokenizer), tokenizer.pad_token_id,
                                 generator, group=group, **stop_matchers(tokenizer, settings.stop))
    texts = tokenizer.batch_decode(out * mask.long() + tokenizer.pad_token_id * (1 - mask.long()), skip_special_tokens=True)
    if settings.stop:
        texts = [cut_at_stop(t, settings.stop) for t in texts]
    return ids, attn, out, mask, logp, texts


@torch.no_grad()
def evaluate(model, tokenizer, examples: Sequence[Example], reward: RewardFn, *, max_new_tokens: int, pass_k: int,
             temperature: float, batch_size: int = 256, seed: int = 0, stop: tuple[str, ...] = ()) -> dict:
    """{'accuracy': greedy solve rate, 'reward_mean' and 'completion_len_mean' (tokens, EOS counted) of the greedy
    answers, 'pass@k': any of k samples solved (when pass_k > 0), 'samples': [...]}.

    "Solved" is rewards.score.is_correct: reward >= 1, or a dict reward's "correct" component >= 1.
    `stop` is rollout.stop: completions end at a stop string as training rollouts do, so both are
    scored on the same text. With no examples (a one-row dataset holds none out) every figure is
    None: nothing was measured, which 0.0 would hide.
    """
    correct, passed, samples, reward_sum, length_sum = 0.0, 0.0, [], 0.0, 0.0
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for start in range(0, len(examples), batch_size):
        chunk = list(examples[start : start + batch_size])
        prompts = [e.prompt for e in chunk]
        _, _, out, mask, _, greedy = generate_text(model, tokenizer, prompts,
                                                   SamplingSettings(max_new_tokens, temperature=0.0, stop=stop))
        scored = score_parts(reward, chunk, greedy, completion_ids=ids_for(reward, out, mask))  # as training's
        correct += float(scored.correct().sum())
        reward_sum, length_sum = reward_sum + float(scored.scores.sum()), length_sum + float(mask.sum())
        samples += [{"prompt": e.prompt, "completion": c, "reward": float(x), "correct": bool(ok)}
                    for e, c, x, ok in zip(chunk, greedy, scored.scores, scored.correct())]
        if pass_k > 0:
            rep = [e for e in chunk for _ in range(pass_k)]
            group = torch.arange(len(chunk), device=gen.device).repeat_interleave(pass_k)
            _, _, out, mask, _, texts = generate_text(model, tokenizer, [e.prompt for e in rep],
                                                      SamplingSettings(max_new_tokens, temperature=temperature,
                                                                       stop=stop), gen, group)
            with unlogged():  # reward_fn/* describes the greedy answers, as accuracy does
                solved = score_parts(reward, rep, texts, completion_ids=ids_for(reward, out, mask))
            passed += float(solved.correct().view(len(chunk), pass_k).any(-1).sum())
    n = len(examples)
    for row, extra in zip(samples, logged_extras(n)):  # TRL-form rewards' log_extra columns
        row.update({"extra": extra} if extra else {})
    res = {"accuracy": correct / n if n else None, "reward_mean": reward_sum / n if n else None,
           "completion_len_mean": length_sum / n if n else None, "samples": samples}  # of the greedy answers
    if pass_k > 0:  # pass_k 0 skips it: no "pass@0" figure
        res[f"pass@{pass_k}"] = passed / n if n else None
    return res


def result_text(res: dict, pass_k: int, number: str = ".3f") -> str:
    """One evaluation in words, numbers in the format `number`; accuracy None means no held-out prompts."""
    if res["accuracy"] is None:
        return "no held-out prompts"
    text = f"held-out accuracy {res['accuracy']:{number}}"
    key = f"pass@{pass_k}"
    return text + (f", {key} {res[key]:{number}}" if key in res else "")


def example_text(sample: dict | None, width: int = 40) -> str:
    """'; e.g. PROMPT -> ANSWER (reward R)' for an evaluation's line: the first held-out row's greedy answer, the
    same row at every evaluation of a run, so its answer shows the policy change; "" without one."""
    if sample is None:
        return ""
    prompt, answer = shortened(sample["prompt"], width, keep_end=True), shortened(sample["completion"], width)
    return f"; e.g. {prompt!r} -> {answer!r} (reward {sample['reward']:.3g})"


def evaluate_run(model, tokenizer, examples: Sequence[Example], reward: RewardFn, cfg) -> dict:
    """`evaluate` with a run's settings (a train.config.Config): its budget, pass@k, temperature, seed and
    stop strings, so train, sft and eval score the same way."""
    r = cfg.rollout
    return evaluate(model, tokenizer, examples, reward, max_new_tokens=r.max_new_tokens, pass_k=cfg.train.pass_k,
                    temperature=r.temperature, seed=cfg.train.seed, stop=tuple(r.stop))


def trainer_state(cfg, rl_steps: int) -> TrainerState:
    """The `trainer_state` a TRL-form reward function sees once `rl_steps` RL steps of a run configured with
    `cfg` are done: global_step and max_steps in optimiser steps, optim.updates_per_batch per RL step (see
    rewards/batched.py). Training step s scores with trainer_state(cfg, s - 1); an evaluation after s steps
    with trainer_state(cfg, s)."""
    return TrainerState.after(rl_steps, cfg.train.steps, cfg.optim.updates_per_batch)


def run_of(model_path: str) -> tuple[Path, Path] | None:
    """(run directory, checkpoint folder) when `model_path` is a run directory (one with config.yaml and
    checkpoints/: its newest complete checkpoint), one of its checkpoints (RUN/checkpoints/step_<N>) or its
    checkpoints/latest pointer; None for anything else (a model folder, a Hub name, builtin:tiny)."""
    path = Path(model_path)
    if (path / "config.yaml").is_file() and (path / "checkpoints").is_dir():
        run = path
    elif path.parent.name == "checkpoints" and (path.parent.parent / "config.yaml").is_file():
        run = path.parent.parent
        if path.is_dir() and checkpoint.step_of(path) is not None:
            return run, path
        if not (path.name == "latest" and path.is_file()):
            return None  # a step_<N>.tmp being written, or another folder put there
    else:
        return None
    try:
        return run, checkpoint.latest(run)
    except FileNotFoundError:  # its words are resume's
        raise ConfigError(f"run {str(run)!r} has no complete checkpoint yet (checkpoints/ holds no step_<N> "
                          "folder): evaluate it once it has saved one (train.save_every)") from None


def _held_out_source(data: DataConfig) -> tuple:
    """Where the held-out rows come from: a file (data.eval_path, else data.path), or a built-in task at a size."""
    file = data.eval_path or data.path
    if file:
        return "file", os.path.realpath(file)
    try:  # each part as (task, size): "reversal" and "reversal:8" hold out the same problems
        return "task", tuple((name, size) for _, name, size in task_parts(data.task, data.task_size))
    except DataError:  # an unknown name fails in build_data
        return "task", ((data.task, data.task_size),)


def split_changes(run: DataConfig, now: DataConfig) -> list[str]:
    """The settings ("data.eval_size 4 -> 8") by which `now`'s held-out rows differ from those of the run
    configured with `run` so that they may include rows the run trained on; empty when they are the run's
    held-out rows or some of them. Relative paths are read in the current directory (the run's start one).

    How the split is made (data/tasks.py, train/setup.py): a built-in task's held-out problems are the first
    data.eval_size it draws from (task, task_size) alone, and training skips them; a file's are the first
    data.eval_size rows of data.eval_path, or without it of data.path (at most half of it). train.seed draws
    only training problems and the rows' order, so it moves no row across. A smaller eval_size keeps some of
    the run's held-out rows, a larger one adds rows the run may have trained on, and another file or task size
    may hold training rows; another built-in task shares no prompt with the run's (each has its own prefix).
    """
    keys = ("path", "eval_path", "task", "task_size", "eval_size")
    was, now_src = _held_out_source(run), _held_out_source(now)
    other_tasks = was[0] == now_src[0] == "task" and not {n for n, _ in was[1]} & {n for n, _ in now_src[1]}
    if was != now_src and not other_tasks:
        changed = [k for k in keys if getattr(run, k) != getattr(now, k)]
    elif was == now_src and now.eval_size > run.eval_size:
        changed = ["eval_size"]
    else:
        return []
    return [f"data.{k} {getattr(run, k)!r} -> {getattr(now, k)!r}" for k in changed]
