"""DAPO's dynamic sampling: which groups pass its test, which make the batch, and how the rounds are joined
(data/dynamic_sampling.py, train/sampling.py's refilled and group_flags on hand-made scored batches)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from policyforge.data.dynamic_sampling import chosen_groups, informative_rows
from policyforge.data.tasks import Example
from policyforge.rewards.batched import Logged
from policyforge.rollout.batch import RolloutBatch
from policyforge.train import sampling
from policyforge.train.config import Config, ConfigError
from policyforge.train.distributed import World
from policyforge.train.sampling import check_dynamic_sampling, group_flags, refilled


def test_informative_rows_are_those_of_groups_whose_values_differ():
    values = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.3, 0.3000001])
    group = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert informative_rows(values, group).tolist() == [False, False, True, True, False, False, True, True]
    # interleaved groups and bool values (correctness) work alike
    assert informative_rows(torch.tensor([True, False, True, True]), torch.tensor([5, 5, 9, 9])).tolist() == [
        True, True, False, False]


def test_chosen_groups_keeps_the_first_informative_ones_in_sampling_order():
    assert chosen_groups([True, False, True, True, False, True], 3) == ([0, 2, 3], 0)  # over-full: group 5 unused
    assert chosen_groups([False, True, True], 2) == ([1, 2], 0)


def test_chosen_groups_fills_with_the_earliest_uninformative_ones_when_short():
    assert chosen_groups([False, True, False, False, True, False], 4) == ([0, 1, 2, 4], 2)
    assert chosen_groups([False, False], 2) == ([0, 1], 2)
    with pytest.raises(ValueError, match="3 groups cannot be made from 2"):
        chosen_groups([True, True], 3)


def _round(rewards: list[list[float]], prompt_width: int, tag: str, penalty: list[list[float]] | None = None):
    """A scored one-round batch: group g's completions get rewards[g]; prompts are `prompt_width` wide (the first
    column padding), completions 3 tokens; each row's text names its round and place."""
    n = sum(len(r) for r in rewards)
    group = torch.tensor([g for g, r in enumerate(rewards) for _ in r])
    scores = torch.tensor([x for r in rewards for x in r])
    prompt_mask = torch.ones(n, prompt_width, dtype=torch.long)
    prompt_mask[:, 0] = 0
    batch = RolloutBatch(
        prompt_ids=torch.randint(3, 50, (n, prompt_width)), prompt_mask=prompt_mask,
        completion_ids=torch.randint(3, 50, (n, 3)), completion_mask=torch.ones(n, 3),
        behav_logp=-torch.rand(n, 3), truncated=torch.zeros(n, dtype=torch.bool), group=group,
        examples=[Example(f"{tag} prompt {g}") for g in group.tolist()], completions=[f"{tag}:{i}" for i in range(n)],
        source=["fresh"] * n, temperature=torch.ones(n), scores=scores, extra=[{"row": f"{tag}:{i}"} for i in range(n)])
    if penalty is not None:
        batch.length_penalty = torch.tensor([x for r in penalty for x in r])
        batch.scores = batch.scores + batch.length_penalty
    return batch


def _parts(mode: str, prompts: int, rounds: int, world: World = World.single()):
    cfg = Config()
    cfg.rollout.prompts_per_step, cfg.rollout.dynamic_sampling, cfg.rollout.max_sampling_rounds = prompts, mode, rounds
    return SimpleNamespace(cfg=cfg, world=world)


def _logged(value: float) -> Logged:
    out = Logged()
    out.log_metric("f")("m", value)
    return out


def test_refilled_samples_rounds_until_the_batch_is_full_and_joins_them(monkeypatch):
    first = _round([[1, 1], [0, 1], [0, 0]], prompt_width=4, tag="a")  # only group 1 informative
    later = [later_b := _round([[1, 0], [2, 2], [0, 3]], prompt_width=6, tag="b"),  # groups 0 and 2
             _round([[5, 6], [7, 7], [1, 1]], prompt_width=5, tag="c")]  # never sampled: the batch is full by then
    asked = []

    def scored_rollout(p, step, examples):
        asked.append(examples)
        return later.pop(0), None, _logged(3.0)

    monkeypatch.setattr(sampling, "scored_rollout", scored_rollout)
    batch, rows, logged, figures = refilled(_parts("reward", 3, 10), 1, (first, None, _logged(1.0)),
                                            more=lambda: ["next prompts"])
    assert asked == [["next prompts"]] and len(later) == 1
    assert figures == {"sampling_rounds": 2, "groups_sampled": 6, "groups_informative": 3, "groups_filled": 0,
                       "completion_tokens_sampled": 36.0}  # both rounds' 12 rows of 3 tokens
    # groups a1, b0, b2 in sampling order, renumbered 0..2; every field follows its rows
    assert batch.completions == ["a:2", "a:3", "b:0", "b:1", "b:4", "b:5"]
    assert [e["row"] for e in batch.extra] == batch.completions
    assert batch.group.tolist() == [0, 0, 1, 1, 2, 2]
    assert batch.scores.tolist() == [0, 1, 1, 0, 0, 3]
    assert batch.prompt_ids.shape == (6, 5) and batch.prompt_mask[:2].tolist() == [[0, 0, 1, 1, 1]] * 2
    assert torch.equal(batch.prompt_ids[:2, 1:], first.prompt_ids[2:4])  # left-padded, tokens unchanged
    assert torch.equal(batch.prompt_ids[2:], later_b.prompt_ids[[0, 1, 4, 5], 1:])  # padding no kept row needs: cut
    assert rows.tolist() == list(range(6))
    assert logged.means() == {"reward_fn/m": 2.0}  # both scorings' log_metric values


def test_refilled_fills_from_the_earliest_groups_when_rounds_run_out(monkeypatch):
    first = _round([[1, 1], [0, 1], [0, 0]], prompt_width=4, tag="a")
    second = _round([[2, 2], [3, 3], [0, 0]], prompt_width=4, tag="b")
    monkeypatch.setattr(sampling, "scored_rollout", lambda *a: (second, None, Logged()))
    batch, _, _, figures = refilled(_parts("reward", 3, 2), 1, (first, None, Logged()), more=lambda: [])
    assert [figures[k] for k in ("sampling_rounds", "groups_sampled", "groups_informative", "groups_filled")] == [
        2, 6, 1, 2]
    assert batch.completions == ["a:0", "a:1", "a:2", "a:3", "a:4", "a:5"]  # a1, then a0 and a2 fill
    assert batch.filled.tolist() == [True, True, False, False, True, True]
    from policyforge.metrics.rollouts import rollout_records

    batch.advantages = torch.zeros(len(batch))
    assert [line.get("filled", False) for line in rollout_records(1, batch, 6)] == batch.filled.tolist()


def test_a_full_first_round_samples_nothing_more(monkeypatch):
    first = _round([[1, 0], [0, 1]], prompt_width=4, tag="a")
    monkeypatch.setattr(sampling, "scored_rollout", lambda *a: pytest.fail("sampled a second round"))
    batch, _, _, figures = refilled(_parts("accuracy", 2, 10), 1, (first, None, Logged()), more=lambda: [])
    assert figures["sampling_rounds"] == 1 and batch.completions == first.completions


def test_each_process_trains_on_its_share_of_the_kept_groups(monkeypatch):
    first = _round([[1, 0], [0, 0], [1, 0], [0, 1], [2, 1]], prompt_width=4, tag="a")
    world = World(rank=1, size=2, device="cpu")  # share() needs no process group
    batch, rows, _, _ = refilled(_parts("reward", 4, 1, world), 1, (first, None, Logged()), more=lambda: [])
    assert batch.completions == ["a:0", "a:1", "a:4", "a:5", "a:6", "a:7", "a:8", "a:9"]
    assert rows.tolist() == [4, 5, 6, 7]  # the second half of the 4 kept groups


def test_accuracy_is_decided_without_the_overlong_penalty_and_reward_with_it():
    # group 0: both right, lengths differ (penalty -0.2); group 1: one right; group 2: both wrong, equal penalty
    batch = _round([[1, 1], [1, 0], [0, 0]], prompt_width=3, tag="a", penalty=[[0, -0.2], [0, 0], [-0.1, -0.1]])
    assert group_flags(batch, "reward") == [True, True, False]
    assert group_flags(batch, "accuracy") == [False, True, False]  # DAPO's eq. 11: neither all right nor all wrong


def test_a_dict_rewards_correct_component_decides_accuracy():
    batch = _round([[1.5, 1.2], [1.0, 0.5]], prompt_width=3, tag="a")
    batch.reward_components = torch.tensor([[1.0, 0.5], [1.0, 0.2], [1.0, 0.0], [0.0, 0.5]])
    batch.reward_names = ("correct", "format")
    assert group_flags(batch, "accuracy") == [False, True]  # group 0's rewards differ but both are correct
    assert group_flags(batch, "reward") == [True, True]


def test_bad_settings_are_refused_naming_the_option():
    grpo = SimpleNamespace(name="grpo")
    algo = SimpleNamespace(teacher_forced=lambda: False, tempered_temperature=lambda: None, advantage=grpo)
    rc = Config().rollout
    check_dynamic_sampling(rc, algo)  # off: anything goes
    for field, value, message in [("dynamic_sampling", "acc", "rollout.dynamic_sampling='acc'; valid: off, reward, "
                                   "accuracy \\(verl's filter_groups.metric acc is accuracy here\\)"), ("max_sampling_rounds", 0, "rollout.max_sampling_rounds=0: at least 1")]:
        bad = Config().rollout
        setattr(bad, field, value)
        with pytest.raises(ConfigError, match=message):
            check_dynamic_sampling(bad, algo)
    rc.max_sampling_rounds = 3
    with pytest.raises(ConfigError, match="rollout.max_sampling_rounds=3 is read only by dynamic sampling, which is "
                                          "off"):
        check_dynamic_sampling(rc, algo)
    rc.dynamic_sampling, rc.max_sampling_rounds = "accuracy", 1
    with pytest.raises(ConfigError, match="max_sampling_rounds=1 samples no more than the first round"):
        check_dynamic_sampling(rc, algo)
    rc.max_sampling_rounds = 2
    check_dynamic_sampling(rc, algo)
    with pytest.raises(ConfigError, match="trains on the data's solutions"):
        check_dynamic_sampling(rc, SimpleNamespace(teacher_forced=lambda: True, tempered_temperature=lambda: None,
                                                   advantage=grpo))
    with pytest.raises(ConfigError, match="tempered groups"):
        check_dynamic_sampling(rc, SimpleNamespace(teacher_forced=lambda: False, tempered_temperature=lambda: 1.2,
                                                   advantage=grpo))


def test_rounds_whose_dict_rewards_name_components_in_another_order_are_joined_by_name(monkeypatch):
    first = _round([[1, 0], [1, 1]], prompt_width=3, tag="a", penalty=[[0, -0.1], [0, 0]])
    first.reward_components, first.reward_names = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]), (
        "correct", "format")
    first.temperature = torch.tensor([1.0, 1.0, 0.5, 0.5])
    second = _round([[1, 0], [0, 0]], prompt_width=3, tag="b", penalty=[[-0.3, 0], [0, 0]])
    second.reward_components, second.reward_names = torch.tensor([[0.5, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), (
        "format", "correct")  # its first row returned the keys the other way round
    second.temperature = torch.tensor([0.7, 0.7, 0.9, 0.9])
    monkeypatch.setattr(sampling, "scored_rollout", lambda *a: (second, None, Logged()))
    batch, _, _, _ = refilled(_parts("accuracy", 2, 2), 1, (first, None, Logged()), more=lambda: [])
    assert batch.completions == ["a:0", "a:1", "b:0", "b:1"] and batch.reward_names == ("correct", "format")
    assert batch.reward_components.tolist() == [[1.0, 0.0], [0.0, 0.0], [1.0, 0.5], [0.0, 0.0]]
    assert batch.length_penalty.tolist() == pytest.approx([0, -0.1, -0.3, 0])
    assert batch.temperature.tolist() == pytest.approx([1.0, 1.0, 0.7, 0.7])


def test_a_step_without_more_prompts_says_what_it_needs():
    first = _round([[1, 1]], prompt_width=3, tag="a")
    with pytest.raises(ValueError, match="train_step needs more="):
        refilled(_parts("reward", 1, 3), 1, (first, None, Logged()), more=None)


def test_spo_is_refused_and_estimators_without_a_group_baseline_get_a_note():
    from policyforge.train.algorithm import resolve
    from policyforge.train.sampling import dynamic_sampling_notes

    cfg = Config()
    cfg.rollout.dynamic_sampling = "reward"
    cfg.algo.advantage = "spo"
    with pytest.raises(ConfigError, match="algo.advantage=spo: SPO's per-prompt tracker"):
        check_dynamic_sampling(cfg.rollout, resolve(cfg.algo))
    assert dynamic_sampling_notes(cfg) == []
    cfg.algo.advantage = "reinforce_pp"
    check_dynamic_sampling(cfg.rollout, resolve(cfg.algo))
    (note,) = dynamic_sampling_notes(cfg)
    assert note.startswith("note: algo.advantage=reinforce_pp whitens returns over the whole batch")
    cfg.algo.advantage = "grpo"
    cfg.data.path, cfg.data.reward_model, cfg.rollout.dynamic_sampling = "rows.jsonl", "rm", "accuracy"
    (note,) = dynamic_sampling_notes(cfg)
    assert "with a reward model alone counts a completion right when its logit is >= 1" in note


def test_yaml_s_unquoted_off_is_answered_with_the_fix(tmp_path):
    from policyforge.train.config import load_yaml

    path = tmp_path / "c.yaml"
    path.write_text("rollout:\n  dynamic_sampling: off\n")
    with pytest.raises(ConfigError, match=r"rollout.dynamic_sampling=False: YAML reads an unquoted off.*quote the "
                                          r"word you meant \(dynamic_sampling: \"off\"\)"):
        load_yaml(path)
    path.write_text("rollout:\n  dynamic_sampling: on\n")
    with pytest.raises(ConfigError, match=r"quote the word you meant \(dynamic_sampling: \"on\"\)"):
        load_yaml(path)
    path.write_text("rollout:\n  dynamic_sampling: \"off\"\n")
    assert load_yaml(path).rollout.dynamic_sampling == "off"


def test_a_small_file_is_noted_when_the_rounds_could_outrun_its_rows():
    from policyforge.train.notes import few_rows

    source = SimpleNamespace(rows=list(range(12)))
    assert few_rows(source, 4) == []
    (note,) = few_rows(source, 4, rounds=10)
    assert note.startswith("note: dynamic sampling may take up to 10 rounds of 4 prompts a step") and \
        "more than the 12 training rows" in note
    assert few_rows(SimpleNamespace(), 4, rounds=10) == []  # a built-in task has no end
