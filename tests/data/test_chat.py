"""Chat prompts: conversations rendered with the model's template, when it applies, and what is refused."""

import json

import pytest

from policyforge.data.chat import ChatRenderer, RenderedTask
from policyforge.data.tasks import BuiltinTask, DataError
from policyforge.data.user import load_rows
from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model

# written with characters the built-in tokenizer knows, so a rendered prompt stays one token per character
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


def save_chat_model(path, template: str = TEMPLATE) -> str:
    tok = char_tokenizer()
    tok.chat_template = template
    tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128)).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    return save_chat_model(tmp_path_factory.mktemp("chat-model"))


CONVERSATION = [{"role": "user", "content": "rev:abc="}]


def test_a_conversation_is_rendered_up_to_the_assistant_turn(chat_model):
    render = ChatRenderer(chat_model)
    assert render(CONVERSATION) == "<user>rev:abc=<assistant>"
    assert render("rev:abc=") == "rev:abc="  # auto: plain text goes as it is
    with_system = ChatRenderer(chat_model, system_prompt="be brief")
    assert with_system(CONVERSATION) == "<system>be brief<user>rev:abc=<assistant>"
    own = [{"role": "system", "content": "mine"}] + CONVERSATION  # a conversation's own system message stays
    assert with_system(own) == "<system>mine<user>rev:abc=<assistant>"


def test_on_renders_plain_text_too_and_off_refuses_conversations(chat_model):
    assert ChatRenderer(chat_model, "on")("rev:abc=") == "<user>rev:abc=<assistant>"
    with pytest.raises(DataError, match="row 3: the prompt is a conversation but data.chat_template is off"):
        ChatRenderer(chat_model, "off")(CONVERSATION, "row 3")
    with pytest.raises(DataError, match="data.chat_template='maybe'; valid: auto, on, off"):
        ChatRenderer(chat_model, "maybe")


def test_a_tokenizer_without_a_template_is_named(small_model_dir_plain):
    with pytest.raises(DataError, match="has a tokenizer without a chat template: give plain-text prompts"):
        ChatRenderer(small_model_dir_plain)(CONVERSATION)
    with pytest.raises(DataError, match="'builtin:tiny' has a tokenizer without a chat template: set data.chat_template to auto"):
        ChatRenderer("builtin:tiny", "on")("rev:abc=")


@pytest.fixture(scope="module")
def small_model_dir_plain(tmp_path_factory):
    path = tmp_path_factory.mktemp("plain")
    tok = char_tokenizer()
    tiny_model(tok, TinySpec(hidden=32, layers=1, heads=2, intermediate=64)).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_a_data_file_may_hold_conversations_and_bad_messages_are_named(tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"prompt": CONVERSATION, "answer": "cba"}) + "\n")
    (row,) = load_rows(str(data))
    assert row.prompt == CONVERSATION and row.extra == {"answer": "cba"}
    data.write_text(json.dumps({"prompt": [{"role": "user", "text": "hi"}]}) + "\n")
    with pytest.raises(DataError, match='line 1: message 0 of column \'prompt\' is {"role": "user", "text": "hi"}'):
        load_rows(str(data))
    data.write_text(json.dumps({"prompt": []}) + "\n")
    with pytest.raises(DataError, match="line 1: column 'prompt' is an empty conversation"):
        load_rows(str(data))


def test_a_built_in_task_through_the_template_keeps_its_answers(chat_model):
    task = BuiltinTask("reversal", 4, eval_size=4)
    rendered = RenderedTask(task, ChatRenderer(chat_model, "on"))
    ex, raw = rendered.train_example(5), task.train_example(5)
    assert ex.prompt == f"<user>{raw.prompt}<assistant>" and (ex.solution, ex.extra) == (raw.solution, raw.extra)
    assert [e.prompt for e in rendered.held_out] == [f"<user>{e.prompt}<assistant>" for e in task.held_out]


def test_a_final_assistant_message_is_continued_and_other_final_roles_refused(chat_model):
    render = ChatRenderer(chat_model)
    assert render(CONVERSATION + [{"role": "assistant", "content": "c"}]) == "<user>rev:abc=<assistant>c"
    with pytest.raises(DataError, match="row 4: the conversation ends with a 'system' message"):
        render([{"role": "system", "content": "x"}], "row 4")


def test_a_template_that_refuses_a_conversation_is_named_with_the_row(tmp_path):
    save_chat_model(tmp_path, "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no "
                              "system role') }}{% endif %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>")
    render = ChatRenderer(str(tmp_path), system_prompt="be brief")
    with pytest.raises(DataError, match="line 2: model.path's chat template refused the conversation \\(the "
                                        "system message is data.system_prompt's\\): TemplateError: no system role"):
        render(CONVERSATION, "data.jsonl, line 2")


def test_a_system_prompt_never_goes_missing_silently(chat_model):
    with pytest.raises(DataError, match="data.system_prompt is set but this plain-text prompt is not rendered"):
        ChatRenderer(chat_model, "auto", system_prompt="be brief")("rev:abc=", "row 0")
    assert ChatRenderer(chat_model, "on", system_prompt="be brief")("rev:abc=") == "<system>be brief<user>rev:abc=<assistant>"


def test_template_options_reach_the_template_from_the_command_line(tmp_path):
    from policyforge.cli import parse_config

    save_chat_model(tmp_path, "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
                              "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}")
    cfg = parse_config("policyforge train", ["--data.chat-template-kwargs", "enable_thinking", "false"], "")
    assert cfg.data.chat_template_kwargs == {"enable_thinking": False}  # config.yaml records the real value
    render = ChatRenderer(str(tmp_path), template_kwargs={"enable_thinking": "false"})  # text from elsewhere
    assert render.template_kwargs == {"enable_thinking": False}  # the text "false" would be true in a template
    assert render(CONVERSATION) == "<user>rev:abc=<assistant><think></think>"
    assert ChatRenderer(str(tmp_path))(CONVERSATION) == "<user>rev:abc=<assistant>"


def test_template_options_are_never_dropped_or_misspelt_silently(chat_model):
    with pytest.raises(DataError, match="data.chat_template_kwargs is set but this plain-text prompt is not rendered"):
        ChatRenderer(chat_model, "auto", template_kwargs={"enable_thinking": False})("rev:abc=", "row 0")
    with pytest.raises(DataError, match="data.chat_template_kwargs 'enable_thinkin': model.path's chat template "
                                        "never reads it"):
        ChatRenderer(chat_model, template_kwargs={"enable_thinkin": False})(CONVERSATION)


def test_rendering_keeps_the_messages_it_rendered_beside_the_text(chat_model):
    import pickle

    from policyforge.data.tasks import Example

    conversation = [{"role": "user", "content": "rev:abc="}]
    row = Example(conversation, None, {"answer": "cba"}, 0, "chat.jsonl, line 1")
    ex = ChatRenderer(chat_model, system_prompt="be brief").example(row)
    assert ex.prompt == "<system>be brief<user>rev:abc=<assistant>"
    assert ex.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "rev:abc="}]
    assert conversation == [{"role": "user", "content": "rev:abc="}] and ex.messages[1] is not conversation[0]
    assert pickle.loads(pickle.dumps(ex)) == ex  # data-parallel runs send Examples between processes
    plain = ChatRenderer(chat_model).example(Example("rev:abc=", None, {}, 1))
    assert (plain.prompt, plain.messages) == ("rev:abc=", None)  # not rendered: no messages
    on = ChatRenderer(chat_model, "on").example(Example("rev:abc=", None, {}, 1))
    assert on.messages == [{"role": "user", "content": "rev:abc="}]  # rendered as the user's message
    prefill = ChatRenderer(chat_model).example(Example(conversation + [{"role": "assistant", "content": "c"}]))
    assert prefill.prompt == "<user>rev:abc=<assistant>c" and prefill.messages[-1] == {"role": "assistant",
                                                                                      "content": "c"}


def test_a_built_in_task_through_the_template_keeps_its_messages(chat_model):
    rendered = RenderedTask(BuiltinTask("reversal", 4, eval_size=4), ChatRenderer(chat_model, "on"))
    for ex in [rendered.train_example(3)] + rendered.held_out:
        assert ex.messages == [{"role": "user", "content": ex.prompt[len("<user>"):-len("<assistant>")]}]


def test_a_column_named_prompt_messages_is_refused_where_the_prompt_is_rendered(chat_model, tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"prompt": CONVERSATION, "prompt_messages": "mine"}) + "\n")
    with pytest.raises(DataError, match="chat.jsonl, line 1: column 'prompt_messages' has the name of the keyword "
                                        "the reward function receives a rendered prompt's messages by"):
        ChatRenderer(chat_model).examples(load_rows(str(data)))
    data.write_text(json.dumps({"prompt": "rev:abc=", "prompt_messages": "mine"}) + "\n")
    (row,) = ChatRenderer(chat_model).examples(load_rows(str(data)))  # plain text, not rendered: no clash
    assert row.extra == {"prompt_messages": "mine"} and row.messages is None
    with pytest.raises(DataError, match="column 'prompt_messages'"):
        ChatRenderer(chat_model, "on").examples(load_rows(str(data)))
