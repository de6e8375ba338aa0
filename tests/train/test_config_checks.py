"""Config values are checked before any work: YAML types, lower bounds, sampling settings, device and dtype."""

import dataclasses

import pytest

from policyforge.cli import main, parse_config
from policyforge.models.load import ModelError, load_model, pick_device
from policyforge.train.config import Config, ConfigError, load_yaml, to_yaml
from policyforge.train.validate import validate


def _yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


# 1. YAML values are checked (or coerced) against each field's type.

def test_yaml_float_without_a_dot_is_a_float(tmp_path):
    # PyYAML reads `1e-3` (no dot) as the string "1e-3"; AdamW would fail on it after the model is loaded
    cfg = load_yaml(_yaml(tmp_path, "optim:\n  lr: 1e-3\n  weight_decay: 0\nrollout:\n  temperature: 1\n"))
    assert cfg.optim.lr == 1e-3 and type(cfg.optim.lr) is float
    assert type(cfg.optim.weight_decay) is float and type(cfg.rollout.temperature) is float


def test_yaml_quoted_int_names_key_value_and_type(tmp_path):
    with pytest.raises(ConfigError, match=r"rollout\.group_size='8' \(str\): expected int"):
        load_yaml(_yaml(tmp_path, "rollout:\n  group_size: \"8\"\n"))


def test_yaml_word_for_a_float_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"optim\.lr='fast' \(str\): expected float"):
        load_yaml(_yaml(tmp_path, "optim:\n  lr: fast\n"))


def test_yaml_empty_dict_and_list_keys_mean_empty(tmp_path):
    cfg = load_yaml(_yaml(tmp_path, "algo:\n  drift:\n  loss_kwargs:\nrollout:\n  stop:\n"))
    assert cfg.algo.drift == {} and cfg.algo.loss_kwargs == {} and cfg.rollout.stop == []


def test_yaml_nested_values_are_checked(tmp_path):
    cfg = load_yaml(_yaml(tmp_path, "algo:\n  drift: {k3: 4e-2}\n  loss_kwargs: {eps_high: 2e-1, level: token}\n"
                                    "optim:\n  betas: [0.9, 0.95]\n"))
    assert cfg.algo.drift == {"k3": 0.04} and cfg.algo.loss_kwargs == {"eps_high": 0.2, "level": "token"}
    assert cfg.optim.betas == (0.9, 0.95)
    with pytest.raises(ConfigError, match=r"algo\.drift\.k3=None"):
        load_yaml(_yaml(tmp_path, "algo:\n  drift: {k3: }\n"))
    with pytest.raises(ConfigError, match=r"optim\.betas=\[0\.9\].*2 values"):
        load_yaml(_yaml(tmp_path, "optim:\n  betas: [0.9]\n"))
    with pytest.raises(ConfigError, match=r"rollout\.stop\[1\]=5 \(int\): expected str"):
        load_yaml(_yaml(tmp_path, "rollout:\n  stop: [x, 5]\n"))
    with pytest.raises(ConfigError, match=r"train\.progress=1 \(int\): expected bool"):
        load_yaml(_yaml(tmp_path, "train:\n  progress: 1\n"))


def test_yaml_malformed_or_odd_keys_fail_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+\): expected"):
        load_yaml(_yaml(tmp_path, "optim:\n  lr: [1\n"))
    with pytest.raises(ConfigError, match="unknown config key '1'"):
        load_yaml(_yaml(tmp_path, "1: 2\n"))
    with pytest.raises(ConfigError, match="'rollout' must be a mapping"):
        load_yaml(_yaml(tmp_path, "rollout: 5\n"))


def test_saved_config_loads_back_equal(tmp_path):
    # `--resume` reads the run's config.yaml back through the same checks
    cfg = Config()
    cfg.algo.drift, cfg.algo.loss_kwargs, cfg.optim.lr = {"k3": 0.04}, {"eps_high": 0.28}, 1e-5
    assert load_yaml(_yaml(tmp_path, to_yaml(cfg))) == cfg


def test_flags_override_a_checked_yaml(tmp_path):
    path = _yaml(tmp_path, "optim:\n  lr: 1e-3\nrollout:\n  group_size: 4\n")
    cfg = parse_config("policyforge train", ["--config", str(path), "--rollout.temperature", "0.7",
                                             "--algo.drift", "k3", "0.04"], "")
    assert cfg.optim.lr == 1e-3 and cfg.rollout.group_size == 4 and cfg.rollout.temperature == 0.7
    assert cfg.algo.drift == {"k3": 0.04}


def test_bad_yaml_type_is_one_line_cli_error(tmp_path):
    path = _yaml(tmp_path, "rollout:\n  group_size: \"8\"\n")
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(path), "--train.out-dir", str(tmp_path / "runs")])
    assert str(e.value).startswith("error: rollout.group_size='8'")
    assert not (tmp_path / "runs").exists()


# 2. Counts and divisors have lower bounds.

@pytest.mark.parametrize("key, value", [
    ("train.save_every", 0), ("train.steps", 0), ("train.keep_checkpoints", 0), ("train.pass_k", -1),
    ("train.eval_every", -1), ("train.log_samples", -1), ("train.stop_after", 0), ("rollout.prompts_per_step", 0),
    ("rollout.max_new_tokens", 0), ("optim.micro_batch_size", 0), ("optim.updates_per_batch", 0),
    ("optim.micro_batch_tokens", -1), ("optim.warmup_steps", -1), ("optim.lr", -1e-3), ("optim.max_grad_norm", -1.0),
    ("data.eval_size", -1), ("data.task_size", 0),
])
def test_lower_bounds_name_the_option(key, value):
    cfg = _with(Config(), key, value)
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', '[.]')}={value}: must be at least"):
        validate(cfg)


def test_zero_eval_every_and_pass_k_stay_valid():
    validate(_with(_with(Config(), "train.eval_every", 0), "train.pass_k", 0))


def test_eval_size_0_is_for_train_and_sft_only():
    cfg = _with(Config(), "data.eval_size", 0)
    validate(cfg, "train")
    validate(cfg, "sft")
    with pytest.raises(ConfigError, match=r"^data[.]eval_size=0: must be at least 1"):
        validate(cfg, "eval")


def test_save_every_zero_fails_before_the_run_dir(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["train", "--train.save-every", "0", "--train.out-dir", str(tmp_path / "runs")])
    assert str(e.value) == "error: train.save_every=0: must be at least 1"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("key, value, match", [
    ("optim.betas", (0.9, 1.0), r"optim\.betas=\(0\.9, 1\.0\)"), ("sft.noise", 1.5, r"sft\.noise=1\.5"),
    ("sft.steps", 0, r"sft\.steps=0"), ("sft.batch_size", 0, r"sft\.batch_size=0"),
])
def test_optimiser_and_sft_ranges(key, value, match):
    with pytest.raises(ConfigError, match=match):
        validate(_with(Config(), key, value), "train" if key.startswith("optim") else "sft")


# 3. Sampling settings: training needs temperature > 0; evaluation may be greedy.

def test_zero_temperature_refused_for_training_only():
    cfg = _with(Config(), "rollout.temperature", 0.0)
    with pytest.raises(ConfigError, match=r"rollout\.temperature=0\.0: training samples.*greater than 0"):
        validate(cfg)
    validate(cfg, "eval")
    validate(cfg, "sft")
    with pytest.raises(ConfigError, match=r"rollout\.temperature=-1\.0"):
        validate(_with(Config(), "rollout.temperature", -1.0), "eval")


@pytest.mark.parametrize("key, value", [("rollout.top_p", 0.0), ("rollout.top_p", 1.5), ("rollout.top_k", -1)])
def test_top_p_and_top_k_ranges(key, value):
    with pytest.raises(ConfigError, match=rf"{key.replace('.', '[.]')}={value}"):
        validate(_with(Config(), key, value), "eval")


def test_unknown_command_is_a_bug():
    with pytest.raises(ValueError, match="command"):
        validate(Config(), "serve")


# 4. Device and dtype names fail with one line naming them.

def test_unknown_device_names_it():
    with pytest.raises(ModelError, match=r"model\.device='gpu'.*cpu, cuda, cuda:N"):
        pick_device("gpu")
    with pytest.raises(ModelError, match=r"model\.device='gpu'"):
        validate(_with(Config(), "model.device", "gpu"))
    with pytest.raises(ModelError, match=r"model\.device='cuda:99'"):  # no CUDA, or fewer than 100 devices
        pick_device("cuda:99")
    assert pick_device("cpu").type == "cpu"


def test_unknown_device_fails_before_config_yaml(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["train", "--model.device", "gpu", "--train.out-dir", str(tmp_path / "runs")])
    assert str(e.value).startswith("error: model.device='gpu'")
    assert not (tmp_path / "runs").exists()


def test_unknown_dtype_names_the_valid_ones():
    with pytest.raises(ModelError, match=r"model\.dtype='fp16'; valid: float32, bfloat16, float16"):
        load_model("builtin:tiny", "fp16", "cpu")


def test_eval_with_unknown_dtype_is_one_line_error():
    with pytest.raises(SystemExit) as e:
        main(["eval", "--model.dtype", "fp16", "--data.eval-size", "2", "--train.no-progress"])
    assert str(e.value).startswith("error: model.dtype='fp16'")


def _with(cfg: Config, key: str, value) -> Config:
    """A copy of `cfg` with the dotted option `key` set to `value`."""
    section, name = key.split(".")
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{name: value})})


def test_review_fixes_infinite_float_and_lone_stop_string(tmp_path):
    from policyforge.train.config import ConfigError, load_yaml

    bad = tmp_path / "inf.yaml"
    bad.write_text("optim:\n  max_grad_norm: .inf\n")
    with pytest.raises(ConfigError, match="optim.max_grad_norm=inf: expected a finite number"):
        load_yaml(bad)
    lone = tmp_path / "stop.yaml"
    lone.write_text('rollout:\n  stop: "###"\n')
    assert load_yaml(lone).rollout.stop == ["###"]


@pytest.mark.parametrize("section, attr, says", [
    ("optim", "lrr", r"cfg.optim.lrr is not an option: did you mean cfg.optim.lr\?"),
    ("optim", "zzz", "cfg.optim.zzz is not an option: optim has lr, weight_decay"),
    (None, "optimm", r"cfg.optimm is not an option: did you mean cfg.optim\?"),
])
def test_a_misspelt_attribute_set_from_python_is_named(section, attr, says):
    cfg = Config()
    setattr(cfg if section is None else getattr(cfg, section), attr, 0.5)
    with pytest.raises(ConfigError, match=says):
        validate(cfg)


def test_an_eval_file_with_nothing_held_out_is_refused():
    cfg = Config()
    cfg.data.eval_path, cfg.data.eval_size = "held_out.jsonl", 0
    with pytest.raises(ConfigError, match="data.eval_path with data.eval_size 0: the file would not be read"):
        validate(cfg)
