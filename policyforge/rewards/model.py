"""Reward models and ensembles: a learned scorer, alone or added to a verifier.

A reward model is a local Hugging Face sequence-classification model with one output
(`AutoModelForSequenceClassification`, `num_labels=1`, as TRL's RewardTrainer and
OpenRLHF train them); its logit is the reward. What it scores follows TRL's GRPOTrainer:

- a row rendered with the policy's chat template (a conversation, or any prompt under
  data.chat_template on; `Example.messages`), when the reward model's tokenizer has a chat
  template of its own: the messages plus the completion as the assistant's message, rendered
  with *the reward model's* template (no generation prompt; a final assistant message the
  policy continued gets the completion appended to it, as TRL does). A reward model is trained
  on conversations in its own format, which need not be the policy's (another family's special
  tokens, another system-message convention), so the policy's rendering would be text it never
  saw. data.chat_template_kwargs are not passed (TRL passes them): they are checked against, and
  meant for, the policy's template.
- otherwise (a plain-text prompt given as it is, or a reward model without a template): the
  text the policy saw and wrote, `prompt + completion`.

Either text is tokenized with the tokenizer's special tokens (BOS) unless it already starts
with BOS (a template often writes it), so a row has BOS once, as when scored alone. The
start-up length check (`check_fits`) measures the same text, with an empty completion.

`Ensemble` joins a reward function (a verifier, or the user's `module:function`) and a
reward model (or several, combined by model_ensemble.combined_reward) into one dict reward:
the function's value is the component `correct` (so accuracy and pass@k still count what
the function calls solved, as without a model), a dict function keeps its own components,
and the model adds `reward_model` = weight x logit (an ensemble's combined logit). The
scalar reward is the sum of the components, and estimators that use components (`gdpo`)
normalise each one within its group. With several members, each scoring logs, in logits
before the weight, every member's mean (`reward_model/logit_<i>`, so that members on
different scales show) and their disagreement (`reward_model/logit_std`, the standard
deviation across members, averaged over the rows).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from jinja2 import TemplateError

from policyforge.data.tasks import Example
from policyforge.rewards.batched import current_logged
from policyforge.rewards.model_ensemble import combined_reward, disagreement
from policyforge.rewards.score import CORRECT, MODEL_COMPONENT, RewardError, RewardFn, Scored, score_parts
from policyforge.rollout.sampler import context_limit


def _config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def check_folder(path: str) -> None:
    """RewardError unless `path` holds a sequence classifier with one output, read from its config.json alone:
    an ensemble's members are all checked before the first one loads."""
    p = Path(path)
    if not p.exists():
        raise RewardError(f"data.reward_model {path!r} does not exist")
    if not (p / "config.json").is_file():
        raise RewardError(f"data.reward_model {path!r}: not a model folder (no config.json)")
    config = _config(p)
    archs = config.get("architectures") or []
    # a causal LM loads as a classifier too, with a fresh random head: refuse it instead of scoring noise
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise RewardError(f"data.reward_model {path!r} is a {', '.join(archs) or 'model of unknown kind'}, "
                          "not a reward model: give a ...ForSequenceClassification model with one output")
    labels = len(config.get("id2label") or {}) or config.get("num_labels")
    if labels not in (None, 1):
        raise RewardError(f"data.reward_model {path!r} has {labels} outputs; a reward model has one (num_labels=1)")


class RewardModel:
    """A sequence-classification model with one output, scoring each row's `scored_text` in batches."""

    def __init__(self, path: str, device: str | torch.device = "cpu", batch_size: int = 32,
                 dtype: torch.dtype = torch.float32):
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging as hf_logging

        from policyforge.models.load import load_tokenizer

        hf_logging.disable_progress_bar()  # the run has its own progress bar
        p = Path(path)
        check_folder(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(p, dtype=dtype).to(device).eval()
        if self.model.config.num_labels != 1:
            raise RewardError(f"data.reward_model {path!r} has {self.model.config.num_labels} outputs; "
                              "a reward model has one (num_labels=1)")
        self.tokenizer = load_tokenizer(path, scoring=True)  # pads with EOS when it has no pad; EOS not required
        # the model finds each row's last real token by the config's pad id: it must be the one padding uses
        # (a config saying 0 beside a tokenizer padding with EOS would read padding as the last token)
        self.model.config.get_text_config().pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"
        found = context_limit(self.model)  # what the policy's own length check reads
        self.max_tokens = found[0] if found else None
        self.template = getattr(self.tokenizer, "chat_template", None) or None
        self.path, self.batch_size = path, batch_size

    def scored_text(self, ex: Example, completion: str) -> str:
        """The text this model scores for `ex` and `completion` (see the module's docstring): a rendered row's
        messages plus the completion through this model's chat template when it has one, else prompt + completion."""
        if ex.messages is None or not self.template:
            return ex.prompt + completion
        turns = list(ex.messages)
        if turns[-1]["role"] == "assistant":  # the policy continued this message: the completion ends it
            turns[-1] = {**turns[-1], "content": turns[-1]["content"] + completion}
        else:
            turns.append({"role": "assistant", "content": completion})
        try:
            return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=False)
        except (TemplateError, ValueError) as e:  # "System role not supported", "roles must alternate"
            raise RewardError(f"data.reward_model {self.path!r}: its chat template refused the conversation of "
                              f"{ex.where()} with the completion as the assistant's message: "
                              f"{type(e).__name__}: {e}") from None

    def _ids(self, texts: Sequence[str]) -> list[dict]:
        """Each text's encoding; special tokens (BOS) are added only to text that does not start with BOS (a
        chat-rendered text often does, and two would change the score), row by row, so a row encodes as alone."""
        bos = self.tokenizer.bos_token
        has_bos = [bool(bos) and t.startswith(bos) for t in texts]
        out: list = [None] * len(texts)
        for starts in (False, True):
            rows = [i for i, b in enumerate(has_bos) if b == starts]
            if rows:
                enc = self.tokenizer([texts[i] for i in rows], add_special_tokens=not starts)
                for k, i in enumerate(rows):
                    out[i] = {key: values[k] for key, values in enc.items()}
        return out

    def _encode(self, texts: list[str], where: list[str]):
        """The batch's ids, padded on the right; RewardError naming the row that is longer than the model's context."""
        enc = self.tokenizer.pad(self._ids(texts), padding=True, return_tensors="pt")
        if self.max_tokens and enc["input_ids"].shape[1] > self.max_tokens:
            row = int(enc["attention_mask"].sum(-1).argmax())
            raise RewardError(f"data.reward_model {self.path!r}: {where[row]} with its completion is "
                              f"{int(enc['attention_mask'][row].sum())} tokens, more than the model's "
                              f"{self.max_tokens}; shorten the prompt or lower rollout.max_new_tokens")
        return enc

    def check_fits(self, rows: Sequence[Example], max_new_tokens: int) -> None:
        """RewardError naming the longest row when its scored text with an empty completion (`scored_text`, so a
        templated row counts the template's framing, and a template that refuses a row fails here) plus
        max_new_tokens (a completion can be that long; its count in this model's tokens may differ a little)
        exceeds the model's context."""
        if not rows:
            return
        texts = [self.scored_text(ex, "") for ex in rows]
        if not self.max_tokens:
            return
        lengths = [len(enc["input_ids"]) for enc in self._ids(texts)]
        i = max(range(len(lengths)), key=lengths.__getitem__)
        if lengths[i] + max_new_tokens > self.max_tokens:
            framed = " in this model's chat template" if rows[i].messages is not None and self.template else ""
            raise RewardError(f"data.reward_model {self.path!r} takes at most {self.max_tokens} tokens, but "
                              f"{rows[i].where()}'s prompt is {lengths[i]}{framed} and a completion may add "
                              f"rollout.max_new_tokens={max_new_tokens}; shorten the prompt or lower it")

    def score_examples(self, examples: Sequence[Example], completions: Sequence[str]) -> torch.Tensor:
        """(B,) float32: the model's logit for each row's `scored_text`; errors name the rows."""
        texts = [self.scored_text(ex, c) for ex, c in zip(examples, completions)]
        return self._score(texts, [ex.prompt for ex in examples], [ex.where() for ex in examples])

    def scores(self, prompts: Sequence[str], completions: Sequence[str], where: Sequence[str] | None = None
               ) -> torch.Tensor:
        """(B,) float32: the model's logit for each plain `prompt + completion`; `where` names the rows in errors."""
        where = list(where) if where is not None else [f"row {i}" for i in range(len(prompts))]
        return self._score([p + c for p, c in zip(prompts, completions)], list(prompts), where)

    @torch.no_grad()
    def _score(self, texts: list[str], prompts: list[str], where: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self._encode(texts[i : i + self.batch_size], where[i : i + self.batch_size]).to(device)
            out.append(self.model(**enc).logits[:, 0].float().cpu())
        values = torch.cat(out) if out else torch.zeros(0)
        if not torch.isfinite(values).all():
            row = int((~torch.isfinite(values)).nonzero()[0])
            raise RewardError(f"data.reward_model {self.path!r} gave {values[row].item()} for {where[row]} "
                              f"(prompt {prompts[row][:60]!r}); rewards must be finite")
        return values


class Ensemble:
    """A reward function (or None) plus a weighted reward model, or several combined, scored as one dict reward."""

    def __init__(self, fn: RewardFn | None, models: RewardModel | list[RewardModel], weight: float = 1.0,
                 how: str = "mean", uncertainty: float = 0.0):
        self.fn, self.weight, self.how, self.uncertainty = fn, weight, how, uncertainty
        self.models = models if isinstance(models, list) else [models]

    def model_scores(self, examples: Sequence[Example], completions: list[str]) -> torch.Tensor:
        """(B,) weight x the members' combined logits; logs their disagreement when there are several."""
        values = torch.stack([m.score_examples(examples, completions) for m in self.models], dim=-1)
        logged = current_logged()
        if len(self.models) > 1 and logged is not None:  # the training step's and evaluation's scoring blocks
            for i, logits in enumerate(values.T):  # sums and row counts: means across chunks and processes weigh rows
                logged.log_own(f"reward_model/logit_{i}", logits)
            logged.log_own("reward_model/logit_std", disagreement(values))
        return self.weight * combined_reward(values, self.how, self.uncertainty)

    def score_parts(self, examples: Sequence[Example], completions: Sequence[str],
                    completion_ids: Sequence[list[int]] | None = None) -> Scored:
        """The function's share and the model's; `completion_ids` (B lists of ints) goes to the function alone (the
        model reads the text in its own tokens)."""
        learned = self.model_scores(examples, list(completions))
        if self.fn is None:
            return Scored(learned, None, ())
        base = score_parts(self.fn, examples, completions, completion_ids=completion_ids)
        if MODEL_COMPONENT in base.names:
            raise RewardError(f"the reward function returns a component named {MODEL_COMPONENT!r}, which "
                              "data.reward_model adds: rename it")
        parts = base.components if base.components is not None else base.scores[:, None]
        names = base.names or (CORRECT,)
        components = torch.cat([parts, learned[:, None]], dim=1)
        # the function's own reward plus the model's: a combined reward's components are unweighted (Combined)
        return Scored(base.scores + learned, components, names + (MODEL_COMPONENT,))
