"""The synthetic generators: seeded, correct answers, HELM's layouts, eval disjoint from training."""

from __future__ import annotations

import random

import pytest

from lec.data import synthetic as syn


def test_generators_are_seeded():
    assert syn.mmlu_order_rows(20, 3) == syn.mmlu_order_rows(20, 3)
    assert syn.gsm_arith_rows(20, 3) != syn.gsm_arith_rows(20, 4)


def test_mc_answer_follows_the_rule():
    rng = random.Random(0)
    for _ in range(200):
        item = syn.mmlu_order(rng)
        nums = [int(o) for o in item.options]
        assert nums == sorted(nums)
        want = {"smallest": 0, "second smallest": 1, "second largest": 2, "largest": 3}
        rank = next(r for r in sorted(want, key=len, reverse=True) if r in item.question)
        assert item.answer == want[rank]
        assert item.csv_row()[-1] == "ABCD"[item.answer] and len(item.csv_row()) == 6


def test_gsm_answer_is_correct_and_in_gsm8k_format():
    rng = random.Random(1)
    for _ in range(200):
        item = syn.gsm_arith(rng)
        expr = item.solution.split(" = ")[0].split(" has ")[-1].split("There are ")[-1]
        assert eval(expr) == item.answer  # noqa: S307 - "a + b" / "a - b" from our own generator
        assert item.jsonl_answer().endswith(f"\n#### {item.answer}")
        assert item.helm_reference().endswith(f"The answer is {item.answer}.")


def test_mc_prompt_matches_helm_layout():
    """Literal copy of a prompt crfm-helm 0.5.16 sent for mmlu:subject=number_order (one shot)."""
    shot = syn.MCItem("Which number below is the smallest?", ("274", "358", "465", "859"), 0)
    item = syn.MCItem("Which of these numbers is the second largest?", ("334", "386", "574", "958"), 2)
    helm = (
        "The following are multiple choice questions (with answers) about number order.\n\n"
        "Question: Which number below is the smallest?\nA. 274\nB. 358\nC. 465\nD. 859\nAnswer: A\n\n"
        "Question: Which of these numbers is the second largest?\nA. 334\nB. 386\nC. 574\nD. 958\nAnswer:"
    )
    assert syn.mc_prompt("number_order", [shot], item) == helm


def test_gsm_prompt_matches_helm_layout():
    """Literal copy of a prompt crfm-helm 0.5.16 sent for gsm (one shot)."""
    shot = syn.GSMItem("There are 6 cookies on a table and 2 cookies in a box. How many cookies are there in all?",
                       "There are 6 + 2 = 8 cookies.", 8)  # fmt: skip
    item = syn.GSMItem("Zoe has 9 apples. Zoe buys 2 more. How many apples does Zoe have now?", "", 11)
    helm = (
        "Q: There are 6 cookies on a table and 2 cookies in a box. How many cookies are there in all?\n"
        "A: There are 6 + 2 = 8 cookies. The answer is 8.\n\n"
        "Q: Zoe has 9 apples. Zoe buys 2 more. How many apples does Zoe have now?\nA:"
    )
    assert syn.gsm_prompt([shot], item) == helm


@pytest.mark.parametrize("rows", [syn.mmlu_order_rows, syn.gsm_arith_rows])
def test_training_rows_are_whole_helm_prompts_with_every_answer_trained(rows):
    """Each row is the prompt HELM sends after SHOTS examples; trained_spans mark exactly the in-context answers,
    so the loss covers six answers per prompt (lec/train/packing.py encode)."""
    for row in rows(20, 7):
        text, spans = row["instruction"], row["trained_spans"]
        blocks = text.split("\n\n")
        questions = [b for b in blocks if b.startswith(("Question:", "Q:"))]
        assert len(questions) == syn.SHOTS + 1 and len(spans) == syn.SHOTS
        answers = [text[a:b] for a, b in spans]
        for block, answer in zip(questions, answers):  # each span is its block's answer, after "Answer:" / "A:"
            assert block.endswith(("Answer:" + answer, "A:" + answer)), (block, answer)
        assert questions[-1].endswith(("Answer:", "A:")) and row["output"].startswith(" ")
    mc = syn.mmlu_order_rows(1, 3)[0]  # the layout is mc_prompt's, character for character
    shots = [syn.MCItem(b.split("\n")[0][10:], tuple(ln[3:] for ln in b.split("\n")[1:5]), "ABCD".index(b[-1]))
             for b in mc["instruction"].split("\n\n")[1:-1]]  # fmt: skip
    last = mc["instruction"].split("\n\n")[-1].split("\n")
    item = syn.MCItem(last[0][10:], tuple(ln[3:] for ln in last[1:5]), "ABCD".index(mc["output"].strip()))
    assert syn.mc_prompt("number_order", shots, item) == mc["instruction"]


def _train_keys(instruction: str) -> set:
    """Item keys of every question (shots and final) inside a training prompt."""
    keys = set()
    for block in instruction.split("\n\n"):
        lines = block.split("\n")
        if lines[0].startswith("Question: "):
            keys.add("|".join([lines[0].removeprefix("Question: ")] + [ln[3:] for ln in lines[1:5]]))
        elif lines[0].startswith("Q: "):
            keys.add(lines[0].removeprefix("Q: "))
    return keys


def test_eval_files_are_disjoint_from_training(default_cfg, tmp_path):
    import csv
    import json

    from lec.data.mixture import build_mixture
    from lec.evaluate.smoke_data import write_scenarios

    mix = build_mixture(default_cfg.data, tmp_path / "data")
    write_scenarios(tmp_path / "helm", default_cfg.eval.synthetic)
    with (tmp_path / "helm/scenarios/mmlu/data/test/number_order_test.csv").open() as f:
        mc = ["|".join(row[:5]) for row in csv.reader(f)]
    gsm = [json.loads(line)["question"] for line in (tmp_path / "helm/scenarios/gsm/gsm_data_test").open()]
    assert len(mc) == len(gsm) == default_cfg.eval.synthetic.n_eval
    assert all(syn.held_out(k) for k in mc + gsm)
    train = set()
    for path in (mix.train_path, mix.val_path):
        for line in path.read_text().splitlines():
            train |= _train_keys(json.loads(line)["instruction"])
    assert len(train) > 1000 and not any(syn.held_out(k) for k in train)
    assert not train & set(mc + gsm)
    assert default_cfg.eval.synthetic.seed >= 1_000_000 > default_cfg.data.seed * 1000 + len(default_cfg.data.sources)
