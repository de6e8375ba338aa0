"""optim.skip_zero_advantage: samples with zero advantage skip the backward pass, and the step is
the same as with a backward on every sample: same weights after AdamW, same recorded metrics."""

import copy

import pytest
import torch

from policyforge.algos import table
from policyforge.data.tasks import Example
from policyforge.metrics.step_record import TIMING
from policyforge.models.load import load_model
from policyforge.rollout.batch import RolloutBatch
from policyforge.train.algorithm import resolve
from policyforge.train.config import AlgoConfig
from policyforge.train.loop import StepParts, train_step
from policyforge.train.setup import build_data, build_optimizer
from policyforge.train.step import inert_rows, micro_batch_plan

INERT = sorted(n for n, e in table("loss").items() if e.zero_adv_inert)


def some_groups_flat(prompt, completion, **_):
    """Equal rewards for every completion of a prompt of even length (zero advantage), varying otherwise."""
    return 1.0 if len(prompt) % 2 == 0 else float(sum(c in "aeiou" for c in completion))


def flat(prompt, completion, **_):
    return 1.0


_TOK = []


@pytest.fixture(scope="module")
def model(small_model_dir):
    m, tok = load_model(small_model_dir, "float32", "cpu", 0)
    _TOK[:] = [tok]
    return m


def _run(cfg, model, skip: bool, rewards: list[str], backwards: list[int]):
    """Steps with one reward each, from the same weights and sampling seed; (weights, metrics records)."""
    cfg = copy.deepcopy(cfg)
    cfg.optim.skip_zero_advantage = skip
    model = copy.deepcopy(model)
    opt, sched = build_optimizer(model, cfg)
    parts = StepParts(cfg, resolve(cfg.algo), model, _TOK[0], None, opt, sched, torch.Generator().manual_seed(0), None)
    source, _, _ = build_data(cfg.data, cfg.train.seed)
    recs = []
    for i, reward in enumerate(rewards):
        parts.reward = {"some": some_groups_flat, "flat": flat}[reward]
        examples = [source.train_example(i * 4 + j) for j in range(cfg.rollout.prompts_per_step)]
        learned = [0]
        real = torch.Tensor.backward

        def counting(self, *a, **k):
            learned[0] += 1
            return real(self, *a, **k)

        torch.Tensor.backward = counting
        try:
            recs.append(train_step(parts, i + 1, examples)[0])
        finally:
            torch.Tensor.backward = real
        backwards.append(learned[0])
    return [p.detach().clone() for p in model.parameters()], recs


def _configured(tiny_cfg, loss: str, micro: int):
    cfg = tiny_cfg
    cfg.rollout.prompts_per_step, cfg.rollout.group_size, cfg.rollout.max_new_tokens = 4, 4, 5
    cfg.algo.loss, cfg.optim.micro_batch_size, cfg.optim.updates_per_batch = loss, micro, 2
    cfg.optim.lr = 1e-2  # large, so a wrong step shows
    return cfg


def _same(cfg, model, rewards):
    n_on, n_off = [], []
    w_on, r_on = _run(cfg, model, True, rewards, n_on)
    w_off, r_off = _run(cfg, model, False, rewards, n_off)
    for a, b in zip(w_on, w_off):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    for a, b in zip(r_on, r_off):
        for k in b:
            if k not in TIMING:
                assert a[k] == pytest.approx(b[k], abs=1e-6, rel=1e-5), k
    return r_on, n_on, n_off


@pytest.mark.parametrize("name", INERT)
def test_same_update_and_metrics_with_fewer_backward_passes(tiny_cfg, model, name):
    cfg = _configured(tiny_cfg, name, micro=4)
    recs, n_on, n_off = _same(cfg, model, ["some"])
    assert 0 < recs[0]["zero_var_group_frac"] < 1, "the batch needs both kinds of group for the check to mean much"
    assert n_on[0] < n_off[0], (n_on, n_off)  # the flat groups' micro-batches ran forward only


def test_shared_prefix_off_and_whole_batch(tiny_cfg, model):
    cfg = _configured(tiny_cfg, "ppo_clip", micro=64)
    cfg.optim.shared_prefix = False
    _same(cfg, model, ["some"])


def test_a_batch_with_no_signal_still_steps_adamw_as_before(tiny_cfg, model):
    """AdamW moves the weights on a zero gradient (its momentum) but not on a missing one: the first
    micro-batch of an all-flat batch runs backward, so the second step here matches."""
    cfg = _configured(tiny_cfg, "ppo_clip", micro=4)
    recs, n_on, _ = _same(cfg, model, ["some", "flat"])
    assert recs[1]["zero_var_group_frac"] == 1.0
    assert n_on[1] == 2  # one backward per update (updates_per_batch 2), on the first micro-batch


def _batch(adv_groups: int = 3, size: int = 4) -> RolloutBatch:
    b = adv_groups * size
    mask = torch.ones(b, 3)
    return RolloutBatch(torch.ones(b, 2, dtype=torch.long), torch.ones(b, 2), torch.ones(b, 3, dtype=torch.long), mask,
                        torch.zeros(b, 3), torch.zeros(b, dtype=torch.bool),
                        torch.arange(adv_groups).repeat_interleave(size), [None] * b, [""] * b, ["fresh"] * b)


def test_plan_covers_every_sample_once_learning_ones_first():
    batch = _batch()
    inert = torch.tensor([False] * 4 + [True] * 4 + [False] * 4)
    plan = micro_batch_plan(batch, inert, max_seqs=4, whole_groups=True)
    assert sorted(torch.cat([i for i, _ in plan]).tolist()) == list(range(12))
    assert [learn for _, learn in plan] == [True, True, False]
    assert all(bool(inert[i].all()) != learn for i, learn in plan)
    assert [learn for _, learn in micro_batch_plan(batch, torch.ones(12, dtype=torch.bool), 4)] == [True, False, False]
    assert all(learn for _, learn in micro_batch_plan(batch, None, 4))


def test_inert_rows_only_where_exact():
    adv = torch.tensor([0.0, 1.0, 0.0, -1.0])
    mask = torch.ones(4, 3)
    algo = resolve(AlgoConfig(loss="ppo_clip"))
    assert inert_rows(adv, mask, algo).tolist() == [True, False, True, False]
    assert inert_rows(torch.ones(4), mask, algo) is None
    tok_adv = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert inert_rows(tok_adv, torch.tensor([[1.0, 1.0, 0.0]] * 4), algo).tolist() == [True, True, False, True]
    assert inert_rows(adv, mask, resolve(AlgoConfig(loss="cpgd"))) is None  # its drift pulls at zero advantage
    assert inert_rows(adv, mask, resolve(AlgoConfig(loss="ppo_clip", drift={"k3": 0.1}))) is None



class _Routed(torch.nn.Module):
    """A toy LM with two experts, each run only on the tokens routed to it (by token parity), as
    mixture-of-experts layers with separate expert modules do: an expert no token reaches gets no gradient."""

    def __init__(self, vocab: int = 12):
        super().__init__()
        torch.manual_seed(0)
        self.config = type("Config", (), {"model_type": "routed_toy"})()
        self.embed = torch.nn.Embedding(vocab, 8)
        self.experts = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(2))
        self.head = torch.nn.Linear(8, vocab)

    def forward(self, input_ids, attention_mask=None, **_):
        h = self.embed(input_ids)
        out = h.clone()
        for e in (input_ids % 2).unique().tolist():
            where = (input_ids % 2 == e).nonzero(as_tuple=True)
            out = out.index_put(where, h[where] + torch.tanh(self.experts[e](h[where])))
        mixed = out.cumsum(1) / torch.arange(1, out.shape[1] + 1)[None, :, None]  # causal: past tokens only
        return type("Out", (), {"logits": self.head(mixed)})()


def _routed_batch(scores: list[float]) -> RolloutBatch:
    """Two groups of 2: group 0 uses even tokens only (expert 0), group 1 odd tokens only (expert 1)."""
    prompt = torch.tensor([[2, 4], [2, 4], [3, 5], [3, 5]])
    completion = torch.tensor([[6, 8, 10], [8, 6, 2], [7, 9, 11], [9, 7, 3]])
    b = RolloutBatch(prompt, torch.ones(4, 2, dtype=torch.long), completion, torch.ones(4, 3), torch.zeros(4, 3),
                     torch.zeros(4, dtype=torch.bool), torch.tensor([0, 0, 1, 1]),
                     [Example("p", index=g) for g in (0, 0, 1, 1)], [""] * 4, ["fresh"] * 4)
    b.scores = torch.tensor(scores)
    return b


def test_parameters_only_skipped_samples_reach_still_get_their_zero_gradient():
    """Step 2's flat group is the only one routed to expert 1: skipping its backward must still give
    expert 1 the zero gradient a backward gives, or AdamW would leave out its momentum step."""
    from policyforge.train.setup import adamw
    from policyforge.train.step import BatchTensors, compute_advantages, update

    algo = resolve(AlgoConfig(loss="ppo_clip"))
    after = {}
    for skip in (True, False):
        model = _Routed()
        opt = adamw(list(model.parameters()), lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        for step, scores in ((1, [1.0, 0.0, 0.0, 1.0]), (2, [1.0, 0.0, 1.0, 1.0])):
            batch = _routed_batch(scores)
            bt = BatchTensors(compute_advantages(batch, algo, step), None)
            update(model, opt, sched, batch, bt, algo, step=step, updates=1, micro_batch_size=2, max_grad_norm=1.0,
                   temperature=1.0, max_len=3, skip_zero_advantage=skip)
        after[skip] = {n: p.detach().clone() for n, p in model.named_parameters()}
    moved = _Routed().experts[1].weight
    assert not torch.equal(after[False]["experts.1.weight"], moved), "expert 1 must move on its momentum in step 2"
    for name, weight in after[False].items():
        assert torch.equal(after[True][name], weight), name
