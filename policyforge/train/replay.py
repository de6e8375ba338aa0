"""RLEP's replay inside the RL step: each group of fresh completions is joined by completions drawn from the
experience pool (data/replay.py), before scoring, so that the reward and the group's advantages see them all.

As in RLEP's code (built on verl, which recomputes every row's old log-probs before the update), a replayed row's
log-probs are the current policy's: its behav_logp is a forward of the current policy (as the teacher-forced
losses' reference solutions get, setup.reference_batch), so no importance weight toward the seed policy that
wrote it is applied, and with one update per batch its ratio is 1 like a fresh row's. Replayed rows are scored
by the run's reward like fresh ones (RLEP's too), and keep their reward whatever it is.
"""

from __future__ import annotations

from typing import Sequence

import torch

from policyforge.data.replay import ReplayPool, read_pool
from policyforge.data.tasks import Example
from policyforge.models.load import eval_mode
from policyforge.rollout.batch import RolloutBatch
from policyforge.train.config import ConfigError


@torch.no_grad()
def completion_batch(model, tokenizer, examples: Sequence[Example], texts: Sequence[str], max_new_tokens: int,
                     temperature: float, source: str) -> RolloutBatch:
    """Given completions `texts` of `examples`' prompts (+ EOS, cut to the budget) as a batch of one-row groups,
    their behav_logp the current policy's at `temperature` (eval mode: no dropout, as a sampler would)."""
    from policyforge.train.evaluate import encode_prompts
    from policyforge.train.logprobs import forward_logprobs

    device = next(model.parameters()).device
    ids, attn = encode_prompts(tokenizer, [e.prompt for e in examples], device)
    seqs = [tokenizer(t, add_special_tokens=False)["input_ids"][: max_new_tokens - 1] + [tokenizer.eos_token_id]
            for t in texts]
    width = max(map(len, seqs))
    out = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1.0] * len(s) + [0.0] * (width - len(s)) for s in seqs], device=device)
    n = len(examples)
    batch = RolloutBatch(ids, attn, out, mask, torch.zeros_like(mask), torch.zeros(n, dtype=torch.bool, device=device),
                         torch.arange(n, device=device), list(examples), list(texts), [source] * n,
                         temperature=torch.full((n,), float(temperature), device=device))
    with eval_mode(model):
        batch.behav_logp = forward_logprobs(model, batch, temperature)["logp"]
    return batch


def with_replayed(batch: RolloutBatch, pool: ReplayPool, model, tokenizer, per_prompt: int, max_new_tokens: int,
                  temperature: float, seed: int, step: int) -> RolloutBatch:
    """`batch`'s fresh groups, each followed by up to `per_prompt` of its prompt's pooled completions in the same
    group (tagged "replayed"); a pooled completion longer than the budget (EOS included) is never drawn."""
    fits = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]) < max_new_tokens  # noqa: E731
    first_row: dict[int, int] = {}
    for i, g in enumerate(batch.group.tolist()):
        first_row.setdefault(g, i)
    examples, texts, groups = [], [], []
    for g, i in first_row.items():
        drawn = pool.draw(batch.examples[i].prompt, per_prompt, seed, step, fits)
        examples += [batch.examples[i]] * len(drawn)
        texts += drawn
        groups += [g] * len(drawn)
    if not texts:
        return batch
    extra = completion_batch(model, tokenizer, examples, texts, max_new_tokens, temperature, "replayed")
    extra.group = torch.tensor(groups, device=batch.group.device)
    width = max(batch.prompt_ids.shape[1], extra.prompt_ids.shape[1])
    whole = RolloutBatch.concat(batch.left_padded(width), extra.left_padded(width))
    return whole.select(torch.sort(whole.group, stable=True).indices)  # a group's rows together, fresh first


def check_replay(dc, algo) -> None:
    """ConfigError for a data.replay_pool setting this run cannot use."""
    if dc.replay_per_prompt < 1:
        raise ConfigError(f"data.replay_per_prompt={dc.replay_per_prompt}: at least 1 (RLEP replays 2)")
    if dc.replay_pool is None:
        if dc.replay_per_prompt != type(dc).replay_per_prompt:
            raise ConfigError(f"data.replay_per_prompt={dc.replay_per_prompt} is read only with data.replay_pool: "
                              "give the pool file (`policyforge collect` writes one), or leave it out")
        return
    if algo.teacher_forced():
        raise ConfigError("data.replay_pool with a loss that trains on the data's solutions (psft, otr): nothing is "
                          "sampled, so there is no group to replay into; leave the pool out")
    if algo.advantage.name == "spo":
        raise ConfigError("data.replay_pool with algo.advantage=spo: SPO has no groups (one completion a prompt, "
                          "its baseline a per-prompt tracker), and RLEP's replayed rows join a group; leave it out")


def load_pool(dc, source, n_positions: int, log) -> ReplayPool | None:
    """data.replay_pool's pool (None without one), and a start-up line on how much of the run it covers: how many
    of the first `n_positions` training prompts (the ones a run of these settings trains on) have completions."""
    if dc.replay_pool is None:
        return None
    pool = read_pool(dc.replay_pool)
    prompts = {source.train_example(i).prompt for i in range(n_positions)}
    covered = sum(1 for p in prompts if pool.completions(p))
    log(f"data.replay_pool: {len(pool)} completions of {len(pool.by_prompt)} prompts; {covered} of the run's "
        f"{len(prompts)} training prompts have some, and get up to {dc.replay_per_prompt} a group (RLEP)")
    if covered == 0:
        log("warning: no training prompt of this run is in data.replay_pool, so nothing will be replayed: was it "
            "collected with other data.* settings (task, file, chat template, system prompt)?")
    return pool
