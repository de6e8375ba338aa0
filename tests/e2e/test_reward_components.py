"""A dict reward through the real loop: its components reach gdpo and the metrics record."""

import json

import pytest
import torch

import policyforge.train.loop as loop
from policyforge.algos.advantages_batch import gdpo
from policyforge.train.step import batch_context, compute_advantages


def vowels_and_length(prompt, completion, **_):
    """Two dense components an untrained model's random text already varies on."""
    return {"vowels": float(sum(c in "aeiou" for c in completion)), "length": 0.25 * len(completion)}


def test_gdpo_trains_on_the_components_of_a_dict_reward(tiny_cfg, monkeypatch):
    tiny_cfg.data.reward = "tests.e2e.test_reward_components:vowels_and_length"
    tiny_cfg.algo.advantage = "gdpo"
    seen = []

    def spy(batch, algo, step, extra=None):
        adv = compute_advantages(batch, algo, step, extra)
        seen.append((batch_context(batch, algo, step)["reward_components"].clone(), batch.scores.clone(),
                     batch.group.clone(), adv))
        return adv

    monkeypatch.setattr(loop, "compute_advantages", spy)
    run = loop.train(tiny_cfg, log=lambda *_: None)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and len(seen) == 2
    for row, (comps, scores, group, adv) in zip(rows, seen):
        assert comps.shape == (8, 2)  # 2 prompts x 4 completions, 2 components
        assert torch.allclose(scores, comps.sum(-1))  # every other estimator sees the sum
        assert row["reward/vowels"] == pytest.approx(float(comps[:, 0].mean()), abs=1e-6)
        assert row["reward/length"] == pytest.approx(float(comps[:, 1].mean()), abs=1e-6)
        assert row["reward_mean"] == pytest.approx(row["reward/vowels"] + row["reward/length"], abs=1e-5)
        assert torch.allclose(adv, gdpo(scores, group, reward_components=comps))
    assert any(not torch.allclose(adv, gdpo(s, g, reward_components=s[:, None]), atol=1e-4)
               for _, s, g, adv in seen)  # the separate components changed gdpo's advantages


def test_number_reward_has_no_component_metrics(tiny_cfg):
    tiny_cfg.train.steps = 1
    tiny_cfg.algo.advantage = "gdpo"
    run = loop.train(tiny_cfg, log=lambda *_: None)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert not [k for k in row if k.startswith("reward/")]


def test_several_reward_functions_are_logged_one_by_one(tiny_cfg):
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward, tests.rewards.test_combined:length"
    tiny_cfg.data.reward_weights = [1.0, 0.1]
    run = loop.train(tiny_cfg, log=lambda *_: None)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        assert r["reward_mean"] == pytest.approx(r["reward/vowel_reward"] + 0.1 * r["reward/length"], abs=1e-5)
        assert r["reward/length"] > 0


def test_data_weights_equal_to_gdpo_s_default_are_not_refused():
    from policyforge.train.algorithm import check_reward_weights, resolve
    from policyforge.train.config import AlgoConfig

    check_reward_weights(resolve(AlgoConfig(advantage="gdpo")), [1.0, 1.0])  # gdpo's None: 1 per component


@pytest.mark.parametrize("own, refused", [(None, True), ([1.0, 0.5], True), ([1.0, 0.1], False)])
def test_gdpo_takes_its_weights_from_its_own_kwargs_not_data_reward_weights(tiny_cfg, own, refused):
    """TRL applies reward_weights to the normalised components (normalize_then_sum); here gdpo's own weights do,
    so data.reward_weights alone would only reweigh the logged reward_mean: refused unless the two agree."""
    from policyforge.train.config import ConfigError

    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward, tests.rewards.test_combined:length"
    tiny_cfg.data.reward_weights = [1.0, 0.1]
    tiny_cfg.algo.advantage, tiny_cfg.train.steps = "gdpo", 1
    if own is not None:
        tiny_cfg.algo.advantage_kwargs = {"weights": own}
    if refused:
        with pytest.raises(ConfigError, match="data.reward_weights with algo.advantage='gdpo': .* --algo.advantage-kwargs "
                                              "weights 1 0.1"):
            loop.train(tiny_cfg, log=lambda *_: None)
    else:
        assert (loop.train(tiny_cfg, log=lambda *_: None) / "metrics.jsonl").exists()
