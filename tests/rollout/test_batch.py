import torch

from policyforge.data.tasks import Example
from policyforge.rollout.batch import RolloutBatch


def _batch(b, t, start=0):
    return RolloutBatch(
        prompt_ids=torch.ones(b, 3, dtype=torch.long), prompt_mask=torch.ones(b, 3, dtype=torch.long),
        completion_ids=torch.arange(b * t).view(b, t) + start, completion_mask=torch.ones(b, t),
        behav_logp=-torch.ones(b, t), truncated=torch.zeros(b, dtype=torch.bool), group=torch.zeros(b, dtype=torch.long),
        examples=[Example("p")] * b, completions=["c"] * b, source=["fresh"] * b, temperature=torch.ones(b),
    )


def test_concat_pads_completions_and_keeps_every_field():
    a, b = _batch(2, 3), _batch(1, 5, start=100)
    c = RolloutBatch.concat(a, b)
    assert len(c) == 3 and c.completion_ids.shape == (3, 5)
    assert c.completion_mask[:2, 3:].sum() == 0 and c.completion_mask[2].sum() == 5
    assert c.completion_ids[2].tolist() == [100, 101, 102, 103, 104]
    assert c.source == ["fresh"] * 3 and c.temperature.shape == (3,)


def test_select_and_trim():
    a = _batch(3, 4)
    a.completion_mask[:, 2:] = 0
    sub, width = a.select(torch.tensor([2, 0])).trimmed()
    assert width == 2 and sub.completion_ids.shape == (2, 2) and sub.completion_ids[0, 0] == 8


def test_unknown_source_is_refused():
    import pytest

    with pytest.raises(ValueError, match="unknown sample source"):
        b = _batch(1, 2)
        RolloutBatch(**{**b.__dict__, "source": ["mystery"]})
