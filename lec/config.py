"""Typed schema of a lec run, registered in Hydra's ConfigStore.

The YAML files under `conf/` are plain data; every composition is merged into `LecConfig`, so a typo key, a wrong
type or an unknown enum value fails at compose time. `load(cfg)` converts a composed DictConfig into these
dataclasses at the boundary and runs every check that needs no other lec module: numeric ranges (each number's
range is declared beside it, `num(default, lo, hi)`), unknown keys (also `+key=…` ones), paths that must exist and
cross-field rules. `lec.plan.build` turns the result into the frozen plan of what will run. This module imports
nothing from lec.

One key per concept: the learning rate is `adapter.lr`, epochs `adapter.epochs`, LoRA targets
`adapter.target_modules`, the training sample length `hardware.max_seq_len`, packing `hardware.pack_len`, the
training time budget `hardware.time_budget_h`, the served context `serve.max_seq_len`. A model's tuned value for
one of them is config (conf/recipe/<model>_<adapter>.yaml writes the same key), never a rule in code.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
# A wheel carries conf/ as lec/conf (pyproject.toml package-dir); a checkout (editable install or PYTHONPATH) has none
# there and reads the repo's conf/.
_PACKAGED_CONF = Path(__file__).resolve().parent / "conf"
CONF_DIR = _PACKAGED_CONF if _PACKAGED_CONF.is_dir() else ROOT / "conf"
GROUPS = ("hardware", "model", "data", "adapter", "eval")
SEARCH_GROUPS = ("experiment", "hparams_search", "recipe", "bench")  # optional groups, chosen like the five above


class ConfigError(ValueError):
    """A composed config that is well-typed but cannot run; the message says which knob to turn."""


class CompositionError(ConfigError):
    """Hydra could not compose the overrides at all (no such option, a value of the wrong type): a sweep holding
    one would crash at that job, so it is refused before the first job starts."""


def num(default: Any, lo: Optional[float] = None, hi: Optional[float] = None, *, lo_open: bool = False,
        hi_open: bool = False) -> Any:
    """A numeric field with its allowed range: `num(16, 1)` is ≥ 1, `num(0.05, 0, 1, hi_open=True)` is in [0, 1)."""
    return field(default=default, metadata={"range": (lo, hi, lo_open, hi_open)})


def _range_text(lo, hi, lo_open, hi_open) -> str:
    if hi is None:
        return f"{'>' if lo_open else '≥'} {lo:g}"
    if lo is None:
        return f"{'<' if hi_open else '≤'} {hi:g}"
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


# --- enums: the values the libraries accept ---------------------------------------------------------------------


class Device(str, enum.Enum):
    cpu = "cpu"
    cuda = "cuda"


class AdapterKind(str, enum.Enum):
    lora = "lora"
    qlora = "qlora"
    full = "full"


class DType(str, enum.Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Attention(str, enum.Enum):
    """transformers' attention implementations (`attn_implementation`; transformers.modeling_utils)."""

    eager = "eager"
    sdpa = "sdpa"
    flash_attention_2 = "flash_attention_2"
    flash_attention_3 = "flash_attention_3"
    flex_attention = "flex_attention"


class Scheduler(str, enum.Enum):
    """transformers.trainer_utils.SchedulerType (a test checks these against the installed transformers)."""

    linear = "linear"
    cosine = "cosine"
    cosine_with_restarts = "cosine_with_restarts"
    polynomial = "polynomial"
    constant = "constant"
    constant_with_warmup = "constant_with_warmup"
    inverse_sqrt = "inverse_sqrt"
    cosine_with_min_lr = "cosine_with_min_lr"
    warmup_stable_decay = "warmup_stable_decay"


class Optimizer(str, enum.Enum):
    """The transformers.training_args.OptimizerNames that a single-GPU LoRA/full run can use (a test checks each
    is accepted by the installed transformers). `paged_*` and `*8bit` need bitsandbytes (the `gpu` extra)."""

    adamw_torch = "adamw_torch"
    adamw_torch_fused = "adamw_torch_fused"
    adafactor = "adafactor"
    sgd = "sgd"
    adagrad = "adagrad"
    rmsprop = "rmsprop"
    adamw_8bit = "adamw_8bit"
    adamw_bnb_8bit = "adamw_bnb_8bit"
    paged_adamw_32bit = "paged_adamw_32bit"
    paged_adamw_8bit = "paged_adamw_8bit"
    lion_32bit = "lion_32bit"
    lion_8bit = "lion_8bit"
    paged_lion_32bit = "paged_lion_32bit"
    paged_lion_8bit = "paged_lion_8bit"


class LoraBias(str, enum.Enum):
    """peft LoraConfig.bias."""

    none = "none"
    all = "all"
    lora_only = "lora_only"


class QuantType(str, enum.Enum):
    """bitsandbytes bnb_4bit_quant_type."""

    nf4 = "nf4"
    fp4 = "fp4"


class Template(str, enum.Enum):
    raw = "raw"  # prompt as is: what HELM sends, so training and serving see the same text
    alpaca = "alpaca"  # "### Instruction:/### Input:/### Response:" (Alpaca; LitGPT generate_prompt)
    guanaco = "guanaco"  # rows already carry "### Human: … ### Assistant: …" text
    plain = "plain"  # rows carry one `text`; all of it is trained on (Knovel: labels = input_ids, no prompt)
    human_assistant = "human_assistant"  # LLaMA-Factory `default`: system line, "Human: …\nAssistant: " (Percent-BFD)
    chat = "chat"  # the model tokenizer's own chat template (apply_chat_template); threads keep every turn


class Threads(str, enum.Enum):
    oasst = "oasst"  # rows are OASST1 messages; one row per top-ranked thread


class LengthAction(str, enum.Enum):
    drop = "drop"  # Upaya, MSR: over-long rows are dropped
    truncate = "truncate"  # Percent-BFD: cut to the limit (the response is cut, the prompt kept)


class DedupKeep(str, enum.Enum):
    first = "first"  # the first row in source order (Upaya combine_datasets.py, after its shuffle)
    longest_output = "longest_output"  # the row with the longest output (Platypus merged_largest_keep.py)


class ScoreMode(str, enum.Enum):
    challenge = "challenge"  # the organisers' scorer (lec/score.py)
    helm = "helm"  # HELM's own mean win rate


class Backend(str, enum.Enum):
    helm = "helm"  # crfm-helm's helm-run against the challenge API
    lm_eval = "lm_eval"  # lm-evaluation-harness's local-completions against the OpenAI API


class Direction(str, enum.Enum):
    maximize = "maximize"
    minimize = "minimize"


# --- the five groups ----------------------------------------------------------------------------------------------


@dataclass
class HardwareConfig:
    """One machine: precision, attention kernel, batch shape and the track's training budget."""

    name: str = MISSING
    device: Device = Device.cpu
    vram_gb: float = num(0.0, 0)  # card size; 0 on CPU
    usable_vram_gb: Optional[float] = num(None, 0, lo_open=True)  # what the driver really hands out (A100: 39.35)
    bf16: bool = False
    tf32: bool = False  # CUDA only
    attn_implementation: Attention = Attention.sdpa
    micro_batch_size: int = num(1, 1)
    grad_accum: int = num(1, 1)  # rows per optimizer step = micro_batch_size × grad_accum (× GPUs)
    gradient_checkpointing: bool = False
    max_seq_len: int = num(2048, 16)  # the longest training sample in tokens (length filter, truncation)
    pack_len: Optional[int] = num(None, 16)  # null = no packing; N = samples packed into rows of N tokens
    time_budget_h: float = num(24.0, 0, lo_open=True)  # challenge: ≤ 24 h of fine-tuning on one GPU
    memory_fraction_cap: Optional[float] = num(None, 0, 1, lo_open=True)  # CUDA only: emulate a smaller card
    num_threads: Optional[int] = num(None, 1)  # torch intra-op threads on CPU; null = torch's default


@dataclass
class TinyModelConfig:
    """A Llama-architecture model built in-process from this config (random init) with an in-process tokenizer."""

    vocab_size: int = num(1024, 64)  # ≥ the byte alphabet (256) is what BPE needs; 64 keeps tests small
    hidden_size: int = num(128, 1)
    intermediate_size: int = num(256, 1)
    num_hidden_layers: int = num(2, 1)
    num_attention_heads: int = num(4, 1)
    num_key_value_heads: int = num(2, 1)
    initializer_range: float = num(0.02, 0, lo_open=True)  # std of the random init
    seed: int = num(0, 0)


@dataclass
class ModelShape:
    """Architecture numbers the memory pre-flight needs before any weight is loaded. lec reads them from the model's
    config.json at run time (lec.models.model_facts); a model file sets `shape` only to pre-flight without one."""

    layout: str = "llama"  # Linear names when `linears` is null: llama (q/k/v/o_proj, gate/up/down_proj) | qwen (Qwen
    # v1: c_attn, c_proj, w1, w2); read from config.json: its model_type (informational, `linears` is filled in)
    vocab_size: int = num(32000, 1)
    hidden_size: int = num(4096, 1)
    intermediate_size: int = num(11008, 1)  # the MLP's hidden width (Qwen v1: config value // 2 per branch)
    num_hidden_layers: int = num(32, 1)
    num_attention_heads: int = num(32, 1)
    num_key_value_heads: int = num(32, 1)
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v carry a bias (Qwen v1, Qwen2)
    head_dim: Optional[int] = num(None, 1)  # width of one attention head; null = hidden_size // num_attention_heads
    # (Gemma-2-9B: 256, not 3584 / 16)
    linears: Optional[Dict[str, List[List[int]]]] = None  # one decoder layer's nn.Linear modules: name suffix →
    # [[d_in, d_out], …], listed from the model built on the meta device; null = the layout's table
    num_params: Optional[int] = num(None, 1)  # every parameter of the model built on the meta device; null = layout formula


@dataclass
class ModelConfig:
    """A base model: a hub id (+ revision), the same model's files in a local directory, or the in-process tiny one."""

    name: str = MISSING
    hf_id: Optional[str] = None  # which model (licence, identity); loaded from the hub unless local_path is set
    revision: Optional[str] = None  # a hub branch, tag or commit; a 40-hex commit is required with trust_remote_code
    local_path: Optional[str] = None  # where this model's files are (config.json + weights + tokenizer): offline
    tiny: Optional[TinyModelConfig] = None  # set only for the in-process model
    arch: Optional[str] = None  # informational; the class comes from config.json `architectures`
    trust_remote_code: bool = False
    gated: bool = False
    license: str = ""
    native_context: Optional[int] = num(None, 16)  # the model's own context (config.json max_position_embeddings);
    # null = read from config.json when the plan is built (lec.models.model_facts)
    torch_dtype: DType = DType.bfloat16
    pad_token: Optional[str] = "eos"  # "eos" reuses EOS as padding (models that ship no pad token)
    shape: Optional[ModelShape] = None  # only to pre-flight a hub model offline before its config.json is cached


@dataclass
class SourceConfig:
    """One source of a data mixture, normalised to {instruction, input, output}: a hub dataset (hf_id, its files
    optionally at local_path) or a lec generator."""

    name: str = MISSING
    hf_id: Optional[str] = None
    config_name: Optional[str] = None  # the hub dataset's config ("main", "3.0.0")
    revision: Optional[str] = None
    split: str = "train"
    local_path: Optional[str] = None  # this source's rows in a jsonl | json | parquet | csv file: offline
    generator: Optional[str] = None  # a lec synthetic generator (lec/data/synthetic.py GENERATORS)
    n: int = num(0, 0)  # rows to generate (generator sources only)
    fields: Dict[str, str] = field(default_factory=dict)  # {instruction|input|output|text: spec}; spec = column,
    # `col[i]` (a list element) or `join(col[a:b])` (list slice joined by blank lines)
    threads: Optional[Threads] = None  # oasst: rows are OASST1 messages; build one row per top-ranked thread
    max_turns: Optional[int] = num(None, 1)  # threads only: keep threads of at most this many messages
    filter: Dict[str, Any] = field(default_factory=dict)  # {column_in: [...]} / {column_not_in: [...]}
    take: Optional[int] = num(None, 0)  # keep the first N rows after filtering
    fraction: Optional[float] = num(None, 0, 1, lo_open=True)  # keep a seeded random fraction after filtering
    weight: float = num(1.0, 0)  # relative share in the mixture (1.0 = as many rows as the source has)
    license: str = ""
    gated: bool = False


@dataclass
class LanguageFilterConfig:
    """Keep rows whose text an offline detector (py3langid) assigns to one of `keep`."""

    enabled: bool = True
    keep: List[str] = field(default_factory=lambda: ["en"])  # challenge eval is English (WEB question.md)
    min_chars: int = num(30, 0)  # shorter texts are kept unchecked: a detector guesses on a few words
    max_chars: int = num(200, 1)  # classify the first N characters: enough for the language, bounded cost
    min_confidence: float = num(0.9, 0, 1)  # drop only when the detector is this sure (math/code confuse it)


@dataclass
class LengthFilterConfig:
    """Rows longer than hardware.max_seq_len, counted in the model's own tokens."""

    enabled: bool = True
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
    ngram: int = num(5, 1)  # data-juicer window_size default
    num_perm: int = num(128, 1)  # distilabel MinHashDedup default
    threshold: float = num(0.7, 0, 1, lo_open=True)  # data-juicer jaccard_threshold default
    bands: int = num(32, 1)  # LSH: candidate if one of 32 bands of 4 values matches (P ≥ 0.99 from Jaccard 0.6 on);
    # candidates are then kept only when their signatures agree on ≥ threshold
    seed: int = num(1, 0)


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
    ngram: int = num(13, 1)  # lm-eval decontamination.md: "we just used 13"
    min_tokens: int = num(8, 1)  # eval instances shorter than `ngram` (but ≥ this) are matched as a whole
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
    examples_per_reason: int = num(3, 0)  # dropped rows shown per reason in the curation report


@dataclass
class DataConfig:
    """A training data mixture."""

    name: str = MISSING
    sources: List[SourceConfig] = field(default_factory=list)
    template: Template = Template.alpaca
    val_fraction: float = num(0.05, 0, 1, hi_open=True)
    mask_prompt: bool = True  # loss on the response only (Birbal: train_on_inputs false)
    seed: int = num(0, 0, 1000, hi_open=True)  # source seeds data.seed×1000+i stay below the eval seeds (≥ 1e6)
    resample_epochs: int = num(1, 1)  # >1: train.jsonl holds this many passes, each with weights/fractions re-drawn
    # (per-epoch resampling; train for 1 epoch over it)
    curation: CurationConfig = field(default_factory=CurationConfig)


@dataclass
class QuantConfig:
    """bitsandbytes 4-bit loading (QLoRA)."""

    load_in_4bit: bool = True
    quant_type: QuantType = QuantType.nf4
    double_quant: bool = True
    compute_dtype: DType = DType.bfloat16


@dataclass
class AdapterConfig:
    """How weights are trained: LoRA, QLoRA (4-bit base + LoRA) or full fine-tuning, with its optimiser recipe."""

    name: str = MISSING
    kind: AdapterKind = AdapterKind.lora
    r: int = num(16, 1)
    alpha: float = num(32, 0, lo_open=True)
    dropout: float = num(0.05, 0, 1, hi_open=True)
    target_modules: List[str] = field(default_factory=lambda: ["all-linear"])  # module-name suffixes; all-linear =
    # every Linear of the decoder blocks (peft's "all-linear"), resolved to the model's names in the plan
    bias: LoraBias = LoraBias.none
    quantization: Optional[QuantConfig] = None  # qlora only
    optim: Optimizer = Optimizer.adamw_torch
    lr: float = num(5.0e-5, 0, lo_open=True)
    weight_decay: float = num(0.0, 0)
    max_grad_norm: float = num(1.0, 0)  # 0 = no clipping
    scheduler: Scheduler = Scheduler.cosine
    warmup_ratio: float = num(0.0, 0, 1, hi_open=True)
    epochs: float = num(1.0, 0, lo_open=True)  # passes over train.jsonl (train.max_steps, when set, replaces it)
    neftune_noise_alpha: Optional[float] = num(None, 0, lo_open=True)


@dataclass
class SyntheticEvalConfig:
    """Scenario files the smoke suite seeds under HELM's output dir, from lec's generators (eval seeds)."""

    mmlu_subjects: List[str] = field(default_factory=list)
    n_eval: int = num(0, 1)  # instances per scenario (test split)
    n_fewshot: int = num(5, 0)  # in-context pool (MMLU dev split, GSM train split)
    seed: int = num(1_000_003, 1_000_000)  # disjoint from every training seed (those are < 1e6)
    closed: List[str] = field(default_factory=list)  # closed-stage kinds to seed: sam_sum, corr2cause, ethics_*
    n_closed: int = num(20, 5)  # rows per closed-stage file (the plugin splits them 80/20 into train/valid)
    perturbation_assets: bool = True  # seed the files `data_augmentation=canonical` downloads


@dataclass
class BenchConfig:
    """The suite's tasks that `train.bench_every_steps` scores during training: lm-eval multiple-choice tasks, run
    in-process on the live model by loglikelihood (lec/evaluate/bench.py), in the challenge's two stages; each group's
    mean and the open-minus-closed gap are curves beside the loss."""

    open: List[str] = field(default_factory=list)  # open-stage tasks (the smoke suite: lec_mmlu_<subject>)
    closed: List[str] = field(default_factory=list)  # closed-stage tasks (the smoke suite: lec_corr2cause, lec_ethics_*)
    limit: int = num(12, 1)  # docs per task per check: the first N of its eval split, the same N every check


@dataclass
class EvalConfig:
    """A HELM suite: run entries with `{model}` filled in per evaluated model."""

    name: str = MISSING
    suite: str = MISSING
    entries: List[str] = field(default_factory=list)
    confs: List[str] = field(default_factory=list)  # shipped challenge confs (lec/evaluate/confs), appended
    max_eval_instances: int = num(10, 1)  # helm-run -m; an entry's own max_eval_instances wins
    num_threads: int = num(4, 1)  # helm-run -n: concurrent requests to the server
    budget_min: float = num(120.0, 0, lo_open=True)  # helm-run's wall-clock budget (challenge: 2 h sample conf)
    eval_base: bool = False  # also evaluate the untuned base model (proves fine-tuning moved the scores)
    # helm-summarize after helm-run: HELM's tables and the pages `helm-server` shows (~14 s of CPU, 9 of them its
    # import). The scores come from the runs' stats.json either way.
    summarize: bool = True
    synthetic: Optional[SyntheticEvalConfig] = None
    # HELM's request cache, one SQLite file per served model's identity (lec/evaluate/identity.py): an evaluation
    # started again re-asks nothing it has an answer for. null = <outputs_dir>/cache/helm; a shared path (NFS, a
    # cluster's scratch) lets a job restarted on another machine resume.
    cache_dir: Optional[str] = None
    # Which libraries evaluate the served models; the first is the one scored (challenge metrics, the leaderboard).
    backends: List[Backend] = field(default_factory=lambda: [Backend.helm])
    lm_eval_tasks: List[str] = field(default_factory=list)  # lm-eval task names (the smoke suite's: lec_mmlu_*, lec_gsm)
    # lm-eval results in the challenge's terms (the scorer's scenario/metric names, e.g. mmlu/exact_match),
    # "<scenario>/<metric>=<task>/<metric>[+<task>/<metric>…]" (averaged):
    # what scores an lm-eval-only run, and the pairs compared when both backends ran (summary.json `agreement`).
    lm_eval_metrics: List[str] = field(default_factory=list)
    bench: BenchConfig = field(default_factory=BenchConfig)  # tasks of the training-time curves; none = the suite has none


@dataclass
class RulesConfig:
    """A competition's rules as data (conf/rules/): what `compliance` answers for every run and leaderboard entry."""

    name: str = MISSING
    source: str = ""  # the rules page
    base_families: Dict[str, str] = field(default_factory=dict)  # family → regex on the model's id
    instruction_tuned: str = ""  # regex: a name that marks an instruction-tuned model
    base_licenses: List[str] = field(default_factory=list)
    track_hardware: List[str] = field(default_factory=list)  # hardware option names of the tracks
    max_train_hours: float = num(24.0, 0, lo_open=True)
    max_eval_min: float = num(120.0, 0, lo_open=True)


SOURCE_KINDS = {  # evaluate.source: "<kind>" or "<kind>:<where>"
    "model": "the composed model itself: an option (model=…), model.hf_id or model.local_path",
    "adapter": "adapter:<dir>, a PEFT adapter (or a full fine-tuned model dir) on top of the composed model",
    "run": "run:<dir>, a finished lec run: its model, data template and serve settings, and its adapter/",
    "endpoint": "endpoint:<url>, a server already running the challenge API (/process, /tokenize, /decode); the "
                "composed model then only names its tokenizer family",
}


@dataclass
class EvaluateConfig:
    """`python -m lec.evaluate`: which model to evaluate without training (README "Evaluate without training");
    `-m evaluate.source=a,b,c` evaluates several into one leaderboard."""

    source: str = "model"  # see SOURCE_KINDS
    name: Optional[str] = None  # the entry's name on the leaderboard and in MLflow; null = from the source


# --- run-level settings -------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Run-level training knobs."""

    enabled: bool = True
    max_steps: Optional[int] = num(None, 1)  # null = adapter.epochs over train.jsonl; N = exactly N optimizer steps
    logging_steps: int = num(1, 1)
    save_every_steps: Optional[int] = num(None, 1)  # periodic checkpoints (Birbal: 64); the budget stop always saves
    save_total_limit: int = num(2, 1)  # complete checkpoints kept (oldest deleted first)
    # val/loss on data/val.jsonl every N optimizer steps and always at the end; null = at the end only. 50 steps
    # is ~7 checks over the default run (~1 s each for its 300 held-out rows)
    eval_every_steps: Optional[int] = num(50, 1)
    early_stopping_patience: Optional[int] = num(None, 1)  # stop after N checks without a lower val/loss; null = never
    # score the live model on eval.bench's tasks at step 0 (the base model, a fresh run only), every N optimizer steps
    # and at the end: bench/<task>/<metric> curves; null = off (GPU presets). On for the embedded default (conf/bench/)
    bench_every_steps: Optional[int] = num(None, 1)
    # the run's adapter is the weights at the lowest val/loss, not the last (the 4090 winner, Birbal: axolotl's
    # load_best_model_at_end on eval_loss, github.com/Upaya07/NeurIPS-llm-efficiency-challenge README @ 6b2bb5d6)
    keep_best: bool = True
    resume_from: Optional[str] = None  # a checkpoints dir or one checkpoint; "auto" = this run's, if any
    preflight: bool = True  # refuse a run whose estimated peak memory exceeds the card (lec/preflight.py)


@dataclass
class ServeConfig:
    """The lec model server (challenge HTTP API)."""

    host: str = "127.0.0.1"  # another address (0.0.0.0: every interface) needs api_key or allow_unauthenticated
    port: int = num(0, 0, 65535)  # 0 = pick a free port
    api_key: Optional[str] = None  # clients send `Authorization: Bearer <key>` (every endpoint but /health); e.g.
    # serve.api_key='${oc.env:LEC_API_KEY}' keeps it out of files. MLflow records only whether one was set.
    allow_unauthenticated: bool = False  # serve a non-loopback address without a key (you firewall it yourself)
    max_request_bytes: int = num(4 * 2**20, 1024)  # larger bodies get 413 before parsing; 4 MiB is ~100× the
    # longest HELM prompt at a 2048-token context (a token is ≤ ~16 bytes of text for these vocabularies)
    max_seq_len: int = num(2048, 16)  # served context: prompt + completion (WEB question.md: ≤ 2048 tokens)
    max_batch_size: int = num(8, 1)  # rows decoded together (continuous batching); HELM's -n threads fill them
    batch_wait_ms: float = num(5.0, 0)  # when idle, how long the first request waits for others to start with it
    max_new_tokens_limit: int = num(2048, 1)
    # KV of shared prompt prefixes (HELM's in-context examples), LRU-evicted past this size; 0 = off. 1 GiB holds
    # ~8k tokens of Mistral-7B's KV (32 layers × 2 × 8 KV heads × 128 × 2 bytes = 128 KiB per token).
    prefix_cache_mb: float = num(1024.0, 0)
    startup_timeout_s: float = num(180.0, 0, lo_open=True)
    # Per-model prompt wrapper and answer clean-up, as some finalists' servers did (off by default):
    prompt_template: Optional[str] = None  # e.g. "### Input:\n{prompt}\n\n### Response:\n" (Birbal); null = the
    # training template (data.template)
    template_if_blank_lines_below: Optional[int] = num(None, 1)  # wrap only prompts with fewer "\n\n" than this
    cut_at: Optional[str] = None  # keep the completion up to this text, e.g. "\n\n" (Birbal)
    strip_prefixes: List[str] = field(default_factory=list)  # leading phrases removed, case-insensitive


@dataclass
class ScoreConfig:
    """How a run is ranked: against a reference pool of published entries, with the challenge's rules."""

    pool: str = "4090_final"  # a shipped pool (lec/reference) or a path to a file in the organisers' format
    mode: ScoreMode = ScoreMode.challenge
    only_evaluated: bool = True  # rank on the scenarios the run evaluated (False: missing = worst, as the challenge)


@dataclass
class MlflowConfig:
    tracking_uri: Optional[str] = None  # null = sqlite:///<outputs_dir>/mlflow.db
    experiment: str = "lec"


@dataclass
class SweepConfig:
    """Multirun bookkeeping (lec/sweep.py): the objective a job returns and the parent run ranks by, resuming."""

    objective: str = "challenge/score_full"  # an MLflow metric of the job's run; one-stage suites: Score_open/hidden
    direction: Direction = Direction.maximize  # hparams_search passes it to Optuna
    resume: Optional[str] = None  # a sweep dir or parent run id: jobs whose child FINISHED with the same overrides
    # are skipped
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
    rules: RulesConfig = MISSING
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)  # python -m lec.evaluate only
    seed: int = num(0, 0)
    outputs_dir: str = "outputs"
    run_name: Optional[str] = None  # null = the Hydra overrides ("default" when none)


PARALLEL_JOBS_ENV = "LEC_PARALLEL_JOBS"  # set by a sweep's launching process (lec.sweep.parallel_jobs)


def cpu_threads(lone: int) -> int:
    """`${lec_cpu_threads:N}` (conf/hardware/cpu.yaml): torch's threads for a CPU run. A SLURM job gets the CPUs it was
    given; otherwise a lone run uses N, and the jobs of a sweep that run at once on this machine (submitit_local)
    share its cores: min(N, cores // jobs), at least 1, so two jobs on 2 cores get one thread each."""
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    jobs = int(os.environ.get(PARALLEL_JOBS_ENV) or 1)
    return max(1, min(int(lone), len(os.sched_getaffinity(0)) // jobs))


def register() -> None:
    """Store the schema as `lec_schema`, the first entry of conf/config.yaml's defaults, and lec's resolvers."""
    ConfigStore.instance().store(name="lec_schema", node=LecConfig)
    if not OmegaConf.has_resolver("lec_cpu_threads"):
        OmegaConf.register_new_resolver("lec_cpu_threads", cpu_threads)


# --- the boundary: DictConfig → validated LecConfig -------------------------------------------------------------


def load(cfg: DictConfig) -> LecConfig:
    """The boundary: a composed DictConfig (Hydra or params.yaml) → a validated LecConfig. Raises ConfigError with
    one line naming the key, the value and what is allowed."""
    check_keys(OmegaConf.to_container(cfg, resolve=False))
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = cfg if OmegaConf.get_type(cfg) is LecConfig else OmegaConf.merge(OmegaConf.structured(LecConfig), cfg)
        typed = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or ""
        raise ConfigError(f"{key}: {getattr(err, 'msg', str(err))}".strip(": ").splitlines()[0]) from None
    return validate(typed)


def check_keys(data: Any, cls: Any = LecConfig, path: str = "") -> None:
    """Every key of a composed (unresolved) config must be in the schema: `+adapter.rr=4` or a stray key in
    params.yaml is refused, naming the valid keys at that level."""
    if not isinstance(data, dict) or not dataclasses.is_dataclass(cls):
        return
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if not path and key == "hydra":
            continue
        if key not in hints:
            raise ConfigError(f"unknown key '{path}{key}': {cls.__name__} has no '{key}'; valid keys: {', '.join(hints)}")
        tp = _unwrap(hints[key])
        if typing.get_origin(tp) in (list, List) and isinstance(value, list):
            (item,) = typing.get_args(tp) or (None,)
            for i, v in enumerate(value):
                check_keys(v, item, f"{path}{key}.{i}.")
        else:
            check_keys(value, tp, f"{path}{key}.")


def check_override_keys(overrides: List[str]) -> None:
    """Fail fast, before Hydra composes, on a dotted override (`key=v`, `+key=v`, `++key=v`) whose key is not in the
    schema, naming the valid keys at that level (Hydra's own message says only "Key 'rr' not in 'AdapterConfig'")."""
    for o in overrides:
        if "=" not in o or o.startswith(("-", "~")):
            continue
        key = o.split("=", 1)[0].lstrip("+")
        if key.startswith("hydra") or "/" in key or key in GROUPS or key in SEARCH_GROUPS:
            continue
        cls: Any = LecConfig
        for i, part in enumerate(key.split(".")):
            hints = typing.get_type_hints(cls)
            if part not in hints:
                where = ".".join(key.split(".")[:i])
                raise ConfigError(f"unknown key '{key}': {cls.__name__}{' (' + where + ')' if where else ''} has no "
                                  f"'{part}'; valid keys: {', '.join(hints)}")  # fmt: skip
            cls = _unwrap(hints[part])
            if not dataclasses.is_dataclass(cls):
                break  # a leaf, a dict or a list: Hydra/OmegaConf check the rest


def _unwrap(tp: Any) -> Any:
    """Optional[X] → X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp


def to_container(cfg: Any) -> Dict[str, Any]:
    """Plain dict (enums as their values) of a config or plan dataclass, for logging and YAML."""
    structured = OmegaConf.structured(cfg)
    return OmegaConf.to_container(structured, resolve=True, enum_to_str=True)


# --- validation: ranges, paths, cross-field rules -----------------------------------------------------------------

HEX40 = re.compile(r"[0-9a-f]{40}")
FIELD_TARGETS = ("instruction", "input", "output", "text")


def validate(cfg: LecConfig) -> LecConfig:
    """Every check that needs no other lec module; raise ConfigError before any heavy work."""
    check_ranges(cfg)
    _check_hardware(cfg.hardware)
    _check_model(cfg.model, cfg.hardware, cfg.serve)
    _check_adapter(cfg.adapter, cfg.hardware)
    _check_data(cfg.data)
    _check_train(cfg.train, cfg.data)
    _check_bench(cfg.train, cfg.eval)
    _check_serve(cfg.serve)
    evaluate_source(cfg.evaluate)
    _check_backends(cfg.eval)
    _check_rules(cfg.rules)
    return cfg


def _check_rules(rules: RulesConfig) -> None:
    for key, pattern in [*((f"base_families.{k}", v) for k, v in rules.base_families.items()),
                         ("instruction_tuned", rules.instruction_tuned)]:  # fmt: skip
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"rules.{key}={pattern!r} is not a regular expression: {err}") from None


def _check_backends(ev: EvalConfig) -> None:
    if not ev.backends or len(set(ev.backends)) != len(ev.backends):
        raise ConfigError(f"eval.backends={[b.value for b in ev.backends]}: name each backend once, at least one "
                          f"({', '.join(b.value for b in Backend)})")  # fmt: skip
    if Backend.lm_eval in ev.backends and not ev.lm_eval_tasks:
        raise ConfigError("eval.backends has lm_eval but eval.lm_eval_tasks is empty: name lm-eval tasks (eval=smoke "
                          "has lec_mmlu_*, lec_gsm)")  # fmt: skip
    for pair in ev.lm_eval_metrics:
        key, values = lm_eval_pair(pair)
        unknown = [v for v in values if v.split("/")[0] not in ev.lm_eval_tasks]
        if unknown:
            raise ConfigError(f"eval.lm_eval_metrics: {unknown[0]!r} names a task not in eval.lm_eval_tasks "
                              f"({', '.join(ev.lm_eval_tasks) or 'none'})")  # fmt: skip


def lm_eval_pair(pair: str) -> Tuple[str, Tuple[str, ...]]:
    """"mmlu/exact_match=lec_mmlu_a/acc+lec_mmlu_b/acc" → ("mmlu/exact_match", ("lec_mmlu_a/acc", "lec_mmlu_b/acc"))."""
    part = r"[^/=+\s]+/[^/=+\s]+"
    if not re.fullmatch(rf"{part}={part}(\+{part})*", pair):
        raise ConfigError(f"eval.lm_eval_metrics: {pair!r} is not '<scenario>/<metric>=<task>/<metric>"
                          "[+<task>/<metric>…]'")  # fmt: skip
    key, _, values = pair.partition("=")
    return key, tuple(values.split("+"))


def check_training_run(cfg: LecConfig) -> None:
    """`python -m lec` and the DVC stages train and evaluate their own model: the keys that pick another model to
    evaluate belong to `python -m lec.evaluate`, and are refused here rather than ignored."""
    if cfg.evaluate != EvaluateConfig():
        raise ConfigError("evaluate.source / evaluate.name are read by `python -m lec.evaluate` (evaluation without "  # tested: tests/evaluate/test_main.py
                          "training), not by a training run")  # fmt: skip


def evaluate_source(ev: EvaluateConfig) -> Tuple[str, Optional[str]]:
    """evaluate.source → (kind, where), checked: the dir exists and holds what the kind needs, the URL is one."""
    kind, _, where = ev.source.partition(":")
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"evaluate.source={ev.source!r}: unknown kind {kind!r}; valid: model, adapter:<dir>, "
                          "run:<dir>, endpoint:<url>")  # fmt: skip
    if (kind == "model") != (where == ""):
        raise ConfigError(f"evaluate.source={ev.source!r}: {SOURCE_KINDS[kind].split(',')[0]}")
    if kind == "endpoint":
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", where):
            raise ConfigError(f"evaluate.source={ev.source!r}: not a URL; e.g. endpoint:http://127.0.0.1:8080")
        return kind, where.rstrip("/")
    if kind == "model":
        return kind, None
    if not Path(where).is_dir():
        raise ConfigError(f"evaluate.source={ev.source}: no such directory" +
                          (f" (cwd: {Path.cwd()})" if not Path(where).is_absolute() else ""))  # fmt: skip
    need = {"adapter": [("adapter_config.json", "config.json")], "run": [("config.yaml",), ("adapter",)]}[kind]
    for names in need:
        if not any((Path(where) / n).exists() for n in names):
            raise ConfigError(f"evaluate.source={ev.source!r}: {where} has no {' or '.join(names)} "
                              f"({SOURCE_KINDS[kind]})")  # fmt: skip
    return kind, str(Path(where).resolve())


def check_ranges(obj: Any, path: str = "") -> None:
    """Each numeric field against the range declared with it (`num(default, lo, hi)`); NaN/inf never pass."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{path}{f.name}"
        if dataclasses.is_dataclass(value):
            check_ranges(value, key + ".")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    check_ranges(item, f"{key}.{i}.")
        elif "range" in f.metadata and value is not None:
            lo, hi, lo_open, hi_open = f.metadata["range"]
            below = lo is not None and (value <= lo if lo_open else value < lo)
            above = hi is not None and (value >= hi if hi_open else value > hi)
            if below or above or (isinstance(value, float) and not math.isfinite(value)):
                raise ConfigError(f"{key}={value!r} is out of range: must be {_range_text(lo, hi, lo_open, hi_open)}")


def _must_exist(key: str, path: Optional[str], want_dir: bool) -> None:
    if path is None:
        return
    p = Path(path)
    if not (p.is_dir() if want_dir else p.is_file()):
        kind = "directory" if want_dir else "file"
        raise ConfigError(f"{key}={path}: no such {kind}" + (f" (cwd: {Path.cwd()})" if not p.is_absolute() else ""))


def _check_hardware(hw: HardwareConfig) -> None:
    if hw.device is Device.cpu:
        for key, on in (("tf32", hw.tf32), ("memory_fraction_cap", hw.memory_fraction_cap is not None)):
            if on:
                raise ConfigError(f"hardware.{key} applies to CUDA only, but hardware={hw.name} runs on cpu: "
                                  f"remove it or pick a GPU preset (rtx4090, a100_40gb, h100)")  # fmt: skip
        if hw.attn_implementation.value.startswith("flash"):
            raise ConfigError(f"hardware.attn_implementation={hw.attn_implementation.value} needs a CUDA GPU; on cpu "
                              "use sdpa or eager")  # fmt: skip
    elif hw.vram_gb <= 0:
        raise ConfigError(f"hardware={hw.name} runs on cuda: set hardware.vram_gb (the card's memory in GB, > 0)")
    if hw.pack_len is not None and hw.pack_len < hw.max_seq_len:
        raise ConfigError(f"hardware.pack_len={hw.pack_len} must be ≥ hardware.max_seq_len={hw.max_seq_len}: a packed "
                          "row holds whole samples")  # fmt: skip


def _check_model(m: ModelConfig, hw: HardwareConfig, serve: ServeConfig) -> None:
    if m.tiny is None and m.hf_id is None and m.local_path is None:
        raise ConfigError(f"model={m.name} needs model.hf_id (a hub id) or model.local_path (a local directory)")
    if m.tiny is not None:
        given = [k for k in ("hf_id", "local_path", "revision") if getattr(m, k) is not None]
        if given or m.trust_remote_code:
            raise ConfigError(f"model={m.name} is built in-process (model.tiny): model.{(given or ['trust_remote_code'])[0]} "
                              "does not apply; pick a hub model (model=hf model.hf_id=…) instead")  # fmt: skip
        t = m.tiny
        if m.native_context is None:
            raise ConfigError(f"model={m.name} is built in-process: set model.native_context (its context length)")
        if t.hidden_size % t.num_attention_heads or t.num_attention_heads % t.num_key_value_heads:
            raise ConfigError("model.tiny: hidden_size must be a multiple of num_attention_heads, and "
                              "num_attention_heads of num_key_value_heads")  # fmt: skip
    if m.trust_remote_code and not HEX40.fullmatch(m.revision or ""):
        raise ConfigError(f"model.trust_remote_code=true runs Python from the model's repository: pin model.revision "
                          f"to a 40-hex commit (got {m.revision!r})")  # fmt: skip
    _must_exist("model.local_path", m.local_path, want_dir=True)
    for key, n in (("hardware.max_seq_len", hw.max_seq_len), ("serve.max_seq_len", serve.max_seq_len)):
        if m.native_context is not None and n > m.native_context:
            raise ConfigError(f"{key}={n} exceeds model={m.name}'s context model.native_context={m.native_context}")


def _check_adapter(ad: AdapterConfig, hw: HardwareConfig) -> None:
    qlora = ad.kind is AdapterKind.qlora
    if qlora and hw.device is not Device.cuda:
        raise ConfigError(
            f"adapter=qlora needs a CUDA GPU (bitsandbytes 4-bit training), but hardware={hw.name} runs on cpu: use "
            "adapter=lora or adapter=full, or a GPU hardware preset (rtx4090, a100_40gb, h100)"
        )
    if qlora != (ad.quantization is not None):
        raise ConfigError("adapter.quantization (4-bit loading) goes with adapter.kind=qlora only: "
                          f"kind={ad.kind.value}, quantization={'set' if ad.quantization else 'null'}")  # fmt: skip
    if ad.kind is not AdapterKind.full:
        if not ad.target_modules or ("all-linear" in ad.target_modules and len(ad.target_modules) > 1):
            raise ConfigError(f"adapter.target_modules={ad.target_modules}: give module names (q_proj, …) or "
                              "[all-linear], not both, not none")  # fmt: skip
    bnb = ad.optim.value.startswith("paged_") or "8bit" in ad.optim.value
    if bnb and hw.device is not Device.cuda:
        raise ConfigError(f"adapter.optim={ad.optim.value} is a bitsandbytes optimizer (CUDA only); on cpu use "
                          "adamw_torch, adafactor, sgd, adagrad or rmsprop")  # fmt: skip


def _check_data(data: DataConfig) -> None:
    if not data.sources:
        raise ConfigError(f"data={data.name} has no sources")
    for i, s in enumerate(data.sources):
        key = f"data.sources.{i}"
        if s.generator is not None:
            extra = [k for k in ("hf_id", "local_path", "config_name", "revision", "threads") if getattr(s, k) is not None]
            if extra or s.fields:
                raise ConfigError(f"{key}.{(extra or ['fields'])[0]} does not apply to source '{s.name}': it is "
                                  f"generated by lec (generator={s.generator}); only n, take, fraction, weight apply")  # fmt: skip
            if s.n < 1:
                raise ConfigError(f"{key}.n={s.n}: a generator source needs n ≥ 1 rows")
        else:
            if s.hf_id is None and s.local_path is None:
                raise ConfigError(f"{key} ('{s.name}') needs hf_id (a hub dataset), local_path (a file) or generator")
            if s.n:
                raise ConfigError(f"{key}.n={s.n} applies to generator sources only ('{s.name}' is loaded)")
            _must_exist(f"{key}.local_path", s.local_path, want_dir=False)
        unknown = sorted(set(s.fields) - set(FIELD_TARGETS))
        if unknown:
            raise ConfigError(f"{key}.fields maps unknown target(s) {unknown}; valid: {', '.join(FIELD_TARGETS)}")
        if s.max_turns is not None and s.threads is None:
            raise ConfigError(f"{key}.max_turns applies to thread sources only (set threads: oasst)")
    c = data.curation
    bad_key = sorted(set(c.exact_dedup.key) - {"instruction", "input", "output"})
    if bad_key or not c.exact_dedup.key:
        raise ConfigError(f"data.curation.exact_dedup.key={c.exact_dedup.key}: valid fields: instruction, input, output")
    if c.near_dedup.num_perm % c.near_dedup.bands:
        raise ConfigError(f"data.curation.near_dedup.num_perm={c.near_dedup.num_perm} must be a multiple of "
                          f"bands={c.near_dedup.bands}")  # fmt: skip
    if c.decontam.min_tokens > c.decontam.ngram:
        raise ConfigError(f"data.curation.decontam.min_tokens={c.decontam.min_tokens} must be ≤ "
                          f"decontam.ngram={c.decontam.ngram}")  # fmt: skip
    _must_exist("data.curation.decontam.scenarios_dir", c.decontam.scenarios_dir, want_dir=True)


def _check_train(train: TrainConfig, data: DataConfig) -> None:
    if data.val_fraction == 0 and train.enabled:
        asked = [k for k, on in (("train.early_stopping_patience", train.early_stopping_patience is not None),
                                 ("train.keep_best", train.keep_best)) if on]  # fmt: skip
        if asked:
            raise ConfigError(f"{asked[0]} needs held-out rows, and data.val_fraction=0 holds none: set "
                              f"data.val_fraction > 0 or {asked[0]}={'null' if 'patience' in asked[0] else 'false'}")
    if train.resume_from not in (None, "auto"):
        _must_exist("train.resume_from", train.resume_from, want_dir=True)


def _check_bench(train: TrainConfig, ev: EvalConfig) -> None:
    """Benchmark curves need tasks the suite names, each in one stage; lec_* tasks read the smoke suite's generated
    files (plan.build checks that those are multiple-choice files the suite writes)."""
    if train.bench_every_steps is None or not train.enabled:
        return
    if not ev.bench.open and not ev.bench.closed:
        raise ConfigError(  # tested: tests/test_train_bench.py
            f"train.bench_every_steps={train.bench_every_steps} needs tasks, and eval={ev.name} has none in "
            "eval.bench.open / eval.bench.closed: set train.bench_every_steps=null, or name lm-eval multiple-choice "
            "tasks there (eval=smoke has them)")
    both = sorted(set(ev.bench.open) & set(ev.bench.closed))
    if both:
        raise ConfigError(  # tested: tests/test_train_bench.py
            f"eval.bench: {both[0]} is in both open and closed; a task belongs to one stage")
    lec_tasks = [t for t in (*ev.bench.open, *ev.bench.closed) if t.startswith("lec_")]
    if lec_tasks and ev.synthetic is None:
        raise ConfigError(  # tested: tests/test_train_bench.py
            f"eval.bench names {lec_tasks[0]}, a task over the smoke suite's generated files, and eval={ev.name} "
            "generates none (eval.synthetic is null): set train.bench_every_steps=null or use eval=smoke")


def _check_serve(serve: ServeConfig) -> None:
    if not is_loopback(serve.host) and serve.api_key is None and not serve.allow_unauthenticated:
        raise ConfigError(f"serve.host={serve.host} is reachable from other machines: set serve.api_key (clients "
                          "send it as a Bearer token) or serve.allow_unauthenticated=true")  # fmt: skip
    if serve.api_key is not None and len(serve.api_key) < 16:
        raise ConfigError("serve.api_key must be at least 16 characters (e.g. `python -c 'import secrets; "
                          "print(secrets.token_urlsafe())'`)")  # fmt: skip
    if serve.prompt_template is not None and "{prompt}" not in serve.prompt_template:
        raise ConfigError("serve.prompt_template must contain '{prompt}' where HELM's prompt goes")
    if serve.template_if_blank_lines_below is not None and serve.prompt_template is None:
        raise ConfigError("serve.template_if_blank_lines_below applies to serve.prompt_template, which is null")


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def compose(overrides: Optional[List[str]] = None, config_dir: Optional[Path] = None) -> LecConfig:
    """Compose conf/ with Hydra's compose API (tests, tools) and return the validated config."""
    return load(compose_raw(overrides, config_dir))


def compose_raw(overrides: Optional[List[str]] = None, config_dir: Optional[Path] = None) -> DictConfig:
    """The composed, unvalidated DictConfig (what `python -m lec` and DVC's Hydra composition see)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from hydra.errors import HydraException

    check_override_keys(list(overrides or []))
    register()
    with initialize_config_dir(config_dir=str(config_dir or CONF_DIR), version_base="1.3"):
        try:
            return hydra_compose(config_name="config", overrides=list(overrides or []))
        except HydraException as err:
            raise CompositionError(one_line(err)) from None


def one_line(err: BaseException) -> str:
    """Hydra/OmegaConf errors as one line: where it came from, the key, the value and what is allowed (Hydra's own
    message spans lines: search path, object types, a note about HYDRA_FULL_ERROR)."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    def first(text: str) -> str:
        return text.strip().splitlines()[0] if text.strip() else text

    if isinstance(err, MissingConfigException) and err.options is not None and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        return f"{group}={option}: no such option; available: {', '.join(err.options)}"
    if isinstance(err, OverrideParseException):
        return f"{err.override}: " + "; ".join(line.strip() for line in err.message.splitlines() if line.strip())
    where = re.match(r"In '([^']+)'", str(err))
    prefix = f"{where.group(1)}: " if where else ""
    cause = err
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ConfigKeyError) and dataclasses.is_dataclass(cause.object_type):
        valid = ", ".join(typing.get_type_hints(cause.object_type))
        return f"{prefix}unknown key '{cause.full_key}': {cause.object_type.__name__} has no '{cause.key}'; valid keys: {valid}"
    if cause is not None:
        text = first(str(err))
        key = text.split("override ", 1)[1] if "Error merging override " in text else getattr(cause, "full_key", "")
        return f"{prefix}{key}: {first(str(cause))}" if key else prefix + first(str(cause))
    return "; ".join(line.strip() for line in str(err).split("Config search path")[0].splitlines() if line.strip())


def tracking_uri(cfg: LecConfig) -> str:
    """mlflow.tracking_uri, or the SQLite store under outputs_dir (the file store is deprecated in MLflow 3)."""
    return cfg.mlflow.tracking_uri or f"sqlite:///{Path(cfg.outputs_dir).resolve() / 'mlflow.db'}"
