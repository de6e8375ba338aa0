"""The one-line notes a run prints when its settings or its records look like a mistake: each said once,
never an error (the run may be meant that way)."""

from __future__ import annotations

from pathlib import Path

from policyforge.rewards.score import reward_functions

FLAT_STEPS_WARNING = 10  # this many steps in a row without any learning signal gets one note
CUT_STEPS_WARNING = 3  # this many steps in a row with most completions cut at max_new_tokens gets one note
BIG_REFERENCE = 50_000_000  # parameters of a reference copy kept only for kl_ref that get a start-up note


def borrowed_checkpoint(model_path: str) -> list[str]:
    """A note when model.path is another run's checkpoint (RUN/checkpoints/step_N): that run deletes all but its
    newest train.keep_checkpoints as it goes on, and a LoRA checkpoint taken as a base must stay for this run's
    resumes, exports and evaluations."""
    path = Path(model_path)
    if path.parent.name != "checkpoints" or not (path.parent.parent / "config.yaml").exists():
        return []
    return [f"note: model.path is a checkpoint of the run {str(path.parent.parent)!r}, which keeps only its newest "
            "train.keep_checkpoints if it goes on; this run reads it again to resume, export or evaluate (a LoRA "
            f"run's adapter sits on it): to keep it, copy it out first (policyforge export {path} --out DIR)"]


def script_reward(reward: str | None) -> list[str]:
    """A reward given from Python that lives in the running script itself (`__main__:name`)."""
    if reward and "__main__:" in reward:
        return [f"note: data.reward {reward!r} is defined in the script itself, so only this script can resume the "
                "run (train(cfg, resume=...)); `policyforge train --resume` and `policyforge eval RUN` need it in a "
                "module they can import"]
    return []


def few_rows(source, prompts_per_step: int, rounds: int = 1) -> list[str]:
    """More prompts a step than a data file has training rows (a built-in task has no end); with dynamic sampling,
    more than its `rounds` of prompts_per_step may take."""
    n_rows = len(getattr(source, "rows", ()))
    if 0 < n_rows < prompts_per_step:
        return [f"note: rollout.prompts_per_step={prompts_per_step} is more than the {n_rows} training rows, so a "
                "step samples some prompts more than once (more rows, or a smaller prompts_per_step)"]
    if 0 < n_rows < prompts_per_step * rounds:
        return [f"note: dynamic sampling may take up to {rounds} rounds of {prompts_per_step} prompts a step "
                f"(rollout.max_sampling_rounds), more than the {n_rows} training rows: a step may then sample a "
                "prompt more than once"]
    return []


def repeated_prompts(source) -> list[str]:
    """Training rows of a data file whose prompt another row has too: each repeat is trained as often as its
    copies, and the replay pool, Knapsack RL's history and the hints look a prompt up by its text, so they merge."""
    rows = getattr(source, "rows", ())
    seen: dict[str, str] = {}
    repeats = []
    for ex in rows:
        key = ex.prompt if isinstance(ex.prompt, str) else repr(ex.prompt)  # a conversation: its messages
        if key in seen:
            repeats.append((ex, seen[key]))
        else:
            seen[key] = ex.where()
    if not repeats:
        return []
    ex, first = repeats[0]
    return [f"note: {len(repeats)} of the {len(rows)} training rows repeat an earlier row's prompt (first: "
            f"{ex.where()}, as {first}); each copy is trained on, and the replay pool, Knapsack RL's history and "
            "the hints look prompts up by their text: deduplicate the file unless that is meant"]


def reference_copy(ref, model, needed: bool) -> list[str]:
    """A large frozen reference copy kept only to log kl_ref (train.track_ref_kl); the tiny ones cost nothing."""
    size = sum(p.numel() for p in ref.parameters()) if ref is not None and ref is not model else 0
    if size >= BIG_REFERENCE and not needed:
        return [f"train.track_ref_kl: a frozen copy of the reference ({size / 1e6:.0f}M parameters) is kept only to "
                "log kl_ref; --train.no-track-ref-kl saves its memory and forward"]
    return []


def trl_overlong(reward, max_new_tokens: int, overlong_buffer: int) -> list[str]:
    """TRL's soft overlong punishment among the reward functions (an object with its max_completion_len and
    soft_punish_cache) sized for another budget than rollout.max_new_tokens, or beside algo.overlong_buffer."""
    out = []
    for fn in reward_functions(reward):
        budget, cache = getattr(fn, "max_completion_len", None), getattr(fn, "soft_punish_cache", None)
        if budget is None or cache is None:
            continue
        if budget != max_new_tokens:
            out.append(f"note: data.reward's soft overlong punishment (TRL's) has max_completion_len={budget}, but "
                       f"completions end at rollout.max_new_tokens={max_new_tokens}, so its {cache}-token buffer "
                       + ("is never reached" if max_new_tokens <= budget - cache else "is not where DAPO puts it")
                       + ": give it the same budget (or use --algo.overlong-buffer, sized from max_new_tokens)")
        if overlong_buffer:
            out.append("note: data.reward has TRL's soft overlong punishment and algo.overlong_buffer adds DAPO's "
                       "too: long completions are punished twice; keep one")
    return out


class Streaks:
    """Notes on runs of steps: every group with equal rewards (nothing learned), most completions cut; and once,
    a reward other than 0 / 1 given to an advantage estimator that reads it as success (`success_estimator`,
    the name of one whose registry entry says success_reward)."""

    def __init__(self, max_new_tokens: int, mask_truncated: bool = False, success_estimator: str | None = None):
        self.max_new_tokens, self.mask_truncated, self.flat, self.cut = max_new_tokens, mask_truncated, 0, 0
        self.success_estimator = success_estimator
        self.filled_said = False  # dynamic sampling's fill-up: said once

    def after(self, record: dict, scores=None) -> list[str]:
        """The notes due after a step with this `record` and (B,) rewards `scores`."""
        self.flat = self.flat + 1 if record["zero_var_group_frac"] == 1.0 else 0
        self.cut = self.cut + 1 if record["truncation_rate"] > 0.5 else 0
        out = []
        if self.success_estimator and scores is not None:
            odd = scores[(scores != 0) & (scores != 1)]
            if odd.numel():
                out.append(f"note: algo.advantage={self.success_estimator} reads the reward as success (1 solved, 0 "
                           f"not), but step {record['step']}'s rewards include {float(odd[0]):.4g}: its advantages "
                           "follow its paper only for 0/1 rewards (grpo, dr_grpo or rloo take any number)")
                self.success_estimator = None  # said once
        if record.get("groups_filled") and not self.filled_said:  # rollout.dynamic_sampling ran out of rounds
            self.filled_said = True
            filled, found = record["groups_filled"], record["groups_informative"]
            out.append(f"note: at step {record['step']}, {record['sampling_rounds']} sampling rounds (rollout."
                       f"max_sampling_rounds) found {found} group{'s' * (found != 1)} that pass{'es' * (found == 1)} "
                       f"dynamic sampling's test, so {filled} group{'s' * (filled != 1)} that scored alike "
                       f"fill{'s' * (filled == 1)} the batch: {'it adds' if filled == 1 else 'they add'} nothing "
                       "to the gradient. The prompts may be all too easy or all too hard for the policy now; "
                       "groups_filled in metrics.jsonl counts them at every step (this note is not repeated)")
        if self.flat == FLAT_STEPS_WARNING:
            out.append(f"note: in the last {self.flat} steps every group's completions got equal rewards, so every "
                       "advantage was 0 and nothing was learned: check the reward, or start from a model that "
                       "sometimes succeeds (policyforge sft)")
        if self.cut == CUT_STEPS_WARNING:
            out.append(f"note: in the last {self.cut} steps most completions were cut at rollout.max_new_tokens="
                       f"{self.max_new_tokens} before they ended, and the reward scored the cut text"
                       + (" (and algo.mask_truncated left them out of the loss)" if self.mask_truncated else "")
                       + ": raise --rollout.max-new-tokens (TRL's default is 512), unless the model has not learned "
                         "to end its answers (a fresh or random one, such as builtin:tiny: fine-tune it first, "
                         "policyforge sft)")
        return out


ROUND_TRIP_ROWS = 16  # the rows whose prompts the tokenizer round-trip note reads


def lossy_tokenizer(tokenizer, rows) -> list[str]:
    """A tokenizer that does not give a prompt's characters back (it lowercases, or drops characters it lacks, as a
    normaliser or a hand-made vocabulary may): what it changed is invisible to the model. Said once, of the first
    such row. Spaces are not compared (sentencepiece adds or drops them around special tokens and at the start),
    nor prompts a chat template rendered (their special tokens decode with spaces of the tokenizer's own)."""
    plain = [ex for ex in rows if ex.messages is None][:ROUND_TRIP_ROWS]
    for ex in plain:
        ids = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
        back = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if "".join(back.split()) != "".join(ex.prompt.split()):
            return [f"note: the tokenizer does not give back the prompt of {ex.where()}: {ex.prompt[:60]!r} reads as "
                    f"{back[:60]!r}; what it changed or dropped is invisible to the model (check the tokenizer's "
                    "normaliser and vocabulary)"]
    return []


def turn_end(model, tokenizer, rows, stop) -> list[str]:
    """A chat template that ends an assistant turn with a token the model does not stop on (a base model's
    tokenizer with an instruct template: Qwen2.5-base's EOS is <|endoftext|>, its template's turn end <|im_end|>):
    completions run past it into a next turn the reward then reads. Said once, when a prompt was rendered."""
    if not any(ex.messages is not None for ex in rows):
        return []
    from policyforge.train.evaluate import end_token_ids

    marker = "\x00answer\x00"
    try:
        turn = [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}]
        text = tokenizer.apply_chat_template(turn, tokenize=False)
    except Exception:  # a template that wants other roles or options: nothing to say
        return []
    after = text.split(marker, 1)[1] if marker in text else ""
    added = sorted(getattr(tokenizer, "added_tokens_encoder", {}) or {}, key=len, reverse=True)
    token = next((t for t in added if t and after.startswith(t)), None)
    if token is None or token in stop:
        return []
    token_id = tokenizer.convert_tokens_to_ids(token)
    ends = end_token_ids(model, tokenizer)
    if token_id in ends:
        return []
    names = ", ".join(repr(tokenizer.convert_ids_to_tokens(i)) for i in ends)
    return [f"note: the chat template ends an assistant turn with {token!r}, which this model does not stop on (its "
            f"end tokens: {names}): completions would run on past it into another turn, and the reward would read "
            f"that too; add --rollout.stop {token!r} (or its id {token_id} to generation_config.json's eos_token_id)"]
