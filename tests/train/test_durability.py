"""A power loss cannot leave `checkpoints/latest` naming empty files: every file is fsync'd before its rename,
and the folder holding the new name after it (checked on the order of the real calls, recorded as they run)."""

import os
from pathlib import Path

import pytest

from policyforge.metrics.run_dir import write_atomic
from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model
from policyforge.train import checkpoint


@pytest.fixture
def disk_log(monkeypatch):
    """Every os.fsync, as the (device, inode) it flushed, and every os.replace, as its destination, in order."""
    log = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        real_fsync(fd)
        log.append(("fsync", identity(os.fstat(fd))))

    def replace(src, dst, **kwargs):
        real_replace(src, dst, **kwargs)
        log.append(("replace", Path(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return log


def identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def fsynced(path: Path) -> tuple[str, tuple[int, int]]:
    """The log entry of an fsync of `path` (a rename keeps the inode, so this finds the fsync of its .tmp)."""
    return "fsync", identity(os.stat(path))


def test_write_atomic_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, disk_log):
    target = tmp_path / "latest"
    write_atomic(target, "step_000001\n")
    renamed = disk_log.index(("replace", target))
    assert fsynced(target) in disk_log[:renamed]
    assert disk_log[renamed + 1:] == [fsynced(tmp_path)]


def test_every_file_of_a_checkpoint_is_fsynced_before_its_folder_is_renamed(tmp_path, disk_log):
    tok = char_tokenizer()
    model = tiny_model(tok, TinySpec(hidden=32, layers=1, heads=2, intermediate=64))
    final = checkpoint.save(tmp_path, 1, model, tok, {"step": 1})
    root, pointer = final.parent, final.parent / "latest"
    renamed, pointed = disk_log.index(("replace", final)), disk_log.index(("replace", pointer))
    paths = [final, *final.rglob("*")]
    assert {"model.safetensors", "trainer.pt", "tokenizer.json"} <= {p.name for p in paths}
    assert [p.name for p in paths if fsynced(p) not in disk_log[:renamed]] == []
    # the folder's rename is on disk before `latest` names it, `latest`'s text before its own rename
    assert fsynced(root) in disk_log[renamed:pointed] and fsynced(pointer) in disk_log[renamed:pointed]
    assert fsynced(root) in disk_log[pointed:]


def test_the_run_logs_are_on_disk_before_the_checkpoint_that_follows_them(tmp_path, disk_log):
    # a durable step_N beside a metrics.jsonl that ends before N would leave a gap once resumed
    for name in ("metrics.jsonl", "eval.jsonl"):
        (tmp_path / name).write_text('{"step": 1}\n')
    tok = char_tokenizer()
    final = checkpoint.save(tmp_path, 1, tiny_model(tok, TinySpec(hidden=32, layers=1, heads=2, intermediate=64)),
                            tok, {"step": 1})
    renamed = disk_log.index(("replace", final))
    assert fsynced(tmp_path / "metrics.jsonl") in disk_log[:renamed]
    assert fsynced(tmp_path / "eval.jsonl") in disk_log[:renamed]


def test_an_sft_model_is_on_disk_before_it_replaces_the_previous_one(tmp_path, disk_log):
    from policyforge.train.sft import save_sft_model

    tok = char_tokenizer()
    out = tmp_path / "sft"
    save_sft_model(out, tiny_model(tok, TinySpec(hidden=32, layers=1, heads=2, intermediate=64)), tok)
    renamed = disk_log.index(("replace", out))
    assert [p.name for p in out.rglob("*") if fsynced(p) not in disk_log[:renamed]] == []
    assert fsynced(tmp_path) in disk_log[renamed:]
