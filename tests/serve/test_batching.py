"""Continuous batching: concurrent requests share decoding steps, with results identical to one-at-a-time greedy."""

from __future__ import annotations

import concurrent.futures as cf
import time

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


def _solo(engine, req: ProcessRequest) -> list:
    return [(t["text"], round(t["logprob"], 4)) for t in engine.process(req)["tokens"]]


def test_a_request_joining_mid_decode_gets_its_solo_result(engine):
    """Continuous batching: a row prefilled into a running batch (its cache left-padded onto the others') decodes
    exactly what it would alone, and so do the rows already running."""
    long, late = _req(PROMPTS[3], max_new_tokens=30), _req(PROMPTS[1], max_new_tokens=8, top_k_per_token=3)
    rows = [engine.row(long)]
    batch = engine.step(None, rows)
    for _ in range(5):
        batch = engine.step(batch)
    rows.append(engine.row(late))
    batch = engine.step(batch, [rows[1]])
    while batch is not None:
        batch = engine.step(batch)
    for row, req in zip(rows, (long, late)):  # the same tokens; logprobs to float32's noise of another padding
        got, solo = [(t["text"], t["logprob"]) for t in engine.respond(row)["tokens"]], _solo(engine, req)
        assert [text for text, _ in got] == [text for text, _ in solo]
        assert [lp for _, lp in got] == pytest.approx([lp for _, lp in solo], abs=2e-4)


def test_a_finished_row_leaves_and_its_padding_columns_go_with_it(engine):
    """The long prompt's row finishes after one token; the short one's cache then shrinks to its own length."""
    short, long = engine.row(_req(PROMPTS[2], max_new_tokens=6)), engine.row(_req(PROMPTS[3], max_new_tokens=1))
    batch = engine.step(None, [short, long])
    assert long.done and batch.rows == [short]
    # prompt + the first picked token, already fed: no column of the long prompt's padding is left
    assert batch.mask.shape[1] == batch.cache.get_seq_length() == len(short.prompt_ids) + 1
    assert bool(batch.mask.all())
    while batch is not None:
        batch = engine.step(batch)
    assert [(t["text"], round(t["logprob"], 4)) for t in engine.respond(short)["tokens"]] == _solo(
        engine, _req(PROMPTS[2], max_new_tokens=6)
    )


def test_a_short_request_is_answered_while_a_long_one_decodes(engine):
    """The server answers a 1-token request as soon as it is done, not when its batch neighbour finishes."""
    from lec.serve.batcher import Batcher

    batcher = Batcher(engine, max_batch_size=8, wait_ms=0)
    with cf.ThreadPoolExecutor(1) as pool:
        long = pool.submit(batcher.submit, _req(PROMPTS[3], max_new_tokens=400))
        while batcher.steps < 3 and not long.done():  # the long request is decoding
            time.sleep(0.001)
        short = batcher.submit(_req(PROMPTS[1], max_new_tokens=1))
        assert not long.done()
        assert len(short["tokens"]) == 1
        assert len(long.result()["tokens"]) > 1


def test_a_failing_step_fails_the_requests_in_flight_and_the_server_goes_on(engine):
    from lec.serve.batcher import Batcher
    from lec.serve.engine import Engine

    eng = Engine(engine.model, engine.tokenizer, context=engine.context)
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # the 3rd forward pass fails, as a CUDA OOM would
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("CUDA out of memory (simulated)")
        return engine.model(*args, **kwargs)

    eng.model = flaky
    batcher = Batcher(eng, max_batch_size=8, wait_ms=0)
    with pytest.raises(RuntimeError, match="simulated"):
        batcher.submit(_req(PROMPTS[3], max_new_tokens=30))
    after = batcher.submit(_req(PROMPTS[0], max_new_tokens=5))
    assert after["text"] == engine.process(_req(PROMPTS[0], max_new_tokens=5))["text"]
