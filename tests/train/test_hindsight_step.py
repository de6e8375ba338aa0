"""HeRL's step (train/hindsight.py) on a scored batch, with a scorer that gives the rewrites the scores the test
needs: the failed group's best answers are rewritten, the bonus moves their rewards, rewrites that reach the best
(else copies of the best answers) take the place of k rows, and a solved group is left as it is."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from policyforge.data import hindsight as he
from policyforge.data.tasks import Example
from policyforge.models.load import load_model
from policyforge.train.algorithm import resolve
from policyforge.train.config import Config
from policyforge.train.hindsight import with_hindsight
from policyforge.train.setup import rollout

NAMES = ("correct", "right_length")


def scored_as(batch, comps):
    batch.reward_components = torch.tensor(comps, dtype=torch.float32)
    batch.reward_names, batch.scores = NAMES, batch.reward_components.sum(-1)
    batch.extra = [{} for _ in range(len(batch))]


@pytest.fixture
def step_parts():
    model, tok = load_model("builtin:tiny", "float32", "cpu", 0)
    cfg = Config()
    cfg.rollout.group_size, cfg.rollout.max_new_tokens, cfg.rollout.temperature = 4, 5, 0.7
    cfg.rollout.refine_method, cfg.rollout.critique = "herl", "rubric"
    p = SimpleNamespace(cfg=cfg, model=model, tok=tok, gen=torch.Generator().manual_seed(0), algo=resolve(cfg.algo))
    batch = rollout(model, tok, [Example("rev:abc=", "cba"), Example("rev:de=", "ed")], cfg.rollout, p.gen)
    # group 0 fails (no answer meets both items; rows 0 and 2 are its best), group 1 is solved by row 5
    scored_as(batch, [[0, 1], [0, 0], [0, 1], [0, 0], [0, 0], [1, 1], [0, 0], [0, 1]])
    return p, batch


def rewrite_scorer(scores_of_rewrites, seen):
    def score(rewrites):
        seen.append(rewrites)
        scored_as(rewrites, scores_of_rewrites[:len(rewrites)])
    return score


@pytest.mark.parametrize("k", [1, 2])
def test_the_best_answers_of_a_failed_group_are_rewritten_and_k_of_its_rows_replaced(step_parts, k):
    p, batch = step_parts
    p.cfg.rollout.refinements = k
    seen = []
    out, _ = with_hindsight(p, 1, batch, rewrite_scorer([[1, 1], [0, 0]], seen))  # row 0's rewrite: 2; row 2's: 0
    (rewrites,) = seen
    assert [e.prompt for e in rewrites.examples] == ["rev:abc=", "rev:abc="]  # scored as answers to the question
    assert rewrites.prompt_ids.shape[1] > batch.prompt_ids.shape[1]  # sampled under the rewrite prompt
    assert [x["critique"] for x in rewrites.extra] == ["met: right length. unmet: correct."] * 2
    assert out.group.tolist() == [0] * 4 + [1] * 4  # each group keeps its size
    group0, group1 = list(range(4)), list(range(4, 8))
    assert [out.source[i] for i in group0].count("refined") == 1  # only the rewrite that beat the best joins
    refined = out.source.index("refined")
    assert float(out.scores[refined]) == 2.0 and float(out.temperature[refined]) == pytest.approx(0.7)
    assert int(out.prompt_mask[refined].sum()) > int(out.prompt_mask[group1[0]].sum())  # trained under its prompt
    # rows 0 and 2 were rewritten: 1 + 0.05 (2 - 1) and 1 + 0.05 (0 - 1); the seeded draw says which rows left
    shaped = {0: (1.05, 0.05), 1: (0.0, None), 2: (0.95, -0.05), 3: (0.0, None)}
    slots = he.replaced_rows(4, k, random.Random(f"{p.cfg.train.seed}-1-rev:abc=-hindsight"))
    want = [shaped[i] for i in range(4) if i not in slots] + [(2.0, None)] + ([shaped[0]] if k == 2 else [])
    got = [(round(float(out.scores[i]), 6), out.extra[i].get("hindsight_bonus")) for i in group0]
    assert got == want
    assert [bool(out.extra[i].get("hindsight_copy")) for i in group0] == [False] * (5 - k) + [True] * (k - 1)
    assert torch.equal(out.completion_ids[4:, :batch.completion_ids.shape[1]], batch.completion_ids[4:])
    assert out.scores[4:].tolist() == batch.scores[4:].tolist()  # the solved group is untouched


def test_a_solved_batch_is_returned_as_it_is(step_parts):
    p, batch = step_parts
    p.cfg.rollout.refinements = 1
    scored_as(batch, [[1, 1]] * 8)
    out, logs = with_hindsight(p, 1, batch, rewrite_scorer([], []))
    assert out is batch and logs == []


def test_a_rubric_needs_a_reward_with_components(step_parts):
    from policyforge.data.user import DataError

    p, batch = step_parts
    p.cfg.rollout.refinements = 1
    batch.reward_components, batch.reward_names = None, ()
    with pytest.raises(DataError, match="rollout.critique rubric .* the reward gave one number a row"):
        with_hindsight(p, 1, batch, rewrite_scorer([], []))


def test_an_empty_rewrite_is_dropped_and_a_copy_of_the_best_answer_fills_the_place(step_parts):
    p, batch = step_parts
    p.cfg.rollout.refinements = 1

    def score(rewrites):
        rewrites.completions[0] = "  "  # row 0's rewrite wrote nothing: no bonus for row 0, and it cannot join
        scored_as(rewrites, [[1, 1], [0, 0]])

    out, _ = with_hindsight(p, 1, batch, score)
    slots = he.replaced_rows(4, 1, random.Random(f"{p.cfg.train.seed}-1-rev:abc=-hindsight"))
    shaped = {0: (1.0, None), 1: (0.0, None), 2: (0.95, -0.05), 3: (0.0, None)}
    want = [shaped[i] for i in range(4) if i not in slots] + [shaped[0]]  # a copy of row 0, the first best
    assert [(round(float(out.scores[i]), 6), out.extra[i].get("hindsight_bonus")) for i in range(4)] == want
    assert "refined" not in out.source and out.extra[3].get("hindsight_copy") is True
