"""The prefix cache: prompts that share their in-context examples prefill only what follows them, and every answer
stays what uncached greedy decoding gives — alone, batched, mixed with echo requests, under eviction."""

from __future__ import annotations

import pytest

from lec.serve.api import ProcessRequest
from lec.serve.engine import Engine
from lec.serve.prefix import BLOCK, PrefixCache

SHOTS = "".join(f"Question: Which number is the largest?\nA. {a}\nB. {a + 1}\nC. {a + 5}\nD. {a + 2}\nAnswer: C\n\n"
                for a in (3, 11, 20, 34, 41))  # HELM's layout: the same 5 examples before every instance


def _req(i: int, **kw) -> ProcessRequest:
    prompt = SHOTS + f"Question: Which number is the smallest?\nA. {i + 7}\nB. {i}\nC. {i + 9}\nD. {i + 3}\nAnswer:"
    return ProcessRequest(prompt=prompt, temperature=0, max_new_tokens=kw.pop("max_new_tokens", 6),
                          top_k_per_token=5, **kw)  # fmt: skip


@pytest.fixture
def engines(engine):
    """The session's engine without a prefix cache, and one like it with a cache of `mb` MiB."""
    def make(mb: float) -> Engine:
        return Engine(engine.model, engine.tokenizer, engine.context, engine.max_new_tokens_limit, engine.format,
                      prefix_cache_bytes=int(mb * 2**20))  # fmt: skip
    return make


def _answers(e: Engine, reqs):
    return [(r["text"], [round(t["logprob"], 4) for t in r["tokens"]]) for r in e.process_batch(reqs)]


def test_shared_examples_are_prefilled_once_and_answers_do_not_change(engine, engines):
    cached = engines(64)
    reference = [_answers(engine, [_req(i)])[0] for i in range(6)]
    got = [_answers(cached, [_req(i)])[0] for i in range(6)]  # one at a time: the 2nd on reads the examples
    assert got == reference
    stats = cached.prefix.stats()
    shared_blocks = len(engine.tokenize(SHOTS)) // BLOCK
    assert stats["cached_tokens"] >= 5 * (shared_blocks - 1) * BLOCK and stats["hit_rate"] > 0.5


def test_a_batch_of_rows_with_different_cached_lengths_decodes_as_each_would_alone(engine, engines):
    cached = engines(64)
    _answers(cached, [_req(0)])  # the examples are cached now
    reqs = [_req(1), ProcessRequest(prompt="Q: 2 + 2 =", temperature=0, max_new_tokens=5), _req(2),
            _req(3, max_new_tokens=0, echo_prompt=True)]  # fmt: skip
    assert _answers(cached, reqs) == [_answers(engine, [r])[0] for r in reqs]


def test_eviction_keeps_the_bound_and_the_answers(engine, engines):
    tiny = engines(0.02)  # a few blocks at most
    for i in range(4):
        assert _answers(tiny, [_req(i)]) == _answers(engine, [_req(i)])
    assert 0 < tiny.prefix.bytes <= tiny.prefix.max_bytes


def test_hashes_chain_a_block_to_everything_before_it():
    a = PrefixCache.hashes(list(range(3 * BLOCK)))
    b = PrefixCache.hashes([99] + list(range(1, 3 * BLOCK)))
    assert len(a) == 3 and all(x != y for x, y in zip(a, b))  # one token changed: every later block differs
    assert PrefixCache.hashes(list(range(BLOCK - 1))) == []  # no full block
