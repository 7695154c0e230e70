"""Validation is complete: every numeric key has a range, every fixed set of values is an enum the libraries accept,
and every rule of lec.config.validate / lec.plan.build is exercised by a bad value below (one line naming the key,
the value and what is allowed). The same messages under `--cfg job`, a plain run, DVC stage mode and a sweep job are
checked in tests/test_cli_errors.py."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from lec import config, plan

JSONL = '{"instruction": "a", "output": "b"}\n'

# (overrides, text the one-line message must contain)
BAD = [
    # ranges, one per kind of bound
    (["adapter.r=0"], "adapter.r=0 is out of range: must be ≥ 1"),
    (["adapter.alpha=0"], "adapter.alpha=0.0 is out of range: must be > 0"),
    (["adapter.dropout=1.5"], "adapter.dropout=1.5 is out of range: must be in [0, 1)"),
    (["adapter.epochs=-1"], "adapter.epochs=-1.0 is out of range: must be > 0"),
    (["adapter.lr=nan"], "adapter.lr=nan is out of range"),
    (["train.max_steps=0"], "train.max_steps=0 is out of range: must be ≥ 1"),
    (["train.max_steps=-5"], "train.max_steps=-5 is out of range"),
    (["train.save_every_steps=0"], "train.save_every_steps=0 is out of range"),
    (["serve.port=99999"], "serve.port=99999 is out of range: must be in [0, 65535]"),
    (["data.val_fraction=1"], "data.val_fraction=1.0 is out of range: must be in [0, 1)"),
    (["data.val_fraction=0"], "train.keep_best needs held-out rows, and data.val_fraction=0 holds none"),
    (["data.val_fraction=0", "train.keep_best=false", "train.early_stopping_patience=3"],
     "train.early_stopping_patience needs held-out rows"),
    (["train.eval_every_steps=0"], "train.eval_every_steps=0 is out of range"),
    (["data.seed=1000"], "data.seed=1000 is out of range"),
    (["data.sources.0.weight=-1"], "data.sources.0.weight=-1.0 is out of range: must be ≥ 0"),
    (["eval.synthetic.seed=5"], "eval.synthetic.seed=5 is out of range: must be ≥ 1e+06"),
    (["hardware.time_budget_h=0"], "hardware.time_budget_h=0.0 is out of range: must be > 0"),
    # enums
    (["adapter.scheduler=bogus"], "Invalid value 'bogus', expected one of [linear, cosine"),
    (["adapter.optim=adamw"], "Invalid value 'adamw', expected one of [adamw_torch"),
    (["hardware.attn_implementation=flash"], "Invalid value 'flash', expected one of [eager, sdpa"),
    (["model.torch_dtype=fp16"], "Invalid value 'fp16', expected one of [float32, bfloat16, float16]"),
    (["adapter.bias=some"], "Invalid value 'some', expected one of [none, all, lora_only]"),
    (["score.mode=mean"], "Invalid value 'mean', expected one of [challenge, helm]"),
    (["sweep.direction=up"], "Invalid value 'up', expected one of [maximize, minimize]"),
    # unknown keys, also added with +
    (["+adapter.rr=4"], "unknown key 'adapter.rr': AdapterConfig (adapter) has no 'rr'; valid keys: name, kind, r"),
    (["++train.foo=1"], "unknown key 'train.foo'"),
    (["model.lr=1e-2"], "unknown key 'model.lr'"),
    # hardware
    (["hardware.tf32=true"], "hardware.tf32 applies to CUDA only"),
    (["hardware.memory_fraction_cap=0.5"], "hardware.memory_fraction_cap applies to CUDA only"),
    (["hardware.attn_implementation=flash_attention_2"], "flash_attention_2 needs a CUDA GPU"),
    (["hardware=rtx4090", "model=mistral7b", "hardware.vram_gb=0"], "set hardware.vram_gb"),
    (["hardware.pack_len=256"], "hardware.pack_len=256 must be ≥ hardware.max_seq_len=512"),
    # model
    (["model=mistral7b", "model.hf_id=null"], "model=mistral7b needs model.hf_id (a hub id) or model.local_path"),
    (["model.hf_id=org/x"], "model.hf_id does not apply"),
    (["model.trust_remote_code=true"], "model.trust_remote_code does not apply"),
    (["model.native_context=null"], "model=tiny is built in-process: set model.native_context"),
    (["model.tiny.num_attention_heads=3"], "hidden_size must be a multiple of num_attention_heads"),
    (["model=mistral7b", "model.trust_remote_code=true"], "pin model.revision to a 40-hex commit (got None)"),
    (["model=mistral7b", "model.trust_remote_code=true", "model.revision=main"], "(got 'main')"),
    (["model=mistral7b", "model.local_path=/nonexistent/m"], "model.local_path=/nonexistent/m: no such directory"),
    (["model=hf", "model.local_path=/"], "model 'hf': no config.json in /"),
    (["hardware.max_seq_len=4096"], "hardware.max_seq_len=4096 exceeds model=tiny's context"),
    (["serve.max_seq_len=4096"], "serve.max_seq_len=4096 exceeds model=tiny's context"),
    # adapter
    (["adapter=qlora"], "adapter=qlora needs a CUDA GPU"),
    (["hardware=rtx4090", "model=mistral7b", "adapter=qlora", "adapter.quantization=null"],
     "adapter.quantization (4-bit loading) goes with adapter.kind=qlora only"),
    (["adapter.kind=qlora", "hardware=rtx4090", "model=mistral7b"], "goes with adapter.kind=qlora only"),
    (["adapter.target_modules=[]"], "adapter.target_modules=[]"),
    (["adapter.target_modules=[all-linear,q_proj]"], "not both"),
    (["adapter.optim=paged_adamw_8bit"], "bitsandbytes optimizer (CUDA only)"),
    # data
    (["data.sources=[]"], "data=synthetic has no sources"),
    (["data.sources.0.local_path=/x.jsonl"], "data.sources.0.local_path does not apply to source 'mmlu_order'"),
    (["+data.sources.0.fields.output=answer"], "data.sources.0.fields does not apply"),
    (["data.sources.0.n=0"], "data.sources.0.n=0: a generator source needs n ≥ 1 rows"),
    (["data=lima", "data.sources.0.hf_id=null"], "data.sources.0 ('lima') needs hf_id"),
    (["data=lima", "data.sources.0.n=5"], "data.sources.0.n=5 applies to generator sources only"),
    (["data=lima", "data.sources.0.local_path=/nope.jsonl"], "data.sources.0.local_path=/nope.jsonl: no such file"),
    (["data=lima", "+data.sources.0.fields.prompt=x"], "fields maps unknown target(s) ['prompt']"),
    (["data=lima", "data.sources.0.max_turns=2"], "max_turns applies to thread sources only"),
    (["data.curation.exact_dedup.key=[title]"], "exact_dedup.key=['title']: valid fields"),
    (["data.curation.near_dedup.num_perm=100"], "num_perm=100 must be a multiple of bands=32"),
    (["data.curation.decontam.min_tokens=40"], "min_tokens=40 must be ≤ decontam.ngram=32"),
    (["data.curation.decontam.scenarios_dir=/nope"], "scenarios_dir=/nope: no such directory"),
    # train, serve
    (["train.resume_from=/nonexistent"], "train.resume_from=/nonexistent: no such directory"),
    (["serve.prompt_template='Q: x'"], "serve.prompt_template must contain '{prompt}'"),
    (["serve.template_if_blank_lines_below=2"], "applies to serve.prompt_template, which is null"),
    (["serve.host=0.0.0.0"], "serve.host=0.0.0.0 is reachable from other machines: set serve.api_key"),
    (["serve.host=0.0.0.0", "serve.api_key=short"], "serve.api_key must be at least 16 characters"),
    (["serve.max_request_bytes=10"], "serve.max_request_bytes=10"),
    # plan-level (lec's tables)
    (["data.sources.0.generator=nope"], "data.sources.0.generator=nope: unknown"),
    (["score.pool=nope.json"], "score.pool=nope.json: neither a shipped pool"),
    (["eval.entries=['gsm:x=1']", "eval.confs=[]"], "must contain 'model={model}'"),
    (["eval.entries=[]", "eval.confs=[]"], "has no run entries"),
    (["eval.confs=[nope]"], "eval=smoke"),
    # evaluate.source (python -m lec.evaluate)
    (["evaluate.source=checkpoint:x"], "unknown kind 'checkpoint'; valid: model, adapter:<dir>, run:<dir>, endpoint:<url>"),
    (["evaluate.source=model:x"], "evaluate.source='model:x': the composed model itself"),
    (["evaluate.source=adapter"], "evaluate.source='adapter': adapter:<dir>"),
    (["evaluate.source=endpoint:ftp//x"], "not a URL; e.g. endpoint:http://127.0.0.1:8080"),
    (["evaluate.source=run:/nonexistent/run"], "evaluate.source=run:/nonexistent/run: no such directory"),
    (["evaluate.source=adapter:/tmp"], "/tmp has no adapter_config.json or config.json"),
    (["evaluate.source=run:/tmp"], "/tmp has no config.yaml"),
    # evaluation backends
    (["eval.backends=[helm,helm]"], "eval.backends=['helm', 'helm']: name each backend once"),
    (["eval.backends=[]"], "at least one (helm, lm_eval)"),
    (["eval.backends=[lm_eval]", "eval.lm_eval_tasks=[]"], "eval.lm_eval_tasks is empty"),
    (["eval.lm_eval_metrics=[mmlu]"], "eval.lm_eval_metrics: 'mmlu' is not '<scenario>/<metric>=<task>/<metric>"),
    (["eval.lm_eval_metrics=['mmlu/em=other/acc']"], "'other/acc' names a task not in eval.lm_eval_tasks"),
    (["rules.instruction_tuned='(chat'"], "rules.instruction_tuned='(chat' is not a regular expression"),
    # composition
    (["model=mistral8b"], "model=mistral8b: no such option; available: gemma2_9b, hf, llama2_7b"),
    (["adapter.r=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
]


_RAISED: dict = {}  # overrides → (file, line) of the `raise ConfigError` that refused them


def _refuse(overrides: list) -> config.ConfigError:
    with pytest.raises(config.ConfigError) as err:
        plan.build(config.compose(overrides))
    tb = err.value.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    _RAISED[tuple(overrides)] = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
    return err.value


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_each_bad_value_is_refused_in_one_line(overrides, message):
    text = str(_refuse(overrides))
    assert message in text
    assert "\n" not in text


def test_every_rule_of_validate_has_a_case_above():
    """Each `raise ConfigError` of config.validate's rules and plan.build is the one that refuses some case in BAD
    (delete a case and this test names the rule that lost its test)."""
    rules = {}
    for mod in (config, plan):
        for i, line in enumerate(open(mod.__file__).read().splitlines(), 1):
            if "raise ConfigError(" in line and "# tested:" not in line and not _inside(mod.__file__, i, WRAPPERS):
                rules[(mod.__file__, i)] = line.strip()
    for overrides, _ in BAD:
        if tuple(overrides) not in _RAISED:  # this test run alone
            _refuse(overrides)
    missing = [f"{f.rsplit('/', 1)[-1]}:{n}: {text}" for (f, n), text in rules.items() if (f, n) not in _RAISED.values()]
    assert not missing, "rules without a bad-value case:\n" + "\n".join(missing)


# Functions that re-raise Hydra/OmegaConf errors or check keys/the machine: their own tests cover them.
WRAPPERS = ("def load(", "def require_machine(", "def check_override_keys(", "def check_keys(", "def compose_raw(")


def _inside(path: str, lineno: int, defs: tuple) -> bool:
    """Is line `lineno` inside one of the functions `defs` (their own tests cover them)?"""
    src = open(path).read().splitlines()[:lineno]
    last_def = next((line for line in reversed(src) if line.startswith("def ")), "")
    return last_def.startswith(defs)


def _fields(cls, seen=None):
    seen = seen or set()
    for f in dataclasses.fields(cls):
        yield cls, f
        tp = config._unwrap(typing.get_type_hints(cls)[f.name])
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) in (list, typing.List) else tp
        if dataclasses.is_dataclass(inner) and inner not in seen:
            seen.add(inner)
            yield from _fields(inner, seen)


def test_every_numeric_key_has_its_range():
    missing = []
    for cls, f in _fields(config.LecConfig):
        tp = config._unwrap(typing.get_type_hints(cls)[f.name])
        if tp in (int, float) and "range" not in f.metadata:
            missing.append(f"{cls.__name__}.{f.name}")
    assert not missing, f"numeric keys without a range (use config.num): {missing}"


def test_enums_hold_values_the_libraries_accept():
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    assert {s.value for s in config.Scheduler} <= {s.value for s in SchedulerType}
    assert {o.value for o in config.Optimizer} <= {o.value for o in OptimizerNames}
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    kernels = set(ALL_ATTENTION_FUNCTIONS.keys()) | {"eager"}
    assert {a.value for a in config.Attention} <= kernels
    from peft import LoraConfig

    for bias in config.LoraBias:
        LoraConfig(r=4, bias=bias.value)


def test_a_stray_key_in_params_yaml_is_refused(tmp_path):
    from omegaconf import OmegaConf

    dcfg = config.compose_raw([])
    dcfg_dict = OmegaConf.to_container(dcfg, resolve=True)
    dcfg_dict["adapter"]["rr"] = 4
    with pytest.raises(config.ConfigError, match="unknown key 'adapter.rr'"):
        config.load(OmegaConf.create(dcfg_dict))
    dcfg_dict["adapter"].pop("rr")
    dcfg_dict["adapter"]["r"] = "abc"
    with pytest.raises(config.ConfigError, match="adapter.r"):
        config.load(OmegaConf.create(dcfg_dict))


def test_context_from_a_local_config_json(tiny_dir):
    """model=hf with a local directory: its config.json's context bounds both lengths (the rule marked `# tested:
    local model` in lec/plan.py)."""
    with pytest.raises(config.ConfigError, match="hardware.max_seq_len=4096 exceeds model=hf's context 2048"):
        plan.build(config.compose(["model=hf", f"model.local_path={tiny_dir}", "hardware.max_seq_len=4096"]))
    p = plan.build(config.compose(["model=hf", f"model.local_path={tiny_dir}"]))
    assert p.train.lora.targets == plan.BLOCK_LINEARS["llama"]  # all-linear from the meta-device model


def test_existing_local_files_pass(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(JSONL)
    cfg = config.compose(["data=lima", f"data.sources.0.local_path={rows}", f"train.resume_from={tmp_path}"])
    assert cfg.data.sources[0].local_path == str(rows)
