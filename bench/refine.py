"""Critique-GRPO's refinements against plain GRPO batches on the demo: accuracy by step, what the refinements
solved, and the cost.

    python bench/refine.py [--steps 300] [--eval-every 50] [--critique ground_truth] [--refinements 1]

Both runs start from checkpoints/demo-sft with configs/demo.yaml (same seed and data order), one after the other
in this process; the second with --rollout.refinements (1, the paper's k) and --rollout.critique (ground_truth:
"the answer is incorrect; the correct answer is ...", the critique of the authors' released script), so each
group with no correct completion gets 8 refinements sampled and 1 added, trained with the shaped loss.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.replay import curve, demo_config, print_curves  # noqa: E402
from policyforge.train.loop import train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--critique", default="ground_truth", help="rollout.critique")
    ap.add_argument("--refinements", type=int, default=1, help="rollout.refinements (k)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        runs = {}
        for name in ("plain", "critique"):
            print(f"{name} run, {args.steps} steps ...", flush=True)
            cfg = demo_config(args.steps, args.eval_every, out, name)
            if name == "critique":
                cfg.rollout.refinements, cfg.rollout.critique = args.refinements, args.critique
            runs[name] = train(cfg, log=lambda *_: None)
        results = {name: curve(run, cfg.train.pass_k) for name, run in runs.items()}
        steps = [json.loads(x) for x in (runs["critique"] / "metrics.jsonl").read_text().splitlines()]
    refined = [r["refined_groups"] for r in steps]
    right = [r["refined_groups"] * args.refinements * r.get("refined_accuracy", 0.0) for r in steps]
    print(f"\nrefined groups a step: {sum(refined) / len(refined):.2f} of {cfg.rollout.prompts_per_step} on average; "
          f"share of the refined rows the reward accepted: {sum(right) / max(sum(refined) * args.refinements, 1):.1%}")
    print_curves(results)


if __name__ == "__main__":
    main()
