"""Typed schema of a lec run, registered in Hydra's ConfigStore.

The YAML files under `conf/` are plain data; every composition is merged into `LecConfig`, so a typo key, a wrong
type or an unknown enum value fails at compose time. `load(cfg)` converts a composed DictConfig into these
dataclasses at the boundary and runs the cross-field checks; nothing inward sees a DictConfig.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
GROUPS = ("hardware", "model", "data", "adapter", "eval")


class ConfigError(ValueError):
    """A composed config that is well-typed but cannot run; the message says which knob to turn."""


class Device(str, enum.Enum):
    cpu = "cpu"
    cuda = "cuda"


class AdapterKind(str, enum.Enum):
    lora = "lora"
    qlora = "qlora"
    full = "full"


class Template(str, enum.Enum):
    raw = "raw"  # prompt as is: what HELM sends, so training and serving see the same text
    alpaca = "alpaca"  # "### Instruction:/### Input:/### Response:" (Alpaca; LitGPT generate_prompt)
    guanaco = "guanaco"  # rows already carry "### Human: … ### Assistant: …" text
    plain = "plain"  # rows carry one `text`; all of it is trained on (Knovel: labels = input_ids, no prompt)
    human_assistant = "human_assistant"  # LLaMA-Factory `default`: system line, "Human: …\nAssistant: " (Percent-BFD)
    chat = "chat"  # the model tokenizer's own chat template (apply_chat_template); threads keep every turn


class LengthAction(str, enum.Enum):
    drop = "drop"  # Upaya, MSR: over-long rows are dropped
    truncate = "truncate"  # Percent-BFD: cut to the limit (the response is cut, the prompt kept)


class DedupKeep(str, enum.Enum):
    first = "first"  # the first row in source order (Upaya combine_datasets.py, after its shuffle)
    longest_output = "longest_output"  # the row with the longest output (Platypus merged_largest_keep.py)


@dataclass
class HardwareConfig:
    """One machine: precision, attention kernel, batch shape and the challenge's budgets."""

    name: str = MISSING
    device: Device = Device.cpu
    vram_gb: float = 0.0  # card size; 0 on CPU
    usable_vram_gb: Optional[float] = None  # what the driver really hands out (A100 40 GB: 39.35)
    bf16: bool = False
    tf32: bool = False
    attn_implementation: str = "sdpa"  # eager | sdpa | flash_attention_2
    micro_batch_size: int = 1
    grad_accum: int = 1  # effective batch = micro_batch_size × grad_accum (× GPUs)
    gradient_checkpointing: bool = False
    packing: bool = False
    max_seq_len: int = 2048  # challenge: prompt + completion ≤ 2048 tokens
    time_budget_h: float = 24.0  # challenge: ≤ 24 h of fine-tuning on one GPU
    eval_budget_min: float = 120.0  # challenge: ≤ 2 h on the sample conf
    memory_fraction_cap: Optional[float] = None  # emulate a smaller card on a bigger one
    num_threads: Optional[int] = None  # torch intra-op threads on CPU; null = torch's default


@dataclass
class TinyModelConfig:
    """A Llama-architecture model built in-process from this config (random init) with an in-process tokenizer."""

    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02  # std of the random init
    seed: int = 0


@dataclass
class ModelShape:
    """Architecture numbers the memory pre-flight needs before any weight is loaded (the model's config.json)."""

    layout: str = "llama"  # llama (Llama/Mistral module names) | qwen (Qwen v1: c_attn, c_proj, w1, w2)
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008  # the MLP's hidden width (Qwen v1: config value // 2 per branch)
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v carry a bias (Qwen)


@dataclass
class ModelConfig:
    """A base model: a hub id (+ revision), a local directory, or the in-process tiny model."""

    name: str = MISSING
    hf_id: Optional[str] = None
    revision: Optional[str] = None
    local_path: Optional[str] = None  # a directory with config.json + weights + tokenizer; wins over hf_id
    tiny: Optional[TinyModelConfig] = None  # set only for the in-process model
    arch: str = "LlamaForCausalLM"
    trust_remote_code: bool = False
    gated: bool = False
    license: str = ""
    native_context: int = 2048  # the model's own max_position_embeddings
    max_seq_len: int = 2048  # what lec trains and serves at
    torch_dtype: str = "bfloat16"  # float32 | bfloat16 | float16
    pad_token: Optional[str] = "eos"  # "eos" reuses EOS as padding (models that ship no pad token)
    lora_target_modules: List[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    lr: Optional[float] = None  # per-model learning-rate override; null = the adapter recipe's lr
    warmup_ratio: Optional[float] = None  # per-model warmup override; null = the adapter recipe's
    shape: Optional[ModelShape] = None  # for the memory pre-flight of hub models (tiny/local derive their own)


@dataclass
class SourceConfig:
    """One source of a data mixture, normalised to {instruction, input, output}."""

    name: str = MISSING
    hf_id: Optional[str] = None
    config_name: Optional[str] = None  # the hub dataset's config ("main", "3.0.0")
    revision: Optional[str] = None
    split: str = "train"
    local_path: Optional[str] = None  # jsonl | json | parquet | csv file; wins over hf_id
    generator: Optional[str] = None  # a lec synthetic generator (lec/data/synthetic.py GENERATORS)
    n: int = 0  # rows to generate (generator sources only)
    fields: Dict[str, str] = field(default_factory=dict)  # {instruction|input|output|text: spec}; spec = column,
    # `col[i]` (a list element) or `join(col[a:b])` (list slice joined by blank lines)
    threads: Optional[str] = None  # "oasst": rows are OASST1 messages; build one row per top-ranked thread
    max_turns: Optional[int] = None  # threads only: keep threads of at most this many messages (Percent-BFD: 2)
    filter: Dict[str, Any] = field(default_factory=dict)  # {column_in: [...]} / {column_not_in: [...]}
    take: Optional[int] = None  # keep the first N rows after filtering
    fraction: Optional[float] = None  # keep a seeded random fraction of the rows after filtering (0, 1]
    weight: float = 1.0  # relative share in the mixture (1.0 = as many rows as the source has)
    license: str = ""
    gated: bool = False


@dataclass
class LanguageFilterConfig:
    """Keep rows whose text an offline detector (py3langid) assigns to one of `keep`."""

    enabled: bool = True
    keep: List[str] = field(default_factory=lambda: ["en"])  # challenge eval is English (WEB question.md)
    min_chars: int = 30  # shorter texts are kept unchecked: a detector guesses on a few words
    max_chars: int = 200  # classify the first N characters: enough for the language, bounded cost (~1 µs/byte)
    min_confidence: float = 0.9  # drop only when the detector is this sure (math/code confuse it otherwise)


@dataclass
class LengthFilterConfig:
    """Rows longer than the model's sequence length, counted in the model's own tokens."""

    enabled: bool = True
    max_tokens: Optional[int] = None  # null = min(hardware.max_seq_len, model.max_seq_len) (challenge: 2048)
    action: LengthAction = LengthAction.drop


@dataclass
class ExactDedupConfig:
    enabled: bool = True  # Upaya combine_datasets.py, Platypus merged_largest_keep.py
    key: List[str] = field(default_factory=lambda: ["instruction", "input"])  # normalised (case, whitespace)
    keep: DedupKeep = DedupKeep.longest_output


@dataclass
class NearDedupConfig:
    """MinHash over word n-grams + LSH banding; pairs above `threshold` estimated Jaccard are duplicates."""

    enabled: bool = True  # [lec] Platypus removed near-duplicates (by embeddings); MinHash needs no model
    ngram: int = 5  # data-juicer window_size default
    num_perm: int = 128  # distilabel MinHashDedup default
    threshold: float = 0.7  # data-juicer jaccard_threshold default
    bands: int = 32  # LSH: candidate if one of 32 bands of 4 values matches (P ≥ 0.99 from Jaccard 0.6 on);
    # candidates are then kept only when their signatures agree on ≥ threshold
    seed: int = 1


@dataclass
class LlmGeneratedConfig:
    """Sources the challenge banned: "You can under no circumstance use datasets generated by ChatGPT" (WEB)."""

    enabled: bool = True
    hf_ids: List[str] = field(default_factory=lambda: [
        "tatsu-lab/alpaca",  # text-davinci-003 outputs
        "vicgalle/alpaca-gpt4",  # GPT-4 outputs
        "jondurbin/airoboros-gpt4-1.4.1",  # lingjoor SOLUTION.md excluded it (GPT-4)
        "Open-Orca/OpenOrca",  # GPT-3.5/GPT-4 completions
        "anon8231489123/ShareGPT_Vicuna_unfiltered",  # ChatGPT conversations
        "WizardLM/WizardLM_evol_instruct_70k",  # ChatGPT-evolved
    ])  # fmt: skip
    column_values: Dict[str, List[str]] = field(
        default_factory=lambda: {"data_source": ["airoboros", "leetcode_ne"]}  # Open-Platypus GPT-4 subsets (lingjoor)
    )


@dataclass
class DecontamConfig:
    """Drop training rows sharing an n-gram with an instance of the chosen eval suite (GPT-3 App. C; lm-eval)."""

    enabled: bool = True
    ngram: int = 13  # lm-eval decontamination.md: "we just used 13"
    min_tokens: int = 8  # eval instances shorter than `ngram` (but ≥ this) are matched as a whole
    scenarios_dir: Optional[str] = None  # a HELM benchmark_output/scenarios dir holding the suite's files
    # (from an earlier helm-run); null = the run's own dir; the smoke suite's files are generated


@dataclass
class CurationConfig:
    """The curation steps between loading and mixing, each switchable (conf/data/*.yaml override per mixture)."""

    llm_generated: LlmGeneratedConfig = field(default_factory=LlmGeneratedConfig)
    language: LanguageFilterConfig = field(default_factory=LanguageFilterConfig)
    length: LengthFilterConfig = field(default_factory=LengthFilterConfig)
    exact_dedup: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    examples_per_reason: int = 3  # dropped rows shown per reason in the curation report


@dataclass
class DataConfig:
    """A training data mixture."""

    name: str = MISSING
    sources: List[SourceConfig] = field(default_factory=list)
    template: Template = Template.alpaca
    val_fraction: float = 0.05
    mask_prompt: bool = True  # loss on the response only (Birbal: train_on_inputs false)
    seed: int = 0
    resample_epochs: int = 1  # >1: train.jsonl holds this many passes, each with weights/fractions re-drawn
    # (per-epoch resampling; train for 1 epoch over it)
    curation: CurationConfig = field(default_factory=CurationConfig)


@dataclass
class QuantConfig:
    """bitsandbytes 4-bit loading (QLoRA)."""

    load_in_4bit: bool = True
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "bfloat16"


@dataclass
class AdapterConfig:
    """How weights are trained: LoRA, QLoRA (4-bit base + LoRA) or full fine-tuning, with its optimiser recipe."""

    name: str = MISSING
    kind: AdapterKind = AdapterKind.lora
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Optional[List[str]] = None  # null = the model's lora_target_modules
    bias: str = "none"
    quantization: Optional[QuantConfig] = None
    optim: str = "adamw_torch"
    lr: float = 5.0e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    scheduler: str = "cosine"
    warmup_ratio: float = 0.0
    epochs: float = 1.0
    neftune_noise_alpha: Optional[float] = None


@dataclass
class SyntheticEvalConfig:
    """Scenario files the smoke suite seeds under HELM's output dir, from lec's generators (eval seeds)."""

    mmlu_subjects: List[str] = field(default_factory=list)
    n_eval: int = 0  # instances per scenario (test split)
    n_fewshot: int = 5  # in-context pool (MMLU dev split, GSM train split)
    seed: int = 1_000_003  # disjoint from every training seed (those are < 1e6)
    closed: List[str] = field(default_factory=list)  # closed-stage kinds to seed: sam_sum, corr2cause, ethics_*
    n_closed: int = 20  # rows per closed-stage file (the plugin splits them into train/valid)
    perturbation_assets: bool = True  # seed the files `data_augmentation=canonical` downloads


@dataclass
class EvalConfig:
    """A HELM suite: run entries with `{model}` filled in per evaluated model."""

    name: str = MISSING
    suite: str = MISSING
    entries: List[str] = field(default_factory=list)
    confs: List[str] = field(default_factory=list)  # shipped challenge confs (lec/evaluate/confs), appended
    max_eval_instances: int = 10  # helm-run -m; an entry's own max_eval_instances wins
    num_threads: int = 4  # helm-run -n: concurrent requests to the server
    budget_min: float = 120.0
    eval_base: bool = False  # also evaluate the untuned base model (proves fine-tuning moved the scores)
    synthetic: Optional[SyntheticEvalConfig] = None


@dataclass
class TrainConfig:
    """Run-level training knobs; null = take it from the adapter recipe / hardware preset."""

    max_steps: Optional[int] = None
    epochs: Optional[float] = None
    logging_steps: int = 1
    enabled: bool = True
    time_budget_s: Optional[float] = None  # wall-clock training budget; null = hardware.time_budget_h
    save_every_steps: Optional[int] = None  # periodic checkpoints (Birbal: 64); the budget stop always saves one
    save_total_limit: int = 2  # complete checkpoints kept (oldest deleted first)
    resume_from: Optional[str] = None  # a checkpoints dir or one checkpoint; "auto" = this run's, if any
    pack_len: Optional[int] = None  # tokens per packed row when hardware.packing; null = hardware.max_seq_len
    preflight: bool = True  # refuse a run whose estimated peak memory exceeds the card (lec/preflight.py)


@dataclass
class ServeConfig:
    """The lec model server (challenge HTTP API)."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port
    max_batch_size: int = 8  # rows decoded together (continuous batching); HELM's -n client threads fill them
    batch_wait_ms: float = 5.0  # when idle, how long the first request waits for others to start with it
    max_new_tokens_limit: int = 2048
    startup_timeout_s: float = 180.0
    # Per-model prompt wrapper and answer clean-up, as some finalists' servers did (off by default):
    prompt_template: Optional[str] = None  # e.g. "### Input:\n{prompt}\n\n### Response:\n" (Birbal)
    template_if_blank_lines_below: Optional[int] = None  # wrap only prompts with fewer "\n\n" than this
    cut_at: Optional[str] = None  # keep the completion up to this text, e.g. "\n\n" (Birbal)
    strip_prefixes: List[str] = field(default_factory=list)  # leading phrases removed, case-insensitive


@dataclass
class ScoreConfig:
    """How a run is ranked: against a reference pool of published entries, with the challenge's rules."""

    pool: str = "4090_final"  # a shipped pool (lec/reference) or a path to a file in the organisers' format
    mode: str = "challenge"  # challenge | helm (HELM's own mean win rate)
    only_evaluated: bool = True  # rank on the scenarios the run evaluated (False: missing = worst, as the challenge)


@dataclass
class MlflowConfig:
    tracking_uri: Optional[str] = None  # null = sqlite:///<outputs_dir>/mlflow.db
    experiment: str = "lec"


@dataclass
class SweepConfig:
    """Multirun bookkeeping (lec/sweep.py): the objective a job returns and the parent run ranks by, resuming."""

    objective: str = "challenge/score_full"  # an MLflow metric of the job's run; one-stage suites: Score_open/hidden
    direction: str = "maximize"  # maximize | minimize (hparams_search passes it to Optuna)
    resume: Optional[str] = None  # a sweep dir or parent run id: jobs whose child FINISHED with the same overrides are skipped
    compare: bool = True  # at the end of a sweep, write lec.compare plots + HTML and log them to the parent run


@dataclass
class LecConfig:
    """One lec run: the five config groups plus run-level settings."""

    hardware: HardwareConfig = MISSING
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    adapter: AdapterConfig = MISSING
    eval: EvalConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seed: int = 0
    outputs_dir: str = "outputs"
    run_name: Optional[str] = None  # null = the Hydra overrides ("default" when none)


def max_row_tokens(cfg: LecConfig) -> int:
    """The longest training row: the hardware preset's sequence length, capped by the model's context."""
    return min(cfg.hardware.max_seq_len, cfg.model.max_seq_len)


def register() -> None:
    """Store the schema as `lec_schema`, the first entry of conf/config.yaml's defaults."""
    ConfigStore.instance().store(name="lec_schema", node=LecConfig)


def validate(cfg: LecConfig) -> LecConfig:
    """Cross-field checks that typing cannot express; raise ConfigError before any heavy work."""
    sources = [cfg.model.local_path, cfg.model.hf_id, cfg.model.tiny]
    if not any(s is not None for s in sources):
        raise ConfigError(f"model '{cfg.model.name}' needs one of model.hf_id, model.local_path or model.tiny")
    if cfg.adapter.kind is AdapterKind.qlora and cfg.hardware.device is not Device.cuda:
        raise ConfigError(
            f"adapter=qlora needs a CUDA GPU (bitsandbytes 4-bit training), but hardware={cfg.hardware.name} "
            "runs on cpu: use adapter=lora or adapter=full, or a GPU hardware preset (rtx4090, a100_40gb, h100)"
        )
    if cfg.adapter.kind is AdapterKind.qlora and cfg.adapter.quantization is None:
        raise ConfigError("adapter=qlora needs adapter.quantization (load_in_4bit, quant_type, …)")
    if not cfg.data.sources:
        raise ConfigError(f"data '{cfg.data.name}' has no sources")
    for src in cfg.data.sources:
        given = [k for k in ("hf_id", "local_path", "generator") if getattr(src, k)]
        if not given:
            raise ConfigError(f"data source '{src.name}' needs one of hf_id, local_path or generator")
        unknown = set(src.fields) - {"instruction", "input", "output", "text"}
        if unknown:
            raise ConfigError(
                f"data source '{src.name}': fields maps unknown target(s) {sorted(unknown)}; "
                "valid targets: instruction, input, output, text"
            )
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {cfg.data.val_fraction}")
    if cfg.serve.prompt_template is not None and "{prompt}" not in cfg.serve.prompt_template:
        raise ConfigError("serve.prompt_template must contain '{prompt}' where HELM's prompt goes")
    from lec.score import POOLS

    if cfg.score.pool not in POOLS and not Path(cfg.score.pool).exists():
        raise ConfigError(f"score.pool '{cfg.score.pool}' is neither a shipped pool ({', '.join(POOLS)}) nor a file")
    if cfg.hardware.micro_batch_size < 1 or cfg.hardware.grad_accum < 1:
        raise ConfigError("hardware.micro_batch_size and hardware.grad_accum must be ≥ 1")
    if cfg.hardware.memory_fraction_cap is not None and not 0 < cfg.hardware.memory_fraction_cap <= 1:
        raise ConfigError(f"hardware.memory_fraction_cap must be in (0, 1], got {cfg.hardware.memory_fraction_cap}")
    if (cfg.train.time_budget_s is not None and cfg.train.time_budget_s <= 0) or cfg.hardware.time_budget_h <= 0:
        raise ConfigError("train.time_budget_s and hardware.time_budget_h must be > 0")
    if cfg.train.pack_len is not None and cfg.train.pack_len < cfg.hardware.max_seq_len:
        raise ConfigError(f"train.pack_len={cfg.train.pack_len} must be ≥ hardware.max_seq_len={cfg.hardware.max_seq_len}")
    if cfg.eval.num_threads < 1 or cfg.eval.max_eval_instances < 1 or cfg.eval.budget_min <= 0:
        raise ConfigError("eval.num_threads and eval.max_eval_instances must be ≥ 1 and eval.budget_min > 0")
    if any(s.weight < 0 or (s.take is not None and s.take < 0) for s in cfg.data.sources):
        raise ConfigError("data source weight and take must be ≥ 0")
    _validate_data(cfg.data)
    if cfg.data.seed >= 1000:
        raise ConfigError("data.seed must be < 1000: source seeds data.seed×1000+i stay below the eval seeds (≥ 1e6)")
    if cfg.score.mode not in ("challenge", "helm"):
        raise ConfigError(f"score.mode must be one of challenge, helm; got '{cfg.score.mode}'")
    if cfg.sweep.direction not in ("maximize", "minimize"):
        raise ConfigError(f"sweep.direction must be one of maximize, minimize; got '{cfg.sweep.direction}'")
    from lec.evaluate.suites import SuiteError, suite_entries

    try:
        entries = suite_entries(cfg.eval.entries, cfg.eval.confs)
    except SuiteError as err:
        raise ConfigError(f"eval '{cfg.eval.name}': {err}") from err
    if not entries:
        raise ConfigError(f"eval '{cfg.eval.name}' has no run entries")
    for entry in entries:
        if "model={model}" not in entry:
            raise ConfigError(f"eval entry '{entry}' must contain 'model={{model}}' (lec fills in the served model)")
    if cfg.hardware.max_seq_len > cfg.model.native_context and cfg.model.tiny is None:
        raise ConfigError(
            f"hardware.max_seq_len={cfg.hardware.max_seq_len} exceeds model '{cfg.model.name}' context "
            f"{cfg.model.native_context}"
        )
    return cfg


def _validate_data(data: DataConfig) -> None:
    """Data-section checks (fractions, thread formats, curation knobs)."""
    for src in data.sources:
        if src.fraction is not None and not 0.0 < src.fraction <= 1.0:
            raise ConfigError(f"data source '{src.name}': fraction must be in (0, 1], got {src.fraction}")
        if src.threads not in (None, "oasst"):
            raise ConfigError(f"data source '{src.name}': threads '{src.threads}' unknown; valid: oasst")
    c = data.curation
    if not 0.0 < c.near_dedup.threshold <= 1.0 or c.near_dedup.num_perm % c.near_dedup.bands:
        raise ConfigError("data.curation.near_dedup: threshold must be in (0, 1] and num_perm a multiple of bands")
    if c.near_dedup.ngram < 1 or c.decontam.ngram < 1 or not 1 <= c.decontam.min_tokens <= c.decontam.ngram:
        raise ConfigError("data.curation: ngram sizes must be ≥ 1 and 1 ≤ decontam.min_tokens ≤ decontam.ngram")
    if data.resample_epochs < 1:
        raise ConfigError(f"data.resample_epochs must be ≥ 1, got {data.resample_epochs}")


def load(cfg: DictConfig) -> LecConfig:
    """The boundary: a composed DictConfig (Hydra or params.yaml) → a validated LecConfig."""
    if not isinstance(cfg, DictConfig) or OmegaConf.get_type(cfg) is not LecConfig:
        merged = OmegaConf.merge(OmegaConf.structured(LecConfig), cfg)
    else:
        merged = cfg
    return validate(OmegaConf.to_object(merged))


def to_container(cfg: LecConfig) -> Dict[str, Any]:
    """Plain dict (enums as their values) for logging and params.yaml."""
    structured = OmegaConf.structured(cfg)
    return OmegaConf.to_container(structured, resolve=True, enum_to_str=True)


def check_override_keys(overrides: List[str]) -> None:
    """Fail on a dotted override whose key is not in the schema, naming the valid keys at that level
    (Hydra's own message says only "Key 'rr' not in 'AdapterConfig'")."""
    for o in overrides:
        if "=" not in o or o[0] in "+~" or o.startswith("hydra"):
            continue
        key = o.split("=", 1)[0]
        if "/" in key or key in GROUPS or "." not in key and key in ("experiment", "hparams_search"):
            continue
        cls: Any = LecConfig
        for part in key.split("."):
            hints = typing.get_type_hints(cls)
            if part not in hints:
                raise ConfigError(f"unknown key '{key}': {cls.__name__} has no '{part}'; valid keys: {', '.join(hints)}")
            cls = _unwrap(hints[part])
            if not dataclasses.is_dataclass(cls):
                break  # a leaf, a dict or a list: Hydra/OmegaConf check the rest


def _unwrap(tp: Any) -> Any:
    """Optional[X] → X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp


def compose(overrides: Optional[List[str]] = None) -> LecConfig:
    """Compose conf/ with Hydra's compose API (tests, tools) and return the validated config."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    check_override_keys(list(overrides or []))
    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides or []))
    return load(cfg)
