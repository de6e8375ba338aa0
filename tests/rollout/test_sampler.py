"""The KV-cache sampler: EOS, stop strings, top-p / top-k, recorded log-probs, shared prompts."""

import pytest
import torch

from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model
from policyforge.rollout.sampler import (SamplingSettings, cut_at_stop, filter_logits, position_ids, sample,
                                         stop_token_ids)
from policyforge.train.evaluate import encode_prompts


def _model(seed=0):
    tok = char_tokenizer()
    return tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128), seed=seed).eval(), tok


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    out = filter_logits(logits, top_k=2)
    assert torch.isinf(out[0, [0, 3]]).all() and torch.equal(out[0, [1, 2]], logits[0, [1, 2]])


def test_top_p_keeps_the_smallest_nucleus():
    # probs 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps 0.5 and 0.3 (mass before the third is 0.8 >= 0.75)
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = filter_logits(probs.log(), top_p=0.75)
    assert torch.isfinite(out[0, :2]).all() and torch.isinf(out[0, 2:]).all()
    # the top token always stays even when it alone exceeds top_p
    assert torch.isfinite(filter_logits(probs.log(), top_p=0.1)[0, 0])


class _Scripted(torch.nn.Module):
    """Wraps a model but forces token `tok` with probability 1 at step `at` (for EOS / stop tests)."""

    def __init__(self, inner, forced: dict[int, int]):
        super().__init__()
        self.inner, self.forced, self.calls = inner, forced, 0

    def forward(self, **kw):
        out = self.inner(**kw)
        step, self.calls = self.calls, self.calls + 1
        if step in self.forced:
            out.logits[:, -1] = -1e9
            out.logits[:, -1, self.forced[step]] = 0.0
        return out


class _EosInRowZero(torch.nn.Module):
    """Wraps a model: EOS (and pad, so that a pad id in the output can only be padding) is impossible for
    every row, except that row 0 writes EOS for certain at step `at`."""

    def __init__(self, inner, eos: int, pad: int, at: int):
        super().__init__()
        self.inner, self.eos, self.pad, self.at, self.calls = inner, eos, pad, at, 0

    def forward(self, **kw):
        out = self.inner(**kw)
        step, self.calls = self.calls, self.calls + 1
        out.logits[:, -1, [self.eos, self.pad]] = -1e9
        if step == self.at:  # no row has finished before: the decode batch still holds every row, in order
            out.logits[0, -1] = -1e9
            out.logits[0, -1, self.eos] = 0.0
        return out


@pytest.mark.parametrize("rows", [2, 9])  # 1 of 2 finished: cut from the decode batch; 1 of 9: rides along as padding
def test_eos_ends_a_row_and_pads_after_it(rows):
    model, tok = _model()
    prompts = ["rev:abc=", "rev:abcdef="] * (rows // 2) + ["sort:cab="] * (rows % 2)
    ids, attn = encode_prompts(tok, prompts, "cpu")
    forced = _EosInRowZero(model, tok.eos_token_id, tok.pad_token_id, at=2)  # row 0's third token is EOS
    out, mask, logp = sample(forced, ids, attn, SamplingSettings(8), tok.eos_token_id, tok.pad_token_id,
                             torch.Generator().manual_seed(0))
    assert out.shape == (rows, 8)  # the other rows went on to the token budget
    assert out[0, 2] == tok.eos_token_id and mask[0].tolist() == [1.0] * 3 + [0.0] * 5
    assert (out[0, 3:] == tok.pad_token_id).all() and (logp[0, 3:] == 0).all()
    assert (mask[1:] == 1).all() and not (out[1:] == tok.pad_token_id).any() and (logp[1:] < 0).all()


def test_eos_in_every_row_stops_sampling():
    model, tok = _model()
    ids, attn = encode_prompts(tok, ["rev:abc=", "rev:abcdef="], "cpu")
    forced = _Scripted(model, {2: tok.eos_token_id})  # third token is EOS for every row
    out, mask, logp = sample(forced, ids, attn, SamplingSettings(8), tok.eos_token_id, tok.pad_token_id,
                             torch.Generator().manual_seed(0))
    assert out.shape[1] == 3  # stopped as soon as every row ended
    assert (out[:, 2] == tok.eos_token_id).all() and (mask == 1).all()


def test_stop_string_ends_the_completion_and_is_cut_from_the_text():
    model, tok = _model()
    ids, attn = encode_prompts(tok, ["rev:abc="], "cpu")
    a, b = tok.convert_tokens_to_ids(["a", "b"])
    forced = _Scripted(model, {1: a, 2: b})
    out, mask, _ = sample(forced, ids, attn, SamplingSettings(8), tok.eos_token_id, tok.pad_token_id,
                          torch.Generator().manual_seed(0), stop_ids=stop_token_ids(tok, ("ab",)))
    assert out.shape[1] == 3 and out[0, 1:].tolist() == [a, b]
    text = tok.decode(out[0])
    assert cut_at_stop(text, ("ab",)) == text[:1]


def test_recorded_logprobs_equal_a_fresh_forward_and_shared_prompts_change_nothing():
    model, tok = _model()
    prompts = ["rev:abc="] * 3 + ["rev:xyzw="] * 3
    ids, attn = encode_prompts(tok, prompts, "cpu")
    s = SamplingSettings(6, temperature=0.9, top_k=20)
    plain = sample(model, ids, attn, s, tok.eos_token_id, tok.pad_token_id, torch.Generator().manual_seed(1))
    group = torch.tensor([0, 0, 0, 1, 1, 1])
    shared = sample(model, ids, attn, s, tok.eos_token_id, tok.pad_token_id, torch.Generator().manual_seed(1), group=group)
    assert torch.equal(plain[0], shared[0])
    assert torch.allclose(plain[2], shared[2], atol=1e-5)
    out, mask, logp = plain
    full = torch.cat([ids, out], 1)
    full_attn = torch.cat([attn, mask.long()], 1)
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=full_attn, position_ids=position_ids(full_attn)).logits
    fresh = torch.log_softmax(logits[:, ids.shape[1] - 1 : -1] / 0.9, -1).gather(-1, out[..., None]).squeeze(-1)
    assert torch.allclose(fresh * mask, logp, atol=1e-5)


def test_greedy_picks_the_argmax_of_a_fresh_forward_at_every_step():
    # One plain forward over prompt + completion gives, at each position, the logits the sampler decided on
    # (through its KV cache); greedy must have chosen their argmax every time, in both rows.
    model, tok = _model()
    ids, attn = encode_prompts(tok, ["rev:abc=", "rev:de="], "cpu")
    out, mask, _ = sample(model, ids, attn, SamplingSettings(6, temperature=0.0), tok.eos_token_id, tok.pad_token_id)
    assert (mask == 1).all()  # the untrained model writes no EOS here: every step is compared
    full, full_attn = torch.cat([ids, out], 1), torch.cat([attn, mask.long()], 1)
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=full_attn, position_ids=position_ids(full_attn)).logits
    step_logits = logits[:, ids.shape[1] - 1 : -1]
    top2 = step_logits.topk(2, -1).values
    assert ((top2[..., 0] - top2[..., 1]) > 1e-4).all()  # no near-tie the cache's rounding could flip
    assert torch.equal(out, step_logits.argmax(-1))
