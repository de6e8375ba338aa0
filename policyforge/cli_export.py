"""`policyforge export`: a run's policy as a standalone Hugging Face model folder, LoRA adapters merged in.

A LoRA run's checkpoints hold the adapter alone and name their base model by path; a full run's hold the whole
model next to the trainer state. Either way `export` writes a folder any `from_pretrained` (vLLM, TRL, a serving
stack) reads with nothing else: config, weights (safetensors) and tokenizer, and no trainer state.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

EXPORT_HELP = """usage: policyforge export SOURCE --out DIR [--dtype float32|bfloat16|float16] [--lora-base DIR]

SOURCE is a run directory (its newest checkpoint), one checkpoint (RUN/checkpoints/step_N), or a model folder.
A LoRA checkpoint's adapter is merged into its base model (the folder its adapter_config.json names), so DIR
holds the whole policy: config.json, model.safetensors and the tokenizer, loadable with
AutoModelForCausalLM.from_pretrained(DIR) and nothing else. --lora-base DIR: where the base model is now, for a
LoRA checkpoint whose recorded base (an absolute path) is not on this machine (a run trained elsewhere). The tokenizer is the checkpoint's, as training
used it: padding on the left, and EOS as its pad token where the model had none (set them back for a trainer
that pads on the right). --dtype casts the weights on the way; by default they keep the dtype the run computed in
(its config.yaml's model.dtype; float32 for a model folder), so the export computes what the run did. Every file is
written readable by all (a serving stack may run as another user). DIR must not exist yet, or be empty; it is written whole or not at all (a folder
beside it, renamed at the end).
"""


def cmd_export(args: list[str]) -> None:
    from policyforge.cli import _pop

    if any(a in ("-h", "--help") for a in args):
        print(EXPORT_HELP, end="")
        return
    out, dtype, base = _pop(args, "--out"), _pop(args, "--dtype"), _pop(args, "--lora-base")
    unknown = [a for a in args if a.startswith("-")]
    if unknown:
        raise SystemExit(f"error: policyforge export has no option {unknown[0].split('=', 1)[0]}; its options are "
                         "--out DIR, --dtype and --lora-base DIR (policyforge export --help)")
    if len(args) != 1:
        raise SystemExit("error: policyforge export takes one SOURCE (a run directory, a checkpoint or a model "
                         f"folder) and --out DIR; got {' '.join(args) or 'no SOURCE'} (policyforge export --help)")
    if out is None:
        raise SystemExit("error: policyforge export needs --out DIR, the folder to write the model to")
    from policyforge.models.lora import moved_base

    with moved_base(base):  # a LoRA checkpoint whose base is elsewhere on this machine
        written = export(args[0], out, dtype, log=lambda line: print(line, file=sys.stderr))
    print(written)


def source_model(source: str) -> Path:
    """The model folder SOURCE names: a run directory's newest checkpoint, a checkpoint, or a model folder."""
    from policyforge.models.load import ModelError
    from policyforge.train import checkpoint

    path = Path(source)
    if not path.exists():
        raise ModelError(f"export: {source!r} does not exist (give a run directory, a checkpoint or a model folder)")
    if (path / "checkpoints").is_dir():  # a run directory
        try:
            return checkpoint.latest(path)
        except FileNotFoundError:
            raise ModelError(f"export: run {source!r} has no checkpoint yet (train.save_every)") from None
    return path


def run_dtype(model_dir: Path) -> str:
    """The model.dtype of the run a checkpoint belongs to (RUN/checkpoints/step_N: RUN/config.yaml); float32
    for a folder that is no run's checkpoint."""
    import yaml

    config = model_dir.parent.parent / "config.yaml"
    if model_dir.parent.name != "checkpoints" or not config.exists():
        return "float32"
    try:
        return ((yaml.safe_load(config.read_text()) or {}).get("model") or {}).get("dtype") or "float32"
    except (OSError, yaml.YAMLError):
        return "float32"


def export(source: str, out: str, dtype: str | None = None, log=print) -> Path:
    """Write SOURCE's policy (LoRA merged) to `out` as a standalone model folder, in `dtype` (None: the run's);
    returns its path."""
    from policyforge.models.load import DTYPES, ModelError, load_model
    from policyforge.train.checkpoint import base_changed, fsync_tree, save_model_dir

    if dtype is not None and dtype not in DTYPES:
        raise ModelError(f"export: --dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ModelError(f"export: --out {out!r} already exists and is not an empty folder: name a new one")
    model_dir = source_model(source)
    for warning in base_changed(model_dir):
        log(warning)
    dtype = dtype or run_dtype(model_dir)
    model, tok = load_model(str(model_dir), dtype, "cpu")  # an adapter loads merged into its base
    made = [p for p in reversed(target.parents) if not p.exists()]  # folders this export creates, outermost first
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # one a killed export left
    try:
        save_model_dir(tmp, model, tok)
        mask = os.umask(0)
        os.umask(mask)
        for f in tmp.rglob("*"):  # safetensors writes its file for its owner alone: a server may be another user
            f.chmod((0o777 if f.is_dir() else 0o666) & ~mask)
        fsync_tree(tmp)
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(made):  # innermost first: only the empty ones this export made
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    params = sum(p.numel() for p in model.parameters())
    log(f"export: {model_dir} -> {target} ({params / 1e6:.1f}M parameters, {dtype})")
    return target
