"""Runs on conversations: the model is given, and the reward receives, the chat-template rendering."""

import json

import pytest

from policyforge.data.tasks import DataError
from policyforge.train.config import ConfigError
from policyforge.train.loop import train
from policyforge.train.setup import build_data
from tests.data.test_chat import save_chat_model

SEEN = []


def recording_reward(prompt, completion, answer, **_):
    SEEN.append(prompt)
    return float(completion.strip() == answer)


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    return save_chat_model(tmp_path_factory.mktemp("chat-model"))


def _conversations(tmp_path, words=("abc", "dog", "frog", "cat", "owl", "bee")):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"rev:{w}="}], "answer": w[::-1]})
                            + "\n" for w in words))
    return str(data)


def test_a_run_on_conversations_renders_them_with_the_model_template(tiny_cfg, chat_model, tmp_path):
    tiny_cfg.model.path, tiny_cfg.data.path = chat_model, _conversations(tmp_path)
    tiny_cfg.data.reward, tiny_cfg.data.eval_size = "tests.e2e.test_chat_run:recording_reward", 2
    tiny_cfg.data.system_prompt = "be brief"
    SEEN.clear()
    run = train(tiny_cfg, log=lambda *_: None)
    assert len([json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]) == 2
    words = ("abc", "dog", "frog", "cat", "owl", "bee")
    assert set(SEEN) <= {f"<system>be brief<user>rev:{w}=<assistant>" for w in words} and len(SEEN) > 8
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["prompt"].startswith("<system>be brief<user>rev:") for s in samples)


def test_on_renders_a_built_in_task_and_held_out_stays_apart(chat_model):
    from policyforge.train.config import DataConfig

    cfg = DataConfig(task="reversal", task_size=4, eval_size=4, chat_template="on")
    source, held, _ = build_data(cfg, 0, model_path=chat_model)
    assert all(e.prompt.startswith("<user>rev:") and e.prompt.endswith("=<assistant>") for e in held)
    assert source.train_example(0).prompt.startswith("<user>rev:")


def test_conversations_need_a_template_and_off_refuses_them(tiny_cfg, tmp_path):
    tiny_cfg.data.path, tiny_cfg.data.eval_size = _conversations(tmp_path), 2
    tiny_cfg.data.reward = "tests.e2e.test_chat_run:recording_reward"
    with pytest.raises(DataError, match="has a tokenizer without a chat template"):  # the plain tiny model has no template
        train(tiny_cfg, log=lambda *_: None)
    tiny_cfg.data.chat_template = "off"
    with pytest.raises(DataError, match="line 1: the prompt is a conversation but data.chat_template is off"):
        train(tiny_cfg, log=lambda *_: None)
    tiny_cfg.data.chat_template = "sometimes"
    with pytest.raises(ConfigError, match="data.chat_template='sometimes'; valid: auto, on, off"):
        train(tiny_cfg, log=lambda *_: None)


def test_on_renders_a_mixture_and_its_curriculum_s_parts(chat_model):
    from policyforge.train.config import DataConfig

    cfg = DataConfig(task="reversal:4,sorting:4", eval_size=4, chat_template="on", curriculum="dump")
    source, held, _ = build_data(cfg, 0, model_path=chat_model)
    assert {e.extra["task"] for e in held} == {"reversal:4", "sorting:4"}
    assert all(e.prompt.startswith("<user>") and e.prompt.endswith("=<assistant>") for e in held)
    drawn = source.take(6, 0)  # DUMP's draws, through the chat template too
    assert all(e.prompt.startswith("<user>") and e.extra["task"] in ("reversal:4", "sorting:4") for e in drawn)
    assert source.train_example(0).prompt.startswith("<user>rev:")
