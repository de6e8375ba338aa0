"""SIGTERM, a scheduler's preemption: the run stops after the step that is running, with a checkpoint, says how to
continue, and --resume goes on to the end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from tests.cli.test_cli_runs import QUICK


def test_sigterm_stops_after_the_running_step_with_a_checkpoint_and_the_run_resumes(tmp_path):
    args = [sys.executable, "-m", "policyforge.cli", "train", *QUICK, "--train.steps", "400", "--train.save-every",
            "1000", "--train.out-dir", str(tmp_path), "--train.run-name", "r", "--train.no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / "r" / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):  # a few steps in, none saved yet
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 143, out  # not finished: a retry wrapper resumes it
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    last = steps[-1]
    assert steps == list(range(1, last + 1)) and last < 400  # stopped early, every step recorded once
    assert (tmp_path / "r" / "checkpoints" / f"step_{last:06d}").is_dir()  # saved though save_every is 1000
    assert f"stopped after step {last} on SIGTERM" in out and f"continue with --resume {tmp_path / 'r'}" in out
    done = subprocess.run([sys.executable, "-m", "policyforge.cli", "train", "--resume", str(tmp_path / "r"),
                           "--train.steps", str(last + 2)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == list(range(1, last + 3))

