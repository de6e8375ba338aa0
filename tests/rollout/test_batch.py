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


def _scored(b, names=("correct", "length")):
    x = _batch(b, 2)
    x.scores = torch.arange(b, dtype=torch.float32)
    x.reward_components = torch.arange(b * len(names), dtype=torch.float32).view(b, len(names))
    x.reward_names = names
    return x


def test_select_and_concat_keep_reward_components():
    a = _scored(3)
    sub = a.select(torch.tensor([2, 0]))
    assert sub.reward_names == ("correct", "length") and sub.reward_components.tolist() == [[4.0, 5.0], [0.0, 1.0]]
    c = RolloutBatch.concat(a, sub)
    assert c.reward_names == ("correct", "length") and c.reward_components.shape == (5, 2)
    assert torch.equal(c.reward_components[3:], sub.reward_components)
    u = RolloutBatch.concat(_batch(1, 2), _batch(2, 3))
    assert u.scores is None and u.reward_components is None and u.reward_names == ()


def test_concat_refuses_batches_scored_differently():
    import pytest

    with pytest.raises(ValueError, match="scored alike"):
        RolloutBatch.concat(_scored(2), _scored(2, names=("correct",)))
    with pytest.raises(ValueError, match="scored alike"):
        RolloutBatch.concat(_scored(2), _batch(2, 2))


def test_components_and_names_must_agree():
    import pytest

    b = _batch(2, 2)
    with pytest.raises(ValueError, match="2 columns but reward_names"):
        RolloutBatch(**{**b.__dict__, "reward_components": torch.zeros(2, 2), "reward_names": ("a",)})


def test_select_by_bool_mask_picks_the_same_rows_in_every_field():
    a = _batch(3, 2)
    a.completions = ["c0", "c1", "c2"]
    sub = a.select(torch.tensor([False, True, True]))
    assert sub.completions == ["c1", "c2"] and sub.completion_ids[:, 0].tolist() == [2, 4]


def test_concat_refuses_temperatures_on_one_side_only():
    import pytest

    a, b = _batch(1, 2), _batch(1, 2)
    b.temperature = None
    with pytest.raises(ValueError, match="temperatures"):
        RolloutBatch.concat(a, b)
