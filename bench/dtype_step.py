"""float32 vs bfloat16 on this CPU: matmuls of the tiny step's shapes alone, then policyforge's whole step.

    python bench/dtype_step.py [--setting tiny] [--steps 8]

Answers "would bfloat16 (model.dtype bfloat16: bf16 weights, float32 master copies) make the
step N times faster?". The matmuls alone show what the hardware gives (AVX512-BF16 / AMX where
present); the step alternates the two dtypes, a step each, on the same weights and prompts.
policyforge only: TRL would get bfloat16 as well (its GRPOConfig turns bf16 on by default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sides import SETTINGS, PolicyforgeRunner, make_examples, save_model  # noqa: E402

SHAPES = [(64, 128, 384), (64, 128, 1024), (64, 512, 128), (1740, 128, 512), (1740, 512, 128), (2048, 2048, 2048)]


def best_us(fn, n: int) -> float:
    for _ in range(min(n, 20)):
        fn()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def matmuls() -> None:
    for m, k, n in SHAPES:
        x, w = torch.randn(m, k), torch.randn(n, k)
        xb, wb = x.bfloat16(), w.bfloat16()
        reps = 5 if m * k * n > 1e9 else 300
        a = best_us(lambda: torch.nn.functional.linear(x, w), reps)
        b = best_us(lambda: torch.nn.functional.linear(xb, wb), reps)
        print(f"{m}x{k} by {k}x{n}: float32 {a:.0f} us ({2 * m * k * n / a / 1e3:.0f} GFLOP/s), "
              f"bfloat16 {b:.0f} us ({2 * m * k * n / b / 1e3:.0f} GFLOP/s)")


def steps(setting: str, n: int) -> None:
    import policyforge.models.load as load

    s = SETTINGS[setting]
    path = tempfile.mkdtemp()
    save_model(s, path)
    examples = make_examples(s, 512)
    plain, runners = load.load_model, {}
    for dtype in ("float32", "bfloat16"):  # the runner loads float32; this one loads as asked
        load.load_model = lambda p, _d, device, seed=None, dt=dtype: plain(p, dt, device, seed)
        runners[dtype] = PolicyforgeRunner(path, s, examples)
    load.load_model = plain
    for r in runners.values():
        r.step(), r.step()  # warm-up
    times: dict[str, list] = {d: [] for d in runners}
    for _ in range(n):
        for dtype, r in runners.items():
            out = r.step()
            times[dtype].append((out["s"], out["phases"]["rollout"], out["phases"]["update"]))
    for dtype, rows in times.items():
        step, roll, upd = (statistics.median(x[i] for x in rows) for i in range(3))
        print(f"{setting} step, {dtype}: median {step:.3f} s (rollout {roll:.3f}, update {upd:.3f}) over {n} steps")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="tiny", choices=sorted(SETTINGS))
    ap.add_argument("--steps", type=int, default=8)
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    matmuls()
    steps(a.setting, a.steps)


if __name__ == "__main__":
    main()
