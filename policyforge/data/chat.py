"""Chat prompts: rendering a conversation with the model's own chat template.

Instruct models are trained on their chat format, so a prompt must reach them as the
template renders it, ending where the assistant's turn starts. A data file's prompt column
may hold a conversation, a list of `{"role": ..., "content": ...}` messages (TRL's
"conversational" format); `data.chat_template` says when the template is applied:

- `auto` (the default): to conversations; a plain-text prompt goes to the model as it is;
- `on`: to every prompt, a plain-text one becoming the user's message (for an instruct model
  given plain-text data, built-in tasks included);
- `off`: never; a conversation is then refused.

`data.system_prompt` adds a system message first to every rendered conversation that has
none; `data.chat_template_kwargs` are options the template reads (Qwen3's `enable_thinking`).
The rendered text is the prompt from then on: what the model is given and what the reward
function receives as `prompt`. The messages it was rendered from (data.system_prompt's included;
a plain-text prompt under `on` as the user's one message) stay beside it in `Example.messages`:
the reward function also receives them as the keyword `prompt_messages` (rewards/score.py), and
a reward model with a chat template of its own renders them with the completion
(rewards/model.py). A row that was not rendered has none.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Sequence

from policyforge.data.tasks import DataError, Example

CHAT_MODES = ("auto", "on", "off")
PROMPT_MESSAGES = "prompt_messages"  # the keyword a rendered row's messages reach the reward function by


def is_conversation(prompt: Any) -> bool:
    return isinstance(prompt, list)


def check_conversation(prompt: list, where: str, column: str) -> None:
    """DataError naming the row unless `prompt` is a non-empty list of {"role": str, "content": str} messages."""
    if not prompt:
        raise DataError(f"dataset {where}: column {column!r} is an empty conversation; give at least one message")
    for i, m in enumerate(prompt):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise DataError(f"dataset {where}: message {i} of column {column!r} is {json.dumps(m)[:80]}; each "
                            'message must be {"role": "...", "content": "..."} with text values')


def typed_option(value):
    """A template option as the command line gives it ("false", "3") as the value it means; others as they are.
    Templates test options for truth (`{% if not enable_thinking %}`), where the text "false" would be true."""
    if not isinstance(value, str):
        return value
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


class ChatRenderer:
    """Renders prompts with the chat template of `model_path`'s tokenizer, loaded at the first use."""

    def __init__(self, model_path: str, mode: str = "auto", system_prompt: str | None = None,
                 template_kwargs: dict | None = None):
        if mode not in CHAT_MODES:
            raise DataError(f"data.chat_template={mode!r}; valid: {', '.join(CHAT_MODES)}")
        self.model_path, self.mode, self.system_prompt = model_path, mode, system_prompt
        # typed here too (cli.parse_config types the command line's): a library caller may pass "false"
        self.template_kwargs = {k: typed_option(v) for k, v in (template_kwargs or {}).items()}
        self._tokenizer = None

    def applies(self, prompt: str | list) -> bool:
        return self.mode == "on" or (self.mode == "auto" and is_conversation(prompt))

    def tokenizer(self):
        if self._tokenizer is None:
            from policyforge.models.load import load_tokenizer  # the one the model will be loaded with

            tok = load_tokenizer(self.model_path)
            unread = [k for k in self.template_kwargs if k not in str(getattr(tok, "chat_template", None) or "")]
            if unread and getattr(tok, "chat_template", None):  # a misspelt option would change nothing, silently
                raise DataError(f"data.chat_template_kwargs {unread[0]!r}: model.path's chat template never reads it")
            self._tokenizer = tok  # checked once, not at every prompt
        return self._tokenizer

    def __call__(self, prompt: str | list, where: str = "a prompt") -> str:
        return self.rendered(prompt, where)[0]

    def rendered(self, prompt: str | list, where: str = "a prompt") -> tuple[str, list[dict] | None]:
        """(the text the model is given, the messages the template rendered into it), the messages None
        when the prompt goes as it is; DataError naming `where` when it cannot be rendered."""
        if is_conversation(prompt) and self.mode == "off":
            raise DataError(f"{where}: the prompt is a conversation but data.chat_template is off; set it to auto "
                            "to render conversations with the model's chat template")
        if not self.applies(prompt):
            given = [name for name, on in (("system_prompt", self.system_prompt is not None),
                                           ("chat_template_kwargs", bool(self.template_kwargs))) if on]
            if given:  # they would be dropped without a word
                raise DataError(f"{where}: data.{given[0]} is set but this plain-text prompt is not rendered "
                                f"(data.chat_template={self.mode}); set data.chat_template to on to render it")
            return prompt, None
        # copies: the row's own messages stay as the file gave them
        messages = [dict(m) for m in prompt] if is_conversation(prompt) else [{"role": "user", "content": prompt}]
        if self.system_prompt is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        if messages[-1]["role"] not in ("user", "assistant"):
            raise DataError(f"{where}: the conversation ends with a {messages[-1]['role']!r} message; end it with "
                            "the user's turn (or an assistant message to continue)")
        tok = self.tokenizer()
        template = getattr(tok, "chat_template", None)
        if not template:
            fix = ("give plain-text prompts" if is_conversation(prompt) else
                   "set data.chat_template to auto to give plain-text prompts as they are")
            raise DataError(f"{where} is to be rendered (data.chat_template={self.mode}), but model.path "
                            f"{self.model_path!r} has a tokenizer without a chat template: {fix}, or use a model "
                            "that has one (chat_template.jinja or tokenizer_config.json)")
        # a final assistant message is a start the model continues (TRL's continue_final_message); else a new turn
        prefill = messages[-1]["role"] == "assistant"
        from jinja2 import TemplateError

        try:
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=not prefill,
                                           continue_final_message=prefill, **self.template_kwargs)
        except (TemplateError, ValueError) as e:  # "System role not supported", "roles must alternate"
            added = " (the system message is data.system_prompt's)" if self.system_prompt is not None else ""
            raise DataError(f"{where}: model.path's chat template refused the conversation{added}: "
                            f"{type(e).__name__}: {e}") from None
        return text, messages

    def example(self, ex: Example) -> Example:
        """`ex` with its prompt rendered and the messages kept in `messages`; DataError when a column is named
        prompt_messages, the keyword the reward function gets the messages by (the column would be lost)."""
        text, messages = self.rendered(ex.prompt, ex.where())
        if messages is not None and PROMPT_MESSAGES in ex.extra:
            raise DataError(f"dataset {ex.where()}: column {PROMPT_MESSAGES!r} has the name of the keyword the reward "
                            "function receives a rendered prompt's messages by: rename the column")
        return replace(ex, prompt=text, messages=messages)

    def examples(self, examples: Sequence[Example]) -> list[Example]:
        return [self.example(e) for e in examples]


class RenderedTask:
    """A built-in task whose prompts reach the model through the chat template (data.chat_template on)."""

    def __init__(self, task, render: ChatRenderer):
        self.task, self.render = task, render
        self.held_out = render.examples(getattr(task, "held_out", []))  # a mixture's part has its held-out in the whole
        self.reward, self.size = getattr(task, "reward", None), getattr(task, "size", None)

    def train_example(self, i: int) -> Example:
        return self.render.example(self.task.train_example(i))
