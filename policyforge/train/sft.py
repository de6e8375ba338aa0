"""`policyforge sft`: teacher-forced fine-tuning on task solutions (the RL warm start).

The loss is the mean cross-entropy of the solution tokens and EOS; the prompt is
context only. The result is saved with save_pretrained, loadable by any HF tool.
"""

from __future__ import annotations

import math
import os
import random
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from policyforge.data.tasks import Example, distractor
from policyforge.data.user import DataError
from policyforge.metrics.run_dir import fsync_path
from policyforge.models.load import check_model_path, eval_mode, load_model, pick_device
from policyforge.rewards.batched import TrainerState, scoring
from policyforge.rollout.sampler import position_ids
from policyforge.train.checkpoint import fsync_tree, save_model_dir
from policyforge.train.config import Config, ConfigError
from policyforge.train.evaluate import evaluate_run, result_text
from policyforge.train.setup import (adamw, build_data, check_prompt_lengths, check_reward_model_fits, check_reward_on,
                                    with_lora, writable_dir)
from policyforge.train.validate import validate


def sft_batch(tokenizer, examples, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, loss mask) for prompt + solution + EOS, left-padded; loss on the completion only."""
    rows, lossmask = [], []
    for ex in examples:
        p = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(ex.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(p + c)
        lossmask.append([0] * len(p) + [1] * len(c))
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    attn = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    lm = torch.tensor([[0] * (width - len(r)) + m for r, m in zip(rows, lossmask)], device=device, dtype=torch.float32)
    return ids, attn, lm


def sft_nll(model, ids: torch.Tensor, attn: torch.Tensor, lm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, token count) of the tokens where the loss mask `lm` is 1, each predicted from the
    tokens before it (the logits at position j predict token j + 1, so the mask of the predicted token,
    lm[:, 1:], weighs them)."""
    logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn)).logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    return (nll * lm[:, 1:]).sum(), lm[:, 1:].sum()


def sft_loss(model, ids: torch.Tensor, attn: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the solution tokens and EOS (see sft_nll)."""
    total, count = sft_nll(model, ids, attn, lm)
    return total / count


@torch.no_grad()
def held_out_loss(model, tokenizer, examples, batch_size: int = 64) -> float | None:
    """Mean cross-entropy per solution token (and EOS) over the held-out rows that have a solution, in eval
    mode; None when none has one. Token-weighted across batches, so the batch size does not change it."""
    rows = [ex for ex in examples if ex.solution is not None]
    if not rows:
        return None
    device = next(model.parameters()).device
    total = count = 0.0
    with eval_mode(model):
        for i in range(0, len(rows), batch_size):
            s, n = sft_nll(model, *sft_batch(tokenizer, rows[i : i + batch_size], device))
            total, count = total + float(s), count + float(n)
    return total / count


def weak_teacher(ex: Example, task: str, noise: float, rng: random.Random) -> Example:
    """With probability `noise`, the demonstration of a built-in task is its typical mistake."""
    if rng.random() >= noise:
        return ex
    return replace(ex, solution=distractor(task, ex.prompt, ex.solution))


def check_out_dir(out: Path) -> None:
    """sft.out is replaced by the fine-tuned model: refuse a path that would lose something else."""
    if not out.name or out.name in (".", ".."):
        raise ConfigError(f"sft.out {str(out)!r}: give a directory name for the model, e.g. checkpoints/my-sft")
    saved = out.is_dir() and any((out / f).exists() for f in ("config.json", "adapter_config.json"))
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not saved)):
        raise ConfigError(f"sft.out {str(out)!r} exists and is not a saved model (no config.json): "
                          "it would be replaced, so choose a new directory")
    writable_dir(out.parent, "sft.out")  # now, not after the whole fine-tuning


def sft(cfg: Config, log=print) -> Path:
    from policyforge.rewards.spec import reward_spec

    cfg.data.reward = reward_spec(cfg.data.reward)  # from Python, a function is recorded by its name
    validate(cfg, "sft")
    check_out_dir(Path(cfg.sft.out))
    check_model_path(cfg.model.path)
    if cfg.data.path and not cfg.data.solution_column:  # before the data is read
        raise DataError("sft needs reference solutions: set data.solution_column for your dataset")
    # no data.reward on a data file is fine: the held-out solutions' loss still says how it went
    source, held_out, reward = build_data(cfg.data, cfg.train.seed, log=log, needs_reward=False,
                                          device=pick_device(cfg.model.device), model_path=cfg.model.path,
                                          dtype=cfg.model.dtype)
    if cfg.sft.noise and cfg.data.path:
        raise DataError("sft.noise applies to the built-in tasks only (data.path is set)")
    if cfg.sft.noise and cfg.data.chat_template == "on":  # the typical mistake is read off the plain prompt
        raise DataError("sft.noise needs the built-in tasks' plain prompts: set data.chat_template to auto or off")
    if reward is not None:
        check_reward_model_fits(reward, source, held_out, cfg.rollout.max_new_tokens)  # its final evaluation
        check_reward_on(reward, source.train_example(0), model_path=cfg.model.path,  # fails now, not after training
                        state=TrainerState.outside_a_run())
    torch.manual_seed(cfg.train.seed)
    model, tok = load_model(cfg.model.path, cfg.model.dtype, cfg.model.device, cfg.train.seed)
    check_prompt_lengths(model, tok, source, held_out, cfg.rollout.max_new_tokens)  # its final evaluation samples
    model = with_lora(model, cfg.model, log)  # model.lora_rank > 0: only adapters train, and sft.out holds them
    device = next(model.parameters()).device
    s = cfg.sft
    opt = adamw([p for p in model.parameters() if p.requires_grad], lr=s.lr, weight_decay=0.0)
    cosine = lambda i: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i / max(s.steps, 1), 1.0)))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    model.train()
    bar = tqdm(range(s.steps), desc="SFT", dynamic_ncols=True, disable=not cfg.train.progress)
    noise_rng = random.Random(cfg.train.seed)
    for i in bar:
        examples = [source.train_example(i * s.batch_size + j) for j in range(s.batch_size)]
        if s.noise > 0:
            examples = [weak_teacher(ex, ex.extra.get("task", cfg.data.task).split(":")[0], s.noise, noise_rng)
                        for ex in examples]  # a mixture's row names its own task
        loss = sft_loss(model, *sft_batch(tok, examples, device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    out = Path(s.out)
    save_sft_model(out, model, tok)  # before evaluating: an error there must not lose the trained model
    log(f"saved {out}: {sft_result_text(model, tok, held_out, reward, cfg)}")
    return out


def sft_result_text(model, tok, held_out, reward, cfg: Config) -> str:
    """The held-out solutions' loss and, with a reward, the sampled accuracy (and pass@k) in words."""
    loss = held_out_loss(model, tok, held_out, cfg.sft.batch_size)  # the batch size the user's memory allows
    parts = [] if loss is None else [f"held-out solution loss {loss:.3f} nats/token"]
    if reward is not None:
        with scoring(TrainerState.outside_a_run()):  # a TRL-form reward: no RL run; log_metric's dropped
            parts.append(result_text(evaluate_run(model, tok, held_out, reward, cfg), cfg.train.pass_k, ".1%"))
    elif held_out:
        parts.append("no accuracy (no data.reward)")
    return ", ".join(parts) or "no held-out prompts"


def save_sft_model(out: Path, model, tok) -> None:
    """Write the model to `out` whole, then rename: never a half-saved model, and at every moment either
    the previous model or the new one is whole on disk (the previous one moves aside before the swap)."""
    tmp, old = out.with_name(out.name + ".tmp"), out.with_name(out.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_dir(tmp, model, tok)
    fsync_tree(tmp)  # on disk before the renames, so that holds after a power loss too
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    fsync_path(out.absolute().parent)
    shutil.rmtree(old, ignore_errors=True)
