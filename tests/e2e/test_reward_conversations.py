"""Runs on conversations, as a reward sees them: the reward function gets the rendered messages as
`prompt_messages`, and a reward model with a chat template scores the conversation plus the completion
in its own template, checked for length at start-up in that form; in one process and in two."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from policyforge.data.tasks import DataError
from policyforge.rewards.model import RewardModel
from policyforge.rewards.score import RewardError
from policyforge.train.loop import train
from policyforge.train.setup import build_data
from tests.data.test_chat import save_chat_model
from tests.rewards.test_reward_model import save_chat_reward_model

WORDS = ("abc", "dog", "frog", "cat", "owl", "bee")
SEEN = []  # (prompt, answer, prompt_messages) of every call of messages_reward in this process
RECORD = "POLICYFORGE_TEST_RECORD"  # a folder where each process of a data-parallel run writes what its reward saw


def messages_reward(prompt, completion, answer, prompt_messages):
    SEEN.append((prompt, answer, prompt_messages))
    if os.environ.get(RECORD):
        with open(Path(os.environ[RECORD]) / f"{os.getpid()}.jsonl", "a") as f:
            f.write(json.dumps([prompt, answer, prompt_messages]) + "\n")
    return float(completion.strip() == answer)


def older_reward(prompt, completion, answer):  # no prompt_messages and no **kwargs: never given the keyword
    return float(completion.strip() == answer)


KEYWORDS = []


def keywords_reward(prompt, completion, **kw):
    KEYWORDS.append(sorted(kw))
    return 0.0


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    return save_chat_model(tmp_path_factory.mktemp("chat-model"))


@pytest.fixture(scope="module")
def chat_rm(tmp_path_factory):
    return save_chat_reward_model(tmp_path_factory.mktemp("chat-rm"))


def _conversations(tmp_path, extra: dict | None = None) -> str:
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"rev:{w}="}], "answer": w[::-1],
                                        **(extra or {})}) + "\n" for w in WORDS))
    return str(data)


def _conversation_run(cfg, model: str, data: str, reward: str | None):
    """`cfg` set to train `model` on `data` (2 rows held out), rewarded by this file's function `reward`."""
    reward = reward and f"tests.e2e.test_reward_conversations:{reward}"
    cfg.model.path, cfg.data.path, cfg.data.eval_size, cfg.data.reward = model, data, 2, reward
    return cfg


def test_the_reward_function_gets_the_messages_the_template_rendered(tiny_cfg, chat_model, tmp_path):
    _conversation_run(tiny_cfg, chat_model, _conversations(tmp_path), "messages_reward")
    tiny_cfg.data.system_prompt = "be brief"
    SEEN.clear()
    train(tiny_cfg, log=lambda *_: None)
    assert len(SEEN) > 8  # start-up check, 2 steps x 8 rows, the final evaluation
    for prompt, answer, messages in SEEN:
        word = answer[::-1]
        assert messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"rev:{word}="}]
        assert prompt == f"<system>be brief<user>rev:{word}=<assistant>"


def test_a_reward_function_that_cannot_take_the_messages_trains_as_before(tiny_cfg, chat_model, tmp_path):
    _conversation_run(tiny_cfg, chat_model, _conversations(tmp_path), "older_reward")
    run = train(tiny_cfg, log=lambda *_: None)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_plain_text_rows_give_no_messages_unless_rendered(tiny_cfg, chat_model, tmp_path):
    data = tmp_path / "plain.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"rev:{w}=", "answer": w[::-1]}) + "\n" for w in WORDS))
    _conversation_run(tiny_cfg, chat_model, str(data), "keywords_reward")
    KEYWORDS.clear()
    train(tiny_cfg, log=lambda *_: None)  # auto: plain text goes as it is
    assert KEYWORDS and all(k == ["answer"] for k in KEYWORDS)
    tiny_cfg.data.chat_template, tiny_cfg.train.run_name = "on", "on"  # now each prompt is the user's message
    KEYWORDS.clear()
    train(tiny_cfg, log=lambda *_: None)
    assert KEYWORDS and all(k == ["answer", "prompt_messages"] for k in KEYWORDS)


def test_a_column_named_prompt_messages_is_refused_before_the_run(tiny_cfg, chat_model, tmp_path):
    data = _conversations(tmp_path, {"prompt_messages": "mine"})
    _conversation_run(tiny_cfg, chat_model, data, "keywords_reward")
    with pytest.raises(DataError, match="chat.jsonl, line 1: column 'prompt_messages' has the name of the keyword"):
        train(tiny_cfg, log=lambda *_: None)
    assert not (tmp_path / "runs").exists()


def test_a_reward_model_scores_a_conversation_in_its_own_template(tiny_cfg, chat_model, chat_rm, tmp_path):
    _conversation_run(tiny_cfg, chat_model, _conversations(tmp_path), None)
    tiny_cfg.data.reward_model = chat_rm
    _, held, reward = build_data(tiny_cfg.data, 0, model_path=chat_model)
    assert [e.prompt for e in held] == ["<user>rev:abc=<assistant>", "<user>rev:dog=<assistant>"]  # the policy's
    got = reward.score_parts(held, ["cba", "dog"]).scores.tolist()
    expected = ["<bos>(user)rev:abc=;(assistant)cba;", "<bos>(user)rev:dog=;(assistant)dog;"]  # the reward model's
    assert got == pytest.approx(RewardModel(chat_rm).scores(expected, ["", ""]).tolist(), abs=1e-5)
    rows = [json.loads(x) for x in (train(tiny_cfg, log=lambda *_: None) / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["reward_std"] > 0 for r in rows)


def test_the_reward_model_s_length_check_measures_its_own_rendering(tiny_cfg, chat_model, tmp_path):
    # "frog"'s row (line 3), the longest: the policy's "<user>rev:frog=<assistant>" is 27 tokens in the reward
    # model's tokenizer (BOS added), which with 4 new tokens fits 32; its own "<bos>(user)rev:frog=;(assistant);"
    # is 29, which does not: scoring would have failed mid-run
    _conversation_run(tiny_cfg, chat_model, _conversations(tmp_path), None)
    tiny_cfg.data.reward_model = save_chat_reward_model(tmp_path / "short-rm", positions=32)
    with pytest.raises(RewardError, match="takes at most 32 tokens, but .*chat.jsonl, line 3's prompt is 29 in this "
                                          "model's chat template and a completion may add rollout.max_new_tokens=4"):
        train(tiny_cfg, log=lambda *_: None)
    assert not (tmp_path / "runs").exists()
    tiny_cfg.rollout.max_new_tokens = 3
    train(tiny_cfg, log=lambda *_: None)  # 29 + 3 fits


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_each_reward_the_messages_and_gather_them(chat_model, chat_rm, tmp_path):
    # each process scores its own rows, then the rows (Examples with their messages) are gathered between processes
    data, record = _conversations(tmp_path), tmp_path / "record"
    record.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "policyforge.cli", "train", "--model.path", chat_model, "--data.path", data, "--data.eval-size", "2",
           "--data.reward", "tests.e2e.test_reward_conversations:messages_reward", "--data.reward-model", chat_rm,
           "--data.system-prompt", "be brief", "--rollout.prompts-per-step", "2", "--rollout.group-size", "4",
           "--rollout.max-new-tokens", "4", "--train.steps", "2", "--train.eval-every", "0", "--train.pass-k", "2",
           "--train.out-dir", str(tmp_path / "runs"), "--train.run-name", "dp", "--train.no-progress"]
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", RECORD: str(record)})
    assert done.returncode == 0, done.stderr[-3000:]
    seen = {f.name: [json.loads(x) for x in f.read_text().splitlines()] for f in record.iterdir()}
    assert len(seen) == 2 and all(len(calls) >= 4 for calls in seen.values())  # both processes scored rows
    for prompt, answer, messages in (call for calls in seen.values() for call in calls):
        word = answer[::-1]
        assert messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"rev:{word}="}]
        assert prompt == f"<system>be brief<user>rev:{word}=<assistant>"
    rows = [json.loads(x) for x in (tmp_path / "runs" / "dp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all("reward/reward_model" in r for r in rows)
