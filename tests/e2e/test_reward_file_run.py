"""A run whose data.reward is a file given by a relative path resumes, and is evaluated, from another
directory."""

import json
import sys
import textwrap

from policyforge.cli import main
from policyforge.rewards import reward_file
from policyforge.train.loop import train


def test_a_run_resumes_and_is_evaluated_from_another_directory(tiny_cfg, tmp_path, monkeypatch, capsys):
    start = tmp_path / "project"
    (start / "rewards").mkdir(parents=True)
    (start / "rewards" / "vowels.py").write_text(textwrap.dedent("""
        def score(prompt, completion, **columns):
            return float(sum(c in 'aeiou' for c in completion))
    """))
    monkeypatch.chdir(start)
    tiny_cfg.data.reward, tiny_cfg.train.save_every, tiny_cfg.train.stop_after = "rewards/vowels.py:score", 1, 1
    run = train(tiny_cfg, log=lambda *_: None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the resume reads the relative path from where the run started
    for name in [n for n, path in reward_file.LOADED.items() if path.name == "vowels.py"]:
        del sys.modules[name], reward_file.LOADED[name]  # loaded again, as a new process would
    tiny_cfg.train.stop_after = None
    assert train(tiny_cfg, resume=str(run), log=lambda *_: None) == run
    assert (run / "summary.json").exists()

    # policyforge eval from elsewhere: the run's file from where it started, a flag's file from here
    (elsewhere / "other.py").write_text("def score(prompt, completion, **columns):\n    return 7.0\n")
    capsys.readouterr()
    main(["eval", str(run)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] is not None
    main(["eval", str(run), "--data.reward", "other.py:score", "--train.pass-k", "0"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["reward_mean"] == 7.0
