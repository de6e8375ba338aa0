"""Edge cases of sampling: stop strings under char and BPE tokenizers, top-k / top-p against greedy,
one new token, prompts of very different lengths, empty prompts, and prompts that do not fit the context."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, PreTrainedTokenizerFast

from policyforge.data.tasks import BuiltinTask, DataError, Example
from policyforge.data.user import RowStream
from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model
from policyforge.rollout.sampler import (SamplingSettings, _pick, context_limit, filter_logits, position_ids, sample,
                                         stop_token_ids)
from policyforge.train.config import RolloutConfig
from policyforge.train.evaluate import encode_prompts, generate_text
from policyforge.train.setup import check_prompt_lengths, rollout

CORPUS = ["The Answer: 42\n\nThe Answer: 7\n\n", "reverse abc Answer: cba\n\n", "so the answer is done. Answer:"]


def bpe_tokenizer(bos: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in-process on a tiny corpus (merges make " Answer" one token)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<eos>"] + (["<bos>"] if bos else [])
    tok.train_from_iterator(CORPUS * 50, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    extra = {"bos_token": "<bos>"} if bos else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", padding_side="left",
                                   **extra)


def llama(tok, positions: int = 512):
    return tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128, max_positions=positions)).eval()


def gpt2(tok, positions: int = 128):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=positions, n_embd=32, n_layer=2, n_head=2,
                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    return GPT2LMHeadModel(cfg).eval()


class Scripted(torch.nn.Module):
    """Forces token seq[i] (probability 1) at decode step i; takes the generic sampling path."""

    def __init__(self, inner, seq):
        super().__init__()
        self.inner, self.seq, self.calls = inner, list(seq), 0

    def forward(self, **kw):
        out = self.inner(**kw)
        if self.calls < len(self.seq):
            out.logits[:, -1] = -1e9
            out.logits[:, -1, self.seq[self.calls]] = 0.0
        self.calls += 1
        return out


def fresh_logp(model, ids, attn, out, mask, temperature):
    """log softmax(logits / T) of each chosen token under the full distribution, from one plain forward."""
    full, full_attn = torch.cat([ids, out], 1), torch.cat([attn, mask.long()], 1)
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=full_attn, position_ids=position_ids(full_attn)).logits.float()
    logits = logits[:, ids.shape[1] - 1 : -1] / (temperature if temperature > 0 else 1.0)
    return torch.log_softmax(logits, -1).gather(-1, out[..., None]).squeeze(-1) * mask


def scripted_run(tok, text, stop, n_new=None, prompts=("The",)):
    seq = tok(text, add_special_tokens=False)["input_ids"]
    model = Scripted(llama(tok), seq)
    s = SamplingSettings(n_new or len(seq) + 2, temperature=1.0, stop=stop)
    return seq, generate_text(model, tok, list(prompts), s, torch.Generator().manual_seed(0))


# ---- stop strings ----------------------------------------------------------------------------

def test_bpe_stop_string_spelled_with_other_tokens_ends_the_row():
    tok = bpe_tokenizer()
    assert tok.tokenize("Answer:") == ["Answer", ":"]  # on its own
    seq, (_, _, out, mask, logp, texts) = scripted_run(tok, "so Answer: 5 and more", ("Answer:",))
    assert tok.convert_ids_to_tokens(seq[:3]) == ["so", "ĠAnswer", ":"]  # in context: another spelling
    assert mask.tolist() == [[1.0, 1.0, 1.0]] and out[0].tolist() == seq[:3]
    assert texts == ["so "]
    assert logp[0].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-4)  # forced tokens: probability 1


def test_bpe_stop_inside_a_merged_token_and_newline():
    tok = bpe_tokenizer()
    _, (_, _, out, mask, _, texts) = scripted_run(tok, "42\n\nThe end", ("\n",))
    assert mask.tolist() == [[1.0, 1.0]] and texts == ["42"]
    # "swer" ends inside the merged token " Answer": the row ends on that token
    seq, (_, _, out, mask, _, texts) = scripted_run(tok, "so Answer: 5", ("swer",))
    assert out[0].tolist() == seq[:2] and mask.sum().item() == 2 and texts == ["so An"]


def test_char_stops_prefix_of_another_several_and_first_token():
    tok = char_tokenizer()
    # "=" is a prefix of "=a": the shorter one completes first
    _, (_, _, out, mask, _, texts) = scripted_run(tok, "xy=ab", ("=a", "="))
    assert tok.decode(out[0]) == "xy=" and mask.tolist() == [[1.0] * 3] and texts == ["xy"]
    # several stops: "=a" completes (step 4) before "ab" (step 5)
    _, (_, _, out, mask, _, texts) = scripted_run(tok, "xy=ab", ("ab", "=a"))
    assert tok.decode(out[0]) == "xy=a" and texts == ["xy"]
    # a stop at the very first token: one token kept, empty text
    _, (_, _, out, mask, logp, texts) = scripted_run(tok, "=rest", ("=",))
    assert out.tolist() == [[tok.convert_tokens_to_ids("=")]] and mask.tolist() == [[1.0]] and texts == [""]


def test_stop_the_vocabulary_cannot_spell_never_ends_a_row():
    tok = char_tokenizer()  # "\n" is not in the vocabulary: it would encode to <pad>
    assert stop_token_ids(tok, ("\n",)) == []
    seq = [tok.convert_tokens_to_ids("a"), tok.pad_token_id, tok.convert_tokens_to_ids("b")]
    model = Scripted(llama(tok), seq)
    _, _, out, mask, _, texts = generate_text(model, tok, ["rev:ab="], SamplingSettings(3, stop=("\n",)),
                                              torch.Generator().manual_seed(0))
    assert out[0].tolist() == seq and mask.tolist() == [[1.0, 1.0, 1.0]] and texts == ["ab"]


def test_stop_on_the_fast_path_matches_greedy_up_to_the_stop():
    tok = bpe_tokenizer()
    model = llama(tok)
    prompts = ["The", "so the answer is done. reverse abc The Answer: 42 The"]
    s = SamplingSettings(10, temperature=0.0)
    base = generate_text(model, tok, prompts, s)
    text0 = base[-1][0]
    stop = text0[2:4]  # spans two tokens when the model repeats a multi-character token
    ids, attn, out, mask, logp, texts = generate_text(model, tok, prompts, SamplingSettings(10, temperature=0.0,
                                                                                              stop=(stop,)))
    cut = text0.find(stop)
    assert texts[0] == text0[:cut]
    n = int(mask[0].sum())
    assert n >= 2
    assert out[0, :n].tolist() == base[2][0, :n].tolist()
    assert stop in tok.decode(out[0, :n]) and stop not in tok.decode(out[0, : n - 1])
    assert torch.allclose(logp, fresh_logp(model, ids, attn, out, mask, 0.0), atol=1e-5)


def test_rollout_ending_on_a_stop_at_the_last_token_is_not_truncated():
    tok = char_tokenizer()
    seq = tok("ab=", add_special_tokens=False)["input_ids"]
    ex = [Example("rev:ab=", "ba", {}, 0)]
    for stop, truncated in ((["="], False), (["z"], True)):
        batch = rollout(Scripted(llama(tok), seq), tok, ex, RolloutConfig(group_size=2, max_new_tokens=3, stop=stop),
                        torch.Generator().manual_seed(0))
        assert batch.completion_mask.tolist() == [[1.0] * 3] * 2
        assert batch.truncated.tolist() == [truncated] * 2
        assert batch.completions == (["ab"] * 2 if stop == ["="] else ["ab="] * 2)


# ---- top-k / top-p, log-probs, lengths ---------------------------------------------------------

def test_top_k_one_and_tiny_top_p_keep_the_first_of_tied_maxima():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0]])
    assert torch.isfinite(filter_logits(logits, top_k=1)).tolist() == [[False, True, False, False]]
    wide = torch.randn(1, 50000, generator=torch.Generator().manual_seed(0))
    wide[0, 7] = wide[0, 40000] = 10.0
    assert torch.isfinite(filter_logits(wide, top_p=1e-6)).nonzero()[:, 1].tolist() == [7]
    s = SamplingSettings(4, temperature=0.7, top_k=1)
    assert _pick(logits.repeat(200, 1), s, torch.Generator().manual_seed(0))[0].unique().tolist() == [1]


@pytest.mark.parametrize("make", [llama, gpt2], ids=["llama-fast", "gpt2-generic"])
@pytest.mark.parametrize("tokenizer", [char_tokenizer, bpe_tokenizer], ids=["char", "bpe"])
def test_filters_and_logprobs_with_prompts_of_very_different_lengths(make, tokenizer):
    tok = tokenizer()
    model = make(tok)
    prompts = ["r", "so the answer is done. reverse abc The Answer: 42", "The", "rev:ab="]
    greedy = generate_text(model, tok, prompts, SamplingSettings(8, temperature=0.0))
    assert torch.allclose(greedy[4], fresh_logp(model, *greedy[:4], 0.0), atol=1e-5)
    for t in (0.6, 1.5):
        for top_p, top_k in ((1.0, 1), (1e-6, 0), (1e-6, 7)):
            s = SamplingSettings(8, t, top_p, top_k)
            got = generate_text(model, tok, prompts, s, torch.Generator().manual_seed(1))
            assert torch.equal(got[2], greedy[2]) and got[-1] == greedy[-1]
            # the recorded log-prob is under the full tempered distribution, not the filtered one
            assert torch.allclose(got[4], fresh_logp(model, *got[:4], t), atol=1e-5)
            assert (got[4][got[3].bool()] < 0).all()
        got = generate_text(model, tok, prompts, SamplingSettings(8, t, 0.8, 5), torch.Generator().manual_seed(2))
        assert torch.allclose(got[4], fresh_logp(model, *got[:4], t), atol=1e-5)
        one = generate_text(model, tok, prompts, SamplingSettings(1, t), torch.Generator().manual_seed(3))
        assert one[2].shape == (4, 1) and one[3].tolist() == [[1.0]] * 4
        assert torch.allclose(one[4], fresh_logp(model, *one[:4], t), atol=1e-5)


def test_rollout_restores_the_training_mode_when_sampling_raises():
    tok = char_tokenizer()
    model = llama(tok, positions=16).train()
    cfg = RolloutConfig(prompts_per_step=1, group_size=2, max_new_tokens=8, temperature=1.0)
    with pytest.raises(DataError, match="at most 16"):
        rollout(model, tok, [Example("rev:abcdefgh=", None, {}, 0)], cfg, torch.Generator().manual_seed(0))
    assert model.training  # not left in eval mode by the failed rollout
    batch = rollout(model, tok, [Example("rev:ab=", None, {}, 0)], cfg, torch.Generator().manual_seed(0))
    assert model.training and batch.completion_ids.shape[0] == 2


# ---- context length and empty prompts ----------------------------------------------------------

@pytest.mark.parametrize("make,field", [(gpt2, "n_positions"), (llama, "max_position_embeddings")])
def test_prompt_plus_new_tokens_past_the_context_fails_with_the_numbers(make, field):
    tok = char_tokenizer()
    model = make(tok, positions=16)
    with pytest.raises(DataError, match=rf"13 tokens and rollout.max_new_tokens is 8: 21 positions.*at most 16 "
                                        rf"\(config.{field}\).*to 3 or less"):
        generate_text(model, tok, ["rev:abcdefgh=", "r"], SamplingSettings(8, temperature=0.0))
    # exactly 16 positions fit, and the log-probs are right at the last position
    ids, attn, out, mask, logp, _ = generate_text(model, tok, ["rev:abc=", "r"], SamplingSettings(8, temperature=0.9),
                                                  torch.Generator().manual_seed(0))
    assert attn.sum(-1).tolist() == [8, 1] and out.shape[1] <= 8
    assert torch.allclose(logp, fresh_logp(model, ids, attn, out, mask, 0.9), atol=1e-5)


def test_start_up_check_names_the_row():
    tok = char_tokenizer()
    model = gpt2(tok, positions=16)
    rows = [Example(p, None, {}, i) for i, p in enumerate(["a=", "rev:abcdefgh=", "rev:abcdefghij="])]
    with pytest.raises(DataError, match=r"row 2 \(training: 'rev:abcdefghij='\) has 15 tokens.*at most 16"):
        check_prompt_lengths(model, tok, RowStream(rows[1:]), rows[:1], max_new_tokens=4)
    check_prompt_lengths(model, tok, RowStream(rows[1:]), rows[:1], max_new_tokens=1)  # 15 + 1 fits
    too_long = [Example("rev:" + "a" * 14 + "=", None, {}, 3)]  # 19 tokens: no max_new_tokens can help
    with pytest.raises(DataError, match=r"shorten the prompt to 15 tokens or fewer \(it leaves no room for a "
                                        r"completion\), or leave such rows out"):
        check_prompt_lengths(model, tok, None, too_long, max_new_tokens=1)
    with pytest.raises(DataError, match=r"row 1 \(held-out: 'rev:abcdefgh='\) has 13 tokens.*shorten the prompt to "
                                        r"12 tokens or fewer, or lower rollout.max_new_tokens to 3 or less"):
        check_prompt_lengths(model, tok, None, rows[:2], max_new_tokens=4)  # evaluation: held-out rows only
    task = BuiltinTask("reversal", 8, eval_size=20)  # prompts up to "rev:" + 8 letters + "=" = 13 characters
    with pytest.raises(DataError, match=r"row \d+ \(held-out: 'rev:[a-z]{8}='\) has 13 tokens"):
        check_prompt_lengths(model, tok, task, task.held_out, max_new_tokens=4)
    check_prompt_lengths(model, tok, task, task.held_out, max_new_tokens=3)


def test_context_limit_follows_rope_scaling():
    base = dict(vocab_size=10, hidden_size=8, num_attention_heads=2, num_hidden_layers=1, max_position_embeddings=64)
    assert context_limit(LlamaConfig(**base)) == (64, "max_position_embeddings")
    assert context_limit(LlamaConfig(**base, rope_scaling={"rope_type": "dynamic", "factor": 2.0})) is None
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
    assert context_limit(LlamaConfig(**base, rope_scaling=yarn)) == (256, "max_position_embeddings")
    assert context_limit(GPT2Config(n_positions=16)) == (16, "n_positions")


@pytest.mark.parametrize("make", [llama, gpt2], ids=["llama-fast", "gpt2-generic"])
def test_empty_prompt_starts_from_bos(make):
    tok = char_tokenizer()
    model = make(tok)
    for prompts in ([""], ["", "rev:abc="]):
        ids, attn, out, mask, logp, texts = generate_text(model, tok, prompts, SamplingSettings(4, temperature=0.9),
                                                          torch.Generator().manual_seed(0))
        assert ids[0, -1].item() == tok.bos_token_id and attn[0].tolist() == [0] * (ids.shape[1] - 1) + [1]
        assert torch.allclose(logp, fresh_logp(model, ids, attn, out, mask, 0.9), atol=1e-5)
        assert texts[0] == tok.decode(out[0][mask[0].bool()], skip_special_tokens=True)


def test_empty_prompt_without_bos_fails_clearly():
    tok = bpe_tokenizer(bos=False)
    with pytest.raises(DataError, match="prompt 1 .* no BOS"):
        encode_prompts(tok, ["The", ""], "cpu")
    rows = [Example(p, None, {}, i) for i, p in enumerate(["The", "", "so"])]
    with pytest.raises(DataError, match=r"row 1 \(training\): its prompt .. encodes to no tokens .*no BOS"):
        check_prompt_lengths(gpt2(tok), tok, RowStream(rows), [], max_new_tokens=4)
    with pytest.raises(DataError, match="no tokens"):
        sample(gpt2(tok), torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, dtype=torch.long),
               SamplingSettings(2), tok.eos_token_id, tok.pad_token_id)


def test_every_end_token_of_the_generation_config_ends_a_completion():
    """Instruct models list several EOS ids (Qwen2.5: <|im_end|>, <|endoftext|>); each one ends a completion."""
    from policyforge.rollout.sampler import ended_rows
    from policyforge.train.evaluate import end_token_ids

    tok = char_tokenizer()
    model = llama(tok)
    other = tok.convert_tokens_to_ids("z")
    model.generation_config.eos_token_id = [tok.eos_token_id, other]
    assert end_token_ids(model, tok) == [tok.eos_token_id, other]
    bias = torch.zeros(len(tok))
    bias[other] = 100.0  # "z" the likeliest next token everywhere: every row ends at its first token
    model.lm_head.bias = torch.nn.Parameter(bias)
    _, _, out, mask, _, texts = generate_text(model, tok, ["rev:ab=", "rev:cd="], SamplingSettings(6, temperature=0.0))
    assert out[:, 0].tolist() == [other, other] and mask.tolist() == [[1.0]] * 2
    assert ended_rows(out, mask, end_token_ids(model, tok)).tolist() == [True, True]
    model.generation_config.eos_token_id = tok.eos_token_id  # a single id: "z" is ordinary text again
    _, _, out, mask, _, _ = generate_text(model, tok, ["rev:ab="], SamplingSettings(6, temperature=0.0))
    assert mask.sum().item() == 6


def test_stop_text_looks_past_special_tokens_between_its_characters():
    """Special tokens decode to nothing, so many of them inside a stop string must not hide it."""
    tok = char_tokenizer()
    x, a, b = tok.convert_tokens_to_ids(["x", "a", "b"])
    seq = [x, a] + [tok.bos_token_id] * 30 + [b, x, x]
    settings = SamplingSettings(len(seq), temperature=1.0, stop=("ab",))
    _, _, out, mask, _, texts = generate_text(Scripted(llama(tok), seq), tok, ["q"], settings,
                                              torch.Generator().manual_seed(0))
    assert int(mask.sum()) == len(seq) - 2 and out[0, -1] == b and texts == ["x"]


def test_rows_of_one_group_with_different_prompts_are_refused():
    tok = char_tokenizer()
    ids, attn = encode_prompts(tok, ["rev:abc=", "rev:xyz="], "cpu")
    with pytest.raises(ValueError, match="share a prompt"):
        sample(llama(tok), ids, attn, SamplingSettings(2), tok.eos_token_id, tok.pad_token_id,
               group=torch.tensor([0, 0]))


class _WordsOnly:
    """A word-level tokenizer without an unknown token: a word it lacks makes it raise, naming no row."""

    bos_token_id, pad_token_id, pad_token = 0, 1, "<pad>"

    def __call__(self, texts, add_special_tokens=False):
        one = isinstance(texts, str)
        out = []
        for text in [texts] if one else texts:
            if "Copy" in text:
                raise Exception("WordLevel error: Missing [UNK] token from the vocabulary")
            out.append([2] * len(text.split()))
        return {"input_ids": out[0] if one else out}


def test_a_prompt_the_tokenizer_cannot_encode_is_named_in_one_line():
    from policyforge.data.tasks import DataError, Example
    from policyforge.train.setup import check_prompt_lengths

    held_out = [Example("rev ab =", index=0), Example("Copy ab =", index=1)]
    with pytest.raises(DataError, match=r"row 1 \(held-out\): the tokenizer cannot encode its prompt 'Copy ab =': "
                                        r"Exception: WordLevel error: Missing \[UNK\]"):
        check_prompt_lengths(None, _WordsOnly(), None, held_out, 4)
