"""Training throughput: lec's training step vs a plain transformers Trainer + peft baseline, same model and data.

`python benchmarks/train_throughput.py [--steps 12]` — CPU: a 4-layer, 256-wide tiny Llama (LoRA r=16) on the
synthetic mixture (HELM-style prompts with 0–5 shots: short, uneven rows).
`python benchmarks/train_throughput.py --gpu-mistral [--dry-run]` — GPU: a Mistral-7B-shaped random-init model in
QLoRA (NF4) at seq 2048 under a 24 GiB cap (`--dry-run` only composes the config and prints the memory pre-flight).

Both sides tokenize the same rows the same way (prompt masked) and take the same number of optimizer steps with the
same micro-batch, LoRA, optimizer and precision. lec: its preset path — packing (hardware.packing=true, position
ids per sample), its collator and TrainingArguments. Baseline: what a plain HF script does — rows padded to the
longest in a random micro-batch (DataCollatorForSeq2Seq). Each side runs in its own process; prints tokens/s
(non-padding tokens trained per second), peak memory (CPU: peak RSS above the process before the model; GPU:
torch.cuda.max_memory_allocated) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU = ["model.tiny.hidden_size=256", "model.tiny.intermediate_size=688", "model.tiny.num_hidden_layers=4",
       "model.tiny.num_attention_heads=8", "model.tiny.num_key_value_heads=4", "hardware.max_seq_len=512",
       "hardware.micro_batch_size=8", "hardware.grad_accum=1", "adapter.r=16"]  # fmt: skip
GPU = ["hardware=rtx4090", "model=mistral7b", "adapter=qlora", "hardware.max_seq_len=2048",
       "hardware.micro_batch_size=4", "hardware.grad_accum=1"]  # fmt: skip


def _peak_memory(before_rss: int) -> int:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before_rss


def worker(mode: str, steps: int, work: Path, overrides: list) -> None:
    """One side in this process: print {"tokens": …, "seconds": …, "peak": …}."""
    import psutil
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from lec.config import compose
    from lec.data.mixture import read_jsonl
    from lec.models import load_tokenizer
    from lec.train.finetune import _load_kwargs, apply_memory_cap, attach_adapter, prepare_model, training_args, training_rows
    from lec.train.packing import collate, encode

    cfg = compose(overrides + [f"model.local_path={work / 'base'}"] + (["hardware.packing=true"] if mode == "lec" else []))
    if cfg.hardware.device.value == "cpu":
        torch.set_num_threads(cfg.hardware.num_threads or 2)
    tokenizer = load_tokenizer(cfg.model)
    rows = encode(read_jsonl(work / "data" / "train.jsonl"), tokenizer, cfg)
    apply_memory_cap(cfg.hardware)
    before = psutil.Process().memory_info().rss
    seen = {"tokens": 0}

    def counting(fn):
        def wrapped(batch):
            out = fn(batch)
            seen["tokens"] += sum(len(b["input_ids"]) for b in batch)
            return out
        return wrapped

    if mode == "lec":
        model, _ = prepare_model(cfg, None)
        data = training_rows(cfg, rows)
        args = training_args(cfg, work / f"ckpt-{mode}", steps, 1e-4, 0.0)
        collator = collate(tokenizer.pad_token_id, flatten=cfg.hardware.attn_implementation == "flash_attention_2")
    else:  # the plain recipe: load, (k-bit prep), LoRA, pad to the longest row of a random micro-batch
        from lec.models import load_model

        model = load_model(cfg.model, **_load_kwargs(cfg))
        if cfg.adapter.quantization is not None:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, cfg.hardware.gradient_checkpointing)
        model = attach_adapter(model, cfg)
        data = rows
        args = TrainingArguments(output_dir=str(work / f"ckpt-{mode}"), per_device_train_batch_size=cfg.hardware.micro_batch_size,
                                 gradient_accumulation_steps=cfg.hardware.grad_accum, max_steps=steps, learning_rate=1e-4,
                                 optim=cfg.adapter.optim, bf16=cfg.hardware.bf16, gradient_checkpointing=cfg.hardware.gradient_checkpointing,
                                 use_cpu=cfg.hardware.device.value == "cpu", save_strategy="no", report_to="none",
                                 disable_tqdm=True, seed=cfg.seed)  # fmt: skip
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)

    class Clock(TrainerCallback):  # time from the end of the first step: no warm-up, no setup
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                self.t0, self.tok0 = time.perf_counter(), seen["tokens"]

    clock = Clock()
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=counting(collator), callbacks=[clock])
    trainer.train()
    seconds = time.perf_counter() - clock.t0
    print(json.dumps({"tokens": seen["tokens"] - clock.tok0, "seconds": seconds, "peak": _peak_memory(before)}))


def prepare(work: Path, overrides: list, gpu: bool) -> None:
    """The mixture and the base model directory both sides load."""
    from lec.config import compose
    from lec.data.mixture import build_mixture
    from lec.models import build_tiny_tokenizer, materialize_base

    cfg = compose(CPU if not gpu else ["hardware.max_seq_len=2048"])
    build_mixture(cfg.data, work / "data")
    if not gpu:
        (work / "base").symlink_to(materialize_base(cfg.model, work / "cache"))
        return
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    s = compose(overrides).model.shape
    tokenizer = build_tiny_tokenizer(1024)  # token ids < 1024: any Mistral-shaped embedding takes them
    config = MistralConfig(vocab_size=s.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                           num_hidden_layers=s.num_hidden_layers, num_attention_heads=s.num_attention_heads,
                           num_key_value_heads=s.num_key_value_heads, tie_word_embeddings=False,
                           pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = MistralForCausalLM(config).to(torch.bfloat16)  # random init, saved once for both sides
    model.save_pretrained(work / "base")
    tokenizer.save_pretrained(work / "base")
    del model
    torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--gpu-mistral", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="compose and print the memory pre-flight only")
    args = ap.parse_args()
    overrides = list(GPU) if args.gpu_mistral else list(CPU)
    if args.gpu_mistral:
        from lec import preflight
        from lec.config import compose

        cap = 24.0
        try:
            import torch

            if torch.cuda.is_available():
                cap = 24.0 / (torch.cuda.get_device_properties(0).total_memory / 2**30)
                overrides.append(f"hardware.memory_fraction_cap={min(1.0, cap):.4f}")
        except ImportError:
            pass
        est = preflight.estimate(compose(overrides + ["hardware.packing=true"]))
        print(est.table())
        if args.dry_run:
            return
    env = dict(os.environ, HF_HUB_OFFLINE="1", MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work, overrides, args.gpu_mistral)
        results = {}
        for mode in ("baseline", "lec"):
            out = subprocess.run([sys.executable, __file__, "--worker", mode, str(args.steps), str(work), *overrides],
                                 env=env, cwd=ROOT, capture_output=True, text=True)  # fmt: skip
            if out.returncode:
                raise SystemExit(out.stderr[-3000:])
            r = results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{mode:<9} {r['tokens'] / r['seconds']:9.0f} tok/s   peak {r['peak'] / 2**30:6.2f} GiB   "
                  f"({r['tokens']} tokens in {r['seconds']:.1f} s)", flush=True)
    b, lec = results["baseline"], results["lec"]
    ratio = (lec["tokens"] / lec["seconds"]) / (b["tokens"] / b["seconds"])
    print(f"lec / baseline: {ratio:.2f}× tokens/s, {lec['peak'] / b['peak']:.2f}× peak memory")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5:])
    else:
        main()
