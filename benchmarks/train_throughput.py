"""Training throughput: lec's packed training step vs a plain transformers Trainer + peft baseline, like for like.

`python benchmarks/train_throughput.py [--steps 50] [--rounds 3]` — CPU: a 4-layer, 256-wide tiny Llama (LoRA r=16)
on the synthetic mixture (HELM-style prompts with 0–5 shots: short, uneven rows).
`python benchmarks/train_throughput.py --gpu-mistral [--dry-run]` — GPU: a Mistral-7B-shaped random-init model in
QLoRA (NF4) under a 24 GiB cap (`--dry-run` only composes the plan and prints the memory pre-flight).

Both sides tokenize the same rows the same way (prompt masked), take the same number of optimizer steps with the
same LoRA, optimizer and precision, and train the same number of real (non-padding) tokens per optimizer step:
lec packs rows into hardware.pack_len-token rows (position ids restart per sample) at micro-batch m; the baseline
is what a plain HF script does with its standard options — unpacked rows, `group_by_length` batches padded to their
longest row (DataCollatorForSeq2Seq) — at the micro-batch whose mean real tokens equal lec's m × pack_len. Each side
runs in its own process; the sides alternate for --rounds rounds and the medians are reported: tokens/s (real tokens
trained per second, from the end of the first step), peak memory (CPU: peak RSS above the process before the model;
GPU: torch.cuda.max_memory_allocated) and the ratio of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


def _plan(overrides: list):
    from lec import plan
    from lec.config import compose

    return plan.build(compose(overrides))


def worker(mode: str, steps: int, work: Path, overrides: list) -> None:
    """One side in this process: print {"tokens": …, "seconds": …, "peak": …}."""
    import psutil
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from lec.data.mixture import read_jsonl
    from lec.models import load_model, load_tokenizer
    from lec.train.finetune import _load_kwargs, apply_memory_cap, attach_adapter, prepare_model, training_args, training_rows
    from lec.train.packing import collate, encode

    p = _plan(overrides)
    tr = p.train
    if tr.device.value == "cpu":
        torch.set_num_threads(tr.num_threads or 2)
    tokenizer = load_tokenizer(p.model, path=str(work / "base"))
    rows = encode(read_jsonl(work / "data" / "train.jsonl"), tokenizer, tr)
    apply_memory_cap(tr)
    before = psutil.Process().memory_info().rss
    seen = {"tokens": 0}

    def counting(fn):
        def wrapped(batch):
            out = fn(batch)
            seen["tokens"] += sum(len(b["input_ids"]) for b in batch)  # real tokens: rows before padding
            return out
        return wrapped

    if mode == "lec":
        model, _ = prepare_model(tr, p.model, work / "base")
        data = training_rows(tr, rows)
        args = training_args(tr, work / f"ckpt-{mode}", steps)
        collator = collate(tokenizer.pad_token_id, flatten=tr.attn_implementation.value.startswith("flash"))
    else:  # the plain recipe: load, (k-bit prep), LoRA, length-grouped batches padded to their longest row
        model = load_model(p.model, path=str(work / "base"), **_load_kwargs(tr))
        if tr.quantization is not None:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, tr.gradient_checkpointing)
        model = attach_adapter(model, tr)
        data = rows
        args = TrainingArguments(output_dir=str(work / f"ckpt-{mode}"), per_device_train_batch_size=tr.micro_batch_size,
                                 gradient_accumulation_steps=tr.grad_accum, max_steps=steps, learning_rate=tr.lr,
                                 optim=tr.optim.value, bf16=tr.bf16, gradient_checkpointing=tr.gradient_checkpointing,
                                 use_cpu=tr.device.value == "cpu", save_strategy="no", report_to="none",
                                 train_sampling_strategy="group_by_length", disable_tqdm=True, seed=tr.seed)  # fmt: skip
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


def prepare(work: Path, overrides: list, gpu: bool) -> float:
    """The mixture and the base model directory both sides load; returns the mean encoded row length."""
    from lec.config import compose
    from lec.data.mixture import build_mixture, read_jsonl
    from lec.models import build_tiny_tokenizer, load_tokenizer, materialize_base
    from lec.train.packing import encode

    cfg = compose(CPU if not gpu else ["hardware.max_seq_len=2048"])
    build_mixture(cfg.data, work / "data")
    if not gpu:
        (work / "base").symlink_to(materialize_base(cfg.model, work / "cache"))
    else:
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
    p = _plan(overrides)
    rows = encode(read_jsonl(work / "data" / "train.jsonl"), load_tokenizer(p.model, path=str(work / "base")), p.train)
    return sum(len(r["input_ids"]) for r in rows) / len(rows)


def sides(overrides: list, mean_len: float) -> dict:
    """Each side's overrides: lec packs at micro-batch m; the baseline's micro-batch carries as many real tokens."""
    p = _plan(overrides)
    pack_len, m = p.train.seq_len, p.train.micro_batch_size
    b = max(1, round(m * pack_len / mean_len))
    return {"baseline": overrides + ["hardware.pack_len=null", f"hardware.micro_batch_size={b}"],
            "lec": overrides + [f"hardware.pack_len={pack_len}"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 50 steps: transformers' length-grouped sampler sorts megabatches of 50 micro-batches, longest first; fewer
    # steps would give the baseline only the longest rows (more real tokens per step than lec's packed rows)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gpu-mistral", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="compose and print the memory pre-flight only")
    args = ap.parse_args()
    overrides = list(GPU) if args.gpu_mistral else list(CPU)
    if args.gpu_mistral:
        from lec import preflight

        try:
            import torch

            if torch.cuda.is_available():  # emulate a 24 GiB card on a bigger one
                cap = 24.0 / (torch.cuda.get_device_properties(0).total_memory / 2**30)
                overrides.append(f"hardware.memory_fraction_cap={min(1.0, cap):.4f}")
        except ImportError:
            pass
        p = _plan(overrides + ["hardware.pack_len=2048"])
        print(preflight.estimate(p.train, p.model).table())
        if args.dry_run:
            return
    env = dict(os.environ, HF_HUB_OFFLINE="1", MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    results: dict = {"baseline": [], "lec": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mean_len = prepare(work, overrides, args.gpu_mistral)
        plan = sides(overrides, mean_len)
        print(f"rows: mean {mean_len:.0f} tokens; baseline {plan['baseline'][-1]}, lec {plan['lec'][-1]} "
              f"(lec micro-batch × pack_len = real tokens per step)")  # fmt: skip
        for i in range(args.rounds):
            order = ("baseline", "lec") if i % 2 == 0 else ("lec", "baseline")  # alternate: drift hits both sides
            for mode in order:
                out = subprocess.run([sys.executable, __file__, "--worker", mode, str(args.steps), str(work),
                                      *plan[mode]], env=env, cwd=ROOT, capture_output=True, text=True)  # fmt: skip
                if out.returncode:
                    raise SystemExit(out.stderr[-3000:])
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results[mode].append(r)
                print(f"round {i + 1} {mode:<9} {r['tokens'] / r['seconds']:9.0f} tok/s   peak "
                      f"{r['peak'] / 2**30:6.2f} GiB   ({r['tokens']} tokens in {r['seconds']:.1f} s)", flush=True)
    speed = {m: statistics.median(r["tokens"] / r["seconds"] for r in rs) for m, rs in results.items()}
    peak = {m: statistics.median(r["peak"] for r in rs) for m, rs in results.items()}
    tokens = {m: statistics.median(r["tokens"] for r in rs) for m, rs in results.items()}
    per_step = {m: tokens[m] / (args.steps - 1) for m in tokens}  # timed from the end of step 1
    print(f"median over {args.rounds} rounds: baseline {speed['baseline']:.0f} tok/s, lec {speed['lec']:.0f} tok/s "
          f"(real tokens per optimizer step: {per_step['baseline']:.0f} vs {per_step['lec']:.0f})")  # fmt: skip
    print(f"lec / baseline: {speed['lec'] / speed['baseline']:.2f}× tokens/s, "
          f"{peak['lec'] / peak['baseline']:.2f}× peak memory")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5:])
    else:
        main()
