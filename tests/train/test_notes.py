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
