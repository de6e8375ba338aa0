"""Critique-GRPO in whole runs: each completion of a group with no correct one is critiqued, the policy answers
again from a prompt holding the critique, and k refinements join the group as answers to the question, recorded as
refined; a resume continues exactly; settings it cannot use fail before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policyforge.data.tasks import DataError
from policyforge.train.config import ConfigError
from policyforge.train.loop import train
from tests.e2e.test_data_parallel import _metrics, assert_resume_is_exact

CALLS: list[tuple] = []


def never(prompt, completion, **_):
    return 0.0


def always(prompt, completion, **_):
    return 1.0


def recording_critic(prompt, completion, reward, **columns):
    """A critic of one's own: what it was called with is kept for the test."""
    CALLS.append((prompt, completion, reward, columns))
    return "wrong."


def _lines(run: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (run / name).read_text().splitlines()]


@pytest.fixture
def refine_cfg(tiny_cfg):
    tiny_cfg.rollout.refinements = 2
    tiny_cfg.data.reward = "tests.e2e.test_refine_run:never"  # no group is ever solved: every one is refined
    tiny_cfg.train.steps, tiny_cfg.train.log_rollouts = 3, 100
    return tiny_cfg


def test_unsolved_groups_are_joined_by_k_refinements_trained_as_answers_to_the_question(refine_cfg):
    run = train(refine_cfg, log=lambda *_: None)
    for rec in _metrics(run):
        assert (rec["refined_groups"], rec["refined_accuracy"], rec["accuracy"]) == (2, 0.0, 0.0)
    lines = _lines(run, "rollouts.jsonl")
    for step in (1, 2, 3):
        rows = [x for x in lines if x["step"] == step]
        assert [x["source"] for x in rows] == (["fresh"] * 4 + ["refined"] * 2) * 2  # a group's own rows first
        for g in (rows[:6], rows[6:]):
            assert len({x["prompt"] for x in g}) == 1  # the refinements' prompt is the question's


def test_a_critic_of_one_s_own_gets_each_failed_completion_with_its_reward_and_columns(refine_cfg, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"rev:{w}=", "answer": w[::-1]}) + "\n"
                            for w in ("abc", "dog", "cat", "fig")))
    refine_cfg.data.path, refine_cfg.data.eval_size = str(path), 0
    refine_cfg.rollout.critique, refine_cfg.train.steps = "tests.e2e.test_refine_run:recording_critic", 1
    CALLS.clear()
    run = train(refine_cfg, log=lambda *_: None)
    lines = _lines(run, "rollouts.jsonl")
    fresh = [x for x in lines if x["source"] == "fresh"]
    probed = [c for c in CALLS if c[1] == ""]  # the start-up check's: the first rows' critiques of an empty answer
    assert len(probed) == 4 and CALLS[:4] == probed
    assert [(c[0], c[1], c[2]) for c in CALLS[4:]] == [(x["prompt"], x["completion"], 0.0) for x in fresh]
    assert all(c[3]["answer"] == c[0][4:-1][::-1] for c in CALLS)  # the row's columns
    refined = [x for x in lines if x["source"] == "refined"]
    assert refined and all(x["extra"]["critique"] == "wrong." for x in refined)
    assert {x["extra"]["critiqued"] for x in refined} <= {x["completion"] for x in fresh}


def test_a_group_with_a_correct_completion_is_left_as_it_is(refine_cfg):
    refine_cfg.data.reward = "tests.e2e.test_refine_run:always"
    run = train(refine_cfg, log=lambda *_: None)
    assert all(r["refined_groups"] == 0 and "refined_accuracy" not in r for r in _metrics(run))
    assert {x["source"] for x in _lines(run, "rollouts.jsonl")} == {"fresh"}


def test_a_refined_run_resumes_exactly(refine_cfg):
    assert_resume_is_exact(refine_cfg, stop_after=2)


@pytest.mark.parametrize("changes, error, says", [
    ({"refine_shaping_gamma": 0.0}, ConfigError, "gamma of f"),
    ({"refine_template": "{question} again: "}, ConfigError, "lacks {response}, {critique}"),
    ({"refine_template": "{response} {critique} again: "}, ConfigError, "lacks {question}"),
    ({"critique": "stern"}, ConfigError, "rollout.critique='stern': indicative, ground_truth"),
    ({"critique": "tests.e2e.test_refine_run:missing"}, ConfigError, "rollout.critique=.*missing"),
    ({"refinements": 5}, ConfigError, "at most rollout.group_size=4"),
    ({"refine_template": "{question}{response}{critique}" + "a" * 600}, DataError, "refinement prompt"),
    ({"refine_template": "{question} Answer: {response} {critique}"}, DataError, "refinement prompt"),
    ({"hints": "ghpo"}, ConfigError, "refinements=2 with rollout.hints"),
    ({"refinements": 0, "critique": "indicative"}, ConfigError, "rollout.critique is read only by Critique-GRPO"),
    ({"refinements": -1}, ConfigError, "rollout.refinements=-1"),
])
def test_settings_refinements_cannot_use_fail_before_anything_is_written(refine_cfg, changes, error, says):
    for k, v in changes.items():
        setattr(refine_cfg.rollout, k, v)
    with pytest.raises(error, match=says):
        train(refine_cfg, log=lambda *_: None)
    assert not (Path(refine_cfg.train.out_dir) / "run").exists()


def test_a_ground_truth_critique_needs_each_row_s_solution(refine_cfg, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"rev:{w}="}) + "\n" for w in ("abc", "dog", "cat")))
    refine_cfg.data.path, refine_cfg.data.eval_size = str(path), 0
    with pytest.raises(DataError, match="line 1 has no reference solution: set data.solution_column"):
        train(refine_cfg, log=lambda *_: None)
    refine_cfg.rollout.critique = "indicative"  # needs none
    assert _metrics(train(refine_cfg, log=lambda *_: None))[0]["refined_groups"] == 2


def test_a_refinement_is_trained_after_the_question_s_own_prompt_tokens(refine_cfg, small_model_dir):
    from types import SimpleNamespace

    from policyforge.data.critique import refine_example
    from policyforge.data.tasks import Example
    from policyforge.models.load import load_model
    from policyforge.train.algorithm import resolve
    from policyforge.train.evaluate import encode_prompts
    from policyforge.train.refine import sampled_once, under_question
    import torch

    model, tok = load_model(small_model_dir, "float32", "cpu", 0)
    questions = [Example("rev:abc=", "cba"), Example("rev:de=", "ed")]
    asked = [refine_example(q, "xyz", "the answer is incorrect.") for q in questions]
    p = SimpleNamespace(cfg=refine_cfg, model=model, tok=tok, gen=torch.Generator().manual_seed(0),
                        algo=resolve(refine_cfg.algo))
    sampled = sampled_once(p, asked)
    refined = under_question(p, sampled, questions)
    ids, attn = encode_prompts(tok, [q.prompt for q in questions], "cpu")
    assert torch.equal(refined.prompt_ids, ids) and torch.equal(refined.prompt_mask, attn)
    assert torch.equal(refined.completion_ids, sampled.completion_ids)  # the sampled tokens, not re-encoded text
    assert refined.source == ["refined"] * 2 and [e.prompt for e in refined.examples] == ["rev:abc=", "rev:de="]
    assert sampled.prompt_ids.shape[1] > ids.shape[1]  # they were sampled under the longer refinement prompt


def broken_critic(prompt, completion, reward, **columns):
    raise KeyError("verdict")


def test_a_critic_that_fails_is_named_in_one_line_before_the_first_step(refine_cfg):
    refine_cfg.rollout.critique = "tests.e2e.test_refine_run:broken_critic"
    with pytest.raises(DataError, match=r"rollout.critique .*broken_critic' raised KeyError: 'verdict' on row 0"):
        train(refine_cfg, log=lambda *_: None)
    assert not (Path(refine_cfg.train.out_dir) / "run").exists()


def shouting_critic(prompt, completion, reward, **columns):
    return "WRONG"


def test_a_critique_the_tokenizer_cannot_read_is_found_at_start_up(refine_cfg):
    refine_cfg.rollout.critique = "tests.e2e.test_refine_run:shouting_critic"
    with pytest.raises(DataError, match="refinement prompt"):
        train(refine_cfg, log=lambda *_: None)
