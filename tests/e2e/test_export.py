"""`policyforge export`: a run's newest checkpoint (full, or a LoRA adapter merged into its base) as a standalone
model folder that from_pretrained loads alone and that computes what the checkpoint does; bad sources and
destinations are refused in one line, and nothing half-written is left."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from policyforge.cli import main
from policyforge.models.load import load_model
from policyforge.train.loop import train
from tests.e2e.test_lora import QUIET, _latest, _lora_cfg

pytest.importorskip("peft")

IDS = torch.tensor([[5, 6, 7, 8, 9, 10]])


def _logits(model):
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_an_exported_run_loads_alone_and_computes_what_its_checkpoint_does(tiny_cfg, tmp_path, capsys, lora_rank):
    cfg = _lora_cfg(tiny_cfg, lora_rank) if lora_rank else tiny_cfg
    run = train(cfg, **QUIET)
    capsys.readouterr()  # the run's progress lines
    out = tmp_path / "exported"
    main(["export", str(run), "--out", str(out)])
    assert capsys.readouterr().out.strip() == str(out)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors"} <= names and "trainer.pt" not in names
    assert "adapter_config.json" not in names  # LoRA merged: a plain model
    alone = AutoModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(_logits(alone), _logits(load_model(str(_latest(run)), "float32", "cpu")[0]))
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_bad_sources_and_destinations_are_refused_in_one_line(tiny_cfg, tmp_path):
    run = train(tiny_cfg, **QUIET)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("mine")
    for args, says in [
        ([str(run), "--out", str(taken)], "already exists and is not an empty folder"),
        ([str(tmp_path / "nope"), "--out", str(tmp_path / "o")], "does not exist"),
        ([str(run), "--out", str(tmp_path / "o"), "--dtype", "int8"], "--dtype 'int8'; valid: float32"),
        ([str(run)], "needs --out DIR"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(["export", *args])
        assert says in str(e.value.code) and "\n" not in str(e.value.code)
    assert (taken / "x").read_text() == "mine" and not (tmp_path / "o").exists()


def test_a_run_without_a_checkpoint_says_so(tiny_cfg, tmp_path):
    run = train(tiny_cfg, **QUIET)
    for ckpt in (run / "checkpoints").iterdir():
        if ckpt.is_dir():
            import shutil

            shutil.rmtree(ckpt)
    (run / "checkpoints" / "latest").unlink()
    with pytest.raises(SystemExit, match="has no checkpoint yet"):
        main(["export", str(run), "--out", str(tmp_path / "o")])


def test_an_export_that_fails_midway_leaves_nothing(tiny_cfg, tmp_path, monkeypatch):
    from policyforge.train import checkpoint

    run = train(tiny_cfg, **QUIET)

    def disk_full(path, model, tok):
        path.mkdir(parents=True)
        (path / "config.json").write_text("{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_model_dir", disk_full)
    with pytest.raises(SystemExit, match="No space left on device"):  # the CLI's one line for a full disk
        main(["export", str(run), "--out", str(tmp_path / "new" / "deeper" / "policy")])
    assert not (tmp_path / "new").exists()


def test_a_bfloat16_run_exports_in_bfloat16_readable_by_all(tiny_cfg, tmp_path):
    import json
    import os

    tiny_cfg.model.dtype = "bfloat16"
    run = train(tiny_cfg, **QUIET)
    out = tmp_path / "bf16"
    main(["export", str(run), "--out", str(out)])
    config = json.loads((out / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"  # what the run computed in
    alone = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert next(alone.parameters()).dtype == torch.bfloat16
    torch.testing.assert_close(_logits(alone), _logits(load_model(str(_latest(run)), "bfloat16", "cpu")[0]),
                               atol=2e-3, rtol=0)  # a bfloat16 rounding step apart at most
    mask = os.umask(0)
    os.umask(mask)
    assert all(f.stat().st_mode & 0o777 == 0o666 & ~mask for f in out.iterdir())


def test_an_option_export_does_not_have_is_named(tmp_path):
    with pytest.raises(SystemExit, match=r"export has no option --output; its options are --out DIR"):
        main(["export", str(tmp_path), "--output", str(tmp_path / "o")])
