"""Small random Hugging Face models shared by the tests of the lean decoder and the packed forward."""

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def small_qwen2(vocab_size: int, pad_id: int = 0, seed: int = 1) -> Qwen2ForCausalLM:
    """A 2-layer Qwen2: grouped-query attention (4 query heads, 2 key/value heads) and q/k/v biases.

    Qwen2's biases start at zero; they are drawn non-zero here so that the paths under test use them.
    """
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=pad_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                lin.bias.normal_(0, 0.5)
    return model
