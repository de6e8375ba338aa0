"""optim.micro_batch_tokens: micro-batches formed under a token budget.

A micro-batch's cost is its padded size, rows x (prompt width + its longest completion), since
the trainer trims each micro-batch's completions to its longest one. Every micro-batch stays within
the budget unless a single unit (a row, or a whole group when groups stay together) exceeds it
alone, and every sample lands in exactly one micro-batch. That the accumulated update equals the
whole-batch one is checked through a real step in tests/e2e/test_config_wiring.py.
"""

import pytest
import torch

from policyforge.data.tasks import Example
from policyforge.rollout.batch import RolloutBatch
from policyforge.train.step import micro_batches


def batch_of(lengths, prompt_width=3, group=None):
    """Rows whose completions have the given lengths (right-padded to the longest)."""
    b, t = len(lengths), max(lengths)
    mask = (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).float()
    return RolloutBatch(
        prompt_ids=torch.ones(b, prompt_width, dtype=torch.long),
        prompt_mask=torch.ones(b, prompt_width, dtype=torch.long),
        completion_ids=torch.ones(b, t, dtype=torch.long), completion_mask=mask, behav_logp=-mask,
        truncated=torch.zeros(b, dtype=torch.bool),
        group=torch.tensor(group) if group is not None else torch.arange(b),
        examples=[Example("p")] * b, completions=["c"] * b, source=["fresh"] * b,
    )


def padded_tokens(lengths, prompt_width, idx):
    return len(idx) * (prompt_width + max(lengths[i] for i in idx))


def test_hand_example_splits_at_the_budget():
    # longest first: rows 0, 1 (length 4) cost 2 x (2 + 4) = 12; adding row 2 would make 3 x 6 = 18 > 12,
    # so rows 2, 3 (length 2) start a new micro-batch of 2 x (2 + 2) = 8 tokens
    batch = batch_of([4, 4, 2, 2], prompt_width=2)
    assert [c.tolist() for c in micro_batches(batch, max_seqs=64, max_tokens=12)] == [[0, 1], [2, 3]]
    assert [c.tolist() for c in micro_batches(batch, max_seqs=64, max_tokens=0)] == [[0, 1, 2, 3]]  # 0 = no budget


@pytest.mark.parametrize("budget", [1, 20, 37, 60, 150])
@pytest.mark.parametrize("max_seqs", [3, 64])
def test_each_row_micro_batch_is_within_the_budget_and_every_sample_appears_once(budget, max_seqs):
    lengths = torch.randint(1, 12, (17,), generator=torch.Generator().manual_seed(budget)).tolist()
    p = 3
    chunks = [c.tolist() for c in micro_batches(batch_of(lengths, p), max_seqs=max_seqs, max_tokens=budget)]
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))
    for c in chunks:
        assert len(c) <= max_seqs
        assert padded_tokens(lengths, p, c) <= budget or len(c) == 1, (c, budget)
    if budget < max_seqs * (p + max(lengths)):  # the budget binds before the row limit: the split has content
        assert len(chunks) > 1


@pytest.mark.parametrize("budget", [1, 30, 64, 100])
def test_whole_groups_stay_together_within_the_budget(budget):
    # 5 groups of 3 or 4 samples; a group is one unit, so only a group alone may exceed the budget
    group = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4]
    lengths = torch.randint(1, 9, (len(group),), generator=torch.Generator().manual_seed(budget)).tolist()
    p = 2
    chunks = [c.tolist() for c in micro_batches(batch_of(lengths, p, group), max_seqs=64, max_tokens=budget,
                                                whole_groups=True)]
    assert sorted(i for c in chunks for i in c) == list(range(len(group)))
    for c in chunks:
        groups = {group[i] for i in c}
        assert all(sum(g == group[i] for i in c) == group.count(g) for g in groups)  # whole groups only
        assert padded_tokens(lengths, p, c) <= budget or len(groups) == 1, (c, budget)
    assert len(chunks) > 1  # every budget here is below the batch's padded size


def test_a_group_larger_than_the_micro_batch_is_split_into_pieces_of_that_size():
    # Knapsack RL's groups can outgrow optim.micro_batch_size: a group of 10 in pieces of at most 4 rows, each
    # piece one group's rows (the shared-prefix forward then encodes the prompt once a piece)
    group = [0] * 10 + [1] * 2
    chunks = [c.tolist() for c in micro_batches(batch_of([3] * 12, 2, group), max_seqs=4, whole_groups=True)]
    assert sorted(i for c in chunks for i in c) == list(range(12))
    assert all(len(c) <= 4 for c in chunks) and [len(c) for c in chunks] == [4, 4, 4]
    assert chunks[:2] == [[0, 1, 2, 3], [4, 5, 6, 7]] and sorted(chunks[2]) == [8, 9, 10, 11]
