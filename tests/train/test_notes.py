"""Start-up notes that read the tokenizer: one that does not give a prompt back is said once, naming the row."""

from __future__ import annotations

from policyforge.data.tasks import Example
from policyforge.models.tiny import char_tokenizer
from policyforge.train.notes import lossy_tokenizer


class Lowering:
    """A tokenizer whose normaliser lowercases and drops spaces (as a hand-made one may)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text.lower() if c != " "]}

    def decode(self, ids, **_):
        return "".join(chr(i) for i in ids)


def test_a_tokenizer_that_changes_a_prompt_is_named_once():
    rows = [Example("copy ab =", index=0), Example("Copy be =", index=1), Example("X", index=2)]
    (note,) = lossy_tokenizer(Lowering(), rows)  # dropped spaces alone are not counted: row 0 reads back alike
    assert note.startswith("note: the tokenizer does not give back the prompt of row 1: 'Copy be =' reads as "
                           "'copybe='")
    rendered = Example("<s>[INST] Copy [/INST]", index=3, messages=[{"role": "user", "content": "Copy"}])
    assert lossy_tokenizer(Lowering(), [rendered]) == []  # a chat template's rendering is not compared


def test_a_tokenizer_that_gives_the_prompts_back_says_nothing():
    rows = [Example(p, index=i) for i, p in enumerate(["rev:abc=", "12+3=", " sort: cba ="])]
    assert lossy_tokenizer(char_tokenizer(), rows) == []


def _chatml_tokenizer():
    """The built-in tokenizer with ChatML's turn end as a special token and a template that writes it."""
    tok = char_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    tok.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}<|im_end|>{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    return tok


def test_a_template_turn_end_the_model_does_not_stop_on_is_named_with_the_fix():
    from policyforge.models.tiny import tiny_model
    from policyforge.train.notes import turn_end

    tok = _chatml_tokenizer()
    model = tiny_model(tok)
    rendered = [Example("<user>rev:ab=<|im_end|><assistant>", index=0, messages=[{"role": "user", "content": "rev:ab="}])]
    (note,) = turn_end(model, tok, rendered, stop=[])
    assert note.startswith("note: the chat template ends an assistant turn with '<|im_end|>', which this model does not "
                           "stop on (its end tokens: '<eos>')") and "add --rollout.stop '<|im_end|>'" in note
    assert turn_end(model, tok, rendered, stop=["<|im_end|>"]) == []  # the fix
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    assert turn_end(model, tok, rendered, stop=[]) == []  # an instruct model's generation_config lists it
    assert turn_end(tiny_model(tok), tok, [Example("rev:ab=", index=0)], stop=[]) == []  # nothing rendered


def test_training_rows_that_repeat_a_prompt_get_one_note_naming_the_first_repeat():
    from types import SimpleNamespace

    from policyforge.train.notes import repeated_prompts

    rows = [Example(p, None, {}, i, f"d.jsonl, line {i + 1}") for i, p in enumerate(["a=", "b=", "a=", "c=", "b="])]
    [note] = repeated_prompts(SimpleNamespace(rows=rows))
    assert note.startswith("note: 2 of the 5 training rows repeat an earlier row's prompt (first: d.jsonl, line 3, "
                           "as d.jsonl, line 1)")
    assert repeated_prompts(SimpleNamespace(rows=rows[:2])) == [] and repeated_prompts(object()) == []
