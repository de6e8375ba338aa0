"""FastDecoder computes what the Hugging Face forward computes, for each family it accepts."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from policyforge.rollout import sampler
from policyforge.rollout.fast_decoder import FastDecoder, reason_unsupported
from policyforge.rollout.sampler import SamplingSettings, position_ids, sample
from tests.small_models import small_qwen2

VOCAB = 40


def _llama(kv_heads=4, bias=False, rope=None):
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=kv_heads, attention_bias=bias,
                      max_position_embeddings=128, rope_scaling=rope, pad_token_id=0)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def _prompts():
    # left-padded: row 0 has 2 pad columns, row 1 none, row 2 one
    ids = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7], [0, 9, 8, 7, 6]])
    return ids, (ids != 0).long()


MODELS = {"llama": _llama, "llama_gqa_bias": lambda: _llama(kv_heads=2, bias=True), "llama_mqa": lambda: _llama(kv_heads=1),
          "llama_rope_linear": lambda: _llama(rope={"rope_type": "linear", "factor": 2.0}), "qwen2": lambda: small_qwen2(VOCAB)}


def lean_decode(model):
    """The lean decoder's logits for _prompts(): prefill, then 2 steps of fixed tokens; with the whole
    sequence (ids, attention mask) for the model's own forward, and the prompt width."""
    ids, mask = _prompts()
    new = torch.tensor([[11, 12, 13], [14, 15, 16], [17, 18, 19]])
    dec = FastDecoder(model, 3, ids.shape[1] + 3)
    fast = [dec.prefill(ids, mask)]
    keys = torch.cat([mask.bool(), torch.ones(3, 3, dtype=torch.bool)], 1)
    for t in range(2):
        fast.append(dec.step(new[:, t], ids.shape[1] + t, mask.sum(-1) + t, keys[:, : ids.shape[1] + t + 1]))
    return fast, torch.cat([ids, new], 1), keys.long(), ids.shape[1]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name", list(MODELS))
def test_prefill_and_steps_match_the_model_forward(name, fused, monkeypatch):
    from policyforge.rollout import fast_decoder

    if not fused:  # large models run their projections one by one instead of from fused copies
        monkeypatch.setattr(fast_decoder, "FUSE_MAX_PARAMS", 0)
    model = MODELS[name]()
    assert reason_unsupported(model, 16) is None
    fast, full, attn, p = lean_decode(model)
    # the whole sequence through the model's own forward: logits at the last prompt column and the new tokens
    with torch.no_grad():
        ref = model(input_ids=full, attention_mask=attn, position_ids=position_ids(attn)).logits.float()
    for t, got in enumerate(fast):
        torch.testing.assert_close(got, ref[:, p - 1 + t], rtol=1e-4, atol=1e-4)


def test_shared_prompt_rows_fill_every_member():
    model = _llama(kv_heads=2)
    ids, mask = _prompts()
    rows = torch.tensor([0, 0, 1, 2, 2, 2])
    shared = FastDecoder(model, 6, 8)
    plain = FastDecoder(model, 6, 8)
    torch.testing.assert_close(shared.prefill(ids, mask, rows), plain.prefill(ids[rows], mask[rows]))
    for a, b in zip(shared.k + shared.v, plain.k + plain.v):
        torch.testing.assert_close(a[:, :, :5], b[:, :, :5])


def test_sampler_takes_the_same_greedy_path_either_way(monkeypatch):
    model = _llama(kv_heads=2, bias=True)
    ids, mask = _prompts()
    group = torch.tensor([0, 1, 2])
    settings = SamplingSettings(max_new_tokens=6, temperature=0.0)
    fast = sample(model, ids, mask, settings, eos_id=1, pad_id=0, group=group)
    monkeypatch.setattr(sampler, "reason_unsupported", lambda *a: "forced generic path")
    generic = sample(model, ids, mask, settings, eos_id=1, pad_id=0, group=group)
    assert torch.equal(fast[0], generic[0]) and torch.equal(fast[1], generic[1])
    torch.testing.assert_close(fast[2], generic[2], rtol=1e-4, atol=1e-4)


def test_unsupported_models_are_named():
    model = _llama()
    assert reason_unsupported(torch.nn.Linear(2, 2)) is not None
    model.model.layers[0].mlp.up_proj = torch.nn.Sequential(model.model.layers[0].mlp.up_proj)
    assert "Sequential" in reason_unsupported(model)
    assert "rope type" in reason_unsupported(_llama(rope={"rope_type": "dynamic", "factor": 2.0}))


def test_hooked_or_offloaded_models_take_the_generic_path():
    """The lean paths read the weights directly, so a forward hook (steering, patching) would silently not fire."""
    from policyforge.models.load import load_model
    from policyforge.train.logprobs import training_unsupported

    model = load_model("builtin:tiny")[0]
    ids = torch.tensor([[1, 5, 6]])
    model(input_ids=ids)  # a forward installs nothing that would refuse a plain model
    model(input_ids=ids, output_hidden_states=True)  # transformers' output-capturing hooks: inert, not refused
    assert any(m._forward_hooks for m in model.modules())
    assert reason_unsupported(model) is None and training_unsupported(model.train()) is None
    handle = model.model.layers[0].register_forward_hook(lambda mod, args, out: out)
    assert "'model.layers.0' has forward hooks" in reason_unsupported(model)
    assert "forward hooks" in training_unsupported(model)
    handle.remove()
    glob = torch.nn.modules.module.register_module_forward_pre_hook(lambda mod, args: None)
    try:
        assert "global module forward hooks" in reason_unsupported(model)
    finally:
        glob.remove()
    assert reason_unsupported(model) is None
    with torch.device("meta"):
        assert "meta device" in reason_unsupported(_llama_on_meta())


def test_a_wrapper_that_forwards_config_and_model_is_not_taken_for_the_model():
    """PEFT's PeftModel forwards `.config` and `.model` (the whole LlamaForCausalLM): refused, not an AttributeError."""
    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.model, self.config = inner, inner.config

    assert "wrapped model (Wrapper)" in reason_unsupported(Wrapper(_llama()))


def _llama_on_meta():
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                      num_attention_heads=4, max_position_embeddings=128)
    return LlamaForCausalLM(cfg)


@pytest.mark.parametrize("generic", [False, True])
def test_dropping_finished_rows_changes_nothing(monkeypatch, generic):
    model = _llama(kv_heads=2)
    ids, mask = _prompts()
    ids, mask = ids.repeat(3, 1), mask.repeat(3, 1)  # 9 rows, 3 per prompt
    group = torch.arange(3).repeat(3)
    pick, calls = sampler._pick, []

    def scripted(logits, settings, generator):  # rows 0, 4 and 5 say EOS (id 1) at the second token
        nxt, lp = pick(logits, settings, generator)
        calls.append(len(nxt))
        if len(calls) % 100 == 2:
            nxt = nxt.clone()
            nxt[[0, 4, 5]] = 1
        return nxt, lp

    monkeypatch.setattr(sampler, "_pick", scripted)
    if generic:
        monkeypatch.setattr(sampler, "reason_unsupported", lambda *a: "forced generic path")
    settings = SamplingSettings(max_new_tokens=5, temperature=0.0)
    runs = {}
    for at in (2.0, 0.125):  # never drop / drop once an eighth has finished
        monkeypatch.setattr(sampler, "COMPACT_AT", at)
        calls.clear()
        runs[at] = sample(model, ids, mask, settings, eos_id=1, pad_id=0, group=group), list(calls)
    (kept, kept_rows), (dropped, dropped_rows) = runs[2.0], runs[0.125]
    assert kept_rows == [9] * 5 and dropped_rows == [9, 9, 6, 6, 6]
    assert torch.equal(kept[0], dropped[0]) and torch.equal(kept[1], dropped[1])
    assert kept[1][[0, 4, 5]].sum(-1).tolist() == [2.0, 2.0, 2.0]  # ended with EOS at the second token
    torch.testing.assert_close(kept[2], dropped[2], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_decodes_like_its_own_forward(dtype):
    model = _llama(kv_heads=2, bias=True).to(dtype)
    ids, mask = _prompts()
    new = torch.tensor([[11, 12], [14, 15], [17, 18]])
    dec = FastDecoder(model, 3, ids.shape[1] + 2)
    got = [dec.prefill(ids, mask)]
    keys = torch.cat([mask.bool(), torch.ones(3, 2, dtype=torch.bool)], 1)
    for t in range(2):  # the decode step in half precision too: its key bias, rotation matmul and fused adds
        got.append(dec.step(new[:, t], ids.shape[1] + t, mask.sum(-1) + t, keys[:, : ids.shape[1] + t + 1]))
    full, attn = torch.cat([ids, new], 1), keys.long()
    with torch.no_grad():
        ref = model(input_ids=full, attention_mask=attn, position_ids=position_ids(attn)).logits.float()
    assert dec.k[0].dtype == dtype
    p = ids.shape[1]
    for t, logits in enumerate(got):
        assert logits.isfinite().all()
        torch.testing.assert_close(logits, ref[:, p - 1 + t], rtol=0.05, atol=0.05)  # rounding differs by kernel


def test_masked_attention_repeating_kv_heads_equals_grouped_mode():
    from policyforge.models.llama_family import masked_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 8, generator=g), torch.randn(2, 2, 7, 8, generator=g), torch.randn(2, 2, 7, 8, generator=g)
    allowed = torch.rand(2, 1, 5, 7, generator=g) > 0.3
    allowed[..., 0] = True
    torch.testing.assert_close(masked_attention(q, k, v, allowed, repeat_kv=True),
                               masked_attention(q, k, v, allowed, repeat_kv=False))


def test_rotation_matrices_rotate_as_rotary_embedding_does():
    from policyforge.models.llama_family import rotate
    from policyforge.rollout.fast_decoder import rotation_matrices

    torch.manual_seed(0)
    cos, sin = torch.randn(5, 8), torch.randn(5, 8)  # independent values, so every index placement is checked
    x = torch.randn(5, 3, 8)  # rows x heads x head_dim
    torch.testing.assert_close(torch.bmm(x, rotation_matrices(cos, sin)), rotate(x, cos[:, None], sin[:, None]))
    # by hand for one pair of the half-split convention: (x0, x4) of row 0
    out = torch.bmm(x, rotation_matrices(cos, sin))[0, 0]
    x0, x4 = x[0, 0, 0], x[0, 0, 4]
    torch.testing.assert_close(out[0], x0 * cos[0, 0] - x4 * sin[0, 0])
    torch.testing.assert_close(out[4], x4 * cos[0, 4] + x0 * sin[0, 4])
