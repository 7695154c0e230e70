"""Prompt templates, the chat template included, and that serving wraps HELM's prompt exactly as training did."""

from __future__ import annotations

import pytest

from lec import config, plan
from lec.config import Template
from lec.data.mixture import normalise
from lec.data.templates import chat_messages, render
from lec.models import load_tokenizer
from lec.train.packing import IGNORE, encode

ROW = {"instruction": "Which is larger, 12 or 40?", "input": "", "output": "40"}
THREAD = {"text": "### Human: Hi there### Assistant: Hello! How can I help?### Human: Add 2 and 3.### Assistant: 5"}


@pytest.fixture(scope="module")
def tok(default_cfg, tiny_dir):
    return load_tokenizer(default_cfg.model, path=str(tiny_dir))


def test_chat_renders_with_the_tokenizers_own_template(tok):
    prompt, response = render(Template.chat, ROW, tok)
    assert prompt == "<s><|user|>\nWhich is larger, 12 or 40?</s>\n<|assistant|>\n"
    assert response == "40"
    assert prompt == tok.apply_chat_template([{"role": "user", "content": ROW["instruction"]}], tokenize=False,
                                             add_generation_prompt=True)  # fmt: skip


def test_chat_threads_keep_every_turn_and_train_on_the_last_answer(tok):
    assert [m["role"] for m in chat_messages(THREAD)] == ["user", "assistant", "user", "assistant"]
    prompt, response = render(Template.chat, THREAD, tok)
    assert prompt.endswith("<|assistant|>\nHello! How can I help?</s>\n<|user|>\nAdd 2 and 3.</s>\n<|assistant|>\n")
    assert response == "5"
    with pytest.raises(ValueError, match="no '### Assistant:' turn"):
        chat_messages({"text": "### Human: only a question"})


def test_a_tokenizer_without_chat_template_is_a_clear_error(tok):
    bare = tok.__class__.from_pretrained(tok.name_or_path)
    bare.chat_template = None
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template.*alpaca"):
        render(Template.chat, ROW, bare)


def test_chat_training_ids_have_one_bos_and_end_with_eos(tok):
    p = plan.build(config.compose(["data.template=chat"]))
    (row,) = encode([ROW], tok, p.train)
    ids, labels = row["input_ids"], row["labels"]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id  # the template's BOS, not a second
    messages = [{"role": "user", "content": ROW["instruction"]}]
    expected = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids[: len(expected)] == expected
    assert labels[: len(expected)] == [IGNORE] * len(expected)  # the loss covers the answer and its EOS only
    assert ids[-1] == tok.eos_token_id and tok.decode(ids[len(expected) : -1]) == "40"


@pytest.mark.parametrize("template", ["raw", "alpaca", "human_assistant", "guanaco", "chat"])
def test_serving_wraps_helm_prompts_exactly_as_training_rendered_them(tiny_dir, template):
    """The server's token ids for a HELM prompt are the training prompt ids of a row with that instruction."""
    from lec.serve.api import ProcessRequest
    from lec.serve.load import load_engine

    p = plan.build(config.compose([f"data.template={template}"]))
    engine = load_engine(p.serve, p.model, base=str(tiny_dir))
    helm_prompt = "Question: Which is larger?\nA. 12\nB. 40\nAnswer:"
    row = {"text": f"### Human: {helm_prompt}### Assistant: B"} if template == "guanaco" else dict(
        ROW, instruction=helm_prompt, output="B"
    )
    (trained,) = encode([row], engine.tokenizer, p.train)
    served, _ = engine.check(ProcessRequest(prompt=helm_prompt, max_new_tokens=1))
    answer_text = " B" if template == "guanaco" else "B"  # guanaco's answer keeps the space after "Assistant:"
    answer = engine.tokenizer(answer_text, add_special_tokens=False).input_ids + [engine.tokenizer.eos_token_id]
    assert served + answer == trained["input_ids"]


def test_chat_sources_may_be_threads_or_instruction_rows():
    from lec.config import SourceConfig

    thread_src, rows_src = SourceConfig(name="t", fields={"text": "text"}), SourceConfig(name="r")
    assert normalise(THREAD, thread_src, Template.chat) == (THREAD, "")
    assert normalise(ROW, rows_src, Template.chat) == (ROW, "")


def test_threads_without_an_answer_are_bad_rows_not_a_crash():
    from lec.config import SourceConfig

    src = SourceConfig(name="t", fields={"text": "text"})
    for template in (Template.chat, Template.guanaco):
        assert normalise({"text": "### Human: only a question"}, src, template) == (
            None, "thread row has no '### Assistant:' turn to train on")  # fmt: skip
        assert normalise({"text": "preamble ### Human: q### Assistant: a"}, src, template)[0] is None


def test_length_truncation_shortens_a_chat_thread_answer(tok):
    from lec.config import CurationConfig, LengthAction
    from lec.data.filters import Context, run_steps

    cur = CurationConfig()
    for step in ("language", "exact_dedup", "near_dedup", "decontam", "llm_generated"):
        getattr(cur, step).enabled = False
    cur.length.action = LengthAction.truncate
    row = {"text": THREAD["text"][: -1] + "5 " * 200, "source": "t"}
    (kept,), steps = run_steps([dict(row)], cur, Context(Template.chat, tok, 128))
    assert next(s for s in steps if s.step == "length").truncated == 1 and set(kept) == {"text", "source"}
    prompt, response = render(Template.chat, kept, tok)
    assert prompt == render(Template.chat, row, tok)[0] and response.startswith("5 5")
    total = len(tok(prompt, add_special_tokens=False).input_ids) + len(tok(response, add_special_tokens=False).input_ids)
    assert 100 < total + 1 <= 128  # + EOS
