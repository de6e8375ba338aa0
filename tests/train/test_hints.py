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
