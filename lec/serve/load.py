"""Build a serving Engine from the plan's serve part: base weights (+ a LoRA adapter or full fine-tuned weights)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch

from lec.config import Device, ModelConfig
from lec.models import load_model, load_tokenizer
from lec.plan import ServePlan
from lec.serve.engine import Engine, PromptFormat

log = logging.getLogger(__name__)


def load_engine(serve: ServePlan, model_cfg: ModelConfig, base: Optional[str] = None,
                adapter: Optional[str] = None) -> Engine:
    """`base`: a directory of base weights (the materialised tiny model), else model.local_path / hf_id.
    `adapter`: a PEFT adapter directory (merged into the weights for speed) or a full fine-tuned model directory."""
    cuda = serve.device is Device.cuda and torch.cuda.is_available()
    dtype = None if cuda else torch.float32  # CPU kernels are fastest and exact in float32
    if serve.num_threads and not cuda:
        torch.set_num_threads(serve.num_threads)
    full = adapter is not None and not (Path(adapter) / "adapter_config.json").exists()
    weights = adapter if full else base
    model = load_model(model_cfg, path=weights, dtype=dtype)
    tok_dir = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else weights
    tokenizer = load_tokenizer(model_cfg, path=tok_dir)
    if adapter and not full:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        log.info("merged LoRA adapter %s", adapter)
    if cuda:
        model = model.to("cuda")
    fmt = PromptFormat(serve.prompt_template, serve.template_if_blank_lines_below, serve.cut_at,
                       serve.strip_prefixes, chat_tokenizer=tokenizer if serve.chat else None)  # fmt: skip
    return Engine(model, tokenizer, context=serve.context, max_new_tokens_limit=serve.max_new_tokens_limit,
                  prompt_format=fmt, prefix_cache_bytes=serve.prefix_cache_bytes)  # fmt: skip
