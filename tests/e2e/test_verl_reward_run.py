"""A verl job's reward and data through the real loop: a file holding verl's compute_score, rows shaped as verl's
parquet (data_source, reward_model.ground_truth, extra_info): each completion's score is its reward, and every
key of its dict is logged beside it."""

import json
import textwrap

from policyforge.train.loop import train


def test_a_verl_reward_file_and_verl_rows_train_unchanged(tiny_cfg, tmp_path, monkeypatch):
    (tmp_path / "verl_reward.py").write_text(textwrap.dedent("""
        def compute_score(data_source, solution_str, ground_truth, extra_info=None):
            ok = solution_str.strip() == ground_truth
            return {"score": 1.0 if ok else 0.0, "acc": ok, "length": len(solution_str), "source": data_source}
    """))
    rows = [{"data_source": "reverse", "prompt": f"rev:{w}=", "extra_info": {"index": i},
             "reward_model": {"style": "rule", "ground_truth": w[::-1]}}
            for i, w in enumerate(["abc", "dog", "frog", "cat", "owl", "bee", "ant", "elk"])]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    tiny_cfg.data.path, tiny_cfg.data.eval_size = "train.jsonl", 2
    tiny_cfg.data.reward, tiny_cfg.train.log_rollouts = "verl_reward.py:compute_score", 8
    run = train(tiny_cfg, log=lambda *_: None)
    lines = [json.loads(x) for x in (run / "rollouts.jsonl").read_text().splitlines()]
    assert len(lines) == 16
    for r in lines:
        assert r["extra"]["source"] == "reverse" and r["extra"]["length"] == len(r["completion"])
        assert r["reward"] == r["extra"]["score"] == float(r["extra"]["acc"])  # the score alone, nothing summed
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["reward"] == s["extra"]["score"] for s in samples)
