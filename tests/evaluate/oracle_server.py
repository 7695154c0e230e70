"""A test server that answers lec's synthetic smoke items by computing them (oracle) or answers every one wrong.

    python tests/evaluate/oracle_server.py --mode oracle|wrong --port N

It speaks the challenge API (/process, /tokenize, /decode) with a character tokenizer, so real `helm-run` can
evaluate it: an oracle must score EM = 1.0 and a wrong server 0.0, or lec's HELM wiring is broken.
"""

from __future__ import annotations

import argparse
import re

import uvicorn
from fastapi import FastAPI

RANKS = {"second smallest": 1, "second largest": 2, "smallest": 0, "largest": 3}


def answer_mc(prompt: str, wrong: bool) -> str:
    last = prompt.rsplit("Question: ", 1)[-1]
    question, *lines = last.split("\n")
    options = [int(line[3:]) for line in lines if re.match(r"^[ABCD]\. ", line)]
    rank = next(RANKS[r] for r in RANKS if f"the {r}" in question)  # "second …" is matched before "smallest"
    index = sorted(range(4), key=lambda i: options[i])[rank]
    return " " + "ABCD"[(index + 1) % 4 if wrong else index]


def answer_gsm(prompt: str, wrong: bool) -> str:
    question = prompt.rsplit("Q: ", 1)[-1].split("\n")[0]
    a, b = (int(x) for x in re.findall(r"\d+", question)[:2])
    c = a - b if "gave" in question else a + b
    return f" The answer is {c + 1 if wrong else c}."


def create(mode: str) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/process")
    def process(body: dict):
        prompt, wrong = body["prompt"], mode == "wrong"
        text = answer_mc(prompt, wrong) if "Question: " in prompt else answer_gsm(prompt, wrong)
        tokens = [{"text": ch, "logprob": 0.0, "top_logprob": {ch: 0.0}} for ch in text]
        return {"text": text, "tokens": tokens, "logprob": 0.0, "request_time": 0.0}

    @app.post("/tokenize")
    def tokenize(body: dict):
        ids = [ord(c) for c in body["text"]]
        if body.get("truncation", True):
            ids = ids[: body.get("max_length", 2048)]
        return {"tokens": ids, "request_time": 0.0}

    @app.post("/decode")
    def decode(body: dict):
        return {"text": "".join(chr(t) for t in body["tokens"]), "request_time": 0.0}

    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("oracle", "wrong"), required=True)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    uvicorn.run(create(args.mode), host="127.0.0.1", port=args.port, log_level="warning")
