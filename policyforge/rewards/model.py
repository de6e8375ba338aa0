"""Reward models and ensembles: a learned scorer, alone or added to a verifier.

A reward model is a local Hugging Face sequence-classification model with one output
(`AutoModelForSequenceClassification`, `num_labels=1`, as TRL's RewardTrainer and
OpenRLHF train them). It scores the text the policy saw and wrote, `prompt + completion`,
and its logit is the reward.

`Ensemble` joins a reward function (a verifier, or the user's `module:function`) and a
reward model into one dict reward: the function's value is the component `correct` (so
accuracy and pass@k still count what the function calls solved, as without a model), a
dict function keeps its own components, and the model adds `reward_model` = weight x
logit. The scalar reward is the sum of the components, and estimators that use
components (`gdpo`) normalise each one within its group.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from policyforge.data.tasks import Example
from policyforge.rewards.score import CORRECT, MODEL_COMPONENT, RewardError, RewardFn, Scored, score_parts
from policyforge.rollout.sampler import context_limit


def _architectures(path: Path) -> list[str]:
    try:
        return json.loads((path / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        return []


class RewardModel:
    """A sequence-classification model with one output, scoring `prompt + completion` in batches."""

    def __init__(self, path: str, device: str | torch.device = "cpu", batch_size: int = 32,
                 dtype: torch.dtype = torch.float32):
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging as hf_logging

        from policyforge.models.load import load_tokenizer

        hf_logging.disable_progress_bar()  # the run has its own progress bar
        p = Path(path)
        if not (p / "config.json").is_file():
            raise RewardError(f"data.reward_model {path!r}: not a model folder (no config.json)")
        archs = _architectures(p)
        # a causal LM loads as a classifier too, with a fresh random head: refuse it instead of scoring noise
        if not any(a.endswith("ForSequenceClassification") for a in archs):
            raise RewardError(f"data.reward_model {path!r} is a {', '.join(archs) or 'model of unknown kind'}, "
                              "not a reward model: give a ...ForSequenceClassification model with one output")
        self.model = AutoModelForSequenceClassification.from_pretrained(p, dtype=dtype).to(device).eval()
        if self.model.config.num_labels != 1:
            raise RewardError(f"data.reward_model {path!r} has {self.model.config.num_labels} outputs; "
                              "a reward model has one (num_labels=1)")
        self.tokenizer = load_tokenizer(path)  # the policy's rules: EOS required, and it pads when pad is missing
        # the model finds each row's last real token by the config's pad id: it must be the one padding uses
        # (a config saying 0 beside a tokenizer padding with EOS would read padding as the last token)
        self.model.config.get_text_config().pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"
        found = context_limit(self.model)  # what the policy's own length check reads
        self.max_tokens = found[0] if found else None
        self.path, self.batch_size = path, batch_size

    def _encode(self, texts: list[str], where: list[str]):
        """The batch's ids; BOS is added only to text that lacks it (a chat-rendered prompt often starts with it,
        and two would change the score); RewardError naming the row that is longer than the model's context."""
        bos = self.tokenizer.bos_token
        add = not (bos and all(t.startswith(bos) for t in texts))
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add)
        if self.max_tokens and enc["input_ids"].shape[1] > self.max_tokens:
            row = int(enc["attention_mask"].sum(-1).argmax())
            raise RewardError(f"data.reward_model {self.path!r}: {where[row]} with its completion is "
                              f"{int(enc['attention_mask'][row].sum())} tokens, more than the model's "
                              f"{self.max_tokens}; shorten the prompt or lower rollout.max_new_tokens")
        return enc

    def check_fits(self, prompts: Sequence[str], where: Sequence[str], max_new_tokens: int) -> None:
        """RewardError naming the longest prompt when it plus max_new_tokens (a completion can be that long;
        its count in this model's tokens may differ a little) exceeds the model's context."""
        if not self.max_tokens or not prompts:
            return
        lengths = [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
        i = max(range(len(lengths)), key=lengths.__getitem__)
        if lengths[i] + max_new_tokens > self.max_tokens:
            raise RewardError(f"data.reward_model {self.path!r} takes at most {self.max_tokens} tokens, but "
                              f"{where[i]}'s prompt is {lengths[i]} and a completion may add "
                              f"rollout.max_new_tokens={max_new_tokens}; shorten the prompt or lower it")

    @torch.no_grad()
    def scores(self, prompts: Sequence[str], completions: Sequence[str], where: Sequence[str] | None = None
               ) -> torch.Tensor:
        """(B,) float32: the model's logit for each prompt + completion; `where` names the rows in errors."""
        device = next(self.model.parameters()).device
        where = list(where) if where is not None else [f"row {i}" for i in range(len(prompts))]
        out = []
        for i in range(0, len(prompts), self.batch_size):
            texts = [p + c for p, c in zip(prompts[i : i + self.batch_size], completions[i : i + self.batch_size])]
            enc = self._encode(texts, where[i : i + self.batch_size]).to(device)
            out.append(self.model(**enc).logits[:, 0].float().cpu())
        values = torch.cat(out) if out else torch.zeros(0)
        if not torch.isfinite(values).all():
            row = int((~torch.isfinite(values)).nonzero()[0])
            raise RewardError(f"data.reward_model {self.path!r} gave {values[row].item()} for {where[row]} "
                              f"(prompt {prompts[row][:60]!r}); rewards must be finite")
        return values


class Ensemble:
    """A reward function (or None) plus a weighted reward model, scored as one dict reward."""

    def __init__(self, fn: RewardFn | None, model: RewardModel, weight: float = 1.0):
        self.fn, self.model, self.weight = fn, model, weight

    def score_parts(self, examples: Sequence[Example], completions: Sequence[str]) -> Scored:
        learned = self.weight * self.model.scores([e.prompt for e in examples], list(completions),
                                                  [e.where() for e in examples])
        if self.fn is None:
            return Scored(learned, None, ())
        base = score_parts(self.fn, examples, completions)
        if MODEL_COMPONENT in base.names:
            raise RewardError(f"the reward function returns a component named {MODEL_COMPONENT!r}, which "
                              "data.reward_model adds: rename it")
        parts = base.components if base.components is not None else base.scores[:, None]
        names = base.names or (CORRECT,)
        components = torch.cat([parts, learned[:, None]], dim=1)
        return Scored(components.sum(-1), components, names + (MODEL_COMPONENT,))
