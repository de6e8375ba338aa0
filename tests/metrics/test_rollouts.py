"""rollout_records: the rollouts.jsonl lines of a step from its scored, updated batch."""

import torch

from policyforge.data.tasks import Example
from policyforge.metrics.rollouts import rollout_records
from policyforge.rollout.batch import RolloutBatch


def _batch(**fields) -> RolloutBatch:
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    base = dict(prompt_ids=torch.ones(3, 2, dtype=torch.long), prompt_mask=torch.ones(3, 2, dtype=torch.long),
                completion_ids=torch.ones(3, 4, dtype=torch.long), completion_mask=mask, behav_logp=torch.zeros(3, 4),
                truncated=torch.tensor([False, False, True]), group=torch.tensor([0, 0, 1]),
                examples=[Example(f"q{i}", None, {}, i) for i in range(3)], completions=["ab", "a", "abcd"],
                source=["fresh", "fresh", "tempered"], scores=torch.tensor([1.0, 0.0, 0.5]),
                advantages=torch.tensor([0.7, -0.7, 0.0]))
    return RolloutBatch(**{**base, **fields})


def test_the_first_rows_with_what_they_were_given():
    lines = rollout_records(5, _batch(), 2)
    assert lines == [
        {"step": 5, "group": 0, "source": "fresh", "prompt": "q0", "completion": "ab", "reward": 1.0,
         "advantage": torch.tensor(0.7).item(), "completion_tokens": 3, "truncated": False},
        {"step": 5, "group": 0, "source": "fresh", "prompt": "q1", "completion": "a", "reward": 0.0,
         "advantage": torch.tensor(-0.7).item(), "completion_tokens": 2, "truncated": False}]
    assert len(rollout_records(5, _batch(), 10)) == 3 and rollout_records(5, _batch(), 0) == []


def test_token_level_advantages_components_penalty_and_logged_columns():
    token_adv = torch.tensor([[1.0, 2.0, 3.0, 99.0], [4.0, 0.0, 99.0, 99.0], [1.0, 1.0, 1.0, 1.0]])  # 99: padding
    batch = _batch(advantages=token_adv, reward_components=torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.5, 0.0]]),
                   reward_names=("correct", "format"), length_penalty=torch.tensor([0.0, -0.25, -1.0]),
                   extra=[{"chars": 2}, {}, {"chars": 4}])
    lines = rollout_records(1, batch, 3)
    assert [r["advantage"] for r in lines] == [2.0, 2.0, 1.0]  # each completion's tokens' mean
    assert lines[0]["reward_components"] == {"correct": 1.0, "format": 0.0}
    assert [r["overlong_penalty"] for r in lines] == [0.0, -0.25, -1.0]
    assert [r.get("extra") for r in lines] == [{"chars": 2}, None, {"chars": 4}]  # a row with none has no key
    assert lines[2]["truncated"] is True and lines[2]["source"] == "tempered"
