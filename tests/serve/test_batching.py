"""Dynamic batching: concurrent requests share padded batches, with results identical to one-at-a-time greedy."""

from __future__ import annotations

import concurrent.futures as cf

import pytest
from fastapi.testclient import TestClient

from lec.serve.api import ProcessRequest
from lec.serve.app import create_app

PROMPTS = [
    "Q: Tom has 3 pens.\nA:",
    "The following are multiple choice questions (with answers) about number order.\n\nQuestion: Which is largest?",
    "Hi",
    "Q: There are 6 cookies on a table and 2 cookies in a box. How many cookies are there in all?\nA:",
    "A. 12\nB. 40\nC. 77\nD. 93\nAnswer:",
]


def _req(prompt: str, **kw) -> ProcessRequest:
    return ProcessRequest(prompt=prompt, temperature=0, max_new_tokens=kw.pop("max_new_tokens", 12), **kw)


def test_batched_greedy_equals_unbatched(engine):
    alone = [engine.process(_req(p, top_k_per_token=3)) for p in PROMPTS]
    together = engine.process_batch([_req(p, top_k_per_token=3) for p in PROMPTS])
    for a, b in zip(alone, together):
        assert a["text"] == b["text"]
        assert [t["text"] for t in a["tokens"]] == [t["text"] for t in b["tokens"]]
        assert [t["logprob"] for t in a["tokens"]] == pytest.approx([t["logprob"] for t in b["tokens"]], abs=1e-4)


def test_rows_keep_their_own_settings(engine):
    reqs = [_req(PROMPTS[0], max_new_tokens=3), _req(PROMPTS[3], max_new_tokens=0, echo_prompt=True),
            _req(PROMPTS[4], max_new_tokens=20, stop_sequences=[" "])]  # fmt: skip
    short, echo, stopped = engine.process_batch(reqs)
    assert len(short["tokens"]) <= 3
    assert echo["text"] == PROMPTS[3] and len(echo["tokens"]) == len(engine.tokenize(PROMPTS[3])) - 1
    assert " " not in stopped["text"]
    assert echo == engine.process(reqs[1]) | {"request_time": echo["request_time"]}


def test_concurrent_http_requests_are_batched_without_cross_talk(engine):
    client = TestClient(create_app(engine, max_batch_size=8, batch_wait_ms=50))
    want = {p: engine.process(_req(p))["text"] for p in PROMPTS}
    body = lambda p: {"prompt": p, "temperature": 1e-7, "max_new_tokens": 12}  # noqa: E731
    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: (p, client.post("/process", json=body(p)).json()), PROMPTS * 4))
    assert all(r["text"] == want[p] for p, r in results)
    health = client.get("/health").json()
    assert health["mean_batch_size"] > 1  # they really shared batches


def test_a_bad_request_does_not_fail_its_batch_neighbours(engine):
    client = TestClient(create_app(engine, max_batch_size=8, batch_wait_ms=50))
    bodies = [{"prompt": "x " * (engine.context + 5)}, {"prompt": PROMPTS[0], "temperature": 0}] * 3
    with cf.ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda b: client.post("/process", json=b).status_code, bodies))
    assert codes == [422, 200] * 3
