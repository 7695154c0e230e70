"""Prompt templates: one function per template, used identically when training and when serving."""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

from lec.config import Template

ALPACA_HEADER = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
ALPACA_HEADER_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)
GUANACO_ASSISTANT = "### Assistant:"
# LLaMA-Factory's `default` template, which Percent-BFD (A100 #1) trained with (final_contenders @ 2a5c98b5,
# A100/Percent-BFD/…/train_qwen.sh --template default; LLaMA-Effcient-Tuning src/llmtuner/extras/template.py)
LLAMA_FACTORY_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def serving_template(template: Template) -> "str | None":
    """The wrapper the server puts around HELM's prompt so the model sees what it was trained on
    ("{prompt}" marks where HELM's text goes); None for raw, which serves prompts unchanged, and for chat, which the
    server renders per request with the tokenizer's chat template (`chat_prompt`)."""
    if template in (Template.raw, Template.plain, Template.chat):
        return None
    if template is Template.guanaco:
        return "### Human: {prompt}" + GUANACO_ASSISTANT
    return render(template, {"instruction": "{prompt}", "input": "", "output": ""})[0]


def adds_special_tokens(template: Template) -> bool:
    """Should the tokenizer add BOS & co. to a rendered prompt? Not for chat: the chat template writes its own
    (tokenizing its text with them again would give Llama/Mistral a second BOS)."""
    return template is not Template.chat


def chat_prompt(tokenizer, messages: List[Dict[str, str]]) -> str:
    """The model's own chat template (tokenizer.apply_chat_template) up to the assistant's turn."""
    if tokenizer is None:
        raise ValueError("data.template=chat renders with the model's tokenizer, and none was given")
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(
            f"data.template=chat needs a tokenizer with a chat template, and {name} has none "
            f"(base models often ship without one): use one of {', '.join(t.value for t in Template if t is not Template.chat)}"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat_messages(row: Dict[str, str]) -> List[Dict[str, str]]:
    """A row as chat messages; the last one is the assistant answer trained on. Threads in the
    "### Human: … ### Assistant: …" layout (OASST1, guanaco) keep every turn."""
    if "text" in row:
        head, *parts = re.split(r"### (Human|Assistant):[ ]?", row["text"])  # head, role, content, role, content, …
        if head.strip():
            raise ValueError("thread text must start with '### Human:'")
        messages = [{"role": "user" if role == "Human" else "assistant", "content": content}
                    for role, content in zip(parts[::2], parts[1::2])]  # fmt: skip
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError("thread row has no '### Assistant:' turn to train on")
        return messages
    return [{"role": "user", "content": _query(row)}, {"role": "assistant", "content": row["output"]}]


def _query(row: Dict[str, str]) -> str:
    return row["instruction"] + (f"\n{row['input']}" if row.get("input") else "")


def render(template: Template, row: Dict[str, str], tokenizer=None) -> Tuple[str, str]:
    """(prompt, response) for a normalised row {instruction, input, output} (or {text} for guanaco, plain and chat
    threads). `tokenizer` is the model's, needed by the chat template only."""
    if template is Template.chat:
        messages = chat_messages(row)
        return chat_prompt(tokenizer, messages[:-1]), messages[-1]["content"]
    if template is Template.raw:
        return _query(row), row["output"]
    if template is Template.alpaca:
        if row.get("input"):
            prompt = (
                f"{ALPACA_HEADER_INPUT}\n\n### Instruction:\n{row['instruction']}\n\n"
                f"### Input:\n{row['input']}\n\n### Response:\n"
            )
        else:
            prompt = f"{ALPACA_HEADER}\n\n### Instruction:\n{row['instruction']}\n\n### Response:\n"
        return prompt, row["output"]
    if template is Template.guanaco:
        # "### Human: … ### Assistant: …" threads: the loss covers the last assistant turn.
        text = row["text"]
        cut = text.rfind(GUANACO_ASSISTANT)
        if cut < 0:
            raise ValueError("guanaco row has no '### Assistant:' turn")
        cut += len(GUANACO_ASSISTANT)
        return text[:cut], text[cut:]
    if template is Template.plain:
        return "", row["text"]  # no prompt: every token is trained on (Knovel's packed text)
    if template is Template.human_assistant:
        return f"{LLAMA_FACTORY_SYSTEM}\nHuman: {_query(row)}\nAssistant: ", row["output"]
    raise ValueError(f"unknown template {template}")
