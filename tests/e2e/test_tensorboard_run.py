"""train.tensorboard: the run's records as TensorBoard events, read back from the event files themselves."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

pytest.importorskip("tensorboardX", reason="the tensorboard extra is not installed")

from tensorboardX.proto import event_pb2  # noqa: E402

from policyforge.train.loop import train  # noqa: E402


def _events(folder: Path) -> list[tuple[str, event_pb2.Event]]:
    """(file name, event) of every record in the folder's event files (TFRecord: length, crc, data, crc)."""
    out = []
    for path in sorted(folder.iterdir()):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + n])
            out.append((path.name, event))
            i += 12 + n + 4
    return out


def _scalars(events) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for _, e in events:
        for v in e.summary.value:
            out.setdefault(v.tag, {})[e.step] = v.simple_value
    return out


def test_records_become_events_and_a_resume_purges_the_redone_steps(tiny_cfg):
    tiny_cfg.train.tensorboard, tiny_cfg.train.steps, tiny_cfg.train.stop_after = True, 3, 2
    part = train(tiny_cfg, log=lambda *_: None)
    tiny_cfg.train.stop_after = None
    run = train(tiny_cfg, resume=str(part), log=lambda *_: None)
    events = _events(run / "tensorboard")
    scalars = _scalars(events)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(scalars["train/reward_mean"]) == [1, 2, 3]
    for r in metrics:
        assert scalars["train/entropy"][r["step"]] == pytest.approx(r["entropy"], rel=1e-6)
    assert sorted(scalars["eval/accuracy"]) == [0, 3]
    files = sorted({name for name, _ in events})
    assert len(files) == 2  # the first invocation's, and the resume's
    purges = [e.step for name, e in events if name == files[1] and e.HasField("session_log")]
    assert purges == [3]  # TensorBoard drops the first file's events from step 3 on: none are redone here


def test_without_tensorboardx_the_option_is_refused_before_the_run(tiny_cfg, monkeypatch):
    import importlib.util

    from policyforge.train.config import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboardX" else real(name, *a))
    tiny_cfg.train.tensorboard = True
    with pytest.raises(ConfigError, match=r"train.tensorboard needs tensorboardX.*policyforge\[tensorboard\]"):
        train(tiny_cfg, log=lambda *_: None)
    assert not (Path(tiny_cfg.train.out_dir) / "run").exists()
