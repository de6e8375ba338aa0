"""GHPO's hints against plain GRPO batches on the demo: accuracy by step, what the hints solved, and the cost.

    python bench/hints.py [--steps 300] [--eval-every 50] [--template ' hint:{hint}']

Both runs start from checkpoints/demo-sft with configs/demo.yaml (same seed and data order), one after the other
in this process; the second with --rollout.hints ghpo. The built-in tokenizer reads lower-case text only, so the
hint goes in as ' hint:' and the answer's first characters instead of GHPO's English sentence.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.replay import plain_and_variant, print_curves, run_parser  # noqa: E402


def main() -> None:
    ap = run_parser(__doc__)
    ap.add_argument("--template", default=" hint:{hint}", help="rollout.hint_template")
    args = ap.parse_args()

    def hinted(cfg):
        cfg.rollout.hints, cfg.rollout.hint_template = "ghpo", args.template

    results, steps = plain_and_variant(args.steps, args.eval_every, "hints", hinted)
    prompts = 16  # configs/demo.yaml's prompts_per_step
    hinted = [r["hinted_groups"] for r in steps]
    solved = [r["hinted_groups"] * r.get("hinted_accuracy", 0.0) for r in steps]
    last = steps[-50:]
    print(f"\nhinted groups a step: {sum(hinted) / len(hinted):.2f} of {prompts} on average; "
          f"share of their rows the reward accepted: {sum(solved) / max(sum(hinted), 1):.1%}; training accuracy "
          f"before hints, last {len(last)} steps: {sum(r['accuracy_unhinted'] for r in last) / len(last):.1%}")
    print_curves(results)


if __name__ == "__main__":
    main()
