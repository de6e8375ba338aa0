"""train.tensorboard: the run's records as TensorBoard events, read back from the event files themselves."""

from __future__ import annotations

import json
import shutil
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
    """What TensorBoard shows: each tag's value by step, file after file, where a purge (a session_log START
    at step s) drops the values seen so far from step s on."""
    out: dict[str, dict[int, float]] = {}
    for _, e in events:
        if e.HasField("session_log"):
            out = {tag: {k: v for k, v in steps.items() if k < e.step} for tag, steps in out.items()}
        for v in e.summary.value:
            out.setdefault(v.tag, {})[e.step] = v.simple_value
    return out


def _numbers(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


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
    assert purges == [0]  # the resume's file drops every older event and holds the kept records again


def test_steps_redone_while_tensorboard_was_off_show_their_new_values(tiny_cfg):
    """Events written, then the steps redone with TensorBoard off (a resume from an older checkpoint), then
    TensorBoard on again: the events are the records' values, not the first attempt's."""
    tiny_cfg.train.tensorboard, tiny_cfg.train.steps, tiny_cfg.train.save_every = True, 4, 1
    tiny_cfg.train.stop_after = 3
    run = train(tiny_cfg, log=lambda *_: None)
    first = {json.loads(line)["step"]: json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()}
    (run / "checkpoints" / "latest").unlink()  # as if killed before step 3's checkpoint landed
    shutil.rmtree(run / "checkpoints" / "step_000003")
    tiny_cfg.train.tensorboard = False
    train(tiny_cfg, resume=str(run), log=lambda *_: None)  # redoes step 3, no events
    tiny_cfg.train.tensorboard, tiny_cfg.train.stop_after = True, None
    train(tiny_cfg, resume=str(run), log=lambda *_: None)
    scalars = _scalars(_events(run / "tensorboard"))
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in metrics] == [1, 2, 3, 4]
    assert metrics[2]["step_s"] != first[3]["step_s"]  # step 3 was redone: its timings are new
    for r in metrics:
        for name, value in _numbers(r).items():
            assert scalars[f"train/{name}"][r["step"]] == pytest.approx(value, rel=1e-6, nan_ok=True), (r["step"], name)
    assert sorted(scalars["train/reward_mean"]) == [1, 2, 3, 4]


def test_without_tensorboardx_the_option_is_refused_before_the_run(tiny_cfg, monkeypatch):
    import importlib.util

    from policyforge.train.config import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboardX" else real(name, *a))
    tiny_cfg.train.tensorboard = True
    with pytest.raises(ConfigError, match=r"train.tensorboard needs tensorboardX.*policyforge\[tensorboard\]"):
        train(tiny_cfg, log=lambda *_: None)
    assert not (Path(tiny_cfg.train.out_dir) / "run").exists()
