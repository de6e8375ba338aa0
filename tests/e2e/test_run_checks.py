"""Checks around a run: eval cut at stop strings, the solution column reaching the reward, early data
errors, run directories never mixed, sft keeping its model, and a dataset with no held-out rows."""

import json

import pytest

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
    seen = {}

    def fake_evaluate(*args, **kwargs):
        seen.update(kwargs)
        return {"accuracy": 0.0, "pass@2": 0.0, "samples": []}

    monkeypatch.setattr(evaluate_module, "evaluate", fake_evaluate)  # what evaluate_run calls
    tiny_cfg.rollout.stop = ["\n"]
    tiny_cfg.sft.steps, tiny_cfg.sft.batch_size, tiny_cfg.sft.out = 1, 2, str(tmp_path / "sft-out")
    sft(tiny_cfg, log=quiet)
    assert seen["stop"] == ("\n",)


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
    with pytest.raises(Exception):
        train(tiny_cfg, resume=str(run), log=quiet)
    assert (run / "config.yaml").read_text() == saved


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
    assert lines[-1].startswith("no held-out prompts in 2 steps")
    assert [e["accuracy"] for e in _jsonl(run / "eval.jsonl")] == [None, None, None]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_accuracy_start"] is None and summary["eval_accuracy_end"] is None


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
    tiny_cfg.model.ref_path = tiny_cfg.model.path  # the same vocabulary: accepted, and kl_ref is measured against it
    run = train(tiny_cfg, log=lambda *_: None)
    assert "kl_ref" in (run / "metrics.jsonl").read_text()
