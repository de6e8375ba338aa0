"""Data-parallel RL over several processes with torch.distributed (launched by torchrun).

    torchrun --nproc-per-node 2 -m policyforge.cli train ...

Each process (rank) samples and scores its share of the step's prompts. The scored rows are
then gathered, so every rank holds the same global batch, in rank order: advantages (batch-level
and stateful estimators included), the aggregation's token and sequence counts and the logged
metrics are those of the whole batch, exactly as in one process. The old-policy and reference
forwards and the update run on each rank's own rows only; their log-probs are summed across
ranks (each row is filled by one rank, zeros elsewhere) and the gradients all-reduced before
clipping, so every rank takes the same optimiser step and the weights stay identical.

Gloo on CPU, NCCL on CUDA (one GPU per process: cuda:LOCAL_RANK). torch.distributed is the
engine; this file only decides what is exchanged and when. One process is `World.single()`:
every method is then a no-op, so the loop has one code path.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from policyforge.rewards.batched import Logged
from policyforge.rewards.score import same_components
from policyforge.rollout.batch import RolloutBatch
from policyforge.train.config import ConfigError


class PeerFailed(ConfigError):
    """Another process of a data-parallel run failed at start-up (its own error says why)."""


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    device: str  # the model.device this rank uses ("cuda:LOCAL_RANK" under NCCL)
    owns_group: bool = False  # `start` opened the process group, so `stop` closes it
    started: float = field(default_factory=time.perf_counter)  # when this process began the run (start-up included)

    @staticmethod
    def single(device: str = "auto") -> "World":
        return World(0, 1, device)

    @property
    def main(self) -> bool:
        """The rank that writes the run directory, logs and evaluates."""
        return self.rank == 0

    # ---------------------------------------------------------------- set-up

    def share(self, rows: list) -> list:
        """This rank's contiguous share of `rows` (the step's prompts, which divide evenly, or the held-out
        rows, whose shares differ by at most one); all of them in one process."""
        if self.size == 1:
            return rows
        n = len(rows)
        return list(rows[self.rank * n // self.size:(self.rank + 1) * n // self.size])

    @contextlib.contextmanager
    def all_or_none(self):
        """The block's start-up work (checks, loading; no exchanges inside) ends on every process together: if
        it raised on any, each process raises, the others with a PeerFailed naming the process and its error.
        Without it, the processes that got through would go on to write the run directory and then fail at the
        next exchange on a broken connection, or wait there until torch.distributed's timeout while the failed
        process lives on."""
        try:
            yield
        except BaseException as e:  # Ctrl-C too: the others must not wait for this process
            try:
                self._agree(f"{type(e).__name__}: {e}")
            except Exception:  # the exchange itself failed (a peer is gone): this process's own error goes on
                pass
            raise
        self._agree(None)

    def _agree(self, failure: str | None) -> None:
        if self.size == 1:
            return
        failures = [(r, f) for r, f in enumerate(self.gather_objects(failure)) if f]
        if failure is None and failures:
            rank, what = failures[0]
            raise PeerFailed(f"process {rank} of {self.size} could not start: {what}")

    # ---------------------------------------------------------------- the batch

    def gather_batch(self, local: RolloutBatch) -> tuple[RolloutBatch, Tensor]:
        """The global batch (every rank's rows, in rank order) and the positions of this rank's rows in it.

        Prompts are left-padded and completions right-padded to the widest rank's; group ids are
        offset so that each rank's groups stay distinct.
        """
        device = local.completion_ids.device
        if self.size == 1:
            return local, torch.arange(len(local), device=device)
        parts: list = [None] * self.size
        torch.distributed.all_gather_object(parts, local.to("cpu"))
        parts = [same_components(b, parts[0]) for b in parts]
        start = sum(len(b) for b in parts[:self.rank])
        return RolloutBatch.joined(parts).to(device), torch.arange(start, start + len(local), device=device)

    def sum_rows(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-row results each rank filled for its own rows (zeros elsewhere), completed by a sum across
        ranks: adding zeros is exact. Full-vocabulary logits stay local: only the update reads them, on its
        own rows."""
        if self.size > 1:
            for name, v in tensors.items():
                if name != "logits":
                    torch.distributed.all_reduce(v)
        return tensors

    # ---------------------------------------------------------------- the update

    def all_reduce_grads(self, params: list[Tensor]) -> None:
        """Sum every rank's gradients (each rank's loss is already scaled by the global counts, so the sum is
        the full-batch gradient). A parameter that got a gradient on some rank only gets zeros on the
        others; one that got none anywhere keeps none, as in one process (AdamW leaves it alone)."""
        if self.size == 1:
            return
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=params[0].device)
        torch.distributed.all_reduce(has, op=torch.distributed.ReduceOp.MAX)
        live = [p for p, h in zip(params, has.tolist()) if h]
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for bucket in _buckets([p.grad for p in live]):  # a few flat buffers: few collectives, little extra memory
            flat = torch.cat([g.reshape(-1) for g in bucket])
            torch.distributed.all_reduce(flat)
            for g, v in zip(bucket, flat.split([g.numel() for g in bucket])):
                g.copy_(v.view_as(g))

    def merge_evaluations(self, res: dict, n: int) -> dict:
        """The whole held-out set's evaluation from each process's result `res` on its `n` rows: rates
        weighted by rows, samples in row order (so the first ones logged are the first rows, as in one process)."""
        if self.size == 1:
            return res
        parts = self.gather_objects((res, n))
        total = sum(k for _, k in parts)
        out = {}
        for key in res:
            if key == "samples":
                out[key] = [s for r, _ in parts for s in r["samples"]]
            else:
                out[key] = sum(r[key] * k for r, k in parts if k) / total if total else None
        return out

    def logged_means(self, logged: Logged) -> dict[str, float]:
        """{"reward_fn/<name>": mean}: the values TRL-form reward functions logged with log_metric (rewards/batched.py)
        in every process's `logged`, averaged over all of them from each one's sums and counts, as TRL does; every
        process gets the same dict. A collective: every process calls it, whether it logged anything or not."""
        return Logged.merged(self.gather_objects(logged.totals)).means()

    def any(self, flag: bool) -> bool:
        """Whether `flag` is set on any process (a collective: every process calls it at the same point)."""
        return bool(flag) if self.size == 1 else any(self.gather_objects(bool(flag)))

    def gather_objects(self, obj) -> list:
        """`obj` of every rank, in rank order (small Python values: metrics, RNG states)."""
        if self.size == 1:
            return [obj]
        out: list = [None] * self.size
        torch.distributed.all_gather_object(out, obj)
        return out

    def check_in_sync(self, model: torch.nn.Module) -> None:
        """RuntimeError when the ranks' weights differ (they take the same steps from the same start, so
        they never should): a checksum per rank, compared before a checkpoint is written."""
        if self.size == 1:
            return
        with torch.no_grad():  # the weights' bits summed as integers: exact in any order, and no float copy
            total = sum(int(_bits(p).sum(dtype=torch.int64)) for p in model.parameters())
        sums = self.gather_objects(total)
        if any(s != sums[0] for s in sums):
            raise RuntimeError(f"the processes' weights differ (checksums by rank: {sums}); the data-parallel "
                               "update went wrong: please report it")


# A launcher that hands each process its own GPU (Ray: CUDA_VISIBLE_DEVICES shows a worker only its GPU, so
# LOCAL_RANK no longer indexes the visible ones) names it here; torchrun leaves it unset: cuda:LOCAL_RANK.
LAUNCHER_DEVICE = "POLICYFORGE_PROCESS_DEVICE"


def start(device: str, prompts_per_step: int) -> World:
    """The World this process runs in: one process unless torchrun (or another launcher) set WORLD_SIZE > 1,
    in which case the process group is set up here (gloo for CPU, NCCL for CUDA)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World.single(device)
    check_split(prompts_per_step, size, "processes")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda and ":" in device:
        raise ConfigError(f"model.device={device!r} names one GPU, but {size} processes run: use 'cuda' (or "
                          "'auto'), and each process takes the GPU of its LOCAL_RANK")
    if cuda:
        device = os.environ.get(LAUNCHER_DEVICE) or f"cuda:{local_rank}"
        if torch.device(device).index >= torch.cuda.device_count():
            raise ConfigError(f"process {local_rank} on this node has no GPU of its own ({torch.cuda.device_count()}"
                              " visible): start at most one process per GPU")
        torch.cuda.set_device(device)
    owned = not torch.distributed.is_initialized()  # Ray Train, or the user's own code, may have set it up
    if owned:
        stop_with_launcher()
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return World(torch.distributed.get_rank(), size, device, owns_group=owned)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_with_launcher() -> None:
    """Under torchrun on Linux, have the kernel send this process SIGTERM when its launcher dies. torchrun passes
    SIGINT and SIGTERM on to its workers, but a launcher killed outright (SIGKILL, the OOM killer) leaves them
    training on, holding the run's lock; with this they stop after their step, with a checkpoint (preempt.py)."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()  # torchrun, which may itself be PID 1 (a container's entry point)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):  # no prctl to call: the launcher's own signals still reach us
        return
    if os.getppid() != parent:  # the launcher died before the request was made: this process was re-parented
        os.kill(os.getpid(), signal.SIGTERM)


def check_split(prompts_per_step: int, size: int, what: str) -> None:
    """ConfigError unless the step's prompts divide evenly over `size` processes (each samples whole groups)."""
    if prompts_per_step % size:
        raise ConfigError(f"rollout.prompts_per_step={prompts_per_step} does not split evenly over {size} {what}: "
                          f"use a multiple of {size}")


def check_algorithm(algo) -> None:
    """ConfigError for a loss or drift term that keeps state across steps: it updates that state from the
    micro-batches it sees, which differ between processes, so the processes would drift apart. (A stateful
    advantage, SPO's tracker, is fine: advantages are computed on the global batch everywhere.)"""
    used = [(algo.loss, algo.loss_kwargs)] + [(entry, hyper) for entry, _, hyper in algo.drift]
    local = sorted(f"{e.kind}:{e.name}" for e, hyper in used
                   if e.state is not None and {**e.hyper(), **hyper}.get("adaptive", True))  # a fixed entropy bonus
    if local:                                                                                  # leaves its state alone
        raise ConfigError(f"{', '.join(local)} keeps state from the micro-batches each process sees, so the processes "
                          "would disagree: run it in one process (without torchrun)")


def stop(world: World) -> None:
    """Close the process group `start` opened (one set up by someone else is theirs to close)."""
    if world.owns_group and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


BUCKET_BYTES = 64 * 2**20  # gradients are summed in flat buffers of about this size


def _buckets(grads: list[Tensor]) -> list[list[Tensor]]:
    """`grads` in parameter order (the same on every process), cut into runs of one dtype and ~BUCKET_BYTES."""
    out: list[list[Tensor]] = []
    size = 0
    for g in grads:
        if not out or g.dtype != out[-1][0].dtype or size + g.numel() * g.element_size() > BUCKET_BYTES:
            out.append([])
            size = 0
        out[-1].append(g)
        size += g.numel() * g.element_size()
    return out


def _bits(p: Tensor) -> Tensor:
    """The tensor's bits as integers of its element size (a view, no copy)."""
    kinds = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return p.detach().contiguous().view(kinds[p.element_size()])
