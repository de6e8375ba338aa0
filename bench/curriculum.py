"""DUMP's distribution-level curriculum against uniform sampling, from the demo's warm start, in one process.

    python bench/curriculum.py [--steps 200] [--eval-every 50] [--rows 2000] [--held-out 50]

The data mixes four distributions (data/curriculum.py schedules by its `level` column):
- rev3-4, rev5-6, rev7-8: the demo's reversal task with words of 3-4, 5-6 and 7-8 letters (the warm start,
  checkpoints/demo-sft, was fine-tuned on words of 3-6 letters by a weak teacher);
- sort6: sorting 6 letters, which the warm start never saw.
--rows training rows and --held-out held-out rows of each, in one .jsonl in a temporary folder, scored by the
built-in verifier (policyforge.data.tasks:exact_match against the `answer` column).

Two runs with the demo's settings, seed and budget but for the data: data.curriculum off (each epoch's rows in a
shuffled order: the mix's shares) and dump. The table gives each run's held-out accuracy, overall and per
distribution, at each evaluation; then the share of prompts DUMP drew from each distribution over the run.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

from replay import run_parser  # bench/ is on the path when a bench script runs

from policyforge.train.config import load_yaml
from policyforge.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
LEVELS = {"rev3-4": ("rev", 3, 4), "rev5-6": ("rev", 5, 6), "rev7-8": ("rev", 7, 8), "sort6": ("sort", 6, 6)}


def problem(rng: random.Random, kind: str, low: int, high: int) -> tuple[str, str]:
    n = rng.randint(low, high)
    if kind == "rev":
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))
        return f"rev:{word}=", word[::-1]
    word = "".join(rng.choice("abcdefghij") for _ in range(n))
    return f"sort:{word}=", "".join(sorted(word))


def write_mixture(path: Path, rows: int, held_out: int, seed: int = 0, levels: dict = LEVELS) -> None:
    """`rows` training and `held_out` held-out rows of each of `levels`, with a `level` column: the held-out rows
    first (the file's first eval_size rows are held out), then the training rows, shuffled."""
    rng, seen, parts = random.Random(seed), set(), {"held": [], "train": []}
    for split, count in (("held", held_out), ("train", rows)):
        for level, (kind, low, high) in levels.items():
            made = 0
            while made < count:
                prompt, answer = problem(rng, kind, low, high)
                if prompt not in seen:
                    seen.add(prompt)
                    parts[split].append({"prompt": prompt, "answer": answer, "level": level})
                    made += 1
    rng.shuffle(parts["train"])
    path.write_text("".join(json.dumps(r) + "\n" for r in parts["held"] + parts["train"]))


def run_config(data: Path, curriculum: str, steps: int, eval_every: int, held_out: int, out_dir: str):
    cfg = load_yaml(ROOT / "configs" / "demo.yaml")
    cfg.model.path = str(ROOT / "checkpoints" / "demo-sft")
    cfg.data.path, cfg.data.reward = str(data), "policyforge.data.tasks:exact_match"
    cfg.data.distribution_column, cfg.data.curriculum = "level", curriculum
    cfg.data.eval_size = held_out * len(LEVELS)
    cfg.rollout.max_new_tokens = 10  # 8 letters and the end token fit
    cfg.train.steps, cfg.train.eval_every, cfg.train.save_every = steps, eval_every, steps
    cfg.train.out_dir, cfg.train.run_name, cfg.train.progress = out_dir, f"curriculum-{curriculum}", False
    return cfg


def read(run: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (run / name).read_text().splitlines()]


def main() -> None:
    ap = run_parser(__doc__, steps=200)
    ap.add_argument("--rows", type=int, default=2000, help="training rows of each distribution")
    ap.add_argument("--held-out", type=int, default=50, help="held-out rows of each distribution")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        data = Path(out) / "mixture.jsonl"
        write_mixture(data, args.rows, args.held_out)
        runs = {}
        for curriculum in ("off", "dump"):
            cfg = run_config(data, curriculum, args.steps, args.eval_every, args.held_out, out)
            runs[curriculum] = train(cfg, log=lambda *_: None)
        levels = list(LEVELS)
        print(f"\n| run | step | s | accuracy | {' | '.join(levels)} |")
        print("|---|---|---|---|" + "---|" * len(levels))
        for curriculum, run in runs.items():
            seconds = {0: 0.0}
            for r in read(run, "metrics.jsonl"):
                seconds[r["step"]] = seconds[r["step"] - 1] + r["step_s"]
            for e in read(run, "eval.jsonl"):
                per = " | ".join(f"{e[f'accuracy/{lv}']:.1%}" for lv in levels)
                print(f"| {curriculum} | {e['step']} | {seconds[e['step']]:.0f} | {e['accuracy']:.1%} | {per} |")
        weights = read(runs["dump"], "metrics.jsonl")
        for lo in range(0, len(weights), args.eval_every):
            span = weights[lo: lo + args.eval_every]
            mean = {lv: sum(r[f"curriculum_weight/{lv}"] for r in span) / len(span) for lv in levels}
            print(f"dump steps {span[0]['step']}-{span[-1]['step']}: mean weight "
                  + ", ".join(f"{lv} {w:.2f}" for lv, w in mean.items()))


if __name__ == "__main__":
    main()
