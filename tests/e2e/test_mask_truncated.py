"""algo.mask_truncated (DAPO's overlong filtering, TRL's mask_truncated_completions): completions cut at
max_new_tokens add nothing to the loss, so the update is the one on the other rows alone."""

import copy

import pytest
import torch

from policyforge.data.tasks import BuiltinTask
from policyforge.models.load import load_model
from policyforge.train.algorithm import resolve
from policyforge.train.config import AlgoConfig, Config, RolloutConfig
from policyforge.train.setup import build_optimizer, rollout
from policyforge.train.step import BatchTensors, update


@pytest.fixture(scope="module")
def batch_and_model(small_model_dir):
    model, tok = load_model(small_model_dir, "float32", "cpu", 0)
    task = BuiltinTask("reversal", size=4, seed=0)
    examples = [task.train_example(i) for i in range(4)]
    for seed in range(20):  # a batch with both cut and finished completions
        batch = rollout(model, tok, examples, RolloutConfig(group_size=4, max_new_tokens=5),
                        torch.Generator().manual_seed(seed))
        if 0 < int(batch.truncated.sum()) < len(batch):
            return batch, model
    pytest.fail("no batch mixed cut and finished completions")


def _updated(model, batch, adv, learns, aggregation, shared_prefix):
    cfg = Config()
    cfg.optim.lr = 1e-2  # large, so a wrong step shows
    model = copy.deepcopy(model)
    opt, sched = build_optimizer(model, cfg)
    algo = resolve(AlgoConfig(aggregation=aggregation))
    m = update(model, opt, sched, batch, BatchTensors(adv, None, {}, learns=learns), algo, step=1, updates=1,
               micro_batch_size=5, max_grad_norm=0.0, temperature=1.0, max_len=5, shared_prefix=shared_prefix)
    return [p.detach() for p in model.parameters()], m


@pytest.mark.parametrize("shared_prefix", [True, False])
def test_the_update_is_the_one_on_the_finished_rows_alone(batch_and_model, shared_prefix):
    batch, model = batch_and_model
    adv = torch.linspace(-1.0, 1.0, len(batch))
    keep = ~batch.truncated
    masked, m = _updated(model, batch, adv, keep, "token_mean", shared_prefix)
    alone, m_alone = _updated(model, batch.select(torch.nonzero(keep).squeeze(-1)), adv[keep], None, "token_mean",
                              shared_prefix)
    for a, b in zip(masked, alone):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert m["loss"] == pytest.approx(m_alone["loss"], rel=1e-5, abs=1e-7)
    unmasked, _ = _updated(model, batch, adv, None, "token_mean", shared_prefix)
    assert any(not torch.allclose(a, b) for a, b in zip(masked, unmasked))  # the cut rows did count without it


def test_a_masked_row_counts_as_a_sequence_of_zero_loss_in_a_sequence_mean(batch_and_model):
    """As in TRL, whose seq-mean loss averages over every sequence, a masked one contributing 0."""
    batch, model = batch_and_model
    adv = torch.linspace(-1.0, 1.0, len(batch))
    keep = ~batch.truncated
    _, m = _updated(model, batch, adv, keep, "seq_mean_token_mean", True)
    _, m_alone = _updated(model, batch.select(torch.nonzero(keep).squeeze(-1)), adv[keep], None,
                          "seq_mean_token_mean", True)
    assert m["loss"] == pytest.approx(m_alone["loss"] * int(keep.sum()) / len(batch), rel=1e-5, abs=1e-7)


def early_letter(prompt, completion, **_):
    """Varies with a one-token completion: whether its character comes early in the alphabet."""
    return float(completion[:1] < "m")


def test_the_option_reaches_the_loop_from_the_command_line(tiny_cfg, tmp_path):
    """--algo.mask-truncated through the CLI: a run where every completion is cut (1 new token) learns nothing,
    though its rewards vary within groups."""
    import json

    from policyforge.cli import main

    args = ["train", "--model.path", tiny_cfg.model.path, "--data.task", "reversal", "--data.task-size", "4",
            "--data.eval-size", "2", "--rollout.prompts-per-step", "2", "--rollout.group-size", "4",
            "--rollout.max-new-tokens", "1", "--train.steps", "1", "--train.out-dir", str(tmp_path),
            "--train.no-progress", "--train.no-track-ref-kl", "--data.reward", "tests.e2e.test_mask_truncated:early_letter"]
    for flag, name in ((["--algo.mask-truncated"], "masked"), ([], "plain")):
        main(args + flag + ["--train.run-name", name])
    rec = {n: json.loads((tmp_path / n / "metrics.jsonl").read_text()) for n in ("masked", "plain")}
    assert rec["masked"]["truncation_rate"] == rec["plain"]["truncation_rate"] == 1.0
    assert rec["masked"]["loss"] == 0.0 and rec["masked"]["grad_norm"] == 0.0
    assert rec["plain"]["grad_norm"] > 0.0 and rec["plain"]["zero_var_group_frac"] < 1.0
    assert "mask_truncated: true" in (tmp_path / "masked" / "config.yaml").read_text()


def test_a_micro_batch_of_masked_rows_only_leaves_min_and_max_metrics_alone():
    from policyforge.train.step import merge_metrics

    parts = [({"ratio_min": 0.0, "ratio_max": 0.0, "entropy": 0.0}, 0.0),  # all rows masked: no token learns
             ({"ratio_min": 0.9, "ratio_max": 1.1, "entropy": 2.0}, 4.0)]
    assert merge_metrics(parts) == {"ratio_min": 0.9, "ratio_max": 1.1, "entropy": 2.0}


def test_a_masked_row_is_inert_whatever_its_advantage(batch_and_model):
    from policyforge.train.step import inert_rows

    batch, _ = batch_and_model
    algo = resolve(AlgoConfig())
    adv = torch.ones(len(batch))
    learns = ~batch.truncated
    inert = inert_rows(adv, BatchTensors(adv, None, {}, learns=learns).loss_mask(batch.completion_mask), algo)
    assert torch.equal(inert, ~learns)


def test_kl_ref_covers_the_rows_the_loss_counts(batch_and_model):
    from policyforge.metrics.step_record import step_record

    batch, _ = batch_and_model
    batch.scores = torch.zeros(len(batch))
    ref_logp = batch.behav_logp + torch.linspace(-0.5, 0.5, len(batch))[:, None]  # another KL for each row
    loss_mask = BatchTensors(batch.scores, None, {}, learns=~batch.truncated).loss_mask(batch.completion_mask)
    kept = batch.select(torch.nonzero(~batch.truncated).squeeze(-1))
    kept.scores = torch.zeros(len(kept))
    masked = step_record(1, batch, {}, ref_logp, 0.1, loss_mask=loss_mask)["kl_ref"]
    alone = step_record(1, kept, {}, ref_logp[~batch.truncated], 0.1)["kl_ref"]
    everything = step_record(1, batch, {}, ref_logp, 0.1)["kl_ref"]
    assert masked == pytest.approx(alone, rel=1e-6) and masked != pytest.approx(everything, rel=1e-3)


def test_a_teacher_forced_loss_refuses_the_option(tiny_cfg):
    from policyforge.train.config import ConfigError
    from policyforge.train.loop import train

    tiny_cfg.algo.loss, tiny_cfg.algo.mask_truncated = "psft", True
    with pytest.raises(ConfigError, match="algo.mask_truncated with algo.loss='psft'"):
        train(tiny_cfg, log=lambda *_: None)
