"""Knapsack RL's budget allocation against uniform groups, from the demo's warm start, in one process.

    python bench/budget.py [--steps 300] [--eval-every 50] [--rows 100] [--held-out 50]

Knapsack RL sizes a prompt's group by its success rate when last trained on, so it needs prompts that recur: the
data is a small file of reversals, --rows training rows each of 3-4, 5-6 and 7-8 letters (300 by default, so
300 steps of 16 prompts are 16 epochs), --held-out held-out rows each, with a `level` column (held-out accuracy
per level; bench/curriculum.py writes it). The warm start (checkpoints/demo-sft) was fine-tuned on words of 3-6
letters and never writes a reversal of 7-8.

Two runs with the demo's settings and seed but for the data: rollout.allocation uniform (8 completions a prompt)
and knapsack (the same 128 a step, shared out). The table gives held-out accuracy (overall and per level) and
pass@8 at each evaluation, the steps' seconds so far, and two means over the steps before it: the share of rows
whose advantage is not 0 (the paper's effective-gradient ratio) and the training accuracy.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from curriculum import LEVELS, ROOT, read, write_mixture
from replay import run_parser

from policyforge.train.config import load_yaml
from policyforge.train.loop import train

REVERSALS = {k: v for k, v in LEVELS.items() if k.startswith("rev")}


def run_config(data: Path, allocation: str, steps: int, eval_every: int, held_out: int, out_dir: str):
    cfg = load_yaml(ROOT / "configs" / "demo.yaml")
    cfg.model.path = str(ROOT / "checkpoints" / "demo-sft")
    cfg.data.path, cfg.data.reward = str(data), "policyforge.data.tasks:exact_match"
    cfg.data.distribution_column, cfg.data.eval_size = "level", held_out * len(REVERSALS)
    cfg.rollout.max_new_tokens, cfg.rollout.allocation = 10, allocation  # 8 letters and the end token fit
    cfg.train.steps, cfg.train.eval_every, cfg.train.save_every = steps, eval_every, steps
    cfg.train.out_dir, cfg.train.run_name, cfg.train.progress = out_dir, f"budget-{allocation}", False
    return cfg


def effective_rows(record: dict) -> float:
    """The share of the step's rows with a non-zero advantage: recorded by a knapsack run; with uniform groups it
    is the share of groups whose rewards differ."""
    return record.get("effective_rows_frac", 1.0 - record["zero_var_group_frac"])


def main() -> None:
    ap = run_parser(__doc__)
    ap.add_argument("--rows", type=int, default=100, help="training rows of each level")
    ap.add_argument("--held-out", type=int, default=50, help="held-out rows of each level")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        data = Path(out) / "reversals.jsonl"
        write_mixture(data, args.rows, args.held_out, levels=REVERSALS)
        runs = {a: train(run_config(data, a, args.steps, args.eval_every, args.held_out, out), log=lambda *_: None)
                for a in ("uniform", "knapsack")}
        levels = list(REVERSALS)
        print(f"\n| run | step | s | accuracy | {' | '.join(levels)} | pass@8 | effective rows | train accuracy |")
        print("|---|---|---|---|" + "---|" * len(levels) + "---|---|---|")
        for allocation, run in runs.items():
            records = read(run, "metrics.jsonl")
            for e in read(run, "eval.jsonl"):
                before = [r for r in records if r["step"] <= e["step"]] or [None]
                seconds = sum(r["step_s"] for r in before if r)
                eff = sum(effective_rows(r) for r in before if r) / max(1, len([r for r in before if r]))
                acc = sum(r["accuracy"] for r in before if r) / max(1, len([r for r in before if r]))
                per = " | ".join(f"{e[f'accuracy/{lv}']:.1%}" for lv in levels)
                print(f"| {allocation} | {e['step']} | {seconds:.0f} | {e['accuracy']:.1%} | {per} | "
                      f"{e['pass@8']:.1%} | {eff:.2f} | {acc:.2f} |")
        knap = read(runs["knapsack"], "metrics.jsonl")
        print(f"knapsack: largest group {max(r['group_size_max'] for r in knap):.0f}, prompts sized by an estimate "
              f"{sum(r['prompts_estimated'] for r in knap) / (16 * len(knap)):.0%} of all")


if __name__ == "__main__":
    main()
