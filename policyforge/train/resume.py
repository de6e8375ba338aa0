"""Guards around a run directory: a fresh run never mixes with an old one (and a failed start leaves
nothing), a resumed run keeps its own settings, and one process at a time trains it.

`--resume` promises the run an uninterrupted one would have been. A setting changed on
resume either could not take effect (the optimiser's lr and betas come back from the
checkpoint) or would quietly change the run midway (another seed draws other prompts,
another task makes the summary compare two tasks, another model becomes the reference),
while config.yaml claimed the new value for the whole run. So only the settings that
decide how long the run goes and what is logged or kept may differ.

config.yaml's relative paths (model.path, data.path, the reward's module, ...) mean what they
meant where the run started, so its first line records that directory, and a resume from
anywhere else works there (`in_start_dir`).
"""

from __future__ import annotations

import contextlib
import os
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import yaml

from policyforge.metrics.run_dir import LOG_FILES, write_atomic
from policyforge.rewards.spec import reward_model_paths, reward_specs
from policyforge.train.config import Config, ConfigError, load_yaml, to_yaml

# model.device: the sampler's RNG check refuses a switch of device type
MAY_CHANGE_ON_RESUME = ("train.steps", "train.stop_after", "train.progress", "train.tensorboard", "train.save_every",
                        "train.keep_checkpoints", "train.eval_every", "train.log_samples", "train.log_rollouts",
                        "model.device")
LOCK = "run.lock"
START_DIR = "# started in: "  # config.yaml's first line; YAML reads it as a comment


def start_dir_line() -> str:
    return f"{START_DIR}{Path.cwd()}\n"


def start_dir(run_path: Path) -> Path | None:
    """The directory the run was started in, as its config.yaml records; None for a run from before the record."""
    try:
        with (run_path / "config.yaml").open() as f:
            first = f.readline().rstrip("\n")
    except OSError:
        return None
    return Path(first[len(START_DIR):]) if first.startswith(START_DIR) else None


@contextmanager
def in_start_dir(run_path: Path, log):
    """Work in the run's start directory while resuming it (and come back after), so that a resume from
    another folder reads the same data, model and reward as the run did; yields the run's path, absolute
    when the working directory changes. A start directory that no longer exists is left alone."""
    here, origin = Path.cwd(), start_dir(run_path)
    if origin is None or not origin.is_dir() or origin.resolve() == here.resolve():
        yield run_path
        return
    run_path = run_path.resolve()
    log(f"resuming in {origin}, where the run started: its config's relative paths are read from there")
    os.chdir(origin)
    try:
        yield run_path
    finally:
        os.chdir(here)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k not in ("loss_kwargs", "advantage_kwargs", "drift", "drift_kwargs",
                                                                 "chat_template_kwargs"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    if isinstance(out.get("data.reward"), str):  # spacing after the commas does not change the functions
        out["data.reward"] = ", ".join(reward_specs(out["data.reward"]))
    if isinstance(out.get("data.reward_model"), (str, list)):  # ... nor the reward models (or their list)
        out["data.reward_model"] = ",".join(reward_model_paths(out["data.reward_model"]))
    return out


def check_resume_settings(run_path: Path, cfg: Config) -> None:
    """ConfigError naming every setting of `cfg` that differs from the run's config.yaml and may not change, or
    saying the run has no checkpoint to continue from (before the config is printed and the data read)."""
    step = _checkpoint_step(run_path)
    if step is None:
        raise ConfigError(f"--resume {run_path}: the run has no checkpoint to continue from (it stopped before its "
                          "first, train.save_every); delete it and start again, or set another train.run_name")
    saved, now = (_flat(yaml.safe_load(to_yaml(c))) for c in (load_yaml(run_path / "config.yaml"), cfg))
    changed = [k for k in sorted(set(saved) | set(now))
               if saved.get(k) != now.get(k) and k not in MAY_CHANGE_ON_RESUME and not k.startswith("sft.")
               and not (k == "model.path" and moved(saved[k]))]
    if changed:
        shown = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
        more = f" (and {len(changed) - 6} more)" if len(changed) > 6 else ""
        verb = "differs" if len(changed) == 1 else "differ"
        weights = run_path / "checkpoints" / f"step_{step:06d}"
        raise ConfigError(f"--resume continues {run_path} as it was configured, but {shown}{more} {verb} from its "
                          f"config.yaml; only {', '.join(MAY_CHANGE_ON_RESUME)} may change. To train on with other "
                          f"settings, start a new run from a checkpoint's weights (--model.path {weights})")
    if cfg.train.steps < step:
        raise ConfigError(f"train.steps={cfg.train.steps} but the checkpoint step_{step:06d} is at step {step}: set "
                          f"train.steps to {step} or more")
    if cfg.train.stop_after is not None and cfg.train.stop_after <= step:  # one more step
        raise ConfigError(f"train.stop_after={cfg.train.stop_after} but the run's checkpoint is at step {step} "
                          "already: give a later step, or leave it out to train to the end")


def moved(model_path: str | None) -> bool:
    """Whether a run's recorded model.path is not on this machine (a run moved from a laptop to a cluster, or a
    base model moved): a resume may then give the folder's new place as --model.path (its weight files' contents
    are compared at start-up, changed_inputs)."""
    return bool(model_path) and model_path != "builtin:tiny" and not Path(model_path).exists()


def resume_command(run_path: Path, processes: int = 1) -> str:
    """How to continue the run at `run_path`: --resume in as many processes as it was written by (a checkpoint of
    a data-parallel run holds each process's sampler state, so another count is refused)."""
    if processes == 1:
        return f"--resume {run_path}"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", processes))  # torchrun's processes on this node
    layout = (f"--nproc-per-node {processes}" if local in (0, processes) or processes % local
              else f"--nnodes {processes // local} --nproc-per-node {local}")
    return (f"`torchrun {layout} -m policyforge.cli train --resume {run_path}` (or "
            f"`policyforge train --ray-workers {processes} --resume {run_path}`)")


def stopped_text(how: str, run_path: Path, processes: int = 1, mended: str = "") -> str:
    """`how` the run stopped ("interrupted at step 4"), then what to do: continue from the newest checkpoint, or,
    before the first one, start again; `mended` ("once it is mended, ") goes before either."""
    if (run_path / "checkpoints" / "latest").exists():
        return f"{how}; the newest checkpoint is kept: {mended}continue with {resume_command(run_path, processes)}"
    return (f"{how}, before the first checkpoint (train.save_every): nothing to resume; {mended}delete {run_path} "
            "and start again, or set another train.run_name")


def _checkpoint_step(run_path: Path) -> int | None:
    """The step of the run's newest checkpoint, read off its folder's name (step_<N>); None without one."""
    from policyforge.train.checkpoint import latest, step_of

    try:
        return step_of(latest(run_path))
    except FileNotFoundError:
        return None


def claim(run_path: Path, fresh: bool = False) -> None:
    """Mark the run directory as this process's; ConfigError while another live process holds it (two
    processes appending to one run would interleave their records). `fresh`: this process starts a new run."""
    lock = run_path / LOCK
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        holder = _pid_in(lock)
        if holder not in (None, os.getpid()) and _alive(holder):
            if fresh:  # two new runs given, or timed to, the same name
                raise ConfigError(f"{run_path} was just taken by process {holder}, a run started at the same time "
                                  "under the same name: give each run its own train.run_name") from None
            raise ConfigError(f"{run_path} is in use by process {holder} (a train or --resume of this run): "
                              "wait for it to end or stop it") from None
        write_atomic(lock, f"{os.getpid()}\n")  # a lock left by a process that died
        return
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")


def release(run_path: Path) -> None:
    lock = run_path / LOCK
    if _pid_in(lock) == os.getpid():
        lock.unlink(missing_ok=True)


def _pid_in(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def saved_config(cfg: Config) -> str:
    """config.yaml of the run: without train.stop_after, which ends one invocation (so --resume runs on)."""
    return start_dir_line() + to_yaml(replace(cfg, train=replace(cfg.train, stop_after=None)))


def check_fresh(path: Path) -> None:
    """Refuse to start a new run in `path` when a run already wrote records there.

    Any of the record files counts: a run that died after its step-0 evaluation has
    eval.jsonl and samples.jsonl but no metrics.jsonl, and appending to them would mix two runs.
    """
    if not any((path / name).exists() for name in LOG_FILES):
        return
    if (path / "checkpoints" / "latest").exists():
        raise ConfigError(f"run directory {str(path)!r} already holds a run: continue it with --resume {path}, "
                          "or set another train.run_name")
    raise ConfigError(f"run directory {str(path)!r} holds a run that ended before its first checkpoint: "
                      "delete that directory, or set another train.run_name")


def discard_unstarted(path: Path) -> None:
    """Remove what a fresh run wrote when it failed before writing any record (its step-0 evaluation
    failed, say): config.yaml, then the directory if nothing else is in it. A run with records stays."""
    if any((path / name).exists() for name in (*LOG_FILES, "checkpoints")):
        return
    (path / "config.yaml").unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty (the lock is released after this), or already gone
        if not any(p.name != LOCK for p in path.iterdir()):
            release(path)
            path.rmdir()


def changed_inputs(state: dict, cfg: Config, now: dict) -> list[str]:
    """Warnings for the files a resumed run reads whose contents changed since it started: `now` holds this start's
    fingerprints (checkpoint.weights_fingerprint / data_fingerprint) under the keys the checkpoint's `state` saved
    them with: base_weights (model.path), reward_models (folder -> fingerprint), data_files (option -> SHA-256);
    `moved_from` is the run's old model.path when the resume gives its new place (`moved`), and base_content
    (checkpoint.weights_sample) then tells a copy of the base from another model.
    A checkpoint from before a key was saved compares as unchanged."""
    out = []
    saved_base = state.get("base_weights", now["base_weights"])  # saved since 2026-12-01
    if now.get("moved_from"):  # a copy has new modification times: its contents are what can be compared
        saved_content = state.get("base_content")  # saved since 2026-12-02
        if saved_content is None or saved_content != now.get("base_content"):
            why = ("its weight files' contents differ (a model of the same shape, fine-tuned, is another model)"
                   if saved_content is not None else "this run's checkpoints are older than the record of the base's "
                   "contents that could tell a copy from another model")
            raise ConfigError(f"model.path {cfg.model.path!r} cannot be taken as the run's base {now['moved_from']!r} "
                              f"moved: {why}; give the folder the run started from, or start a new run from a "
                              "checkpoint's weights")
        out.append(f"note: model.path moved from {now['moved_from']!r} to {cfg.model.path!r} (its weight files hold "
                   "the run's base's contents); later checkpoints record the new place")
    elif saved_base != now["base_weights"]:
        out.append(f"warning: the weight files of model.path {cfg.model.path!r} changed since this run started; the "
                   "reference policy" + (" and the LoRA base are" if cfg.model.lora_rank else " is")
                   + " read from them, so the resumed run differs from an uninterrupted one")
    saved_models = state.get("reward_models", now["reward_models"])  # saved since 2026-12-02
    for folder in sorted(set(saved_models) | set(now["reward_models"])):
        if saved_models.get(folder) != now["reward_models"].get(folder):
            out.append(f"warning: the weight files of the reward model {folder!r} (data.reward_model) changed since "
                       "this run started: the resumed run scores with other weights than an uninterrupted one")
    saved_files = state.get("data_files", now["data_files"])  # saved since 2026-12-01
    for option in sorted(set(saved_files) | set(now["data_files"])):
        if saved_files.get(option) != now["data_files"].get(option):
            effect = ("the completions it replays differ from an uninterrupted run's" if option == "data.replay_pool"
                      else "the held-out split and the training rows come from its new contents, so held-out rows "
                      "may have been trained on, and the resumed run differs from an uninterrupted one")
            out.append(f"warning: the file of {option} {getattr(cfg.data, option[5:])!r} changed since this run "
                       f"started: {effect}")
    return out
