"""Fine-tune: base model → LoRA / full → transformers Trainer → adapter directory.

Read top to bottom: tokenize the mixture → load the base → attach the adapter → train → save.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from lec.config import AdapterKind, Device, LecConfig
from lec.data.mixture import read_jsonl
from lec.data.templates import render
from lec.models import load_model, load_tokenizer

log = logging.getLogger(__name__)
IGNORE = -100  # label id the loss skips (prompt tokens when mask_prompt)


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    train_loss: float
    seconds: float
    tokens: int  # supervised + prompt tokens seen
    trainable_params: int
    log_path: Path


def encode(rows: List[Dict[str, str]], tokenizer, cfg: LecConfig) -> List[Dict[str, List[int]]]:
    """Token ids + labels per row; the prompt is masked when data.mask_prompt, EOS ends every response."""
    max_len = min(cfg.hardware.max_seq_len, cfg.model.max_seq_len)
    out, too_long = [], 0
    for row in rows:
        prompt, response = render(cfg.data.template, row)
        p = tokenizer(prompt).input_ids
        r = tokenizer(response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        if len(p) >= max_len - 1:  # nothing of the response would be left to learn from
            too_long += 1
            continue
        ids = (p + r)[:max_len]
        labels = ([IGNORE] * len(p) if cfg.data.mask_prompt else list(p)) + r
        out.append({"input_ids": ids, "labels": labels[:max_len]})
    if too_long:
        log.warning("%d rows dropped: their prompt alone fills max_seq_len=%d tokens", too_long, max_len)
    return out


def collate(pad_id: int) -> Callable:
    def fn(batch: List[Dict[str, List[int]]]) -> Dict[str, torch.Tensor]:
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), pad_id)
        labels = torch.full((len(batch), n), IGNORE)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k], labels[i, :k], mask[i, :k] = torch.tensor(b["input_ids"]), torch.tensor(b["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return fn


class LossLog(TrainerCallback):
    """Every logged step → `on_metrics({"train/loss": …, "train/lr": …}, step)` and a JSONL line."""

    def __init__(self, path: Path, on_metrics: Optional[Callable[[Dict[str, float], int], None]]):
        self.path, self.on_metrics = path, on_metrics

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        metrics = {f"train/{k}": float(v) for k, v in logs.items() if k in ("loss", "learning_rate", "grad_norm")}
        if "train/learning_rate" in metrics:
            metrics["train/lr"] = metrics.pop("train/learning_rate")
        if not metrics:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": state.global_step, **metrics}) + "\n")
        if self.on_metrics:
            self.on_metrics(metrics, state.global_step)


def _load_kwargs(cfg: LecConfig) -> dict:
    """Attention kernel, and on CUDA the 4-bit bitsandbytes config of QLoRA (validate() refuses QLoRA on CPU)."""
    kwargs: dict = {"attn_implementation": cfg.hardware.attn_implementation}
    q = cfg.adapter.quantization
    if q is not None and cfg.hardware.device is Device.cuda:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=q.load_in_4bit,
            bnb_4bit_quant_type=q.quant_type,
            bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype),
        )
        kwargs["device_map"] = {"": 0}
    return kwargs


def attach_adapter(model, cfg: LecConfig):
    if cfg.adapter.kind is AdapterKind.full:
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.adapter.r,
        lora_alpha=cfg.adapter.alpha,
        lora_dropout=cfg.adapter.dropout,
        target_modules=list(cfg.adapter.target_modules or cfg.model.lora_target_modules),
        bias=cfg.adapter.bias,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def finetune(
    cfg: LecConfig,
    train_path: Path,
    base_dir: Optional[Path],
    out_dir: Path,
    on_metrics: Optional[Callable[[Dict[str, float], int], None]] = None,
) -> TrainResult:
    torch.manual_seed(cfg.seed)
    if cfg.hardware.device is Device.cpu and cfg.hardware.num_threads:
        torch.set_num_threads(cfg.hardware.num_threads)
    tokenizer = load_tokenizer(cfg.model, path=str(base_dir) if base_dir else None)
    rows = encode(read_jsonl(train_path), tokenizer, cfg)

    model = load_model(cfg.model, path=str(base_dir) if base_dir else None, **_load_kwargs(cfg))
    if cfg.adapter.quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, cfg.hardware.gradient_checkpointing)
    model = attach_adapter(model, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    lr = cfg.model.lr or cfg.adapter.lr
    warmup = cfg.model.warmup_ratio if cfg.model.warmup_ratio is not None else cfg.adapter.warmup_ratio
    batch = cfg.hardware.micro_batch_size * cfg.hardware.grad_accum
    epochs = cfg.train.epochs if cfg.train.epochs is not None else cfg.adapter.epochs
    steps = cfg.train.max_steps or math.ceil(len(rows) * epochs / batch)
    log.info("training %d trainable params on %d rows: %d steps × %d rows, lr %.1e", trainable, len(rows), steps, batch, lr)

    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir.parent / "train_log.jsonl"
    log_path.unlink(missing_ok=True)
    args = TrainingArguments(
        output_dir=str(out_dir.parent / "checkpoints"),
        per_device_train_batch_size=cfg.hardware.micro_batch_size,
        gradient_accumulation_steps=cfg.hardware.grad_accum,
        max_steps=steps,
        learning_rate=lr,
        lr_scheduler_type=cfg.adapter.scheduler,
        warmup_steps=int(warmup * steps),
        weight_decay=cfg.adapter.weight_decay,
        max_grad_norm=cfg.adapter.max_grad_norm,
        optim=cfg.adapter.optim,
        logging_steps=cfg.train.logging_steps,
        save_strategy="no",
        report_to="none",  # lec logs train/* itself (stack.md §3.3)
        bf16=cfg.hardware.bf16,
        tf32=cfg.hardware.tf32 if cfg.hardware.device is Device.cuda else None,
        gradient_checkpointing=cfg.hardware.gradient_checkpointing,
        use_cpu=cfg.hardware.device is Device.cpu,
        dataloader_num_workers=0,
        seed=cfg.seed,
        disable_tqdm=True,
        train_sampling_strategy="group_by_length",  # batches of similar length: less padding, ~1.5× faster on the smoke mixture
        neftune_noise_alpha=cfg.adapter.neftune_noise_alpha,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=collate(tokenizer.pad_token_id),
        callbacks=[LossLog(log_path, on_metrics)],
    )
    trainer.remove_callback(PrinterCallback)  # LossLog reports progress; no dict printed per step
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    tokens = sum(len(r["input_ids"]) for r in rows) * steps * batch // max(1, len(rows))
    return TrainResult(out_dir, steps, float(result.training_loss), seconds, tokens, trainable, log_path)
