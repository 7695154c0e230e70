"""`model=hf` for any causal LM: facts from config.json, pre-flight, a few LoRA steps and serving, on small
random-init models of each architecture family built here (Llama, Mistral, Qwen2, Gemma2), plus the shipped options."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from lec import plan, config, preflight
from lec.config import ConfigError, ModelConfig
from lec.models import ModelLoadError, build_tiny_tokenizer, model_facts, resolve_targets

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
# family → (transformers config class name, what sets it apart, ships a chat template)
FAMILIES = {
    "llama": ("LlamaConfig", dict(max_position_embeddings=4096, tie_word_embeddings=False), True),
    "mistral": ("MistralConfig", dict(max_position_embeddings=8192, sliding_window=None), False),  # bare base tokenizer
    "qwen2": ("Qwen2Config", dict(max_position_embeddings=32768, tie_word_embeddings=False), True),  # q/k/v bias
    "gemma2": ("Gemma2Config", dict(max_position_embeddings=8192, head_dim=32, sliding_window=64), True),  # 4·32≠64
}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(512)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tokenizer, tmp_path_factory):
    """(name, directory, the random-init model as saved) for one family: config.json, weights, tokenizer."""
    import transformers

    name = request.param
    cls, extra, chat = FAMILIES[name]
    hf = getattr(transformers, cls)(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                    **SMALL, **extra)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf)
    out = tmp_path_factory.mktemp(name)
    model.save_pretrained(out)
    tok = copy.deepcopy(tokenizer)
    if not chat:
        tok.chat_template = None
    tok.save_pretrained(out)
    return name, out, transformers.AutoModelForCausalLM.from_pretrained(out)


def _compose(d: Path, *more: str) -> plan.Plan:
    return plan.build(config.compose(["model=hf", f"model.local_path={d}", "model.torch_dtype=float32", *more]))


def test_facts_come_from_config_json_and_count_like_the_real_model_and_peft(family):
    from peft import LoraConfig, get_peft_model

    name, d, model = family
    facts = model_facts(ModelConfig(name="hf", local_path=str(d)))
    assert facts.native_context == FAMILIES[name][1]["max_position_embeddings"]
    assert facts.linear_targets == ALL and facts.has_chat_template is FAMILIES[name][2]
    assert facts.model_type == name and facts.source == str(d / "config.json")
    assert facts.shape.num_hidden_layers == 2 and facts.shape.tie_word_embeddings is (name == "gemma2")
    assert facts.shape.attention_bias is (name == "qwen2")
    assert preflight.head_dim(facts.shape) == (32 if name == "gemma2" else 16)
    total, _ = preflight.param_counts(facts.shape)
    assert total == sum(p.numel() for p in model.parameters())
    for targets in (list(ALL), ["q_proj", "v_proj"]):
        peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=targets))
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        assert trainable == preflight.lora_params(facts.shape, targets, 4)


def test_composed_run_preflights_from_the_directory(family, capsys):
    name, d, model = family
    more = ["adapter.target_modules=[q_proj,v_proj]", "hardware.max_seq_len=256"]
    p = _compose(d, *more)
    est = preflight.estimate(p.train, p.model)
    assert est.params == sum(p.numel() for p in model.parameters()) and est.trainable > 0 and est.fits
    assert preflight.main(["model=hf", f"model.local_path={d}", *more]) == 0  # the CLI, in-process
    assert "memory pre-flight:" in capsys.readouterr().out


@pytest.mark.e2e
def test_a_few_lora_steps_train_and_the_server_answers(family, tmp_path):
    from fastapi.testclient import TestClient
    from safetensors.torch import load_file

    from lec.serve.app import create_app
    from lec.serve.load import load_engine
    from lec.train.finetune import finetune

    name, d, _ = family
    rows = [{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": str(2 * i + 1)} for i in range(8)]
    layout = plan.RunLayout.of(str(tmp_path / "outputs"), tmp_path / "run")
    layout.data.mkdir(parents=True)
    data = layout.data / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (layout.data / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))  # val/loss at the end
    template = "chat" if FAMILIES[name][2] else "alpaca"  # the family's own chat template where it ships one
    p = _compose(d, "train.max_steps=3", "hardware.max_seq_len=128", "hardware.micro_batch_size=2", "adapter.lr=1e-3",
                   f"adapter.target_modules=[{','.join(ALL)}]", f"data.template={template}",
                   *(["hardware.attn_implementation=eager"] if name == "gemma2" else []))  # fmt: skip
    result = finetune(p.train, p.model, layout, None)
    facts = model_facts(p.model)
    assert result.steps == 3 and math.isfinite(result.train_loss)
    assert result.trainable_params == preflight.lora_params(facts.shape, list(ALL), p.train.lora.r)
    weights = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert len(lora_b) == 2 * len(ALL) and all(w.abs().sum() > 0 for w in lora_b)  # B starts at zero: it trained

    client = TestClient(create_app(load_engine(p.serve, p.model, adapter=str(result.adapter_dir))))
    r = client.post("/process", json={"prompt": "Add 3 and 4.", "max_new_tokens": 4, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 1 <= len(body["tokens"]) <= 4 and isinstance(body["text"], str) and math.isfinite(body["logprob"])


def test_a_hub_id_reads_config_json_from_the_hf_cache_offline(family, tmp_path, monkeypatch):
    """The HF cache layout (models--org--name/snapshots/<sha>, refs/main) is what `huggingface-cli download` writes."""
    import huggingface_hub.constants
    from lec import models

    name, d, _ = family
    sha = "0" * 40
    repo = tmp_path / "models--acme--small" / "snapshots" / sha
    repo.mkdir(parents=True)
    for f in ("config.json", "tokenizer_config.json", "chat_template.jinja"):
        if (d / f).exists():
            (repo / f).write_text((d / f).read_text())
    (tmp_path / "models--acme--small" / "refs").mkdir()
    (tmp_path / "models--acme--small" / "refs" / "main").write_text(sha)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    models._hub_file.cache_clear()
    try:
        facts = model_facts(ModelConfig(name="hf", hf_id="acme/small"))
        assert facts.source == str(repo / "config.json") and facts.linear_targets == ALL
        assert facts.has_chat_template is FAMILIES[name][2]
        assert facts.shape == model_facts(ModelConfig(name="hf", local_path=str(d))).shape
        with pytest.raises(ModelLoadError, match=r"acme/absent.*model\.local_path="):
            model_facts(ModelConfig(name="hf", hf_id="acme/absent"))
    finally:
        models._hub_file.cache_clear()


def test_remote_code_model_without_its_code_falls_back_to_the_qwen_v1_reader(tmp_path):
    """Qwen-14B's config.json (its public numbers) without its modeling code: shape from the JSON, layout targets."""
    c = {"architectures": ["QWenLMHeadModel"], "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig",
         "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"}, "model_type": "qwen", "vocab_size": 152064,
         "hidden_size": 5120, "intermediate_size": 27392, "num_hidden_layers": 40, "num_attention_heads": 40,
         "seq_length": 2048, "max_position_embeddings": 8192, "tie_word_embeddings": False}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(c))
    facts = model_facts(ModelConfig(name="qwen14b", local_path=str(tmp_path), trust_remote_code=True))
    assert facts.native_context == 2048 and facts.linear_targets == ("c_attn", "c_proj", "w1", "w2")
    assert preflight.param_counts(facts.shape)[0] == pytest.approx(14.17e9, rel=0.005)  # model card: 14.2B


def test_tiny_facts_before_and_after_it_is_built(default_cfg, tiny_dir):
    before, after = model_facts(default_cfg.model), model_facts(default_cfg.model, tiny_dir)
    assert before.linear_targets == after.linear_targets == ALL
    assert before.native_context == after.native_context == 2048
    assert before.has_chat_template and after.has_chat_template
    assert after.shape.num_params < before.shape.num_params  # the built tokenizer has fewer tokens than vocab_size


def test_all_linear_resolves_to_the_block_linears(family):
    facts = model_facts(ModelConfig(name="hf", local_path=str(family[1])))
    assert resolve_targets(["all-linear"], facts) == list(ALL)
    assert resolve_targets(["v_proj", "all-linear"], facts) == ["v_proj", *[t for t in ALL if t != "v_proj"]]
    with pytest.raises(ConfigError, match="lm_head"):
        preflight.lora_params(facts.shape, ["lm_head"], 8)  # not a Linear of the decoder blocks


SHIPPED = {  # option → gated on the hub
    "llama31_8b": True, "qwen25_7b": False, "qwen25_14b": False, "gemma2_9b": True, "mistral7b_v03": True,
}  # fmt: skip


@pytest.mark.parametrize("option,gated", SHIPPED.items())
def test_shipped_options_cite_their_card_and_carry_no_hand_written_numbers(option, gated):
    text = (config.CONF_DIR / "model" / f"{option}.yaml").read_text()
    p = plan.build(config.compose([f"model={option}", "hardware=a100_40gb"]))
    m = p.model
    assert m.name == option and m.hf_id and m.license and m.gated is gated and m.native_context >= 8192
    assert f"https://huggingface.co/{m.hf_id}" in text and text.startswith("# ") and "python -m lec" in text
    assert m.shape is None and not any(k in text for k in ("\nshape:", "lora_target_modules", "max_seq_len"))
    with pytest.raises(ConfigError, match=r"model\.local_path"):  # offline, nothing cached: says what to set
        preflight.estimate(p.train, p.model)


def test_hf_option_needs_an_id_or_a_path():
    with pytest.raises(ConfigError, match=r"model\.hf_id.*model\.local_path"):
        config.compose(["model=hf"])
