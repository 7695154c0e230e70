"""Base models and tokenizers: one loading path for a hub id, a local directory, or the in-process tiny model."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Tuple

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lec.config import ModelConfig, TinyModelConfig

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


def build_tiny(cfg: TinyModelConfig, context: int) -> Tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A random-init Llama from `cfg`, seeded, with its in-process tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(cfg.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=context,  # model.native_context
        tie_word_embeddings=True,
        initializer_range=cfg.initializer_range,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
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


def _hint(cfg: ModelConfig, where: Optional[str], err: Exception) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
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
