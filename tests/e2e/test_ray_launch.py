"""`train --ray-workers N`: the same data-parallel run placed by Ray Train instead of torchrun.

Two CPU workers on a local Ray instance train exactly as two torchrun processes do (the same
records), relative paths resolve from where the command ran, and a user's mistake a worker hits
comes back as the one-line error it is in one process.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'policyforge[ray]')")

from policyforge.train.config import ConfigError, load_yaml  # noqa: E402
from policyforge.train.ray_launch import train_on_ray  # noqa: E402
from tests.e2e.test_data_parallel import _metrics, _run_args, _torchrun  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throw-away local instance: no token file to write
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_ray_workers_train_as_torchrun_processes_do(local_ray, tiny_cfg, small_model_dir, tmp_path, monkeypatch):
    repo = Path(__file__).resolve().parents[2]
    by_torchrun = _torchrun(_run_args(small_model_dir, tmp_path, "torchrun"), repo)
    assert by_torchrun.returncode == 0, by_torchrun.stderr[-3000:]

    cfg = load_yaml(tmp_path / "torchrun" / "config.yaml")
    cfg.train.run_name, cfg.train.out_dir = "ray", "runs"  # relative: it must land in the folder the command ran in
    monkeypatch.chdir(tmp_path)
    train_on_ray(copy.deepcopy(cfg), None, workers=2, log=lambda *_: None)
    assert _metrics(tmp_path / "runs" / "ray") == _metrics(tmp_path / "torchrun")

    with pytest.raises(ConfigError, match="written by a run of 2 process"):  # raised in the worker, re-raised here
        train_on_ray(load_yaml(tmp_path / "runs" / "ray" / "config.yaml"), "runs/ray", workers=1, log=lambda *_: None)


def test_mistakes_fail_before_any_worker_starts(tiny_cfg):
    with pytest.raises(ConfigError, match="does not split evenly over 3 Ray workers"):
        train_on_ray(tiny_cfg, None, workers=3, log=lambda *_: None)  # 2 prompts a step
    with pytest.raises(ConfigError, match="at least 1 worker"):
        train_on_ray(tiny_cfg, None, workers=0, log=lambda *_: None)
    with pytest.raises(ConfigError, match="--ray-gpus-per-worker 0.5: give 1"):  # NCCL cannot share a GPU
        train_on_ray(tiny_cfg, None, workers=2, gpus_per_worker=0.5, log=lambda *_: None)
    tiny_cfg.model.device = "cpu"
    with pytest.raises(ConfigError, match="gives each worker a GPU, but model.device='cpu'"):
        train_on_ray(tiny_cfg, None, workers=2, gpus_per_worker=1, log=lambda *_: None)
    tiny_cfg.model.device = "cuda"
    with pytest.raises(ConfigError, match="the Ray workers get no GPU: add --ray-gpus-per-worker 1"):
        train_on_ray(tiny_cfg, None, workers=2, log=lambda *_: None)


def test_a_misspelt_loss_a_missing_model_or_data_file_fail_in_the_driver(tiny_cfg, tmp_path, monkeypatch):
    import ray

    from policyforge.algos.registry import UnknownAlgorithm
    from policyforge.data.user import DataError
    from policyforge.models.load import ModelError

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started before the mistake was found"))
    for change, error, says in [
        (lambda c: setattr(c.algo, "loss", "nope"), UnknownAlgorithm, "unknown loss 'nope'"),
        (lambda c: setattr(c.model, "path", str(tmp_path / "no-model")), ModelError, "no-model' does not exist"),
        (lambda c: setattr(c.data, "path", str(tmp_path / "no.jsonl")), DataError, "data.path .*no.jsonl' does not"),
    ]:
        cfg = copy.deepcopy(tiny_cfg)
        change(cfg)
        with pytest.raises(error, match=says):
            train_on_ray(cfg, None, workers=2, log=lambda *_: None)


def test_a_setting_a_resume_may_not_change_fails_in_the_driver(tiny_cfg, monkeypatch):
    from policyforge.train.loop import train

    tiny_cfg.train.save_every = 2
    run = train(copy.deepcopy(tiny_cfg), log=lambda *_: None)  # 2 steps, a checkpoint at step 2
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started before the mistake was found"))
    changed = load_yaml(run / "config.yaml")
    changed.optim.lr = 0.5
    with pytest.raises(ConfigError, match=r"optim.lr: 0.001 -> 0.5 differs"):
        train_on_ray(changed, str(run), workers=2, log=lambda *_: None)
    fewer = load_yaml(run / "config.yaml")
    fewer.train.steps = 1
    with pytest.raises(ConfigError, match="train.steps=1 but the checkpoint step_000002 is at step 2"):
        train_on_ray(fewer, str(run), workers=2, log=lambda *_: None)
