"""The RL loop: sample groups, score, compute advantages, update, record.

Read top to bottom; set-up lives in setup.py, the update in step.py, the math in
policyforge/algos.

Departures from the papers (GRPO as in DeepSeekMath, PPO-clip, DAPO):
- Log-probs are taken at the sampling temperature (logits / T), as TRL and verl do;
  GRPO's paper does not say. With T = 1 the two agree.
- With one update per batch, the old log-probs are the current ones detached (the
  ratio is exactly 1, so PPO-clip reduces to REINFORCE with the group advantage);
  with several, they are recomputed by one no-grad forward before the updates.
- The KL to the reference is a loss term (GRPO's form), not a reward penalty; which
  estimator (k1, k2, k3) is a config choice. KL is also *logged* every step by
  default (train.track_ref_kl) even when it is not in the loss.
- Held-out "accuracy" is the greedy-decoding rate of reward >= 1 (of the "correct"
  component for dict rewards); pass@k samples k completions at the rollout temperature.
- Groups whose rewards are all equal stay in the batch with zero advantage (GRPO), unless
  rollout.dynamic_sampling drops them and samples more prompts (DAPO; train/sampling.py).
- RLEP (data.replay_pool): a prompt with fewer pooled completions replays all it has (RLEP pads);
  reward, accuracy and lengths are the fresh rows' (RLEP's logs count replayed rows); dynamic
  sampling tests a group with its replayed rows. GHPO (rollout.hints): train/hints.py.
- DAPO's soft overlong punishment (algo.overlong_buffer) is added to the training reward
  after scoring, so the advantages, reward_mean and the zero-variance count see it; accuracy
  (training and held-out) is decided on the reward without it, and evaluation never adds it.
- Under torchrun each process samples its share of the prompts and trains on its own rows;
  advantages, counts and records are the gathered batch's, so the step is the one-process
  step of that batch (train/distributed.py).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from tqdm import tqdm

from policyforge.data.curriculum import DistributionStream, accuracy_by_distribution, distribution_column
from policyforge.data.user import DataError
from policyforge.metrics.rollouts import rollout_records
from policyforge.metrics.run_dir import LOG_FILES, RunDir
from policyforge.metrics.step_record import advantage_figures, bar_fields, step_record
from policyforge.metrics.tensorboard import TensorBoardLog
from policyforge.models.load import (ModelError, check_model_path, check_same_tokens, disable_dropout, load_model,
                                     pick_device)
from policyforge.rewards.batched import scoring
from policyforge.rewards.score import RewardError
from policyforge.rewards.spec import reward_model_paths, reward_spec
from policyforge.rollout.batch import RolloutBatch
from policyforge.train import checkpoint, distributed, drift_control, notes
from policyforge.train.algorithm import (Algorithm, check_length_options, check_reward_model_weight, check_reward_weights,
                                         resolve)
from policyforge.train.budget import Budget, allocation_notes, check_allocation
from policyforge.train.config import Config, ConfigError, load_yaml, to_yaml
from policyforge.train.distributed import World
from policyforge.train.evaluate import evaluate_run, example_text, result_text, trainer_state
from policyforge.train.logprobs import logprobs_in_chunks, reference_logprobs
from policyforge.train.parts import StepParts
from policyforge.train.phases import Phases
from policyforge.train.preempt import Preempted, StopRequest
from policyforge.train.resume import (changed_inputs, check_fresh, check_resume_settings, claim, discard_unstarted,
                                     in_start_dir, release, resume_command, saved_config, stopped_text)
from policyforge.train.hints import check_hinted_prompts, check_hints
from policyforge.train.hindsight import check_rubric
from policyforge.train.refine import check_refine_prompts, check_refinements
from policyforge.train.replay import check_coverage, check_replay, load_pool
from policyforge.train.sampling import check_dynamic_sampling, dynamic_sampling_notes, refilled, scored_rollout
from policyforge.train.setup import (build_data, build_optimizer, check_prompt_lengths, check_reward_model_fits,
                                    check_reward_on, probe_rows, reference_policy, new_run_dir, with_lora,
                                    writable_dir)
from policyforge.train.step import (BatchTensors, NonFiniteUpdate, compute_advantages, micro_batches, reference_inputs,
                                    update)
from policyforge.train.validate import validate


SAMPLER_SEED_STRIDE = 1_000_003  # process r of a data-parallel run samples from seed + r * this


def train(cfg: Config, resume: str | None = None, log=print) -> Path:
    """Run RL post-training as `cfg` says; returns the run directory. A resume runs in the directory the
    run was started in (see resume.in_start_dir). Under torchrun, each process runs this (distributed.py).
    From Python, data.reward may also be a function (or a list of them): it is recorded by its name."""
    cfg.data.reward = reward_spec(cfg.data.reward)
    for note in notes.script_reward(cfg.data.reward) if resume is None else []:
        log(note)
    validate(cfg)
    world = distributed.start(cfg.model.device, cfg.rollout.prompts_per_step)
    try:
        if resume is None:
            return train_run(cfg, None, log if world.main else quiet, world)
        with in_start_dir(Path(resume), log if world.main else quiet) as run_path:
            return train_run(cfg, str(run_path), log if world.main else quiet, world)
    finally:
        distributed.stop(world)


def quiet(*_, **__) -> None:
    """The log of the processes other than the first: one voice per run."""


def train_run(cfg: Config, resume: str | None, log, world: World) -> Path:
    with world.all_or_none():  # every process ready before the first writes; a failed start writes nothing
        # 1. Everything a user can get wrong is checked before any model is loaded.
        if resume:  # first: a changed setting is named before the data or the reward is tried
            check_resume_settings(Path(resume), cfg)
        algo = resolve(cfg.algo, log)
        drift_control.check_algorithm(cfg.algo, algo)
        check_length_options(cfg.algo, algo)
        check_dynamic_sampling(cfg.rollout, algo)
        check_replay(cfg.data, algo)
        check_reward_weights(algo, cfg.data.reward_weights)
        check_reward_model_weight(algo, cfg.data.reward_model_weight if cfg.data.reward_model else None)
        if world.size > 1:
            distributed.check_algorithm(algo)
        check_model_path(cfg.model.path)
        for note in notes.borrowed_checkpoint(cfg.model.path) if not resume else []:
            log(note)
        if cfg.model.ref_path:
            try:
                check_model_path(cfg.model.ref_path)
            except ModelError as e:  # say which option: model.path's own error reads "model path ..."
                raise ModelError(f"model.ref_path: {e}") from None
        source, held_out, reward = build_data(cfg.data, cfg.train.seed, log=log, device=pick_device(world.device),
                                              model_path=cfg.model.path, dtype=cfg.model.dtype)
        check_reward_model_fits(reward, source, held_out, cfg.rollout.max_new_tokens)
        check_hints(cfg, algo, source, reward)  # GHPO's
        check_allocation(cfg, algo, reward)  # Knapsack RL's
        check_refinements(cfg, algo, source, reward)  # Critique-GRPO's
        pool = load_pool(cfg.data)  # RLEP's replay
        rounds = cfg.rollout.max_sampling_rounds if cfg.rollout.dynamic_sampling != "off" else 1
        start_notes = (notes.few_rows(source, cfg.rollout.prompts_per_step, rounds) + notes.repeated_prompts(source)
                       + notes.trl_overlong(reward, cfg.rollout.max_new_tokens, cfg.algo.overlong_buffer)
                       + dynamic_sampling_notes(cfg) + allocation_notes(cfg, source))
        for note in start_notes:
            log(note)
        algo.check_reward_components(check_reward_on(reward, source.train_example(0), held_out, cfg.model.path,
                                                     state=trainer_state(cfg, 0)))
        rubric = check_rubric(cfg.rollout, reward, source.train_example(0))  # HeRL's rubric: a reward's components
        if algo.teacher_forced() and source.train_example(0).solution is None:  # else it fails after the model loads
            raise DataError(f"algo.loss={cfg.algo.loss!r} trains on reference solutions, but the data has none: "
                            "set data.solution_column")

        path = Path(resume) if resume else new_run_dir(cfg)
        if not resume and world.main:  # the others would race the first one's writes
            check_fresh(path)
            writable_dir(path.parent, "train.out_dir")  # before the model loads, not at the first record
        log(f"policyforge train: run directory {path}"
            + (f" ({world.size} processes, data-parallel)" if world.size > 1 else "")
            + f"\n--- config ---\n{to_yaml(cfg)}--------------")

        # 2. Models, optimiser, random state.
        torch.manual_seed(cfg.train.seed)  # the same on every process: LoRA adapters start alike everywhere
        model, tok = load_model(cfg.model.path, cfg.model.dtype, world.device, cfg.train.seed)
        check_prompt_lengths(model, tok, source, held_out, cfg.rollout.max_new_tokens)  # before anything is written
        check_hinted_prompts(model, tok, source, cfg)  # with rollout.hints, the hinted prompts too
        check_refine_prompts(model, tok, source, cfg, rubric)  # with rollout.refinements, the refinement prompts
        check_coverage(pool, tok, source, cfg, log)  # with data.replay_pool, what it can replay
        uses_ref = algo.uses_reference() or cfg.train.track_ref_kl
        ref_model = None  # a model.ref_path model, checked before anything is written too
        if uses_ref and cfg.model.ref_path:
            ref_model, ref_tok = load_model(cfg.model.ref_path, cfg.model.dtype, world.device)
            check_same_tokens(tok, ref_tok, cfg.model.ref_path)
            if cfg.algo.ref_sync_every:
                drift_control.check_same_shapes(ref_model, model)
        if cfg.model.disable_dropout and disable_dropout(model):  # before LoRA wraps it: model.lora_dropout stays
            log("model.disable_dropout: the model's dropout is off for RL (checkpoints such as GPT-2 and OPT ship with "
                "0.1)")
        model = with_lora(model, cfg.model, log)  # model.lora_rank > 0: only the adapters train (a bad target fails here)
        if world.size > 1:  # the weights started alike everywhere; dropout masks should not be alike
            torch.manual_seed(cfg.train.seed + SAMPLER_SEED_STRIDE * world.rank)
    run = RunDir(path) if world.main else RunDir.silent(path)
    with world.all_or_none():  # a run directory in use stops every process
        if world.main:
            claim(run.path, fresh=not resume)  # released when the run ends, however it ends
    try:
        return run_steps(cfg, resume, log, world, algo, run, (source, held_out, reward, pool), model, tok, ref_model,
                         uses_ref)
    except BaseException:
        if world.main and not resume:
            discard_unstarted(run.path)  # a run that failed before its first record leaves no config.yaml behind
        raise
    finally:
        if world.main:
            release(run.path)


def run_steps(cfg: Config, resume: str | None, log, world: World, algo: Algorithm, run: RunDir, data: tuple,
              model, tok, ref_model, uses_ref: bool) -> Path:
    source, held_out, reward, pool = data
    curriculum = source if isinstance(source, DistributionStream) else None  # data.curriculum dump
    budget = Budget(cfg.rollout) if cfg.rollout.allocation == "knapsack" else None
    if not resume:  # a resumed run's config is saved once its checkpoint has loaded (section 3)
        run.write_text("config.yaml", saved_config(cfg))
    for note in algo.notes(cfg.rollout.top_p, cfg.rollout.top_k):
        log(note)
    device = next(model.parameters()).device
    # the reference policy (also kdrl's teacher): model.ref_path's model, else the initial policy (after its
    # dropout is off): a frozen copy, or for a LoRA policy the policy itself with its adapters off
    ref = reference_policy(model, ref_model) if uses_ref else None
    rows = probe_rows(source) + list(held_out)
    for note in (notes.reference_copy(ref, model, needed=algo.uses_reference()) + notes.lossy_tokenizer(tok, rows)
                 + notes.turn_end(model, tok, rows, cfg.rollout.stop)):
        log(note)
    controls = drift_control.build(cfg.algo, model, ref)  # reference sync, Elastic Reset: after each step
    optimizer, scheduler = build_optimizer(model, cfg)
    if "elastic_reset" in controls:  # its EMA follows every optimiser step (torch's own hook, not the loop's)
        optimizer.register_step_post_hook(lambda *_: controls["elastic_reset"].update_ema())
    # each process samples its own completions: its own stream (process 0's is the one-process stream)
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed + SAMPLER_SEED_STRIDE * world.rank)
    base_weights = checkpoint.weights_fingerprint(cfg.model.path)  # a resume warns when model.path was replaced
    base_content = checkpoint.weights_sample(cfg.model.path)  # and knows a moved base's copy from another model
    reward_weights = {p: checkpoint.weights_fingerprint(p) for p in reward_model_paths(cfg.data.reward_model)}
    data_files = checkpoint.data_fingerprint(cfg.data)  # ... or when the data files' contents changed
    n_prompts = cfg.rollout.prompts_per_step

    board = None  # TensorBoard events beside the .jsonl records when asked (train.tensorboard); opened below

    def record_to(name: str, record: dict) -> None:
        run.append(name, record)
        if board is not None:
            board.add(record, "eval" if name == "eval.jsonl" else "train")

    def run_eval(step: int) -> tuple[dict, dict | None]:  # eval.jsonl's record, and the first greedy answer
        share = world.share(held_out)  # data-parallel: each process evaluates its share of the rows
        with scoring(trainer_state(cfg, step)) as logged:  # TRL's trainer_state and log_metric (rewards/batched.py)
            try:
                res = world.merge_evaluations(evaluate_run(model, tok, share, reward, cfg), len(share))
            except RewardError as e:  # say which scoring failed: the start-up check passed on one row
                raise RewardError(f"held-out evaluation at step {step}: {e}") from e.__cause__
        record = {"step": step, **{k: v for k, v in res.items() if k != "samples"}, **world.logged_means(logged)}
        if distribution_column(cfg.data):  # accuracy/<distribution> beside the overall figure
            record.update(accuracy_by_distribution(held_out, [s["correct"] for s in res["samples"]],
                                                   distribution_column(cfg.data)))
        record_to("eval.jsonl", record)
        for s in res["samples"][: cfg.train.log_samples]:
            run.append("samples.jsonl", {"step": step, **s})
        return record, next(iter(res["samples"]), None)

    # 3. Start fresh (evaluating the starting point) or continue a checkpoint exactly.
    if resume:
        ckpt = checkpoint.latest(run.path)
        state = checkpoint.load_trainer_state(ckpt)
        saved_world = len(state.get("rng_by_rank", [None]))
        if saved_world != world.size:  # each process's sampler stream and share of the prompts would change
            raise ConfigError(f"the checkpoint {ckpt.name} was written by a run of {saved_world} process(es); resume "
                              f"it with {saved_world} (torchrun --nproc-per-node {saved_world}, or --ray-workers "
                              f"{saved_world}), not {world.size}; or start a new run from its weights in "
                              f"{world.size}: --model.path {ckpt}")
        moved_from = load_yaml(run.path / "config.yaml").model.path  # the base's old place, if it moved
        for warning in changed_inputs(state, cfg, {"base_weights": base_weights, "base_content": base_content,
                                                   "reward_models": reward_weights,
                                                   "data_files": data_files,
                                                   "moved_from": moved_from if moved_from != cfg.model.path else None}):
            log(warning)
        checkpoint.load_weights(model, ckpt)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        checkpoint.set_rng_state(state.get("rng_by_rank", [state["rng"]])[world.rank], gen)
        algo.load_state_dict(state["algo"])
        for name, control in controls.items():
            control.load_state_dict(state["drift_control"][name])
        for name, part in (("curriculum", curriculum), ("budget", budget)):  # DUMP's, Knapsack RL's state
            if part is not None:
                part.load_state_dict(state[name])
        run.write_text("config.yaml", saved_config(cfg))  # only now: a resume that failed to load keeps the saved config
        start, data_pos, wall0, acc0 = state["step"], state["data_position"], state["wall_seconds"], state["acc_start"]
        for name in LOG_FILES:  # drop what came after the checkpoint
            run.truncate(name, lambda r: r["step"] <= start)
        log(f"resumed from {ckpt} at step {start}" + (f"; the run was finished (train.steps {start}): give --train.steps "
                                                      f"above {start} to train on" if start == cfg.train.steps else ""))
    else:
        start, data_pos, wall0 = 0, 0, 0.0
        log(f"evaluating the starting policy on {len(held_out)} held-out prompts")
        try:
            first_eval, _ = run_eval(0)
        except KeyboardInterrupt:  # the run directory goes with it (train's discard_unstarted): nothing to resume
            log("interrupted while evaluating the starting policy, before step 1: nothing was kept, start again")
            raise
        acc0 = first_eval["accuracy"]
    if cfg.train.tensorboard and world.main:  # a resume's new event file replaces the old files' events
        kept = ({"train": run.read("metrics.jsonl"), "eval": run.read("eval.jsonl")} if resume
                else {"eval": [first_eval]})
        board = TensorBoardLog(run.path, start if resume else None, kept)
    t_start = time.perf_counter() - wall0

    def save(step: int) -> None:
        if board is not None:
            board.flush()
        rngs = world.gather_objects(checkpoint.rng_state(gen))  # every process's, each resumes its own stream
        world.check_in_sync(model)
        if world.main:
            checkpoint.save(run.path, step, model, tok, {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rngs[0],
                "rng_by_rank": rngs, "algo": algo.state_dict(), "step": step, "data_position": data_pos,
                "drift_control": {name: control.state_dict() for name, control in controls.items()},
                "wall_seconds": time.perf_counter() - t_start, "acc_start": acc0, "base_weights": base_weights,
                "base_content": base_content,
                "data_files": data_files, "reward_models": reward_weights,
                **{name: part.state_dict() for name, part in (("curriculum", curriculum), ("budget", budget))
                   if part is not None},
            }, keep=cfg.train.keep_checkpoints)

    def next_prompts() -> list:  # the data's next prompts_per_step rows; data_pos is saved with each checkpoint
        nonlocal data_pos
        data_pos += n_prompts
        if curriculum is not None:  # DUMP: each prompt's distribution drawn by the curriculum's weights
            return curriculum.take(n_prompts, data_pos - n_prompts)
        return [source.train_example(data_pos - n_prompts + i) for i in range(n_prompts)]

    bar = tqdm(range(start + 1, cfg.train.steps + 1), initial=start, total=cfg.train.steps,
               disable=not (cfg.train.progress and world.main), desc="RL", dynamic_ncols=True)
    parts = StepParts(cfg, algo, model, tok, ref, optimizer, scheduler, gen, reward, world, pool, budget,
                      phase=Phases(bar, "RL"))  # a slow phase (a judge's scoring, say) named on the bar
    step, streaks = start, notes.Streaks(cfg.rollout.max_new_tokens, cfg.algo.mask_truncated,
                                         cfg.algo.advantage if algo.advantage.success_reward else None)
    stop = StopRequest()  # SIGTERM (a scheduler's preemption): stop after this step, with a checkpoint
    try:
        with stop.installed():
            for step in bar:
                drawn_with = curriculum.record() if curriculum is not None else {}  # the weights this step draws with
                record, batch = train_step(parts, step, next_prompts(), more=next_prompts)
                if curriculum is not None:
                    curriculum.observe(batch.examples, batch.advantages, batch.completion_mask,
                                       own=[src not in ("tempered", "replayed", "refined") for src in batch.source])
                record.update(drawn_with, **(budget.observe(batch) if budget is not None else {}))
                record.update({name: float(control.after_step(step)) for name, control in controls.items()})  # 1: acted
                record_to("metrics.jsonl", record)
                for line in rollout_records(step, batch, 0 if algo.teacher_forced() else cfg.train.log_rollouts):
                    run.append("rollouts.jsonl", line)
                for note in streaks.after(record, batch.scores) if world.main else []:
                    bar.write(note)
                bar.set_postfix(**bar_fields(record))
                last = step == cfg.train.steps
                preempted = world.any(stop.requested) and not last  # every process stops at the same step
                # a preempted run saves first: the scheduler's grace period is not spent on an evaluation
                if ((cfg.train.eval_every and step % cfg.train.eval_every == 0) or last) and not preempted:
                    with parts.phase(f"evaluating on {len(held_out)} held-out prompts"):
                        ev, example = run_eval(step)
                    if world.main:
                        bar.write(f"step {step}: {result_text(ev, cfg.train.pass_k, '.1%')}{example_text(example)}")
                stopping = preempted or (cfg.train.stop_after is not None and step >= cfg.train.stop_after)
                if step % cfg.train.save_every == 0 or last or stopping:
                    save(step)
                if stopping:
                    bar.update()  # this step is done: tqdm counts a step only when the next one begins
                    bar.close()
                    why = ("on SIGTERM (a scheduler taking the machine back, or `kill`); the checkpoint is kept" if
                           preempted else "as asked (train.stop_after)")
                    log(f"stopped after step {step} {why}: continue with {resume_command(run.path, world.size)}")
                    if preempted:
                        raise Preempted(f"stopped after step {step} on SIGTERM")
                    return run.path
        bar.close()
        if world.main:
            finish(cfg, run, acc0, t_start, log, world.started)
        return run.path
    except KeyboardInterrupt:
        bar.close()
        log(stopped_text(f"interrupted at step {step}", run.path, world.size))
        raise
    except (RewardError, DataError, NonFiniteUpdate):  # a reward, critic, row or update that fails mid-run: said below it
        bar.close()
        log(stopped_text(f"stopped at step {step} by the error below", run.path, world.size, "once it is mended, "))
        raise
    finally:
        if board is not None:
            board.close()


def finish(cfg: Config, run: RunDir, acc0, t_start: float, log, started: float | None = None) -> None:
    """summary.json and the closing lines (`started`: when this process began, model loading included)."""
    acc1 = run.read("eval.jsonl")[-1]["accuracy"]
    summary = {"eval_accuracy_start": acc0, "eval_accuracy_end": acc1, "steps": cfg.train.steps,
               "wall_seconds": round(time.perf_counter() - t_start, 2), "run_dir": str(run.path)}
    run.write_json("summary.json", summary)
    log(f"run directory: {run.path}")
    change = "no held-out prompts" if None in (acc0, acc1) else f"held-out accuracy: {acc0:.1%} -> {acc1:.1%}"
    whole = "" if started is None else (f"; {time.perf_counter() - started:.0f} s for this command, with loading and "
                                         "start-up checks")
    log(f"{change} in {cfg.train.steps} step{'s' * (cfg.train.steps != 1)}, {summary['wall_seconds']:.1f} s of "
        f"training{whole}")
    log(f"curves and drift warnings: policyforge report {shlex.quote(str(run.path))}")


def train_step(p: StepParts, step: int, examples: list,
               more: Callable[[], list] | None = None) -> tuple[dict, RolloutBatch]:
    """Sections 4-7 of the loop on one batch of prompts: rollout, score, advantages, update. With
    rollout.dynamic_sampling, `more()` gives the next prompts to sample when groups were dropped.

    Returns the step's metrics record and its scored rollout batch (the global batch, data-parallel).
    """
    t0, p.reward_s = time.perf_counter(), 0.0
    # 4. Rollout: a group of completions for each prompt, then rewards (train/sampling.py).
    batch, rows, logged = first = scored_rollout(p, step, examples)
    figures = {}
    if p.cfg.rollout.dynamic_sampling != "off":  # DAPO: drop groups that scored alike, sample more prompts
        batch, rows, logged, figures = refilled(p, step, first, more)
    t_rollout = time.perf_counter() - t0
    # log_metric's means (reward_fn/<name>) and an ensemble's reward_model/* over every scoring of the step
    with p.phase("updating the policy"):
        record = {**learn(p, step, batch, rows), **figures, **p.world.logged_means(logged)}
    seconds = time.perf_counter() - t0
    return {**record, "step_s": seconds, "tokens_per_s": record["completion_tokens"] / seconds, "rollout_s": t_rollout,
            "reward_s": p.reward_s, "update_s": seconds - t_rollout}, batch


def learn(p: StepParts, step: int, batch: RolloutBatch, rows: Tensor) -> dict:
    """Sections 5-7 on a scored batch: the step's record, but for its timings. Data-parallel, `batch` is the
    global batch, the same on every process, and `rows` are the rows this process forwards and trains on."""
    algo, rc, o, world = p.algo, p.cfg.rollout, p.cfg.optim, p.world
    # 5. Old and reference log-probs (each process forwards its own rows), then advantages, fixed for the
    # whole batch.
    chunks = micro_batches(batch if world.size == 1 else batch.select(rows), o.micro_batch_size,
                           o.micro_batch_tokens, whole_groups=o.shared_prefix)
    chunks = chunks if world.size == 1 else [rows[c] for c in chunks]
    old = world.sum_rows(logprobs_in_chunks(p.model, batch, rc.temperature, chunks, shared_prefix=o.shared_prefix)
                         )["logp"] if o.updates_per_batch > 1 else None
    ref_out = world.sum_rows(reference_logprobs(p, batch, chunks))
    extra = reference_inputs(algo, batch, ref_out)
    bt = BatchTensors(compute_advantages(batch, algo, step, extra), old, extra,
                      learns=~batch.truncated if p.cfg.algo.mask_truncated else None)

    # 6. Update the policy.
    lr = p.scheduler.get_last_lr()[0]  # the rate this step's optimiser steps use (the scheduler steps after them)
    p.model.train()
    m = update(p.model, p.optimizer, p.scheduler, batch, bt, algo, step=step, updates=o.updates_per_batch,
               micro_batch_size=o.micro_batch_size, max_grad_norm=o.max_grad_norm, temperature=rc.temperature,
               max_len=rc.max_new_tokens, micro_batch_tokens=o.micro_batch_tokens, shared_prefix=o.shared_prefix,
               skip_zero_advantage=o.skip_zero_advantage, world=world, rows=rows,
               refine=(rc.refine_method, rc.refine_shaping_gamma))

    # 7. Record.
    batch.advantages = bt.adv  # for rollouts.jsonl
    m.update(advantage_figures(bt.adv, bt.loss_mask(batch.completion_mask)))
    return step_record(step, batch, m, ref_out.get("logp"), lr, loss_mask=bt.loss_mask(batch.completion_mask),
                       replaying=p.replay is not None, hinting=p.cfg.rollout.hints != "off",
                       refining=p.cfg.rollout.refinements > 0)
