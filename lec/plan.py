"""The plan: one frozen, typed record of what a run will actually do, built once at the boundary.

    compose (Hydra) → lec.config.load (schema, ranges, cross-field rules) → plan.build → stages get their part

Every derived value is decided here and nowhere below: the effective learning rate and schedule, steps or epochs,
rows and tokens per optimizer step, the training row length, the LoRA targets (`all-linear` resolved to the
model's module names), the served prompt template and context, the eval suite's run entries. MLflow logs the plan
as the run's params (what ran, not what was typed); `python -m lec … --plan` prints it without running.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from lec.config import (AdapterKind, Attention, Backend, ConfigError, DataConfig, Device, DType, LecConfig, ModelConfig,
                        Optimizer, QuantConfig, RulesConfig, Scheduler, ScoreConfig, SweepConfig, SyntheticEvalConfig,
                        Template, lm_eval_pair, tracking_uri)  # fmt: skip

# Module names of every Linear in a decoder block, per layout (what peft's `all-linear` selects there).
BLOCK_LINEARS = {
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),  # Llama/Mistral/Qwen2
    "qwen": ("c_attn", "c_proj", "w1", "w2"),  # Qwen v1 (QWenLMHeadModel)
}


@dataclass(frozen=True)
class RunLayout:
    """Where one run (or the DVC pipeline) reads and writes; derived once from `outputs_dir` and the run dir."""

    outputs: Path  # outputs_dir, absolute: mlflow.db, mlartifacts/, cache/, runs/, sweeps/, pipeline/
    run_dir: Path

    @classmethod
    def of(cls, outputs_dir: str, run_dir: Optional[Path] = None) -> "RunLayout":
        """A run dir (Hydra's), or the DVC pipeline dir `<outputs_dir>/pipeline` when none is given."""
        outputs = Path(outputs_dir).resolve()
        return cls(outputs, Path(run_dir).resolve() if run_dir else outputs / "pipeline")

    @property
    def cache(self) -> Path:  # the tiny model's weights, HELM's request cache, nltk data: shared by runs
        return self.outputs / "cache"

    @property
    def data(self) -> Path:
        return self.run_dir / "data"

    @property
    def adapter(self) -> Path:
        return self.run_dir / "adapter"

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def helm(self) -> Path:
        return self.run_dir / "helm"

    @property
    def bench(self) -> Path:  # the benchmark curves' task files (lec/evaluate/bench.py)
        return self.run_dir / "bench"

    @property
    def train_log(self) -> Path:
        return self.run_dir / "train_log.jsonl"

    @property
    def config(self) -> Path:  # the run's validated config; the server processes load it
        return self.run_dir / "config.yaml"


@dataclass(frozen=True)
class LoraPlan:
    r: int
    alpha: float
    dropout: float
    bias: str
    targets: Tuple[str, ...]  # module-name suffixes peft matches; ("all-linear",) only when the shape is unknown


@dataclass(frozen=True)
class BenchPlan:
    """Benchmark curves during training: which lm-eval tasks of the suite score the live model, how often, on how many
    docs, and what backs the lec_* ones."""

    every_steps: int  # and at step 0 and the last step
    open: Tuple[str, ...]  # open-stage tasks: bench/open/<metric> is their mean
    closed: Tuple[str, ...]  # closed-stage tasks: bench/closed/<metric>; the gap is open minus closed
    limit: int  # docs per task per check
    synthetic: Optional[SyntheticEvalConfig]  # the smoke suite's generator: writes the files lec_* tasks read
    shots: Tuple[Tuple[str, int], ...] = ()  # in-context examples per closed-stage kind its HELM entry asks for

    @property
    def tasks(self) -> Tuple[str, ...]:
        return self.open + self.closed


@dataclass(frozen=True)
class TrainPlan:
    """Fine-tuning as it will run: method, optimiser, schedule, batch shape, precision, budget, checkpoints."""

    enabled: bool
    method: AdapterKind
    lora: Optional[LoraPlan]  # None for a full fine-tune
    quantization: Optional[QuantConfig]  # 4-bit loading (qlora)
    optim: Optimizer
    lr: float
    scheduler: Scheduler
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    neftune_noise_alpha: Optional[float]
    epochs: Optional[float]  # passes over train.jsonl; None when max_steps fixes the length
    max_steps: Optional[int]
    micro_batch_size: int
    grad_accum: int
    seq_len: int  # longest training sample (tokens)
    pack_len: Optional[int]  # rows of this many tokens when packing, else None
    template: Template
    mask_prompt: bool
    device: Device
    dtype: DType  # the base weights' dtype
    bf16: bool
    tf32: bool
    attn_implementation: Attention
    gradient_checkpointing: bool
    num_threads: Optional[int]
    memory_fraction_cap: Optional[float]
    hardware: str
    capacity_gb: Optional[float]  # usable GPU memory; None on CPU (the pre-flight reads RAM)
    time_budget_s: float
    save_every_steps: Optional[int]
    save_total_limit: int
    resume_from: Optional[str]
    logging_steps: int
    eval_every_steps: Optional[int]  # val/loss cadence (and at the end)
    early_stopping_patience: Optional[int]
    keep_best: bool  # the adapter is the lowest-val/loss weights
    preflight: bool
    seed: int
    bench: Optional[BenchPlan] = None  # benchmark curves during training; None = off (train.bench_every_steps=null)

    @property
    def rows_per_step(self) -> int:
        return self.micro_batch_size * self.grad_accum

    @property
    def tokens_per_step(self) -> int:
        """Most tokens one optimizer step can see: rows × (packed row or longest sample)."""
        return self.rows_per_step * (self.pack_len or self.seq_len)


@dataclass(frozen=True)
class ServePlan:
    """The model server: where it listens, how it batches, and the prompt wrapper it applies to HELM's prompts."""

    host: str
    port: int
    api_key: Optional[str]  # shown and logged as "set" / None, never the key (as_dict)
    allow_unauthenticated: bool
    max_request_bytes: int
    context: int  # served prompt + completion tokens
    max_batch_size: int
    batch_wait_ms: float
    max_new_tokens_limit: int
    prefix_cache_bytes: int  # 0 = no prefix cache
    startup_timeout_s: float
    prompt_template: Optional[str]  # None = as sent; the training template unless serve.prompt_template names one
    chat: bool  # wrap with the tokenizer's chat template (data.template=chat)
    template_if_blank_lines_below: Optional[int]
    cut_at: Optional[str]
    strip_prefixes: Tuple[str, ...]
    device: Device
    num_threads: Optional[int]


@dataclass(frozen=True)
class EvalPlan:
    name: str
    suite: str
    entries: Tuple[str, ...]  # the run entries (shipped confs appended), `{model}` still to fill
    max_eval_instances: int
    num_threads: int
    budget_min: float
    eval_base: bool
    summarize: bool  # helm-summarize after helm-run
    synthetic: Optional[SyntheticEvalConfig]
    cache_dir: str  # HELM's request cache (absolute), keyed inside by each model's identity
    backends: Tuple[Backend, ...] = (Backend.helm,)  # the first is scored
    lm_eval_tasks: Tuple[str, ...] = ()
    lm_eval_metrics: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()  # ((scenario/metric, (task/metric, …)), …): the challenge's names
    endpoint: Optional[str] = None  # a running server to evaluate instead of serving one (evaluate.source=endpoint:…)


@dataclass(frozen=True)
class Plan:
    model: ModelConfig
    data: DataConfig
    train: TrainPlan
    serve: ServePlan
    eval: EvalPlan
    score: ScoreConfig
    sweep: SweepConfig
    tracking_uri: str
    experiment: str
    rules: RulesConfig
    outputs_dir: str
    seed: int
    run_name: Optional[str]


def build(cfg: LecConfig) -> Plan:
    """The validated config → the plan. Raises ConfigError for what needs lec's own tables (suites, pools,
    generators, module names of the architecture)."""
    from lec.data.synthetic import GENERATORS
    from lec.data.templates import serving_template
    from lec.evaluate.suites import SuiteError, suite_entries
    from lec.score import POOLS

    hw, ad, tr = cfg.hardware, cfg.adapter, cfg.train
    for i, s in enumerate(cfg.data.sources):
        if s.generator is not None and s.generator not in GENERATORS:
            raise ConfigError(f"data.sources.{i}.generator={s.generator}: unknown; valid: {', '.join(GENERATORS)}")
    try:
        entries = tuple(suite_entries(cfg.eval.entries, cfg.eval.confs))
    except SuiteError as err:
        raise ConfigError(f"eval={cfg.eval.name}: {err}") from None
    if not entries:
        raise ConfigError(f"eval={cfg.eval.name} has no run entries (eval.entries, eval.confs)")
    for entry in entries:
        if "model={model}" not in entry:
            raise ConfigError(f"eval entry '{entry}' must contain 'model={{model}}' (lec fills in the served model)")
    if cfg.score.pool not in POOLS and not Path(cfg.score.pool).is_file():
        raise ConfigError(f"score.pool={cfg.score.pool}: neither a shipped pool ({', '.join(POOLS)}) nor a file")

    facts = local_facts(cfg.model)
    context = cfg.model.native_context or (facts.native_context if facts else None)
    for key, n in (("hardware.max_seq_len", hw.max_seq_len), ("serve.max_seq_len", cfg.serve.max_seq_len)):
        if context is not None and n > context:
            raise ConfigError(f"{key}={n} exceeds model={cfg.model.name}'s context {context}")  # tested: local model
    bench = bench_plan(cfg, entries)
    lora = None
    if ad.kind is not AdapterKind.full:
        lora = LoraPlan(ad.r, ad.alpha, ad.dropout, ad.bias.value, lora_targets(list(ad.target_modules), cfg.model, facts))
    train = TrainPlan(
        enabled=tr.enabled, method=ad.kind, lora=lora, quantization=ad.quantization, optim=ad.optim, lr=ad.lr,
        scheduler=ad.scheduler, warmup_ratio=ad.warmup_ratio, weight_decay=ad.weight_decay,
        max_grad_norm=ad.max_grad_norm, neftune_noise_alpha=ad.neftune_noise_alpha,
        epochs=None if tr.max_steps else ad.epochs, max_steps=tr.max_steps,
        micro_batch_size=hw.micro_batch_size, grad_accum=hw.grad_accum, seq_len=hw.max_seq_len, pack_len=hw.pack_len,
        template=cfg.data.template, mask_prompt=cfg.data.mask_prompt, device=hw.device, dtype=cfg.model.torch_dtype,
        bf16=hw.bf16, tf32=hw.tf32, attn_implementation=hw.attn_implementation,
        gradient_checkpointing=hw.gradient_checkpointing, num_threads=hw.num_threads,
        memory_fraction_cap=hw.memory_fraction_cap, hardware=hw.name,
        capacity_gb=(hw.usable_vram_gb or hw.vram_gb) if hw.device is Device.cuda else None,
        time_budget_s=hw.time_budget_h * 3600, save_every_steps=tr.save_every_steps,
        save_total_limit=tr.save_total_limit, resume_from=tr.resume_from, logging_steps=tr.logging_steps,
        eval_every_steps=tr.eval_every_steps, early_stopping_patience=tr.early_stopping_patience,
        keep_best=tr.keep_best, preflight=tr.preflight, seed=cfg.seed, bench=bench,
    )  # fmt: skip
    sv = cfg.serve
    serve = ServePlan(
        host=sv.host, port=sv.port, api_key=sv.api_key, allow_unauthenticated=sv.allow_unauthenticated,
        max_request_bytes=sv.max_request_bytes, context=sv.max_seq_len, max_batch_size=sv.max_batch_size,
        batch_wait_ms=sv.batch_wait_ms, max_new_tokens_limit=sv.max_new_tokens_limit,
        prefix_cache_bytes=int(sv.prefix_cache_mb * 2**20),
        startup_timeout_s=sv.startup_timeout_s,
        prompt_template=sv.prompt_template or serving_template(cfg.data.template),
        chat=cfg.data.template is Template.chat and sv.prompt_template is None,
        template_if_blank_lines_below=sv.template_if_blank_lines_below, cut_at=sv.cut_at,
        strip_prefixes=tuple(sv.strip_prefixes), device=hw.device, num_threads=hw.num_threads,
    )  # fmt: skip
    ev = cfg.eval
    cache_dir = Path(ev.cache_dir) if ev.cache_dir else Path(cfg.outputs_dir) / "cache" / "helm"
    evaluation = EvalPlan(ev.name, ev.suite, entries, ev.max_eval_instances, ev.num_threads, ev.budget_min,
                          ev.eval_base, ev.summarize, ev.synthetic, str(cache_dir.resolve()), tuple(ev.backends),
                          tuple(ev.lm_eval_tasks), tuple(lm_eval_pair(m) for m in ev.lm_eval_metrics))  # fmt: skip
    return Plan(
        model=cfg.model, data=cfg.data, train=train, serve=serve, eval=evaluation, score=cfg.score, sweep=cfg.sweep,
        tracking_uri=tracking_uri(cfg), experiment=cfg.mlflow.experiment, rules=cfg.rules, outputs_dir=str(Path(cfg.outputs_dir).resolve()), seed=cfg.seed, run_name=cfg.run_name,
    )  # fmt: skip


def bench_plan(cfg: LecConfig, entries: Tuple[str, ...]) -> Optional[BenchPlan]:
    """train.bench_every_steps + eval.bench → the curves' plan; a lec_* task must be one the suite's generated files
    back as multiple choice (lec.config checked that the suite names tasks at all)."""
    if cfg.train.bench_every_steps is None or not cfg.train.enabled:
        return None
    from lec.evaluate.suites import offline_mc_tasks, train_instances

    ev, b = cfg.eval, cfg.eval.bench
    backed = offline_mc_tasks(ev.synthetic)
    for task in (*b.open, *b.closed):
        if not task.startswith("lec_") or task in backed:
            continue
        kind = task.removeprefix("lec_")
        if kind in ("gsm", "sam_sum"):
            raise ConfigError(  # tested: tests/test_train_bench.py
                f"eval.bench: {task} is a generation task; benchmark curves score multiple-choice tasks by "
                f"loglikelihood ({', '.join(backed) or 'none'} in eval={ev.name})")
        where = ("eval.synthetic.mmlu_subjects", kind.removeprefix("mmlu_")) if kind.startswith("mmlu_") else \
            ("eval.synthetic.closed", kind)  # fmt: skip
        raise ConfigError(  # tested: tests/test_train_bench.py
            f"eval.bench: {task} reads files eval={ev.name} does not generate: add {where[1]} to {where[0]}, drop "
            "it from eval.bench, or set train.bench_every_steps=null")
    shots = train_instances(list(entries))
    kinds = [t.removeprefix("lec_") for t in b.closed if t.startswith("lec_")]
    return BenchPlan(cfg.train.bench_every_steps, tuple(b.open), tuple(b.closed), b.limit, ev.synthetic,
                     tuple((k, n) for k, n in shots.items() if k in kinds))  # fmt: skip


def local_facts(model: ModelConfig):
    """The model's facts (context, shape, block Linears) when its config.json is on this machine (model.local_path),
    without touching the network; None for the tiny model (lec knows it) and hub ids (resolved when loaded)."""
    if model.local_path is None:
        return None
    from lec.models import ModelLoadError, model_facts

    try:
        return model_facts(model)
    except ModelLoadError as err:
        raise ConfigError(str(err)) from None


def lora_targets(targets: list, model: ModelConfig, facts) -> Tuple[str, ...]:
    """`all-linear` → the block Linears of the model when lec knows them without downloading anything (tiny, a
    local config.json, a model option's `shape`); a hub model not on disk keeps `all-linear` for peft to resolve
    when it loads (and `train.lora.resolved_targets` records what it chose)."""
    if targets != ["all-linear"]:
        return tuple(targets)
    if facts is not None:
        return tuple(facts.linear_targets)
    if model.tiny is not None:
        return BLOCK_LINEARS["llama"]
    if model.shape is not None:
        from lec.shapes import linears

        return tuple(linears(model.shape))
    return ("all-linear",)


def require_machine(train: TrainPlan) -> None:
    """At the start of a run or stage, before data or weights load: a CUDA preset on a machine without CUDA, or a
    bitsandbytes recipe without bitsandbytes, fails here, saying so."""
    if train.device is Device.cuda:
        if not _nvidia_device_files():  # no driver, no device: no need to import torch (2 s) to know
            raise ConfigError(f"hardware={train.hardware} needs a CUDA GPU, and this machine has none (no NVIDIA "
                              "driver or device): use hardware=cpu")  # fmt: skip
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"hardware={train.hardware} needs a CUDA GPU, and this machine has none "
                              "(torch.cuda.is_available() is False): use hardware=cpu")  # fmt: skip
    bnb = train.quantization is not None or train.optim.value.startswith("paged_") or "8bit" in train.optim.value
    if bnb:
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError(f"adapter={train.method.value} with optim={train.optim.value} needs bitsandbytes: "
                              "install lec with its gpu extra (pip install -e '.[gpu]'; scripts/setup.sh does on CUDA)")  # fmt: skip


def _nvidia_device_files() -> bool:
    import glob
    import os

    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.isdir("/proc/driver/nvidia/gpus")
                or os.environ.get("CUDA_VISIBLE_DEVICES") not in (None, "", "-1") and glob.glob("/dev/nvidia*"))


def as_dict(obj: Any) -> Any:
    """The plan as plain data (enums as values, tuples as lists) for YAML, JSON and MLflow params."""
    if dataclasses.is_dataclass(obj):
        out = {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, TrainPlan):
            out.update(rows_per_step=obj.rows_per_step, tokens_per_step=obj.tokens_per_step)
        if isinstance(obj, ServePlan) and obj.api_key is not None:
            out["api_key"] = "set"  # a secret: the plan says there is one, MLflow never holds it
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    return obj


def params(plan: Plan) -> Dict[str, str]:
    """Flattened plan → MLflow params (`train.lr`, `train.lora.targets`, `eval.entries`, …)."""
    flat: Dict[str, str] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else k)
        else:
            flat[key] = str(value)[:6000]  # MLflow's MAX_PARAM_VAL_LENGTH

    walk(as_dict(plan), "")
    return flat


def to_yaml(plan: Plan) -> str:
    import yaml

    return yaml.safe_dump(as_dict(plan), sort_keys=False, allow_unicode=True, width=120)
