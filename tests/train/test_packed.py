"""The packed shared-prefix forward equals the plain per-sequence forward: log-probs, entropies, logits, gradients."""

import pytest
import torch

from policyforge.data.tasks import BuiltinTask
from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model
from policyforge.rollout.batch import RolloutBatch
from policyforge.train import logprobs as logprobs_mod
from policyforge.train.config import RolloutConfig
from policyforge.train.logprobs import forward_logprobs
from policyforge.train.packed import is_packable
from policyforge.train.setup import rollout
from tests.small_models import small_qwen2


def _llama(tok):
    return tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128), seed=0)


def _qwen2(tok):
    return small_qwen2(len(tok), tok.pad_token_id)


def _batch(model, tok, seed=0) -> RolloutBatch:
    task = BuiltinTask("reversal", 6, eval_size=4)
    examples = [task.train_example(i) for i in range(3)]
    batch = rollout(model, tok, examples, RolloutConfig(group_size=4, max_new_tokens=7),
                    torch.Generator().manual_seed(seed))
    assert len(set(batch.completion_mask.sum(-1).tolist())) > 1, "want completions of different lengths"
    return batch


def _run(model, batch, fn, adv):
    model.zero_grad()
    out = fn()
    (-(out["logp"] * adv[:, None]).sum() + 0.1 * out["entropy"].sum()).backward()
    return {k: v.detach() for k, v in out.items()}, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("make", [_llama, _qwen2])
def test_packed_equals_plain(make):
    tok = char_tokenizer()
    model = make(tok)
    batch = _batch(model, tok)
    batch.temperature = torch.linspace(0.6, 1.3, len(batch))  # per-row temperatures (AEPO's tempered rows)
    assert is_packable(batch)
    adv = torch.randn(len(batch), generator=torch.Generator().manual_seed(3))
    first, inverse = logprobs_mod.shared_prompts(batch)
    plain, g_plain = _run(model, batch, lambda: logprobs_mod._plain(model, batch, 1.0, True), adv)
    packed, g_packed = _run(model, batch, lambda: logprobs_mod._packed_stats(model, batch, 1.0, True, first, inverse), adv)
    for k in ("logp", "entropy", "logits"):
        mask = batch.completion_mask if k != "logits" else batch.completion_mask[..., None]
        torch.testing.assert_close(packed[k], plain[k] * mask, rtol=1e-4, atol=1e-5)
    for a, b in zip(g_plain, g_packed):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_forward_logprobs_takes_the_padded_shared_path_for_other_models(monkeypatch):
    tok = char_tokenizer()
    model = _llama(tok)
    batch = _batch(model, tok)
    adv = torch.randn(len(batch))
    plain, g_plain = _run(model, batch, lambda: forward_logprobs(model, batch, 0.8), adv)
    monkeypatch.setattr(logprobs_mod, "training_unsupported", lambda *a: "forced")
    shared, g_shared = _run(model, batch, lambda: forward_logprobs(model, batch, 0.8, shared_prefix=True), adv)
    torch.testing.assert_close(shared["logp"], plain["logp"], rtol=1e-4, atol=1e-5)
    for a, b in zip(g_plain, g_shared):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_a_mask_with_holes_is_not_packable():
    tok = char_tokenizer()
    batch = _batch(_llama(tok), tok)
    batch.completion_mask[0, 0] = 0.0
    assert not is_packable(batch)


def test_tempered_rows_keep_their_behaviour_logprobs_but_train_at_the_run_temperature():
    from policyforge.train.setup import add_tempered_rows

    tok = char_tokenizer()
    model = _llama(tok)
    task = BuiltinTask("reversal", 6, eval_size=4)
    examples = [task.train_example(i) for i in range(2)]
    cfg = RolloutConfig(group_size=3, max_new_tokens=5, temperature=1.0)
    gen = torch.Generator().manual_seed(0)
    batch = add_tempered_rows(rollout(model, tok, examples, cfg, gen), model, tok, examples, cfg, gen, 1.5)
    tempered = torch.tensor([s == "tempered" for s in batch.source])
    assert tempered.sum() == 6 and torch.all(batch.temperature == 1.0)
    with torch.no_grad():
        at_run_t = forward_logprobs(model, batch, 1.0)["logp"]
        batch.temperature = torch.where(tempered, 1.5, 1.0)
        at_sampling_t = forward_logprobs(model, batch, 1.0)["logp"]
    # the sampler recorded log pi^T (behaviour); the trainer's log-probs are log pi at the run's temperature
    torch.testing.assert_close(batch.behav_logp, at_sampling_t, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(at_run_t[tempered], at_sampling_t[tempered], atol=1e-3)


def test_packed_in_bfloat16_is_close_to_plain():
    # Freshly initialised q/k projections give near-uniform attention, which barely depends on positions: a packed
    # forward with every completion position off by one then moves the log-probs by only ~0.003 nats, about as much
    # as bf16 rounding does (~0.002). Sharper attention (q and k scaled by 8, scores by 64) makes the positions
    # matter: measured on CPU, the real packed forward stays within 0.002 of the plain one in bf16, while positions
    # off by one move it by 0.11. The bound, 0.01, is 5x the first and a tenth of the second.
    tok = char_tokenizer()
    model = _llama(tok)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    batch = _batch(model, tok)
    model = model.to(torch.bfloat16)
    first, inverse = logprobs_mod.shared_prompts(batch)
    with torch.no_grad():
        plain = logprobs_mod._plain(model, batch, 1.0, False)["logp"]
        packed = logprobs_mod._packed_stats(model, batch, 1.0, False, first, inverse)["logp"]
    torch.testing.assert_close(packed, plain * batch.completion_mask, rtol=0.0, atol=1e-2)


@pytest.mark.parametrize("path", ["packed", "grouped"])
def test_shared_prefix_gradients_are_bitwise_repeatable(path):
    """A group's prompt keys, and the hidden state predicting its first tokens, feed every completion of
    the group. Their backward must add the completions' gradients in a fixed order: the backward of
    advanced indexing with repeated indices adds with atomics across threads on CPU, so its sums (and a
    seeded run's weights) varied from run to run."""
    tok = char_tokenizer()
    model = tiny_model(tok, TinySpec(hidden=128, layers=2, heads=4, intermediate=256), seed=0)
    task = BuiltinTask("reversal", 6, eval_size=4)
    examples = [task.train_example(i) for i in range(8)]
    rc = RolloutConfig(group_size=16, max_new_tokens=12)
    batch = rollout(model, tok, examples, rc, torch.Generator().manual_seed(0))
    batch = batch.select(torch.randperm(len(batch), generator=torch.Generator().manual_seed(1)))  # groups interleaved,
    # so both threads add into every group's shared entries
    first, inverse = logprobs_mod.shared_prompts(batch)
    fn = logprobs_mod._packed_stats if path == "packed" else logprobs_mod._grouped
    adv = torch.randn(len(batch), generator=torch.Generator().manual_seed(3))
    runs = [_run(model, batch, lambda: fn(model, batch, 1.0, False, first, inverse), adv)[1] for _ in range(12)]
    for grads in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], grads))
