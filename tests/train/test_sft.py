"""`policyforge sft`: the batch it trains on, the weak teacher's noise, and that a short run learns the solutions."""

import json
import math
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from policyforge.data.tasks import BuiltinTask, Example, distractor
from policyforge.models.tiny import CHARSET, SPECIALS, TinySpec, char_tokenizer, tiny_model
from policyforge.train.config import Config
from policyforge.train.sft import held_out_loss, sft, sft_batch, sft_loss, weak_teacher

VOCAB = SPECIALS + CHARSET  # the char tokenizer's ids, in order: <pad> 0, <bos> 1, <eos> 2, then one per character
PAD, EOS = VOCAB.index("<pad>"), VOCAB.index("<eos>")


def _ids(text: str) -> list[int]:
    return [VOCAB.index(ch) for ch in text]


def test_sft_batch_left_pads_and_puts_the_loss_on_the_solution_and_eos_only():
    # 8 prompt + 3 solution + EOS = 12 tokens; 5 + 2 + EOS = 8 tokens, so the second row gets 4 pads on the left.
    examples = [Example("rev:abc=", "cba"), Example("12+3=", "15")]
    ids, attn, loss_mask = sft_batch(char_tokenizer(), examples, "cpu")
    assert ids.tolist() == [_ids("rev:abc=cba") + [EOS],
                            [PAD] * 4 + _ids("12+3=15") + [EOS]]
    assert attn.tolist() == [[1] * 12,
                             [0] * 4 + [1] * 8]
    assert loss_mask.tolist() == [[0] * 8 + [1] * 4,
                                  [0] * 4 + [0] * 5 + [1] * 3]


def _reversal_examples(n: int) -> list[Example]:
    # Words of 3 distinct letters: their distractor (the word copied unreversed) always differs from the answer.
    rng = random.Random(0)
    words = ["".join(rng.sample("abcdefghijklmnopqrstuvwxyz", 3)) for _ in range(n)]
    return [Example(f"rev:{w}=", w[::-1], {"answer": w[::-1]}, i) for i, w in enumerate(words)]


def test_weak_teacher_with_noise_one_always_demonstrates_the_typical_mistake():
    for ex in _reversal_examples(20):
        bad = weak_teacher(ex, "reversal", 1.0, random.Random(0))
        word = ex.prompt[len("rev:"):-1]
        assert bad.solution == distractor("reversal", ex.prompt, ex.solution) == word  # copied, not reversed
        # only the demonstration is wrong: the prompt and the verifier's answer are the example's own
        assert (bad.prompt, bad.extra, bad.index) == (ex.prompt, ex.extra, ex.index)


def test_weak_teacher_with_noise_zero_keeps_every_example():
    rng = random.Random(0)
    for ex in _reversal_examples(20):
        assert weak_teacher(ex, "reversal", 0.0, rng) == ex


@pytest.mark.parametrize("noise", [0.1, 0.5])
def test_weak_teacher_replaces_about_a_fraction_noise_of_the_demonstrations(noise):
    # 4000 independent draws: the count of mistakes is Binomial(4000, noise); allow 5 standard deviations.
    ex = Example("rev:abc=", "cba", {"answer": "cba"})
    rng = random.Random(1)
    draws = 4000
    mistakes = sum(weak_teacher(ex, "reversal", noise, rng).solution == "abc" for _ in range(draws))
    assert abs(mistakes - draws * noise) <= 5 * math.sqrt(draws * noise * (1 - noise))


def _solution_nll(model, tok, examples) -> float:
    """Teacher-forced NLL per token of solution + EOS after the prompt, one unpadded row at a time
    (written here, not with sft_batch, so a wrong loss mask there cannot hide in the measure)."""
    total, count = 0.0, 0
    for ex in examples:
        prompt, completion = _ids(ex.prompt), _ids(ex.solution) + [EOS]
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logp = model(input_ids=ids).logits[0].float().log_softmax(-1)
        # the logits at position k predict token k + 1
        total -= sum(float(logp[k - 1, ids[0, k]]) for k in range(len(prompt), ids.shape[1]))
        count += len(completion)
    return total / count


def test_a_short_sft_run_lowers_the_nll_of_held_out_solutions(tmp_path):
    # Measured: 30 steps take the held-out solutions from 4.01 to 2.93 nats per token. Trained on the prompt
    # instead (the loss mask inverted), the same run raises them to 4.49: it never sees a solution or EOS.
    tok = char_tokenizer()
    start = tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128), seed=0)
    start.save_pretrained(tmp_path / "start")
    tok.save_pretrained(tmp_path / "start")
    cfg = Config()
    cfg.model.path = str(tmp_path / "start")
    cfg.data.task, cfg.data.task_size, cfg.data.eval_size = "reversal", 3, 8
    cfg.sft.steps, cfg.sft.batch_size, cfg.sft.lr, cfg.sft.out = 30, 16, 3e-3, str(tmp_path / "sft")
    cfg.rollout.max_new_tokens, cfg.train.pass_k, cfg.train.progress = 4, 1, False
    held_out = BuiltinTask("reversal", 3, eval_size=8).held_out  # the split sft never trains on
    before = _solution_nll(start.eval(), tok, held_out)
    trained = AutoModelForCausalLM.from_pretrained(sft(cfg, log=lambda *_: None)).eval()
    after = _solution_nll(trained, tok, held_out)
    assert after < before - 0.5, (before, after)


def test_sft_loss_is_the_mean_nll_of_the_solution_and_eos_tokens():
    """On a left-padded batch of prompts of different lengths, the loss equals the per-token NLL of the
    solutions + EOS measured one unpadded row at a time (so a shifted or inverted mask cannot pass)."""
    tok = char_tokenizer()
    model = tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128), seed=0).eval()
    examples = [Example("rev:abcd=", "dcba"), Example("rev:xy=", "yx"), Example("rev:pqr=", "rqp")]
    with torch.no_grad():
        loss = sft_loss(model, *sft_batch(tok, examples, "cpu"))
    assert float(loss) == pytest.approx(_solution_nll(model, tok, examples), rel=1e-5)


def test_held_out_loss_weighs_every_token_the_same_across_batches():
    # rows of 5, 3 and 4 completion tokens in batches of 2: a mean of batch means would differ from the token mean
    tok = char_tokenizer()
    model = tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128), seed=0)
    examples = [Example("rev:abcd=", "dcba"), Example("rev:xy=", "yx"), Example("rev:pqr=", "rqp"),
                Example("no solution", None)]
    assert held_out_loss(model, tok, examples, batch_size=2) == pytest.approx(
        _solution_nll(model.eval(), tok, examples[:3]), rel=1e-5)
    assert held_out_loss(model, tok, [Example("no solution", None)]) is None


def test_sft_on_a_data_file_needs_no_reward_and_reports_the_held_out_loss(tmp_path):
    tok = char_tokenizer()
    start = tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128), seed=0)
    start.save_pretrained(tmp_path / "start")
    tok.save_pretrained(tmp_path / "start")
    rows = [{"prompt": f"rev:{w}=", "target": w[::-1]} for w in ("abc", "dog", "frog", "cat", "bird", "fish")]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = Config()
    cfg.model.path = str(tmp_path / "start")
    cfg.data.path, cfg.data.solution_column, cfg.data.eval_size = str(data), "target", 2
    cfg.sft.steps, cfg.sft.batch_size, cfg.sft.out = 3, 4, str(tmp_path / "sft")
    cfg.rollout.max_new_tokens, cfg.train.progress = 4, False
    lines = []
    out = sft(cfg, log=lines.append)
    assert "data: 4 training rows from" in lines[0] and "2 held out" in lines[0]
    trained = AutoModelForCausalLM.from_pretrained(out).eval()
    held = [Example(r["prompt"], r["target"]) for r in rows[:2]]
    assert f"held-out solution loss {_solution_nll(trained, tok, held):.3f} nats/token" in lines[-1]
    assert "no accuracy (no data.reward)" in lines[-1]
