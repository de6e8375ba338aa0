"""Loading the policy: any local Hugging Face causal LM, or the built-in tiny model."""

from __future__ import annotations

from pathlib import Path

import torch

from policyforge.models.tiny import char_tokenizer, tiny_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelError(ValueError):
    """A model the user named that cannot be loaded."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.device='cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


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
    if path == "builtin:tiny":
        tok = char_tokenizer()
        model = tiny_model(tok, seed=seed)
    else:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    tok.padding_side = "left"
    if tok.pad_token_id is None:  # many causal LMs ship without one; EOS is masked out anyway
        tok.pad_token = tok.eos_token
    return model.to(device=pick_device(device), dtype=DTYPES[dtype]), tok
