"""A data-parallel run under torchrun whose launcher is killed outright: the workers stop after their step with a
checkpoint (distributed.stop_with_launcher, preempt.py), rather than training on unseen, holding the run's lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.e2e.test_data_parallel import _free_port, _run_args


def test_workers_whose_torchrun_launcher_is_killed_stop_after_their_step_with_a_checkpoint(tmp_path, small_model_dir):
    # torchrun passes SIGTERM on, but a SIGKILL'd launcher cannot: the kernel's parent-death signal stands in
    args = _run_args(small_model_dir, tmp_path, "r") + ["--train.steps", "400", "--train.save-every", "1000"]
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                                 "--master-port", str(_free_port()), "-m", "policyforge.cli", "train", *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    run, deadline = tmp_path / "r", time.time() + 240
    while not ((run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= 2):
        assert launcher.poll() is None and time.time() < deadline, "the run did not start"
        time.sleep(0.2)
    launcher.kill()  # SIGKILL: torchrun passes nothing on
    launcher.wait()
    while (run / "run.lock").exists():  # released by the main worker as it exits
        assert time.time() < deadline + 120, "the workers went on training after their launcher died"
        time.sleep(0.2)
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert last < 400 and (run / "checkpoints" / f"step_{last:06d}").is_dir()
