"""The challenge API over the real FastAPI app and engine (tiny model): HELM's requests, the rules, bad input."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from lec.serve.api import ProcessRequest, ProcessResponse
from lec.serve.app import create_app


@pytest.fixture(scope="module")
def client(engine):
    return TestClient(create_app(engine))


HELM_MC = {  # what HELM's HTTPModelClient sends for a multiple_choice_joint request
    "prompt": "Question: Which number is the largest?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:",
    "temperature": 1e-7,
    "num_return_sequences": 1,
    "max_new_tokens": 5,
    "top_p": 1,
    "echo_prompt": False,
    "top_k_per_token": 5,
    "stop_sequences": ["\n"],
}


def test_process_answers_what_helm_sends_and_parses(client):
    r = client.post("/process", json=HELM_MC)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"text", "tokens", "logprob", "request_time"}
    assert ProcessResponse.model_validate(body).model_dump() == body  # the server writes the dict unvalidated
    assert all(set(t) == {"text", "logprob", "top_logprob"} for t in body["tokens"])
    assert all(1 <= len(t["top_logprob"]) <= 5 for t in body["tokens"])  # ids that decode alike share a key
    assert body["logprob"] == pytest.approx(sum(t["logprob"] for t in body["tokens"]))
    assert "\n" not in body["text"]


def test_greedy_is_deterministic(client):
    a, b = (client.post("/process", json=dict(HELM_MC, max_new_tokens=20, stop_sequences=[])).json() for _ in range(2))
    assert a["text"] == b["text"] and a["logprob"] == b["logprob"]


def test_greedy_matches_a_direct_argmax_decode(engine, client):
    prompt = "Q: Tom has 3 pens.\nA:"
    body = client.post("/process", json={"prompt": prompt, "temperature": 0, "max_new_tokens": 8}).json()
    ids = engine.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        for _ in range(8):
            nxt = engine.model(ids).logits[0, -1].argmax()
            if int(nxt) == engine.tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    direct = engine.tokenizer.decode(ids[0], skip_special_tokens=True)[len(prompt):]
    assert body["text"] == direct


def test_stop_sequences_are_applied_server_side(client):
    free = client.post("/process", json=dict(HELM_MC, max_new_tokens=30, stop_sequences=[])).json()["text"]
    assert len(free) > 2
    stop = free[1:3]  # a substring the unconstrained completion really contains
    cut = client.post("/process", json=dict(HELM_MC, max_new_tokens=30, stop_sequences=[stop])).json()
    assert cut["text"] == free[: free.find(stop)]
    assert stop not in cut["text"]


def test_echo_logprobs_align_with_a_direct_forward_pass(engine, client):
    prompt = "The answer is 42."
    body = client.post("/process", json={"prompt": prompt, "echo_prompt": True, "max_new_tokens": 0,
                                         "temperature": 0}).json()  # fmt: skip
    ids = engine.tokenizer(prompt).input_ids  # BOS + prompt tokens
    with torch.no_grad():
        logp = torch.log_softmax(engine.model(torch.tensor([ids])).logits[0].float(), dim=-1)
    want = [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]  # row t-1 predicts token t
    assert body["text"] == prompt
    assert [t["logprob"] for t in body["tokens"]] == pytest.approx(want, abs=1e-5)
    assert "".join(t["text"] for t in body["tokens"]) == prompt


def test_logprobs_are_untempered(client):
    hot = client.post("/process", json=dict(HELM_MC, temperature=1e-7, stop_sequences=[], max_new_tokens=3)).json()
    # the tempered distribution would give the chosen token logprob ≈ 0; the real one is below it
    assert all(t["logprob"] < -1e-3 for t in hot["tokens"])
    assert all(t["logprob"] == pytest.approx(max(t["top_logprob"].values())) for t in hot["tokens"])


def test_sampling_with_a_seed_is_reproducible(client):
    req = {"prompt": "Q:", "temperature": 1.0, "top_p": 0.9, "top_k": 50, "seed": 7, "max_new_tokens": 12}
    assert client.post("/process", json=req).json()["text"] == client.post("/process", json=req).json()["text"]


def test_tokenize_honours_truncation_and_decode_inverts_it(client):
    text = "Q: There are 6 cookies on a table and 2 cookies in a box."
    full = client.post("/tokenize", json={"text": text, "truncation": False}).json()["tokens"]
    cut = client.post("/tokenize", json={"text": text, "truncation": True, "max_length": 5}).json()["tokens"]
    assert len(full) > 5 and cut == full[:5]
    assert client.post("/decode", json={"tokens": full}).json()["text"] == text


@pytest.mark.parametrize(
    "body,field",
    [
        ({"max_new_tokens": 5}, "prompt"),
        ({"prompt": "x", "max_new_tokens": -1}, "max_new_tokens"),
        ({"prompt": "x", "max_new_tokens": 10**9}, "max_new_tokens"),
        ({"prompt": "x", "temperature": -1}, "temperature"),
        ({"prompt": "x", "top_p": 0}, "top_p"),
        ({"prompt": 3}, "prompt"),
    ],
)
def test_bad_requests_get_422_with_a_message(client, body, field):
    r = client.post("/process", json=body)
    assert r.status_code == 422
    _standard_422(r.json(), field)


def _standard_422(body: dict, field: str) -> str:
    """FastAPI's HTTPValidationError: detail is a list of {loc, msg, type}; returns the messages."""
    assert set(body) == {"detail"} and isinstance(body["detail"], list) and body["detail"]
    for e in body["detail"]:
        assert {"loc", "msg", "type"} <= set(e) and isinstance(e["loc"], list) and isinstance(e["msg"], str)
    assert any(field in e["loc"] for e in body["detail"]), body
    return " ".join(e["msg"] for e in body["detail"])


def test_malformed_json_and_overlong_prompt_are_4xx(client, engine):
    r = client.post("/process", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = client.post("/process", json={"prompt": "word " * (engine.context + 10)})
    assert r.status_code == 422 and "context" in _standard_422(r.json(), "prompt")
    r = client.post("/process", json={"prompt": "x", "max_new_tokens": engine.max_new_tokens_limit + 1})
    assert r.status_code == 422 and "limit" in _standard_422(r.json(), "max_new_tokens")
    r = client.post("/decode", json={"tokens": [5, 10**9]})
    assert r.status_code == 422 and "outside the vocabulary" in _standard_422(r.json(), "tokens")
    assert r.json()["detail"][0]["loc"] == ["body", "tokens", 1]
    assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("path, field", [("/process", "prompt"), ("/tokenize", "text")])
def test_a_lone_surrogate_is_422_not_500(client, path, field):
    raw = ('{"%s": "a\\ud800b"}' % field).encode()  # valid JSON, no valid Unicode
    r = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "surrogate" in _standard_422(r.json(), field)
    r = client.post("/process", content=b'{"prompt": "x", "stop_sequences": ["\\udc00"]}',
                    headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 422 and "surrogate" in _standard_422(r.json(), "stop_sequences")


@pytest.mark.parametrize("key", ["num_samples", "num_return_sequences"])
def test_more_than_one_completion_is_refused_not_ignored(client, key):
    r = client.post("/process", json={"prompt": "x", key: 4, "max_new_tokens": 1})
    assert r.status_code == 422 and "one completion per request" in _standard_422(r.json(), key)
    assert client.post("/process", json={"prompt": "x", key: 1, "max_new_tokens": 1}).status_code == 200


def test_a_body_over_the_limit_is_413_before_it_is_read(engine):
    client = TestClient(create_app(engine, max_request_bytes=64 * 1024))
    big = {"prompt": "x" * 100_000}
    r = client.post("/process", json=big)
    assert r.status_code == 413 and "serve.max_request_bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit counts what arrives
        for _ in range(20):
            yield b" " * 8192

    r = client.post("/process", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.post("/process", json={"prompt": "x", "max_new_tokens": 1}).status_code == 200  # under it: served
    ok = client.post("/process", content=iter([b'{"prompt": "x", ', b'"max_new_tokens": 1}']),
                     headers={"content-type": "application/json"})  # fmt: skip
    assert ok.status_code == 200, ok.text  # a chunked body under the limit reaches the app whole


def test_a_prompt_too_long_for_any_context_is_refused_without_tokenizing(engine):
    import time

    start = time.perf_counter()
    with pytest.raises(Exception, match="more than the model's context"):
        engine.check(ProcessRequest(prompt="word " * 2_000_000))  # 10 MB: tokenizing it takes seconds
    assert time.perf_counter() - start < 0.5


def test_an_api_key_guards_every_endpoint_but_health(engine):
    key = "k" * 24
    client = TestClient(create_app(engine, api_key=key))
    body = {"prompt": "x", "max_new_tokens": 1}
    assert client.get("/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong-key-wrong-key"}, {"Authorization": key}):
        for path, payload in (("/process", body), ("/tokenize", {"text": "x"}), ("/decode", {"tokens": [1]})):
            r = client.post(path, json=payload, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, headers)
    assert client.post("/process", json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_prompt_format_wraps_and_cleans(engine):
    from lec.serve.engine import Engine, PromptFormat

    birbal = PromptFormat("### Input:\n{prompt}\n\n### Response:\n", if_blank_lines_below=2, cut_at="\n\n",
                          strip_prefixes=("the answer is",))  # fmt: skip
    assert birbal.wrap("Q: 2+2?") == "### Input:\nQ: 2+2?\n\n### Response:\n"
    few_shot = "Q: a\nA: b\n\nQ: c\nA: d\n\nQ: e\nA:"
    assert birbal.wrap(few_shot) == few_shot  # already has ≥ 2 blank lines: sent as is
    assert birbal.clean(" The answer is 4\n\nQuestion: next") == " 4"
    assert PromptFormat().wrap("x") == "x" and PromptFormat().clean("a\n\nb") == "a\n\nb"

    wrapped = Engine(engine.model, engine.tokenizer, engine.context, prompt_format=birbal)
    plain = ProcessRequest(prompt="### Input:\nQ: 2+2?\n\n### Response:\n", temperature=0, max_new_tokens=16)
    want = birbal.clean(engine.process(plain)["text"])
    got = wrapped.process(ProcessRequest(prompt="Q: 2+2?", temperature=0, max_new_tokens=16))
    assert got["text"] == want and "\n\n" not in got["text"]


def test_concurrent_truncating_tokenize_does_not_leak_into_process(engine):
    """HF fast tokenizers keep truncation as shared state; HELM tokenizes with truncation while other threads
    process full prompts."""
    import concurrent.futures as cf

    text = "Q: There are 6 cookies on a table and 2 cookies in a box. How many cookies are there in all?"
    full = engine.tokenize(text, truncation=False)

    def work(i):
        return engine.tokenize(text, True, 3) if i % 2 else engine.tokenize(text, truncation=False)

    with cf.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(2000)))
    assert all(r == (full[:3] if i % 2 else full) for i, r in enumerate(results))


def test_serving_uses_the_training_template(default_plan, tiny_dir):
    from lec import config, plan
    from lec.serve.load import load_engine

    p = plan.build(config.compose(["data=dolly"]))
    eng = load_engine(p.serve, p.model, base=str(tiny_dir))
    assert eng.format.wrap("Say hi").endswith("### Instruction:\nSay hi\n\n### Response:\n")
    raw = load_engine(default_plan.serve, default_plan.model, base=str(tiny_dir))
    assert raw.format.wrap("Say hi") == "Say hi"  # raw template


@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_a_prompt_helm_fitted_to_the_reported_context_still_fits_once_wrapped(tiny_dir, template):
    """prod_env's max_sequence_length = context - wrapper_tokens (from /health): the longest prompt HELM would send
    for a 1-token answer is accepted after the server wraps it."""
    from lec import config, plan
    from lec.serve.load import load_engine

    p = plan.build(config.compose([f"data.template={template}", "serve.max_seq_len=256"]))
    eng = load_engine(p.serve, p.model, base=str(tiny_dir))
    assert eng.context == 256  # the served context is serve.max_seq_len
    health = TestClient(create_app(eng)).get("/health").json()
    room = eng.context - eng.wrapper_tokens - 1  # HELM leaves max_tokens=1 of its context for the answer
    assert health["wrapper_tokens"] == eng.wrapper_tokens > 5 and room > 100
    prompt = eng.decode(eng.tokenize("12 40 77 93 " * 40, specials=False)[:room])
    assert len(eng.tokenize(prompt, specials=False)) <= room
    ids, max_new = eng.check(ProcessRequest(prompt=prompt, max_new_tokens=1))
    assert len(ids) + max_new <= eng.context and max_new == 1


def test_raw_serving_reserves_nothing(engine):
    assert engine.wrapper_tokens == 0
