"""RLEP's experience replay against plain GRPO on the demo: both of RLEP's phases, then the two runs side by side.

    python bench/replay.py [--steps 300] [--eval-every 50] [--samples 8] [--per-prompt 2]

1. A plain run of configs/demo.yaml from checkpoints/demo-sft: the baseline, and RLEP's seed policy.
2. `collect` from that run's last checkpoint: --samples completions of each of the steps x 16 training prompts the
   runs train on, the verified ones kept (RLEP's experience pool).
3. A run with the same settings, seed and data order, again from checkpoints/demo-sft, with the pool replayed:
   --per-prompt pooled completions join each group of 8 (RLEP: 2 join 16).

All in this process, one after the other. The table gives each run's held-out accuracy and pass@8 at each
evaluation, with the seconds its steps took so far; collection's seconds are printed apart (RLEP's runs pay them
once, before training).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from policyforge.train.checkpoint import latest
from policyforge.train.collect import collect
from policyforge.train.config import load_yaml
from policyforge.train.loop import train

ROOT = Path(__file__).resolve().parents[1]


def demo_config(steps: int, eval_every: int, out_dir: str, name: str):
    cfg = load_yaml(ROOT / "configs" / "demo.yaml")
    cfg.model.path = str(ROOT / "checkpoints" / "demo-sft")
    cfg.train.steps, cfg.train.eval_every, cfg.train.save_every = steps, eval_every, steps
    cfg.train.out_dir, cfg.train.run_name, cfg.train.progress = out_dir, name, False
    return cfg


def curve(run: Path, pass_k: int) -> list[dict]:
    """A row per evaluation after step 0: accuracy, pass@k and the step seconds so far."""
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = {e["step"]: e for e in map(json.loads, (run / "eval.jsonl").read_text().splitlines())}
    rows, seconds = [], 0.0
    for r in records:
        seconds += r["step_s"]
        if r["step"] in evals:
            e = evals[r["step"]]
            rows.append({"step": r["step"], "accuracy": e["accuracy"], "pass": e[f"pass@{pass_k}"], "seconds": seconds})
    return rows


def main() -> None:
    ap = run_parser(__doc__)
    ap.add_argument("--samples", type=int, default=8, help="completions collected per training prompt")
    ap.add_argument("--per-prompt", type=int, default=2, help="pooled completions replayed into each group")
    args = ap.parse_args()
    quiet = lambda *_: None  # noqa: E731
    with tempfile.TemporaryDirectory() as out:
        print(f"1. plain run, {args.steps} steps ...", flush=True)
        cfg = demo_config(args.steps, args.eval_every, out, "plain")
        plain = train(cfg, log=quiet)
        print(f"2. collecting {args.samples} completions a prompt from {latest(plain).name} of the plain run ...",
              flush=True)
        seed_cfg = demo_config(args.steps, args.eval_every, out, "collect")
        seed_cfg.model.path = str(latest(plain))
        pool = str(Path(out) / "pool.jsonl")
        figures = collect(seed_cfg, pool, args.samples, log=quiet)
        print(f"3. replay run (data.replay_pool, {args.per_prompt} a group), {args.steps} steps ...", flush=True)
        cfg = demo_config(args.steps, args.eval_every, out, "replay")
        cfg.data.replay_pool, cfg.data.replay_per_prompt = pool, args.per_prompt
        replay = train(cfg, log=quiet)
        results = {"plain": curve(plain, cfg.train.pass_k), "replay": curve(replay, cfg.train.pass_k)}
        replayed = [json.loads(x).get("replayed_rows", 0) for x in (replay / "metrics.jsonl").read_text().splitlines()]
    print(f"\npool: {figures['completions']} of {figures['sampled']} completions kept, {figures['prompts_with_completions']}"
          f" of {figures['prompts']} prompts covered, collected in {figures['seconds']:.0f} s; replayed rows a step: "
          f"{sum(replayed) / len(replayed):.1f} on average")
    print_curves(results)


def run_parser(doc: str, steps: int = 300) -> argparse.ArgumentParser:
    """The arguments every study bench starts from: its docstring's first paragraph as the description, --steps
    and --eval-every; each script adds its own."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--eval-every", type=int, default=50)
    return ap


def plain_and_variant(steps: int, eval_every: int, name: str, configure, both=None) -> tuple[dict, list[dict]]:
    """The demo from its warm start twice in this process, plain and as `configure(cfg)` changes it (same seed and
    data order; `both(cfg)`, if given, changes both first): each run's curve() rows, and the variant's
    metrics.jsonl records."""
    with tempfile.TemporaryDirectory() as out:
        runs = {}
        for run_name in ("plain", name):
            print(f"{run_name} run, {steps} steps ...", flush=True)
            cfg = demo_config(steps, eval_every, out, run_name)
            if both is not None:
                both(cfg)
            if run_name == name:
                configure(cfg)
            runs[run_name] = train(cfg, log=lambda *_: None)
        results = {n: curve(run, cfg.train.pass_k) for n, run in runs.items()}
        records = [json.loads(x) for x in (runs[name] / "metrics.jsonl").read_text().splitlines()]
    return results, records


def print_curves(results: dict[str, list[dict]]) -> None:
    """The runs' curves (curve()'s rows) as one Markdown table, then a RESULT line a run for scripts."""
    print("\n| run | step | held-out accuracy | pass@8 | step seconds so far |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        for r in rows:
            print(f"| {name} | {r['step']} | {r['accuracy']:.1%} | {r['pass']:.1%} | {r['seconds']:.0f} |")
    for name, rows in results.items():
        best = max(rows, key=lambda r: r["accuracy"])
        print(f"RESULT run={name} steps={rows[-1]['step']} accuracy={rows[-1]['accuracy']:.4f} "
              f"best={best['accuracy']:.4f}@{best['step']} seconds={rows[-1]['seconds']:.1f}")


if __name__ == "__main__":
    main()
