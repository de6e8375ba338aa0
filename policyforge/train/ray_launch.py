"""Launching a data-parallel `train` on a Ray cluster (Ray Train's TorchTrainer).

    policyforge train --ray-workers 4 --ray-gpus-per-worker 1 --config run.yaml

Ray places the workers (on one machine, or across a cluster's nodes with `--ray-address`),
sets up their torch.distributed process group (gloo, or NCCL when each has a GPU) and the
RANK / WORLD_SIZE / LOCAL_RANK variables, and each worker runs the same `train` as under
torchrun: train/distributed.py does the rest. Ray is the engine here; this file only maps our
options onto it and brings a worker's error back as the one-line error it would be in one
process. The workers need policyforge installed where they run (a local Ray instance shares
this environment).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from policyforge.train.config import Config, ConfigError
from policyforge.train.resume import stopped_text
from policyforge.train.setup import new_run_dir

INSTALL = "pip install 'policyforge[ray]'"


def train_on_ray(cfg: Config, resume: str | None, workers: int, gpus_per_worker: float = 0,
                 address: str | None = None, log=print) -> None:
    """Run `train(cfg, resume)` in `workers` Ray workers, data-parallel; raise the first user error a worker hit."""
    from policyforge.errors import is_user_error
    from policyforge.train.distributed import check_split
    from policyforge.train.validate import validate

    if workers < 1:
        raise ConfigError(f"--ray-workers {workers}: give at least 1 worker")
    if gpus_per_worker not in (0, 1):  # NCCL takes one process per GPU: a shared one fails, two are unused
        raise ConfigError(f"--ray-gpus-per-worker {gpus_per_worker:g}: give 1 (a GPU per worker) or 0 (CPU workers)")
    device = cfg.model.device
    if gpus_per_worker and not (device == "auto" or device.startswith("cuda")):
        raise ConfigError(f"--ray-gpus-per-worker 1 gives each worker a GPU, but model.device={device!r}: "
                          "leave it at auto (or cuda)")
    if not gpus_per_worker and device.startswith("cuda"):
        raise ConfigError(f"model.device={device!r}, but the Ray workers get no GPU: add --ray-gpus-per-worker 1")
    if not gpus_per_worker and device == "auto":
        # Ray shows a worker that asked for no GPU every GPU of its node: 'auto' would take GPUs Ray never gave
        cfg = replace(cfg, model=replace(cfg.model, device="cpu"))
    validate(cfg)  # here, before any cluster work: a mistake costs a second, not a cluster start
    check_split(cfg.rollout.prompts_per_step, workers, "Ray workers")
    preflight(cfg, resume)
    if not resume and not cfg.train.run_name:  # named here, so that the driver can say where the run is
        cfg = replace(cfg, train=replace(cfg.train, run_name=new_run_dir(cfg).name))
    run_path = Path(resume) if resume else Path(cfg.train.out_dir) / cfg.train.run_name
    try:
        import ray
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError:
        raise ConfigError(f"--ray-workers needs Ray Train: {INSTALL}") from None
    if not ray.is_initialized():
        # Ray folds lines alike across workers into "[repeated Nx across cluster]": the printed config lost lines
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        ray.init(address=address, include_dashboard=False, logging_level="ERROR")
    log(f"policyforge train: {workers} Ray worker(s)" + (f", {gpus_per_worker:g} GPU each" if gpus_per_worker else "")
        + (f" on {address}" if address else ", local Ray instance"))
    # a progress bar redrawn through Ray's log forwarding comes out as one line per redraw: evaluations and
    # metrics.jsonl (policyforge report) show the progress instead
    cfg = replace(cfg, train=replace(cfg.train, progress=False))
    scratch = tempfile.mkdtemp(prefix="policyforge-ray-")
    trainer = TorchTrainer(
        _worker, train_loop_config={"cfg": cfg, "resume": resume, "cwd": os.getcwd(), "gpus": gpus_per_worker > 0},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker={"CPU": 1, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}),
        # a failed worker fails the run: a restart would redo steps; `--resume` continues it exactly instead
        # Ray Train's own run folder (~/ray_results by default) holds nothing of policyforge's: a temporary one
        run_config=RunConfig(name=f"policyforge-{os.getpid()}-{time.strftime('%Y%m%d-%H%M%S')}",
                             storage_path=scratch, failure_config=FailureConfig(max_failures=0)),
    )
    try:
        trainer.fit()
    except KeyboardInterrupt:  # the workers' own "interrupted" lines do not reach the driver's terminal
        log(stopped_text("interrupted", run_path, workers))
        raise
    except Exception as e:  # Ray wraps a worker's exception; a mistake of the user's comes back as itself
        from policyforge.train.distributed import PeerFailed

        failures = _failures(e)
        causes = [f for f in failures if not isinstance(f, PeerFailed)]  # PeerFailed only echoes a cause
        first = causes[0] if causes else next(iter(failures), None)
        if first is not None and is_user_error(first):
            raise first from None
        raise  # anything else keeps Ray's error, with the worker's traceback
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def preflight(cfg: Config, resume: str | None = None) -> None:
    """The start-up checks of the loop that need neither a process group nor a model, run in the driver before
    Ray starts (the workers run them again): a misspelt algorithm, a missing model folder, data file or reward
    module, a setting a resume may not change, costs a second, not a cluster start and a worker's traceback."""
    from policyforge.data.user import DataError
    from policyforge.models.load import check_model_path
    from policyforge.rewards.score import load_reward_fn
    from policyforge.rewards.spec import reward_specs
    from policyforge.train.algorithm import resolve
    from policyforge.train.resume import check_resume_settings

    if resume:
        check_resume_settings(Path(resume), cfg)
    resolve(cfg.algo)
    for path in (cfg.model.path, cfg.model.ref_path):
        if path:
            check_model_path(path)
    for option, path in (("data.path", cfg.data.path), ("data.eval_path", cfg.data.eval_path)):
        if path and not os.path.exists(path):
            raise DataError(f"{option} {path!r} does not exist (read from {os.getcwd()})")
    for spec in reward_specs(cfg.data.reward) if isinstance(cfg.data.reward, str) else []:
        load_reward_fn(spec)


def _worker(config: dict) -> None:
    from policyforge.train.loop import train

    os.chdir(config["cwd"])  # Ray starts a worker in its own folder: relative paths (data, out_dir) would miss
    if config["gpus"]:
        from ray.train.torch import get_device

        from policyforge.train.distributed import LAUNCHER_DEVICE

        os.environ[LAUNCHER_DEVICE] = str(get_device())  # the GPU Ray gave this worker, as this worker numbers it
    train(config["cfg"], config["resume"], log=_say)


def _say(*parts) -> None:
    """A log line to stderr: Ray Train forwards a worker's print()s to the driver twice, its stderr once."""
    sys.stderr.write(" ".join(map(str, parts)) + "\n")
    sys.stderr.flush()


def _failures(error: Exception) -> list:
    """The worker exceptions inside Ray's error (WorkerGroupError.worker_failures), in rank order."""
    found = getattr(error, "worker_failures", None) or {}
    return [found[k] for k in sorted(found)] if isinstance(found, dict) else list(found)
