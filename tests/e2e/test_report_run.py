"""policyforge report on a real (tiny) run: the figures it prints are the run's own records."""

import json

from policyforge.cli import main
from policyforge.train.loop import train


def test_report_of_a_real_run_quotes_its_records_and_draws_them(tiny_cfg, capsys):
    tiny_cfg.train.steps, tiny_cfg.train.eval_every = 3, 0
    tiny_cfg.data.reward = "tests.e2e.test_train:vowel_reward"  # varies on random text: real curves
    lines = []
    run = train(tiny_cfg, log=lines.append)
    assert lines[-1] == f"curves and drift warnings: policyforge report {run}"
    capsys.readouterr()  # what the run printed
    main(["report", str(run)])
    out = capsys.readouterr().out.splitlines()
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    first, last = evals[0]["accuracy"], evals[-1]["accuracy"]
    assert out[0].startswith(f"{run.name} (grpo + ppo_clip): 3 steps")
    assert out[1] == f"  held-out accuracy {first:.1%} (step 0) -> {last:.1%} (step 3)" + out[1][out[1].index(", best"):]
    rewards = [json.loads(x)["reward_mean"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert f"  reward: {rewards[0]:.4g} -> {rewards[-1]:.4g}" in out  # 3 steps: a tenth is one step
    assert out[-1] == f"figure: {run / 'report.png'}" and (run / "report.png").stat().st_size > 10_000
