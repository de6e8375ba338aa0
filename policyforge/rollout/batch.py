"""The typed rollout batch every later stage reads.

B = prompts x group size, P = padded prompt length, T = padded completion length.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor
from torch.nn import functional as F

from policyforge.data.tasks import Example

SOURCES = ("fresh", "replayed", "refined", "hinted", "tempered")


@dataclass
class RolloutBatch:
    prompt_ids: Tensor  # (B, P) long, left-padded prompt tokens
    prompt_mask: Tensor  # (B, P) long, 1 on real prompt tokens
    completion_ids: Tensor  # (B, T) long, right-padded completion tokens (EOS kept)
    completion_mask: Tensor  # (B, T) float, 1 on generated tokens up to and including EOS
    behav_logp: Tensor  # (B, T) float, log-prob the sampler gave each token (0 on padding)
    truncated: Tensor  # (B,) bool, True when no EOS came within max_new_tokens
    group: Tensor  # (B,) long, which prompt group each sample belongs to
    examples: list[Example]  # B, the prompt row of each sample
    completions: list[str]  # B, decoded completion text (without EOS)
    source: list[str]  # B, where each sample came from: fresh | replayed | refined | hinted | tempered
    temperature: Tensor | None = None  # (B,) float temperature the trainer scores each row at; None = the run's
    scores: Tensor | None = None  # (B,) float reward, filled by scoring (a dict reward's sum of components)
    reward_components: Tensor | None = None  # (B, K) float components of a dict reward; None for number rewards
    reward_names: tuple[str, ...] = ()  # K component names, in reward_components' column order
    length_penalty: Tensor | None = None  # (B,) float, DAPO's soft overlong punishment, already in `scores`; None = off
    extra: list[dict] | None = None  # B, the columns TRL-form rewards logged for each row with log_extra (batched.py)
    advantages: Tensor | None = None  # (B,) or (B, T) float, filled by the update's advantage estimator
    filled: Tensor | None = None  # (B,) bool, dynamic sampling: the row's group failed its test and fills the batch

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    def __post_init__(self):
        bad = sorted(set(self.source) - set(SOURCES))
        if bad:
            raise ValueError(f"unknown sample source {bad}; valid: {SOURCES}")
        k = 0 if self.reward_components is None else self.reward_components.shape[-1]
        if k != len(self.reward_names):
            raise ValueError(f"reward_components has {k} columns but reward_names {self.reward_names} names "
                             f"{len(self.reward_names)}")

    def select(self, idx: Tensor) -> "RolloutBatch":
        """The samples at positions `idx` (B',) or where the bool mask `idx` (B,) is True, every field alike."""
        if idx.dtype == torch.bool:
            idx = torch.nonzero(idx).squeeze(-1)
        picks = idx.tolist()
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v[idx] if isinstance(v, Tensor) else ([v[i] for i in picks] if isinstance(v, list) else v)
        return replace(self, **out)

    def trimmed(self) -> tuple["RolloutBatch", int]:
        """The batch without completion columns that are padding in every row, nor prompt columns that are (left)
        padding in every row (a micro-batch without the batch's longest prompt: a hint's or a rewrite's), and the
        kept completion width. Positions count from each row's first real token, so neither changes a log-prob."""
        width = max(int(self.completion_mask.sum(-1).max()), 1)
        real = self.prompt_mask.any(0).nonzero()
        start = int(real[0]) if len(real) else self.prompt_mask.shape[1] - 1  # empty prompts keep one column
        if width == self.completion_ids.shape[1] and start == 0:
            return self, width
        return replace(
            self,
            prompt_ids=self.prompt_ids[:, start:],
            prompt_mask=self.prompt_mask[:, start:],
            completion_ids=self.completion_ids[:, :width],
            completion_mask=self.completion_mask[:, :width],
            behav_logp=self.behav_logp[:, :width],
        ), width

    @staticmethod
    def concat(a: "RolloutBatch", b: "RolloutBatch") -> "RolloutBatch":
        """Rows of `a` then rows of `b`; completions padded to the wider one.

        Prompts must share a width, and both batches be unscored or scored with the same reward components.
        """
        if a.prompt_ids.shape[1] != b.prompt_ids.shape[1]:
            raise ValueError("concat needs batches whose prompts are padded to the same width")
        width = max(a.completion_ids.shape[1], b.completion_ids.shape[1])
        out = {}
        if a.reward_names != b.reward_names or (a.scores is None) != (b.scores is None):
            raise ValueError(f"concat needs batches scored alike (reward components {a.reward_names} vs "
                             f"{b.reward_names}, scored: {a.scores is not None} vs {b.scores is not None})")
        if (a.temperature is None) != (b.temperature is None):
            raise ValueError("concat needs per-row temperatures on both batches or on neither")
        for f in fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            if f.name == "reward_names":
                out[f.name] = x
                continue
            if isinstance(x, Tensor) and f.name.startswith(("completion", "behav")):
                x, y = (torch.nn.functional.pad(v, (0, width - v.shape[1])) for v in (x, y))
            out[f.name] = torch.cat([x, y]) if isinstance(x, Tensor) else (x + y if isinstance(x, list) else None)
        return RolloutBatch(**out)

    @staticmethod
    def joined(parts: list["RolloutBatch"]) -> "RolloutBatch":
        """The rows of every batch in `parts`, in order: prompts left-padded and completions right-padded to the
        widest, and each batch's group ids offset past the previous ones' so that its groups stay distinct."""
        width = max(b.prompt_ids.shape[1] for b in parts)
        out, offset = None, 0
        for b in parts:
            b = replace(b.left_padded(width), group=b.group + offset)
            offset = int(b.group.max()) + 1
            out = b if out is None else RolloutBatch.concat(out, b)
        return out

    def first_rows(self) -> dict[int, int]:
        """Each group id -> the position of its first row, in the order the groups first appear."""
        out: dict[int, int] = {}
        for i, g in enumerate(self.group.tolist()):
            out.setdefault(g, i)
        return out

    def regrouped(self, new: "RolloutBatch", drop: Tensor | None = None) -> "RolloutBatch":
        """This batch less its rows where `drop` (B,) is True, with `new`'s rows added (their group ids kept), each
        group's rows together again in group order (a group's own rows first): RLEP's replayed rows, hints' rows."""
        kept = self if drop is None else self.select(~drop)
        width = max(kept.prompt_ids.shape[1], new.prompt_ids.shape[1])
        whole = RolloutBatch.concat(kept.left_padded(width), new.left_padded(width))
        return whole.select(torch.sort(whole.group, stable=True).indices)

    def left_padded(self, width: int) -> "RolloutBatch":
        """The batch with its prompts left-padded to `width`, with the id it already pads with (any id works under
        a zero mask; this keeps the rows alike)."""
        pads = self.prompt_ids[self.prompt_mask == 0]
        pad_id = int(pads[0]) if pads.numel() else 0
        dp = width - self.prompt_ids.shape[1]
        return replace(self, prompt_ids=F.pad(self.prompt_ids, (dp, 0), value=pad_id),
                       prompt_mask=F.pad(self.prompt_mask, (dp, 0)))

    def to(self, device) -> "RolloutBatch":
        """Every tensor field on `device`."""
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    def input_ids(self) -> tuple[Tensor, Tensor]:
        """(B, P + T) tokens and attention mask of prompt + completion, for the training forward."""
        ids = torch.cat([self.prompt_ids, self.completion_ids], dim=1)
        attn = torch.cat([self.prompt_mask, self.completion_mask.long()], dim=1)
        return ids, attn
