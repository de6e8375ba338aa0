"""Checks around a run: eval cut at stop strings, the solution column reaching the reward, early data
errors, run directories never mixed, sft keeping its model, and a dataset with no held-out rows."""

import json
import math
from pathlib import Path

import pytest
import torch

from policyforge.data.user import DataError, load_rows
from policyforge.rewards.score import RewardError
from policyforge.train import evaluate as evaluate_module
from policyforge.train import sft as sft_module
from policyforge.train.config import ConfigError
from policyforge.train.loop import train
from policyforge.train.sft import sft

SEEN: list[str] = []  # every completion recording_reward was asked to score


def recording_reward(prompt, completion, **_):
    SEEN.append(completion)
    return 0.0


def exact(prompt, completion, target, **_):
    """Needs the `target` column, which is also the solution column in these tests."""
    return float(completion.strip() == target)


def _rows(tmp_path, rows, name="data.jsonl") -> str:
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


WORDS = ["abc", "dog", "frog", "star", "moon", "tree"]


def _reverse_file(tmp_path, n=len(WORDS)) -> str:
    return _rows(tmp_path, [{"prompt": f"rev:{w}=", "target": w[::-1]} for w in WORDS[:n]])


def _jsonl(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def quiet(*_):
    pass


# 1. Held-out evaluation ends completions at rollout.stop, as training rollouts do.

def test_eval_cuts_completions_at_the_stop_string(tiny_cfg):
    from policyforge.models.load import load_model
    from policyforge.train.evaluate import evaluate
    from policyforge.train.setup import build_data

    _, held, reward = build_data(tiny_cfg.data, tiny_cfg.train.seed)
    model, tok = load_model(tiny_cfg.model.path, tiny_cfg.model.dtype, tiny_cfg.model.device, tiny_cfg.train.seed)
    greedy = [s["completion"] for s in evaluate(model, tok, held, reward, max_new_tokens=4, pass_k=0,
                                                temperature=1.0)["samples"]]
    stop = next(c[0] for c in greedy if c)  # a character the untrained model does write
    tiny_cfg.rollout.stop = [stop]
    tiny_cfg.data.reward = "tests.e2e.test_run_checks:recording_reward"
    SEEN.clear()
    run = train(tiny_cfg, log=quiet)
    assert SEEN, "the recording reward was never called"
    assert not [c for c in SEEN if stop in c]  # training, greedy eval and pass@k samples alike
    assert all(stop not in s["completion"] for s in _jsonl(run / "samples.jsonl"))


def test_sft_evaluates_with_the_stop_strings(tiny_cfg, tmp_path, monkeypatch):
    real_evaluate = evaluate_module.evaluate

    def spy_evaluate(*args, **kwargs):  # the real evaluation; SEEN holds only what it scored
        SEEN.clear()
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluate", spy_evaluate)  # what evaluate_run calls
    tiny_cfg.data.reward = "tests.e2e.test_run_checks:recording_reward"
    tiny_cfg.sft.steps, tiny_cfg.sft.batch_size = 1, 2
    tiny_cfg.sft.out = str(tmp_path / "no-stop")
    sft(tiny_cfg, log=quiet)
    stop = next(c[0] for c in SEEN if c)  # a character the fine-tuned model writes without a stop string

    # the same fine-tuning (same seed, and stop strings play no part in it) with that character as the stop
    tiny_cfg.rollout.stop = [stop]
    tiny_cfg.sft.out = str(tmp_path / "with-stop")
    sft(tiny_cfg, log=quiet)
    assert SEEN, "the recording reward was never called by the evaluation"
    assert not [c for c in SEEN if stop in c]  # greedy and pass@k completions alike


# 2. The solution column also reaches the reward; sft checks the reward first and saves before evaluating.

def test_solution_column_is_passed_to_the_reward(tmp_path):
    rows = load_rows(_reverse_file(tmp_path), solution_column="target")
    assert rows[0].solution == "cba" and rows[0].extra == {"target": "cba"}


def test_teacher_forced_run_with_solution_column_as_reward_argument(tiny_cfg, tmp_path):
    tiny_cfg.data.path = _reverse_file(tmp_path)
    tiny_cfg.data.reward = "tests.e2e.test_run_checks:exact"
    tiny_cfg.data.solution_column = "target"
    tiny_cfg.data.eval_size = 2
    tiny_cfg.algo.loss = "psft"
    tiny_cfg.train.steps = 1
    run = train(tiny_cfg, log=quiet)
    assert [r["step"] for r in _jsonl(run / "metrics.jsonl")] == [1]
    assert _jsonl(run / "metrics.jsonl")[0]["reward_mean"] == 1.0  # the solutions themselves are scored
    assert not (run / "rollouts.jsonl").exists()  # nothing was sampled: no solution passes for a sample


def test_sft_checks_the_reward_before_loading_the_model(tiny_cfg, tmp_path, monkeypatch):
    def broken(*_, **__):
        raise AssertionError("the model was loaded before the reward was checked")

    monkeypatch.setattr(sft_module, "load_model", broken)
    tiny_cfg.data.reward = "tests.e2e.test_run_checks:raises"
    tiny_cfg.sft.out = str(tmp_path / "sft-out")
    with pytest.raises(RewardError, match="row"):
        sft(tiny_cfg, log=quiet)


def raises(prompt, completion, **_):
    raise ValueError("broken reward")


def test_sft_saves_the_model_before_the_final_evaluation(tiny_cfg, tmp_path, monkeypatch):
    def failing(*_, **__):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(evaluate_module, "evaluate", failing)
    tiny_cfg.sft.steps, tiny_cfg.sft.batch_size, tiny_cfg.sft.out = 1, 2, str(tmp_path / "sft-out")
    with pytest.raises(RuntimeError, match="evaluation failed"):
        sft(tiny_cfg, log=quiet)
    assert (tmp_path / "sft-out" / "config.json").exists()
    assert not (tmp_path / "sft-out.tmp").exists()


# 3. A teacher-forced loss on data without solutions fails before anything is loaded or written.

@pytest.mark.parametrize("loss", ["psft", "otr"])
def test_teacher_forced_loss_without_solutions_fails_first(tiny_cfg, tmp_path, loss):
    tiny_cfg.data.path = _reverse_file(tmp_path)
    tiny_cfg.data.reward = "tests.e2e.test_run_checks:exact"
    tiny_cfg.algo.loss = loss
    with pytest.raises(DataError, match=f"'{loss}'.*data.solution_column"):
        train(tiny_cfg, log=quiet)
    assert not (tmp_path / "runs").exists()


# 4. A fresh run never appends to a directory a failed start wrote; a failed resume keeps config.yaml.

@pytest.mark.parametrize("left", ["eval.jsonl", "samples.jsonl"])
def test_fresh_run_refuses_records_of_a_failed_start(tiny_cfg, tmp_path, left):
    run = tmp_path / "runs" / "run"
    run.mkdir(parents=True)
    (run / left).write_text('{"step": 0}\n')
    with pytest.raises(ConfigError, match="ended before its first checkpoint.*delete that directory"):
        train(tiny_cfg, log=quiet)
    assert (run / left).read_text() == '{"step": 0}\n'


def test_failed_resume_keeps_the_saved_config(tiny_cfg):
    tiny_cfg.train.stop_after = 1
    run = train(tiny_cfg, log=quiet)
    saved = (run / "config.yaml").read_text()
    tiny_cfg.train.stop_after = None
    tiny_cfg.algo.loss = "aepo"  # its state is not in a ppo_clip checkpoint
    with pytest.raises(ConfigError, match="algo.loss: 'ppo_clip' -> 'aepo'"):  # refused before anything loads
        train(tiny_cfg, resume=str(run), log=quiet)
    assert (run / "config.yaml").read_text() == saved
    # config.yaml edited by hand to the new loss: the settings agree, the checkpoint's state does not
    edited = saved.replace("loss: ppo_clip", "loss: aepo")
    (run / "config.yaml").write_text(edited)
    with pytest.raises(ConfigError, match="holds no algorithm state, but this run asks for loss 'aepo'"):
        train(tiny_cfg, resume=str(run), log=quiet)
    assert (run / "config.yaml").read_text() == edited


# 5. No held-out rows: accuracy is not measured (null), never reported as 0%.

def test_one_row_dataset_reports_no_held_out_prompts(tiny_cfg, tmp_path):
    tiny_cfg.data.path = _reverse_file(tmp_path, n=1)
    tiny_cfg.data.reward = "tests.e2e.test_run_checks:exact"
    tiny_cfg.train.eval_every = 1
    tiny_cfg.train.stop_after = 1
    run = train(tiny_cfg, log=quiet)
    tiny_cfg.train.stop_after = None
    lines = []
    train(tiny_cfg, resume=str(run), log=lines.append)  # acc_start comes back from the checkpoint as None
    assert lines[-2].startswith("no held-out prompts in 2 steps")
    assert [e["accuracy"] for e in _jsonl(run / "eval.jsonl")] == [None, None, None]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_accuracy_start"] is None and summary["eval_accuracy_end"] is None


def test_more_prompts_a_step_than_training_rows_gets_a_note(tiny_cfg, tmp_path):
    tiny_cfg.data.path, tiny_cfg.data.eval_size = _reverse_file(tmp_path, n=6), 2  # 4 training rows
    tiny_cfg.data.reward = "tests.e2e.test_run_checks:exact"
    tiny_cfg.train.steps = 1
    for prompts, noted in ((4, False), (8, True)):
        tiny_cfg.rollout.prompts_per_step, tiny_cfg.train.run_name = prompts, f"p{prompts}"
        lines = []
        train(tiny_cfg, log=lines.append)
        assert any("rollout.prompts_per_step=8 is more than the 4 training rows" in x for x in lines) == noted


def test_eval_size_0_holds_nothing_out_for_train_but_not_for_eval(tiny_cfg, tmp_path):
    tiny_cfg.data.path, tiny_cfg.data.eval_size = _reverse_file(tmp_path, n=6), 0
    tiny_cfg.data.reward = "tests.e2e.test_run_checks:exact"
    lines = []
    run = train(tiny_cfg, log=lines.append)
    assert any(x.startswith("data: 6 training rows from") and ", 0 held out" in x for x in lines)
    assert [e["accuracy"] for e in _jsonl(run / "eval.jsonl")] == [None, None]
    from policyforge.train.validate import validate

    with pytest.raises(ConfigError, match="data.eval_size=0: must be at least 1"):
        validate(tiny_cfg, "eval")


def test_sft_on_one_row_reports_no_held_out_prompts(tiny_cfg, tmp_path):
    tiny_cfg.data.path = _reverse_file(tmp_path, n=1)
    tiny_cfg.data.reward = "tests.e2e.test_run_checks:exact"
    tiny_cfg.data.solution_column = "target"
    tiny_cfg.sft.steps, tiny_cfg.sft.batch_size, tiny_cfg.sft.out = 1, 1, str(tmp_path / "sft-out")
    lines = []
    sft(tiny_cfg, log=lines.append)
    assert lines[-1] == f"saved {tmp_path / 'sft-out'}: no held-out prompts"


def test_a_reference_with_another_vocabulary_is_refused_before_the_first_step(tiny_cfg, tmp_path):
    from policyforge.models.load import ModelError
    from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model

    other = tmp_path / "other-ref"
    tok = char_tokenizer()
    tok.add_tokens(["<extra>"])  # one more token: ids no longer mean the same text
    tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128)).save_pretrained(other)
    tok.save_pretrained(other)
    tiny_cfg.model.ref_path = str(other)
    with pytest.raises(ModelError, match=r"model.ref_path=.*other-ref.*tokenizer differs from the policy's"):
        train(tiny_cfg, log=lambda *_: None)
    assert not (tmp_path / "runs" / "run").exists()  # refused before the run directory was made
    tiny_cfg.model.ref_path = tiny_cfg.model.path  # the same vocabulary: accepted
    run = train(tiny_cfg, log=lambda *_: None)
    # that the reference is really used is test_a_reference_with_other_weights_is_the_one_kl_ref_measures
    assert [r["step"] for r in _jsonl(run / "metrics.jsonl")] == [1, 2]


def _completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature):
    """(B, T) log-probs `model` gives each completion token at `temperature`, one unpadded row at a time
    (no padding or position handling shared with the trainer's batched forward)."""
    out = torch.zeros_like(completion_mask, dtype=torch.float32)
    with torch.no_grad():
        for i in range(len(prompt_ids)):
            p = prompt_ids[i][prompt_mask[i].bool()]
            n = int(completion_mask[i].sum())
            seq = torch.cat([p, completion_ids[i][:n]])[None]
            logits = model(input_ids=seq).logits[0, len(p) - 1: len(p) - 1 + n].float() / temperature
            out[i, :n] = torch.log_softmax(logits, -1).gather(-1, completion_ids[i][:n, None]).squeeze(-1)
    return out


def test_a_reference_with_other_weights_is_the_one_kl_ref_measures(tiny_cfg, tmp_path, monkeypatch):
    """model.ref_path replaces the initial policy as the reference: step 1's kl_ref is k3 between the
    sampler's log-probs and *that* model's, which a run that ignored ref_path (kl_ref about 0 at step 1,
    where the policy is its own reference) would not give."""
    from policyforge.models.load import load_model
    from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model
    from policyforge.train import loop

    other = tmp_path / "other-weights"
    tok = char_tokenizer()  # the policy's vocabulary, other weights (the policy is seed 0)
    tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128), seed=1).save_pretrained(other)
    tok.save_pretrained(other)

    batches = []
    real_step = loop.train_step

    def spy_step(*args, **kwargs):  # the real step; keeps the scored batch it returns
        record, batch = real_step(*args, **kwargs)
        batches.append(batch)
        return record, batch

    monkeypatch.setattr(loop, "train_step", spy_step)
    tiny_cfg.model.ref_path = str(other)
    tiny_cfg.train.steps = 1
    run = train(tiny_cfg, log=quiet)
    kl_ref = _jsonl(run / "metrics.jsonl")[0]["kl_ref"]

    (b,) = batches
    t = tiny_cfg.rollout.temperature

    def k3_mean(model):  # KL(pi || model), k3 estimate over every sampled token
        ref = _completion_logprobs(model, b.prompt_ids, b.prompt_mask, b.completion_ids, b.completion_mask, t)
        d = (ref - b.behav_logp)[b.completion_mask.bool()]
        return float((torch.exp(d) - d - 1).mean())

    m = tiny_cfg.model
    expected = k3_mean(load_model(str(other), m.dtype, m.device)[0].eval())
    initial = k3_mean(load_model(m.path, m.dtype, m.device)[0].eval())  # what the default reference gives
    # two random initialisations are both close to uniform, so KL between them is small but clearly nonzero;
    # against the initial policy (the sampler itself at step 1) it is 0
    assert expected > 1e-3 and initial < 1e-6
    assert math.isclose(kl_ref, expected, rel_tol=1e-4)


def test_a_reference_copy_kept_only_for_kl_ref_gets_a_note_when_large(tiny_cfg, monkeypatch):
    from policyforge.train import notes

    monkeypatch.setattr(notes, "BIG_REFERENCE", 1)  # the test model counts as large
    for drift, name, noted in (({}, "a", True), ({"k3": 0.1}, "b", False)):  # a drift term needs the copy anyway
        tiny_cfg.algo.drift, tiny_cfg.train.run_name, tiny_cfg.train.steps = drift, name, 1
        lines = []
        train(tiny_cfg, log=lines.append)
        assert any("is kept only to log kl_ref; --train.no-track-ref-kl saves" in x for x in lines) == noted


def test_steps_without_any_learning_signal_get_one_note(tiny_cfg, capsys, monkeypatch):
    """The untrained model scores 0 on every completion of the default task: every advantage is 0."""
    from policyforge.train import notes

    monkeypatch.setattr(notes, "FLAT_STEPS_WARNING", 2)
    tiny_cfg.train.steps = 4
    train(tiny_cfg, log=quiet)
    out = capsys.readouterr().out
    assert out.count("note: in the last 2 steps every group's completions got equal rewards") == 1


def test_steps_with_most_completions_cut_get_one_note(tiny_cfg, capsys):
    """One new token: nearly every completion of the untrained model is cut at max_new_tokens."""
    tiny_cfg.train.steps, tiny_cfg.rollout.max_new_tokens = 5, 1
    run = train(tiny_cfg, log=quiet)
    cut = [json.loads(line)["truncation_rate"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(x > 0.5 for x in cut[:3])  # the note's condition holds from step 1
    out = capsys.readouterr().out
    assert out.count("note: in the last 3 steps most completions were cut at rollout.max_new_tokens=1") == 1


def half_credit(prompt, completion, **_):
    """0.5 for every completion: not a success indicator."""
    return 0.5


@pytest.mark.parametrize("advantage, noted", [("bnpo", True), ("grpo", False)])
def test_a_non_binary_reward_to_a_success_estimator_gets_one_note(tiny_cfg, capsys, advantage, noted):
    tiny_cfg.data.reward, tiny_cfg.algo.advantage, tiny_cfg.train.steps = "tests.e2e.test_run_checks:half_credit", \
        advantage, 3
    train(tiny_cfg, log=quiet)
    out = capsys.readouterr().out
    assert out.count("note: algo.advantage=bnpo reads the reward as success (1 solved, 0 not), but step 1's rewards "
                     "include 0.5") == int(noted)


@pytest.mark.parametrize("reward, buffer, expected", [
    ("correct, tests.e2e.trl_overlong_rewards:overlong_32", 0,
     ["note: data.reward's soft overlong punishment (TRL's) has max_completion_len=32, but completions end at "
      "rollout.max_new_tokens=4, so its 8-token buffer is never reached"]),
    ("correct, tests.e2e.trl_overlong_rewards:overlong_4", 2,
     ["note: data.reward has TRL's soft overlong punishment and algo.overlong_buffer adds DAPO's too"]),
    ("correct, tests.e2e.trl_overlong_rewards:overlong_4", 0, []),
])
def test_trl_s_overlong_punishment_sized_for_another_budget_or_doubled_gets_a_note(tiny_cfg, reward, buffer,
                                                                                    expected):
    pytest.importorskip("trl")
    tiny_cfg.data.reward = ", ".join(f"tests.e2e.trl_overlong_rewards:{r}" if ":" not in r else r
                                     for r in reward.split(", "))
    tiny_cfg.algo.overlong_buffer, tiny_cfg.train.steps = buffer, 1
    lines = []
    train(tiny_cfg, log=lines.append)
    noted = [x for x in lines if "soft overlong punishment" in x or "TRL's soft overlong" in x]
    assert len(noted) == len(expected) and all(n.startswith(e) for n, e in zip(noted, expected)), noted


def test_the_overlong_note_finds_trl_s_function_inside_every_wrapper():
    from policyforge.rewards.model import Ensemble
    from policyforge.rewards.score import Combined, Pooled
    from policyforge.train.notes import trl_overlong

    class Overlong:  # what TRL's get_soft_overlong_punishment returns carries these two
        max_completion_len, soft_punish_cache = 32, 8

        def __call__(self, completion_ids, **_):
            return [0.0] * len(completion_ids)

    fn = Overlong()
    for reward in (fn, Combined({"a": strict_reward, "o": fn}, [1, 1]), Pooled(fn, 2), Ensemble(Pooled(fn, 2), None),
                   Ensemble(Combined({"o": fn}, [1]), None)):
        notes = trl_overlong(reward, 8, 4)
        assert len(notes) == 2 and notes[0].startswith("note: data.reward's soft overlong punishment (TRL's) has "
                                                       "max_completion_len=32") \
            and notes[1].startswith("note: data.reward has TRL's soft overlong punishment and algo.overlong_buffer")
    assert trl_overlong(Ensemble(None, None), 8, 4) == [] and trl_overlong(strict_reward, 8, 4) == []


def strict_reward(prompt, completion, answer, **_):
    """Scores right answers only: the start-up probe (which offers the reference solution) passes, the step-0
    evaluation of an untrained model fails."""
    if completion.strip() != answer:
        raise ValueError("strict_reward: cannot score a wrong answer")
    return 1.0


def test_a_run_that_fails_at_its_first_evaluation_leaves_nothing_behind(tiny_cfg):
    tiny_cfg.data.reward = "tests.e2e.test_run_checks:strict_reward"
    with pytest.raises(RewardError, match="^held-out evaluation at step 0: reward function raised on .* cannot "
                                          "score a wrong answer"):
        train(tiny_cfg, log=lambda *_: None)
    run = Path(tiny_cfg.train.out_dir) / "run"
    assert not run.exists(), sorted(p.name for p in run.iterdir())  # no config.yaml, no run.lock
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"  # the same name starts afresh
    assert (train(tiny_cfg, log=lambda *_: None) / "summary.json").exists()
