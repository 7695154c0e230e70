"""Model-server throughput under HELM's own load (goal: lec ≥ 6× a naive one-request-at-a-time server; the OpenAI
path within 10 % of /process).

The load is a recorded HELM request log: the benchmark first runs the real `helm-run` on the smoke suite through
`python -m lec.evaluate` (tiny base model) and replays every request HELM sent (scenario_state.json: each subject's
fixed in-context examples before every instance, the canonical perturbations, MMLU's 1 token + top-5, GSM's stop at a
blank line). Servers, all real processes on 127.0.0.1, same model, same greedy decoding:
- lec: `python -m lec.serve` (continuous batching + the prefix cache), and again with `serve.prefix_cache_mb=0`;
- baseline: the challenge sample's approach (llama-recipes `main.py`): one HF `model.generate(output_scores=True)`
  per request behind a lock, logprobs from the scores.
The client mimics `helm-run -n 8`: 8 threads. Rounds alternate between the servers; medians are reported, with the
prefix cache's hit rate and lec's requests/s through `/v1/completions` against `/process` on the same load.

    .venv/bin/python benchmarks/server_throughput.py [--requests 240] [--threads 8] [--rounds 3]
    .venv/bin/python benchmarks/server_throughput.py --gpu-1b      # on a CUDA machine: a 1B-param Llama shape
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
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


def recorded_helm_requests(tmp: Path) -> list[dict]:
    """Every request the real helm-run sent on the smoke suite (lec.evaluate on the tiny base), as HELM recorded it."""
    cmd = [sys.executable, "-m", "lec.evaluate", f"outputs_dir={tmp}", f"hydra.run.dir={tmp}/helm_log",
           "eval.eval_base=false"]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = []
    for state in sorted((tmp / "helm_log" / "helm" / "runs" / "smoke").glob("*/scenario_state.json")):
        out += [s["request"] for s in json.loads(state.read_text())["request_states"]]
    return out


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


def process_body(req: dict) -> dict:
    """What HELM's HTTPModelClient posts for a recorded request (stanford-crfm/helm v0.5.16
    src/helm/clients/http_model_client.py)."""
    return {"prompt": req["prompt"], "temperature": req["temperature"] or 1e-7,
            "num_return_sequences": req["num_completions"], "max_new_tokens": req["max_tokens"], "top_p": req["top_p"],
            "echo_prompt": req["echo_prompt"], "top_k_per_token": req["top_k_per_token"],
            "stop_sequences": req["stop_sequences"]}  # fmt: skip


def openai_body(req: dict) -> dict:
    """The same request through the OpenAI API: the same prompt, limits, stops and alternatives per token."""
    return {"model": "lec", "prompt": req["prompt"], "max_tokens": req["max_tokens"], "temperature": req["temperature"],
            "top_p": req["top_p"], "stop": req["stop_sequences"] or None, "logprobs": req["top_k_per_token"],
            "echo": req["echo_prompt"]}  # fmt: skip


def load(url: str, reqs: list[dict], threads: int, path: str = "/process") -> float:
    body = process_body if path == "/process" else openai_body
    requests.post(url + path, json=body(reqs[0]), timeout=600).raise_for_status()  # warm-up
    start = time.perf_counter()
    with cf.ThreadPoolExecutor(threads) as pool:
        for r in pool.map(lambda q: requests.post(url + path, json=body(q), timeout=600), reqs):
            r.raise_for_status()
    return len(reqs) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=240, help="the first N of HELM's recorded requests, shuffled")
    ap.add_argument("--threads", type=int, default=8)
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
    reqs = recorded_helm_requests(tmp)
    random.Random(0).shuffle(reqs)  # HELM's threads interleave the runs' requests
    reqs = reqs[: args.requests]

    import yaml

    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(config.to_container(cfg)))
    lec = lambda extra: lambda port: [sys.executable, "-m", "lec.serve", "--params", str(params), "--base", str(base),
                                      f"serve.port={port}", f"serve.max_batch_size={args.threads}", *extra]  # noqa: E731
    commands = {
        "lec": lec([]),
        "lec_no_prefix_cache": lec(["serve.prefix_cache_mb=0"]),
        "naive": lambda port: [sys.executable, __file__, "--naive", str(base), str(port), device],
    }  # fmt: skip
    # Each measurement gets a freshly started server (a cold prefix cache, as a new helm-run meets it: the shared
    # prefixes are found within the load, never left over from the round before); rounds alternate between servers,
    # so a noisy neighbour hits all alike. Start-up is not timed.
    runs_of = {"lec": ("lec", "/process"), "lec_openai": ("lec", "/v1/completions"),
               "lec_no_prefix_cache": ("lec_no_prefix_cache", "/process"), "naive": ("naive", "/process")}
    results = {name: [] for name in runs_of}
    hits = []
    for _ in range(args.rounds):
        for name, (server, path) in runs_of.items():
            port = free_port()
            proc = subprocess.Popen(commands[server](port), cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)  # fmt: skip
            try:
                url = f"http://127.0.0.1:{port}"
                wait(url, proc)
                results[name].append(load(url, reqs, args.threads, path))
                if name == "lec":
                    hits.append(requests.get(url + "/health", timeout=10).json()["prefix_cache"]["hit_rate"])
            finally:
                proc.terminate()
                proc.wait()
    hit = {"hit_rate": statistics.median(hits)}
    med = {name: statistics.median(v) for name, v in results.items()}
    kinds = {}
    for r in reqs:
        kinds[r["max_tokens"] == 1] = kinds.get(r["max_tokens"] == 1, 0) + 1
    print(f"model: {'1B-shape Llama on CUDA' if args.gpu_1b else 'tiny (0.36M) on CPU'}; {len(reqs)} requests "
          f"recorded from helm-run on the smoke suite ({kinds.get(True, 0)} answer in 1 token, {kinds.get(False, 0)} "
          f"generate), {args.threads} client threads, {args.rounds} alternating rounds")  # fmt: skip
    runs = lambda name: ", ".join(f"{x:.1f}" for x in results[name])  # noqa: E731
    print(f"naive one-at-a-time HF generate server: {med['naive']:.2f} req/s (median of {runs('naive')})")
    print(f"lec, prefix cache off:                  {med['lec_no_prefix_cache']:.2f} req/s "
          f"(median of {runs('lec_no_prefix_cache')})")
    print(f"lec (batching + prefix cache):          {med['lec']:.2f} req/s (median of {runs('lec')}); prefix cache "
          f"hit rate {hit['hit_rate']:.1%} of prompt tokens")
    print(f"lec through /v1/completions:            {med['lec_openai']:.2f} req/s (median of {runs('lec_openai')})")
    print(f"ratio lec / naive: {med['lec'] / med['naive']:.2f}× (goal ≥ 6×); with the cache off: "
          f"{med['lec_no_prefix_cache'] / med['naive']:.2f}×; cache on / off: "
          f"{med['lec'] / med['lec_no_prefix_cache']:.2f}×")
    print(f"ratio /v1/completions / /process: {med['lec_openai'] / med['lec']:.2f} (goal ≥ 0.90)")


if __name__ == "__main__":
    main()
