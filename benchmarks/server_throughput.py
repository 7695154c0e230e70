"""Model-server throughput under HELM-like load (goal: lec ≥ 4× a naive one-request-at-a-time server).

Both servers are real processes on 127.0.0.1 serving the same model with the same greedy decoding:
- lec: `python -m lec.serve` (continuous batching, logprobs + top-k alternatives, stop sequences);
- baseline: the challenge sample's approach (llama-recipes `main.py`): one HF `model.generate(output_scores=True)`
  per request behind a lock, logprobs from the scores.
The client mimics `helm-run -n 8`: 8 threads, mixed prompt lengths (few-shot MMLU/GSM prompts of 0–5 shots).

    .venv/bin/python benchmarks/server_throughput.py [--requests 64] [--threads 8] [--max-new 32]
    .venv/bin/python benchmarks/server_throughput.py --gpu-1b      # on a CUDA machine: a 1B-param Llama shape
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def naive_server(base: str, port: int, device: str) -> None:
    """The baseline: HF generate per request, serialised, as the challenge's sample servers did."""
    import torch
    import uvicorn
    from fastapi import FastAPI
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32 if device == "cpu" else torch.bfloat16)
    model = model.to(device).eval()
    lock, app = threading.Lock(), FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/process")
    def process(body: dict):
        start = time.perf_counter()
        enc = tok(body["prompt"], return_tensors="pt").to(device)
        with lock, torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max(1, body.get("max_new_tokens", 32)), do_sample=False,
                                 output_scores=True, return_dict_in_generate=True,
                                 pad_token_id=tok.pad_token_id)  # fmt: skip
        gen = out.sequences[0, enc.input_ids.shape[1]:]
        logprobs = torch.log_softmax(torch.stack(out.scores)[:, 0].float(), -1)
        lp = logprobs[torch.arange(len(gen)), gen]
        tokens = [{"text": tok.decode([int(t)]), "logprob": float(v), "top_logprob": {}} for t, v in zip(gen, lp)]
        return {"text": tok.decode(gen, skip_special_tokens=True), "tokens": tokens, "logprob": float(lp.sum()),
                "request_time": time.perf_counter() - start}  # fmt: skip

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def prompts(n: int, seed: int = 0) -> list[str]:
    from lec.data.synthetic import gsm_arith_rows, mmlu_order_rows

    rows = mmlu_order_rows(n, seed) + gsm_arith_rows(n, seed)
    random.Random(seed).shuffle(rows)
    return [r["instruction"] for r in rows[:n]]


def wait(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}")
        try:
            if requests.get(url + "/health", timeout=1).ok:
                return
        except requests.RequestException:
            time.sleep(0.3)
    raise RuntimeError(f"{url} not ready")


def helm_body(prompt: str, max_new: int) -> dict:
    """The body HELM's HTTPModelClient sends: MMLU (multiple_choice_joint) asks for 1 token with 5 alternatives;
    GSM asks for up to `max_new` tokens, stopping at a blank line."""
    mc = prompt.startswith("The following are multiple choice")
    return {"prompt": prompt, "temperature": 1e-7, "num_return_sequences": 1, "max_new_tokens": 1 if mc else max_new,
            "top_p": 1, "echo_prompt": False, "top_k_per_token": 5 if mc else 1,
            "stop_sequences": [] if mc else ["\n\n"]}  # fmt: skip


def load(url: str, batch: list[str], threads: int, max_new: int) -> float:
    body = lambda p: helm_body(p, max_new)  # noqa: E731
    requests.post(url + "/process", json=body(batch[0]), timeout=600).raise_for_status()  # warm-up
    start = time.perf_counter()
    with cf.ThreadPoolExecutor(threads) as pool:
        for r in pool.map(lambda p: requests.post(url + "/process", json=body(p), timeout=600), batch):
            r.raise_for_status()
    return len(batch) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=64, help="new tokens of a GSM-style request (MMLU asks 1)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating measurements of each server; medians reported")
    ap.add_argument("--gpu-1b", action="store_true", help="a random-init 1B-param Llama on CUDA")
    ap.add_argument("--naive", nargs=3, metavar=("BASE", "PORT", "DEVICE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.naive:
        return naive_server(args.naive[0], int(args.naive[1]), args.naive[2])

    from lec import config
    from lec.models import materialize_base
    from lec.serve.process import free_port

    tmp = Path(tempfile.mkdtemp(prefix="lec-bench-"))
    # --gpu-1b: a Llama-3.2-1B-like shape, random init
    shape_1b = ["model.tiny.hidden_size=2048", "model.tiny.intermediate_size=8192", "model.tiny.num_hidden_layers=16",
                "model.tiny.num_attention_heads=32", "model.tiny.num_key_value_heads=8"]  # fmt: skip
    overrides = ["hardware=h100", *shape_1b] if args.gpu_1b else []
    cfg = config.compose(overrides)
    base = materialize_base(cfg.model, tmp / "cache")
    device = "cuda" if args.gpu_1b else "cpu"
    batch = prompts(args.requests)

    import yaml

    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(config.to_container(cfg)))
    commands = {
        "lec": lambda port: [sys.executable, "-m", "lec.serve", "--params", str(params), "--base", str(base),
                             f"serve.port={port}", f"serve.max_batch_size={args.threads}"],
        "naive": lambda port: [sys.executable, __file__, "--naive", str(base), str(port), device],
    }  # fmt: skip
    # Both servers run side by side and are loaded in alternation, so a noisy neighbour hits both alike.
    urls, procs = {}, []
    try:
        for name, command in commands.items():
            port = free_port()
            procs.append(subprocess.Popen(command(port), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            urls[name] = f"http://127.0.0.1:{port}"
            wait(urls[name], procs[-1])
        results = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, url in urls.items():
                results[name].append(load(url, batch, args.threads, args.max_new))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
    lec, naive = statistics.median(results["lec"]), statistics.median(results["naive"])
    print(f"model: {'1B-shape Llama on CUDA' if args.gpu_1b else 'tiny (0.36M) on CPU'}; {args.requests} requests, "
          f"{args.threads} client threads, HELM's request settings (MMLU: 1 token + top-5; GSM: ≤ {args.max_new} "
          f"tokens, stop at a blank line), mixed 0–5-shot prompts")  # fmt: skip
    runs = lambda name: ", ".join(f"{x:.1f}" for x in results[name])  # noqa: E731
    print(f"naive one-at-a-time HF generate server: {naive:.2f} req/s (median of {runs('naive')})")
    print(f"lec server (continuous batching):       {lec:.2f} req/s (median of {runs('lec')})")
    print(f"ratio lec / naive: {lec / naive:.2f}× (goal ≥ 4×)")


if __name__ == "__main__":
    main()
