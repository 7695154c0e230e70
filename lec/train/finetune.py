"""Fine-tune: base model → LoRA / QLoRA / full → transformers Trainer → adapter directory.

Read top to bottom: tokenize (and pack) the mixture → apply the memory cap → load the base →
attach the adapter → train within the time budget (atomic checkpoints, resume) → save.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from lec import files, progress
from lec.config import ConfigError, Device, ModelConfig
from lec.data.mixture import read_jsonl
from lec.models import load_model, load_tokenizer
from lec.plan import RunLayout, TrainPlan
from lec.train.budget import PARTIAL, AtomicCheckpoints, TimeBudget, find_resume, state_of
from lec.train.packing import collate, encode, head_where_labelled, pack

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
    resumed_from_run: Optional[str] = None  # the MLflow run that wrote the checkpoint this one resumed
    stop_reason: str = ""  # why training stopped: budget (hardware.time_budget_h) | early_stopping | max_steps | epochs
    planned_steps: int = 0  # total_steps(): train.max_steps or adapter.epochs over the rows
    lora_targets: List[str] = field(default_factory=list)  # the module names peft adapted
    adapter_step: int = 0  # the step whose weights are the run's adapter (the best by val/loss with train.keep_best)
    best_val_loss: Optional[float] = None
    bench_seconds: float = 0.0  # the benchmark curves' cost: task setup + every check (train.bench_every_steps)


class LossLog(TrainerCallback):
    """Every logged step → `on_metrics({"train/loss": …, "train/lr": …}, step)` and a JSONL line (val/loss too)."""

    def __init__(self, path: Path, on_metrics: Optional[Callable[[Dict[str, float], int], None]]):
        self.path, self.on_metrics = path, on_metrics

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        metrics = {f"train/{k}": float(v) for k, v in logs.items() if k in ("loss", "learning_rate", "grad_norm")}
        if "train/learning_rate" in metrics:
            metrics["train/lr"] = metrics.pop("train/learning_rate")
        if metrics:
            self.write(metrics, state.global_step)

    def write(self, metrics: Dict[str, float], step: int) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.on_metrics:
            self.on_metrics(metrics, step)


class Validation(TrainerCallback):
    """val/loss over the held-out rows (data/val.jsonl) every `every` optimizer steps and at the end of training,
    logged like the training loss. The weights at the lowest val/loss are saved to `best_dir` when they appear (the
    adapter is MBs; a full fine-tune writes the whole model, as HF's load_best_model_at_end does); after `patience`
    checks without a lower one, training stops. `before` (a checkpoint's lec_state.json) carries the best so far
    across a resume."""

    def __init__(self, rows: List[Dict[str, List[int]]], collate_fn: Callable, micro_batch: int, every: Optional[int],
                 patience: Optional[int], best_dir: Path, log: LossLog, tokenizer, before: dict):  # fmt: skip
        self.rows, self.collate, self.micro_batch, self.every, self.patience = rows, collate_fn, micro_batch, every, patience
        self.best_dir, self.log, self.tokenizer = best_dir, log, tokenizer
        self.best_loss: float = before.get("best_val_loss", math.inf)
        self.best_step: Optional[int] = before.get("best_step")
        found = before.get("best_dir")
        self.best_path: Optional[Path] = Path(found) if found and Path(found).is_dir() else None
        if self.best_path is None:  # a fresh run, or the best weights are gone: the next check sets the best
            self.best_loss, self.best_step = math.inf, None
        self.since_best: int = before.get("checks_since_best", 0)
        self.checked_at: Optional[int] = None
        self.stopped_early = False

    def state(self) -> dict:
        return {"best_val_loss": self.best_loss if math.isfinite(self.best_loss) else None, "best_step": self.best_step,
                "best_dir": str(self.best_path) if self.best_path else None, "checks_since_best": self.since_best}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if (self.every and state.global_step % self.every == 0) or state.global_step >= state.max_steps:
            self.check(state.global_step, model)
            if self.patience and self.since_best >= self.patience and not control.should_training_stop:
                log.info("early stopping at step %d: val/loss %.4f at step %s, no lower in %d checks",
                         state.global_step, self.best_loss, self.best_step, self.since_best)  # fmt: skip
                self.stopped_early = True
                control.should_training_stop = True
                control.should_save = True  # a resume starts from here, not from an older checkpoint

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.checked_at != state.global_step:  # stopped by the budget between checks
            self.check(state.global_step, model)

    @torch.no_grad()
    def check(self, step: int, model) -> float:
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        for i in range(0, len(self.rows), self.micro_batch):
            batch = {k: v.to(model.device) for k, v in self.collate(self.rows[i:i + self.micro_batch]).items()}
            n = int((batch["labels"][:, 1:] != -100).sum())  # the tokens the shifted loss is the mean over
            total += float(model(**batch).loss) * n
            count += n
        model.train(was_training)
        loss = total / max(count, 1)
        self.checked_at = step
        self.log.write({"val/loss": loss}, step)
        if loss < self.best_loss:
            self.best_loss, self.best_step, self.since_best = loss, step, 0
            with files.atomic_dir(self.best_dir, "the best weights so far") as tmp:
                model.save_pretrained(tmp)
                self.tokenizer.save_pretrained(tmp)
            self.best_path = self.best_dir
        else:
            self.since_best += 1
        return loss


def apply_memory_cap(train: TrainPlan) -> Optional[float]:
    """Emulate a smaller card on a bigger one (MSR's trick on 80 GB cards): cap this process's CUDA memory.
    Returns the fraction applied (config.validate refuses the cap on CPU presets)."""
    if train.device is not Device.cuda or not torch.cuda.is_available():
        return None
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    if train.memory_fraction_cap is None:
        if train.capacity_gb and total > train.capacity_gb * 1.05:
            log.warning("this GPU has %.1f GiB but hardware=%s is a %.1f GiB card: set "
                        "hardware.memory_fraction_cap=%.3f to emulate it", total, train.hardware, train.capacity_gb,
                        train.capacity_gb / total)  # fmt: skip
        return None
    torch.cuda.set_per_process_memory_fraction(train.memory_fraction_cap, 0)
    log.info("CUDA memory capped at %.3f × %.1f GiB = %.1f GiB", train.memory_fraction_cap, total,
             train.memory_fraction_cap * total)  # fmt: skip
    return train.memory_fraction_cap


def _load_kwargs(train: TrainPlan) -> dict:
    """Attention kernel, and on CUDA the 4-bit bitsandbytes config of QLoRA (validate() refuses QLoRA on CPU)."""
    kwargs: dict = {"attn_implementation": train.attn_implementation.value}
    q = train.quantization
    if q is not None:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=q.load_in_4bit,
            bnb_4bit_quant_type=q.quant_type.value,
            bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype.value),
        )
    if train.device is Device.cuda:
        kwargs["device_map"] = {"": 0}
    return kwargs


def attach_adapter(model, train: TrainPlan):
    if train.lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    targets = list(train.lora.targets)
    lora = LoraConfig(
        r=train.lora.r,
        lora_alpha=train.lora.alpha,
        lora_dropout=train.lora.dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        bias=train.lora.bias,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def prepare_model(train: TrainPlan, model_cfg: ModelConfig, base_dir: Optional[Path]):
    """Base weights (4-bit on CUDA for QLoRA) with the adapter attached; returns (model, trainable params)."""
    model = load_model(model_cfg, path=str(base_dir) if base_dir else None, **_load_kwargs(train))
    model.config.use_cache = False  # training needs no KV cache, and with one, packed rows would see each other
    if train.quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, train.gradient_checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    model = attach_adapter(model, train)
    if train.quantization is not None and train.bf16:
        # QL qlora.py get_accelerate_model: LoRA layers, embed_tokens and lm_head back to bf16 (prepare_model_for_
        # kbit_training made them fp32), norms stay fp32: halves the residual stream and the logits' input
        from peft.tuners.lora import LoraLayer

        for name, module in model.named_modules():
            if isinstance(module, LoraLayer) or "lm_head" in name or "embed_tokens" in name:
                module.to(torch.bfloat16)
            elif "norm" in name:
                module.to(torch.float32)
    return model, sum(p.numel() for p in model.parameters() if p.requires_grad)


def training_rows(train: TrainPlan, rows: List[Dict[str, List[int]]]) -> List[Dict[str, List[int]]]:
    """Encoded rows, packed into rows of hardware.pack_len tokens when packing."""
    return pack(rows, train.pack_len) if train.pack_len else rows


def total_steps(train: TrainPlan, n_rows: int) -> int:
    """train.max_steps, else adapter.epochs over the (packed) rows at rows_per_step rows per optimizer step."""
    return train.max_steps or max(1, math.ceil(n_rows * train.epochs / train.rows_per_step))


def training_args(train: TrainPlan, ckpt_root: Path, steps: int) -> TrainingArguments:
    """Every plan knob lands here: precision, micro-batch, accumulation, checkpointing; saving goes to .partial/."""
    return TrainingArguments(
        output_dir=str(ckpt_root / PARTIAL),  # AtomicCheckpoints renames finished checkpoints into ckpt_root
        per_device_train_batch_size=train.micro_batch_size,
        gradient_accumulation_steps=train.grad_accum,
        max_steps=steps,
        learning_rate=train.lr,
        lr_scheduler_type=train.scheduler.value,
        warmup_steps=int(train.warmup_ratio * steps),
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        optim=train.optim.value,
        logging_steps=train.logging_steps,
        save_strategy="steps" if train.save_every_steps else "no",  # the budget stop saves either way
        save_steps=train.save_every_steps or 500,
        save_total_limit=None,  # AtomicCheckpoints rotates complete checkpoints itself
        report_to="none",  # lec logs train/* itself
        bf16=train.bf16,
        tf32=train.tf32 if train.device is Device.cuda else None,
        gradient_checkpointing=train.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},  # works with frozen inputs (LoRA) without hooks
        use_cpu=train.device is Device.cpu,
        dataloader_num_workers=0,
        seed=train.seed,
        disable_tqdm=True,
        # unpacked rows: batches of similar length, less padding (~1.5× faster on the smoke mixture)
        train_sampling_strategy="random" if train.pack_len else "group_by_length",
        neftune_noise_alpha=train.neftune_noise_alpha,
    )


def finetune(
    train: TrainPlan,
    model_cfg: ModelConfig,
    layout: RunLayout,
    base_dir: Optional[Path],
    on_metrics: Optional[Callable[[Dict[str, float], int], None]] = None,
    run_id: Optional[str] = None,
) -> TrainResult:
    """layout.data/train.jsonl → layout.adapter (+ layout.checkpoints, layout.train_log). The memory pre-flight ran
    before (pipeline.run), when train.preflight."""
    torch.manual_seed(train.seed)
    if train.device is Device.cpu and train.num_threads:
        torch.set_num_threads(train.num_threads)
    ckpt_root, out_dir = layout.checkpoints, layout.adapter
    resume = find_resume(train.resume_from, ckpt_root)
    before = state_of(resume)  # read now: the checkpoint may be rotated away (save_total_limit) while training
    budget = TimeBudget(train.time_budget_s, before.get("elapsed_s", 0.0))

    tokenizer = load_tokenizer(model_cfg, path=str(base_dir) if base_dir else None)
    rows = training_rows(train, encode(read_jsonl(layout.data / "train.jsonl"), tokenizer, train))
    apply_memory_cap(train)
    model, trainable = prepare_model(train, model_cfg, base_dir)
    targets = _peft_targets(model)

    steps = total_steps(train, len(rows))
    log.info("training %d trainable params on %d rows: %d steps × %d rows (≤ %d tokens), lr %.1e, budget %.0f s "
             "(%.0f s used)", trainable, len(rows), steps, train.rows_per_step, train.tokens_per_step, train.lr,
             budget.budget_s, budget.elapsed_before)  # fmt: skip

    log_path = layout.train_log
    if resume is None:
        log_path.unlink(missing_ok=True)
    losses = LossLog(log_path, on_metrics)
    head = head_where_labelled(model)  # the LM head only where a label is
    validation = _validation(train, layout, tokenizer, losses, before, head)
    bench = _bench(train, layout, model, tokenizer, losses)
    flatten = train.attn_implementation.value.startswith("flash")  # varlen kernel: one row per micro-batch
    checkpoints = AtomicCheckpoints(ckpt_root, budget, train.save_total_limit, run_id,
                                    extra=validation.state if validation else dict)  # fmt: skip
    trainer = Trainer(
        model=model,
        args=training_args(train, ckpt_root, steps),
        train_dataset=rows,
        data_collator=collate(tokenizer.pad_token_id, flatten=flatten, head_where_labelled=head),
        # validation before the budget: the budget's step times include the checks
        callbacks=[losses, *([validation] if validation else []), *([bench] if bench else []), budget, checkpoints,
                   progress.trainer_callback("finetune")],  # a bar in a terminal, periodic log lines in sweeps/logs
    )
    trainer.remove_callback(PrinterCallback)  # LossLog reports progress; no dict printed per step
    start = time.perf_counter()
    if resume is not None:
        log.info("resuming from %s (%.0f s of training already spent)", resume, budget.elapsed_before)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - start
    if bench is not None:
        log.info("benchmark curves: %d checks, %.1f s with their setup (train.bench_every_steps=%d)", bench.checks,
                 bench.seconds, train.bench.every_steps)  # fmt: skip

    last = trainer.state.global_step
    best = validation.best_path if validation and train.keep_best and validation.best_step != last else None
    with files.atomic_dir(out_dir, "the trained adapter") as tmp:  # evaluate never serves a half-written adapter
        if best is not None:  # the lowest val/loss was before the last step: those weights are the run's
            shutil.copytree(best, tmp, dirs_exist_ok=True)
        else:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    done = last - before.get("global_step", 0)
    tokens = sum(len(r["input_ids"]) for r in rows) * done * train.rows_per_step // max(1, len(rows))
    reason = ("budget" if budget.stopped else "early_stopping" if validation and validation.stopped_early
              else "max_steps" if train.max_steps else "epochs")  # fmt: skip
    return TrainResult(out_dir, last, float(result.training_loss), seconds, tokens, trainable, log_path,
                       budget.elapsed(), budget.stopped, resume, before.get("run_id"), reason, steps, targets,
                       adapter_step=validation.best_step if best is not None else last,
                       best_val_loss=validation.best_loss if validation else None,
                       bench_seconds=bench.seconds if bench else 0.0)  # fmt: skip


def _validation(train: TrainPlan, layout: RunLayout, tokenizer, losses: LossLog, before: dict,
                head: bool) -> Optional[Validation]:  # fmt: skip
    """The val/loss callback over data/val.jsonl; None when there are no held-out rows and nothing needs them."""
    path = layout.data / "val.jsonl"
    val_rows = encode(read_jsonl(path), tokenizer, train) if path.exists() else []
    if not val_rows:
        needs = "train.keep_best" if train.keep_best else "train.early_stopping_patience" \
            if train.early_stopping_patience else None  # fmt: skip
        if needs:
            raise ConfigError(f"{needs} needs held-out rows and {path} has none: raise data.val_fraction "
                             f"or set {needs}={'false' if needs.endswith('best') else 'null'}")  # fmt: skip
        log.warning("no held-out rows in %s: no val/loss", path)
        return None
    return Validation(val_rows, collate(tokenizer.pad_token_id, head_where_labelled=head), train.micro_batch_size,
                      train.eval_every_steps, train.early_stopping_patience, layout.checkpoints / "best", losses,
                      tokenizer, before)  # fmt: skip


def _bench(train: TrainPlan, layout: RunLayout, model, tokenizer, losses: LossLog):
    """The benchmark-curves callback (train.bench_every_steps), its lm-eval tasks and model wrapper built now, before
    the first step; None when off. A task lm-eval cannot load or score fails here, before any training."""
    if train.bench is None:
        return None
    from lec.evaluate import bench as scoring
    from lec.train.bench import Bench

    b, start = train.bench, time.perf_counter()
    tasks_dir = scoring.write_tasks(layout.bench, b.synthetic, b.tasks, dict(b.shots)) if b.synthetic else None
    try:
        score = scoring.scorer(model, tokenizer, b.tasks, b.limit, tasks_dir)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    callback = Bench(score, {"open": b.open, "closed": b.closed}, b.every_steps, losses.write)
    callback.seconds = time.perf_counter() - start  # the setup counts toward the curves' cost
    return callback


def _peft_targets(model) -> List[str]:
    """The module names peft put LoRA on (what `all-linear` became), [] for a full fine-tune."""
    config = getattr(model, "peft_config", {}).get("default")
    return sorted(config.target_modules) if config is not None else []
