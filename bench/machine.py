"""Measuring on a shared CPU machine: other processes' load, quiet windows, matmul rate, peak RSS.

Used by bench/vs_trl.py (see its docstring for why each measurement is taken as it is).
"""

from __future__ import annotations

import os
import re
import time

import torch

QUIET = 0.10  # a step counts as uncontended when other processes took < 10% of the machine's CPU meanwhile


def cpu_snapshot() -> tuple[float, int, int]:
    """(wall s, busy CPU ticks of the whole machine, CPU ticks of this process) now."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    own = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    return time.perf_counter(), v[0] + v[1] + v[2] + v[5] + v[6] + v[7], int(own[11]) + int(own[12])


def other_load(a: tuple, b: tuple) -> float:
    """Fraction of the machine's CPU that other processes (and the hypervisor) took between two snapshots."""
    wall = max(b[0] - a[0], 1e-9)
    return max(0, (b[1] - a[1]) - (b[2] - a[2])) / os.sysconf("SC_CLK_TCK") / (wall * (os.cpu_count() or 1))


class QuietWaiter:
    """Waits for windows in which other processes use < QUIET of the CPU, within a total budget."""

    def __init__(self, budget_s: float):
        self.left = budget_s

    def wait(self, window_s: float = 1.0) -> None:
        if self.left <= 0:  # no budget (--wait-quiet 0, as on a dedicated GPU machine): not even one window
            return
        noted = False
        while True:
            a = cpu_snapshot()
            time.sleep(window_s)
            load = other_load(a, cpu_snapshot())
            if load < QUIET or self.left <= 0:
                if load >= QUIET and noted:
                    print(f"warning: other processes still use {load:.0%} of the CPU and the --wait-quiet budget "
                          "is spent; going on (contended steps are left out of the medians)", flush=True)
                return
            if not noted:
                print(f"waiting for the CPU: other processes use {load:.0%} of it", flush=True)
                noted = True
            time.sleep(4)
            self.left -= window_s + 4


def clean(recs: list[dict], minimum: int = 3) -> list[dict]:
    """The steps during which other processes took < QUIET of the CPU, if there are enough; else all."""
    quiet = [r for r in recs if r["other"] < QUIET]
    return quiet if len(quiet) >= minimum else recs


def sync() -> None:
    """Wait for queued GPU work, so that a wall-clock reading covers it (nothing to wait for on a CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def matmul_flops(n: int = 2048, reps: int = 10, device: str = "cpu") -> float:
    """Best observed float32 matmul FLOP/s on `device`, now (a larger matrix on a GPU, to fill it)."""
    n = n if device == "cpu" else 4 * n
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def hwm_kb() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))


def rss_kb() -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1))


def reset_hwm(mark: dict) -> None:
    """Note the peak RSS so far, return freed heap to the OS, reset the kernel's peak-RSS mark (all kB)."""
    import ctypes

    mark["before"] = hwm_kb()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # else the base would include the warm-up step's freed-but-kept heap
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    mark["base"] = rss_kb()


def reset_peak(mark: dict, device: str) -> None:
    """reset_hwm for the CPU; on a GPU the same marks (kB) from the CUDA caching allocator: the peak of
    allocated memory so far, then the peak reset and the memory allocated now as the base."""
    if device == "cpu":
        return reset_hwm(mark)
    mark["before"] = torch.cuda.max_memory_allocated() // 1024
    torch.cuda.reset_peak_memory_stats()
    mark["base"] = torch.cuda.memory_allocated() // 1024


def peak_kb(device: str) -> int:
    """The peak since reset_peak: the process's RSS high-water mark, or the GPU's allocated-memory peak."""
    return hwm_kb() if device == "cpu" else torch.cuda.max_memory_allocated() // 1024
