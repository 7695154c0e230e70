"""A test server that answers lec's smoke items right (oracle) or wrong, by looking them up in the seeded files.

    python tests/evaluate/oracle_server.py --mode oracle|wrong --port N --data <helm output dir>

It speaks the challenge API (/process, /tokenize, /decode) with a character tokenizer, so real `helm-run` can
evaluate it. It finds the item a prompt asks about by the closest seeded text (HELM's canonical perturbations
lower-case, misspell and rewrite the text, so an exact match would miss), then answers with the file's label: an
oracle must score 1.0 on every scenario and a wrong server 0.0, or lec's HELM wiring is broken.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import re
from pathlib import Path
from typing import Dict, Tuple

import uvicorn
from fastapi import FastAPI

from lec.evaluate.helm_plugin import SAMSUM, SOURCES

# kind → (the input prefix that starts an item in HELM's prompt, {item text: answer})
Table = Dict[str, Tuple[str, Dict[str, str]]]


def load_answers(helm_output: Path) -> Table:
    scenarios = helm_output / "scenarios"
    mmlu = {}
    for path in (scenarios / "mmlu" / "data").glob("*/*.csv"):
        for q, *options, letter in csv.reader(path.open()):
            mmlu[q] = letter
    gsm = {}
    for path in (scenarios / "gsm").glob("gsm_data_*"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            gsm[row["question"]] = row["answer"].rsplit("#### ", 1)[-1].strip()
    table: Table = {"mmlu": ("Question: ", mmlu), "gsm": ("Q: ", gsm)}
    for kind, source in SOURCES.items():
        path = scenarios / kind / "data" / source.file
        if path.exists():
            rows = csv.DictReader(path.open(newline=""), delimiter=source.delimiter)
            items = {text: "AB"[correct] for text, _, correct in map(source.to_example, rows)}
            table.setdefault("scenario", ("Scenario\n", {}))[1].update(items)
    path = scenarios / "sam_sum" / "data" / SAMSUM.file
    if path.exists():
        rows = csv.DictReader(path.open(newline=""), delimiter="\t")
        table["sam_sum"] = ("Article: ", {r["dialogue"]: r["summary"] for r in rows})
    return table


def lookup(table: Table, prompt: str) -> Tuple[str, str]:
    """(kind, answer) of the last item in the prompt (the one being asked; earlier ones are few-shot examples)."""
    kind = max(table, key=lambda k: prompt.rfind(table[k][0]))
    prefix, answers = table[kind]
    asked = prompt[prompt.rfind(prefix) + len(prefix):]
    asked = re.split(r"\n(?:[A-E]\. |Answer:|A:|Summarize the above)", asked)[0].strip()
    best = max(answers, key=lambda t: difflib.SequenceMatcher(None, t.lower(), asked.lower()).ratio())
    return kind, answers[best]


def respond(kind: str, answer: str, wrong: bool) -> str:
    if kind in ("mmlu", "scenario"):
        letters = "ABCD" if kind == "mmlu" else "AB"
        return " " + (letters[(letters.index(answer) + 1) % len(letters)] if wrong else answer)
    if kind == "gsm":
        return f" The answer is {int(answer) + 1 if wrong else answer}."
    return " Nothing happened." if wrong else " " + answer


def create(mode: str, data: Path) -> FastAPI:
    app = FastAPI()
    table = load_answers(data)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/process")
    def process(body: dict):
        text = respond(*lookup(table, body["prompt"]), wrong=mode == "wrong")
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
    ap.add_argument("--data", type=Path, required=True, help="the HELM output dir the smoke files were seeded in")
    args = ap.parse_args()
    uvicorn.run(create(args.mode, args.data), host="127.0.0.1", port=args.port, log_level="warning")
