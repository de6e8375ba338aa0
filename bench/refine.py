"""Critique-GRPO's refinements against plain GRPO batches on the demo: accuracy by step, what the refinements
solved, and the cost.

    python bench/refine.py [--steps 300] [--eval-every 50] [--critique ground_truth] [--refinements 1]

Both runs start from checkpoints/demo-sft with configs/demo.yaml (same seed and data order), one after the other
in this process; the second with --rollout.refinements (1, the paper's k) and --rollout.critique (ground_truth:
"the answer is incorrect; the correct answer is ...", the critique of the authors' released script), so each
group with no correct completion gets 8 refinements sampled and 1 added, trained with the shaped loss.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.replay import plain_and_variant, print_curves, run_parser  # noqa: E402


def main() -> None:
    ap = run_parser(__doc__)
    ap.add_argument("--critique", default="ground_truth", help="rollout.critique")
    ap.add_argument("--refinements", type=int, default=1, help="rollout.refinements (k)")
    args = ap.parse_args()

    def refining(cfg):
        cfg.rollout.refinements, cfg.rollout.critique = args.refinements, args.critique

    results, steps = plain_and_variant(args.steps, args.eval_every, "critique", refining)
    prompts = 16  # configs/demo.yaml's prompts_per_step
    refined = [r["refined_groups"] for r in steps]
    right = [r["refined_groups"] * args.refinements * r.get("refined_accuracy", 0.0) for r in steps]
    print(f"\nrefined groups a step: {sum(refined) / len(refined):.2f} of {prompts} on average; "
          f"share of the refined rows the reward accepted: {sum(right) / max(sum(refined) * args.refinements, 1):.1%}")
    print_curves(results)


if __name__ == "__main__":
    main()
