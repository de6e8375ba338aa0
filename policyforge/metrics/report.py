"""`policyforge report`: one figure and a few lines of text that show how runs learned and drifted.

A run directory's metrics.jsonl (one line per step) and eval.jsonl (held-out evaluations) are
drawn as a grid of panels, one colour per run, so several runs (two algorithms, two seeds)
compare at a glance: reward, held-out accuracy, KL to the reference, entropy, the update's
own drift (KL to the old policy, clip fractions), lengths, gradient norm and step time. Noisy
per-step curves are drawn faint with a moving average over them.

The text part says, per run, where each signal started and ended and flags the usual ways a
policy goes wrong: entropy collapse, a reference KL that keeps growing, many clipped tokens,
gradient-norm spikes, non-finite values, and steps with no learning signal.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import yaml

from policyforge.metrics.rollouts import shortened
from policyforge.metrics.run_dir import read_records
from policyforge.rewards.spec import reward_model_paths


class ReportError(ValueError):
    """A run directory that cannot be reported on (missing, or with no records yet)."""


@dataclass
class RunRecords:
    """What a report reads from one run directory."""

    path: Path
    label: str  # the run's name and algorithm, e.g. "demo (grpo + ppo_clip)"
    steps: list[dict] = field(default_factory=list)  # metrics.jsonl rows, by step
    evals: list[dict] = field(default_factory=list)  # eval.jsonl rows, by step
    rollouts: list[dict] = field(default_factory=list)  # rollouts.jsonl rows: a few sampled completions a step

    def series(self, key: str, source: str = "steps") -> tuple[list[int], list[float]]:
        """(steps, values) of `key` over the rows that have it."""
        rows = [r for r in getattr(self, source) if isinstance(r.get(key), (int, float))]
        return [r["step"] for r in rows], [float(r[key]) for r in rows]


def load_run(path: str | Path) -> RunRecords:
    """A run directory's records; ReportError naming the directory when it holds none."""
    p = Path(path)
    if not p.is_dir():
        raise ReportError(f"{str(p)!r} is not a run directory ({'a file' if p.exists() else 'no such folder'})")
    try:
        steps, evals = read_records(p / "metrics.jsonl"), read_records(p / "eval.jsonl")
        rollouts = read_records(p / "rollouts.jsonl")  # none in a run older than it, or with train.log_rollouts 0
    except ValueError as e:  # a damaged line in the middle of a file
        raise ReportError(str(e)) from None
    if not steps and not evals:
        raise ReportError(f"{str(p)!r} has no metrics.jsonl or eval.jsonl records yet (is it a run directory?)")
    return RunRecords(p, _label(p.resolve()), steps, evals, rollouts)  # resolved: `report .` has a name


def _config(path: Path | None) -> dict:
    """A run's config.yaml as a dict; {} when it has none or it cannot be read (or records made in memory)."""
    if path is None:
        return {}
    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def _label(path: Path) -> str:
    config = _config(path)
    if not config:
        return path.name
    algo, rollout, data = (config.get(k) or {} for k in ("algo", "rollout", "data"))
    parts = [algo.get("advantage"), algo.get("loss")]
    drift = algo.get("drift")
    if drift:  # {name: coefficient}
        parts += [f"{k} {v}" for k, v in drift.items()] if isinstance(drift, dict) else [str(drift)]
    if rollout.get("dynamic_sampling") not in (None, "off"):
        parts.append(f"dynamic sampling {rollout['dynamic_sampling']}")
    if rollout.get("hints") not in (None, "off"):
        parts.append(f"{rollout['hints']} hints")
    if data.get("replay_pool"):  # RLEP
        parts.append(f"replay {data.get('replay_per_prompt', 2)} a group")
    if rollout.get("refinements"):  # Critique-GRPO, HeRL
        k = rollout["refinements"]
        parts.append(f"HeRL {k} rewrite{'s' * (k != 1)}" if rollout.get("refine_method") == "herl"
                     else f"{k} refinement{'s' * (k != 1)}")
    if rollout.get("allocation") not in (None, "uniform"):  # Knapsack RL
        parts.append(f"{rollout['allocation']} budget")
    if data.get("curriculum") not in (None, "off"):  # DUMP
        parts.append(f"{data['curriculum']} curriculum")
    members = reward_model_paths(data.get("reward_model"))
    if len(members) > 1:  # a reward-model ensemble and its rule
        parts.append(f"{data.get('reward_model_ensemble', 'mean')} of {len(members)} reward models")
    named = " + ".join(str(x) for x in parts if x)
    return f"{path.name} ({named})" if named else path.name


def moving_average(values: list[float], window: int) -> list[float]:
    """The mean of the finite values among each value and the up to `window - 1` before it (the first ones
    average fewer; NaN where none is finite), so one inf or NaN leaves a gap, not a blank rest of the run."""
    out = []
    for i in range(len(values)):
        finite = [v for v in values[max(0, i - window + 1) : i + 1] if math.isfinite(v)]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out


def auto_window(n: int) -> int:
    """A smoothing window for n steps: about a fiftieth of the run, at least 1."""
    return max(1, n // 50)


# --- text: where each signal went, and what looks wrong ---

ENTROPY_COLLAPSE = 0.1  # entropy below this fraction of its start: the policy has (nearly) stopped exploring
CLIP_HIGH = 0.2  # more than this fraction of tokens clipped: updates are far larger than the trust region
GRAD_SPIKE = 10.0  # a gradient norm this many times the run's median
ACCURACY_DROP = 0.1  # held-out accuracy this far (absolute) below its best at the end: the policy got worse
KL_OLD_LARGE = 0.1  # KL(pi_old || pi) after one batch's updates: far beyond a trust region (PPO's ~0.01)
RATIO_EXTREME = 10.0  # pi / pi_old of a sampled token after the batch's updates


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _ends(values: list[float]) -> tuple[float, float]:
    """Mean of the first and of the last tenth of a series (at least one value each)."""
    k = max(1, len(values) // 10)
    return _mean(values[:k]), _mean(values[-k:])


def warnings_for(run: RunRecords) -> list[str]:
    """The signs of trouble in one run's records, each as a sentence naming the step where it shows."""
    out = []
    for key in sorted({k for r in run.steps for k in r}):
        bad = [r["step"] for r in run.steps if isinstance(r.get(key), float) and not math.isfinite(r[key])]
        if bad:
            out.append(f"{key} is not finite at step {bad[0]} ({len(bad)} steps in all)")
    steps, ent = run.series("entropy")
    if len(ent) >= 10 and ent[0] > 0:
        first, last = _ends(ent)
        if last < ENTROPY_COLLAPSE * first:
            out.append(f"entropy collapsed: {first:.3g} -> {last:.3g} (below {ENTROPY_COLLAPSE:.0%} of its start); "
                       "the policy has almost stopped exploring (an entropy bonus or clip-higher helps)")
    steps, kl = run.series("kl_ref")
    if len(kl) >= 20:
        quarters = [_mean(kl[i * len(kl) // 4:(i + 1) * len(kl) // 4]) for i in range(4)]
        if all(b > a for a, b in zip(quarters, quarters[1:])) and quarters[-1] > 0:
            has_drift = bool((_config(run.path).get("algo") or {}).get("drift"))
            out.append(f"KL to the reference grew in every quarter of the run (last quarter's mean "
                       f"{quarters[-1]:.3g}): the policy is still drifting away ("
                       + ("a larger drift coefficient holds it closer)" if has_drift else "a drift term bounds it)"))
    steps, acc = run.series("accuracy", "evals")
    if len(acc) >= 3:
        best = max(range(len(acc)), key=acc.__getitem__)
        if acc[-1] < acc[best] - ACCURACY_DROP and best < len(acc) - 1:
            out.append(f"held-out accuracy fell from its best {acc[best]:.1%} (step {steps[best]}) to {acc[-1]:.1%} "
                       f"(step {steps[-1]}): the policy got worse (a lower lr or updates_per_batch, a drift term; "
                       + ("the starting model was the best)" if steps[best] == 0 else
                          f"the step-{steps[best]} checkpoint holds the best policy if it was kept)"))
    steps, kl_old = run.series("kl_old")
    large = [s for s, x in zip(steps, kl_old) if math.isfinite(x) and x > KL_OLD_LARGE]
    if large:
        out.append(f"KL(old || new) above {KL_OLD_LARGE} at {len(large)} step{'s' * (len(large) != 1)} (first at "
                   f"step {large[0]}): one batch's updates moved the policy far (lower lr or updates_per_batch)")
    steps, rmax = run.series("ratio_max")
    extreme = [s for s, x in zip(steps, rmax) if math.isfinite(x) and x > RATIO_EXTREME]
    if extreme:
        out.append(f"ratio pi/pi_old above {RATIO_EXTREME:.0f} at {len(extreme)} step{'s' * (len(extreme) != 1)} "
                   f"(first at step {extreme[0]}): updates left the trust region by far")
    # GSPO clips whole sequences at a range of 3e-4 / 4e-4: a large clipped share is its design, not a drift
    for key in ("clip_frac_low", "clip_frac_high") if (_config(run.path).get("algo") or {}).get("loss") != "gspo" else ():
        steps, clip = run.series(key)
        high = [s for s, c in zip(steps, clip) if c > CLIP_HIGH]
        if high:
            out.append(f"{key} above {CLIP_HIGH:.0%} at {len(high)} step{'s' * (len(high) != 1)} (first at step {high[0]}): "
                       "updates leave the trust region (lower lr or updates_per_batch)")
    steps, g = run.series("grad_norm")
    finite = [x for x in g if math.isfinite(x)]
    if len(finite) >= 10 and median(finite) > 0:
        spikes = [s for s, x in zip(steps, g) if math.isfinite(x) and x > GRAD_SPIKE * median(finite)]
        if spikes:
            out.append(f"gradient norm above {GRAD_SPIKE:.0f}x its median at {len(spikes)} steps "
                       f"(first at step {spikes[0]})")
    steps, cut = run.series("truncation_rate")
    most = [s for s, x in zip(steps, cut) if x > 0.5]
    if cut and len(most) > len(cut) / 2:
        out.append(f"most completions were cut at max_new_tokens at {len(most)} of {len(cut)} steps (first at step "
                   f"{most[0]}): the reward scored unfinished text (raise rollout.max_new_tokens)")
    steps, flat = run.series("zero_var_group_frac")
    if flat and all(x >= 1.0 for x in flat[-10:]) and len(flat) >= 10:
        out.append("every group had equal rewards in the last 10 steps: no learning signal "
                   "(all solved or none: harder or easier prompts, or a denser reward)")
    steps, filled = run.series("groups_filled")
    short = [s for s, x in zip(steps, filled) if x > 0]
    if short:
        out.append(f"dynamic sampling ran out of rounds at {len(short)} of {len(filled)} steps (first at step "
                   f"{short[0]}): groups that scored alike filled the batch (raise rollout.max_sampling_rounds, "
                   "or the prompts are too easy or too hard for the policy)")
    return out


def _progress(run: RunRecords) -> str:
    """' of M, unfinished (...)' for a run whose records stop before its train.steps and that wrote no summary.json
    (still running, stopped by train.stop_after, or killed), else ''."""
    planned = (_config(run.path).get("train") or {}).get("steps")
    last = run.steps[-1]["step"] if run.steps else 0
    if run.path is None or not isinstance(planned, int) or last >= planned or (run.path / "summary.json").exists():
        return ""
    return f" of {planned}, unfinished (still running, or stopped: --resume {run.path} continues it)"


def summary_lines(run: RunRecords) -> list[str]:
    """A few lines on one run: held-out accuracy, reward, drift and entropy from start to end, and warnings."""
    lines = [f"{run.label}: {len(run.steps)} steps{_progress(run)} (below, start -> end: the means of the first and "
             "last tenth)"]
    steps, acc = run.series("accuracy", "evals")
    if acc:
        best = max(range(len(acc)), key=acc.__getitem__)
        lines.append(f"  held-out accuracy {acc[0]:.1%} (step {steps[0]}) -> {acc[-1]:.1%} (step {steps[-1]}), "
                     f"best {acc[best]:.1%} at step {steps[best]}")
    for key in _keys(run, "evals", "accuracy/*"):  # data.distribution_column: each distribution's
        _, acc = run.series(key, "evals")
        lines.append(f"    {_member('accuracy/*', key)}: {acc[0]:.1%} -> {acc[-1]:.1%}")
    for key, name in (("reward_mean", "reward"), ("overlong_penalty", "of which overlong penalty"),
                      ("kl_ref", "KL to reference"), ("entropy", "entropy"),
                      ("completion_len_mean", "completion length"), ("sampling_rounds", "dynamic sampling rounds"),
                      ("refined_groups", "groups refined a step"),
                      ("effective_rows_frac", "share of rows with a non-zero advantage")):
        _, values = run.series(key)
        values = [v for v in values if math.isfinite(v)]
        if values:
            first, last = _ends(values)
            lines.append(f"  {name}: {first:.4g} -> {last:.4g}")
    for key, what in MARKS:
        marked = marked_steps(run, key)
        if marked:
            shown = ", ".join(map(str, marked[:8])) + (", ..." if len(marked) > 8 else "")
            lines.append(f"  {what} at {len(marked)} step{'s' * (len(marked) != 1)}: {shown}")
    lines += sampled_lines(run)
    lines += [f"  warning: {w}" for w in warnings_for(run)]
    return lines


def sampled_lines(run: RunRecords, width: int = 60) -> list[str]:
    """The first completion rollouts.jsonl holds of the run's first and last steps: what the policy wrote then."""
    if not run.rollouts:
        return []
    first, last = run.rollouts[0]["step"], run.rollouts[-1]["step"]
    lines = []
    for step in dict.fromkeys((first, last)):
        r = next(r for r in run.rollouts if r["step"] == step)
        prompt, text = shortened(r["prompt"], width, keep_end=True), shortened(r["completion"], width)
        lines.append(f"  sampled at step {step}: {prompt!r} -> {text!r} (reward {r['reward']:.4g}, "
                     f"advantage {r['advantage']:.3g})")
    return lines


# steps where a drift control acted (train/drift_control.py): dotted lines in the figure, a line in the summary
MARKS = (("ref_synced", "reference moved toward the policy"), ("elastic_reset", "Elastic Reset"))
MAX_MARK_LINES = 50  # more would hide the curves (a sync at every step): the summary still lists them


def marked_steps(run: RunRecords, key: str) -> list[int]:
    """The steps whose record has `key` set (1.0: the drift control acted after that step)."""
    return [r["step"] for r in run.steps if r.get(key)]


# --- the figure ---

# (title, [(source, key, legend suffix)]): a panel is drawn when any run has any of its keys
PANELS = [
    ("reward (batch mean)", [("steps", "reward_mean", ""), ("steps", "overlong_penalty", " overlong penalty")]),
    ("held-out accuracy", [("evals", "accuracy", ""), ("evals", "pass@*", " pass@k")]),
    ("held-out accuracy per distribution", [("evals", "accuracy/*", "")]),
    ("DUMP curriculum: sampling weight per distribution", [("steps", "curriculum_weight/*", "")]),
    ("DUMP curriculum: mean |advantage| per distribution", [("steps", "curriculum_abs_adv/*", "")]),
    ("KL to reference (k3)", [("steps", "kl_ref", "")]),
    ("drift terms (mean penalty, before its coefficient)", [("steps", "drift/*", "")]),
    ("entropy (nats/token)", [("steps", "entropy", "")]),
    ("update drift: KL(old || new), clipped fraction", [("steps", "kl_old", " KL old"),
                                                        ("steps", "clip_frac_low", " clip low"),
                                                        ("steps", "clip_frac_high", " clip high")]),
    ("update ratio pi / pi_old: min, max (log scale)", [("steps", "ratio_max", " max"), ("steps", "ratio_min", " min")]),
    ("completion length (tokens)", [("steps", "completion_len_mean", ""), ("steps", "completion_len_max", " max")]),
    ("gradient norm (before clipping)", [("steps", "grad_norm", "")]),
    ("groups with equal rewards, rows with a gradient (fractions)",
     [("steps", "zero_var_group_frac", ""), ("steps", "effective_rows_frac", " rows with a non-zero advantage")]),
    ("advantage: mean |A|, share of rows with A = 0", [("steps", "adv_abs_mean", " mean |A|"),
                                                        ("steps", "adv_zero_frac", " rows with A = 0")]),
    ("dynamic sampling: rounds a step, groups filled", [("steps", "sampling_rounds", " rounds"),
                                                         ("steps", "groups_filled", " filled")]),
    ("replay, hints, refinements: rows replayed, groups hinted or refined",
     [("steps", "replayed_rows", " replayed rows"), ("steps", "hinted_groups", " hinted groups"),
      ("steps", "refined_groups", " refined groups")]),
    ("share correct: hinted and refined rows", [("steps", "hinted_accuracy", " hinted"),
                                                ("steps", "refined_accuracy", " refined")]),
    ("Knapsack RL: group sizes", [("steps", "group_size_max", " largest"), ("steps", "group_size_min", " smallest")]),
    ("seconds per step", [("steps", "rollout_s", " rollout"), ("steps", "reward_s", " scoring (part of rollout)"),
                          ("steps", "update_s", " update")]),
]
STYLES = ["-", "--", ":", "-."]  # a panel's second and later keys, per run colour


def _keys(run: RunRecords, source: str, key: str) -> list[str]:
    """`key`, or every key it stands for ("pass@*": whichever pass@k the run evaluated)."""
    if not key.endswith("*"):
        return [key]
    return sorted({k for r in getattr(run, source) for k in r if k.startswith(key[:-1])})


def _member(pattern: str, key: str) -> str:
    """A pattern's key in a legend: "pass@8" whole, "accuracy/rev3-4" as "rev3-4" (the part after the slash)."""
    return key[len(pattern) - 1:] if pattern.endswith("/*") else key


ZERO_ON_POLICY = {"kl_old", "clip_frac_low", "clip_frac_high"}  # 0 by construction with one update per batch
ONE_ON_POLICY = {"ratio_min", "ratio_max"}  # 1 by construction with one update per batch


def _informative(run: RunRecords, source: str, key: str) -> bool:
    """Whether a series says anything: it has values, and for ZERO_ON_POLICY keys not only zeros."""
    values = run.series(key, source)[1]
    if key in ONE_ON_POLICY:
        return any(abs(v - 1) > 1e-6 for v in values)
    return any(v != 0 for v in values) if key in ZERO_ON_POLICY else bool(values)


def panels_for(runs: list[RunRecords]) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """The panels with an informative series in at least one run, reward components included (one panel)."""
    components = sorted({k for run in runs for r in run.steps for k in r if k.startswith("reward/")})
    logged = sorted({k for run in runs for r in run.steps for k in r if k.startswith("reward_fn/")})  # log_metric's
    members = sorted({k for run in runs for r in run.steps for k in r if k.startswith("reward_model/")})  # ensembles'
    wanted = PANELS[:1] + ([("reward components (batch means)", [("steps", k, " " + k[7:]) for k in components])]
                           if components else []) + ([("reward functions' log_metric (step means)",
                                                       [("steps", k, " " + k[10:]) for k in logged])]
                                                     if logged else []) + (
        [("reward-model ensemble (logits, batch means)", [("steps", k, " " + k[13:]) for k in members])]
        if members else []) + PANELS[1:]
    return [(title, lines) for title, lines in wanted
            if any(_informative(run, src, k) for run in runs for src, key, _ in lines for k in _keys(run, src, key))]


def plot(runs: list[RunRecords], out: Path, window: int | None = None) -> Path:
    """Draw every panel with data for `runs` into the image `out` (written whole, then renamed into place)."""
    import matplotlib

    matplotlib.use("Agg")  # no screen needed; only files are written
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = panels_for(runs)
    cols = 3
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, lines) in zip(axes.flat, panels):
        for i, run in enumerate(runs):
            colour = colours[i % len(colours)]
            keys = [(src, k, suffix if k == key else f" {_member(key, k)}")
                    for src, key, suffix in lines for k in _keys(run, src, key)]
            for j, (src, key, label) in enumerate(keys):
                steps, values = run.series(key, src)
                if not steps:
                    continue
                style = STYLES[j % len(STYLES)]
                # one run: its name on each line; several: the colour key says the run (above the panels), and a
                # panel's legend only which line style is which of its series
                label = run.label + label if len(runs) == 1 else (label.strip() or None) if i == 0 else None
                w = window or auto_window(len(values))
                if src == "steps" and w > 1:  # raw faint, smoothed on top
                    ax.plot(steps, values, style, color=colour, alpha=0.25, linewidth=0.8)
                    ax.plot(steps, moving_average(values, w), style, color=colour, linewidth=1.6, label=label)
                else:
                    ax.plot(steps, values, style, color=colour, linewidth=1.6, label=label,
                            marker="o" if src == "evals" else None, markersize=3)
        for i, run in enumerate(runs):  # a reset moves every curve; a reference sync moves the KL to it
            for key, _ in MARKS:
                marked = marked_steps(run, key)
                if len(marked) <= MAX_MARK_LINES and (key == "elastic_reset" or title.startswith("KL to reference")):
                    for step in marked:
                        ax.axvline(step, color=colours[i % len(colours)], linestyle=":", linewidth=0.8, alpha=0.5)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: a 4-step run gets no 1.25
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if "log scale" in title and all(v > 0 for line in ax.get_lines() for v in line.get_ydata()):
            ax.set_yscale("log")  # ratios: 0.01 and 100 are as far from 1
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if len(runs) == 1:
        fig.suptitle(runs[0].label, fontsize=11)
        fig.tight_layout()
    else:  # a colour key for the runs, above the panels
        from matplotlib.lines import Line2D

        key = [Line2D([0], [0], color=colours[i % len(colours)], linewidth=2, label=run.label)
               for i, run in enumerate(runs)]
        key_rows = math.ceil(len(runs) / 3)
        fig.legend(handles=key, loc="upper center", ncol=min(3, len(runs)), fontsize=9, frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 * key_rows / (3.4 * rows)))
    tmp = out.with_name(out.name + ".tmp" + out.suffix)  # keeps the suffix: matplotlib picks the format by it
    try:
        fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    os.replace(tmp, out)
    return out


def report(paths: list[str], out: str | None = None, window: int | None = None, log=print) -> Path:
    """Print each run's summary and draw the figure; returns its path (default: report.png in the first run)."""
    if not paths or not all(paths):  # "" would be read as the current folder
        raise ReportError("give at least one run directory, e.g. policyforge report runs/demo")
    if window is not None and window < 1:
        raise ReportError(f"--smooth {window}: the moving-average window must be 1 or more")
    runs = []
    for p in paths:
        try:
            runs.append(load_run(p))
        except ReportError as e:
            if len(paths) == 1 or "no metrics.jsonl or eval.jsonl records yet" not in str(e):
                raise
            log(f"note: {e}; left out of the report")  # a run that has just started: the others are still drawn
    if not runs:
        raise ReportError("none of the runs has records yet")
    target = Path(out) if out else runs[0].path / "report.png"
    if target.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ReportError(f"--out {str(target)!r}: give a .png, .svg or .pdf file")
    if not target.absolute().parent.is_dir():
        raise ReportError(f"--out {str(target)!r}: its folder {str(target.parent)!r} does not exist")
    summaries = ["\n".join(summary_lines(run)) for run in runs]
    plot(runs, target, window)  # before any printing: `report ... | head` still gets its figure
    for text in summaries:
        log(text)
    log(f"figure: {target}")
    return target
