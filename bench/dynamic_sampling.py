"""DAPO's dynamic sampling against plain GRPO batches on the demo: accuracy by step, by groups sampled and by time.

    python bench/dynamic_sampling.py [--steps 300] [--eval-every 50] [--modes off,accuracy]

Each mode runs configs/demo.yaml from checkpoints/demo-sft (same seed, same data order), one after the other in
this process; only rollout.dynamic_sampling differs. Dynamic sampling trains on as many groups a step but samples
more to find them, so the table gives, at each evaluation, the held-out accuracy with the groups sampled and the
seconds spent so far: compare the modes at equal steps, at equal samples or at equal time.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from replay import run_parser  # bench/ is on the path when a bench script runs

from policyforge.train.config import load_yaml
from policyforge.train.loop import train

ROOT = Path(__file__).resolve().parents[1]


def run_mode(mode: str, steps: int, eval_every: int, out_dir: str) -> list[dict]:
    """One demo run with rollout.dynamic_sampling `mode`: a row per evaluation (after step 0)."""
    cfg = load_yaml(ROOT / "configs" / "demo.yaml")
    cfg.model.path = str(ROOT / "checkpoints" / "demo-sft")
    cfg.rollout.dynamic_sampling = mode
    cfg.train.steps, cfg.train.eval_every, cfg.train.save_every = steps, eval_every, steps
    cfg.train.out_dir, cfg.train.run_name, cfg.train.progress = out_dir, mode, False
    run = train(cfg, log=lambda *_: None)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    rows, groups, seconds = [], 0, 0.0
    by_step = {e["step"]: e for e in evals}
    for r in records:
        groups += r.get("groups_sampled", cfg.rollout.prompts_per_step)
        seconds += r["step_s"]
        if r["step"] in by_step:
            e = by_step[r["step"]]
            rows.append({"step": r["step"], "accuracy": e["accuracy"], "pass": e.get(f"pass@{cfg.train.pass_k}"),
                         "groups": groups, "seconds": seconds, "filled": r.get("groups_filled", 0)})
    return rows


def main() -> None:
    ap = run_parser(__doc__)
    ap.add_argument("--modes", default="off,accuracy", help="rollout.dynamic_sampling values to compare")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        results = {}
        for mode in args.modes.split(","):
            print(f"running rollout.dynamic_sampling={mode} for {args.steps} steps ...", flush=True)
            results[mode] = run_mode(mode, args.steps, args.eval_every, out)
    print("\n| mode | step | held-out accuracy | pass@8 | groups sampled so far | step seconds so far |")
    print("|---|---|---|---|---|---|")
    for mode, rows in results.items():
        for r in rows:
            print(f"| {mode} | {r['step']} | {r['accuracy']:.1%} | {r['pass']:.1%} | {r['groups']} | "
                  f"{r['seconds']:.0f} |")
    for mode, rows in results.items():
        last = rows[-1]
        print(f"RESULT mode={mode} steps={last['step']} accuracy={last['accuracy']:.4f} groups={last['groups']} "
              f"seconds={last['seconds']:.1f}")


if __name__ == "__main__":
    main()
