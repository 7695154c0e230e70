"""Shape arithmetic shared by the model facts (lec.models) and the memory pre-flight (lec.preflight): which Linear
modules one decoder layer holds and their (d_in, d_out), from a ModelShape alone."""

from __future__ import annotations

from typing import Dict, List, Tuple

from lec.config import ConfigError, ModelShape


def head_dim(s: ModelShape) -> int:
    return s.head_dim or s.hidden_size // s.num_attention_heads


def linears(s: ModelShape) -> Dict[str, List[Tuple[int, int]]]:
    """Per decoder layer: module name → (d_in, d_out) of each Linear with that name (peft matches by suffix).
    Read from the meta-device model when the shape came from a config.json; else the layout's table."""
    if s.linears is not None:
        return {name: [(a, b) for a, b in dims] for name, dims in s.linears.items()}
    h, i = s.hidden_size, s.intermediate_size
    if s.layout == "qwen":
        return {"c_attn": [(h, 3 * h)], "c_proj": [(h, h), (i, h)], "w1": [(h, i)], "w2": [(h, i)]}
    if s.layout != "llama":
        raise ConfigError(f"model shape layout '{s.layout}' has no Linear table: valid layouts llama, qwen, or give "
                          "model.shape.linears")  # fmt: skip
    q, kv = s.num_attention_heads * head_dim(s), s.num_key_value_heads * head_dim(s)
    return {"q_proj": [(h, q)], "k_proj": [(h, kv)], "v_proj": [(h, kv)], "o_proj": [(q, h)],
            "gate_proj": [(h, i)], "up_proj": [(h, i)], "down_proj": [(i, h)]}  # fmt: skip
