"""Prompt templates: one function per template, used identically when training and when serving."""

from __future__ import annotations

from typing import Dict, Tuple

from lec.config import Template

ALPACA_HEADER = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
ALPACA_HEADER_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)
GUANACO_ASSISTANT = "### Assistant:"
# LLaMA-Factory's `default` template, which Percent-BFD (A100 #1) trained with (winners_data.md §3.2)
LLAMA_FACTORY_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def serving_template(template: Template) -> "str | None":
    """The wrapper the server puts around HELM's prompt so the model sees what it was trained on
    ("{prompt}" marks where HELM's text goes); None for raw, which serves prompts unchanged."""
    if template in (Template.raw, Template.plain):
        return None
    if template is Template.guanaco:
        return "### Human: {prompt}" + GUANACO_ASSISTANT
    return render(template, {"instruction": "{prompt}", "input": "", "output": ""})[0]


def render(template: Template, row: Dict[str, str]) -> Tuple[str, str]:
    """(prompt, response) for a normalised row {instruction, input, output} (or {text} for guanaco)."""
    if template is Template.raw:
        prompt = row["instruction"] + (f"\n{row['input']}" if row.get("input") else "")
        return prompt, row["output"]
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
        query = row["instruction"] + (f"\n{row['input']}" if row.get("input") else "")
        return f"{LLAMA_FACTORY_SYSTEM}\nHuman: {query}\nAssistant: ", row["output"]
    raise ValueError(f"unknown template {template}")
