"""The built-in tiny model: a standard Llama architecture with a character tokenizer.

Both are saved with `save_pretrained`, so plain transformers (and TRL) load the
same files with AutoModelForCausalLM / AutoTokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# Every character the built-in tasks use, plus the three special tokens.
SPECIALS = ["<pad>", "<bos>", "<eos>"]
CHARSET = list("0123456789abcdefghijklmnopqrstuvwxyz+-*=:,;?!.()[]<>/ ")


@dataclass
class TinySpec:
    """Size of the built-in model (defaults: about 3.2M parameters)."""

    hidden: int = 256
    layers: int = 4
    heads: int = 4
    intermediate: int = 768
    max_positions: int = 512


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level fast tokenizer: one token per character, no merges.

    Splitting every character apart before a WordLevel lookup gives exactly one id
    per character; the Fuse decoder joins them back without spaces.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARSET)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", padding_side="left"
    )


def tiny_model(tokenizer: PreTrainedTokenizerFast, spec: TinySpec | None = None, seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised LlamaForCausalLM sized by `spec` for `tokenizer`."""
    import torch

    spec = spec or TinySpec()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
