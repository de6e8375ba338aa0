"""Reward-model ensembles (Coste et al.): the three rules by hand, an Ensemble of real saved models scoring as its
members do, and runs, evaluation and refusals with data.reward_model naming several folders."""

from __future__ import annotations

import pytest
import torch

from policyforge.data.tasks import Example
from policyforge.rewards.batched import TrainerState, scoring
from policyforge.rewards.model import Ensemble, RewardModel
from policyforge.rewards.model_ensemble import combined_reward, disagreement
from policyforge.train.config import Config, ConfigError
from policyforge.train.validate import validate
from tests.rewards.test_reward_model import save_reward_model


def test_the_three_rules_by_hand():
    values = torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.0, 4.0]])  # 3 rows, 2 members
    assert combined_reward(values, "mean").tolist() == [2.0, 2.0, 2.0]
    assert combined_reward(values, "worst").tolist() == [1.0, 2.0, 0.0]
    # UWO: mean - lambda x the members' variance (1/k, not 1/(k-1)): variances 1, 0, 4
    assert combined_reward(values, "uncertainty", 0.5).tolist() == [1.5, 2.0, 0.0]
    assert disagreement(values).tolist() == [1.0, 0.0, 2.0]
    assert disagreement(values[:, :1]).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="unknown ensemble rule 'max'"):
        combined_reward(values, "max")


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two reward models that differ only by their initial seed, as the paper's members do."""
    return [save_reward_model(tmp_path_factory.mktemp(f"rm{seed}"), seed=seed) for seed in (0, 1)]


@pytest.mark.parametrize("how, lam", [("mean", 0.0), ("worst", 0.0), ("uncertainty", 2.0)])
def test_an_ensemble_scores_its_members_combined_and_logs_their_disagreement(members, how, lam):
    models = [RewardModel(p) for p in members]
    examples, completions = [Example("rev:abc="), Example("rev:dog="), Example("1+2=")], ["cba", "xx", "3"]
    each = torch.stack([m.score_examples(examples, completions) for m in models], dim=-1)
    assert (each[:, 0] != each[:, 1]).all()  # the members disagree: the rules differ
    with scoring(TrainerState(0, 1)) as logged:
        scored = Ensemble(None, models, weight=0.5, how=how, uncertainty=lam).score_parts(examples, completions)
    want = {"mean": each.mean(-1), "worst": each.min(-1).values,
            "uncertainty": each.mean(-1) - lam * ((each - each.mean(-1, keepdim=True)) ** 2).mean(-1)}[how]
    torch.testing.assert_close(scored.scores, 0.5 * want)
    means = logged.means()
    assert means["reward_model/logit_std"] == pytest.approx(float((each[:, 0] - each[:, 1]).abs().mean() / 2),
                                                            rel=1e-5)
    assert [means[f"reward_model/logit_{i}"] for i in (0, 1)] == pytest.approx(each.mean(0).tolist(), rel=1e-5)
    assert not any(k.startswith("reward_fn/") for k in means)  # apart from what reward functions log


def test_a_user_metric_of_the_same_name_stays_apart(members):
    with scoring(TrainerState(0, 1)) as logged:
        logged.log_metric("my_fn")("reward_model/logit_std", 100.0)
        Ensemble(None, [RewardModel(p) for p in members]).score_parts([Example("1+2=")], ["3"])
    means = logged.means()
    assert means["reward_fn/reward_model/logit_std"] == 100.0 and means["reward_model/logit_std"] < 100.0


@pytest.mark.parametrize("change, message", [
    (dict(reward_model_ensemble="max"), "data.reward_model_ensemble='max'; valid: mean, worst, uncertainty"),
    (dict(reward_model="a,b", reward_model_uncertainty=-1.0), "data.reward_model_uncertainty=-1.0: at least 0"),
    (dict(reward_model="a", reward_model_ensemble="worst"), "data.reward_model_ensemble=worst combines several "
                                                            "reward models, but data.reward_model names 1: give two or "
                                                            "more folders separated by commas, or --data.reward-model-"
                                                            "ensemble mean"),
    (dict(reward_model="a, b,a"), "data.reward_model names the folder 'a' twice"),
    (dict(reward_model="rm,./rm,rm/"), r"names the folder 'rm' twice \('rm' and './rm' and 'rm/'\)"),
    (dict(reward_model=" , "), "data.reward_model=' , ' names no folder"),
    (dict(reward_model="a,b", reward_model_uncertainty=0.3), "data.reward_model_uncertainty=0.3 is read only by "
                                                              "data.reward_model_ensemble uncertainty \\(it is mean\\)"),
    (dict(reward_model="a,b", reward_model_ensemble="worst", reward_model_weight=-1.0),
     "a negative weight turns the conservative rule into the most optimistic one"),
    (dict(reward_model_weight=2.0), "data.reward_model_weight=2.0 without data.reward_model"),
    (dict(reward_model="a", reward_model_weight=0.0), "data.reward_model_weight=0: the reward model would add nothing"),
])
def test_ensemble_settings_are_checked_before_any_model_loads(change, message):
    cfg = Config()
    for key, value in change.items():
        setattr(cfg.data, key, value)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_folders_are_read_as_one_when_the_whole_text_is_one_and_as_paths_from_python(tmp_path, members):
    from pathlib import Path

    from policyforge.rewards.spec import reward_model_paths

    odd = tmp_path / "rm,v2"
    odd.mkdir()
    assert reward_model_paths(str(odd)) == [str(odd)]  # a folder whose name has a comma
    assert reward_model_paths(f"{members[0]}, {members[1]}") == members
    assert reward_model_paths(Path(members[0])) == [members[0]]
    cfg = Config()
    cfg.data.reward_model = Path(members[0])  # from Python, a path object
    validate(cfg)


def test_every_member_folder_is_checked_before_any_loads(tmp_path, members, monkeypatch):
    from policyforge.rewards import model
    from policyforge.rewards.score import RewardError
    from policyforge.train.setup import build_data

    loaded = []
    monkeypatch.setattr(model.RewardModel, "__init__", lambda self, path, *a, **k: loaded.append(path))
    cfg = Config()
    cfg.data.task, cfg.data.reward_model = "reversal", f"{members[0]},{tmp_path / 'typo'}"
    with pytest.raises(RewardError, match=r"'.*typo' does not exist \(data.reward_model is split at commas\)"):
        build_data(cfg.data, 0)
    assert loaded == []  # the first member was not loaded before the second was found missing


def test_members_may_be_a_yaml_or_python_list(tmp_path, members):
    from policyforge.train.config import load_yaml
    from policyforge.rewards.spec import reward_model_paths

    path = tmp_path / "c.yaml"
    path.write_text(f"data:\n  reward_model: [{members[0]}, {members[1]}]\n  reward_model_ensemble: worst\n")
    cfg = load_yaml(path)
    assert cfg.data.reward_model == ",".join(members)
    validate(cfg)
    cfg.data.reward_model = list(members)  # from Python
    validate(cfg)
    assert reward_model_paths(cfg.data.reward_model) == members


def test_a_reward_model_weight_gdpo_would_cancel_is_refused_naming_its_own_weights():
    from policyforge.train.algorithm import check_reward_model_weight, resolve
    from policyforge.train.config import AlgoConfig

    gdpo = resolve(AlgoConfig(advantage="gdpo"))
    with pytest.raises(ConfigError, match=r"data.reward_model_weight=5 with algo.advantage='gdpo': .*cancels the "
                                          r"weight; weigh the reward_model component .*advantage-kwargs weights"):
        check_reward_model_weight(gdpo, 5.0)
    check_reward_model_weight(gdpo, 1.0)  # the default weight: nothing to cancel
    check_reward_model_weight(gdpo, None)  # no reward model
    check_reward_model_weight(resolve(AlgoConfig()), 5.0)  # grpo scales the reward as a whole: the weight matters
