"""The values evaluate() reports: held-out accuracy and pass@k against outcomes known independently.

The tiny model is steered (its logits replaced at chosen decode steps) so that what it writes is known
before evaluate runs; the expected figures are then counted by hand from the prompts, or from what the
reward saw, never from another evaluate() result.
"""

import math

import torch

from policyforge.data.tasks import BuiltinTask, exact_match
from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model
from policyforge.train.evaluate import evaluate


class Steered(torch.nn.Module):
    """Wraps a model; at decode step i every row's next-token logits become `steps[i]` ({token id: logit},
    -1e9 for every other token). Step 0 is the prompts' forward (it has no cache yet), so the count starts
    again with each generate call: evaluate samples greedily, then again for pass@k."""

    def __init__(self, inner, steps: list[dict[int, float]]):
        super().__init__()
        self.inner, self.steps, self.step = inner, steps, 0

    def forward(self, **kw):
        out = self.inner(**kw)
        if not any(k in kw for k in ("past_key_values", "cache")):
            self.step = 0
        if self.step < len(self.steps):
            out.logits[:, -1] = -1e9
            for tok, value in self.steps[self.step].items():
                out.logits[:, -1, tok] = value
        self.step += 1
        return out


def _tiny():
    tok = char_tokenizer()
    return tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128)).eval(), tok


def _writes(tok, text: str) -> list[dict[int, float]]:
    """Steps that make every row write `text`, then EOS."""
    return [{i: 0.0} for i in tok(text, add_special_tokens=False)["input_ids"]] + [{tok.eos_token_id: 0.0}]


def test_accuracy_is_the_fraction_of_prompts_whose_greedy_answer_is_right():
    model, tok = _tiny()
    held = BuiltinTask("reversal", 4, eval_size=3).held_out
    # Held-out rows A B A C A: the model always writes A's answer, so exactly the three A rows are right.
    examples = [held[0], held[1], held[0], held[2], held[0]]
    answer = held[0].prompt[len("rev:"):-1][::-1]  # the reversed word, read off the prompt
    n_correct = sum(e.prompt[len("rev:"):-1][::-1] == answer for e in examples)
    assert n_correct == 3  # the setup: B and C are other words
    # batch_size 2 splits the five rows into chunks of 2, 2 and 1: the count must add up across them
    res = evaluate(Steered(model, _writes(tok, answer)), tok, examples, exact_match, max_new_tokens=8, pass_k=0,
                   temperature=1.0, batch_size=2)
    assert res["accuracy"] == n_correct / len(examples)
    assert [s["completion"] for s in res["samples"]] == [answer] * 5
    assert [s["reward"] for s in res["samples"]] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert "pass@0" not in res
    assert res["reward_mean"] == 3 / 5  # of the greedy answers, across the three chunks
    assert res["completion_len_mean"] == len(tok(answer, add_special_tokens=False)["input_ids"]) + 1  # and EOS


def test_accuracy_counts_the_correct_component_not_the_summed_reward():
    # A dict reward: every row earns a format bonus of 1 (its sum is >= 1 everywhere), but only the chosen
    # prompts are "correct". Accuracy must count those alone, whatever the untrained model writes.
    model, tok = _tiny()
    examples = BuiltinTask("sorting", 5, eval_size=7).held_out
    chosen = {examples[1].prompt, examples[4].prompt}

    def reward(prompt, completion, **_):
        return {"correct": float(prompt in chosen), "format": 1.0}

    res = evaluate(model, tok, examples, reward, max_new_tokens=4, pass_k=2, temperature=1.0)
    assert res["accuracy"] == 2 / 7
    assert res["pass@2"] == 2 / 7  # every sample of a chosen prompt is correct, none of the others
    assert [s["reward"] for s in res["samples"]] == [1.0 + (e.prompt in chosen) for e in examples]


def test_pass_at_k_counts_a_prompt_with_one_right_sample_of_k():
    # The model writes one letter and then EOS: "a" with probability 1/4, "b" with 3/4 (temperature 1).
    # Greedy therefore writes "b" everywhere. The reward accepts "a" only and records every completion it
    # scores, so each prompt's right samples can be counted from what the reward saw.
    model, tok = _tiny()
    a, b = tok.convert_tokens_to_ids(["a", "b"])
    steps = [{a: 0.0, b: math.log(3.0)}, {tok.eos_token_id: 0.0}]
    examples = BuiltinTask("reversal", 5, eval_size=8).held_out
    seen: dict[str, list[str]] = {e.prompt: [] for e in examples}

    def reward(prompt, completion, **_):
        seen[prompt].append(completion)
        return float(completion == "a")

    k = 3
    res = evaluate(Steered(model, steps), tok, examples, reward, max_new_tokens=4, pass_k=k, temperature=1.0, seed=0)
    assert [s["completion"] for s in res["samples"]] == ["b"] * 8 and res["accuracy"] == 0.0
    assert all(len(c) == k + 1 and set(c) <= {"a", "b"} for c in seen.values())  # 1 greedy + k samples each
    right = [c.count("a") for c in seen.values()]  # greedy wrote "b": every "a" is a right sample
    # the seed gives prompts with none, exactly one and more right, and none with all k: "any" and "all" differ
    assert 0 in right and 1 in right and k not in right
    assert res[f"pass@{k}"] == sum(r >= 1 for r in right) / len(examples)


def test_no_held_out_examples_measure_nothing():
    model, tok = _tiny()
    res = evaluate(model, tok, [], exact_match, max_new_tokens=4, pass_k=2, temperature=1.0)
    assert res["accuracy"] is None and res["pass@2"] is None and res["samples"] == []
    assert res["reward_mean"] is None and res["completion_len_mean"] is None


def test_an_evaluation_line_shows_its_first_greedy_answer():
    from policyforge.train.evaluate import example_text

    shown = example_text({"prompt": "rev:abc=", "completion": "cba", "reward": 1.0})
    assert shown == "; e.g. 'rev:abc=' -> 'cba' (reward 1)"
    long = example_text({"prompt": "q" * 50, "completion": "a" * 50, "reward": 0.25})
    assert long == f"; e.g. '...{'q' * 40}' -> '{'a' * 40}...' (reward 0.25)"
    assert example_text(None) == ""


def test_a_task_named_with_its_size_or_in_a_mixture_is_compared_by_its_problems():
    from policyforge.train.config import DataConfig
    from policyforge.train.evaluate import split_changes

    run = DataConfig(task="reversal", eval_size=20)
    assert split_changes(run, DataConfig(task="reversal:8", eval_size=20)) == []  # 8 is reversal's default
    assert split_changes(run, DataConfig(task="reversal:6", eval_size=20)) == ["data.task 'reversal' -> 'reversal:6'"]
    assert split_changes(run, DataConfig(task="reversal,sorting", eval_size=20)) != []  # shares reversal's problems
    assert split_changes(run, DataConfig(task="sorting", eval_size=20)) == []  # another task: no prompt in common
