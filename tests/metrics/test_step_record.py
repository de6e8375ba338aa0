"""The per-step metrics record: rollout statistics and KL to the reference on the policy's own samples only."""

import math

import pytest
import torch

from policyforge.data.tasks import BuiltinTask
from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model
from policyforge.train.config import RolloutConfig
from policyforge.metrics.step_record import step_record
from policyforge.train.setup import add_tempered_rows, rollout


def _batch_with_tempered_rows():
    """Two prompts x 3 fresh completions plus 3 tempered ones each (AEPO), and what made them."""
    tok = char_tokenizer()
    model = tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128), seed=0)
    examples = [BuiltinTask("reversal", 6, eval_size=4).train_example(i) for i in range(2)]
    cfg = RolloutConfig(group_size=3, max_new_tokens=5)
    gen = torch.Generator().manual_seed(0)
    batch = add_tempered_rows(rollout(model, tok, examples, cfg, gen), model, tok, examples, cfg, gen, 1.5)
    return batch, (model, tok, examples, gen)


def test_kl_ref_leaves_out_tempered_rows():
    batch, (model, tok, examples, gen) = _batch_with_tempered_rows()
    batch.scores = torch.zeros(len(batch))
    tempered = torch.tensor([s == "tempered" for s in batch.source])[:, None]
    # the reference equals the sampler on fresh rows and differs (by 1 nat per token) on tempered ones
    ref_logp = torch.where(tempered, batch.behav_logp - 1.0, batch.behav_logp) * batch.completion_mask
    rec = step_record(1, batch, {}, ref_logp, 1e-3)
    assert rec["kl_ref"] == 0.0


def test_kl_ref_is_k3_of_kl_policy_to_reference_on_the_policys_own_tokens():
    # The reference is 0.5 nat below the sampler on every fresh token and 2 nats above it on tempered ones.
    # k3 estimates KL(pi || ref) from samples of pi: with r = log ref - log pi, k3 = e^r - r - 1.
    # Fresh tokens, r = -0.5: e^-0.5 + 0.5 - 1 = 0.1065307 on every token, so that is also the token mean.
    # Arguments swapped (KL(ref || pi)) would give r = +0.5: e^0.5 - 1.5 = 0.1487213; tempered tokens
    # (r = 2: e^2 - 3 = 4.389) mixed in would move the mean far away.
    batch, _ = _batch_with_tempered_rows()
    batch.scores = torch.zeros(len(batch))
    tempered = torch.tensor([s == "tempered" for s in batch.source])[:, None]
    own_tokens = batch.completion_mask * ~tempered
    assert own_tokens.sum() > 0 and (batch.completion_mask * tempered).sum() > 0, "both kinds of rows present"
    offset = torch.where(tempered, 2.0, -0.5)
    ref_logp = (batch.behav_logp + offset) * batch.completion_mask
    rec = step_record(1, batch, {}, ref_logp, 1e-3)
    assert abs(rec["kl_ref"] - (math.exp(-0.5) + 0.5 - 1)) < 1e-6


def test_rollout_statistics_describe_the_policys_own_samples_and_one_sample_has_no_spread():
    batch, (model, tok, examples, gen) = _batch_with_tempered_rows()
    tempered = torch.tensor([s == "tempered" for s in batch.source])
    batch.scores = tempered.float()  # 1 on tempered rows, 0 on the policy's own
    rec = step_record(1, batch, {}, None, 1e-3)
    assert rec["reward_mean"] == 0.0 and rec["accuracy"] == 0.0 and rec["reward_std"] == 0.0
    one = rollout(model, tok, examples[:1], RolloutConfig(group_size=1, max_new_tokens=5), gen)
    one.scores = torch.ones(1)
    assert step_record(1, one, {}, None, 1e-3)["reward_std"] == 0.0  # not NaN, which strict JSON refuses


def test_the_progress_bar_shows_kl_only_where_it_was_measured():
    from policyforge.metrics.step_record import bar_fields

    record = {"reward_mean": 0.5, "accuracy": 0.25, "entropy": 1.234, "kl_ref": 0.01234}
    assert bar_fields(record) == {"reward": "0.50", "acc": "0.25", "kl": "0.012", "ent": "1.23"}
    del record["kl_ref"]
    assert bar_fields(record) == {"reward": "0.50", "acc": "0.25", "ent": "1.23"}
    record["sampling_rounds"] = 3  # dynamic sampling: how many rounds the step sampled
    assert bar_fields(record) == {"reward": "0.50", "acc": "0.25", "ent": "1.23", "rounds": "3"}


def test_advantage_figures_count_only_the_tokens_the_loss_counts():
    from policyforge.metrics.step_record import advantage_figures

    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    seq = advantage_figures(torch.tensor([2.0, 0.0, -1.0]), mask)  # per-sequence advantages
    assert seq == pytest.approx({"adv_mean": (2 + 2 + 0 - 1 - 1 - 1) / 6, "adv_abs_mean": (2 + 2 + 3) / 6,
                                 "adv_zero_frac": 1 / 3})
    tok = advantage_figures(torch.tensor([[0.0, 0.0, 5.0], [1.0, 9.0, 9.0], [0.0, -3.0, 0.0]]), mask)
    assert tok == pytest.approx({"adv_mean": (1 - 3) / 6, "adv_abs_mean": 4 / 6, "adv_zero_frac": 1 / 3})  # 5: padding
