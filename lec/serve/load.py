"""Build a serving Engine from a run's config: base weights (+ a LoRA adapter or full fine-tuned weights)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch

from lec.config import Device, LecConfig, Template
from lec.models import load_model, load_tokenizer
from lec.data.templates import serving_template
from lec.serve.engine import Engine, PromptFormat

log = logging.getLogger(__name__)


def load_engine(cfg: LecConfig, base: Optional[str] = None, adapter: Optional[str] = None) -> Engine:
    """`base`: a directory of base weights (the materialised tiny model), else model.local_path / hf_id.
    `adapter`: a PEFT adapter directory (merged into the weights for speed) or a full fine-tuned model directory."""
    cuda = cfg.hardware.device is Device.cuda and torch.cuda.is_available()
    dtype = None if cuda else torch.float32  # CPU kernels are fastest and exact in float32
    if cfg.hardware.num_threads and not cuda:
        torch.set_num_threads(cfg.hardware.num_threads)
    full = adapter is not None and not (Path(adapter) / "adapter_config.json").exists()
    weights = adapter if full else base
    model = load_model(cfg.model, path=weights, dtype=dtype)
    tok_dir = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else weights
    tokenizer = load_tokenizer(cfg.model, path=tok_dir)
    if adapter and not full:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        log.info("merged LoRA adapter %s", adapter)
    if cuda:
        model = model.to("cuda")
    # Serve with the template the model was trained with, unless the config names a serving template itself.
    template = cfg.serve.prompt_template or serving_template(cfg.data.template)
    chat = cfg.data.template is Template.chat and not cfg.serve.prompt_template
    fmt = PromptFormat(template, cfg.serve.template_if_blank_lines_below, cfg.serve.cut_at,
                       tuple(cfg.serve.strip_prefixes), chat_tokenizer=tokenizer if chat else None)  # fmt: skip
    return Engine(model, tokenizer, context=cfg.model.max_seq_len,
                  max_new_tokens_limit=cfg.serve.max_new_tokens_limit, prompt_format=fmt)  # fmt: skip
