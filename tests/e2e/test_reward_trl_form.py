"""A TRL batched reward function through the real loop: it trains as its per-row twin does, is called once per
batch with lists, gets the sampled token ids as completion_ids (so TRL's own length reward runs unchanged), and a
failure at start-up says it is the start-up check and where in the user's code."""

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from policyforge.data.tasks import BuiltinTask
from policyforge.models.load import load_model, load_tokenizer
from policyforge.rewards.score import RewardError
from policyforge.rollout.sampler import cut_at_stop
from policyforge.train.evaluate import evaluate
from policyforge.train.loop import train

CALLS = []  # (number of completions, the answer column) of each call of vowels_trl


def vowels_trl(completions, answer, **kwargs):
    """tests.e2e.test_train:vowel_reward in TRL's form."""
    CALLS.append((len(completions), list(answer)))
    return [float(sum(ch in "aeiou" for ch in c)) for c in completions]


def _rewards(cfg, spec: str, name: str) -> list[float]:
    cfg.data.reward, cfg.train.run_name = spec, name
    run = train(cfg, log=lambda *_: None)
    return [json.loads(line)["reward_mean"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_trl_function_trains_as_its_per_row_twin(tiny_cfg):
    CALLS.clear()
    batched = _rewards(tiny_cfg, "tests.e2e.test_reward_trl_form:vowels_trl", "trl")
    per_row = _rewards(tiny_cfg, "tests.e2e.test_train:vowel_reward", "per-row")
    assert len(batched) == 2 and batched == pytest.approx(per_row, abs=1e-6) and sum(batched) > 0
    # one call each: the start-up check (a held-out row, then a training row), the step-0 evaluation of the 4
    # held-out rows, then each step's 2 prompts x 4 completions
    assert [n for n, _ in CALLS[:5]] == [1, 1, 4, 8, 8]
    assert all(len(a) == n and all(isinstance(x, str) for x in a) for n, a in CALLS)  # the answer column as a list


def test_a_reward_failing_at_start_up_is_labelled_and_located(tiny_cfg, tmp_path, monkeypatch):
    (tmp_path / "trl_form_rewards.py").write_text(textwrap.dedent("""
        def score(completions, target, **kwargs):
            return {"oops": 1}["missing"]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("trl_form_rewards", None)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"rev:{w}=", "target": w[::-1]}) + "\n"
                            for w in ("abc", "dog", "frog", "cat", "owl", "bee")))
    tiny_cfg.data.path, tiny_cfg.data.eval_size, tiny_cfg.data.reward = str(data), 2, "trl_form_rewards:score"
    # its **kwargs may read completion_ids: the label says they are the stand-in's too
    with pytest.raises(RewardError, match=r"^start-up check \(empty completion, not a model output; completion_ids "
                                          r"are the stand-in's tokens and EOS\): batched "
                                          r"reward function 'score' raised on .*data.jsonl, line 1: KeyError: "
                                          r"'missing' \(at .*trl_form_rewards.py:3 in score\)$"):
        train(tiny_cfg)
    assert not (Path(tiny_cfg.train.out_dir) / tiny_cfg.train.run_name).exists()


def exact_trl(completions, target, **kwargs):
    return [float(c.strip() == t) for c, t in zip(completions, target)]


def test_a_held_out_file_with_other_columns_is_checked_apart_from_the_training_file(tiny_cfg, tmp_path):
    """Training and evaluation never score the two files' rows in one call, so neither does the start-up check."""
    rows = [{"prompt": f"rev:{w}=", "target": w[::-1]} for w in ("abc", "dog", "frog", "cat")]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "e.jsonl").write_text("".join(json.dumps({**r, "id": i}) + "\n" for i, r in enumerate(rows[:2])))
    tiny_cfg.data.path, tiny_cfg.data.eval_path = str(tmp_path / "d.jsonl"), str(tmp_path / "e.jsonl")
    tiny_cfg.data.reward, tiny_cfg.train.steps = "tests.e2e.test_reward_trl_form:exact_trl", 1
    run = train(tiny_cfg, log=lambda *_: None)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


SEEN = []  # (completions, completion_ids) of each call of lengths_trl


def lengths_trl(completions, completion_ids, **kwargs):
    """A TRL-form reward that reads the token ids alone, as TRL's length rewards do: each completion's length."""
    SEEN.append((list(completions), completion_ids))
    return [float(len(ids)) for ids in completion_ids]


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _ending(tok, text: str, ids: list[int], stop: str, budget: int) -> str:
    """How a row's ids end: 'eos', 'stop' (the last token completed the stop string) or 'cut' (at the budget);
    its ids decode to its completion text once the stop string is cut, as the rollout's text was made."""
    decoded = tok.decode(ids, skip_special_tokens=True)
    assert cut_at_stop(decoded, (stop,)) == text
    end = "eos" if ids[-1] == tok.eos_token_id else "stop" if decoded.endswith(stop) else "cut"
    assert end != "cut" or len(ids) == budget
    return end


def test_completion_ids_are_the_sampled_tokens_eos_included(tiny_cfg):
    SEEN.clear()
    tiny_cfg.rollout.max_new_tokens, tiny_cfg.rollout.stop, tiny_cfg.train.pass_k = 8, ["e"], 0
    tiny_cfg.data.reward = "tests.e2e.test_reward_trl_form:lengths_trl"
    records = _records(train(tiny_cfg, log=lambda *_: None))
    tok = load_tokenizer(tiny_cfg.model.path)
    # the start-up check (a held-out row, a training row), the step-0 evaluation, 2 steps, the final evaluation
    assert [len(c) for c, _ in SEEN] == [1, 1, 4, 8, 8, 4]
    for texts, ids in SEEN[:2]:  # the start-up check: its stand-in text's tokens and EOS
        assert ids == [tok(texts[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    ends = []
    for (texts, ids), rec in zip(SEEN[3:5], records):  # each step's rows: their lengths are the ones it logged
        assert rec["reward_mean"] == rec["completion_len_mean"] == pytest.approx(sum(map(len, ids)) / len(ids))
        ends += [_ending(tok, text, row, "e", 8) for text, row in zip(texts, ids)]
        assert rec["truncation_rate"] == ends[-len(ids):].count("cut") / len(ids)
    assert set(ends) == {"eos", "stop", "cut"}  # this seed's rows end in each of the three ways
    for texts, ids in (SEEN[2], SEEN[5]):  # the evaluations' greedy rows
        assert all(_ending(tok, text, row, "e", 8) for text, row in zip(texts, ids))


def test_evaluation_passes_the_greedy_rows_ids(small_model_dir):
    model, tok = load_model(small_model_dir, "float32", "cpu", 0)
    examples = [BuiltinTask("reversal", size=4, seed=0).train_example(i) for i in range(3)]
    SEEN.clear()
    res = evaluate(model, tok, examples, lengths_trl, max_new_tokens=6, pass_k=2, temperature=1.0)
    (texts, ids), (sampled_texts, sampled) = SEEN
    assert texts == [s["completion"] for s in res["samples"]]
    assert [s["reward"] for s in res["samples"]] == [float(len(row)) for row in ids]
    with torch.no_grad():
        for ex, row in zip(examples, ids):  # greedy: each id is the model's most likely token after those before it
            prompt = tok(ex.prompt, add_special_tokens=False)["input_ids"]
            logits = model(torch.tensor([prompt + row])).logits[0, len(prompt) - 1 : -1]
            assert logits.argmax(-1).tolist() == row
            assert len(row) == 6 or row[-1] == tok.eos_token_id
    assert len(sampled) == 6 and [tok.decode(row, skip_special_tokens=True) for row in sampled] == sampled_texts


def test_trl_s_soft_overlong_punishment_runs_unchanged(tiny_cfg, tmp_path, monkeypatch):
    pytest.importorskip("trl")
    (tmp_path / "trl_token_rewards.py").write_text(textwrap.dedent("""
        from trl.rewards import get_soft_overlong_punishment

        overlong = get_soft_overlong_punishment(8, 4)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("trl_token_rewards", None)
    SEEN.clear()
    tiny_cfg.rollout.max_new_tokens, tiny_cfg.rollout.stop, tiny_cfg.train.pass_k = 8, ["e"], 0
    tiny_cfg.data.reward = "trl_token_rewards:overlong, tests.e2e.test_reward_trl_form:lengths_trl"
    tiny_cfg.data.reward_weights = [1.0, 0.0]  # the reward is TRL's punishment alone; lengths_trl sees the ids
    records = _records(train(tiny_cfg, log=lambda *_: None))
    penalties = []
    for (_, ids), rec in zip(SEEN[3:5], records):
        # DAPO eq. 13 with L_max 8, L_cache 4: nothing up to 4 tokens, then (4 - n) / 4, -1 at 8 (none is longer)
        expected = [0.0 if len(row) <= 4 else (4 - len(row)) / 4 for row in ids]
        assert rec["reward/overlong"] == rec["reward_mean"] == pytest.approx(sum(expected) / len(expected))
        assert rec["reward/lengths_trl"] == pytest.approx(rec["completion_len_mean"])  # the run's own lengths
        penalties += expected
    assert {0.0, -1.0} < set(penalties)  # rows within the budget's safe part, cut ones, and some in between


STATES = []  # (global_step, max_steps, completions, frac_long logged) of each call of scheduled_trl


def scheduled_trl(completions, trainer_state, log_metric, **kwargs):
    """A TRL reward that reads the trainer's step (a schedule would) and logs two metrics, one value per row
    for the second."""
    frac = sum(len(c) >= 4 for c in completions) / len(completions)
    log_metric("frac_long", frac)
    for c in completions:
        log_metric("chars", len(c))
    STATES.append((trainer_state.global_step, trainer_state.max_steps, list(completions), frac))
    return [float(sum(ch in "aeiou" for ch in c)) for c in completions]


def _logged(calls: list) -> dict:
    """The reward_fn/ means of these calls of scheduled_trl: frac_long over calls, chars over rows."""
    texts = [c for _, _, completions, _ in calls for c in completions]
    return {"reward_fn/chars": pytest.approx(sum(map(len, texts)) / len(texts)),
            "reward_fn/frac_long": pytest.approx(sum(f for *_, f in calls) / len(calls))}


def test_trainer_state_and_log_metric_in_a_run_and_its_evaluations(tiny_cfg, capsys):
    from policyforge.cli import main

    STATES.clear()
    tiny_cfg.data.reward = "tests.e2e.test_reward_trl_form:scheduled_trl"
    tiny_cfg.train.steps, tiny_cfg.optim.updates_per_batch, tiny_cfg.train.eval_every = 3, 2, 2
    run = train(tiny_cfg, log=lambda *_: None)
    # the start-up check (2 calls), evaluation at step 0 (greedy, pass@2), steps 1 and 2, evaluation at step 2,
    # step 3, the final evaluation: training sees the optimiser steps done before its own (2 per RL step)
    assert [s[0] for s in STATES] == [0, 0, 0, 0, 0, 2, 4, 4, 4, 6, 6]
    assert {s[1] for s in STATES} == {6}
    for rec, call in zip(_records(run), [STATES[4], STATES[5], STATES[8]]):
        assert {k: v for k, v in rec.items() if k.startswith("reward_fn/")} == _logged([call])
    assert 0 < sum(s[3] for s in STATES[4:9]) < 5  # the check is not empty: the fraction varies
    evals = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 2, 3]
    # an evaluation's means are of its greedy answers (as its accuracy); the probe's and pass@k's are dropped
    for e, calls in zip(evals, [STATES[2:3], STATES[6:7], STATES[9:10]]):
        assert {k: v for k, v in e.items() if k.startswith("reward_fn/")} == _logged(calls)
    # policyforge eval of the run: its checkpoint's step (3 RL steps: 6 optimiser steps), the same line as the
    # run's last evaluation; of a model folder: 0
    capsys.readouterr()
    main(["eval", str(run)])
    assert [s[:2] for s in STATES[11:]] == [(6, 6), (6, 6)]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        k: v for k, v in evals[-1].items() if k != "step"}
    main(["eval", str(run), "--optim.updates-per-batch", "3", "--train.steps", "5"])  # flags only train reads
    assert [s[:2] for s in STATES[13:15]] == [(6, 6), (6, 6)]  # the run's own count, as its eval.jsonl saw it
    # a checkpoint named by --model.path with another --config: still the run's own count and max_steps
    other = run.parent / "other.yaml"
    other.write_text("train:\n  steps: 50\noptim:\n  updates_per_batch: 3\n")
    main(["eval", "--model.path", str(run / "checkpoints" / "step_000003"), "--config", str(other), "--data.reward",
          tiny_cfg.data.reward, "--data.task", "reversal", "--train.pass-k", "0"])
    assert STATES[-1][:2] == (6, 6)
    # a model outside any run: no run's count (0 of 1), whatever the flags that only train reads say
    main(["eval", "--model.path", tiny_cfg.model.path, "--data.reward", tiny_cfg.data.reward, "--train.pass-k", "0",
          "--train.steps", "50"])
    assert STATES[-1][:2] == (0, 1) and "reward_fn/frac_long" in capsys.readouterr().out


def test_sft_gives_a_trl_reward_the_state_outside_a_run(tiny_cfg, tmp_path):
    from policyforge.train.sft import sft

    STATES.clear()
    tiny_cfg.data.reward = "tests.e2e.test_reward_trl_form:scheduled_trl"
    tiny_cfg.train.steps, tiny_cfg.optim.updates_per_batch = 50, 3  # only train reads them: they change nothing
    tiny_cfg.sft.steps, tiny_cfg.sft.batch_size, tiny_cfg.sft.out = 1, 2, str(tmp_path / "sft-out")
    sft(tiny_cfg, log=lambda *_: None)
    assert len(STATES) >= 2 and {s[:2] for s in STATES} == {(0, 1)}  # its start-up check and final evaluation
