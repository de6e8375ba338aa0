"""bench/alone.py: the step's matmul calls read from a profile and replayed alone."""

import sys
from pathlib import Path

import torch
from torch.profiler import profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from alone import matmul_calls, time_alone  # noqa: E402


def test_calls_are_counted_by_op_and_shape_per_step():
    x, w, bias = torch.randn(8, 16), torch.randn(32, 16), torch.randn(32)
    a, b = torch.randn(3, 2, 5), torch.randn(3, 5, 4)
    with profile(record_shapes=True) as prof:
        for _ in range(4):  # 4 "steps", each: two projections, one with a bias, and one bmm
            torch.nn.functional.linear(x, w)
            torch.nn.functional.linear(x, w, bias)
            torch.bmm(a, b)
    calls = matmul_calls(prof, steps=4)
    assert calls == {("aten::mm", ((8, 16), (16, 32))): 1.0,
                     ("aten::addmm", ((32,), (8, 16), (16, 32))): 1.0,
                     ("aten::bmm", ((3, 2, 5), (3, 5, 4))): 1.0}


def test_alone_seconds_adds_count_times_each_shape_and_splits_projections_from_batched(monkeypatch):
    import alone

    # the arithmetic, with a deterministic stand-in for the clock-based timer
    monkeypatch.setattr(alone, "time_alone", lambda op, shapes, device="cpu": {"aten::mm": 0.5, "aten::baddbmm": 0.25}[op])
    calls = {("aten::mm", ((64, 128), (128, 256))): 3.0, ("aten::baddbmm", ((4, 1, 9), (4, 1, 8), (4, 8, 9))): 2.0}
    assert alone.alone_seconds(calls) == {"projections": 1.5, "batched": 0.5, "all": 2.0}


def test_time_alone_runs_each_op_on_its_recorded_shapes():
    for op, shapes in [("aten::mm", ((4, 8), (8, 3))), ("aten::addmm", ((3,), (4, 8), (8, 3))),
                       ("aten::bmm", ((2, 4, 8), (2, 8, 3))), ("aten::baddbmm", ((2, 1, 3), (2, 4, 8), (2, 8, 3)))]:
        t = time_alone(op, shapes, min_s=0.0005, repeats=1)
        assert 0 < t < 1
