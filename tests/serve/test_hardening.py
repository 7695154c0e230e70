"""The server under a real uvicorn (real sockets, real disconnects) and fuzzed against its own OpenAPI schema."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from lec.serve.app import create_app
from tests.conftest import uvicorn_thread
from tests.proc_helpers import wait_healthy
from lec.serve.process import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(engine):
    """The app on a real port in this process (a thread), with the tiny model."""
    app = create_app(engine, max_batch_size=8, batch_wait_ms=5, max_request_bytes=8 * 2**20)
    with uvicorn_thread(app) as url:
        yield url, app


def _health(url: str) -> dict:
    return requests.get(f"{url}/health", timeout=5).json()


def test_clients_that_give_up_leave_the_batch_and_free_their_slots(server):
    """Eight clients ask for 1900 greedy tokens (the random tiny model never says EOS on these) and hang up after
    0.3 s; their rows must leave at the next step, so a 1-token request is answered at once."""
    url, _ = server
    before = _health(url)["cancelled"]

    def abandon(i: int) -> None:
        with pytest.raises(requests.Timeout):
            requests.post(f"{url}/process", json={"prompt": "Count: 1 2 3", "temperature": 0, "max_new_tokens": 1900},
                          timeout=(5, 0.3))  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(abandon, range(8)))
    deadline = time.monotonic() + 5
    while (_health(url)["running"] or _health(url)["cancelled"] < before + 8) and time.monotonic() < deadline:
        time.sleep(0.05)
    health = _health(url)
    assert health["running"] == 0 and health["cancelled"] == before + 8, health
    start = time.perf_counter()
    r = requests.post(f"{url}/process", json={"prompt": "x", "max_new_tokens": 1, "temperature": 0}, timeout=30)
    assert r.status_code == 200 and time.perf_counter() - start < 2.0


def test_a_long_tokenize_does_not_hold_up_other_requests(server):
    """A 2 MB /tokenize takes seconds on 2 cores; a short /process sent meanwhile is answered before it ends."""
    url, _ = server
    with ThreadPoolExecutor(1) as pool:
        big = pool.submit(requests.post, f"{url}/tokenize", json={"text": "word " * 400_000, "truncation": False},
                          timeout=120)  # fmt: skip
        time.sleep(0.3)  # it is tokenizing now
        start = time.perf_counter()
        r = requests.post(f"{url}/process", json={"prompt": "x", "max_new_tokens": 1}, timeout=60)
        small = time.perf_counter() - start
        assert r.status_code == 200 and big.result().status_code == 200
    took = big.result().elapsed.total_seconds()
    assert took > 1.0, f"the long request took {took:.2f} s: too short to show anything"
    assert small < took / 2, f"the short request took {small:.2f} s while a {took:.2f} s tokenize ran"


def test_the_server_refuses_a_public_address_without_a_key():
    """`python -m lec.serve serve.host=0.0.0.0` (its main() here; the process: the e2e test below): it exits with
    one line (SystemExit's message, no traceback) before any weights load."""
    from lec.serve.__main__ import main

    with pytest.raises(SystemExit) as exit:
        main(["serve.host=0.0.0.0"])
    assert isinstance(exit.value.code, str) and "set serve.api_key" in exit.value.code
    assert len(exit.value.code.splitlines()) == 1


@pytest.mark.e2e  # 30 generated requests per operation and mode: 15 s each on 2 cores
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_finds_no_5xx_and_no_response_outside_the_schema(engine, mode):
    """Property-based: schemathesis generates requests from the app's own /openapi.json, valid ones (positive) and
    ones that break the schema (negative); every answer must be non-5xx, have a documented status, and match the
    documented body (422s included: FastAPI's HTTPValidationError)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                     status_code_conformance)  # fmt: skip

    app = create_app(engine, max_batch_size=4, batch_wait_ms=1)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    failures, calls = [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        if mode == "negative" and operation.path == "/health":
            continue  # no input to get wrong

        @settings(max_examples=30, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=operation.as_strategy(schemathesis.GenerationMode(mode)))
        def check(case):
            if isinstance(case.body, dict) and isinstance(case.body.get("max_new_tokens"), int):
                case.body["max_new_tokens"] = max(0, min(case.body["max_new_tokens"], 4))  # keep decoding short
            calls.append(case.call_and_validate(checks=checks).status_code)

        try:
            check()
        except Exception as err:  # noqa: BLE001 - every operation's failure, reported together
            failures.append(f"{operation.method.upper()} {operation.path}: {err}")
    assert not failures, "\n\n".join(failures)
    assert len(calls) >= 60 and (422 in calls) and (mode == "negative" or 200 in calls)  # it exercised the server


@pytest.mark.e2e  # a real `python -m lec.serve` process loading the model
def test_the_readme_s_public_server_needs_its_bearer_key(tmp_path):
    """`python -m lec.serve serve.host=0.0.0.0 … serve.api_key=${oc.env:LEC_API_KEY}` as the README runs it."""
    import os
    import signal

    port, key = free_port("0.0.0.0"), "k" * 32
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "lec.serve", "serve.host=0.0.0.0", f"serve.port={port}",
                             "serve.api_key=${oc.env:LEC_API_KEY}", f"outputs_dir={tmp_path}"], cwd=ROOT,
                            env={**os.environ, "LEC_API_KEY": key}, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, 120, "the model server", tmp_path / "serve.log")
        body = {"prompt": "x", "max_new_tokens": 1}
        assert requests.post(f"{url}/process", json=body, timeout=30).status_code == 401
        ok = requests.post(f"{url}/process", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert ok.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert "reachable from other machines" in (tmp_path / "serve.log").read_text()
