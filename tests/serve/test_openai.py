"""The OpenAI API on the lec server, driven by the official `openai` client over a real uvicorn socket: the same
model and batcher as `/process`, the numbers lm-evaluation-harness reads, and refusals in the API's error shape."""

from __future__ import annotations


import openai
import pytest
import requests
import torch

from lec.serve.app import create_app
from tests.conftest import uvicorn_thread

NAME = "tiny"
KEY = "sk-test-key"


@pytest.fixture(scope="module")
def server(engine):
    with uvicorn_thread(create_app(engine, name=NAME, max_batch_size=8, batch_wait_ms=2, api_key=KEY)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def _process(server: str, **body) -> dict:
    r = requests.post(f"{server}/process", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [NAME]
    assert client.models.retrieve(NAME).id == NAME


def test_greedy_completion_is_what_process_answers(client, server):
    prompt = "Question: What is 2 + 3?\nAnswer:"
    out = client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0)
    ref = _process(server, prompt=prompt, max_new_tokens=12, temperature=0)
    assert out.choices[0].text == ref["text"]
    assert out.usage.completion_tokens == len(ref["tokens"]) and out.usage.prompt_tokens > 0
    assert out.choices[0].finish_reason in ("stop", "length") and out.object == "text_completion"


def test_a_list_of_prompts_times_n_with_a_seed_is_reproducible(client):
    args = dict(model=NAME, prompt=["The cat", "A dog"], max_tokens=6, temperature=1.0, n=2, seed=7)
    a, b = client.completions.create(**args), client.completions.create(**args)
    assert [c.index for c in a.choices] == [0, 1, 2, 3]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # seeded: the same completions again
    other = client.completions.create(**dict(args, seed=8))
    assert [c.text for c in other.choices] != [c.text for c in a.choices]


def test_echo_logprobs_max_tokens_0_is_the_prompt_s_loglikelihood(client, engine):
    """What lm-eval's loglikelihood requests send: the prompt's tokens come back with their logprobs, the first one
    without (nothing precedes it), and they are the model's own log-softmax."""
    ids = engine.tokenize("Answer: B. Paris is the capital of France", specials=False)
    out = client.completions.create(model=NAME, prompt=ids, max_tokens=0, echo=True, logprobs=1, temperature=0)
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(ids) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    with torch.no_grad():
        logits = engine.model(torch.tensor([ids])).logits[0].float()
    want = torch.log_softmax(logits[:-1], -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    assert lp.token_logprobs[1:] == pytest.approx(want.tolist(), abs=1e-4)
    greedy = [max(top.values()) for top in lp.top_logprobs[1:]]  # lm-eval's is_greedy reads top_logprobs so
    assert greedy == pytest.approx(torch.log_softmax(logits[:-1], -1).max(-1).values.tolist(), abs=1e-4)
    assert lp.text_offset == sorted(lp.text_offset) and out.choices[0].text == engine.decode(ids)


def test_echo_with_a_generated_token_keeps_the_prompt_first(client):
    """lm-eval sends max_tokens=1 with echo and drops the last token: prompt tokens, then the new one."""
    out = client.completions.create(model=NAME, prompt="The capital of France is", max_tokens=1, echo=True,
                                    logprobs=3, temperature=0)  # fmt: skip
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == out.usage.prompt_tokens + 1  # one new token, the end-of-sequence one included
    assert out.choices[0].text.startswith("The capital of France is")
    assert all(len(t) <= 3 for t in lp.top_logprobs[1:]) and lp.token_logprobs[-1] is not None


def test_stop_sequences_cut_and_say_stop(client, server):
    prompt = "Q: count\nA: 1, 2, 3"
    full = client.completions.create(model=NAME, prompt=prompt, max_tokens=16, temperature=0).choices[0].text
    if len(full) < 3:
        pytest.skip("the tiny model stopped at once")
    stop = full[1:3]
    cut = client.completions.create(model=NAME, prompt=prompt, max_tokens=16, temperature=0, stop=stop).choices[0]
    assert cut.text == full[: full.index(stop)] and cut.finish_reason == "stop"
    assert _process(server, prompt=prompt, max_new_tokens=16, temperature=0, stop_sequences=[stop])["text"] == cut.text


def test_chat_uses_the_model_s_chat_template(client, engine):
    messages = [{"role": "user", "content": "Name a colour."}]
    out = client.chat.completions.create(model=NAME, messages=messages, max_tokens=8, temperature=0, logprobs=True,
                                         top_logprobs=2)  # fmt: skip
    ids = engine.tokenize(engine.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                          specials=False)  # fmt: skip
    with torch.no_grad():
        gen = ids[:]
        for _ in range(8):
            nxt = int(engine.model(torch.tensor([gen])).logits[0, -1].argmax())
            if nxt == engine.tokenizer.eos_token_id:
                break
            gen.append(nxt)
    choice = out.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == engine.decode(gen[len(ids):])
    assert out.usage.prompt_tokens == len(ids)
    assert all(len(t.top_logprobs) <= 2 for t in choice.logprobs.content)


@pytest.mark.parametrize("args, param", [
    (dict(stream=True), "stream"),
    (dict(presence_penalty=0.5), "presence_penalty"),
    (dict(logit_bias={"1": 5}), None),
    (dict(best_of=3), None),
    (dict(extra_body={"top_k": 5}), "top_k"),  # not an OpenAI field: refused, never ignored
    (dict(temperature=3.0), "temperature"),
    (dict(prompt=[]), "prompt"),
    (dict(prompt=[[10**9]]), "prompt"),  # a token id outside the vocabulary
])  # fmt: skip
def test_what_lec_cannot_do_is_refused_in_the_api_s_shape(client, server, args, param):
    body = {"model": NAME, "prompt": "Hi", "max_tokens": 2, **args}
    extra = body.pop("extra_body", {})
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(**body, extra_body=extra)
    error = err.value.body
    assert err.value.status_code == 400 and error["message"] and error["type"] == "invalid_request_error"
    assert param is None or (error["param"] or "").startswith(param)


def test_another_model_s_name_is_404_and_a_wrong_key_401(client, server):
    with pytest.raises(openai.NotFoundError, match="serves the model 'tiny'"):
        client.completions.create(model="gpt-4", prompt="Hi", max_tokens=1)
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_chat_refuses_two_names_for_one_limit(client):
    with pytest.raises(openai.BadRequestError, match="one limit"):
        client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "x"}], max_tokens=2,
                                       max_completion_tokens=3)  # fmt: skip


def test_a_completion_ended_by_eos_lists_the_eos_token():
    """lm-eval scores `echo` + `max_tokens: 1` by dropping the last token: it must be the new one, EOS included."""
    from lec.serve.engine import Row, Step
    from lec.serve.openai_api import _with_eos

    row = Row(req=None, prompt_ids=[1, 2], max_new=1, start=0.0)
    row.eos = Step(2, -0.1, {"": -0.1})
    assert _with_eos(row, []) == [row.eos]  # the model stopped at once: the EOS is the one new token
    row.steps = [Step(5, -1.0, {})]
    assert _with_eos(row, []) == []  # a stop sequence cut the answer: what followed is not listed


def test_chat_without_a_limit_stops_at_the_server_s_limit(engine):
    from fastapi.testclient import TestClient

    from lec.serve.engine import Engine

    capped = Engine(engine.model, engine.tokenizer, engine.context, max_new_tokens_limit=3,
                    prompt_format=engine.format)  # fmt: skip
    body = {"model": "lec", "messages": [{"role": "user", "content": "Count to fifty."}], "temperature": 0}
    out = TestClient(create_app(capped)).post("/v1/chat/completions", json=body).json()
    assert out["usage"]["completion_tokens"] <= 3 + 1  # + the end-of-sequence token, when it ended there
