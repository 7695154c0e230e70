"""Seeded task generators for the embedded default.

Each generator makes items with a rule a model can learn, in the exact layout of a real HELM scenario:
`mmlu_order` is MMLU's headerless CSV (question, A, B, C, D, answer letter); `gsm_arith` is GSM8K's JSONL with a
"#### n" answer. Training rows are written as HELM prompts them (instructions, 0–5 in-context examples, then the
question), so what the model learns is exactly what the smoke suite asks. The eval files come from the same
generators with a disjoint seed stream (`conf/eval/smoke.yaml`).
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence

LETTERS = "ABCD"
HELD_OUT = 5  # 1 in 5 questions (by a hash of their text) is reserved for evaluation, never trained on


def held_out(key: str) -> bool:
    """True for the fifth of all possible items (by a hash of their full text) that only the eval files contain.

    The word-problem space is small (a few thousand questions), so disjoint seeds alone would still let eval
    questions appear in training; partitioning the space by hash makes the split disjoint by construction. The key
    is the whole item (an MC question with its options), so every phrasing still occurs on both sides."""
    return zlib.crc32(key.encode()) % HELD_OUT == 0


def draw(make: Callable[[random.Random], "MCItem | GSMItem"], rng: random.Random, for_eval: bool):
    """An item from `make` on the requested side of the train/eval partition."""
    while True:
        item = make(rng)
        if held_out(item.key()) == for_eval:
            return item

# --- MMLU-style multiple choice ------------------------------------------------------------------------------------

# The rule: the four options are sorted ascending, so the rank word fixes the letter.
_RANKS = {"smallest": 0, "second smallest": 1, "second largest": 2, "largest": 3}
# Every stem ends with the rank and every option has two digits, so the rank sits at a fixed distance before
# "Answer:": a 2-layer model can find it with one positional attention head, whatever the in-context examples.
_MC_STEMS = (
    "Which of these numbers is the {rank}?",
    "Which number below is the {rank}?",
    "Of the numbers listed, which is the {rank}?",
)


@dataclass(frozen=True)
class MCItem:
    question: str
    options: tuple[str, str, str, str]
    answer: int  # index into options

    def key(self) -> str:
        return "|".join((self.question, *self.options))

    def csv_row(self) -> list[str]:
        """MMLU's headerless CSV row: question, A, B, C, D, answer letter."""
        return [self.question, *self.options, LETTERS[self.answer]]


def mmlu_order(rng: random.Random) -> MCItem:
    numbers = sorted(rng.sample(range(10, 100), 4))
    rank = rng.choice(list(_RANKS))
    stem = rng.choice(_MC_STEMS).format(rank=rank)
    return MCItem(stem, tuple(str(n) for n in numbers), _RANKS[rank])


def mc_block(item: MCItem, with_answer: bool) -> str:
    """One question as HELM's multiple_choice_joint adapter lays it out (input_noun Question, output_noun Answer)."""
    lines = [f"Question: {item.question}"] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(item.options)]
    lines.append(f"Answer: {LETTERS[item.answer]}" if with_answer else "Answer:")
    return "\n".join(lines)


def mc_prompt(subject: str, shots: Sequence[MCItem], item: MCItem) -> str:
    """The full prompt HELM's MMLU run spec sends for `item` after `shots` in-context examples."""
    blocks = [mc_block(s, True) + "\n" for s in shots] + [mc_block(item, False)]
    return mc_header(subject) + "\n".join(blocks)


def mc_header(subject: str) -> str:
    """HELM's MMLU instructions line and the blank line after it."""
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


# --- GSM8K-style word problems -------------------------------------------------------------------------------------

_NAMES = ("Tom", "Ana", "Liam", "Mia", "Noah", "Zoe", "Omar", "Ivy", "Sam", "Lena")
_THINGS = ("apples", "pens", "cards", "shells", "books", "coins", "stickers", "marbles", "cookies", "stamps")


@dataclass(frozen=True)
class GSMItem:
    question: str
    solution: str  # reasoning line(s), without the final answer
    answer: int

    def key(self) -> str:
        return self.question

    def jsonl_answer(self) -> str:
        """GSM8K's `answer` field: reasoning, newline, '#### n'."""
        return f"{self.solution}\n#### {self.answer}"

    def helm_reference(self) -> str:
        """What HELM's GSM8KScenario turns `jsonl_answer` into: '#### n' → 'The answer is n', newlines → spaces, '.'."""
        return self.jsonl_answer().replace("####", "The answer is").replace("\n", " ") + "."


def gsm_arith(rng: random.Random) -> GSMItem:
    # One step of +1, +2, −1 or −2 on a number 3–9: a rule table of 28 facts that a 0.4M-parameter model can
    # learn in a minute on a CPU, wrapped in GSM8K's word-problem and "#### n" layout.
    name, things = rng.choice(_NAMES), rng.choice(_THINGS)
    a, b = rng.randint(3, 9), rng.randint(1, 2)
    kind = rng.randrange(3)
    if kind == 0:
        q = f"{name} has {a} {things}. {name} buys {b} more. How many {things} does {name} have now?"
        return GSMItem(q, f"{a} + {b} = {a + b}.", a + b)
    if kind == 1:
        q = f"{name} had {a} {things} and gave {b} away. How many {things} does {name} have left?"
        return GSMItem(q, f"{a} - {b} = {a - b}.", a - b)
    q = f"There are {a} {things} on a table and {b} {things} in a box. How many {things} are there in all?"
    return GSMItem(q, f"{a} + {b} = {a + b}.", a + b)


def gsm_block(item: GSMItem, with_answer: bool) -> str:
    """One problem as HELM's GSM run spec lays it out (generation adapter, input_noun Q, output_noun A)."""
    return f"Q: {item.question}\n" + (f"A: {item.helm_reference()}" if with_answer else "A:")


def gsm_prompt(shots: Sequence[GSMItem], item: GSMItem) -> str:
    blocks = [gsm_block(s, True) + "\n" for s in shots] + [gsm_block(item, False)]
    return "\n".join(blocks)


# --- training rows -------------------------------------------------------------------------------------------------

SHOTS = 5  # HELM's max_train_instances for MMLU and GSM8K: every prompt of the smoke suite holds 5 examples


def _rows(make_item: Callable, head: str, question: Callable, answer: Callable, n: int,
          seed: int) -> List[Dict[str, Any]]:  # fmt: skip
    """n training rows, each a whole HELM prompt: `head`, SHOTS in-context examples, then the question.

    The loss covers every answer in the row, not only the last: the in-context answers are marked by
    `trained_spans` (character ranges of the instruction, lec/train/packing.py encode). The answer after k examples
    is what HELM asks a k-shot prompt, so one row teaches the rule at 0…5 shots: six answers for the tokens of
    one prompt, where the last answer alone would cost six times the tokens per answer learned."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        *shots, item = [draw(make_item, rng, for_eval=False) for _ in range(SHOTS + 1)]
        text, spans = head, []
        for shot in shots:
            text += question(shot)
            spans.append([len(text), len(text) + len(answer(shot))])
            text += answer(shot) + "\n\n"
        rows.append({"instruction": text + question(item), "input": "", "output": answer(item),
                     "trained_spans": spans})  # fmt: skip
    return rows


def mmlu_order_rows(n: int, seed: int, subject: str = "number_order") -> List[Dict[str, Any]]:
    return _rows(mmlu_order, mc_header(subject), lambda i: mc_block(i, False), lambda i: f" {LETTERS[i.answer]}", n, seed)


def gsm_arith_rows(n: int, seed: int) -> List[Dict[str, Any]]:
    return _rows(gsm_arith, "", lambda i: gsm_block(i, False), lambda i: f" {i.helm_reference()}", n, seed)


GENERATORS: Dict[str, Callable[[int, int], List[Dict[str, str]]]] = {
    "mmlu_order": mmlu_order_rows,
    "gsm_arith": gsm_arith_rows,
}


def corpus(seed: int = 12345, n: int = 400) -> List[str]:
    """Text the tiny model's tokenizer is trained on: every generator's prompts and answers."""
    texts = []
    for make in GENERATORS.values():
        texts += [r["instruction"] + r["output"] for r in make(n, seed)]
    return texts
