"""policyforge report: the smoothing, the warnings it raises (and does not raise), the panels it draws,
and its errors. A real run is reported in tests/e2e/test_report_run.py."""

import json
import math

import pytest

from policyforge.cli import main
from policyforge.metrics.report import (RunRecords, auto_window, load_run, moving_average, panels_for, report,
                                        summary_lines, warnings_for)


def test_moving_average_by_hand():
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert moving_average([2.0, 4.0, 9.0], 3) == [2.0, 3.0, 5.0]  # the first ones average what there is
    assert moving_average([1.0, 2.0], 1) == [1.0, 2.0]
    assert auto_window(30) == 1 and auto_window(300) == 6
    # a non-finite value drops out of its windows; the curve goes on after it
    smooth = moving_average([1.0, math.nan, 3.0, math.inf, 5.0, 7.0], 2)
    assert smooth[:3] == [1.0, 1.0, 3.0] and smooth[3:] == [3.0, 5.0, 6.0]
    assert math.isnan(moving_average([math.nan], 3)[0])


def _healthy(n: int = 40) -> list[dict]:
    # entropy eases down, KL rises then levels off, nothing clipped, gradient norms around 1
    return [{"step": s, "entropy": 1.0 - 0.005 * s, "kl_ref": min(0.01 * s, 0.1), "clip_frac_low": 0.01,
             "clip_frac_high": 0.02, "grad_norm": 1.0 + 0.1 * (s % 3), "zero_var_group_frac": 0.3,
             "reward_mean": 0.01 * s, "truncation_rate": 0.5 if s % 2 else 0.0} for s in range(1, n + 1)]


def test_a_healthy_run_has_no_warnings():
    assert warnings_for(RunRecords(None, "ok", _healthy())) == []


@pytest.mark.parametrize("change, expected", [
    (lambda r: r.update(entropy=0.001) if r["step"] > 30 else None, "entropy collapsed: 0.987 -> 0.001"),
    (lambda r: r.update(kl_ref=0.01 * r["step"]), "KL to the reference grew in every quarter"),
    (lambda r: r.update(clip_frac_high=0.3) if r["step"] in (12, 20) else None,
     "clip_frac_high above 20% at 2 steps (first at step 12)"),
    (lambda r: r.update(grad_norm=50.0) if r["step"] == 17 else None,
     "gradient norm above 10x its median at 1 steps (first at step 17)"),
    (lambda r: r.update(reward_mean=math.nan) if r["step"] >= 33 else None, "reward_mean is not finite at step 33 "
                                                                             "(8 steps in all)"),
    (lambda r: r.update(zero_var_group_frac=1.0) if r["step"] > 30 else None, "no learning signal"),
    (lambda r: r.update(sampling_rounds=3 + 7 * (r["step"] > 35), groups_filled=2.0 * (r["step"] > 35)),
     "dynamic sampling ran out of rounds at 5 of 40 steps (first at step 36)"),
    (lambda r: r.update(truncation_rate=0.9 if r["step"] > 15 else 0.1),
     "most completions were cut at max_new_tokens at 25 of 40 steps (first at step 16)"),
])
def test_each_kind_of_trouble_is_named_with_its_step(change, expected):
    rows = _healthy()
    for r in rows:
        change(r)
    found = warnings_for(RunRecords(None, "bad", rows))
    assert len(found) == 1 and expected in found[0], found


def test_summary_gives_held_out_accuracy_and_start_to_end_means():
    steps = [{"step": s, "reward_mean": float(s)} for s in range(1, 21)]  # tenths: steps 1-2 and 19-20
    evals = [{"step": 0, "accuracy": 0.25}, {"step": 10, "accuracy": 0.75}, {"step": 20, "accuracy": 0.5}]
    lines = summary_lines(RunRecords(None, "r", steps, evals))
    assert lines[1] == "  held-out accuracy 25.0% (step 0) -> 50.0% (step 20), best 75.0% at step 10"
    assert lines[2] == "  reward: 1.5 -> 19.5"


def test_the_overlong_penalty_is_shown_beside_the_reward():
    steps = [{"step": s, "reward_mean": 1.0, "overlong_penalty": -0.1 * (s > 10)} for s in range(1, 21)]
    lines = summary_lines(RunRecords(None, "r", steps))
    assert lines[1:3] == ["  reward: 1 -> 1", "  of which overlong penalty: 0 -> -0.1"]
    (title, keys), = [p for p in panels_for([RunRecords(None, "r", steps)]) if p[0].startswith("reward")]
    assert ("steps", "overlong_penalty", " overlong penalty") in keys


def test_panels_are_those_with_data_and_on_policy_zeros_are_left_out():
    steps = [{"step": 1, "reward_mean": 0.0, "kl_old": 0.0, "clip_frac_low": 0.0, "reward/correct": 0.0}]
    titles = [t for t, _ in panels_for([RunRecords(None, "r", steps, [{"step": 0, "accuracy": 0.0}])])]
    # an accuracy of 0 is news; a KL to the old policy of 0 with one update per batch is not
    assert titles == ["reward (batch mean)", "reward components (batch means)", "held-out accuracy"]


def _run_dir(path, steps, evals=(), config="algo:\n  advantage: rloo\n  loss: cispo\n  drift: {k3: 0.04}\n"):
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    (path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    (path / "config.yaml").write_text(config)
    return path


def test_report_writes_the_figure_whole_and_labels_runs_by_algorithm(tmp_path):
    a = _run_dir(tmp_path / "a", _healthy(), [{"step": 0, "accuracy": 0.1, "pass@4": 0.3}])
    b = _run_dir(tmp_path / "b", _healthy(20), config="algo:\n  advantage: grpo\n  loss: ppo_clip\n")
    lines = []
    out = report([str(a), str(b)], str(tmp_path / "cmp.svg"), window=3, log=lines.append)
    assert out == tmp_path / "cmp.svg" and out.read_text().startswith("<?xml")
    assert not list(tmp_path.glob("*.tmp*"))  # written beside, then renamed
    assert lines[0].startswith("a (rloo + cispo + k3 0.04): 40 steps") and lines[1].startswith("b (grpo + ppo_clip)")
    assert lines[-1] == f"figure: {out}"
    assert load_run(a).label == "a (rloo + cispo + k3 0.04)"
    c = _run_dir(tmp_path / "c", _healthy(5), config="algo:\n  advantage: grpo\n  loss: ppo_clip\nrollout:\n  "
                 "dynamic_sampling: accuracy\ndata:\n  reward_model: r0,r1,r2\n  reward_model_ensemble: worst\n")
    assert load_run(c).label == "c (grpo + ppo_clip + dynamic sampling accuracy + worst of 3 reward models)"
    d = _run_dir(tmp_path / "d", _healthy(5), config="algo:\n  advantage: grpo\ndata:\n  replay_pool: pool.jsonl\n")
    assert load_run(d).label == "d (grpo + replay 2 a group)"
    e = _run_dir(tmp_path / "e", _healthy(5), config="algo:\n  advantage: grpo\nrollout:\n  hints: ghpo\n")
    assert load_run(e).label == "e (grpo + ghpo hints)"
    assert report([str(a)], log=lambda *_: None).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # default: in the run


def test_a_cut_last_line_is_read_like_a_resume_does(tmp_path):
    run = _run_dir(tmp_path / "r", _healthy(5))
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "entr')  # a killed run's last append
    assert [r["step"] for r in load_run(run).steps] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("args, message", [
    (["nowhere"], "error: 'nowhere' is not a run directory (no such folder)"),
    (["EMPTY"], "has no metrics.jsonl or eval.jsonl records yet"),
    (["RUN", "--out", "figure.txt"], "--out 'figure.txt': give a .png, .svg or .pdf file"),
    (["RUN", "--smooth", "0"], "--smooth 0: the moving-average window must be 1 or more"),
    (["DAMAGED"], "line 1: not valid JSON"),
    (["RUN", "--out", "nodir/cmp.svg"], "--out 'nodir/cmp.svg': its folder 'nodir' does not exist"),
])
def test_cli_errors_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EMPTY").mkdir()
    _run_dir(tmp_path / "RUN", _healthy(3))
    _run_dir(tmp_path / "DAMAGED", [])
    (tmp_path / "DAMAGED" / "metrics.jsonl").write_text('{"step": 1, oops\n{"step": 2}\n')
    with pytest.raises(SystemExit) as e:
        main(["report", *args])
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "figure.txt").exists()


def test_drift_control_steps_are_listed_and_drawn(tmp_path):
    steps = _healthy(20)
    for r in steps:
        r.update(ref_synced=float(r["step"] % 5 == 0), elastic_reset=float(r["step"] == 12))
    lines = summary_lines(RunRecords(None, "r", steps))
    assert "  reference moved toward the policy at 4 steps: 5, 10, 15, 20" in lines
    assert "  Elastic Reset at 1 step: 12" in lines
    marked = report([str(_run_dir(tmp_path / "a", steps))], str(tmp_path / "a.svg"), log=lambda *_: None)
    plain = report([str(_run_dir(tmp_path / "b", _healthy(20)))], str(tmp_path / "b.svg"), log=lambda *_: None)
    dotted = marked.read_text().count("stroke-dasharray") - plain.read_text().count("stroke-dasharray")
    panels = len(panels_for([load_run(tmp_path / "a")]))
    assert dotted == 4 + panels  # the 4 syncs in the KL panel, the reset in every panel


def test_the_summary_shows_what_the_policy_sampled_first_and_last():
    rollouts = [{"step": s, "prompt": f"rev:{w}=", "completion": c, "reward": r, "advantage": a}
                for s, w, c, r, a in ((1, "abc", "xy", 0.0, -0.5), (1, "abc", "cba", 1.0, 0.5),
                                      (9, "dog", "god", 1.0, 0.0), (9, "dog", "x" * 70, 0.0, 0.0))]
    lines = summary_lines(RunRecords(None, "r", _healthy(9), [], rollouts))
    assert lines[-2:] == ["  sampled at step 1: 'rev:abc=' -> 'xy' (reward 0, advantage -0.5)",
                          "  sampled at step 9: 'rev:dog=' -> 'god' (reward 1, advantage 0)"]
    long = [dict(rollouts[3], step=1, prompt="p" * 70)]  # one step: one line, long texts cut
    assert summary_lines(RunRecords(None, "r", _healthy(9), [], long))[-1] == (
        f"  sampled at step 1: '...{'p' * 60}' -> '{'x' * 60}...' (reward 0, advantage 0)")
    assert not [x for x in summary_lines(RunRecords(None, "r", _healthy(9))) if "sampled" in x]


def test_what_a_trl_reward_logs_has_its_own_panel():
    steps = [{"step": s, "reward_mean": 0.1 * s, "reward_fn/frac_long": 0.5 + 0.01 * s} for s in range(1, 11)]
    panels = dict(panels_for([RunRecords(None, "r", steps)]))
    assert panels["reward functions' log_metric (step means)"] == [("steps", "reward_fn/frac_long", " frac_long")]


def test_per_distribution_accuracy_and_dump_weights_get_panels_and_summary_lines(tmp_path):
    steps = [{"step": s, "reward_mean": 0.1, "curriculum_weight/easy": 0.2, "curriculum_weight/hard": 0.8}
             for s in range(1, 5)]
    evals = [{"step": s, "accuracy": a, "accuracy/easy": e, "accuracy/hard": h}
             for s, a, e, h in ((0, 0.25, 0.5, 0.0), (4, 0.5, 0.75, 0.25))]
    run = RunRecords(None, "r", steps, evals)
    panels = dict(panels_for([run]))
    assert panels["held-out accuracy per distribution"] == [("evals", "accuracy/*", "")]
    assert panels["DUMP curriculum: sampling weight per distribution"] == [("steps", "curriculum_weight/*", "")]
    lines = summary_lines(run)
    assert lines[2:4] == ["    easy: 50.0% -> 75.0%", "    hard: 0.0% -> 25.0%"]
    assert "DUMP curriculum: sampling weight per distribution" not in dict(panels_for([RunRecords(None, "r",
                                                                                                  _healthy())]))
    assert report_figure_is_written(tmp_path, steps, evals)


def report_figure_is_written(tmp_path, steps, evals) -> bool:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    (run / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    out = report([str(run)], log=lambda *_: None)
    return out.exists() and out.stat().st_size > 0


def test_gspo_s_clipped_share_is_no_warning(tmp_path):
    rows = _healthy()
    for r in rows:
        r["clip_frac_low"] = 0.4  # GSPO clips whole sequences at 3e-4: a large share is its design
    (tmp_path / "config.yaml").write_text("algo:\n  loss: gspo\n")
    assert warnings_for(RunRecords(tmp_path, "gspo", rows)) == []
    (tmp_path / "config.yaml").write_text("algo:\n  loss: ppo_clip\n")
    assert "clip_frac_low above 20%" in warnings_for(RunRecords(tmp_path, "ppo", rows))[0]


def test_a_worse_policy_and_far_updates_are_warned_of(tmp_path):
    """Held-out accuracy below its best, KL(old || new) far beyond a trust region, extreme ratios: each named."""
    rows = _healthy()
    for r in rows:
        r.update(kl_old=0.3 if r["step"] >= 5 else 0.01, ratio_max=30.0 if r["step"] in (7, 9) else 1.2)
    evals = [{"step": 0, "accuracy": 0.27}, {"step": 20, "accuracy": 0.52}, {"step": 40, "accuracy": 0.37}]
    found = warnings_for(RunRecords(None, "ppo4", rows, evals))
    assert found == [
        "held-out accuracy fell from its best 52.0% (step 20) to 37.0% (step 40): the policy got worse (a lower lr or "
        "updates_per_batch, a drift term; the step-20 checkpoint holds the best policy if it was kept)",
        "KL(old || new) above 0.1 at 36 steps (first at step 5): one batch's updates moved the policy far (lower lr "
        "or updates_per_batch)",
        "ratio pi/pi_old above 10 at 2 steps (first at step 7): updates left the trust region by far"]
    evals[1]["accuracy"] = 0.4  # within 10 points of the best: noise, not a fall
    assert not any("fell" in w for w in warnings_for(RunRecords(None, "ok", _healthy(), evals)))


def test_the_drift_advice_fits_a_run_that_has_a_drift_term(tmp_path):
    rows = [dict(r, kl_ref=0.01 * r["step"]) for r in _healthy()]
    (tmp_path / "config.yaml").write_text("algo:\n  drift: {k3: 0.05}\n")
    (warning,) = warnings_for(RunRecords(tmp_path, "k3", rows))
    assert warning.endswith("(a larger drift coefficient holds it closer)")


def test_among_several_runs_one_without_records_is_left_out_with_a_note(tmp_path, monkeypatch):
    a = _run_dir(tmp_path / "a", _healthy(10))
    (tmp_path / "starting").mkdir()
    (tmp_path / "starting" / "config.yaml").write_text("algo:\n  loss: ppo_clip\n")
    lines = []
    report([str(a), str(tmp_path / "starting")], str(tmp_path / "cmp.png"), log=lines.append)
    assert lines[0].startswith("note: ") and "'starting' has no metrics.jsonl" in lines[0].replace(str(tmp_path) + "/", "")
    assert (tmp_path / "cmp.png").exists()
    monkeypatch.chdir(a)  # `report .` names the run by its folder
    assert load_run(".").label.startswith("a (")


def test_a_run_that_stopped_before_its_steps_says_so(tmp_path):
    run = _run_dir(tmp_path / "r", _healthy(12), config="algo:\n  loss: ppo_clip\ntrain:\n  steps: 30\n")
    assert summary_lines(load_run(run))[0].startswith(
        f"r (ppo_clip): 12 steps of 30, unfinished (still running, or stopped: --resume {run} continues it)")
    (run / "summary.json").write_text("{}")  # a finished run (its steps extended later would have no summary yet)
    assert summary_lines(load_run(run))[0].startswith("r (ppo_clip): 12 steps (below")
