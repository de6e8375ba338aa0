"""The command line: help, algorithm listing, one-line errors, sft -> train on a saved model."""

import json

import pytest

from policyforge.cli import main


def test_train_help_documents_every_section(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for option in ("--rollout.group-size", "--algo.loss-kwargs", "--optim.micro-batch-tokens", "--train.stop-after",
                   "--data.reward", "--model.path"):
        assert option in out


@pytest.mark.parametrize("command, shown, hidden", [
    ("eval", ("--model.path", "--model.dtype", "--data.reward", "--data.eval-size", "--rollout.max-new-tokens",
              "--rollout.stop", "--train.pass-k", "--train.seed"),
     ("--algo.", "--optim.", "--sft.", "--model.lora-rank", "--model.ref-path", "--rollout.group-size",
      "--train.steps", "--train.progress")),
    ("sft", ("--sft.steps", "--sft.noise", "--model.lora-rank", "--train.progress", "--train.pass-k",
             "--rollout.max-new-tokens"),
     ("--algo.", "--optim.", "--rollout.group-size", "--train.steps", "--train.tensorboard", "--model.ref-path")),
])
def test_sft_and_eval_help_list_the_options_they_read(capsys, command, shown, hidden):
    from policyforge.cli_help import ignores

    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for option in shown:
        assert option in out and not ignores(command, option)
    for option in hidden:
        assert option not in out and ignores(command, option)  # and the command's note names it as ignored


def test_eval_help_of_a_run_shows_the_run_s_settings(tmp_path, capsys):
    from policyforge.train.config import Config, to_yaml

    run = tmp_path / "run"
    (run / "checkpoints" / "step_000001").mkdir(parents=True)
    (run / "checkpoints" / "step_000001" / "config.json").write_text("{}")
    cfg = Config()
    cfg.rollout.max_new_tokens, cfg.data.task = 13, "sorting"
    (run / "config.yaml").write_text(to_yaml(cfg))
    with pytest.raises(SystemExit):
        main(["eval", str(run), "--help"])
    out = capsys.readouterr().out
    assert "(default: 13)" in out and "(default: sorting)" in out and "--algo.loss" not in out


def test_algos_lists_every_family_and_shows_one(capsys):
    main(["algos"])
    out = capsys.readouterr().out
    assert "advantage (" in out and "loss (" in out and "drift (" in out and "aggregation (" in out
    main(["algos", "ppo_clip"])
    out = capsys.readouterr().out
    assert "eps_high=0.2" in out and "1707.06347" in out
    assert "zero advantage:   inert" in out
    main(["algos", "cpgd"])
    assert "zero advantage:   not inert" in capsys.readouterr().out


def test_unknown_algorithm_is_one_line_error():
    with pytest.raises(SystemExit) as e:
        main(["algos", "nope"])
    assert str(e.value).startswith("error: no algorithm 'nope'")


def test_bad_yaml_key_is_one_line_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(cfg)])
    assert "unknown config key 'optim.learning_rate'" in str(e.value)


def test_sft_then_eval_on_the_saved_model(tmp_path, capsys):
    out = tmp_path / "sft"
    common = ["--data.task", "sorting", "--data.task-size", "4", "--data.eval-size", "4", "--train.pass-k", "2",
              "--rollout.max-new-tokens", "5", "--train.no-progress"]
    main(["sft", "--sft.steps", "2", "--sft.batch-size", "4", "--sft.out", str(out)] + common)
    assert (out / "model.safetensors").exists() and not (tmp_path / "sft.tmp").exists()
    capsys.readouterr()
    main(["eval", "--model.path", str(out)] + common)
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(res) == {"accuracy", "pass@2", "reward_mean", "completion_len_mean"}


def test_parquet_dataset(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    from policyforge.data.user import load_rows

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["rev:ab=", "rev:cd="], "target": ["ba", "dc"]}), path)
    rows = load_rows(str(path))
    assert [r.prompt for r in rows] == ["rev:ab=", "rev:cd="] and rows[1].extra == {"target": "dc"}


def test_bench_help_reaches_the_benchmark_script(capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # cmd_bench replaces argv for the script
    with pytest.raises(SystemExit) as e:
        main(["bench", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--settings" in out and "tiny,small,long" in out


def test_sft_and_eval_say_which_flags_only_train_reads(tmp_path, capsys):
    main(["sft", "--model.path", "builtin:tiny", "--data.task-size", "3", "--data.eval-size", "2", "--sft.steps", "1",
          "--sft.batch-size", "2", "--sft.out", str(tmp_path / "m"), "--train.steps=7", "--optim.lr", "0.5",
          "--rollout.max-new-tokens", "4", "--train.pass-k", "1", "--train.no-progress"])
    assert "note: policyforge sft ignores --train.steps, --optim.lr (`policyforge sft --help`" in capsys.readouterr().err
    main(["eval", "--model.path", str(tmp_path / "m"), "--data.task-size", "3", "--data.eval-size", "2",
          "--sft.lr", "1", "--algo.loss", "gspo", "--rollout.max-new-tokens", "4", "--train.pass-k", "1"])
    assert "note: policyforge eval ignores --sft.lr, --algo.loss (`policyforge eval --help`" in capsys.readouterr().err
    main(["eval", "--model.path", str(tmp_path / "m"), "--data.task-size", "3", "--data.eval-size", "2",
          "--rollout.max-new-tokens", "4", "--train.pass-k", "1", "--train.no-progress", "--model.no-disable-dropout"])
    err = capsys.readouterr().err  # a boolean's off switch is named as its on switch would be
    assert "note: policyforge eval ignores --train.no-progress, --model.no-disable-dropout (" in err
    assert "eval reads --model.path / dtype / device," in err


def test_only_train_runs_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match="policyforge sft runs in one process; only `train` runs data-parallel"):
        main(["sft", "--train.steps", "1"])


def test_a_recipe_is_shown_and_its_flags_are_valid_options(capsys):
    import shlex

    from policyforge.algos.recipes import RECIPES
    from policyforge.cli import parse_config
    from policyforge.train.algorithm import resolve
    from policyforge.train.validate import validate

    main(["algos", "dapo"])
    out = capsys.readouterr().out
    assert out.startswith("dapo (recipe)") and "--algo.mask-truncated" in out and "2503.14476" in out
    main(["algos"])
    assert f"recipe ({len(RECIPES)}), several options together:" in capsys.readouterr().out
    configs = {}
    for name, recipe in RECIPES.items():
        configs[name] = cfg = parse_config("t", shlex.split(recipe.flags), "")
        validate(cfg)
        resolve(cfg.algo)
    assert configs["dapo"].algo.loss_kwargs == {"eps_low": 0.2, "eps_high": 0.28} and configs["dapo"].algo.mask_truncated
    critique = configs["critique_grpo"]
    assert (critique.rollout.refinements, critique.rollout.group_size, critique.algo.advantage) == (1, 7, "dr_grpo")
    assert configs["dump"].data.curriculum == "dump" and configs["knapsack_rl"].rollout.allocation == "knapsack"
    with pytest.raises(SystemExit, match=r"unknown loss 'dapo'.*'dapo' is a recipe of several options"):
        main(["train", "--algo.loss", "dapo"])


def test_algos_help_says_how_to_use_it_rather_than_listing(capsys):
    main(["algos", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: policyforge algos [NAME]") and "advantage (" not in out


def test_a_config_file_s_loss_settings_kept_for_another_loss_get_a_note(capsys):
    from policyforge.cli import parse_config

    cfg = parse_config("policyforge train", ["--config", "configs/demo.yaml", "--algo.loss", "gspo"], "")
    assert cfg.algo.loss == "gspo" and cfg.algo.loss_kwargs == {"eps_low": 0.2, "eps_high": 0.28}
    assert ("note: algo.loss_kwargs {'eps_low': 0.2, 'eps_high': 0.28} comes from configs/demo.yaml, where it is set "
            "for algo.loss ppo_clip; the command line's gspo gets it too") in capsys.readouterr().err
    parse_config("policyforge train", ["--config", "configs/demo.yaml", "--train.steps", "3"], "")
    assert "note:" not in capsys.readouterr().err  # the file's own loss: nothing to say


def test_a_file_s_drift_settings_for_its_own_drift_terms_get_no_note(tmp_path, capsys):
    """algo.drift is a dict too: its file value, not the emptied parse default, is what drift_kwargs was set for."""
    from policyforge.cli import parse_config

    path = tmp_path / "run.yaml"
    path.write_text("algo:\n  drift: {k3: 0.05}\n  drift_kwargs: {k3: {clamp: 10.0}}\n")
    cfg = parse_config("policyforge train", ["--config", str(path), "--train.steps", "3"], "")
    assert cfg.algo.drift == {"k3": 0.05} and cfg.algo.drift_kwargs == {"k3": {"clamp": 10.0}}
    assert "note:" not in capsys.readouterr().err
    cfg = parse_config("policyforge train", ["--config", str(path), "--algo.drift", "k3", "0.1"], "")
    assert "where it is set for algo.drift {'k3': 0.05}; the command line's {'k3': 0.1} gets it too" in \
        capsys.readouterr().err


def test_the_command_s_own_flags_without_a_value_or_given_twice_are_named():
    # tyro would call each an unrecognised option: they are the command's own, taken before it parses
    for args, says in [(["train", "--resume"], r"--resume needs a value \(--resume RUN_DIR\)"),
                       (["train", "--config"], r"--config needs a value \(--config FILE\)"),
                       (["train", "--ray-workers", "--train.steps", "2"], r"--ray-workers needs a value"),
                       (["train", "--resume", "a", "--resume=b"], "--resume is given 2 times; give it once")]:
        with pytest.raises(SystemExit, match=says):
            main(args)


def test_algos_lists_a_plugin_s_functions(capsys):
    main(["algos", "soft_clip", "--plugins", "examples/my_algorithm.py"])
    out = capsys.readouterr().out
    assert out.startswith("soft_clip (loss)") and "hyper-parameters: width=0.2" in out
    with pytest.raises(SystemExit, match=r"--plugins needs a value \(--plugins MODULE_OR_FILE"):
        main(["algos", "--plugins"])
