"""LoRA through peft (model.lora_rank > 0): only the adapters train, the reference is the base model (adapters
off), checkpoints hold the adapter and resume exactly, `policyforge eval` loads one, and the lean decoder and the
packed training forward compute what the generic paths compute. Real runs of the small saved model, no mocks."""

import copy
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

import policyforge.train.setup as setup  # noqa: E402
from policyforge.cli import main  # noqa: E402
from policyforge.models import lora  # noqa: E402
from policyforge.models.load import ModelError, load_model  # noqa: E402
from policyforge.rollout import fast_decoder, sampler  # noqa: E402
from policyforge.rollout.fast_decoder import reason_unsupported  # noqa: E402
from policyforge.rollout.sampler import SamplingSettings, position_ids, sample  # noqa: E402
from policyforge.train import checkpoint  # noqa: E402
from policyforge.train import logprobs as logprobs_mod  # noqa: E402
from policyforge.train.algorithm import resolve  # noqa: E402
from policyforge.train.config import ConfigError  # noqa: E402
from policyforge.train.validate import validate  # noqa: E402
from policyforge.train.evaluate import evaluate_run  # noqa: E402
from policyforge.train.logprobs import forward_logprobs, training_unsupported  # noqa: E402
from policyforge.train.logprobs import reference_logprobs  # noqa: E402
from policyforge.train.loop import StepParts, train, train_step  # noqa: E402
from policyforge.train.step import micro_batches  # noqa: E402
from policyforge.metrics.step_record import TIMING  # noqa: E402
from tests.rollout.test_fast_decoder import _llama, _prompts, lean_decode  # noqa: E402
from tests.small_models import small_qwen2  # noqa: E402

QUIET = dict(log=lambda *_: None)


def _lora_cfg(cfg, rank=4):
    cfg.model.lora_rank, cfg.model.lora_alpha = rank, 8.0
    cfg.data.reward = "tests.e2e.test_train:vowel_reward"  # rewards vary within groups: every step has a gradient
    cfg.optim.lr = 3e-2
    return cfg


def _metrics(run):
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in (run / "metrics.jsonl").read_text().splitlines()]


def _latest(run):
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


def _wrapped(model, rank=4, seed=1):
    """`model` with LoRA on every linear layer, B drawn non-zero (it starts at zero: the base model exactly)."""
    model = lora.wrap(model, rank, 8.0, 0.0, ["all-linear"], "builtin:tiny")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def _parts(cfg, model, tok):
    """StepParts of a LoRA run as train() builds them (reference = the policy itself)."""
    from policyforge.train.setup import build_data, build_optimizer

    source, _, reward = build_data(cfg.data, cfg.train.seed)
    opt, sched = build_optimizer(model, cfg)
    ref = setup.reference_policy(model)
    return StepParts(cfg, resolve(cfg.algo), model, tok, ref, opt, sched, torch.Generator().manual_seed(0), reward), source


# ---- what trains ----------------------------------------------------------------------------------------------


def test_only_the_adapters_train_and_the_count_is_logged(tiny_cfg, small_model_dir):
    cfg = _lora_cfg(tiny_cfg)
    base, tok = load_model(small_model_dir, "float32", "cpu")
    n_base = sum(p.numel() for p in base.parameters())
    lines = []
    model = setup.with_lora(base, cfg.model, lines.append)
    # 2 layers of q/k/v/o (64 -> 64), gate/up (64 -> 128), down (128 -> 64): r * (in + out) each
    expected = 2 * 4 * (4 * (64 + 64) + 3 * (64 + 128))
    trainable, total = lora.parameter_counts(model)
    assert (trainable, total) == (expected, n_base + expected)
    assert lines == [f"LoRA: {expected:,} trainable parameters of {total:,} ({expected / total:.2%}): rank 4, alpha 8, "
                     "dropout 0, on all-linear"]
    parts, source = _parts(cfg, model, tok)
    assert sum(p.numel() for g in parts.optimizer.param_groups for p in g["params"]) == expected
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for step in (1, 2, 3):
        record, _ = train_step(parts, step, [source.train_example(2 * step + i) for i in range(2)])
        assert record["grad_norm"] > 0
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.requires_grad and not torch.equal(p, before[name]), f"{name} did not move"
        else:
            assert not p.requires_grad and p.grad is None and torch.equal(p, before[name]), f"{name} changed"


def test_a_short_run_moves_the_adapters_with_finite_metrics(tiny_cfg):
    run = train(_lora_cfg(tiny_cfg), **QUIET)
    rows = _metrics(run)
    assert all(isinstance(v, (int, float)) and v == v and abs(v) != float("inf") for r in rows for v in r.values())
    ckpt = _latest(run)
    assert not (ckpt / "model.safetensors").exists() and (ckpt / lora.ADAPTER_CONFIG).exists()
    from safetensors.torch import load_file

    adapter = load_file(ckpt / lora.ADAPTER_WEIGHTS)
    assert {k.split(".lora_")[-1] for k in adapter} == {"A.weight", "B.weight"}
    assert all(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k), "B starts at 0: it never moved"
    base = json.loads((ckpt / lora.ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    assert base == os.path.abspath(tiny_cfg.model.path)  # absolute: the checkpoint loads from anywhere


# ---- the reference is the base model ----------------------------------------------------------------------------


def test_reference_is_the_base_model_with_adapters_off(tiny_cfg, small_model_dir):
    cfg = _lora_cfg(tiny_cfg)
    cfg.algo.drift = {"k3": 0.1}
    base, tok = load_model(small_model_dir, "float32", "cpu")  # stays the original, unwrapped model
    model = setup.with_lora(load_model(small_model_dir, "float32", "cpu")[0], cfg.model)
    parts, source = _parts(cfg, model, tok)
    assert parts.ref is model  # no copy
    for step in (1, 2, 3):
        _, batch = train_step(parts, step, [source.train_example(2 * step + i) for i in range(2)])
    chunks = micro_batches(batch, 64, whole_groups=True)
    ref = reference_logprobs(parts, batch, chunks)["logp"]
    with torch.no_grad():
        from_base = forward_logprobs(base, batch, 1.0, shared_prefix=True)["logp"]
        policy = forward_logprobs(model, batch, 1.0, shared_prefix=True)["logp"]
    torch.testing.assert_close(ref, from_base, rtol=1e-5, atol=1e-6)
    assert (policy - from_base).abs().max() > 1e-3, "the policy should have moved away from the base"
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)  # adapters back on, trainable


def test_a_lora_run_makes_no_frozen_copy_and_its_kl_starts_at_zero(tiny_cfg, monkeypatch):
    def no_copy(model):
        raise AssertionError("a LoRA run's reference must be its base model, not a copy")

    monkeypatch.setattr(setup, "frozen_copy", no_copy)
    tiny_cfg.algo.drift = {"k3": 0.1}
    tiny_cfg.train.steps = 3
    rows = _metrics(train(_lora_cfg(tiny_cfg), **QUIET))
    assert abs(rows[0]["kl_ref"]) < 1e-6  # B = 0 at the first step: the policy is its base
    assert rows[-1]["kl_ref"] > 1e-4  # and then moves away from it


# ---- checkpoints ----------------------------------------------------------------------------------------------


def test_interrupted_and_resumed_lora_run_matches_uninterrupted(tiny_cfg):
    """LoRA dropout on, two updates per batch and a rising learning rate: the adapter, AdamW's state, the
    schedule and the dropout's random stream must all come back for step 3 to be the same."""
    cfg = _lora_cfg(tiny_cfg)
    cfg.model.lora_dropout = 0.1
    cfg.optim.warmup_steps, cfg.optim.updates_per_batch = 8, 2
    cfg.train.steps, cfg.train.save_every = 4, 100
    whole = train(cfg, **QUIET)
    cfg.train.run_name, cfg.train.stop_after = "interrupted", 2
    part = train(cfg, **QUIET)
    cfg.train.stop_after = None
    resumed = train(cfg, resume=str(part), **QUIET)
    assert _metrics(resumed) == _metrics(whole) and len(_metrics(whole)) == 4
    from safetensors.torch import load_file

    a, b = load_file(_latest(whole) / lora.ADAPTER_WEIGHTS), load_file(_latest(resumed) / lora.ADAPTER_WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_of_another_kind_is_refused(tiny_cfg, small_model_dir):
    run = train(_lora_cfg(tiny_cfg), **QUIET)
    plain = load_model(small_model_dir, "float32", "cpu")[0]
    with pytest.raises(ConfigError, match="holds a LoRA adapter, but this run's model takes full weights"):
        checkpoint.load_weights(plain, _latest(run))
    other_rank = lora.wrap(load_model(small_model_dir, "float32", "cpu")[0], 8, 8.0, 0.0, ["all-linear"], "x")
    with pytest.raises(ConfigError, match="does not fit this run's LoRA"):
        checkpoint.load_weights(other_rank, _latest(run))


def test_eval_loads_a_lora_checkpoint_as_its_base_plus_the_adapter(tiny_cfg, small_model_dir, tmp_path, capsys):
    run = train(_lora_cfg(tiny_cfg), **QUIET)
    ckpt = _latest(run)
    merged, _ = load_model(str(ckpt), "float32", "cpu")
    trained = lora.wrap(load_model(small_model_dir, "float32", "cpu")[0], 4, 8.0, 0.0, ["all-linear"], "x")
    checkpoint.load_weights(trained, ckpt)
    base = load_model(small_model_dir, "float32", "cpu")[0]
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        got, want, plain = (m.eval()(input_ids=ids).logits for m in (merged, trained, base))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    # the CLI on the checkpoint gives the run's own final held-out numbers
    capsys.readouterr()
    main(["eval", "--model.path", str(ckpt), "--data.task", "reversal", "--data.task-size", "4", "--data.eval-size",
          "4", "--rollout.max-new-tokens", "4", "--train.pass-k", "2", "--data.reward", tiny_cfg.data.reward,
          "--model.device", "cpu"])
    final = json.loads((run / "eval.jsonl").read_text().splitlines()[-1])
    final.pop("step")
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == final
    # and the same greedy completions as the run's last evaluation (decoded there from the unmerged policy)
    logged = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    logged = [{k: v for k, v in r.items() if k != "step"} for r in logged if r["step"] == tiny_cfg.train.steps]
    tok = load_model(str(ckpt), "float32", "cpu")[1]
    held_out = setup.build_data(tiny_cfg.data, tiny_cfg.train.seed)[1]
    assert evaluate_run(merged, tok, held_out, lambda prompt, completion, **_: 0.0, tiny_cfg)["samples"] == [
        dict(r, reward=0.0, correct=False) for r in logged]
    assert evaluate_run(base, tok, held_out, lambda prompt, completion, **_: 0.0, tiny_cfg)["samples"] != [
        dict(r, reward=0.0, correct=False) for r in logged], "the adapter changes no greedy completion: the check would be empty"
    # a base model that is gone: one line naming it
    moved = tmp_path / "adapter"
    shutil.copytree(ckpt, moved)
    config = json.loads((moved / lora.ADAPTER_CONFIG).read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (moved / lora.ADAPTER_CONFIG).write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"LoRA adapter on base model '.*gone'.*does not exist"):
        load_model(str(moved), "float32", "cpu")


def test_a_lora_run_whose_base_moved_resumes_exports_and_evaluates_with_its_new_place(tiny_cfg, tmp_path, capsys):
    """A run trained where the base lived elsewhere (a laptop's folder, a cluster's scratch): --resume takes the
    base's new place as --model.path (its weight files' sizes checked), export and eval take --lora-base."""
    from policyforge.cli_export import export
    from policyforge.train.config import load_yaml

    home = tmp_path / "home" / "base"
    shutil.copytree(tiny_cfg.model.path, home)
    cfg = _lora_cfg(tiny_cfg)
    cfg.model.path, cfg.train.steps, cfg.train.save_every, cfg.train.stop_after = str(home), 3, 1, 2
    run = train(cfg, **QUIET)
    whole_cfg = copy.deepcopy(cfg)
    whole_cfg.train.run_name, whole_cfg.train.stop_after = "whole", None
    whole = train(whole_cfg, **QUIET)
    there = tmp_path / "scratch" / "base"
    shutil.copytree(home, there)  # a copy: other modification times, the same sizes
    shutil.rmtree(tmp_path / "home")

    with pytest.raises(ModelError, match=r"base model '.*home/base'.*--lora-base DIR"):
        export(str(run), str(tmp_path / "out-without"))
    with lora.moved_base(str(there)):
        out = export(str(run), str(tmp_path / "out"))
    assert (out / "model.safetensors").exists()

    resumed_cfg = load_yaml(run / "config.yaml")
    resumed_cfg.model.path, resumed_cfg.train.stop_after = str(there), None
    lines = []
    train(resumed_cfg, resume=str(run), log=lines.append)
    assert any(x.startswith(f"note: model.path moved from {str(home)!r} to {str(there)!r}") for x in lines)
    assert _metrics(run) == _metrics(whole)  # the same run as if the base had never moved
    assert load_yaml(run / "config.yaml").model.path == str(there)

    capsys.readouterr()
    main(["eval", str(whole), "--lora-base", str(there)])  # whole's checkpoints still name the old place
    final = json.loads((whole / "eval.jsonl").read_text().splitlines()[-1])
    final.pop("step")
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == final


def test_a_run_started_from_a_lora_checkpoint_whose_base_moved_resumes_with_lora_base(tiny_cfg, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(tiny_cfg.model.path, home)
    first = _lora_cfg(copy.deepcopy(tiny_cfg))
    first.model.path, first.train.run_name = str(home), "first"
    ckpt = _latest(train(first, **QUIET))
    second = _lora_cfg(copy.deepcopy(tiny_cfg))
    second.model.path, second.train.run_name = str(ckpt), "second"  # LoRA on the first run's merged policy
    second.train.steps, second.train.save_every, second.train.stop_after = 3, 1, 2
    run = train(second, **QUIET)
    there = tmp_path / "there"
    shutil.move(str(home), there)
    with pytest.raises(SystemExit, match=r"--lora-base DIR \(train, eval, export\)"):
        main(["train", "--resume", str(run)])
    main(["train", "--resume", str(run), "--lora-base", str(there)])
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 3


def test_export_and_eval_warn_when_the_lora_base_changed_since_the_run_trained(tiny_cfg, tmp_path, capsys):
    from policyforge.cli_export import export

    base = tmp_path / "base"
    shutil.copytree(tiny_cfg.model.path, base)
    cfg = _lora_cfg(tiny_cfg)
    cfg.model.path = str(base)
    run = train(cfg, **QUIET)
    said = []
    export(str(run), str(tmp_path / "out"), log=said.append)
    assert not any(x.startswith("warning") for x in said)  # the base as the run trained on it: no word
    weights = base / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # rewritten in place
    said = []
    export(str(run), str(tmp_path / "out2"), log=said.append)
    assert any(x.startswith(f"warning: the weight files of the LoRA base {str(base)!r} changed") for x in said)
    capsys.readouterr()
    main(["eval", str(run)])
    assert f"warning: the weight files of the LoRA base {str(base)!r} changed" in capsys.readouterr().err


def test_a_resume_refuses_a_new_model_path_that_is_not_the_moved_base(tiny_cfg, tmp_path, small_model_dir):
    from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model
    from policyforge.train.config import load_yaml

    home = tmp_path / "home"
    shutil.copytree(tiny_cfg.model.path, home)
    cfg = _lora_cfg(tiny_cfg)
    cfg.model.path, cfg.train.steps, cfg.train.save_every, cfg.train.stop_after = str(home), 3, 1, 2
    run = train(cfg, **QUIET)
    other = tmp_path / "other"  # another model: its weight file has another size
    tok = char_tokenizer()
    tiny_model(tok, TinySpec(hidden=32, layers=1, heads=2, intermediate=64)).save_pretrained(other)
    tok.save_pretrained(other)
    resumed = load_yaml(run / "config.yaml")
    resumed.model.path, resumed.train.stop_after = str(other), None
    with pytest.raises(ConfigError, match="model.path: .*other' differs"):  # the run's base is still there
        train(resumed, resume=str(run), **QUIET)
    shutil.rmtree(home)
    with pytest.raises(ConfigError, match=r"cannot be taken as the run's base '.*home' moved: its weight files' "
                                          r"contents differ"):
        train(resumed, resume=str(run), **QUIET)
    # the same shape and sizes, other weights (a fine-tune): refused too
    from safetensors.torch import load_file, save_file

    tuned = tmp_path / "tuned"
    shutil.copytree(small_model_dir, tuned)
    weights = load_file(tuned / "model.safetensors")
    save_file({k: v + 0.01 for k, v in weights.items()}, tuned / "model.safetensors", metadata={"format": "pt"})
    assert (tuned / "model.safetensors").stat().st_size == (Path(small_model_dir) / "model.safetensors").stat().st_size
    resumed.model.path = str(tuned)
    with pytest.raises(ConfigError, match=r"its weight files' contents differ"):
        train(resumed, resume=str(run), **QUIET)


# ---- bad settings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option,value,message", [
    ("lora_rank", -1, "model.lora_rank=-1: must be at least 0"),
    ("lora_alpha", 0.0, "model.lora_alpha=0.0: must be greater than 0"),
    ("lora_dropout", 1.0, r"model.lora_dropout=1.0: a probability, must be in \[0, 1\)"),
    ("lora_targets", [], r"model.lora_targets=\[\]: name the modules"),
    ("lora_targets", ["all-linear", "q_proj"], "all-linear already names every linear layer"),
    ("lora_alpha", 32.0, r"model.lora_alpha is read only with LoRA \(model.lora_rank > 0; it is 0"),
    ("lora_targets", ["q_proj"], "model.lora_targets is read only with LoRA"),
])
def test_bad_lora_settings_fail_in_one_line(tiny_cfg, option, value, message):
    setattr(tiny_cfg.model, option, value)
    with pytest.raises(ConfigError, match=message) as e:
        validate(tiny_cfg)
    assert "\n" not in str(e.value)


def test_missing_peft_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # as if not installed
    with pytest.raises(SystemExit) as e:
        main(["train", "--model.lora-rank", "4"])
    assert str(e.value.code) == "error: model.lora_rank=4 needs peft, which is not installed: pip install 'policyforge[lora]'"


def test_targets_that_match_nothing_fail_before_the_run_directory_is_written(tiny_cfg):
    tiny_cfg.model.lora_rank, tiny_cfg.model.lora_targets = 4, ["qproj"]
    with pytest.raises(ModelError, match=r"model.lora_targets=\['qproj'\]: .*not found.*q_proj") as e:
        train(tiny_cfg, **QUIET)
    assert "\n" not in str(e.value)
    assert not Path(tiny_cfg.train.out_dir, "run").exists()


# ---- the lean paths ---------------------------------------------------------------------------------------------

LEAN = {"llama": lambda: _llama(kv_heads=2, bias=True), "qwen2": lambda: small_qwen2(40)}


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name", list(LEAN))
def test_lean_decoder_decodes_a_lora_model_as_its_forward_does(name, fused, monkeypatch):
    if not fused:  # large models run each LoRA layer's own forward instead of a merged weight
        monkeypatch.setattr(fast_decoder, "FUSE_MAX_PARAMS", 0)
    model = _wrapped(LEAN[name]()).eval()
    assert reason_unsupported(model, 16) is None
    fast, full, attn, p = lean_decode(model)
    with torch.no_grad():
        ref = model(input_ids=full, attention_mask=attn, position_ids=position_ids(attn)).logits.float()
        with lora.adapters_off(model):
            base = model(input_ids=full, attention_mask=attn, position_ids=position_ids(attn)).logits.float()
    assert (ref - base).abs().max() > 0.1, "the adapters change nothing: the check would be empty"
    for t, got in enumerate(fast):
        torch.testing.assert_close(got, ref[:, p - 1 + t], rtol=1e-4, atol=1e-4)


def test_sampler_on_a_lora_model_is_the_same_either_path(monkeypatch):
    model = _wrapped(_llama(kv_heads=2, bias=True)).eval()
    ids, mask = _prompts()
    settings = SamplingSettings(max_new_tokens=6, temperature=1.0)
    fast = sample(model, ids, mask, settings, eos_id=1, pad_id=0, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(sampler, "reason_unsupported", lambda *a: "forced generic path")
    generic = sample(model, ids, mask, settings, eos_id=1, pad_id=0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fast[0], generic[0]) and torch.equal(fast[1], generic[1])
    torch.testing.assert_close(fast[2], generic[2], rtol=1e-4, atol=1e-4)


def test_packed_forward_of_a_lora_model_equals_the_plain_one_with_gradients():
    from policyforge.data.tasks import BuiltinTask
    from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model
    from policyforge.train.config import RolloutConfig
    from policyforge.train.setup import rollout

    tok = char_tokenizer()
    model = _wrapped(tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128), seed=0))
    task = BuiltinTask("reversal", 6, eval_size=4)
    batch = rollout(model, tok, [task.train_example(i) for i in range(3)], RolloutConfig(group_size=4, max_new_tokens=7),
                    torch.Generator().manual_seed(0))
    assert training_unsupported(model.train(), 20) is None  # the packed path takes LoRA models
    adv = torch.randn(len(batch), generator=torch.Generator().manual_seed(3))
    first, inverse = logprobs_mod.shared_prompts(batch)
    lora_params = [p for p in model.parameters() if p.requires_grad]

    def run(fn):
        model.zero_grad()
        out = fn()
        (-(out["logp"] * adv[:, None]).sum() + 0.1 * out["entropy"].sum()).backward()
        return {k: v.detach() for k, v in out.items()}, [p.grad.clone() for p in lora_params]

    plain, g_plain = run(lambda: logprobs_mod._plain(model, batch, 1.0, True))
    packed, g_packed = run(lambda: logprobs_mod._packed_stats(model, batch, 1.0, True, first, inverse))
    for k in ("logp", "entropy", "logits"):
        mask = batch.completion_mask if k != "logits" else batch.completion_mask[..., None]
        torch.testing.assert_close(packed[k], plain[k] * mask, rtol=1e-4, atol=1e-5)
    assert all(g.abs().sum() > 0 for g in g_packed)  # gradients reach every A and B
    for a, b in zip(g_plain, g_packed):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_other_lora_variants_take_the_generic_paths():
    import peft

    model = peft.get_peft_model(_llama(), peft.LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    assert "LoRA variant" in reason_unsupported(model)


def test_all_linear_adapts_a_model_outside_the_llama_family(tiny_cfg, tmp_path):
    """GPT-2's projections are Conv1D, not nn.Linear: 'all-linear' adapts them too, and the run takes the generic
    paths, with the same reference trick (kl_ref 0 while B is 0, then growing)."""
    from policyforge.models.tiny import char_tokenizer
    from tests.e2e.test_other_architectures import build

    tok = char_tokenizer()
    path = tmp_path / "gpt2"
    build("gpt2", tok).save_pretrained(path)
    tok.save_pretrained(path)
    tiny_cfg.model.path, tiny_cfg.train.steps, tiny_cfg.algo.drift = str(path), 3, {"k3": 0.1}
    lines = []
    rows = _metrics(train(_lora_cfg(tiny_cfg), log=lines.append))
    # 2 blocks of c_attn (32 -> 96), attn c_proj (32 -> 32), c_fc (32 -> 128), mlp c_proj (128 -> 32)
    expected = 2 * 4 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))
    assert any(line.startswith(f"LoRA: {expected:,} trainable parameters") for line in lines)
    assert abs(rows[0]["kl_ref"]) < 1e-6 and rows[-1]["kl_ref"] > 1e-4


def test_a_lora_checkpoint_starts_a_new_run(tiny_cfg):
    """model.path may name a LoRA checkpoint: the new run starts from its merged weights (fresh adapters on them,
    or full fine-tuning), and the new run's own checkpoint loads back through both adapters."""
    first = _latest(train(_lora_cfg(tiny_cfg), **QUIET))
    start, tok = load_model(str(first), "float32", "cpu")
    tiny_cfg.model.path, tiny_cfg.train.run_name = str(first), "second"
    second = _latest(train(tiny_cfg, **QUIET))
    assert json.loads((second / lora.ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == str(first.resolve())
    trained = lora.wrap(start, 4, 8.0, 0.0, ["all-linear"], str(first))
    checkpoint.load_weights(trained, second)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        torch.testing.assert_close(load_model(str(second), "float32", "cpu")[0].eval()(input_ids=ids).logits,
                                   trained.eval()(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    tiny_cfg.model.lora_rank, tiny_cfg.model.lora_alpha, tiny_cfg.train.run_name = 0, 16.0, "full"
    assert (_latest(train(tiny_cfg, **QUIET)) / "model.safetensors").exists()


def test_lora_on_the_builtin_model_is_refused_with_what_to_use():
    from policyforge.train.config import Config

    cfg = Config()
    cfg.model.lora_rank = 4
    with pytest.raises(ConfigError, match="LoRA adapts a saved model .* e.g. checkpoints/demo-sft"):
        validate(cfg)


def test_sft_with_lora_trains_and_saves_the_adapter_alone(tiny_cfg, tmp_path):
    from safetensors.torch import load_file

    from policyforge.train.sft import sft

    tiny_cfg.model.lora_rank, tiny_cfg.model.lora_alpha = 4, 8.0
    tiny_cfg.data.task_size, tiny_cfg.sft.steps, tiny_cfg.sft.batch_size, tiny_cfg.sft.lr = 4, 6, 8, 3e-2
    tiny_cfg.sft.out = str(tmp_path / "sft")
    base_before = load_file(Path(tiny_cfg.model.path) / "model.safetensors")
    lines = []
    out = sft(tiny_cfg, log=lines.append)
    assert any(x.startswith("LoRA: ") for x in lines) and "held-out solution loss" in lines[-1]
    assert (out / "adapter_config.json").exists() and not (out / "model.safetensors").exists()
    assert not (out / "README.md").exists()
    base_after = load_file(Path(tiny_cfg.model.path) / "model.safetensors")
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)  # the base is untouched
    merged, tok = load_model(str(out))
    base, _ = load_model(tiny_cfg.model.path)
    ids = tok(["rev:abcd="], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert (merged(input_ids=ids).logits - base(input_ids=ids).logits).abs().max() > 1e-3  # the adapter counts
    sft(tiny_cfg, log=lambda *_: None)  # an adapter folder as sft.out is a saved model: replaced, not refused
