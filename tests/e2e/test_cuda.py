"""The GPU paths: what the CPU tests check, run on a CUDA device.

Skipped where torch sees no CUDA device (CI, the 2-core machines). On a GPU machine:
`python -m pytest -q tests/e2e/test_cuda.py` (bench/gpu.sh runs it before the benchmark).
POLICYFORGE_TEST_DEVICE=cpu runs the same checks on the CPU, to check the tests themselves.
"""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from policyforge.data.tasks import BuiltinTask
from policyforge.models.llama_family import masked_attention
from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model
from policyforge.rollout.fast_decoder import FastDecoder
from policyforge.rollout.sampler import position_ids
from policyforge.train import logprobs as logprobs_mod
from policyforge.train.config import RolloutConfig
from policyforge.train.logprobs import forward_logprobs
from policyforge.train.loop import train
from policyforge.train.setup import build_optimizer, rollout
from tests.rollout.test_fast_decoder import _llama, _prompts

DEVICE = os.environ.get("POLICYFORGE_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-3), (torch.bfloat16, 0.05)])
def test_lean_decoder_matches_the_model_forward(dtype, tol):
    model = _llama(kv_heads=2, bias=True).to(DEVICE, dtype)
    ids, mask = (t.to(DEVICE) for t in _prompts())
    new = torch.tensor([[11, 12], [14, 15], [17, 18]], device=DEVICE)
    dec = FastDecoder(model, 3, ids.shape[1] + 2)
    got = [dec.prefill(ids, mask)]
    keys = torch.cat([mask.bool(), torch.ones(3, 2, dtype=torch.bool, device=DEVICE)], 1)
    for t in range(2):
        got.append(dec.step(new[:, t], ids.shape[1] + t, mask.sum(-1) + t, keys[:, : ids.shape[1] + t + 1]))
    full, attn = torch.cat([ids, new], 1), keys.long()
    with torch.no_grad():
        ref = model(input_ids=full, attention_mask=attn, position_ids=position_ids(attn)).logits.float()
    for t, logits in enumerate(got):
        assert logits.device.type == torch.device(DEVICE).type
        torch.testing.assert_close(logits, ref[:, ids.shape[1] - 1 + t], rtol=tol, atol=tol)


def _model_and_batch(seed: int = 0):
    tok = char_tokenizer()
    model = tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128), seed=0).to(DEVICE)
    task = BuiltinTask("reversal", 6, eval_size=4)
    examples = [task.train_example(i) for i in range(3)]
    batch = rollout(model, tok, examples, RolloutConfig(group_size=4, max_new_tokens=7),
                    torch.Generator(device=DEVICE).manual_seed(seed))
    return model, batch


def test_sampled_logprobs_equal_a_fresh_forward():
    model, batch = _model_and_batch()
    assert batch.completion_ids.device.type == torch.device(DEVICE).type
    with torch.no_grad():
        for shared in (False, True):
            fresh = forward_logprobs(model, batch, 1.0, shared_prefix=shared)["logp"]
            torch.testing.assert_close(fresh, batch.behav_logp, rtol=0, atol=1e-4)


def test_packed_forward_equals_the_plain_one_with_gradients():
    model, batch = _model_and_batch(seed=1)
    adv = torch.randn(len(batch), generator=torch.Generator().manual_seed(3)).to(DEVICE)
    first, inverse = logprobs_mod.shared_prompts(batch)
    outs = []
    for fn in (lambda: logprobs_mod._plain(model, batch, 1.0, False),
               lambda: logprobs_mod._packed_stats(model, batch, 1.0, False, first, inverse)):
        model.zero_grad()
        out = fn()
        (-(out["logp"] * adv[:, None]).sum()).backward()
        outs.append((out["logp"].detach() * batch.completion_mask, [p.grad.clone() for p in model.parameters()]))
    (plain, g_plain), (packed, g_packed) = outs
    torch.testing.assert_close(packed, plain, rtol=1e-4, atol=1e-4)
    for a, b in zip(g_plain, g_packed):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_grouped_query_attention_repeats_heads_on_the_device_as_the_cpu_grouped_mode():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 8, generator=g), torch.randn(2, 2, 7, 8, generator=g), torch.randn(2, 2, 7, 8, generator=g)
    allowed = torch.rand(2, 1, 5, 7, generator=g) > 0.3
    allowed[..., 0] = True
    on_device = masked_attention(*(x.to(DEVICE) for x in (q, k, v, allowed)))  # repeat_kv defaults to is_cuda
    torch.testing.assert_close(on_device.cpu(), masked_attention(q, k, v, allowed, repeat_kv=False),
                               rtol=1e-4, atol=1e-5)


def test_a_short_run_trains_on_the_device_with_its_optimizer(tiny_cfg):
    tiny_cfg.model.device = DEVICE
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"  # rewards that vary within a group: real gradients
    run = train(tiny_cfg, log=lambda *_: None)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(0 < r["grad_norm"] < float("inf") and r["tokens_per_s"] > 0 for r in rows)
    final = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    saved, start = (load_file(os.path.join(d, "model.safetensors")) for d in (final, tiny_cfg.model.path))
    assert any(not torch.equal(saved[k], start[k]) for k in start), "the weights never moved"
    model = tiny_model(char_tokenizer(), TinySpec(hidden=64, layers=2, heads=4, intermediate=128)).to(DEVICE)
    optimizer, _ = build_optimizer(model, tiny_cfg)
    assert optimizer.defaults["fused"] is True  # one fused AdamW kernel, on CUDA as on the CPU


def test_a_device_run_resumes_exactly_and_refuses_a_cpu_resume(tiny_cfg):
    from policyforge.train.config import ConfigError

    tiny_cfg.model.device = DEVICE
    tiny_cfg.train.steps, tiny_cfg.train.save_every = 4, 100
    whole = train(tiny_cfg, log=lambda *_: None)
    tiny_cfg.train.run_name, tiny_cfg.train.stop_after = "interrupted", 2
    part = train(tiny_cfg, log=lambda *_: None)
    tiny_cfg.train.stop_after = None
    rows = lambda run: [{k: v for k, v in json.loads(x).items() if not k.endswith("_s")}  # noqa: E731 (timings out)
                        for x in (run / "metrics.jsonl").read_text().splitlines()]
    if DEVICE == "cuda":  # trainer.pt holds CUDA tensors; it loads on the CPU, and the sampler's device is named
        tiny_cfg.model.device = "cpu"
        with pytest.raises(ConfigError, match="sampler ran on cuda"):
            train(tiny_cfg, resume=str(part), log=lambda *_: None)
        tiny_cfg.model.device = DEVICE
    resumed = train(tiny_cfg, resume=str(part), log=lambda *_: None)
    # approx: a GPU backward may add in a different order from run to run (atomics)
    assert rows(resumed) == [pytest.approx(r, rel=1e-4, abs=1e-6) for r in rows(whole)]


def test_a_lora_run_on_the_device_trains_only_adapters_and_its_reference_is_the_base(tiny_cfg):
    pytest.importorskip("peft")
    tiny_cfg.model.device, tiny_cfg.model.lora_rank, tiny_cfg.model.lora_alpha = DEVICE, 4, 8.0
    tiny_cfg.data.reward, tiny_cfg.optim.lr = "tests.e2e.test_train:vowel_reward", 3e-2
    tiny_cfg.algo.drift = {"k3": 0.04}  # the reference forward runs, with the adapters off
    run = train(tiny_cfg, log=lambda *_: None)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["kl_ref"] == pytest.approx(0.0, abs=1e-6) and all(r["grad_norm"] > 0 for r in rows)
    final = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    adapter = load_file(os.path.join(final, "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in adapter.items())  # B left zero: nothing trained


def test_a_reward_model_scores_on_the_device_as_on_the_cpu(tmp_path):
    from policyforge.rewards.model import RewardModel
    from tests.rewards.test_reward_model import save_reward_model

    path = save_reward_model(tmp_path / "rm")
    prompts, completions = ["rev:abc=", "rev:hello="], ["cba", "ol"]
    on_device = RewardModel(path, DEVICE).scores(prompts, completions)
    on_cpu = RewardModel(path, "cpu").scores(prompts, completions)
    torch.testing.assert_close(on_device, on_cpu, rtol=1e-4, atol=1e-4)
