"""Data-parallel training over two real processes (torch.distributed, gloo on this CPU).

The update of two processes, each forwarding and back-propagating half of a scored batch, equals
the update of one process on the whole batch, for batch-level advantages, sequence-level
aggregation, drift against a reference and several updates per batch; the two processes end with
identical weights. A run under torchrun writes its records once and resumes exactly.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from policyforge.models.load import load_model
from policyforge.rewards.score import same_components
from policyforge.train import checkpoint, distributed
from policyforge.train.algorithm import resolve
from policyforge.train.config import ConfigError, load_yaml
from policyforge.train.distributed import World
from policyforge.train.evaluate import evaluate_run
from policyforge.train.loop import StepParts, learn, train
from policyforge.train.setup import build_data, build_optimizer, reference_policy, rollout, with_lora
from policyforge.metrics.step_record import TIMING

CASES = {
    "grpo, ppo_clip, token mean, KL logged, 2 updates in micro-batches": dict(
        optim=dict(updates_per_batch=2, micro_batch_size=3), algo=dict(), track_ref_kl=True),
    "batch-whitened advantage, sequence-mean aggregation, k3 drift in the loss": dict(
        optim=dict(micro_batch_size=64), algo=dict(advantage="reinforce_pp_baseline", aggregation="seq_mean_token_mean",
                                                    drift={"k3": 0.05}), track_ref_kl=False),
    "SPO's persistent per-prompt tracker, GSPO's sequence ratio": dict(
        optim=dict(updates_per_batch=2), algo=dict(advantage="spo", loss="gspo"), track_ref_kl=False),
    "LoRA adapters, k3 drift to the base model (adapters off), micro-batches by tokens": dict(
        optim=dict(micro_batch_tokens=60), algo=dict(drift={"k3": 0.05}), track_ref_kl=False,
        model=dict(lora_rank=4, lora_alpha=8.0, lora_dropout=0.0)),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _parts(cfg, model_dir: str, world: World):
    torch.manual_seed(0)
    model, tok = load_model(model_dir, "float32", "cpu", 0)
    model = with_lora(model, cfg.model)  # LoRA when the case sets model.lora_rank: every process starts alike
    algo = resolve(cfg.algo)
    ref = reference_policy(model) if algo.uses_reference() or cfg.train.track_ref_kl else None
    opt, sched = build_optimizer(model, cfg)
    return StepParts(cfg, algo, model, tok, ref, opt, sched, torch.Generator().manual_seed(0), None, world)


def _worker(rank: int, port: int, cfg, model_dir: str, batch_file: str, out_dir: str) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed.BUCKET_BYTES = 4096  # gradients summed in many small buffers, not one
    world = distributed.start("cpu", cfg.rollout.prompts_per_step)
    try:
        parts = _parts(cfg, model_dir, world)
        _, held_out, reward = build_data(cfg.data, cfg.train.seed)
        share = world.share(held_out)
        before = world.merge_evaluations(evaluate_run(parts.model, parts.tok, share, reward, cfg), len(share))
        batch = torch.load(batch_file, weights_only=False)
        half = len(batch) // 2  # rows are in group order: process r sampled the r-th half of the prompts
        mine = batch.select(torch.arange(rank * half, (rank + 1) * half))
        mine.group = mine.group - mine.group.min()  # as its own rollout numbers them
        records = []
        for step in (1, 2):  # the second step sees the first one's optimiser and SPO tracker state
            merged, rows = world.gather_batch(mine)
            records.append(learn(parts, step, merged, rows))
        torch.save({"params": [p.detach() for p in parts.model.parameters()], "records": records, "eval": before},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        distributed.stop(world)


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_update_exactly_as_one(tiny_cfg, small_model_dir, tmp_path, case):
    spec = CASES[case]
    cfg = copy.deepcopy(tiny_cfg)
    cfg.data.reward = "tests.e2e.test_train:vowel_reward"  # rewards that vary within a group
    cfg.rollout.prompts_per_step, cfg.rollout.group_size, cfg.rollout.max_new_tokens = 4, 4, 6
    for k, v in spec["optim"].items():
        setattr(cfg.optim, k, v)
    for k, v in spec["algo"].items():
        setattr(cfg.algo, k, v)
    for k, v in spec.get("model", {}).items():
        setattr(cfg.model, k, v)
    cfg.train.track_ref_kl = spec["track_ref_kl"]

    one = _parts(cfg, small_model_dir, World.single("cpu"))
    source, held_out, reward = build_data(cfg.data, cfg.train.seed)
    cfg.train.pass_k = 0  # sampled pass@k draws another stream in each process's share; greedy is the same
    before = evaluate_run(one.model, one.tok, held_out, reward, cfg)
    batch = rollout(one.model, one.tok, [source.train_example(i) for i in range(4)], cfg.rollout,
                    torch.Generator().manual_seed(3))
    from policyforge.rewards.score import score_parts
    batch.scores, batch.reward_components, batch.reward_names = score_parts(reward, batch.examples, batch.completions)
    assert len(set(batch.scores.tolist())) > 1, "equal rewards everywhere: the check would be empty"
    torch.save(batch, tmp_path / "batch.pt")

    torch.multiprocessing.spawn(_worker, args=(_free_port(), cfg, small_model_dir, str(tmp_path / "batch.pt"),
                                               str(tmp_path)), nprocs=2, join=True)
    records = [learn(one, step, batch, torch.arange(len(batch))) for step in (1, 2)]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["eval"]["accuracy"] == pytest.approx(before["accuracy"])
    assert len(before["samples"]) == 4 and ranks[0]["eval"]["samples"] == before["samples"]  # both shares, in order
    for a, b in zip(ranks[0]["params"], ranks[1]["params"]):
        assert torch.equal(a, b), "the two processes' weights differ"
    start = [p.detach() for p in _parts(cfg, small_model_dir, World.single("cpu")).model.parameters()]
    assert any(not torch.equal(a, s) for a, s in zip(ranks[0]["params"], start)), "nothing moved: an empty check"
    # AdamW steps of lr 1e-3 (4 of them with 2 updates per batch): 1e-5 is 1% of one step. Float sums taken in
    # another order may differ by ~1e-6 where Adam divides a near-zero gradient by its own small scale.
    for a, b in zip(ranks[0]["params"], one.model.parameters()):
        torch.testing.assert_close(a, b.detach(), atol=1e-5, rtol=0)
    for got, want in zip(ranks[0]["records"], records):
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-4, abs=1e-6), k


def test_a_stateful_loss_is_refused_across_processes():
    from policyforge.train.config import AlgoConfig

    with pytest.raises(ConfigError, match="loss:bapo keeps state"):
        distributed.check_algorithm(resolve(AlgoConfig(loss="bapo")))
    with pytest.raises(ConfigError, match="drift:entropy keeps state"):
        distributed.check_algorithm(resolve(AlgoConfig(drift={"entropy": 1.0}, drift_kwargs={"entropy": {"adaptive": True}})))
    distributed.check_algorithm(resolve(AlgoConfig(drift={"entropy": 0.01})))  # a fixed bonus keeps no state
    distributed.check_algorithm(resolve(AlgoConfig(advantage="spo")))  # advantages see the global batch: fine


def test_prompts_must_split_evenly(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="prompts_per_step=6 does not split evenly over 4 processes"):
        distributed.start("cpu", 6)


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(_free_port()), "-m", "policyforge.cli", "train", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _run_args(model_dir: str, out: Path, name: str, reward: str = "tests.e2e.test_train:vowel_reward") -> list[str]:
    return ["--model.path", model_dir, "--data.task", "reversal", "--data.task-size", "4", "--data.eval-size", "4",
            "--data.reward", reward, "--rollout.prompts-per-step", "4",
            "--rollout.group-size", "4", "--rollout.max-new-tokens", "5", "--train.steps", "3",
            "--train.eval-every", "0", "--train.pass-k", "2", "--train.out-dir", str(out), "--train.run-name", name,
            "--optim.lr", "1e-3", "--train.no-progress",
            "--algo.overlong-buffer", "5"]  # DAPO's length penalty, added after the rows are gathered


def assert_resume_is_exact(cfg, stop_after: int) -> None:
    """A run of `cfg` stopped after step `stop_after` and resumed logs what an uninterrupted one does: the same
    metrics (timings aside) and rollouts.jsonl."""
    from policyforge.train.loop import train

    whole = train(cfg, log=lambda *_: None)
    cfg.train.run_name, cfg.train.stop_after = "interrupted", stop_after
    part = train(cfg, log=lambda *_: None)
    cfg.train.stop_after = None
    resumed = train(cfg, resume=str(part), log=lambda *_: None)
    assert _metrics(resumed) == _metrics(whole)
    assert (resumed / "rollouts.jsonl").read_text() == (whole / "rollouts.jsonl").read_text()


def assert_torchrun_resume_is_exact(model_dir: str, out: Path, extra: list[str], stop_after: int) -> Path:
    """Under torchrun (2 processes), a run of `_run_args` + `extra` stopped after step `stop_after` and resumed
    logs what an uninterrupted one does; returns the uninterrupted run's directory (out/whole)."""
    repo = Path(__file__).resolve().parents[2]
    whole = _torchrun(_run_args(model_dir, out, "whole") + extra, repo)
    assert whole.returncode == 0, whole.stderr[-3000:]
    part = _torchrun(_run_args(model_dir, out, "part") + extra + ["--train.stop-after", str(stop_after)], repo)
    assert part.returncode == 0, part.stderr[-3000:]
    resumed = _torchrun(["--resume", str(out / "part")], repo)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _metrics(out / "part") == _metrics(out / "whole")
    assert (out / "part" / "rollouts.jsonl").read_text() == (out / "whole" / "rollouts.jsonl").read_text()
    return out / "whole"


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def vowels_logged(completions, log_metric, log_extra, **kwargs):
    """tests.e2e.test_train:vowel_reward in TRL's batched form, logging each row's reward with log_metric and
    the process that scored it with log_extra."""
    values = [float(sum(ch in "aeiou" for ch in c)) for c in completions]
    for value in values:
        log_metric("vowels", value)
    log_extra("rank", [int(os.environ.get("RANK", -1))] * len(completions))
    return values


def test_torchrun_run_writes_once_and_resumes_exactly(small_model_dir, tmp_path):
    repo = Path(__file__).resolve().parents[2]
    logged = "tests.e2e.test_data_parallel:vowels_logged"  # each process logs its own rows' rewards
    rollouts = ["--train.log-rollouts", "12"]  # process 0's 8 rows (2 prompts x 4), then 4 of process 1's
    whole = _torchrun(_run_args(small_model_dir, tmp_path, "whole", logged) + rollouts, repo)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "2 processes, data-parallel" in whole.stdout
    assert whole.stdout.count("policyforge train: run directory") == 1  # one voice
    run = tmp_path / "whole"
    assert [r["step"] for r in _metrics(run)] == [1, 2, 3]
    for r in _metrics(run):  # a buffer of the whole budget (5): each token of the gathered batch costs 1/5
        assert r["overlong_penalty"] == pytest.approx(-r["completion_len_mean"] / 5, rel=1e-5)
        # log_metric's mean is over both processes' values: the gathered batch's reward, before the penalty
        assert r["reward_fn/vowels"] == pytest.approx(r["reward_mean"] - r["overlong_penalty"], rel=1e-5)
    assert [json.loads(x)["step"] for x in (run / "eval.jsonl").read_text().splitlines()] == [0, 3]
    lines = [json.loads(x) for x in (run / "rollouts.jsonl").read_text().splitlines()]  # written once, gathered
    assert [r["step"] for r in lines] == [1] * 12 + [2] * 12 + [3] * 12
    assert [r["extra"]["rank"] for r in lines[:12]] == [0] * 8 + [1] * 4
    assert [r["group"] for r in lines[:12:4]] == [0, 1, 2]  # process 1's groups come after process 0's
    assert all(r["reward"] - r["overlong_penalty"] == pytest.approx(sum(ch in "aeiou" for ch in r["completion"]))
               for r in lines)
    state = checkpoint.load_trainer_state(checkpoint.latest(run))
    assert len(state["rng_by_rank"]) == 2 and state["rng_by_rank"][0]["sampler"].ne(state["rng_by_rank"][1]["sampler"]).any()

    first = _torchrun([*_run_args(small_model_dir, tmp_path, "split", logged), *rollouts, "--train.stop-after", "2"],
                      repo)
    assert first.returncode == 0, first.stderr[-3000:]
    second = _torchrun(["--resume", str(tmp_path / "split")], repo)
    assert second.returncode == 0, second.stderr[-3000:]
    assert _metrics(tmp_path / "split") == _metrics(run)
    assert (tmp_path / "split" / "rollouts.jsonl").read_text() == (run / "rollouts.jsonl").read_text()

    with pytest.raises(ConfigError, match="written by a run of 2 process"):  # one process cannot continue it
        train(load_yaml(tmp_path / "split" / "config.yaml"), resume=str(tmp_path / "split"), log=lambda *_: None)


def test_reward_components_are_matched_by_name_across_processes(tiny_cfg, small_model_dir):
    from policyforge.rewards.score import RewardError

    model, tok = load_model(small_model_dir, "float32", "cpu", 0)
    source, _, _ = build_data(tiny_cfg.data, 0)
    batch = rollout(model, tok, [source.train_example(0)], tiny_cfg.rollout, torch.Generator().manual_seed(0))
    first = copy.copy(batch)
    first.scores, first.reward_components, first.reward_names = torch.ones(4), torch.tensor([[1.0, 0.0]] * 4), ("a", "b")
    other = copy.copy(batch)
    other.scores, other.reward_components, other.reward_names = torch.ones(4), torch.tensor([[0.0, 1.0]] * 4), ("b", "a")
    fixed = same_components(other, first)
    assert fixed.reward_names == ("a", "b") and torch.equal(fixed.reward_components, first.reward_components)
    other.reward_components, other.reward_names = None, ()
    with pytest.raises(RewardError, match=r"returned the components \['a', 'b'\] for .* but a number for"):
        same_components(other, first)


def _start_worker(rank: int, port: int, cfg, out_dir: str) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if rank == 1:  # this process alone cannot start
        cfg.model.path = str(Path(out_dir) / "no-such-model")
    try:
        train(cfg, log=lambda *_: None)
        outcome = "finished"
    except Exception as e:
        outcome = f"{type(e).__name__}: {e}"
    Path(out_dir, f"start{rank}.txt").write_text(outcome)


def test_a_process_that_cannot_start_stops_the_others_at_once(tiny_cfg, tmp_path):
    """Without the start-up agreement process 0 went on to write the run directory and evaluate, then failed
    at its first exchange with gloo's "Connection closed by peer" (or, while the failed process lived on,
    waited until torch.distributed's timeout); now it stops before writing, naming process 1's error."""
    ctx = torch.multiprocessing.spawn(_start_worker, args=(_free_port(), tiny_cfg, str(tmp_path)), nprocs=2,
                                      join=False)
    for _ in range(60):
        if ctx.join(timeout=2):
            break
    else:
        for p in ctx.processes:
            p.kill()
        pytest.fail("process 0 still waits 120 s after process 1 failed to start")
    assert (tmp_path / "start1.txt").read_text().startswith("ModelError: model path")
    assert (tmp_path / "start0.txt").read_text().startswith("PeerFailed: process 1 of 2 could not start: ModelError")
    assert not (Path(tiny_cfg.train.out_dir) / "run").exists()  # nothing written
