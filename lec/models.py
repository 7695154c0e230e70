"""Base models and tokenizers: one loading path for a hub id, a local directory, or the in-process tiny model."""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lec.config import ModelConfig, ModelShape, TinyModelConfig

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
# A Zephyr-style chat template, so `data.template=chat` runs on the embedded default like on a hub chat model:
# it writes its own BOS and ends every turn with EOS (what apply_chat_template users meet in Mistral/Llama/Qwen).
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TINY_FORMAT = 2  # bump when the tiny model or tokenizer built from the same config changes (cache key)


class ModelLoadError(RuntimeError):
    """The weights or tokenizer could not be loaded; the message says where lec looked and what to set."""


def build_tiny_tokenizer(vocab_size: int) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer trained in-process on lec's synthetic task text (deterministic).

    Byte-level, so every string round-trips through encode/decode (HELM truncates prompts by re-tokenizing);
    digits are split one per token, so numbers share one small vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from lec.data.synthetic import corpus

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def tiny_llama_config(cfg: TinyModelConfig, context: int, tokenizer: Optional[PreTrainedTokenizerBase] = None):
    """The tiny model's LlamaConfig; without its tokenizer the vocabulary is the configured upper bound."""
    from transformers import LlamaConfig

    ids = {} if tokenizer is None else dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                            pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return LlamaConfig(
        vocab_size=len(tokenizer) if tokenizer is not None else cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=context,  # model.native_context
        tie_word_embeddings=True,
        initializer_range=cfg.initializer_range,
        **ids,
    )


def build_tiny(cfg: TinyModelConfig, context: int) -> Tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A random-init Llama from `cfg`, seeded, with its in-process tokenizer."""
    from transformers import LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(cfg.vocab_size)
    config = tiny_llama_config(cfg, context, tokenizer)
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def source_of(cfg: ModelConfig) -> str:
    """Where the weights come from: a local directory wins over a hub id."""
    return cfg.local_path or cfg.hf_id or f"in-process tiny ({cfg.name})"


def load_tokenizer(cfg: ModelConfig, path: Optional[str] = None) -> PreTrainedTokenizerBase:
    where = path or cfg.local_path or cfg.hf_id
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            where, revision=None if path or cfg.local_path else cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise ModelLoadError(_hint(cfg, where, err)) from err
    if tokenizer.pad_token is None and cfg.pad_token == "eos":
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    cfg: ModelConfig,
    path: Optional[str] = None,
    dtype: Optional[torch.dtype] = None,
    attn_implementation: Optional[str] = None,
    quantization_config=None,
    device_map=None,
) -> PreTrainedModel:
    """Load base weights from `path` (a saved directory), else model.local_path, else model.hf_id @ revision."""
    where = path or cfg.local_path or cfg.hf_id
    kwargs = dict(
        revision=None if path or cfg.local_path else cfg.revision,
        trust_remote_code=cfg.trust_remote_code,
        dtype=dtype or DTYPES[cfg.torch_dtype],
    )
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        return AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(_hint(cfg, where, err)) from err


def materialize_base(cfg: ModelConfig, cache_dir: Path) -> Optional[Path]:
    """Write the in-process tiny model under `cache_dir` so other processes (the server) load it like any local
    model. The directory is keyed by the tiny config, so a changed config builds a new one; the write is atomic.

    Returns the directory, or None for hub/local models (they are loaded from where they already are).
    """
    if cfg.tiny is None:
        return None
    spec = dict(dataclasses.asdict(cfg.tiny), context=cfg.native_context, format=TINY_FORMAT)
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    out_dir = cache_dir / f"tiny-{key}"
    if (out_dir / "config.json").exists():
        return out_dir
    model, tokenizer = build_tiny(cfg.tiny, cfg.native_context)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=cache_dir.mkdir(parents=True, exist_ok=True) or cache_dir))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.rename(tmp, out_dir)  # atomic; another process may have won the race, which is fine
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("built the tiny model (%d params) into %s", model.num_parameters(), out_dir)
    return out_dir


# ---- what a base model is, read from its config.json: no weight is loaded ------------------------------------------

ALL_LINEAR = "all-linear"  # adapter.target_modules shorthand: every Linear of the decoder blocks (peft's own name)


@dataclass(frozen=True)
class ModelFacts:
    """What lec knows about a base model before loading a weight: its config.json (and tokenizer files)."""

    native_context: int  # tokens the model was built for: config.json max_position_embeddings (Qwen v1: seq_length)
    shape: ModelShape  # for the memory pre-flight, with one layer's Linears and the exact parameter count
    linear_targets: Tuple[str, ...]  # name suffixes of every Linear in the decoder blocks (no lm_head, no embeddings)
    has_chat_template: bool  # the tokenizer ships a chat template (what data.template=chat renders with)
    model_type: str = ""  # config.json model_type: llama, mistral, qwen2, gemma2, qwen, …
    source: str = ""  # the config.json read, or what stood in for it (model.tiny, model.shape)


def model_facts(cfg: ModelConfig, base_dir: Optional[Path] = None) -> ModelFacts:
    """The facts of the model `cfg` names, from its config.json: in `base_dir` (the materialised tiny model, a saved
    base), else in model.local_path, else model.hf_id @ revision through the Hugging Face cache (hf_hub_download,
    which reads the cache offline). The tiny model before it is built: from its config. A model file's hand-written
    `shape` stands in when no config.json can be had; without one, ModelLoadError names model.local_path."""
    if base_dir is None and cfg.local_path is None and cfg.tiny is not None:
        shape, targets = _meta_facts(tiny_llama_config(cfg.tiny, cfg.native_context), trust_remote_code=False)
        # build_tiny_tokenizer always sets TINY_CHAT_TEMPLATE
        return ModelFacts(cfg.native_context, shape, targets, True, "llama", "model.tiny")
    try:
        path, hub = _config_path(cfg, base_dir)
    except ModelLoadError:
        if cfg.shape is None:
            raise
        return _facts_from_shape(cfg)
    text = path.read_text()
    raw = json.loads(text)
    raw = raw.get("text_config") or raw  # a multimodal config nests the language model's
    model_type = str(raw.get("model_type", ""))
    try:
        shape, targets = _derive(text, str(path.parent), cfg.trust_remote_code)
        shape = copy.deepcopy(shape)  # the cached one stays as read
    except Exception as err:  # remote code not cached or not trusted, an architecture this transformers lacks, …
        shape = _qwen_v1_shape(raw) if model_type == "qwen" else cfg.shape
        if shape is None:
            raise ModelLoadError(
                f"model '{cfg.name}': could not build its '{model_type}' architecture on the meta device from {path} "
                f"({_first_line(err)}); set model.trust_remote_code=true if it ships its own code, or set model.shape "
                "for the memory pre-flight and adapter.target_modules"
            ) from err
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS
        from lec.shapes import linears

        targets = tuple(PEFT_TARGETS.get(model_type) or linears(shape))
        log.info("model '%s': no meta-device model (%s); LoRA targets %s", cfg.name, _first_line(err), targets)
    context = _context(raw, model_type)
    if context is None:
        if cfg.native_context is None:
            raise ModelLoadError(f"model '{cfg.name}': {path} names no context length (max_position_embeddings); "
                                 "set model.native_context")  # fmt: skip
        context = cfg.native_context
    elif cfg.native_context is not None and cfg.native_context != context:
        raise ModelLoadError(f"model '{cfg.name}': model.native_context={cfg.native_context} but {path} says {context}: "
                             "set model.native_context=null (read from config.json) or to its value")  # fmt: skip
    return ModelFacts(context, shape, targets, _has_chat_template(cfg, path.parent, hub), model_type, str(path))


def resolve_targets(targets: Sequence[str], facts: ModelFacts) -> List[str]:
    """adapter.target_modules with `all-linear` replaced by the model's block Linears (in order, no repeats)."""
    out: List[str] = []
    for t in targets:
        for name in facts.linear_targets if t == ALL_LINEAR else (t,):
            if name not in out:
                out.append(name)
    return out


def _config_path(cfg: ModelConfig, base_dir: Optional[Path]) -> Tuple[Path, bool]:
    """(config.json, whether it came through the hub cache)."""
    if base_dir is not None or cfg.local_path:
        where = Path(base_dir or cfg.local_path)  # type: ignore[arg-type]
        if not (where / "config.json").is_file():
            raise ModelLoadError(f"model '{cfg.name}': no config.json in {where} (model.local_path must be a model "
                                 "directory: save_pretrained output or a hub download)")  # fmt: skip
        return where / "config.json", False
    if not cfg.hf_id:
        raise ModelLoadError(f"model '{cfg.name}' has neither local_path nor hf_id")
    try:
        return Path(_hub_file(cfg.hf_id, "config.json", cfg.revision)), True
    except (OSError, ValueError) as err:  # huggingface_hub's errors are OSErrors (offline, gated, not found)
        raise ModelLoadError(_hint(cfg, cfg.hf_id, err)) from err


@functools.lru_cache(maxsize=64)
def _hub_file(repo: str, filename: str, revision: Optional[str]) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo, filename, revision=revision)


@functools.lru_cache(maxsize=16)
def _derive(config_text: str, config_dir: str, trust_remote_code: bool) -> Tuple[ModelShape, Tuple[str, ...]]:
    """Shape and Linear names of the model a config.json describes (cached: the pre-flight asks many times)."""
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(config_dir, trust_remote_code=trust_remote_code)
    return _meta_facts(hf, trust_remote_code)


def _meta_facts(hf: Any, trust_remote_code: bool) -> Tuple[ModelShape, Tuple[str, ...]]:
    """Build the model on the meta device (shapes, no memory) and list what its decoder blocks hold."""
    from transformers.pytorch_utils import Conv1D

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf, trust_remote_code=trust_remote_code)
    text = hf.get_text_config()
    blocks = _decoder_blocks(model, getattr(text, "num_hidden_layers", None))
    tables = []
    for block in blocks:
        table: Dict[str, List[List[int]]] = {}
        for name, mod in block.named_modules():
            if isinstance(mod, torch.nn.Linear):
                dims = [mod.in_features, mod.out_features]
            elif isinstance(mod, Conv1D):  # GPT-2 style: weight is (d_in, d_out)
                dims = [int(mod.weight.shape[0]), int(mod.weight.shape[1])]
            else:
                continue
            table.setdefault(name.rsplit(".", 1)[-1], []).append(dims)
        tables.append(table)
    if not tables[0]:
        raise ValueError(f"no Linear layer in the decoder blocks of {type(model).__name__}")
    if any(t != tables[0] for t in tables):
        log.warning("%s: decoder blocks differ; the pre-flight counts every block like the first", type(model).__name__)
    h = text.hidden_size
    heads = text.num_attention_heads
    inter = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * h
    out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
    biased = {"q_proj", "k_proj", "v_proj", "c_attn", "qkv_proj", "query_key_value"}
    modules = dict(blocks[0].named_modules())
    shape = ModelShape(
        layout=str(getattr(text, "model_type", "") or type(model).__name__),
        vocab_size=text.vocab_size,
        hidden_size=h,
        intermediate_size=inter // 2 if text.model_type == "qwen" else inter,  # Qwen v1: w1 and w2 share the width
        num_hidden_layers=len(blocks),
        num_attention_heads=heads,
        num_key_value_heads=getattr(text, "num_key_value_heads", None) or heads,
        tie_word_embeddings=out_emb is not None and out_emb.weight is in_emb.weight,
        attention_bias=any(getattr(m, "bias", None) is not None for n, m in modules.items()
                           if n.rsplit(".", 1)[-1] in biased),
        head_dim=getattr(text, "head_dim", None) or None,
        linears=tables[0],
        num_params=sum(p.numel() for p in model.parameters()),  # tied weights are one parameter
    )  # fmt: skip
    return shape, tuple(tables[0])


def _decoder_blocks(model: torch.nn.Module, n_layers: Optional[int]) -> torch.nn.ModuleList:
    """The ModuleList of decoder layers: the first with num_hidden_layers entries, else the longest."""
    lists = [m for _, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no list of decoder blocks")
    exact = [m for m in lists if len(m) == n_layers]
    return exact[0] if exact else max(lists, key=len)


def _qwen_v1_shape(c: Dict[str, Any]) -> ModelShape:
    """Qwen v1 (custom code) from its config.json: fused c_attn with bias, w1/w2 each half the intermediate width."""
    return ModelShape(layout="qwen", vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
                      intermediate_size=c["intermediate_size"] // 2, num_hidden_layers=c["num_hidden_layers"],
                      num_attention_heads=c["num_attention_heads"],
                      num_key_value_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
                      tie_word_embeddings=bool(c.get("tie_word_embeddings", False)), attention_bias=True)  # fmt: skip


def _facts_from_shape(cfg: ModelConfig) -> ModelFacts:
    """No config.json to be had (offline, nothing cached): the model file's hand-written shape and context."""
    from lec.shapes import linears

    assert cfg.shape is not None
    if cfg.native_context is None:
        raise ModelLoadError(f"model '{cfg.name}' sets model.shape but not model.native_context")
    # the tokenizer is not at hand either: no chat template is assumed (loading the tokenizer tells the truth)
    return ModelFacts(cfg.native_context, cfg.shape, tuple(linears(cfg.shape)), False, cfg.shape.layout, "model.shape")


def _context(c: Dict[str, Any], model_type: str) -> Optional[int]:
    # Qwen v1 trained at seq_length (2048) and reaches max_position_embeddings (8192) only by dynamic NTK scaling
    keys = ("seq_length", "max_position_embeddings") if model_type == "qwen" else (
        "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")  # fmt: skip
    return next((int(c[k]) for k in keys if c.get(k)), None)


def _has_chat_template(cfg: ModelConfig, where: Path, hub: bool) -> bool:
    """A chat template in the tokenizer files (chat_template.jinja since transformers 4.43, or tokenizer_config.json's
    `chat_template`); through the hub, each file lands in the same snapshot directory as config.json."""
    for name in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json"):
        if hub and not (where / name).exists():
            try:
                _hub_file(cfg.hf_id, name, cfg.revision)
            except (OSError, ValueError):
                continue  # not in the repo, or not cached offline
        f = where / name
        if f.is_file() and (name != "tokenizer_config.json" or json.loads(f.read_text()).get("chat_template")):
            return True
    return False


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0].rstrip(".") if text else type(err).__name__


def _hint(cfg: ModelConfig, where: Optional[str], err: Exception) -> str:
    first = _first_line(err)
    if where is None:
        return f"model '{cfg.name}' has neither local_path nor hf_id"
    if Path(where).exists() or cfg.local_path:
        return f"could not load model '{cfg.name}' from local path {where}: {first}"
    return (
        f"could not load model '{cfg.name}' from the hub id '{where}'"
        + (f" @ {cfg.revision}" if cfg.revision else "")
        + f": {first}. If the hub is unreachable, download the model elsewhere and set "
        f"model.local_path=/path/to/dir" + (" (gated: accept its licence and set HF_TOKEN)" if cfg.gated else "")
    )
