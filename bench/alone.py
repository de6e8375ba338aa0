"""The matrix multiplies of a profiled step, replayed one shape at a time, alone.

`matmul_calls(prof)` reads a torch.profiler run (record_shapes=True) into the step's matmul
calls by op and input shapes; `alone_seconds(calls)` times each shape by itself in a tight loop
(fresh random tensors of the recorded shapes, best of a few repeats) and adds up count x time.

That sum is what this machine's BLAS needs for the step's matrix multiplies when each runs at the
rate it reaches with nothing else around it: a lower estimate for these kernels, unlike the
profiled in-step time (profiler cost and in-step slowdown included). It still counts
policyforge's own choices (the decode rotation as a bmm, the decode attention as bmm / baddbmm),
so the projections and LM head (mm / addmm) are reported apart from the batched ones.
"""

from __future__ import annotations

import time
from collections import Counter

import torch

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
PROJECTIONS = ("aten::mm", "aten::addmm")  # every projection and the LM head, in decode, prefill and training


def matmul_calls(prof, steps: int = 1) -> Counter:
    """{(op, input shapes): calls per step} of the matmul ops in a profile recorded with shapes."""
    calls: Counter = Counter()
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key in MATMUL_OPS:
            shapes = tuple(tuple(s) for s in e.input_shapes[:3])
            calls[(e.key, shapes)] += e.count / steps
    return calls


def _args(op: str, shapes: tuple, device: str) -> tuple:
    new = [torch.randn(*s, device=device) if s else None for s in shapes]
    if op in ("aten::mm", "aten::bmm"):
        return tuple(new[:2])
    return tuple(new)  # addmm / baddbmm: (self, mat1, mat2)


_FN = {"aten::mm": torch.mm, "aten::bmm": torch.bmm, "aten::addmm": torch.addmm, "aten::baddbmm": torch.baddbmm}


def _sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def time_alone(op: str, shapes: tuple, device: str = "cpu", min_s: float = 0.004, repeats: int = 3) -> float:
    """Best seconds per call of `op` on random tensors of `shapes`, alone in a loop."""
    fn, args = _FN[op], _args(op, shapes, device)
    fn(*args)
    _sync(device)
    t, n = time.perf_counter(), 1
    fn(*args)
    _sync(device)
    once = max(time.perf_counter() - t, 1e-7)
    n = max(1, int(min_s / once))
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        for _ in range(n):
            fn(*args)
        _sync(device)
        best = min(best, (time.perf_counter() - t) / n)
    return best


def alone_seconds(calls: Counter, device: str = "cpu") -> dict[str, float]:
    """{'projections': s, 'batched': s, 'all': s}: per step, each call timed alone at its own shapes."""
    out = {"projections": 0.0, "batched": 0.0}
    for (op, shapes), count in calls.items():
        out["projections" if op in PROJECTIONS else "batched"] += count * time_alone(op, shapes, device)
    out["all"] = out["projections"] + out["batched"]
    return out
