"""train/hints.py: which groups get hints."""

from __future__ import annotations

import torch

from policyforge.data.tasks import Example
from policyforge.rollout.batch import RolloutBatch
from policyforge.train.hints import unsolved_groups


def _batch(scores, group, components=None, names=()):
    b = len(scores)
    zeros = torch.zeros(b, 2)
    return RolloutBatch(torch.zeros(b, 1, dtype=torch.long), torch.ones(b, 1, dtype=torch.long), zeros.long(), zeros,
                        zeros, torch.zeros(b, dtype=torch.bool), torch.tensor(group), [Example("q")] * b, [""] * b,
                        ["fresh"] * b, scores=torch.tensor(scores), reward_components=components, reward_names=names)


def test_a_group_is_unsolved_when_none_of_its_rows_is_correct():
    assert unsolved_groups(_batch([0.0, 0.0, 1.0, 0.0, 0.5, 0.9], [3, 3, 1, 1, 7, 7])) == [3, 7]  # 0.9 is not >= 1


def test_a_dict_reward_s_correct_component_decides_not_partial_credit():
    comps = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.5]])  # correct, format
    assert unsolved_groups(_batch([1.0, 1.0, 1.0, 0.5], [0, 0, 1, 1], comps, ("correct", "format"))) == [0]


def test_the_accuracy_before_hints_counts_the_replaced_rows_as_wrong():
    from policyforge.metrics.step_record import step_record

    batch = _batch([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], [0, 0, 0, 0, 1, 1, 1, 1])
    batch.source = ["hinted"] * 4 + ["fresh"] * 4  # group 0 solved with a hint, group 1 on its own
    rec = step_record(1, batch, {}, None, 1e-3, hinting=True)
    assert (rec["accuracy"], rec["accuracy_unhinted"], rec["hinted_accuracy"], rec["hinted_groups"]) == (
        3 / 8, 1 / 8, 0.5, 1)
    batch.source = ["fresh"] * 8  # hints on, none needed: the figures are there, at their values
    rec = step_record(1, batch, {}, None, 1e-3, hinting=True)
    assert (rec["hinted_groups"], rec["accuracy_unhinted"]) == (0, rec["accuracy"]) and "hinted_accuracy" not in rec
