"""train/replay.py: pooled completions join their prompt's group, and what a run with them checks and records."""

from __future__ import annotations

import pytest
import torch

from policyforge.algos.advantages import grpo
from policyforge.data.replay import ReplayPool
from policyforge.data.tasks import BuiltinTask
from policyforge.metrics.step_record import step_record
from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model
from policyforge.train.algorithm import resolve
from policyforge.train.config import AlgoConfig, Config, ConfigError, DataConfig, RolloutConfig
from policyforge.train.logprobs import forward_logprobs
from policyforge.train.replay import check_replay, with_replayed
from policyforge.train.setup import rollout


def _setup(max_new_tokens=6):
    tok = char_tokenizer()
    model = tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128), seed=0)
    task = BuiltinTask("reversal", 6, eval_size=4)
    examples = [task.train_example(i) for i in range(3)]
    batch = rollout(model, tok, examples, RolloutConfig(group_size=4, max_new_tokens=max_new_tokens),
                    torch.Generator().manual_seed(0))
    return model, tok, examples, batch


def _cfg(max_new_tokens=6, per_prompt=2, micro_batch_size=64, stop=()) -> Config:
    cfg = Config()
    cfg.rollout.max_new_tokens, cfg.data.replay_per_prompt, cfg.rollout.stop = max_new_tokens, per_prompt, list(stop)
    cfg.optim.micro_batch_size = micro_batch_size
    return cfg


def test_pooled_completions_follow_their_groups_fresh_rows():
    model, tok, ex, batch = _setup()
    pool = ReplayPool({ex[0].prompt: [(ex[0].solution, ""), ("ab", "")], ex[2].prompt: [(ex[2].solution, "")]})
    mixed = with_replayed(batch, pool, model, tok, _cfg(micro_batch_size=1), step=1)  # none for ex[1]
    assert mixed.group.tolist() == [0] * 6 + [1] * 4 + [2] * 5
    assert mixed.source == ["fresh"] * 4 + ["replayed"] * 2 + ["fresh"] * 4 + ["fresh"] * 4 + ["replayed"]
    assert sorted(mixed.completions[4:6]) == sorted([ex[0].solution, "ab"]) and mixed.completions[14] == ex[2].solution
    assert all(e.prompt == ex[g].prompt for e, g in zip(mixed.examples, mixed.group.tolist()))
    # the fresh rows are the batch's own, prompts re-padded alike on the left
    fresh = torch.tensor([s == "fresh" for s in mixed.source])
    assert torch.equal(mixed.completion_ids[fresh][:, :batch.completion_ids.shape[1]], batch.completion_ids)
    assert torch.equal(mixed.behav_logp[fresh][:, :batch.behav_logp.shape[1]], batch.behav_logp)
    # a replayed row is the text's tokens then EOS, never cut: it ended
    row = mixed.select(torch.tensor([14]))
    want = tok(ex[2].solution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert row.completion_ids[0, : len(want)].tolist() == want and int(row.completion_mask.sum()) == len(want)
    replayed = ~fresh
    assert not mixed.truncated[replayed].any() and torch.equal(mixed.temperature, torch.ones(len(mixed)))
    # its behaviour log-probs are the current policy's (as RLEP's recomputed old log-probs), one row at a time here
    with torch.no_grad():
        fresh_forward = forward_logprobs(model, mixed, 1.0)["logp"]
    assert torch.allclose(fresh_forward, mixed.behav_logp, atol=1e-5)
    # ... and none is run when nothing reads them
    unread = with_replayed(batch, pool, model, tok, _cfg(), step=1, behaviour=False)
    assert torch.equal(unread.completion_ids, mixed.completion_ids) and not unread.behav_logp[~fresh].any()


def test_the_groups_advantages_are_over_fresh_and_replayed_rows_together():
    model, tok, ex, batch = _setup()
    mixed = with_replayed(batch, ReplayPool({ex[0].prompt: [(ex[0].solution, "")] * 2}), model, tok, _cfg(), 1)
    scores = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 1.0] + [0.0] * 8)  # group 0: 1 of 4 fresh right, 2 replayed
    adv = grpo(scores, mixed.group)
    g0 = scores[:6]
    assert torch.allclose(adv[:6], (g0 - g0.mean()) / (g0.std() + 1e-6))  # GRPO's z-score over the 6 (RLEP)
    assert torch.equal(adv[6:], torch.zeros(8))


def test_a_completion_longer_than_the_budget_is_never_replayed():
    model, tok, ex, batch = _setup(max_new_tokens=4)
    pool = ReplayPool({ex[0].prompt: [("abcd", ""), ("abc", ""), ("ab", "##"), ("abc", "##")]})
    mixed = with_replayed(batch, pool, model, tok, _cfg(max_new_tokens=4, per_prompt=4, stop=["##"]), 1)  # 3 + EOS
    assert sorted(c for c, s in zip(mixed.completions, mixed.source) if s == "replayed") == ["ab", "abc"]  # fit 4
    assert with_replayed(batch, ReplayPool({ex[0].prompt: [("abcd", "")]}), model, tok, _cfg(max_new_tokens=4), 1) \
        is batch


def test_a_completion_a_stop_string_ended_ends_with_it_not_with_eos():
    model, tok, ex, batch = _setup()
    mixed = with_replayed(batch, ReplayPool({ex[0].prompt: [("ab", "##")]}), model, tok, _cfg(stop=["##"]), 1)
    row = mixed.select(torch.tensor([4]))
    assert row.source == ["replayed"] and row.completions == ["ab"]  # what the reward sees
    n = int(row.completion_mask.sum())
    assert row.completion_ids[0, :n].tolist() == tok("ab##", add_special_tokens=False)["input_ids"]


def test_the_step_record_describes_the_policys_own_rows():
    model, tok, ex, batch = _setup()
    mixed = with_replayed(batch, ReplayPool({ex[0].prompt: [(ex[0].solution, "")] * 2}), model, tok, _cfg(), 1)
    mixed.scores = torch.tensor([0.0] * 4 + [1.0, 0.0] + [0.0] * 8)  # the reward accepts one replayed row
    rec = step_record(1, mixed, {}, None, 1e-3)
    assert rec["accuracy"] == 0.0 and rec["reward_mean"] == 0.0  # the fresh rows' alone
    assert rec["replayed_rows"] == 2 and rec["replayed_accuracy"] == 0.5
    assert rec["completion_tokens"] == float(mixed.completion_mask.sum())  # every trained row
    batch.scores = torch.zeros(len(batch))
    assert "replayed_rows" not in step_record(1, batch, {}, None, 1e-3)


@pytest.mark.parametrize("changes, says", [
    ({"replay_per_prompt": 0}, "data.replay_per_prompt=0: at least 1"),
    ({"replay_pool": None, "replay_per_prompt": 3}, "read only with data.replay_pool"),
    ({"algo": {"loss": "psft"}}, "trains on the data's solutions"),
    ({"algo": {"advantage": "spo"}}, "SPO has no groups"),
])
def test_settings_replay_cannot_use_are_refused(changes, says):
    changes = dict(changes)
    algo = AlgoConfig(**changes.pop("algo", {}))
    dc = DataConfig(**{"replay_pool": "pool.jsonl", **changes})
    with pytest.raises(ConfigError, match=says):
        check_replay(dc, resolve(algo))


def test_no_pool_no_check():
    check_replay(DataConfig(), resolve(AlgoConfig()))


def test_collect_records_the_stop_string_that_ended_a_row():
    from policyforge.train.collect import stop_endings

    tok = char_tokenizer()
    model = tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128), seed=0)
    examples = [BuiltinTask("reversal", 6, eval_size=4).train_example(i) for i in range(4)]
    batch = rollout(model, tok, examples, RolloutConfig(group_size=8, max_new_tokens=12, stop=["a", "e", "o"]),
                    torch.Generator().manual_seed(0))
    endings = stop_endings(tok, batch)
    stopped = [i for i, e in enumerate(endings) if e]
    assert stopped, "no row ended at a stop string: nothing tested"
    for i in stopped:
        assert endings[i] in ("a", "e", "o") and not batch.truncated[i]
        n = int(batch.completion_mask[i].sum())
        assert tok.decode(batch.completion_ids[i, :n], skip_special_tokens=True) == batch.completions[i] + endings[i]


def test_a_pooled_completion_is_replayed_only_if_this_run_s_sampler_could_have_written_it():
    from policyforge.train.replay import replayable

    tok = char_tokenizer()
    pool = ReplayPool({"q": []})
    plain, stopped = RolloutConfig(max_new_tokens=6), RolloutConfig(max_new_tokens=6, stop=["##"])
    fits, fits_stop = replayable(pool, tok, plain), replayable(pool, tok, stopped)
    assert fits(("abcde", "")) and not fits(("abcdef", ""))  # its EOS counts
    assert fits_stop(("abc", "##")) and fits_stop(("abcd", "##"))  # ended by the run's stop string, within budget
    assert not fits_stop(("ab##c", ""))  # the run would have stopped at ## already
    assert not fits(("abc", "##"))  # ended by a stop string this run does not have: here it would go on
    assert not fits_stop(("abcde", "##"))  # 7 tokens


def test_a_pooled_completion_the_tokenizer_would_read_as_padding_is_refused_at_start_up():
    # a pool collected with another tokenizer: its text would be scored while the policy trained on pad tokens
    from policyforge.data.replay import ReplayPool
    from policyforge.data.tasks import DataError
    from policyforge.train.replay import check_pool_text

    tok = char_tokenizer()
    check_pool_text(ReplayPool({"rev:ab=": [("ba", "")]}, "pool.jsonl"), tok)  # known characters pass
    with pytest.raises(DataError, match="pool.jsonl: the completion .OBREBK\xe9. of the prompt .rev:ab=. has "
                                        r"characters the tokenizer does not know \(.BEKOR\xe9.\)"):
        check_pool_text(ReplayPool({"rev:ab=": [("ba", ""), ("OBREBK\xe9", "")]}, "pool.jsonl"), tok)
