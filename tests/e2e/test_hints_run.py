"""GHPO in whole runs: groups with no correct completion are sampled again with a growing beginning of the
solution in the prompt, stage by stage, their rows replaced and recorded as hinted; a resume continues exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policyforge.data.tasks import DataError
from policyforge.train.config import ConfigError
from policyforge.train.loop import train
from tests.e2e.test_data_parallel import _metrics, assert_resume_is_exact

MARK = " hint:"


def half_hint_solves(prompt, completion, answer, **_):
    """1 once the prompt's hint holds at least half the answer (GHPO's second stage, 0.5), else 0."""
    hint = prompt.split(MARK, 1)[1] if MARK in prompt else ""
    return float(len(hint) >= len(answer) / 2)


def never(prompt, completion, **_):
    return 0.0


def _lines(run: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (run / name).read_text().splitlines()]


@pytest.fixture
def hint_cfg(tiny_cfg):
    tiny_cfg.rollout.hints, tiny_cfg.rollout.hint_template = "ghpo", MARK + "{hint}"
    tiny_cfg.data.reward = "tests.e2e.test_hints_run:half_hint_solves"
    tiny_cfg.train.steps, tiny_cfg.train.log_rollouts = 3, 8
    return tiny_cfg


def test_unsolved_groups_are_sampled_again_until_a_hint_solves_them(hint_cfg):
    run = train(hint_cfg, log=lambda *_: None)
    for rec in _metrics(run):
        assert (rec["hinted_groups"], rec["hinted_accuracy"], rec["accuracy_unhinted"], rec["accuracy"]) == (2, 1.0, 0.0,
                                                                                                           1.0)
    for line in _lines(run, "rollouts.jsonl"):  # group 0's 4 rows then group 1's, each step
        assert line["source"] == "hinted" and line["reward"] == 1.0
        word = line["prompt"].split(":")[1].split("=")[0]  # rev:WORD= hint:PREFIX
        assert line["prompt"] == f"rev:{word}={MARK}{word[::-1][:round(len(word) * 0.5)]}"  # stage 2's prefix


def test_a_group_no_stage_solves_keeps_the_last_stage_s_rows(hint_cfg):
    hint_cfg.data.reward = "tests.e2e.test_hints_run:never"
    run = train(hint_cfg, log=lambda *_: None)
    assert all(r["hinted_groups"] == 2 and r["hinted_accuracy"] == 0.0 for r in _metrics(run))
    for line in _lines(run, "rollouts.jsonl"):
        word = line["prompt"].split(":")[1].split("=")[0]
        assert line["source"] == "hinted" and line["prompt"].endswith(MARK + word[::-1][:round(len(word) * 0.75)])


def test_a_resumed_hinted_run_continues_exactly(hint_cfg):
    assert_resume_is_exact(hint_cfg, stop_after=1)


def test_without_hints_nothing_is_hinted(hint_cfg):
    hint_cfg.rollout.hints, hint_cfg.rollout.hint_template = "off", "\n The following text is the beginning part " \
        "of the answer, which you can refer to for solving the problem:\n{hint}"
    rec = _metrics(train(hint_cfg, log=lambda *_: None))
    assert all("hinted_groups" not in r and r["accuracy"] == 0.0 for r in rec)


@pytest.mark.parametrize("changes, error, says", [
    ({"rollout.hints": "always"}, ConfigError, "rollout.hints='always'; valid: off, ghpo"),
    ({"rollout.hint_template": "no place"}, ConfigError, "has no {hint}"),
    ({"rollout.hint_ratios": [0.5, 1.5]}, ConfigError, r"rollout.hint_ratios=\[0.5, 1.5\]: one or more fractions"),
    ({"rollout.hints": "off"}, ConfigError, "rollout.hint_template is read only by rollout.hints, which is off"),
    ({"algo.loss": "psft"}, ConfigError, "with a loss that trains on the data's solutions"),
    ({"algo.advantage": "spo"}, ConfigError, "with algo.advantage=spo"),
    ({"data.replay_pool": "pool.jsonl"}, ConfigError, "with data.replay_pool"),
    ({"data.reward": "tests.e2e.test_hints_run:half_hint_solves, tests.e2e.test_hints_run:never"}, ConfigError,
     "a reward whose 'solved' is unclear"),
    ({"rollout.hint_template": "\nHINT {hint}"}, DataError, r"rollout.hints: with the hint of ratio 0.75 .* has "
                                                             "characters the tokenizer does not know"),
])
def test_settings_hints_cannot_use_fail_before_anything_is_written(hint_cfg, changes, error, says):
    for key, value in changes.items():
        section, name = key.split(".")
        setattr(getattr(hint_cfg, section), name, value)
    with pytest.raises(error, match=says):
        train(hint_cfg, log=lambda *_: None)
    assert not (Path(hint_cfg.train.out_dir) / "run").exists()


def test_rows_without_a_solution_are_named(hint_cfg, tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"rev:{w}=", "answer": w[::-1]}) + "\n" for w in ("abc", "dog")))
    hint_cfg.data.path, hint_cfg.data.eval_size = str(data), 0
    with pytest.raises(DataError, match="hints with the reference solution, but .*rows.jsonl, line 1 has none: set "
                                        "data.solution_column"):
        train(hint_cfg, log=lambda *_: None)

