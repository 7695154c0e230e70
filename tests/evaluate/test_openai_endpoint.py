"""`python -m lec.evaluate evaluate.source=endpoint:<url>` against a server that speaks only the OpenAI API (as vLLM
does): lm-eval evaluates it; HELM, which needs the challenge API, is refused in one line before anything runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI

from lec.serve import openai_api
from lec.serve.batcher import Batcher
from tests.conftest import uvicorn_thread

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def openai_only(engine):
    app = FastAPI()  # /v1/* and nothing else: no /process, /tokenize, /health
    openai_api.add_routes(app, engine, Batcher(engine, 8, 2), "external-model", [], {})
    with uvicorn_thread(app) as url:
        yield url


def _evaluate(tmp: Path, url: str, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lec.evaluate", f"outputs_dir={tmp}", f"hydra.run.dir={tmp}/ev",
           f"evaluate.source=endpoint:{url}", *overrides]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_lm_eval_evaluates_an_openai_compatible_server(openai_only, tmp_path):
    out = _evaluate(tmp_path, openai_only, "eval.backends=[lm_eval]", "eval.max_eval_instances=8")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    summary = json.loads((tmp_path / "ev" / "eval_metrics.json").read_text())
    assert set(summary["by_backend"]["lm_eval"]["endpoint"]) == {"lec_mmlu_number_order", "lec_gsm"}
    assert set(summary["by_backend"]) == {"lm_eval"} and summary["scored_by"] == "lm_eval"  # HELM did not run
    assert set(summary["metrics"]["endpoint"]) == {"mmlu", "gsm"}  # what is scored, in the challenge's terms
    score = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert "MMLU - EM" in score["challenge"]["endpoint"]  # scored from lm-eval, in the challenge's terms


def test_helm_on_an_openai_only_server_is_refused_in_one_line(openai_only, tmp_path):
    out = _evaluate(tmp_path, openai_only)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("lec.evaluate: ") and \
        "does not speak the challenge API that helm needs" in out.stderr  # fmt: skip
