"""Loading the policy: any local Hugging Face causal LM, or the built-in tiny model."""

from __future__ import annotations

from pathlib import Path

import torch

from policyforge.models.tiny import char_tokenizer, tiny_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelError(ValueError):
    """A model the user named that cannot be loaded."""


def pick_device(name: str) -> torch.device:
    """The device `name` means ('auto' = cuda if available, else cpu); ModelError when torch does not know
    the name or this machine lacks the device, so the run fails before anything is loaded or written."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):  # torch's message lists ~20 backends; name the usual ones
        raise ModelError(f"model.device={name!r} is not a device torch knows; "
                         "use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelError(f"model.device={name!r} but no CUDA device is available; use 'auto' or 'cpu'")
        if device.index is not None and device.index >= count:
            raise ModelError(f"model.device={name!r} but this machine has {count} CUDA device(s): "
                             f"cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"model.device={name!r} but MPS is not available on this machine; use 'auto' or 'cpu'")
    return device


def pick_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ModelError(f"model.dtype={name!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


def check_model_path(path: str) -> None:
    """Fail early, before data or other models are touched, when `path` cannot be a model."""
    if path == "builtin:tiny":
        return
    p = Path(path)
    if not p.is_dir():
        raise ModelError(f"model path {path!r} does not exist (give a local model directory or 'builtin:tiny')")
    if not (p / "config.json").exists():
        raise ModelError(f"model path {path!r} has no config.json: not a Hugging Face model directory")


def load_model(path: str, dtype: str = "float32", device: str = "auto", seed: int = 0):
    """Returns (model, tokenizer) on the chosen device; the tokenizer pads on the left."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    check_model_path(path)
    torch_dtype, torch_device = pick_dtype(dtype), pick_device(device)  # both before any weights are read
    if path == "builtin:tiny":
        tok = char_tokenizer()
        model = tiny_model(tok, seed=seed)
    else:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    tok.padding_side = "left"
    if tok.pad_token_id is None:  # many causal LMs ship without one; EOS is masked out anyway
        tok.pad_token = tok.eos_token
    return model.to(device=torch_device, dtype=torch_dtype), tok
