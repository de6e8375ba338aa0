"""Checkpoints that are written atomically and resume exactly.

A checkpoint is a folder `checkpoints/step_<N>/` holding the model and tokenizer
(save_pretrained, safetensors; for a LoRA policy the adapter alone, peft's
adapter_model.safetensors and adapter_config.json, the base being re-read from
model.path on resume) and `trainer.pt` (optimiser, scheduler, every RNG
state, step, data position, the algorithms' persistent state). It is written to
`step_<N>.tmp/` and renamed into place, and `checkpoints/latest` is replaced
atomically after it, so an interruption at any moment leaves the previous
checkpoint intact and `latest` pointing to a complete one. Every file and folder
is fsync'd before its rename, and the folder holding the new name after it, so
that holds after a power loss too, not only after a killed process.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from policyforge.metrics.run_dir import LOG_FILES, fsync_path, write_atomic
from policyforge.models import lora
from policyforge.train.config import ConfigError


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state(), "sampler": generator.get_state(),
             "sampler_device": generator.device.type}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore every RNG; a ConfigError when the sampler's state comes from a generator on another
    device type (a CUDA generator's state is its seed and offset, a CPU one's a Mersenne Twister):
    that stream cannot continue here, so the resume would not be exact."""
    saved = state.get("sampler_device")  # absent before 2026-12-01: the state's size tells the kind
    if saved is None and state["sampler"].numel() != generator.get_state().numel():
        saved = "another device type"
    if saved is not None and saved != generator.device.type:
        raise ConfigError(f"the checkpoint's sampler ran on {saved}, this run's model.device puts it on "
                          f"{generator.device.type}: resume with the model.device the run was trained on, "
                          "or start a new run from the checkpoint's weights (model.path)")
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def quiet_hf_progress():
    """Hide transformers' own progress bars ("Writing model shards") while saving: the run has its own bar."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def save_model_dir(path: Path, model, tokenizer) -> None:
    # a LoRA policy saves its adapter; left to "auto", peft would look its base model up (on the Hub, for
    # builtin:tiny) to see whether the vocabulary was resized, which policyforge never does
    extra = {"save_embedding_layers": False} if lora.is_lora(model) else {}
    with quiet_hf_progress():
        model.save_pretrained(path, safe_serialization=True, **extra)
        tokenizer.save_pretrained(path)
    if extra:  # peft's generated model card: 200 lines of template naming the base by a relative path
        (Path(path) / "README.md").unlink(missing_ok=True)


def _tensor_bytes(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, dict):
        return sum(_tensor_bytes(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return sum(_tensor_bytes(v) for v in x)
    return 0


def check_space(root: Path, model, trainer_state: dict[str, Any], name: str) -> None:
    """OSError(ENOSPC) naming the sizes before a checkpoint that cannot fit is started: a full disk midway
    fails deep inside torch.save with no word of space (the previous checkpoint stays either way)."""
    saved = [p for p in model.parameters() if p.requires_grad or not lora.is_lora(model)]  # LoRA: the adapter
    need = sum(p.numel() * p.element_size() for p in saved) + _tensor_bytes(trainer_state)
    free = shutil.disk_usage(root).free
    if free < need * 1.05 + (16 << 20):
        raise OSError(errno.ENOSPC, f"no room for checkpoint {name}: it needs about {need / 2**20:.0f} MB and "
                      f"{free / 2**20:.0f} MB are free; free some space and --resume", str(root))


def fsync_tree(path: Path) -> None:
    """fsync every file under `path`, then every folder, deepest first: save_pretrained and torch.save
    leave their bytes in the page cache, and a power loss after the rename would keep the name of a
    checkpoint whose files are empty."""
    for folder, _, files in os.walk(path, topdown=False):
        for name in files:
            fsync_path(os.path.join(folder, name))
        fsync_path(folder)


def save(run_path: Path, step: int, model, tokenizer, trainer_state: dict[str, Any], keep: int = 2) -> Path:
    root = run_path / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f"step_{step:06d}.tmp"
    for stale in root.glob("step_*.tmp"):  # this one's, or one a killed run left behind
        shutil.rmtree(stale, ignore_errors=True)
    check_space(root, model, trainer_state, final.name)
    save_model_dir(tmp, model, tokenizer)
    torch.save(trainer_state, tmp / "trainer.pt")
    fsync_tree(tmp)
    for log in LOG_FILES:  # a checkpoint on disk with logs that end before it would leave a gap after a resume
        if (run_path / log).exists():
            fsync_path(run_path / log)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(root)  # the rename on disk before `latest` names it
    write_atomic(root / "latest", final.name + "\n")
    done = complete_checkpoints(root)
    for old in done[:-keep or None]:
        if old != final:
            shutil.rmtree(old)
    return final


def weights_fingerprint(model_path: str) -> dict[str, list[int]] | None:
    """Size and modification time of each weight file of a model folder (None for builtin:tiny): cheap to take
    at every start, and enough to tell that model.path was replaced since a run began."""
    folder = Path(model_path)
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file())
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


SAMPLE_BLOCK = 1 << 16  # bytes read at each of three places of a weight file by weights_sample


def weights_sample(model_path: str) -> dict[str, str] | None:
    """A content fingerprint of a model folder's weight files (*.safetensors, pytorch_model*.bin; None for
    builtin:tiny): SHA-256 of each file's size and of three blocks of it (start, middle, end). A copy of the folder
    matches whatever its files' times; a fine-tune of the same shape does not, as its weights differ. Cheap: a few
    hundred KiB read whatever the model's size."""
    folder = Path(model_path)
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix == ".safetensors" or (
        p.name.startswith("pytorch_model") and p.suffix == ".bin")))
    out = {}
    for p in files:
        size, digest = p.stat().st_size, hashlib.sha256()
        digest.update(str(size).encode())
        with open(p, "rb") as f:
            for at in sorted({0, max(size // 2 - SAMPLE_BLOCK // 2, 0), max(size - SAMPLE_BLOCK, 0)}):
                f.seek(at)
                digest.update(f.read(SAMPLE_BLOCK))
        out[p.name] = digest.hexdigest()
    return out


def data_fingerprint(data_cfg) -> dict[str, str]:
    """SHA-256 of the data.path, data.eval_path and data.replay_pool files (the built-in tasks have none): the
    held-out split, the order of training rows and the replayed completions follow their contents, so a resume
    tells when they changed."""
    out = {}
    for option, path in (("data.path", data_cfg.path), ("data.eval_path", data_cfg.eval_path),
                         ("data.replay_pool", data_cfg.replay_pool)):
        if path and Path(path).is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out[option] = digest.hexdigest()
    return out


def step_of(path: Path) -> int | None:
    """N of a checkpoint folder's name step_<N>; None for any other name (a step_<N>.tmp being written)."""
    digits = path.name[5:]  # ASCII only: str.isdigit() also takes characters int() refuses, such as '²'
    return int(digits) if path.name.startswith("step_") and digits.isascii() and digits.isdigit() else None


def complete_checkpoints(root: Path) -> list[Path]:
    """The checkpoints/step_<N> folders, oldest first by N (a .tmp folder is one being written)."""
    done = [p for p in root.glob("step_*") if p.is_dir() and step_of(p) is not None]
    return sorted(done, key=step_of)


def latest(run_path: Path) -> Path:
    """The newest complete checkpoint of a run; a clear error when there is none.

    `latest` names it; without that file (a run killed between its first checkpoint's rename and the
    pointer's write) the newest step_<N> folder is it: a folder gets that name only once complete.
    """
    root = run_path / "checkpoints"
    pointer = root / "latest"
    if pointer.exists():
        return root / pointer.read_text().strip()
    done = complete_checkpoints(root)
    if not done:
        raise FileNotFoundError(f"{run_path} has no checkpoint to resume from (no checkpoints/latest)")
    return done[-1]


def base_changed(ckpt: Path) -> list[str]:
    """A warning when `ckpt` is a LoRA checkpoint whose base model's weight files are not the ones its run trained
    on (checkpoint.weights_fingerprint at the run's start; a base given a new place, lora.moved_base, is compared by
    weights_sample, as a copy has new times): the adapter would be merged into, or evaluated on, another model."""
    if not lora.is_adapter_dir(str(ckpt)) or not (ckpt / "trainer.pt").exists():
        return []
    state = load_trainer_state(ckpt)  # a LoRA run's trainer state is small: adapters only
    saved, sample = state.get("base_weights"), state.get("base_content")
    base = lora.adapter_base(str(ckpt))
    now = weights_fingerprint(base)
    if saved is None or now is None or saved == now:
        return []
    recorded = json.loads((ckpt / lora.ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if base != recorded and sample is not None and sample == weights_sample(base):
        return []  # the base moved, and a copy's contents are the run's base's
    return [f"warning: the weight files of the LoRA base {base!r} changed since the run of {ckpt} trained on them; "
            "the adapter goes on the base as it is now, which is not the policy the run trained"]


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    # onto the CPU: RNG states must be CPU tensors, and optimizer.load_state_dict moves its state to the
    # parameters' device, so a checkpoint written on a GPU loads on any machine
    return torch.load(ckpt / "trainer.pt", weights_only=False, map_location="cpu")


def load_weights(model, ckpt: Path) -> None:
    from safetensors.torch import load_file

    device = str(next(model.parameters()).device)
    adapter = (ckpt / lora.ADAPTER_WEIGHTS).exists()
    if adapter != lora.is_lora(model):  # resume refuses a changed model.lora_rank, but a copied folder may differ
        held, wanted = ("a LoRA adapter", "full weights") if adapter else ("full weights", "a LoRA adapter")
        raise ConfigError(f"checkpoint {ckpt} holds {held}, but this run's model takes {wanted} "
                          "(model.lora_rank must be what the run was trained with)")
    if adapter:
        load_adapter_weights(model, ckpt, load_file(ckpt / lora.ADAPTER_WEIGHTS, device=device))
        return
    files = sorted(ckpt.glob("*.safetensors"))
    state = {}
    for f in files:
        state.update(load_file(f, device=device))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes differ: another model; torch's message lists every tensor
        first = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e)[:200])
        raise ConfigError(f"checkpoint {ckpt} does not fit model.path's model ({first})") from None
    # tied embeddings are saved once; anything else missing means a different model
    missing = [k for k in missing if "lm_head" not in k]
    if missing or unexpected:
        raise ConfigError(f"checkpoint {ckpt} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")


def load_adapter_weights(model, ckpt: Path, state: dict) -> None:
    """A LoRA checkpoint's adapter into LoRA policy `model` (its base weights are model.path's, as loaded)."""
    try:
        missing, unexpected = lora.load_adapter(model, state)
    except RuntimeError as e:  # another rank
        raise ConfigError(f"checkpoint {ckpt}'s adapter does not fit this run's LoRA ({e})") from None
    if missing or unexpected:
        raise ConfigError(f"checkpoint {ckpt}'s adapter does not match this run's LoRA: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}")
