"""Memory pre-flight: shapes → parameter counts → peak estimate; a run that will not fit is refused with knobs."""

from __future__ import annotations

import pytest
import torch

from lec import config, plan, preflight
from lec.config import ConfigError


def _plan(overrides):
    return plan.build(config.compose(overrides))


@pytest.mark.parametrize("model,published", [("mistral7b", 7.24e9), ("llama2_7b", 6.74e9), ("qwen14b", 14.17e9)])
def test_shapes_give_the_published_parameter_counts(model, published):
    p = _plan([f"model={model}", "hardware=a100_40gb"])
    total, _ = preflight.param_counts(preflight.shape_of(p.model))
    assert total == pytest.approx(published, rel=0.005)


def test_counts_match_a_real_model_and_peft(tiny_dir, default_plan):
    """The formulas against the real tiny Llama with lec's LoRA attached (same shape read from its config.json)."""
    from lec.train.finetune import prepare_model

    p = default_plan
    model, trainable = prepare_model(p.train, p.model, tiny_dir)
    shape = preflight.shape_of(p.model, tiny_dir)
    total, _ = preflight.param_counts(shape)
    assert total == sum(w.numel() for n, w in model.named_parameters() if "lora_" not in n)
    # the default's all-linear, resolved by the plan to the tiny Llama's block projections
    assert p.train.lora.targets == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert trainable == preflight.lora_params(shape, list(p.train.lora.targets), p.train.lora.r)


def test_mistral_shape_matches_transformers_on_the_meta_device():
    from transformers import MistralConfig, MistralForCausalLM

    s = config.compose(["model=mistral7b", "hardware=rtx4090"]).model.shape
    with torch.device("meta"):
        m = MistralForCausalLM(MistralConfig(vocab_size=s.vocab_size, hidden_size=s.hidden_size,
                                             intermediate_size=s.intermediate_size, num_hidden_layers=s.num_hidden_layers,
                                             num_attention_heads=s.num_attention_heads,
                                             num_key_value_heads=s.num_key_value_heads, tie_word_embeddings=False))  # fmt: skip
    assert preflight.param_counts(s)[0] == m.num_parameters()


def test_7b_full_fine_tune_on_a_4090_is_refused_naming_the_knobs():
    p = _plan(["hardware=rtx4090", "model=mistral7b", "adapter=full"])
    with pytest.raises(ConfigError) as err:
        preflight.check(p.train, p.model)
    msg = str(err.value)
    assert "rtx4090" in msg and "24.0 GiB" in msg
    assert "adapter=qlora" in msg and "(fits)" in msg  # the knob that makes it fit, marked
    assert "hardware.micro_batch_size=1" in msg and "train.preflight=false" in msg


@pytest.mark.parametrize("experiment,hardware,budget_gib", [("birbal", "rtx4090", 24.0), ("percent_bfd", "a100_40gb", 39.35)])
def test_winner_replays_compose_and_fit_their_card(experiment, hardware, budget_gib):
    p = _plan([f"experiment={experiment}"])
    assert p.train.hardware == hardware
    est = preflight.check(p.train, p.model)
    assert est.fits and est.capacity == pytest.approx(budget_gib * 2**30)
    assert est.resident > 0.5 * est.capacity  # a real 7B/14B estimate, not an empty one


def test_birbal_replay_keeps_its_sourced_values():
    cfg = config.compose(["experiment=birbal"])
    assert (cfg.model.name, cfg.data.name, cfg.adapter.kind.value) == ("mistral7b", "birbal", "qlora")
    assert (cfg.adapter.r, cfg.adapter.alpha, cfg.adapter.lr, cfg.adapter.neftune_noise_alpha) == (128, 256, 2e-5, 5)
    assert (cfg.hardware.micro_batch_size, cfg.hardware.grad_accum, cfg.hardware.pack_len) == (2, 4, 8192)
    assert cfg.serve.prompt_template == "### Input:\n{prompt}\n\n### Response:\n" and cfg.serve.cut_at == "\n\n"
    p = config.compose(["experiment=percent_bfd"])
    assert (p.model.name, p.adapter.r, p.adapter.target_modules, p.serve.prompt_template) == ("qwen14b", 8, ["c_attn", "c_proj"], None)


def test_the_same_run_fits_an_80gb_card_and_checkpointing_lowers_the_peak():
    base = ["model=mistral7b", "adapter=lora", "hardware.gradient_checkpointing=false"]
    big_plan = _plan(["hardware=h100", *base])
    big = preflight.estimate(big_plan.train, big_plan.model)
    small_plan = _plan(["hardware=h100", *base, "hardware.gradient_checkpointing=true"])
    small = preflight.estimate(small_plan.train, small_plan.model)
    assert small.terms["activations"] < big.terms["activations"] / 4
    assert small.terms["weights"] == big.terms["weights"]


def test_qlora_without_cuda_is_a_clear_error():
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        config.compose(["adapter=qlora"])


def test_hub_model_without_shape_names_what_to_set():
    import dataclasses

    p = _plan(["model=mistral7b", "hardware=rtx4090", "adapter=qlora"])
    with pytest.raises(ConfigError, match="model.shape"):
        preflight.estimate(p.train, dataclasses.replace(p.model, shape=None))


@pytest.mark.e2e  # a real training step in a fresh process: 50 s on 2 cores
def test_cpu_estimate_is_within_15_percent_of_a_measured_training_step():
    """One calibration case of benchmarks/preflight_calibration.py, run here (≈ 30 s on 2 cores)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import json

    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "preflight_calibration.py"
    args = ["--worker", "hardware.max_seq_len=256", "hardware.micro_batch_size=4", "hardware.grad_accum=1",
            "model.tiny.vocab_size=8000", "model.tiny.hidden_size=512", "model.tiny.intermediate_size=1376",
            "model.tiny.num_hidden_layers=4", "model.tiny.num_attention_heads=8", "model.tiny.num_key_value_heads=4"]  # fmt: skip
    # A fixed environment, so the worker measures the same in a full session as alone (its peak is VmHWM, not
    # ru_maxrss, which a child inherits from this large pytest process across fork + exec).
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "MALLOC_MMAP_THRESHOLD_": "65536",
           "MALLOC_TRIM_THRESHOLD_": "0", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, str(bench), *args], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["estimate"] == pytest.approx(r["measured"], rel=0.15)
