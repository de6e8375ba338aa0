"""LoRA through peft: the wrapped policy, its reference (the same model, adapters off), adapter folders.

LoRA ("LoRA: Low-Rank Adaptation of Large Language Models", arXiv 2106.09685) trains
W + (alpha / r) B A in place of each adapted weight W (out x in), with A (r x in) and
B (out x r) the only trainable weights; B starts at zero, so the wrapped model starts as
the base model exactly. peft does the wrapping; this module decides how the rest of
policyforge treats the wrapped model:

- reference: with model.ref_path unset, a LoRA run's reference policy is its base model,
  that is the policy with its adapters disabled (`adapters_off`, peft's disable_adapter),
  not a frozen copy: no second model in memory (TRL's GRPOTrainer does the same).
- lean paths: the lean decoder reads W + (alpha / r) B A (`linear_weights`) once per
  `sample` call; the packed training forward calls the LoRA layers themselves, so
  gradients reach A and B. Only vanilla LoRA over nn.Linear qualifies (`linear_problem`).
- checkpoints: the adapter alone (peft's save_pretrained: adapter_model.safetensors and
  adapter_config.json, which names the base model by its absolute path); an adapter
  folder given as a model path loads as its base with the adapter merged in (`merged`).

peft is an optional dependency (`pip install 'policyforge[lora]'`): nothing here imports it
until a LoRA model is built or loaded, and the checks on modules look it up in sys.modules
(no module can be a peft layer unless peft was imported).
"""

from __future__ import annotations

import contextvars
import json
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from torch import Tensor, nn

INSTALL = "pip install 'policyforge[lora]'"
# where a moved LoRA base is now (export / eval --lora-base): adapters whose recorded base is missing here load it
_MOVED_BASE: contextvars.ContextVar[str | None] = contextvars.ContextVar("policyforge_moved_base", default=None)
ALL_LINEAR = "all-linear"  # peft's name for every linear layer but the output head
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


def _model_error(message: str) -> Exception:
    from policyforge.models.load import ModelError  # load.py imports this module's users: imported late

    return ModelError(message)


def require_peft(why: str):
    """The peft module; ModelError saying how to install it when it is missing."""
    try:
        import peft
    except ImportError:
        raise _model_error(f"{why} needs peft, which is not installed: {INSTALL}") from None
    return peft


def is_lora(model) -> bool:
    """True for a peft-wrapped model (a LoRA policy)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def transformers_model(model):
    """The transformers model inside a peft wrapper (the lean paths read its modules); any other model as is."""
    return model.get_base_model() if is_lora(model) else model


def wrap(model, rank: int, alpha: float, dropout: float, targets: list[str], base_path: str):
    """`model` with LoRA adapters of rank `rank` on the modules `targets` (['all-linear'] = every linear layer
    but the output head); only the adapters are trainable. `base_path` is what adapter_config.json records as
    the base model (made absolute for a directory, so the checkpoint loads from anywhere).

    ModelError naming model.lora_targets when they match no module of the model.
    """
    peft = require_peft(f"model.lora_rank={rank}")
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, task_type="CAUSAL_LM",
                             target_modules=ALL_LINEAR if list(targets) == [ALL_LINEAR] else list(targets))
    try:
        with warnings.catch_warnings():  # peft reads transformers' renamed is_gradient_checkpointing, and sets
            warnings.simplefilter("ignore", FutureWarning)  # fan_in_fan_out itself for GPT-2's Conv1D, saying so
            warnings.filterwarnings("ignore", "fan_in_fan_out is set to False", UserWarning)
            wrapped = peft.get_peft_model(model, config)
    except ValueError as e:  # NoMatchingPeftModuleError and the like: the user's target names
        names = ", ".join(sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                                  if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"}))  # GPT-2's c_attn
        raise _model_error(f"model.lora_targets={list(targets)}: {str(e).splitlines()[0]} (its linear layers: "
                           f"{names}; or use {ALL_LINEAR})") from None
    wrapped.peft_config["default"].base_model_name_or_path = (os.path.abspath(base_path) if os.path.isdir(base_path)
                                                              else base_path)
    return wrapped


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameter counts (a tied weight counted once)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


@contextmanager
def adapters_off(model):
    """Within the block, `model` (a LoRA policy) computes its base model: every adapter disabled (peft's
    disable_adapter, which re-enables them, trainable again, however the block ends)."""
    if not is_lora(model):
        raise TypeError(f"adapters_off: {type(model).__name__} is not a LoRA (peft) model, so it has no base "
                        "model to stand in as its own reference")
    with model.disable_adapter():
        yield model


# ---- the lean paths -------------------------------------------------------------------------------------------


def is_lora_linear(module) -> bool:
    layer = sys.modules.get("peft.tuners.lora.layer")
    return layer is not None and isinstance(module, layer.Linear)


def linear_problem(lin) -> str | None:
    """None when `lin` is a vanilla peft LoRA layer over an nn.Linear, computing
    base(x) + sum over active adapters of scaling * B A dropout(x), else what it is instead."""
    if not is_lora_linear(lin):
        return "adapters or quantisation"
    if type(lin.base_layer) is not nn.Linear:
        return f"LoRA over {type(lin.base_layer).__name__}"
    active = [a for a in lin.active_adapters if a in lin.lora_A]
    if any(a in getattr(lin, "lora_variant", {}) for a in active) or any(
            getattr(lin, "use_dora", {}).get(a, False) for a in active):  # peft before 0.16 has use_dora only
        return "a LoRA variant (DoRA or another), not vanilla LoRA"
    if any(getattr(lin, "lora_bias", {}).get(a, False) for a in active):
        return "LoRA with a bias"
    if lin.merged:
        return "LoRA merged into its base weight"
    return None


def effective_weight(lin) -> Tensor:
    """W + sum over active adapters of scaling * B A, in W's dtype (peft's own get_delta_weight, so the same
    numbers as merging the adapter), or W itself while adapters are disabled. Call it without grad: it is
    the weight the layer computes with in eval mode (LoRA dropout inactive), as the sampler runs."""
    weight = lin.base_layer.weight
    if lin.disable_adapters:
        return weight
    for adapter in lin.active_adapters:
        if adapter in lin.lora_A:
            weight = weight + lin.get_delta_weight(adapter)  # float32 adapters on a bfloat16 base: added in float32
    return weight.to(lin.base_layer.weight.dtype)


def linear_weights(lin) -> tuple[Tensor, Tensor | None]:
    """(weight, bias) a projection computes with: an nn.Linear's own, a LoRA layer's effective weight."""
    if type(lin) is nn.Linear:
        return lin.weight, lin.bias
    return effective_weight(lin), lin.base_layer.bias


# ---- checkpoints and adapter folders ---------------------------------------------------------------------------


def adapter_state(model) -> dict[str, Tensor]:
    """The adapter's tensors as peft saves them (keys without the adapter name). Embedding layers are never
    added: policyforge does not resize the vocabulary, and peft's check would look the base model up."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, save_embedding_layers=False)


def load_adapter(model, state: dict[str, Tensor]) -> tuple[list[str], list[str]]:
    """Copy a saved adapter (`adapter_state`'s keys) into LoRA model `model`; returns (missing, unexpected)
    keys, and loads nothing unless both are empty. A shape mismatch (another rank) raises RuntimeError."""
    from peft import set_peft_model_state_dict

    expected = adapter_state(model)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        return missing, unexpected
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise RuntimeError(f"size mismatch for {key}: saved {tuple(value.shape)}, "
                               f"model {tuple(expected[key].shape)}")
    set_peft_model_state_dict(model, state)
    return [], []


def is_adapter_dir(path: str) -> bool:
    return path != "builtin:tiny" and (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str) -> str:
    """The base model an adapter folder names (adapter_config.json's base_model_name_or_path); ModelError
    when the folder cannot be one."""
    p = Path(path)
    try:
        base = json.loads((p / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as e:
        raise _model_error(f"model path {path!r}: its {ADAPTER_CONFIG} cannot be read ({e})") from None
    if not base:
        raise _model_error(f"model path {path!r} is a LoRA adapter whose {ADAPTER_CONFIG} names no base model "
                           "(base_model_name_or_path): set it to the base model's directory")
    if not (p / ADAPTER_WEIGHTS).exists():
        raise _model_error(f"model path {path!r} is a LoRA adapter folder without {ADAPTER_WEIGHTS}")
    moved = _MOVED_BASE.get()
    if moved and base != "builtin:tiny" and not Path(base).exists():  # recorded on another machine, or moved
        return moved
    return base


@contextmanager
def moved_base(path: str | None):
    """Within the block, a LoRA adapter whose recorded base (adapter_config.json's absolute path) does not exist on
    this machine loads `path` as its base instead: a run trained where the base lived elsewhere (a laptop's
    folder, a cluster's scratch). None changes nothing."""
    token = _MOVED_BASE.set(path)
    try:
        yield
    finally:
        _MOVED_BASE.reset(token)


def merged(model, path: str):
    """Base `model` with the adapter in folder `path` merged into its weights (a plain transformers model:
    the lean paths apply, and the numbers are those of the adapted model)."""
    peft = require_peft(f"model path {path!r} (a LoRA adapter)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = peft.PeftModel.from_pretrained(model, path)
    # peft froze the base for inference; merged, it is a plain model again, trainable as any loaded one
    return wrapped.merge_and_unload().requires_grad_(True)
