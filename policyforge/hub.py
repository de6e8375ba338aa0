"""Hints for a missing local path that could be a Hugging Face Hub id: runs read local files and never
download, so the hint says where the local cache has it or how to fetch it once."""

from __future__ import annotations

from pathlib import Path


def could_be_hub_id(name: str) -> bool:
    """'org/name' with no local folder 'org' (checkpoints/sft before sft has run is a missing local path)."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith(".") and not Path(parts[0]).exists()


def model_hint(name: str) -> str:
    """'; ...' for a missing model path: its copy in the local Hugging Face cache, or how to fetch it."""
    if not could_be_hub_id(name):
        return ""
    try:
        from huggingface_hub import snapshot_download

        cached = snapshot_download(name, local_files_only=True)
    except Exception:  # not cached, or no huggingface_hub: the download hint below
        cached = None
    if cached:
        return f"; if {name!r} is a Hugging Face Hub id, your Hugging Face cache has it: --model.path {cached}"
    return (f"; if {name!r} is a Hugging Face Hub id: policyforge reads local folders and never downloads during a "
            f"run, so fetch it once (hf download {name} --local-dir DIR) and pass DIR")


def dataset_hint(name: str) -> str:
    """'; ...' for a missing data file named like a Hub dataset (no file suffix): how to save it as a file."""
    if not could_be_hub_id(name) or Path(name).suffix:
        return ""
    return (f"; if {name!r} is a Hugging Face Hub dataset id: policyforge reads local files, so save it once as one "
            f"(datasets.load_dataset({name!r}, split='train').to_json('train.jsonl')) and pass that file")
