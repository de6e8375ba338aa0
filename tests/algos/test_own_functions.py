"""A researcher's own functions: what `register` refuses at once, and what the start-up check catches."""

from __future__ import annotations

import pytest
import torch

from policyforge.algos import register, table
from policyforge.algos.contract import ContractError, check_entry
from policyforge.algos.registry import _TABLES, get


@pytest.fixture
def own():
    """Register test functions under `t_*` names; they leave the tables afterwards."""
    yield
    for tab in _TABLES.values():
        for name in [n for n in tab if n.startswith("t_")]:
            del tab[name]


def test_a_built_in_name_is_refused_naming_who_has_it(own):
    with pytest.raises(ValueError, match=r"loss 'ppo_clip' is already registered by policyforge\.algos\.losses\."
                                         r"ppo_clip .*register .*under another name"):
        @register("loss", "ppo_clip", paper="x")
        def mine(logp, old_logp, adv, mask):
            return logp * 0, {}
    assert table("loss")["ppo_clip"].fn.__module__ == "policyforge.algos.losses"


def test_the_same_function_registered_again_replaces_itself(own):
    """A notebook cell run twice, or a module reloaded: the same module and name is no collision."""
    for scale in (1.0, 2.0):
        @register("advantage", "t_again", paper="x")
        def again(scores, group, *, scale=scale):
            return scores - scores.mean()
    assert get("advantage", "t_again").hyper() == {"scale": 2.0}


@pytest.mark.parametrize("source,why", [
    ("def f(logp, old_logp, adv, mask, eps=0.2): pass", r"'eps' is positional; hyper-parameters are keyword-only"),
    ("def f(logp, old_logp, adv, mask, **hyper): pass", r"takes \*\*hyper; name each hyper-parameter"),
    ("def f(logp, old_logp, adv): pass", r"takes 3 positional inputs; a loss takes 4"),
    ("def f(logp, old_logp, adv, mask, *, ref_lopg): pass", r"'ref_lopg' has no default .*did you mean 'ref_logp'"),
])
def test_a_signature_the_trainer_cannot_call_is_refused_at_registration(own, source, why):
    scope = {}
    exec(source, scope)
    with pytest.raises(ValueError, match=why):
        register("loss", "t_bad", paper="x")(scope["f"])
    assert "t_bad" not in table("loss")


def test_an_aggregation_without_the_batch_counts_and_a_state_without_state_dict_are_refused(own):
    with pytest.raises(ValueError, match="takes no keyword-only num_tokens, num_seqs, max_len"):
        @register("aggregation", "t_mean", paper="x")
        def mean(loss, mask):
            return (loss * mask).sum() / mask.sum()

    class Tracker:
        pass

    with pytest.raises(ValueError, match="state class Tracker has no state_dict"):
        @register("advantage", "t_tracked", paper="x", state=Tracker)
        def tracked(scores, group, *, state):
            return scores


def _nan_on_equal_rewards(scores, group):
    means = torch.stack([scores[group == g].mean() for g in group])
    stds = torch.stack([scores[group == g].std() for g in group])
    return (scores - means) / stds  # no eps: 0 / 0 where a group's rewards are alike


def _in_place(scores, group):
    scores -= scores.mean()
    return scores


def _per_sequence(logp, old_logp, adv, mask):
    return -adv * (logp * mask).sum(-1), {}


def _ignores_mask(logp, old_logp, adv, mask):
    return -adv[:, None] * logp, {}


def _takes_a_record_name(logp, old_logp, adv, mask):
    return -adv[:, None] * logp * mask, {"reward_mean": torch.tensor(0.0)}


def _metric_with_grad(logp, old_logp, adv, mask):
    loss = -adv[:, None] * logp * mask
    return loss, {"loss_sum": loss.sum()}


def _detached(logp, old_logp, adv, mask):
    return (-adv[:, None] * logp * mask).detach(), {}


def _bare_tensor(logp, old_logp, adv, mask):
    return -adv[:, None] * logp * mask


def _own_counts(loss, mask, *, num_tokens=None, num_seqs=None, max_len=None):
    return (loss * mask).sum() / mask.sum()  # the micro-batch's own count: wrong under accumulation


@pytest.mark.parametrize("kind,fn,why", [
    ("advantage", _nan_on_equal_rewards, r"the advantage has 4 non-finite values.*the second with equal rewards"),
    ("advantage", _in_place, r"changed its input 'scores' in place"),
    ("loss", _per_sequence, r"the per-token loss has shape \(8,\); expected \(8, 6\)"),
    ("loss", _ignores_mask, r"not zero where the mask is 0"),
    ("loss", _takes_a_record_name, r"metric 'reward_mean' would overwrite the step record's own figure"),
    ("loss", _metric_with_grad, r"metric 'loss_sum' requires grad"),
    ("loss", _detached, r"carries no gradient back to logp"),
    ("loss", _bare_tensor, r"returned a Tensor; a loss returns \(per_token_loss, metrics dict\)"),
    ("aggregation", _own_counts, r"losses of three micro-batches.*add up to"),
])
def test_the_start_up_check_names_the_function_and_the_rule(own, kind, fn, why):
    register(kind, "t_" + fn.__name__.strip("_"), paper="x")(fn)
    entry = get(kind, "t_" + fn.__name__.strip("_"))
    with pytest.raises(ContractError, match=why) as info:
        check_entry(entry)
    assert str(info.value).startswith(f"{kind} 't_{fn.__name__.strip('_')}' (") and "test_own_functions.py:" in str(info.value)


def test_an_error_inside_the_function_is_reported_with_its_name(own):
    @register("drift", "t_raises", paper="x")
    def raises(logp, ref_logp, mask):
        return logp[:, :, None] @ ref_logp  # a shape mistake

    with pytest.raises(ContractError, match=r"drift 't_raises' \(.*\) raised RuntimeError: .*as the trainer calls a drift"):
        check_entry(get("drift", "t_raises"))
