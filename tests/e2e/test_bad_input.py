"""Each mistake a user can make fails at once, with one message naming the culprit."""

import json
import textwrap

import pytest

from policyforge.algos.registry import UnknownAlgorithm
from policyforge.data.user import DataError
from policyforge.models.load import ModelError
from policyforge.rewards.score import RewardError
from policyforge.train.config import ConfigError, load_yaml
from policyforge.train.loop import train


def _no_run_dir(cfg):
    from pathlib import Path

    return not (Path(cfg.train.out_dir) / cfg.train.run_name).exists()


def test_unknown_config_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("rollout:\n  group_sise: 4\n")
    with pytest.raises(ConfigError, match="rollout.group_sise.*group_size"):
        load_yaml(p)


def test_unknown_algorithm_lists_valid_names(tiny_cfg):
    tiny_cfg.algo.loss = "ppo_clipp"
    with pytest.raises(UnknownAlgorithm, match="'ppo_clipp'.*ppo_clip.*reinforce"):
        train(tiny_cfg)
    assert _no_run_dir(tiny_cfg)


def test_unknown_hyper_parameter(tiny_cfg):
    tiny_cfg.algo.loss_kwargs = {"eps_hi": 0.3}
    with pytest.raises(UnknownAlgorithm, match="eps_hi.*eps_high"):
        train(tiny_cfg)


def test_group_size_below_two(tiny_cfg):
    tiny_cfg.rollout.group_size = 1
    with pytest.raises(ConfigError, match="group_size=1"):
        train(tiny_cfg)
    assert _no_run_dir(tiny_cfg)


def test_model_path_missing(tiny_cfg, tmp_path):
    tiny_cfg.model.path = str(tmp_path / "nope")
    with pytest.raises(ModelError, match="nope.*does not exist"):
        train(tiny_cfg)
    assert _no_run_dir(tiny_cfg)


def test_a_missing_checkpoint_names_the_ones_the_run_has(tiny_cfg, tmp_path):
    run = train(tiny_cfg, log=lambda *_: None)
    tiny_cfg.model.path, tiny_cfg.train.run_name = str(run / "checkpoints" / "step_000001"), "again"
    with pytest.raises(ModelError, match=r"step_000001' does not exist .*checkpoints holds step_000002"):
        train(tiny_cfg, log=lambda *_: None)


def test_a_missing_reference_model_is_named_by_its_option(tiny_cfg, tmp_path):
    tiny_cfg.model.ref_path = str(tmp_path / "nope")
    with pytest.raises(ModelError, match="^model.ref_path: model path .*nope.*does not exist"):
        train(tiny_cfg)
    assert _no_run_dir(tiny_cfg)


def test_a_missing_relative_model_path_says_where_it_was_read_from(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_cfg.model.path = "checkpoints/demo-sft"  # configs/demo.yaml's, from outside the repository
    with pytest.raises(ModelError, match=f"'checkpoints/demo-sft' does not exist .*read from the current directory "
                                         f"{tmp_path}: a relative path in a --config file is too"):
        train(tiny_cfg)


def test_a_hub_id_is_pointed_to_its_cached_copy_or_told_how_to_fetch_it(tiny_cfg, tmp_path, monkeypatch):
    """Runs never download: a Hub id names the local Hugging Face cache's copy when there is one."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # HF_HUB_CACHE, as read when huggingface_hub loaded
    monkeypatch.chdir(tmp_path)
    tiny_cfg.model.path = "someorg/some-model"
    with pytest.raises(ModelError, match=r"if 'someorg/some-model' is a Hugging Face Hub id: .*hf download "
                                         r"someorg/some-model --local-dir DIR"):
        train(tiny_cfg)
    snapshot = cache / "models--someorg--some-model" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (cache / "models--someorg--some-model" / "refs").mkdir()
    (cache / "models--someorg--some-model" / "refs" / "main").write_text("a" * 40)
    with pytest.raises(ModelError, match=f"your Hugging Face cache has it: --model.path {snapshot}$"):
        train(tiny_cfg)
    tiny_cfg.model.path, tiny_cfg.data.path, tiny_cfg.data.reward = "builtin:tiny", "trl-lib/tldr", "x:y"
    with pytest.raises(DataError, match=r"Hub dataset id: .*load_dataset\('trl-lib/tldr', split='train'\)"):
        train(tiny_cfg)
    (tmp_path / "someorg").mkdir()  # a local folder of that name: a missing local path, no Hub talk
    tiny_cfg.model.path, tiny_cfg.data.path = "someorg/some-model", None
    with pytest.raises(ModelError) as e:
        train(tiny_cfg)
    assert "does not exist" in str(e.value) and "Hub" not in str(e.value)


def _dataset(tmp_path, rows):
    p = tmp_path / "data.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def _reward_module(tmp_path, monkeypatch, body):
    (tmp_path / "user_rewards.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys

    sys.modules.pop("user_rewards", None)


def test_missing_dataset_column(tiny_cfg, tmp_path):
    tiny_cfg.data.path = str(_dataset(tmp_path, [{"prompt": "a"}, {"question": "b"}]))
    tiny_cfg.data.reward = "user_rewards:score"
    with pytest.raises(DataError, match="data.jsonl, line 2: missing column 'prompt'"):
        train(tiny_cfg)


def test_reward_that_raises_names_the_row(tiny_cfg, tmp_path, monkeypatch):
    _reward_module(tmp_path, monkeypatch, """
        def score(prompt, completion, target):
            return 1.0 / 0
    """)
    tiny_cfg.data.path = str(_dataset(tmp_path, [{"prompt": "rev:ab=", "target": "ba"}]))
    tiny_cfg.data.reward = "user_rewards:score"
    with pytest.raises(RewardError, match="raised on .*data.jsonl, line 1 .*ZeroDivisionError"):
        train(tiny_cfg)
    assert _no_run_dir(tiny_cfg)


def test_reward_that_returns_nan_names_the_row(tiny_cfg, tmp_path, monkeypatch):
    _reward_module(tmp_path, monkeypatch, """
        def score(prompt, completion, target):
            return float("nan")
    """)
    tiny_cfg.data.path = str(_dataset(tmp_path, [{"prompt": "rev:ab=", "target": "ba"}]))
    tiny_cfg.data.reward = "user_rewards:score"
    with pytest.raises(RewardError, match="returned nan for .*data.jsonl, line 1 "):
        train(tiny_cfg)


def test_user_data_and_reward_run_end_to_end(tiny_cfg, tmp_path, monkeypatch):
    _reward_module(tmp_path, monkeypatch, """
        def score(prompt, completion, target):
            return float(completion.strip() == target)
    """)
    rows = [{"prompt": f"rev:{w}=", "target": w[::-1]} for w in ("abc", "dog", "cat", "pig")]
    tiny_cfg.data.path = str(_dataset(tmp_path, rows))
    tiny_cfg.data.reward = "user_rewards:score"
    run = train(tiny_cfg, log=lambda *_: None)
    assert json.loads((run / "summary.json").read_text())["steps"] == 2


def test_non_finite_numbers_set_in_python_or_on_the_command_line_fail_at_start(tiny_cfg):
    from policyforge.cli import main

    tiny_cfg.rollout.temperature = float("nan")
    with pytest.raises(ConfigError, match=r"rollout.temperature=nan: expected a finite number"):
        train(tiny_cfg, log=lambda *_: None)
    assert _no_run_dir(tiny_cfg)
    with pytest.raises(SystemExit, match=r"algo.drift.k3=inf: expected a finite number"):
        main(["train", "--model.path", tiny_cfg.model.path, "--algo.drift", "k3", "inf",
              "--train.out-dir", tiny_cfg.train.out_dir])


@pytest.mark.parametrize("column", ["completion", "prompt"])
def test_a_column_named_like_a_reward_argument_is_refused_by_name(tmp_path, column):
    from policyforge.data.user import load_rows

    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"question": "rev:ab=", column: "ba"}) + "\n")
    with pytest.raises(DataError, match=rf"column '{column}' has the name of the reward function's own argument"):
        load_rows(str(p), prompt_column="question")


def test_unreadable_data_and_config_files_name_the_file(tmp_path):
    from policyforge.data.user import load_rows

    (tmp_path / "latin1.jsonl").write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1.jsonl, line 1: not UTF-8 text \(byte 0xe9 at column 16"):
        load_rows(str(tmp_path / "latin1.jsonl"))
    # far into a big file: the line and column in the file, not the decoder's place in the chunk it was reading
    good = b'{"prompt": "rev:abc=", "target": "cba"}\n' * 900
    (tmp_path / "big.jsonl").write_bytes(good + b'{"prompt": "rev:\xff="}\n')
    with pytest.raises(DataError, match=r"big.jsonl, line 901: not UTF-8 text \(byte 0xff at column 17"):
        load_rows(str(tmp_path / "big.jsonl"))
    (tmp_path / "latin1.csv").write_bytes(b'prompt,target\nrev:ab\xe9=,x\n')
    with pytest.raises(DataError, match=r"latin1.csv, line 2: not UTF-8 text \(byte 0xe9 at column 7"):
        load_rows(str(tmp_path / "latin1.csv"))
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(DataError, match=r"dir.jsonl: cannot be read"):
        load_rows(str(tmp_path / "dir.jsonl"))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"bad.parquet: not a readable Parquet file"):
        load_rows(str(tmp_path / "bad.parquet"))
    (tmp_path / "c.yaml").write_bytes(b"rollout:\n  stop: [\xff]\n")
    with pytest.raises(ConfigError, match=r"c.yaml' is not UTF-8 text"):
        load_yaml(tmp_path / "c.yaml")


def test_an_output_path_under_a_file_fails_before_the_model_loads(tiny_cfg, tmp_path):
    from policyforge.train.sft import sft

    (tmp_path / "afile").write_text("x")
    tiny_cfg.train.out_dir = str(tmp_path / "afile" / "runs")
    with pytest.raises(ConfigError, match=r"train.out_dir: '.*afile' is a file"):
        train(tiny_cfg, log=lambda *_: None)
    tiny_cfg.sft.out = str(tmp_path / "afile" / "model")
    with pytest.raises(ConfigError, match=r"sft.out: '.*afile' is a file"):
        sft(tiny_cfg, log=lambda *_: None)


def test_python_values_that_stand_for_plain_ones_pass_validation(tiny_cfg, tmp_path):
    import numpy as np
    import torch

    from policyforge.train.config import to_yaml
    from policyforge.train.validate import validate

    tiny_cfg.train.out_dir = tmp_path / "runs"  # a Path
    tiny_cfg.model.device = torch.device("cpu")
    tiny_cfg.optim.lr, tiny_cfg.train.steps = np.float32(1e-3), np.int64(2)
    validate(tiny_cfg)
    assert f"out_dir: {tmp_path / 'runs'}" in to_yaml(tiny_cfg)


def test_a_row_missing_a_column_the_first_row_has_fails_at_load(tiny_cfg, tmp_path):
    """The reward is tried on the first row only; a later row without its column must not fail mid-run."""
    rows = [{"prompt": f"p{i}", "answer": "x"} for i in range(40)] + [{"prompt": "p40"}]
    tiny_cfg.data.path = str(_dataset(tmp_path, rows))
    tiny_cfg.data.reward = "user_rewards:score"
    with pytest.raises(DataError, match="data.jsonl, line 41: its columns differ from the first row's \\(missing 'answer'\\)"):
        train(tiny_cfg)


def test_model_paths_that_cannot_be_a_model_name_the_reason(tiny_cfg, tmp_path, small_model_dir):
    import shutil

    ckpts = tmp_path / "run" / "checkpoints"
    (ckpts / "step_000002").mkdir(parents=True)
    (ckpts / "latest").write_text("step_000002\n")
    tiny_cfg.model.path = str(ckpts / "latest")
    with pytest.raises(ModelError, match="is a file, not a model directory .*use .*step_000002"):
        train(tiny_cfg)
    no_tok = tmp_path / "no-tokenizer"
    shutil.copytree(small_model_dir, no_tok)
    for f in no_tok.glob("tokenizer*"):
        f.unlink()
    tiny_cfg.model.path = str(no_tok)
    with pytest.raises(ModelError, match="has no tokenizer"):
        train(tiny_cfg)
    no_weights = tmp_path / "no-weights"
    shutil.copytree(small_model_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    tiny_cfg.model.path = str(no_weights)
    with pytest.raises(ModelError, match="has no weights"):
        train(tiny_cfg)


def test_prompt_characters_the_tokenizer_reads_as_padding_are_refused(tiny_cfg, tmp_path):
    rows = [{"prompt": "rev:abc=", "answer": "cba"}, {"prompt": "REV:ABC=", "answer": "CBA"}]
    tiny_cfg.data.path = str(_dataset(tmp_path, rows))
    tiny_cfg.data.reward = "policyforge.data.tasks:exact_match"
    with pytest.raises(DataError, match="data.jsonl, line 2 \\(training\\): the prompt 'REV:ABC=' has characters the tokenizer does not know "
                                        "\\('ABCERV'\\)"):
        train(tiny_cfg)


def test_models_that_would_load_wrong_are_refused_with_one_line(tiny_cfg, tmp_path, small_model_dir):
    """A seq2seq model, a truncated weights file, a checkpoint missing a weight and a tokenizer larger than the
    embedding: each a ModelError naming the path and the cause, before any data is read."""
    import shutil

    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    def copy(name):
        shutil.copytree(small_model_dir, tmp_path / name)
        tiny_cfg.model.path = str(tmp_path / name)
        return tmp_path / name

    config = json.loads((copy("seq2seq") / "config.json").read_text())
    (tmp_path / "seq2seq" / "config.json").write_text(json.dumps({**config, "is_encoder_decoder": True}))
    with pytest.raises(ModelError, match=r"is an encoder-decoder \(seq2seq\) model .*trains decoder-only causal LMs"):
        train(tiny_cfg)

    weights = copy("truncated") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError, match=r"'.*truncated' cannot be loaded: SafetensorError"):
        train(tiny_cfg)

    weights = copy("no-head") / "model.safetensors"
    state = load_file(weights)
    config = json.loads((tmp_path / "no-head" / "config.json").read_text())
    (tmp_path / "no-head" / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    save_file({k: v for k, v in state.items() if not k.startswith("lm_head")}, weights, metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"its checkpoint lacks 1 weight\(s\) the model has \(lm_head.weight\), which "
                                         "transformers would start at random"):
        train(tiny_cfg)

    bigger = copy("bigger-vocab")
    tok = AutoTokenizer.from_pretrained(bigger)
    tok.add_special_tokens({"additional_special_tokens": ["<tool>"]})
    tok.save_pretrained(bigger)
    with pytest.raises(ModelError, match=r"its embedding has \d+ rows, fewer than its tokenizer's \d+ tokens .*"
                                         r"resize_token_embeddings"):
        train(tiny_cfg)
    assert not (tmp_path / "runs").exists()
