"""Tiny end-to-end runs of the real loop with the built-in model."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from policyforge.metrics.step_record import TIMING
from policyforge.train.loop import train

REQUIRED = {
    "reward_mean", "reward_std", "accuracy", "kl_ref", "kl_old", "entropy", "clip_frac_low", "clip_frac_high",
    "ratio_min", "ratio_mean", "ratio_max", "completion_len_mean", "completion_len_max", "truncation_rate",
    "zero_var_group_frac", "grad_norm", *TIMING,
}


def test_two_step_run_writes_the_run_directory(tiny_cfg):
    run = train(tiny_cfg, log=lambda *_: None)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert REQUIRED <= set(rows[0])
    summary = json.loads((run / "summary.json").read_text())
    assert {"eval_accuracy_start", "eval_accuracy_end", "steps", "wall_seconds"} <= set(summary)
    assert summary["steps"] == 2
    assert (run / "config.yaml").read_text().startswith(f"# started in: {Path.cwd()}\nmodel:")
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert (ckpt / "model.safetensors").exists() and (ckpt / "trainer.pt").exists()
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 2] and "pass@2" in evals[0]


def vowel_reward(prompt, completion, **_):
    """A dense reward an untrained model's random text already varies on."""
    return float(sum(c in "aeiou" for c in completion))


def test_several_updates_with_micro_batches_and_kl(tiny_cfg):
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"
    tiny_cfg.optim.updates_per_batch = 2
    tiny_cfg.optim.micro_batch_size = 3
    tiny_cfg.algo.drift = {"k3": 0.1}
    tiny_cfg.algo.loss_kwargs = {"eps_high": 0.28}
    run = train(tiny_cfg, log=lambda *_: None)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["reward_std"] > 0.0 and rows[0]["grad_norm"] > 0.0
    assert rows[-1]["kl_ref"] > 0.0  # the policy moved away from the reference
    assert rows[-1]["ratio_max"] != 1.0  # the second update saw a ratio away from 1


def _metrics(run):
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(run):
    """The final checkpoint's weights of a run, by name."""
    from safetensors.torch import load_file

    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    return load_file(ckpt / "model.safetensors")


def test_interrupted_and_resumed_run_matches_uninterrupted(tiny_cfg, tmp_path):
    """Everything a step depends on comes back from the checkpoint: the weights, AdamW's moments and step
    count, and the LR schedule. The reward varies within groups, so every step moves the weights, and the
    warm-up is longer than the run, so step 3 trains at a different rate from step 2: a resume that
    skipped any of the three would train step 3 differently."""
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"
    tiny_cfg.optim.warmup_steps = 8  # the learning rate is still rising at the stop point (step 2)
    tiny_cfg.train.steps = 4
    tiny_cfg.train.save_every = 100
    tiny_cfg.optim.updates_per_batch = 2
    whole = train(tiny_cfg, log=lambda *_: None)
    assert all(r["grad_norm"] > 0 for r in _metrics(whole))  # each step moved the weights: the check has content

    tiny_cfg.train.run_name = "interrupted"
    tiny_cfg.train.stop_after = 2
    part = train(tiny_cfg, log=lambda *_: None)
    assert len(_metrics(part)) == 2
    tiny_cfg.train.stop_after = None
    resumed = train(tiny_cfg, resume=str(part), log=lambda *_: None)
    assert resumed == part
    assert _metrics(resumed) == _metrics(whole)
    w_whole, w_resumed = _weights(whole), _weights(resumed)
    assert w_whole.keys() == w_resumed.keys()
    assert all(torch.equal(w_whole[k], w_resumed[k]) for k in w_whole)
    s1 = json.loads((whole / "summary.json").read_text())
    s2 = json.loads((resumed / "summary.json").read_text())
    assert s1["eval_accuracy_end"] == s2["eval_accuracy_end"]


def test_builtin_tiny_model_trains(tiny_cfg):
    from policyforge.models.tiny import char_tokenizer, tiny_model

    tiny_cfg.model.path = "builtin:tiny"
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"  # varies within a group, so there is a gradient
    tiny_cfg.train.steps = 1
    run = train(tiny_cfg, log=lambda *_: None)
    assert json.loads((run / "summary.json").read_text())["steps"] == 1
    assert _metrics(run)[0]["grad_norm"] > 0
    # builtin:tiny is the default-sized model initialised from train.seed: the saved weights moved away from it
    start = tiny_model(char_tokenizer(), seed=tiny_cfg.train.seed).state_dict()
    trained = _weights(run)
    assert trained.keys() <= start.keys()
    assert all(trained[k].shape == start[k].shape for k in trained)
    assert any(not torch.equal(trained[k], start[k]) for k in trained)


def test_run_directory_is_never_overwritten(tiny_cfg):
    import pytest

    from policyforge.train.config import ConfigError

    train(tiny_cfg, log=lambda *_: None)
    with pytest.raises(ConfigError, match="already holds a run.*--resume"):
        train(tiny_cfg, log=lambda *_: None)


def test_aepo_adds_tempered_groups_at_the_controlled_temperature(tiny_cfg, monkeypatch):
    from policyforge.train import setup

    temps = []  # the temperature of every rollout setup.add_tempered_rows draws

    def spy_rollout(model, tokenizer, examples, cfg, generator):
        temps.append(cfg.temperature)
        return real_rollout(model, tokenizer, examples, cfg, generator)

    # train/sampling.py calls its own imported `rollout` for the fresh rows, so only add_tempered_rows goes through
    # the spy
    real_rollout = setup.rollout
    monkeypatch.setattr(setup, "rollout", spy_rollout)
    tiny_cfg.algo.loss = "aepo"
    # a target entropy of 0 is below any step's entropy, so after step 1 the controller picks t_low
    tiny_cfg.algo.loss_kwargs = {"t_low": 0.7, "target_entropy": 0.0}
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"
    run = train(tiny_cfg, log=lambda *_: None)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    # half of the tokens come from the tempered groups (same prompts, same group size)
    assert all(0.0 < r["tempered_frac"] < 1.0 for r in rows)
    # step 1: no entropy observed yet, so t_high (the authors' default 1.2); step 2: step 1's entropy is above
    # the target, so the configured t_low
    assert temps == [1.2, 0.7]
    assert all(r["entropy"] > 0.0 for r in rows)


def test_resume_is_exact_with_dropout_on(tiny_cfg, tmp_path):
    """Passes other than the update (old log-probs, evaluation) run in eval mode at every step: a
    freshly loaded model starts in eval mode, an uninterrupted one is in train mode after its
    first update, and a pass in train mode would draw dropout masks and differ between the two."""
    model_dir = tmp_path / "with-dropout"
    shutil.copytree(tiny_cfg.model.path, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.3}))
    tiny_cfg.model.path = str(model_dir)
    tiny_cfg.model.disable_dropout = False
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"
    tiny_cfg.train.steps, tiny_cfg.train.save_every, tiny_cfg.train.eval_every = 4, 100, 2
    tiny_cfg.optim.updates_per_batch = 2
    whole = train(tiny_cfg, log=lambda *_: None)
    assert any(r["kl_old"] > 0 for r in _metrics(whole))  # dropout is on in the updates

    tiny_cfg.train.run_name, tiny_cfg.train.stop_after = "interrupted", 2
    part = train(tiny_cfg, log=lambda *_: None)
    tiny_cfg.train.stop_after = None
    resumed = train(tiny_cfg, resume=str(part), log=lambda *_: None)
    assert _metrics(resumed) == _metrics(whole)
    assert (resumed / "eval.jsonl").read_text() == (whole / "eval.jsonl").read_text()


def test_logged_lr_is_the_rate_the_step_used(tiny_cfg):
    tiny_cfg.optim.warmup_steps, tiny_cfg.train.steps = 4, 3
    run = train(tiny_cfg, log=lambda *_: None)
    lrs = [r["lr"] for r in _metrics(run)]
    assert lrs == [tiny_cfg.optim.lr * s / 4 for s in (1, 2, 3)]  # linear warm-up: step s trains at lr * s / 4


def test_a_sequence_level_loss_under_another_aggregation_is_pointed_out(tiny_cfg):
    tiny_cfg.algo.loss, tiny_cfg.algo.loss_kwargs, tiny_cfg.train.steps = "gspo", {}, 1
    lines = []
    train(tiny_cfg, log=lines.append)
    assert any("algo.loss=gspo is defined with algo.aggregation=seq_mean_token_mean" in x and "uses token_mean" in x
               for x in lines)
    tiny_cfg.algo.aggregation, tiny_cfg.train.run_name = "seq_mean_token_mean", "paper"
    lines.clear()
    train(tiny_cfg, log=lines.append)
    assert not any("is defined with" in x for x in lines)


def test_tis_with_top_p_says_what_it_does_not_correct(tiny_cfg):
    tiny_cfg.algo.loss, tiny_cfg.algo.loss_kwargs, tiny_cfg.train.steps = "tis", {}, 1
    tiny_cfg.rollout.top_p = 0.9
    lines = []
    train(tiny_cfg, log=lines.append)
    assert any("algo.loss=tis weighs tokens by the sampler's log-probs" in x for x in lines)


def test_bfloat16_run_resumes_exactly_and_float16_training_is_refused(tiny_cfg):
    from policyforge.train.config import ConfigError

    tiny_cfg.model.dtype = "bfloat16"
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"
    tiny_cfg.train.steps, tiny_cfg.train.save_every = 4, 100
    whole = train(tiny_cfg, log=lambda *_: None)
    assert all(r["grad_norm"] > 0 for r in _metrics(whole))
    tiny_cfg.train.run_name, tiny_cfg.train.stop_after = "interrupted", 2
    part = train(tiny_cfg, log=lambda *_: None)
    tiny_cfg.train.stop_after = None
    resumed = train(tiny_cfg, resume=str(part), log=lambda *_: None)
    assert _metrics(resumed) == _metrics(whole)  # the float32 masters came back with the checkpoint
    tiny_cfg.model.dtype, tiny_cfg.train.run_name = "float16", "fp16"
    with pytest.raises(ConfigError, match="model.dtype=float16 cannot be trained here"):
        train(tiny_cfg, log=lambda *_: None)
