"""train.keep_checkpoints: a run that saves more checkpoints keeps only the newest ones."""

import torch

from policyforge.train.loop import train


def test_only_the_newest_checkpoints_are_kept(tiny_cfg):
    tiny_cfg.train.steps, tiny_cfg.train.save_every = 5, 1  # five checkpoints written
    tiny_cfg.train.keep_checkpoints = 3  # not the default (2), so a run that ignored the setting shows
    run = train(tiny_cfg, log=lambda *_: None)
    root = run / "checkpoints"
    kept = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert kept == ["step_000003", "step_000004", "step_000005"]  # no .tmp folder left either
    assert (root / "latest").read_text().strip() == "step_000005"
    # each kept folder is the checkpoint of its own step
    assert [torch.load(root / k / "trainer.pt", weights_only=False)["step"] for k in kept] == [3, 4, 5]
