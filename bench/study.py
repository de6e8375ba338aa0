"""Study: several algorithms from the shipped SFT checkpoint, same budget, one table.

    python bench/study.py [--steps 60] [--updates 1] [--algos grpo,dr_grpo,...] [--out FILE]

Every run starts from checkpoints/demo-sft on the built-in reversal task with the demo's
rollout settings; only the algorithm differs. Prints and writes a markdown table of held-out
greedy accuracy, pass@8, KL to the reference and entropy at the end of the budget.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from policyforge.train.config import load_yaml
from policyforge.train.loop import train

ROOT = Path(__file__).resolve().parents[1]

# name -> algo overrides (everything else as in configs/demo.yaml)
ALGOS = {
    "grpo": dict(advantage="grpo", loss="ppo_clip", aggregation="token_mean"),
    "dr_grpo": dict(advantage="dr_grpo", loss="ppo_clip", aggregation="seq_mean_token_sum_norm"),
    "rloo": dict(advantage="rloo", loss="reinforce", aggregation="seq_mean_token_mean"),
    "cpgd": dict(advantage="grpo", loss="cpgd", aggregation="token_mean"),
    "bapo": dict(advantage="grpo", loss="bapo", aggregation="token_mean"),
    "topr": dict(advantage="dr_grpo", loss="topr", aggregation="seq_mean_token_sum"),
    "gspo": dict(advantage="grpo", loss="gspo", aggregation="seq_mean_token_mean"),
    "clip_cov": dict(advantage="grpo", loss="clip_cov", aggregation="token_mean"),
    "cispo": dict(advantage="grpo", loss="cispo", aggregation="token_mean"),
    "sapo": dict(advantage="grpo", loss="sapo", aggregation="seq_mean_token_mean"),
}


def run_one(name: str, steps: int, out_dir: str, updates: int = 1) -> dict:
    cfg = load_yaml(ROOT / "configs" / "demo.yaml")
    cfg.model.path = str(ROOT / "checkpoints" / "demo-sft")
    for k, v in ALGOS[name].items():
        setattr(cfg.algo, k, v)
    cfg.algo.loss_kwargs = {}  # each loss with its paper's defaults
    cfg.optim.updates_per_batch = updates  # > 1: later updates are off-policy, where the losses differ
    cfg.train.steps, cfg.train.eval_every, cfg.train.save_every = steps, 0, steps
    cfg.train.out_dir, cfg.train.run_name, cfg.train.progress = out_dir, name, False
    t0 = time.perf_counter()
    run = train(cfg, log=lambda *_: None)
    ev = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-5:]
    mean = lambda k: sum(r.get(k, 0.0) for r in last) / len(last)  # noqa: E731
    return {"algo": name, "acc_start": ev[0]["accuracy"], "acc_end": ev[-1]["accuracy"], "pass8_end": ev[-1]["pass@8"],
            "kl_ref": mean("kl_ref"), "entropy": mean("entropy"), "seconds": time.perf_counter() - t0, **ALGOS[name]}


def table(rows: list[dict], steps: int) -> str:
    head = (f"| algorithm | advantage / loss / aggregation | held-out acc. start → after {steps} steps | pass@8 | "
            "KL to ref. | entropy | seconds |\n|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['algo']} | {r['advantage']} / {r['loss']} / {r['aggregation']} | {r['acc_start']:.1%} → {r['acc_end']:.1%} "
        f"| {r['pass8_end']:.1%} | {r['kl_ref']:.4f} | {r['entropy']:.3f} | {r['seconds']:.0f} |\n" for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--algos", default=",".join(ALGOS))
    ap.add_argument("--updates", type=int, default=1, help="optimiser steps per rollout batch (PPO epochs)")
    ap.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.algos.split(","):
            rows.append(run_one(name, args.steps, tmp, args.updates))
            print(json.dumps(rows[-1]), flush=True)
    text = f"{args.updates} update(s) per batch\n\n" + table(rows, args.steps)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
