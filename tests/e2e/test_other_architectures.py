"""Architectures outside the Llama family give the numbers a plain forward gives.

README: "Any local Hugging Face causal LM directory works as --model.path". Llama, Mistral
and Qwen2 take the lean decoder and the packed forward (tested beside them); every other
model is sampled through its own forward and KV cache (rollout/sampler.py _GenericSteps)
and trained through train/logprobs.py (_plain, or _grouped with the shared prefix). Each
model here is tiny and random, built from its config (no downloads), with the project's
character tokenizer; its weights are drawn wider than the default init so that its
distributions are far from uniform, and dropout is off so that train-mode forwards are
deterministic. Position handling differs from model to model (GPT-2 learned absolute
positions, OPT learned positions offset by 2, rotary in part of each head for GPT-NeoX
and Phi, Gemma 2's sliding window shorter than the sequences, BLOOM's ALiBi from the
attention mask), which is where left padding and the shared-prefix cache would go wrong.
"""

import contextlib
import inspect
import io
import json
import logging

import pytest
import torch
import transformers as tf

from policyforge.cli import main
from policyforge.models.load import ModelError, load_model
from policyforge.models.tiny import CHARSET, SPECIALS, char_tokenizer
from policyforge.rollout import sampler
from policyforge.rollout.batch import RolloutBatch
from policyforge.rollout.fast_decoder import reason_unsupported
from policyforge.rollout.sampler import SamplingSettings, sample
from policyforge.train import logprobs
from policyforge.train.logprobs import forward_logprobs, shared_prefix_problem
from policyforge.metrics.step_record import TIMING

EOS, PAD = 2, 0  # the character tokenizer's ids
ATTN = dict(num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128)

CONFIGS = {
    "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, resid_pdrop=0.0, embd_pdrop=0.0,
                                  attn_pdrop=0.0),
    "opt": lambda: tf.OPTConfig(hidden_size=32, ffn_dim=64, word_embed_proj_dim=32, dropout=0.0, **ATTN),
    "gpt_neox": lambda: tf.GPTNeoXConfig(hidden_size=32, intermediate_size=64, rotary_pct=0.5, **ATTN),
    "gemma2": lambda: tf.Gemma2Config(hidden_size=32, intermediate_size=64, num_key_value_heads=2, head_dim=8,
                                      sliding_window=4, **ATTN),
    "phi": lambda: tf.PhiConfig(hidden_size=32, intermediate_size=64, partial_rotary_factor=0.5, resid_pdrop=0.0,
                                embd_pdrop=0.0, **ATTN),
    "qwen3": lambda: tf.Qwen3Config(hidden_size=32, intermediate_size=64, num_key_value_heads=2, head_dim=8, **ATTN),
    "bloom": lambda: tf.BloomConfig(hidden_size=32, n_layer=2, n_head=4),
    # a Mamba / attention hybrid: its cache holds recurrent state, so the shared prefix is refused (see below)
    "jamba": lambda: tf.JambaConfig(hidden_size=32, intermediate_size=64, num_key_value_heads=2, num_experts=2,
                                    attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
                                    expert_layer_offset=1, mamba_d_state=4, mamba_dt_rank=4, use_mamba_kernels=False,
                                    **ATTN),
}
ARCHS = list(CONFIGS)
CLI_ARCHS = ["gpt2", "opt", "gpt_neox", "gemma2", "phi", "qwen3", "jamba"]


def build(name: str, tok=None, seed: int = 0):
    tok = tok or char_tokenizer()
    cfg = CONFIGS[name]()
    cfg.vocab_size, cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id = len(tok), PAD, 1, EOS
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    assert reason_unsupported(model) is not None  # these all take the generic paths
    return model


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return build(request.param)


def _prompts(group_size: int = 3):
    """Three prompts of different lengths, left-padded, each repeated `group_size` times."""
    enc = char_tokenizer()(["rev:ab=", "rev:abcdef=", "rev:abcd="], return_tensors="pt", padding=True,
                           add_special_tokens=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert mask.sum(-1).unique().numel() == 3  # three different pad widths
    group = torch.arange(3).repeat_interleave(group_size)
    return ids[group], mask[group], group


def _batch(ids, mask, group, comp, comp_mask, logp=None) -> RolloutBatch:
    n = len(ids)
    return RolloutBatch(ids, mask, comp, comp_mask, torch.zeros_like(comp_mask) if logp is None else logp,
                        torch.zeros(n, dtype=torch.bool), group, [None] * n, [""] * n, ["fresh"] * n)


def _rollout(model, seed: int = 0, new_tokens: int = 6) -> RolloutBatch:
    ids, mask, group = _prompts()
    out, cmask, logp = sample(model, ids, mask, SamplingSettings(max_new_tokens=new_tokens), EOS, PAD,
                              torch.Generator().manual_seed(seed), group=group)
    return _batch(ids, mask, group, out, cmask, logp)


def test_recorded_logprobs_equal_a_fresh_forward(model):
    batch = _rollout(model)
    with torch.no_grad():
        for shared in (False, True):
            fresh = forward_logprobs(model, batch, 1.0, shared_prefix=shared)["logp"]
            torch.testing.assert_close(fresh, batch.behav_logp, rtol=0, atol=5e-5)


def test_left_padding_changes_nothing(model):
    """The same prompt with and without pad columns: same log-probs, same greedy tokens."""
    prompt = torch.tensor([char_tokenizer()("rev:abc=", add_special_tokens=False)["input_ids"]])
    comp = torch.tensor([[10, 11, 12, 13, 14]])
    got = []
    for pad in (0, 4):
        ids = torch.cat([torch.full((1, pad), PAD), prompt], 1)
        mask = (torch.arange(ids.shape[1]) >= pad).long()[None]
        with torch.no_grad():
            lp = forward_logprobs(model, _batch(ids, mask, torch.zeros(1, dtype=torch.long), comp,
                                                torch.ones(1, 5)), 1.0)["logp"]
        greedy = sample(model, ids, mask, SamplingSettings(max_new_tokens=6, temperature=0.0), EOS, PAD)
        got.append((lp, greedy))
    (lp0, g0), (lp4, g4) = got
    torch.testing.assert_close(lp0, lp4, rtol=0, atol=5e-5)
    assert torch.equal(g0[0], g4[0]) and torch.equal(g0[1], g4[1])
    torch.testing.assert_close(g0[2], g4[2], rtol=0, atol=5e-5)


def test_shared_prefix_matches_plain_logprobs_and_gradients(model):
    batch = _rollout(model, seed=1)
    adv = torch.randn(len(batch), generator=torch.Generator().manual_seed(0))
    outs, grads = [], []
    model.train()
    try:
        for shared in (False, True):
            model.zero_grad()
            out = forward_logprobs(model, batch, 0.7, shared_prefix=shared)
            (-(out["logp"] * adv[:, None]).sum() + out["entropy"].sum()).backward()
            grads.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()])
            outs.append({k: v.detach() for k, v in out.items()})
    finally:
        model.zero_grad()
        model.eval()
    (plain, shared), scale = outs, max(float(g.abs().max()) for g in grads[0])
    torch.testing.assert_close(shared["logp"], plain["logp"], rtol=0, atol=5e-5)
    torch.testing.assert_close(shared["entropy"], plain["entropy"], rtol=0, atol=5e-5)
    for g_plain, g_shared in zip(*grads):
        torch.testing.assert_close(g_shared, g_plain, rtol=1e-4, atol=1e-5 * scale)


def test_dropping_finished_rows_changes_nothing(model, monkeypatch):
    """Greedy decoding with finished rows cut out of the cache (reorder_cache) equals decoding with them kept."""
    ids, mask, group = _prompts()
    pick, calls = sampler._pick, []

    def scripted(logits, settings, generator):  # rows 0, 4 and 5 say EOS at the second token, no row otherwise
        nxt, lp = pick(logits.index_fill(-1, torch.tensor([EOS]), float("-inf")), settings, generator)
        calls.append(len(nxt))
        if len(calls) == 2:
            nxt = nxt.clone()
            nxt[[0, 4, 5]] = EOS
        return nxt, lp

    monkeypatch.setattr(sampler, "_pick", scripted)
    runs = {}
    for at in (2.0, 0.125):  # never drop / drop once an eighth has finished
        monkeypatch.setattr(sampler, "COMPACT_AT", at)
        calls.clear()
        runs[at] = sample(model, ids, mask, SamplingSettings(max_new_tokens=5, temperature=0.0), EOS, PAD,
                          group=group), list(calls)
    (kept, kept_rows), (dropped, dropped_rows) = runs[2.0], runs[0.125]
    assert kept_rows == [9] * 5 and dropped_rows == [9, 9, 6, 6, 6]
    assert torch.equal(kept[0], dropped[0]) and torch.equal(kept[1], dropped[1])
    assert kept[1][[0, 4, 5]].sum(-1).tolist() == [2.0, 2.0, 2.0]
    torch.testing.assert_close(kept[2], dropped[2], rtol=0, atol=5e-5)


def test_models_with_recurrent_state_take_the_plain_forward(caplog):
    """Jamba continues its Mamba state wrongly from a shared prompt (log-probs off by nats, caught by the tests
    above for jamba) and Qwen3-Next's backward fails through it (an in-place update of a saved tensor): models
    whose cache is more than attention keys and values are refused the shared prefix, with one log line."""
    logprobs._LOGGED.discard("jamba")
    jamba, gpt2 = build("jamba"), build("gpt2")
    with caplog.at_level(logging.WARNING, logger="policyforge"):
        assert "recurrent state" in shared_prefix_problem(jamba)
        assert shared_prefix_problem(jamba) is not None
    assert [r.getMessage() for r in caplog.records].count(
        "optim.shared_prefix: jamba takes the plain training forward (it keeps recurrent state)") == 1
    assert shared_prefix_problem(gpt2) is None

    cfg = tf.Qwen3NextConfig(hidden_size=32, intermediate_size=64, num_key_value_heads=2, head_dim=8,
                             moe_intermediate_size=16, shared_expert_intermediate_size=16, num_experts=4,
                             num_experts_per_tok=2, linear_num_value_heads=4, linear_num_key_heads=2,
                             linear_key_head_dim=8, linear_value_head_dim=8, full_attention_interval=2,
                             vocab_size=len(SPECIALS + CHARSET), pad_token_id=PAD, eos_token_id=EOS, **ATTN)
    torch.manual_seed(0)
    qwen3_next = tf.Qwen3NextForCausalLM(cfg).eval()
    batch = _rollout(qwen3_next, new_tokens=4)
    qwen3_next.train()
    grads = []
    for shared in (False, True):
        qwen3_next.zero_grad()
        forward_logprobs(qwen3_next, batch, 1.0, shared_prefix=shared)["logp"].sum().backward()
        grads.append([p.grad.clone() for p in qwen3_next.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) and all(torch.equal(a, b) for a, b in zip(*grads))


def test_a_tokenizer_without_eos_fails_at_load(tmp_path):
    path = tmp_path / "model"
    tok = char_tokenizer()
    build("gpt2", tok).save_pretrained(path)
    tok.eos_token = None
    tok.save_pretrained(path)
    with pytest.raises(ModelError, match="has no EOS token"):
        load_model(str(path), device="cpu")


def code_reward(prompt, completion, **_):
    """A dense reward that any two different texts likely differ on, so every run takes real gradient steps."""
    return float(sum(map(ord, completion)) % 5)


TRAIN = ("--data.task reversal --data.task-size 4 --data.eval-size 4 --rollout.prompts-per-step 2 "
         "--rollout.group-size 4 --rollout.max-new-tokens 4 --train.steps 2 --train.pass-k 2 --train.eval-every 0 "
         "--train.no-progress --optim.lr 1e-3 --data.reward tests.e2e.test_other_architectures:code_reward").split()


def _cli(*args) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main([str(a) for a in args])
    return out.getvalue()


def _train(path, out_dir, name, *extra) -> list[dict]:
    _cli("train", "--model.path", path, *TRAIN, "--train.out-dir", out_dir, "--train.run-name", name, *extra)
    rows = [json.loads(x) for x in (out_dir / name / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(v == v for r in rows for v in r.values() if isinstance(v, float))  # no NaN
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.mark.parametrize("name", CLI_ARCHS)
def test_cli_train_eval_and_sft(name, tmp_path):
    path = tmp_path / "model"
    tok = char_tokenizer()
    build(name, tok).save_pretrained(path)
    tok.save_pretrained(path)
    runs = tmp_path / "runs"
    shared = _train(path, runs, "shared", "--optim.shared-prefix")
    plain = _train(path, runs, "plain", "--optim.no-shared-prefix")
    # the first step samples the same batch either way: the update must see the same numbers
    assert shared[0].keys() == plain[0].keys()
    for k in shared[0]:
        assert shared[0][k] == pytest.approx(plain[0][k], rel=1e-4, abs=1e-6), k
    assert shared[0]["grad_norm"] > 0 and shared[0]["reward_std"] > 0
    # sampler log-probs vs the reference model's forward of the same tokens: KL 0 before any update
    assert abs(shared[0]["kl_ref"]) < 1e-5 and abs(plain[0]["kl_ref"]) < 1e-5
    ppo = _train(path, runs, "ppo", "--optim.updates-per-batch", 2, "--algo.drift", "k3", 0.1)
    assert abs(ppo[0]["kl_ref"]) < 1e-5 and ppo[0]["ratio_max"] != 1.0  # the second update saw the first's change

    ev = json.loads(_cli("eval", "--model.path", path, "--data.task", "reversal", "--data.task-size", 4,
                         "--data.eval-size", 4, "--rollout.max-new-tokens", 4, "--train.pass-k", 2, "--data.reward",
                         "tests.e2e.test_other_architectures:code_reward").splitlines()[-1])
    step0 = json.loads((runs / "shared" / "eval.jsonl").read_text().splitlines()[0])
    assert step0["step"] == 0 and (ev["accuracy"], ev["pass@2"]) == (step0["accuracy"], step0["pass@2"])

    out = tmp_path / "sft"
    _cli("sft", "--model.path", path, "--data.task", "reversal", "--data.task-size", 4, "--data.eval-size", 4,
         "--rollout.max-new-tokens", 4, "--sft.steps", 2, "--sft.batch-size", 4, "--train.no-progress",
         "--sft.out", out)
    tuned, _ = load_model(str(out), device="cpu")
    before, _ = load_model(str(path), device="cpu")
    assert tuned.config.model_type == before.config.model_type
    assert any(not torch.equal(a, b) for a, b in zip(tuned.parameters(), before.parameters()))


def _no_pad_tokenizer():
    """The character tokenizer without a pad token, as GPT-2's tokenizer ships."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    raw = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(SPECIALS + CHARSET)}, unk_token="<pad>"))
    raw.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    raw.decoder = decoders.Fuse()
    return tf.PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<bos>", eos_token="<eos>")


def test_a_tokenizer_without_a_pad_token_pads_with_eos(tmp_path):
    path = tmp_path / "model"
    tok = _no_pad_tokenizer()
    assert tok.pad_token_id is None
    build("gpt2", tok).save_pretrained(path)
    tok.save_pretrained(path)
    model, tok = load_model(str(path), device="cpu")
    assert tok.pad_token_id == tok.eos_token_id == EOS and tok.padding_side == "left"
    enc = tok(["rev:ab=", "rev:abcdef="], return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"].repeat_interleave(2, 0), enc["attention_mask"].repeat_interleave(2, 0)
    assert ids[0, 0] == EOS and mask[0, 0] == 0  # left-padded with EOS, masked out
    group = torch.arange(2).repeat_interleave(2)
    out, cmask, logp = sample(model, ids, mask, SamplingSettings(max_new_tokens=6), EOS, EOS,
                              torch.Generator().manual_seed(0), group=group)
    with torch.no_grad():
        fresh = forward_logprobs(model, _batch(ids, mask, group, out, cmask), 1.0, shared_prefix=True)["logp"]
    torch.testing.assert_close(fresh, logp, rtol=0, atol=5e-5)
    rows = _train(path, tmp_path / "runs", "nopad")
    assert abs(rows[0]["kl_ref"]) < 1e-5


def test_a_model_without_a_reorderable_cache_fails_at_load(tmp_path):
    """Mamba keeps its state outside a transformers Cache (before transformers 5.24) or carries left padding
    into the state of the Cache it returns (5.24 on): one clear error naming it, before any run starts."""
    path = tmp_path / "mamba"
    tok = char_tokenizer()
    cfg = tf.MambaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, state_size=4, pad_token_id=PAD,
                         bos_token_id=1, eos_token_id=EOS, use_mambapy=False)
    tf.MambaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    # transformers 5.24 gave Mamba a Cache (forward(cache=...)), which carries the left padding into its state
    reason = "left-padded prompt" if "cache" in inspect.signature(tf.MambaForCausalLM.forward).parameters else \
        "no transformers Cache"
    with pytest.raises(ModelError, match=f"model_type 'mamba'.*{reason}"):
        load_model(str(path), device="cpu")
    with pytest.raises(SystemExit, match="^error: MambaForCausalLM \\(model_type 'mamba'\\) is not supported"):
        _cli("eval", "--model.path", path, "--data.task", "reversal", "--data.task-size", 4, "--data.eval-size", 4)


def test_dropout_is_off_for_rl_by_default(tmp_path):
    from policyforge.models.load import disable_dropout

    tok = char_tokenizer()
    cfg = CONFIGS["gpt2"]()
    cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = 0.1  # as GPT-2 checkpoints ship
    cfg.vocab_size, cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id = len(tok), PAD, 1, EOS
    torch.manual_seed(0)
    gpt2 = tf.AutoModelForCausalLM.from_config(cfg).train()
    ids = torch.randint(3, len(tok), (2, 6))
    with torch.no_grad():
        assert not torch.equal(gpt2(input_ids=ids).logits, gpt2(input_ids=ids).logits)  # a random draw each time
        assert disable_dropout(gpt2) > 0
        assert torch.equal(gpt2(input_ids=ids).logits, gpt2(input_ids=ids).logits)
        assert torch.allclose(gpt2(input_ids=ids).logits, gpt2.eval()(input_ids=ids).logits)

    path = tmp_path / "model"
    torch.manual_seed(0)
    tf.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    # lr 0 and two updates per batch: the weights never move, so any gap between the old and the
    # current log-probs (kl_old, a ratio away from 1) is dropout noise in the training forwards
    args = ("--optim.lr", "0", "--optim.updates-per-batch", "2")
    off = _train(path, tmp_path / "runs", "off", *args)
    assert all(r["kl_old"] < 1e-6 and abs(r["ratio_max"] - 1) < 1e-5 for r in off)
    on = _train(path, tmp_path / "runs", "on", *args, "--model.no-disable-dropout")
    # the old log-probs come from an eval-mode pass (no dropout), the update's forwards draw masks: at every step
    assert all(r["kl_old"] > 1e-4 and r["ratio_max"] > 1.01 for r in on)


class _IgnoresPadding(torch.nn.Module):
    """A model whose forward drops the attention mask, so left padding leaks into what it computes."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, attention_mask=None, **kw):
        return self.inner(**kw)


def test_the_left_padding_probe_passes_every_supported_model_and_refuses_one_that_leaks_padding():
    from policyforge.models.load import LEFT_PAD_TOLERANCE, check_cached_decoding, left_padding_error
    from policyforge.models.tiny import tiny_model

    with torch.no_grad():
        for name in ARCHS:
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                assert left_padding_error(build(name).to(dtype)) <= LEFT_PAD_TOLERANCE[dtype] / 5, (name, dtype)
        assert left_padding_error(tiny_model(char_tokenizer()).eval()) < 1e-5
        leaky = _IgnoresPadding(build("gpt2"))
        assert left_padding_error(leaky) > 5 * LEFT_PAD_TOLERANCE[torch.float32]
    with pytest.raises(ModelError, match=r"^_IgnoresPadding .*left-padded prompt gets a next-token distribution"):
        check_cached_decoding(leaky)
