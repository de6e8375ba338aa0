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
    ({"rollout.hints": "always"}, ConfigError, "rollout.hints='always'; valid: off, ghpo, scaf"),
    ({"rollout.hint_template": "no place"}, ConfigError, "has no {hint}"),
    ({"rollout.hint_ratios": [0.5, 1.5]}, ConfigError, r"rollout.hint_ratios=\[0.5, 1.5\]: one or more fractions"),
    ({"rollout.hint_ratios": [0.5, 0.25]}, ConfigError, "each larger than the last"),
    ({"rollout.hints": "off"}, ConfigError, r"rollout.hint_template is read only by rollout.hints ghpo or scaf \(it is "
                                            r"off\)"),
    ({"data.hint_column": "hints"}, ConfigError, r"data.hint_column is read only by rollout.hints scaf \(it is ghpo\)"),
    ({"rollout.hints": "scaf"}, ConfigError, "rollout.hints=scaf gives each row's own hints: name the column"),
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



LEVELS = ["x", "xy", "xyz"]  # least revealing first


def level_two_solves(prompt, completion, **_):
    """1 for a completion whose prompt holds the second hint level or a later one."""
    return float(MARK in prompt and prompt.split(MARK, 1)[1].startswith("xy"))


def _hinted_rows(tmp_path, words=("abc", "dog", "frog", "cat")) -> str:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"rev:{w}=", "answer": w[::-1], "hints": LEVELS}) + "\n"
                            for w in words))
    return str(data)


@pytest.fixture
def scaf_cfg(hint_cfg, tmp_path):
    hint_cfg.rollout.hints, hint_cfg.data.hint_column = "scaf", "hints"  # the template: hint_cfg's " hint:{hint}"
    hint_cfg.data.path, hint_cfg.data.eval_size = _hinted_rows(tmp_path), 0
    hint_cfg.data.reward = "tests.e2e.test_hints_run:level_two_solves"
    return hint_cfg


def test_scaf_puts_the_least_revealing_level_s_first_success_in_place_of_one_row(scaf_cfg):
    run = train(scaf_cfg, log=lambda *_: None)
    for rec in _metrics(run):
        # each group: 3 unhinted failures and one success under level 2 ('xy'), the least revealing that solves
        assert (rec["hinted_groups"], rec["hinted_accuracy"], rec["accuracy"], rec["accuracy_unhinted"]) == (
            2, 1.0, 0.25, 0.0)
    for step in range(1, 4):
        rows = [x for x in _lines(run, "rollouts.jsonl") if x["step"] == step]
        assert [x["source"] for x in rows] == ["fresh"] * 3 + ["hinted"] + ["fresh"] * 3 + ["hinted"]
        hinted = [x for x in rows if x["source"] == "hinted"]
        assert all(x["prompt"].endswith(MARK + "xy") and x["reward"] == 1.0 for x in hinted)
        assert all(x["advantage"] > 0 for x in hinted)  # the group's one success


def test_scaf_leaves_a_group_no_level_solves_and_waits_out_its_warmup(scaf_cfg):
    scaf_cfg.data.reward = "tests.e2e.test_hints_run:never"
    assert all(r["hinted_groups"] == 0 for r in _metrics(train(scaf_cfg, log=lambda *_: None)))
    scaf_cfg.data.reward, scaf_cfg.rollout.hint_warmup_steps = "tests.e2e.test_hints_run:level_two_solves", 2
    scaf_cfg.train.run_name = "warm"
    assert [r["hinted_groups"] for r in _metrics(train(scaf_cfg, log=lambda *_: None))] == [0, 0, 2]


def test_a_resumed_scaf_run_continues_exactly(scaf_cfg):
    scaf_cfg.rollout.hint_warmup_steps = 1  # the resume starts where the hints do
    assert_resume_is_exact(scaf_cfg, stop_after=1)


def test_scaf_needs_data_with_hints_and_its_own_template(scaf_cfg):
    from policyforge.data.hints import HINT_TEMPLATE

    scaf_cfg.rollout.hint_template = HINT_TEMPLATE
    with pytest.raises(ConfigError, match="rollout.hints=scaf: give --rollout.hint-template"):
        train(scaf_cfg, log=lambda *_: None)
    scaf_cfg.rollout.hint_template, scaf_cfg.data.path = MARK + "{hint}", None
    with pytest.raises(ConfigError, match="the built-in task 'reversal' has no columns: give your data with data.path"):
        train(scaf_cfg, log=lambda *_: None)


def test_scaf_names_a_row_without_its_hints(scaf_cfg, tmp_path):
    data = Path(scaf_cfg.data.path)
    data.write_text(data.read_text() + json.dumps({"prompt": "rev:owl=", "answer": "lwo", "hints": "xy"}) + "\n")
    with pytest.raises(DataError, match="rows.jsonl, line 5: data.hint_column 'hints' is to hold a list"):
        train(scaf_cfg, log=lambda *_: None)
