"""Fine-tune: base model → LoRA / QLoRA / full → transformers Trainer → adapter directory.

Read top to bottom: pre-flight → tokenize (and pack) the mixture → apply the memory cap → load the base →
attach the adapter → train within the time budget (atomic checkpoints, resume) → save.
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

from lec import progress
from lec.config import AdapterKind, ConfigError, Device, HardwareConfig, LecConfig, max_row_tokens
from lec.data.mixture import read_jsonl
from lec.models import load_model, load_tokenizer
from lec.train.budget import PARTIAL, AtomicCheckpoints, TimeBudget, elapsed_in, find_resume
from lec.train.packing import collate, encode, pack

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int  # optimizer steps done (global step at the end)
    train_loss: float
    seconds: float  # this process's training time
    tokens: int  # tokens (prompt + response, no padding) fed in this process
    trainable_params: int
    log_path: Path
    elapsed_s: float = 0.0  # training time including the runs this one resumed
    stopped_by_budget: bool = False
    resumed_from: Optional[Path] = None


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


def time_budget_s(cfg: LecConfig) -> float:
    return cfg.train.time_budget_s if cfg.train.time_budget_s is not None else cfg.hardware.time_budget_h * 3600


def apply_memory_cap(hw: HardwareConfig) -> Optional[float]:
    """Emulate a smaller card on a bigger one (MSR's trick on 80 GB cards): cap this process's CUDA memory.
    Returns the fraction applied, or None (no cap set, or not on CUDA: logged and ignored)."""
    if hw.memory_fraction_cap is None:
        if hw.device is Device.cuda and torch.cuda.is_available():
            total = torch.cuda.get_device_properties(0).total_memory / 2**30
            want = hw.usable_vram_gb or hw.vram_gb
            if total > want * 1.05:
                log.warning("this GPU has %.1f GiB but hardware=%s is a %.1f GiB card: set "
                            "hardware.memory_fraction_cap=%.3f to emulate it", total, hw.name, want, want / total)  # fmt: skip
        return None
    if not 0.0 < hw.memory_fraction_cap <= 1.0:
        raise ConfigError(f"hardware.memory_fraction_cap must be in (0, 1], got {hw.memory_fraction_cap}")
    if hw.device is not Device.cuda or not torch.cuda.is_available():
        log.info("hardware.memory_fraction_cap=%s ignored: no CUDA device", hw.memory_fraction_cap)
        return None
    torch.cuda.set_per_process_memory_fraction(hw.memory_fraction_cap, 0)
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    log.info("CUDA memory capped at %.3f × %.1f GiB = %.1f GiB", hw.memory_fraction_cap, total,
             hw.memory_fraction_cap * total)  # fmt: skip
    return hw.memory_fraction_cap


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
    if cfg.hardware.device is Device.cuda:
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


def prepare_model(cfg: LecConfig, base_dir: Optional[Path]):
    """Base weights (4-bit on CUDA for QLoRA) with the adapter attached; returns (model, trainable params)."""
    model = load_model(cfg.model, path=str(base_dir) if base_dir else None, **_load_kwargs(cfg))
    model.config.use_cache = False  # training needs no KV cache, and with one, packed rows would see each other
    if cfg.adapter.quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, cfg.hardware.gradient_checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    model = attach_adapter(model, cfg)
    if cfg.adapter.quantization is not None and cfg.hardware.bf16:
        # QL qlora.py get_accelerate_model: LoRA layers, embed_tokens and lm_head back to bf16 (prepare_model_for_
        # kbit_training made them fp32), norms stay fp32: halves the residual stream and the logits' input
        from peft.tuners.lora import LoraLayer

        for name, module in model.named_modules():
            if isinstance(module, LoraLayer) or "lm_head" in name or "embed_tokens" in name:
                module.to(torch.bfloat16)
            elif "norm" in name:
                module.to(torch.float32)
    return model, sum(p.numel() for p in model.parameters() if p.requires_grad)


def training_rows(cfg: LecConfig, rows: List[Dict[str, List[int]]]) -> List[Dict[str, List[int]]]:
    """Encoded rows, packed into `train.pack_len` (default max_seq_len) token rows when hardware.packing."""
    if not cfg.hardware.packing:
        return rows
    return pack(rows, cfg.train.pack_len or max_row_tokens(cfg))


def training_args(cfg: LecConfig, ckpt_root: Path, steps: int, lr: float, warmup: float) -> TrainingArguments:
    """Every hardware knob lands here: precision, micro-batch, accumulation, checkpointing; saving goes to .partial/."""
    hw = cfg.hardware
    return TrainingArguments(
        output_dir=str(ckpt_root / PARTIAL),  # AtomicCheckpoints renames finished checkpoints into ckpt_root
        per_device_train_batch_size=hw.micro_batch_size,
        gradient_accumulation_steps=hw.grad_accum,
        max_steps=steps,
        learning_rate=lr,
        lr_scheduler_type=cfg.adapter.scheduler,
        warmup_steps=int(warmup * steps),
        weight_decay=cfg.adapter.weight_decay,
        max_grad_norm=cfg.adapter.max_grad_norm,
        optim=cfg.adapter.optim,
        logging_steps=cfg.train.logging_steps,
        save_strategy="steps" if cfg.train.save_every_steps else "no",  # the budget stop saves either way
        save_steps=cfg.train.save_every_steps or 500,
        save_total_limit=None,  # AtomicCheckpoints rotates complete checkpoints itself
        report_to="none",  # lec logs train/* itself
        bf16=hw.bf16,
        tf32=hw.tf32 if hw.device is Device.cuda else None,
        gradient_checkpointing=hw.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},  # works with frozen inputs (LoRA) without hooks
        use_cpu=hw.device is Device.cpu,
        dataloader_num_workers=0,
        seed=cfg.seed,
        disable_tqdm=True,
        # unpacked rows: batches of similar length, less padding (~1.5× faster on the smoke mixture)
        train_sampling_strategy="random" if hw.packing else "group_by_length",
        neftune_noise_alpha=cfg.adapter.neftune_noise_alpha,
    )


def finetune(
    cfg: LecConfig,
    train_path: Path,
    base_dir: Optional[Path],
    out_dir: Path,
    on_metrics: Optional[Callable[[Dict[str, float], int], None]] = None,
) -> TrainResult:
    from lec.preflight import check

    if cfg.train.preflight:
        check(cfg, base_dir)  # before any weight is loaded: refuse a run that will not fit
    torch.manual_seed(cfg.seed)
    if cfg.hardware.device is Device.cpu and cfg.hardware.num_threads:
        torch.set_num_threads(cfg.hardware.num_threads)
    ckpt_root = out_dir.parent / "checkpoints"
    resume = find_resume(cfg.train.resume_from, ckpt_root)
    budget = TimeBudget(time_budget_s(cfg), elapsed_in(resume))

    tokenizer = load_tokenizer(cfg.model, path=str(base_dir) if base_dir else None)
    rows = training_rows(cfg, encode(read_jsonl(train_path), tokenizer, cfg))
    apply_memory_cap(cfg.hardware)
    model, trainable = prepare_model(cfg, base_dir)

    lr = cfg.model.lr or cfg.adapter.lr
    warmup = cfg.model.warmup_ratio if cfg.model.warmup_ratio is not None else cfg.adapter.warmup_ratio
    batch = cfg.hardware.micro_batch_size * cfg.hardware.grad_accum
    epochs = cfg.train.epochs if cfg.train.epochs is not None else cfg.adapter.epochs
    steps = cfg.train.max_steps or math.ceil(len(rows) * epochs / batch)
    log.info("training %d trainable params on %d rows: %d steps × %d rows, lr %.1e, budget %.0f s (%.0f s used)",
             trainable, len(rows), steps, batch, lr, budget.budget_s, budget.elapsed_before)  # fmt: skip

    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir.parent / "train_log.jsonl"
    if resume is None:
        log_path.unlink(missing_ok=True)
    flatten = cfg.hardware.attn_implementation == "flash_attention_2"  # varlen kernel: one row per micro-batch
    trainer = Trainer(
        model=model,
        args=training_args(cfg, ckpt_root, steps, lr, warmup),
        train_dataset=rows,
        data_collator=collate(tokenizer.pad_token_id, flatten=flatten),
        callbacks=[LossLog(log_path, on_metrics), budget, AtomicCheckpoints(ckpt_root, budget, cfg.train.save_total_limit),
                   progress.trainer_callback("finetune")],  # a bar in a terminal, periodic log lines in sweeps/logs
    )
    trainer.remove_callback(PrinterCallback)  # LossLog reports progress; no dict printed per step
    start = time.perf_counter()
    if resume is not None:
        log.info("resuming from %s (%.0f s of training already spent)", resume, budget.elapsed_before)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - start

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    done = trainer.state.global_step - (json.loads((resume / "trainer_state.json").read_text())["global_step"] if resume else 0)
    tokens = sum(len(r["input_ids"]) for r in rows) * done * batch // max(1, len(rows))
    return TrainResult(out_dir, trainer.state.global_step, float(result.training_loss), seconds, tokens, trainable,
                       log_path, budget.elapsed(), budget.stopped, resume)  # fmt: skip
