"""Calibrate the memory pre-flight (lec/preflight.py) against measured peaks of real CPU training steps.

`python benchmarks/preflight_calibration.py` — each case runs lec's training step (prepare_model → Trainer with
lec's args and collator, 3 optimizer steps on fixed-length random rows) in a fresh process and measures its peak
resident memory above the process's memory just before the model is built (glibc is told to return every freed
block over 64 KiB to the OS, so RSS follows live tensors). Prints estimate, measurement and error per case.
CPU only (fp32): it checks the terms' structure (weights, adapter, gradients, optimizer, activations with and
without checkpointing, logits); the GPU-only terms (bf16 autocast, NF4, CUDA context) need a GPU to calibrate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "llama-25M": "vocab_size=8000 hidden_size=512 intermediate_size=1376 num_hidden_layers=4 num_attention_heads=8 num_key_value_heads=4",
    "llama-60M": "vocab_size=16000 hidden_size=768 intermediate_size=2048 num_hidden_layers=6 num_attention_heads=12 num_key_value_heads=12",
}
CASES = [  # (name, shape, overrides)
    ("lora r16", "llama-25M", []),
    ("lora r16 + grad ckpt", "llama-25M", ["hardware.gradient_checkpointing=true"]),
    ("full fine-tune", "llama-25M", ["adapter=full"]),
    ("lora r64 dropout 0", "llama-60M", ["adapter.r=64", "adapter.dropout=0.0"]),
    ("lora r16 packed", "llama-60M", ["hardware.pack_len=512"]),
    ("full + grad ckpt", "llama-60M", ["adapter=full", "hardware.gradient_checkpointing=true"]),
]
BASE = ["hardware.max_seq_len=512", "hardware.micro_batch_size=4", "hardware.grad_accum=1", "train.max_steps=3"]


def overrides(shape: str, extra: list) -> list:
    return BASE + [f"model.tiny.{kv}" for kv in SHAPES[shape].split()] + extra


def worker(args: list) -> None:
    """One case in this process: print {"estimate": bytes, "measured": bytes}."""
    import psutil
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer

    from lec import preflight
    from lec import plan as lec_plan
    from lec.config import compose
    from lec.train.finetune import attach_adapter, training_args
    from lec.train.packing import IGNORE, collate

    cfg = compose(args)
    p = lec_plan.build(cfg)
    torch.set_num_threads(2)
    est = preflight.estimate(p.train, p.model)
    t = p.model.tiny
    n = p.train.pack_len or p.train.seq_len
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(32):  # full-length rows: the peak the estimate is for
        ids = torch.randint(4, t.vocab_size, (n,), generator=g).tolist()
        row = {"input_ids": ids, "labels": [IGNORE] * (n // 4) + ids[n // 4:]}
        if p.train.pack_len:  # two samples per row
            row["position_ids"] = list(range(n // 2)) * 2
        rows.append(row)
    before = psutil.Process().memory_info().rss
    config = LlamaConfig(vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                         num_hidden_layers=t.num_hidden_layers, num_attention_heads=t.num_attention_heads,
                         num_key_value_heads=t.num_key_value_heads, tie_word_embeddings=True,
                         attn_implementation=p.train.attn_implementation.value)  # fmt: skip
    model = attach_adapter(LlamaForCausalLM(config), p.train)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model=model, args=training_args(p.train, Path(tmp), 3), train_dataset=rows,
                          data_collator=collate(0))  # fmt: skip
        trainer.train()
    # VmHWM: this process image's own peak. (ru_maxrss is kept across fork + exec, so a worker started by a large
    # process, e.g. a long pytest session, would report its parent's size.)
    status = Path("/proc/self/status").read_text()
    peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024
    print(json.dumps({"estimate": est.total, "measured": peak - before, "terms": est.terms}))


def main() -> None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", HF_HUB_OFFLINE="1")
    errors = []
    print(f"{'case':<24}{'shape':<11}{'estimate MiB':>13}{'measured MiB':>14}{'error':>8}")
    for name, shape, extra in CASES:
        out = subprocess.run([sys.executable, __file__, "--worker", *overrides(shape, extra)], env=env, cwd=ROOT,
                             capture_output=True, text=True)  # fmt: skip
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        err = r["estimate"] / r["measured"] - 1
        errors.append(abs(err))
        print(f"{name:<24}{shape:<11}{r['estimate'] / 2**20:13.0f}{r['measured'] / 2**20:14.0f}{err:+8.1%}", flush=True)
    print(f"mean |error| {sum(errors) / len(errors):.1%}, max |error| {max(errors):.1%} (goal ±15 %)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        main()
