"""Loading the policy: any local Hugging Face causal LM, or the built-in tiny model."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
from pathlib import Path

import torch

from policyforge.hub import model_hint
from policyforge.models import lora
from policyforge.models.llama_family import reason_unsupported
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


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def check_model_path(path: str) -> None:
    """Fail early, before data or other models are touched, when `path` cannot be a model.

    A LoRA adapter folder (adapter_config.json) is a model: its base model, checked here too."""
    if path == "builtin:tiny":
        return
    if lora.is_adapter_dir(path):
        base = lora.adapter_base(path)
        try:
            check_model_path(base)
        except ModelError as e:
            moved = ("; if the base moved, give its folder's new place: --lora-base DIR (train, eval, export), or "
                     "--model.path DIR on --resume of the run that trained on it"
                     if base != "builtin:tiny" and not Path(base).exists() else "")
            raise ModelError(f"model path {path!r} is a LoRA adapter on base model {base!r} (adapter_config.json's "
                             f"base_model_name_or_path), which cannot be loaded: {e}{moved}") from None
        return
    p = Path(path)
    if p.is_file():
        hint = (f" (it names the newest checkpoint: use {p.parent / p.read_text().strip()})"
                if p.name == "latest" and p.parent.name == "checkpoints" else "")
        raise ModelError(f"model path {path!r} is a file, not a model directory{hint}")
    if not p.is_dir():
        where = "" if p.is_absolute() else f", read from the current directory {os.getcwd()}: a relative path in a " \
            "--config file is too, not from the file's folder"
        raise ModelError(f"model path {path!r} does not exist (give a local model directory or 'builtin:tiny'{where})"
                         + (sibling_checkpoints(p) or model_hint(path)))
    if not (p / "config.json").exists():
        raise ModelError(f"model path {path!r} has no config.json: not a Hugging Face model directory"
                         + (f" (a run directory: its models are the folders of {p / 'checkpoints'}, and --resume "
                            f"{path} continues the run)" if (p / "checkpoints").is_dir() else ""))
    try:
        config = json.loads((p / "config.json").read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"model path {path!r}: its config.json is not valid JSON ({e})") from None
    if isinstance(config, dict) and config.get("is_encoder_decoder"):
        raise ModelError(f"model path {path!r} is an encoder-decoder (seq2seq) model ({config.get('model_type', '?')}, "
                         "config.json's is_encoder_decoder); policyforge trains decoder-only causal LMs "
                         "(AutoModelForCausalLM)")
    if not any((p / f).exists() for f in TOKENIZER_FILES):
        raise ModelError(f"model path {path!r} has no tokenizer ({', '.join(TOKENIZER_FILES)}): save it there with "
                         "tokenizer.save_pretrained")
    if not any(p.glob("*.safetensors")) and not any(p.glob("pytorch_model*.bin")):
        raise ModelError(f"model path {path!r} has no weights (*.safetensors or pytorch_model*.bin)")


def sibling_checkpoints(p: Path) -> str:
    """'; ...' naming the checkpoints a run does have, for a missing RUN/checkpoints/step_N ('' otherwise)."""
    if p.parent.name != "checkpoints" or not p.parent.is_dir():
        return ""
    have = sorted(c.name for c in p.parent.glob("step_*") if c.is_dir() and not c.name.endswith(".tmp"))
    return f"; {p.parent} holds {', '.join(have)}" if have else f"; {p.parent} holds no checkpoint yet"


def load_model(path: str, dtype: str = "float32", device: str = "auto", seed: int = 0):
    """Returns (model, tokenizer) on the chosen device; the tokenizer pads on the left.

    A LoRA adapter folder (a LoRA run's checkpoint) loads as its base model with the adapter merged
    in, with the folder's own tokenizer when it has one (a checkpoint does), else the base's.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    check_model_path(path)
    torch_dtype, torch_device = pick_dtype(dtype), pick_device(device)  # both before any weights are read
    if lora.is_adapter_dir(path):
        return _load_adapter(path, dtype, device, seed)
    tok = load_tokenizer(path)
    if path == "builtin:tiny":
        model = tiny_model(tok, seed=seed)
    else:
        model = _from_pretrained(AutoModelForCausalLM, path, torch_dtype)
    rows = model.get_input_embeddings().num_embeddings
    if rows < len(tok):  # a prompt with one of the extra tokens would fail in the embedding lookup
        raise ModelError(f"model path {path!r}: its embedding has {rows} rows, fewer than its tokenizer's {len(tok)} "
                         "tokens (tokens added to the tokenizer without model.resize_token_embeddings(len(tokenizer)) "
                         "before save_pretrained)")
    model = model.to(device=torch_device, dtype=torch_dtype)
    check_cached_decoding(model)
    return model, tok


def _from_pretrained(auto, path: str, torch_dtype):
    """auto.from_pretrained(path), or ModelError naming the path and the cause: weights that do not load (a truncated
    file, sizes config.json does not give) or that the checkpoint lacks (transformers would start them at random)."""
    try:
        model, info = auto.from_pretrained(path, dtype=torch_dtype, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        why = ("its config.json gives sizes its weights do not have (the report above lists them)"
               if "ignore_mismatched_sizes" in str(e) else _first_lines(e))
        raise ModelError(f"model path {path!r} cannot be loaded: {why}") from e
    except Exception as e:  # safetensors' SafetensorError and other readers' own errors
        raise ModelError(f"model path {path!r} cannot be loaded: {type(e).__name__}: {_first_lines(e)}") from e
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise ModelError(f"model path {path!r}: its checkpoint lacks {len(missing)} weight(s) the model has "
                         f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}), which transformers would "
                         "start at random; save the whole model (model.save_pretrained) there")
    return model


def _first_lines(e: BaseException, limit: int = 400) -> str:
    """An exception's message, up to `limit` characters of its first lines (transformers' can list 250 models)."""
    text = " ".join(line.strip() for line in str(e).strip().splitlines()[:3] if line.strip())
    return text if len(text) <= limit else text[:limit] + " ..."


def _left_padding(tok, path: str, scoring: bool = False):
    tok.padding_side = "left"
    if tok.eos_token_id is None and scoring:  # a reward model generates nothing: it needs a pad token, not EOS
        if tok.pad_token_id is None:
            raise ModelError(f"the tokenizer of reward model {path!r} has neither a pad nor an EOS token to pad "
                             "batches with: set pad_token in its tokenizer_config.json")
        return tok
    if tok.eos_token_id is None:  # completions end at EOS, and EOS stands in for a missing pad token
        raise ModelError(f"the tokenizer of {path!r} has no EOS token: set eos_token in its tokenizer_config.json")
    if tok.pad_token_id is None:  # many causal LMs ship without one; EOS is masked out anyway
        tok.pad_token = tok.eos_token
    return tok


def _load_adapter(path: str, dtype: str, device: str, seed: int):
    """load_model of a LoRA adapter folder: its base (itself perhaps an adapter folder: a LoRA run started from a
    LoRA checkpoint) with the adapter merged in the run's dtype, as the lean decoder's weights were in training."""
    model, _ = load_model(lora.adapter_base(path), dtype, device, seed)
    return lora.merged(model, path), load_tokenizer(path)


def load_tokenizer(path: str, scoring: bool = False):
    """The tokenizer of model path `path`, padding on the left: the built-in one, a model folder's, or for a
    LoRA adapter folder its own when it has one (a checkpoint does), else its base model's. With `scoring` (a
    reward model's: it generates nothing) a tokenizer without EOS is taken when it has a pad token (BERT's)."""
    from transformers import AutoTokenizer

    if path == "builtin:tiny":
        return _left_padding(char_tokenizer(), path)
    if lora.is_adapter_dir(path) and not any((Path(path) / f).exists() for f in TOKENIZER_FILES):
        return load_tokenizer(lora.adapter_base(path), scoring)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError) as e:  # no backend (sentencepiece), a broken tokenizer file
        raise ModelError(f"the tokenizer of {path!r} cannot be loaded: {_first_lines(e)}") from e
    return _left_padding(tok, path, scoring)


@functools.lru_cache(maxsize=None)
def _cache_keyword(model_type: type) -> str | None:
    """The name this model class's forward takes its cache by (`cache` from transformers 5.24 on,
    `past_key_values` before; the old name still works in 5.24, with a FutureWarning, until 5.40),
    or None when its forward names neither (a wrapper that takes **kwargs)."""
    params = inspect.signature(model_type.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def check_same_tokens(policy_tok, ref_tok, ref_path: str) -> None:
    """ModelError unless the reference reads the policy's token ids the same way: its log-probs are compared
    with the policy's token by token, so another vocabulary makes every drift term and kl_ref meaningless.
    (An embedding smaller than that vocabulary was refused when load_model loaded the reference.)"""
    if policy_tok.get_vocab() != ref_tok.get_vocab():
        raise ModelError(f"model.ref_path={ref_path!r}: its tokenizer differs from the policy's "
                         f"({len(ref_tok)} tokens against {len(policy_tok)}); the reference must share the vocabulary")


def _unwrapped(model):
    """The transformers model under torch.compile, DDP / FSDP (.module) and PEFT wrappers."""
    for _ in range(4):
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        else:
            break
    return model


def cache_keyword(model) -> str:
    """The name `model`'s forward takes its cache by (for a forward that names neither, the name the
    installed transformers' own models take). Callers on a decode loop resolve it once."""
    from transformers import LlamaForCausalLM

    return _cache_keyword(type(_unwrapped(model))) or _cache_keyword(LlamaForCausalLM) or "past_key_values"


def with_cache(model, cache) -> dict:
    """The keyword argument that passes `cache` to `model`'s forward, under the name its transformers uses."""
    return {cache_keyword(model): cache}


def cache_of(out):
    """The cache a forward returned: `out.cache` from transformers 5.24 on, `out.past_key_values` before
    (read only where the output has no `cache` field: in 5.24 that name is a deprecated alias)."""
    if "cache" in getattr(type(out), "__dataclass_fields__", {}):
        return out.get("cache")
    return getattr(out, "past_key_values", None)


@contextlib.contextmanager
def eval_mode(model):
    """No-grad, eval-mode probes (no dropout draw, so the random state a resumed run replays is
    untouched); the model's mode is restored however the block ends."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def probe_cache(model, rows: int):
    """The cache of a no-grad forward over `rows` x 2 zero tokens, in eval mode."""
    ids = torch.zeros(rows, 2, dtype=torch.long, device=next(model.parameters()).device)
    with eval_mode(model):
        return cache_of(model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True))


# Largest total variation distance between the next-token distributions of cached decoding after
# left padding and of a plain forward that still counts as the same computation. Rounding alone gave
# at most 1e-6 in float32 and 7e-3 in bfloat16 on the test models (tests/e2e/test_other_architectures.py);
# a random-weight model that carries padding into its state was 0.06 off in float32, and on a trained
# model's peaked distributions such an error is far larger.
LEFT_PAD_TOLERANCE = {torch.float32: 1e-2, torch.bfloat16: 0.1, torch.float16: 0.1}


def left_padding_error(model) -> float:
    """Total variation distance (0 to 1) between the next-token distributions of three ordinary tokens
    as the sampler gets them (the first two left-padded by two, encoded into the cache, the third
    decoded from it) and as one forward over the three unpadded tokens gets them. Call within
    eval_mode(model)."""
    device = next(model.parameters()).device
    vocab = getattr(model.config, "vocab_size", None) or model.get_input_embeddings().num_embeddings
    seq = (torch.arange(3, device=device) + 3) % vocab
    padded = torch.cat([seq.new_zeros(2), seq[:2]])[None]
    mask = torch.tensor([[0, 0, 1, 1]], device=device)
    prompt = model(input_ids=padded, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                   use_cache=True)
    step = model(input_ids=seq[None, 2:], attention_mask=torch.cat([mask, mask[:, -1:]], 1),
                 position_ids=torch.full((1, 1), 2, device=device), use_cache=True,
                 **with_cache(model, cache_of(prompt)))
    full = model(input_ids=seq[None], attention_mask=torch.ones(1, 3, dtype=torch.long, device=device))
    cached, plain = (torch.softmax(x.logits[0, -1].float(), -1) for x in (step, full))
    return float(0.5 * (cached - plain).abs().sum())


def check_cached_decoding(model) -> None:
    """ModelError, naming the architecture, unless the model decodes from a reorderable transformers Cache.

    Models outside the Llama family are sampled through their own forward (rollout/sampler.py
    _GenericSteps): each group's prompt is encoded once and its cache indexed out to the group
    with `reorder_cache`, finished rows are cut out the same way, and tokens are decoded one at a
    time from it. A two-token probe does exactly that, so a model that keeps no such cache (Mamba,
    RWKV, RecurrentGemma, OpenAI GPT, an encoder loaded as a decoder) or whose cache does not
    reorder all of its state (MiniMax) fails here, at load, instead of mid-run. So does one whose
    cached decoding after a left-padded prompt differs from its own forward over the unpadded
    sequence (Mamba from transformers 5.24, which returns a Cache but carries the padding into its
    state): its sampler log-probs and its completions would be wrong.
    """
    from transformers.cache_utils import Cache

    kind = f"{type(model).__name__} (model_type {getattr(model.config, 'model_type', None)!r})"
    device = next(model.parameters()).device
    try:
        cache = probe_cache(model, rows=2)  # two prompts -> three rows below (one would broadcast unexpanded)
        if not isinstance(cache, Cache):
            raise ModelError(f"{kind} is not supported: its forward returns no transformers Cache (got "
                             f"{type(cache).__name__}), and policyforge's sampler decodes from the model's "
                             "reorderable KV cache")
        cache.reorder_cache(torch.tensor([0, 1, 1], device=device))
        with eval_mode(model):
            model(input_ids=torch.zeros(3, 1, dtype=torch.long, device=device),
                  attention_mask=torch.ones(3, 3, dtype=torch.long, device=device),
                  position_ids=torch.full((3, 1), 2, device=device), use_cache=True, **with_cache(model, cache))
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure here would have failed the run's first rollout
        raise ModelError(f"{kind} is not supported: decoding from its reordered KV cache failed "
                         f"({type(e).__name__}: {e})") from e
    if reason_unsupported(model) is not None:  # the Llama family samples through the lean decoder instead
        check_left_padding(model, kind)


def check_left_padding(model, kind: str) -> None:
    """ModelError unless cached decoding after left padding gives the model's own distribution."""
    dtype = next(model.parameters()).dtype
    try:
        with eval_mode(model):
            error = left_padding_error(model)
    except Exception as e:  # noqa: BLE001 - the sampler makes the same calls in its first rollout
        raise ModelError(f"{kind} is not supported: decoding from its cache after a left-padded prompt failed "
                         f"({type(e).__name__}: {e})") from e
    if not error <= LEFT_PAD_TOLERANCE.get(dtype, 0.1):  # `not <=` also refuses NaN
        raise ModelError(f"{kind} is not supported: a token decoded from its cache after a left-padded prompt "
                         f"gets a next-token distribution {error:.3g} away (total variation) from its own "
                         "forward over the unpadded tokens, and policyforge's sampler decodes left-padded batches")


def disable_dropout(model) -> int:
    """Set every dropout of `model` to 0 (nn.Dropout modules and the float rates attention layers keep
    as attributes, which their forward reads in training mode). Returns how many were non-zero."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            changed += module.p > 0
            module.p = 0.0
        for name in ("attention_dropout", "dropout"):
            rate = getattr(module, name, None)
            if isinstance(rate, float) and not isinstance(module, torch.nn.Dropout):
                changed += rate > 0
                setattr(module, name, 0.0)
    if getattr(model.config, "attention_dropout", None):  # the lean paths read the config
        model.config.attention_dropout = 0.0
    return changed
