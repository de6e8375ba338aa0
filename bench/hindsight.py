"""HeRL's hindsight rewrites against plain GRPO batches on the demo, both scored by a five-item rubric: accuracy by
step, how many rewrites joined, and the cost.

    python bench/hindsight.py [--steps 300] [--eval-every 50] [--refinements 1]

Both runs start from checkpoints/demo-sft with configs/demo.yaml (same seed and data order), one after the other in
this process, with data.reward examples/rubric_rewards.py:reversal_rubric (correct, right length, first and last
letter, same letters; held-out accuracy is `correct`'s); the second with --rollout.refine-method herl
--rollout.critique rubric --rollout.refinements K: each group with no exact reversal has its best answers shown the
items they met and missed and rewritten, and K rewrites that reach the group's best (else copies of its best answer)
take the place of K rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.replay import plain_and_variant, print_curves, run_parser  # noqa: E402

RUBRIC = f"{ROOT / 'examples' / 'rubric_rewards.py'}:reversal_rubric"


def main() -> None:
    ap = run_parser(__doc__)
    ap.add_argument("--refinements", type=int, default=1, help="rollout.refinements (the authors' replace_top_n: 1)")
    args = ap.parse_args()

    def rubric(cfg):
        cfg.data.reward = RUBRIC

    def hindsight(cfg):
        cfg.rollout.refinements, cfg.rollout.refine_method, cfg.rollout.critique = args.refinements, "herl", "rubric"

    results, steps = plain_and_variant(args.steps, args.eval_every, "herl", hindsight, both=rubric)
    prompts = 16  # configs/demo.yaml's prompts_per_step
    joined = [r["refined_groups"] for r in steps]
    print(f"\ngroups a rewrite joined, a step: {sum(joined) / len(joined):.2f} of {prompts} on average "
          f"({sum(1 for j in joined if j)} of {len(joined)} steps had one)")
    print_curves(results)


if __name__ == "__main__":
    main()
