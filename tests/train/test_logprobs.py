"""The shared-prefix forward gives the plain path's log-probs and gradients."""

import torch

from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model
from policyforge.train.config import RolloutConfig
from policyforge.train.logprobs import forward_logprobs
from policyforge.train.setup import rollout
from policyforge.data.tasks import BuiltinTask


def _setup(seed=0):
    tok = char_tokenizer()
    model = tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128), seed=seed)
    task = BuiltinTask("reversal", 6, eval_size=4)
    examples = [task.train_example(i) for i in range(3)]
    gen = torch.Generator().manual_seed(seed)
    batch = rollout(model, tok, examples, RolloutConfig(group_size=4, max_new_tokens=6), gen)
    return model, batch


def test_recorded_logprobs_equal_a_fresh_forward():
    model, batch = _setup()
    with torch.no_grad():
        fresh = forward_logprobs(model, batch, 1.0)["logp"]
    assert torch.allclose(fresh, batch.behav_logp, atol=1e-5)


def test_shared_prefix_matches_plain_logprobs_and_gradients():
    model, batch = _setup()
    adv = torch.randn(len(batch))
    outs, grads = [], []
    for shared in (False, True):
        model.zero_grad()
        out = forward_logprobs(model, batch, 0.7, shared_prefix=shared)
        (-(out["logp"] * adv[:, None]).sum() + out["entropy"].sum()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        outs.append({k: v.detach() for k, v in out.items()})
    plain, shared = outs
    assert torch.allclose(shared["logp"], plain["logp"], atol=1e-5)
    assert torch.allclose(shared["entropy"], plain["entropy"], atol=1e-5)
    for g_plain, g_shared in zip(*grads):
        assert torch.allclose(g_plain, g_shared, atol=1e-5, rtol=1e-4)


def test_a_group_holding_a_row_of_another_prompt_gets_that_row_s_own_prefix():
    # Scaf-GRPO puts a row sampled under a hinted prompt into a group: the shared-prefix forward must not
    # read it under the group's prompt
    model, batch = _setup()
    batch.group = batch.group.clone()
    batch.group[4] = 0  # group 0 now holds a row of prompt 1
    adv = torch.randn(len(batch))
    outs, grads = [], []
    for shared in (False, True):
        model.zero_grad()
        out = forward_logprobs(model, batch, 1.0, shared_prefix=shared)
        (-(out["logp"] * adv[:, None]).sum()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        outs.append(out["logp"].detach())
    assert torch.allclose(outs[1], outs[0], atol=1e-5)
    for g_plain, g_shared in zip(*grads):
        assert torch.allclose(g_plain, g_shared, atol=1e-5, rtol=1e-4)
