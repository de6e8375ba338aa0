"""`policyforge collect`: RLEP's first phase. A seed policy (a checkpoint of an earlier RL run, or any model)
samples completions of the training prompts a run of these settings would train on, the run's reward checks
them, and those it accepts are written as the experience pool that data.replay_pool reads (data/replay.py).

RLEP kept only completions with a verified correct answer; "correct" here is what held-out accuracy counts
(rewards.score.is_correct: reward >= 1, or a dict reward's "correct" component), and a completion cut at the
budget is never kept, since replaying it would teach the policy to stop where the budget stopped it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from policyforge.data.replay import pool_lines, training_prompts
from policyforge.metrics.run_dir import write_atomic
from policyforge.rewards.batched import TrainerState, scoring
from policyforge.rewards.score import ids_for, is_correct, score_parts
from policyforge.rewards.spec import reward_model_alone
from policyforge.train.config import Config, ConfigError


def stop_endings(tokenizer, batch) -> list[str]:
    """Per row, the text after what the reward saw: the stop string (rollout.stop) that ended it, "" for a row
    the end token ended. A replayed row ends the same way (setup.completion_tokens)."""
    ids = batch.completion_ids * batch.completion_mask.long() + tokenizer.pad_token_id * (1 - batch.completion_mask.long())
    full = tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [f[len(c):] if f.startswith(c) else "" for f, c in zip(full, batch.completions)]


def collect(cfg: Config, out: str, samples: int = 8, positions: int | None = None, log=print) -> dict:
    """Write the pool file `out`: `samples` completions of each training prompt at data positions
    0..positions-1 (default: the train.steps x rollout.prompts_per_step a run of `cfg` trains on) sampled from
    model.path with cfg.rollout's settings, the accepted ones kept. Returns the collection's figures."""
    from policyforge.models.load import load_model, pick_device
    from policyforge.train.setup import build_data, check_prompt_lengths, check_reward_model_fits, rollout

    if samples < 1:
        raise ConfigError(f"collect --samples {samples}: at least 1 completion a prompt (RLEP's pool needs some)")
    if samples > 1 and cfg.rollout.temperature == 0:
        raise ConfigError(f"collect --samples {samples} at rollout.temperature 0: greedy decoding gives one completion "
                          f"{samples} times; give a temperature above 0 (RLEP sampled at 1.0) or --samples 1")
    if reward_model_alone(cfg.data):
        raise ConfigError("collect keeps the completions a verifier accepts, and data.reward_model alone has none (a "
                          "logit >= 1 means only what its scale means): give data.reward, a function whose 1 means "
                          "solved (or a dict reward with a 'correct' component)")
    positions = cfg.train.steps * cfg.rollout.prompts_per_step if positions is None else positions
    if positions < 1:
        raise ConfigError(f"collect --prompts {positions}: at least 1")
    target = Path(out)
    if target.is_dir() or not target.parent.is_dir():
        raise ConfigError(f"collect --out {out!r}: " + ("a directory; give a file name such as pool.jsonl"
                                                        if target.is_dir() else f"no directory {str(target.parent)!r}"))
    t0 = time.perf_counter()  # the model's loading counts: it is part of what collect takes
    source, _, reward = build_data(cfg.data, cfg.train.seed, log=log, device=pick_device(cfg.model.device),
                                   model_path=cfg.model.path, dtype=cfg.model.dtype)
    check_reward_model_fits(reward, source, [], cfg.rollout.max_new_tokens)
    examples = training_prompts(source, positions)
    model, tok = load_model(cfg.model.path, cfg.model.dtype, cfg.model.device, cfg.train.seed)
    check_prompt_lengths(model, tok, source, [], cfg.rollout.max_new_tokens)
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(cfg.train.seed)
    rc = replace(cfg.rollout, group_size=samples)
    log(f"collect: {samples} completion{'s' * (samples != 1)} of each of {len(examples)} training prompts (data "
        f"positions 0-{positions - 1}) from {cfg.model.path}, temperature {rc.temperature}; kept: those the reward "
        "accepts")
    lines, solved = [], 0
    chunk = max(1, cfg.rollout.prompts_per_step)
    bar = tqdm(total=len(examples), desc="collect", disable=not cfg.train.progress, dynamic_ncols=True)
    for start in range(0, len(examples), chunk):
        part = examples[start:start + chunk]
        batch = rollout(model, tok, part, rc, gen)
        with scoring(TrainerState.outside_a_run()):
            scores, comps, names = score_parts(reward, batch.examples, batch.completions, completion_ids=ids_for(
                reward, batch.completion_ids, batch.completion_mask))
        keep = (is_correct(scores.cpu(), None if comps is None else comps.cpu(), names) & ~batch.truncated.cpu())
        endings = stop_endings(tok, batch) if rc.stop else [""] * len(batch)
        for g, ex in enumerate(part):
            rows = [i for i in range(g * samples, (g + 1) * samples) if keep[i]]
            solved += bool(rows)
            lines += pool_lines(ex.prompt, [(batch.completions[i], endings[i]) for i in rows],
                                [float(scores[i]) for i in rows])
        bar.update(len(part))
        bar.set_postfix(kept=len(lines), solved=f"{solved / (start + len(part)):.0%}")
    bar.close()
    if not lines:  # an empty pool file would only fail the run that reads it
        raise ConfigError(f"collect: {cfg.model.path} solved none of the {len(examples)} prompts in "
                          f"{len(examples) * samples} samples, so there is no pool to write; collect from a policy "
                          "that solves some (a trained run's checkpoint: `policyforge collect RUN_DIR`), or give "
                          "more --samples")
    write_atomic(target, "".join(lines))
    figures = {"prompts": len(examples), "prompts_with_completions": solved, "completions": len(lines),
               "sampled": len(examples) * samples, "seconds": round(time.perf_counter() - t0, 1)}
    log(f"collect: wrote {out}: {figures['completions']} of {figures['sampled']} completions kept; "
        f"{solved} of {len(examples)} prompts have one or more ({figures['seconds']:.0f} s). Train with "
        f"--data.replay-pool {out}")
    return figures
