"""One loading path: in-process tiny model, a local directory, a hub id."""

from __future__ import annotations

import pytest
import torch

from lec.config import ModelConfig, TinyModelConfig
from lec.models import ModelLoadError, build_tiny, load_model, load_tokenizer, materialize_base


def test_tiny_is_deterministic_and_round_trips_text():
    m1, tok = build_tiny(TinyModelConfig(), 2048)
    m2, _ = build_tiny(TinyModelConfig(), 2048)
    assert torch.equal(m1.model.embed_tokens.weight, m2.model.embed_tokens.weight)
    assert m1.config.max_position_embeddings == 2048  # the context it is built with (model.native_context)
    text = "Q: Zoe has 9 apples.\nA: 9 + 2 = 11. Ünïcödé ✓"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id and tok.decode(ids, skip_special_tokens=True) == text
    assert m1.config.model_type == "llama"


def test_local_directory_loads_like_a_hub_model(tiny_dir):
    """The saved tiny model is a plain HF directory: the same code path as model.local_path=/dir."""
    cfg = ModelConfig(name="local", local_path=str(tiny_dir), torch_dtype="float32")
    model = load_model(cfg)
    tok = load_tokenizer(cfg)
    out = model(**tok("hello", return_tensors="pt"))
    assert out.logits.shape[-1] == model.config.vocab_size


def test_materialize_is_keyed_by_config(tmp_path):
    a = materialize_base(ModelConfig(name="t", native_context=2048, tiny=TinyModelConfig(hidden_size=32, intermediate_size=64)), tmp_path)
    b = materialize_base(ModelConfig(name="t", native_context=2048, tiny=TinyModelConfig(hidden_size=64, intermediate_size=64)), tmp_path)
    assert a != b and (a / "config.json").exists() and (b / "tokenizer.json").exists()
    assert materialize_base(ModelConfig(name="hub", hf_id="x/y"), tmp_path) is None


def test_missing_local_path_is_a_clear_error(tmp_path):
    cfg = ModelConfig(name="mine", local_path=str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="local path"):
        load_model(cfg)


def test_unreachable_hub_id_says_to_set_local_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = ModelConfig(name="mistral7b", hf_id="mistralai/Mistral-7B-v0.1", revision="main")
    with pytest.raises(ModelLoadError, match="model.local_path"):
        load_tokenizer(cfg)
