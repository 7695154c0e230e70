"""The benchmark curves' scorer (lec/evaluate/bench.py): the closed-stage lm-eval tasks carry the prompts HELM's
adapter builds, and lm-eval scores the live tiny model in-process; sharing a batch's prompt head changes no logit."""

from __future__ import annotations

import json

import pytest
import torch

from lec import config, plan
from lec.evaluate import bench, helm_plugin, suites

TASKS = ("lec_mmlu_number_order", "lec_corr2cause", "lec_ethics_justice")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke suite's files and its bench task YAMLs, as the finetune stage writes them."""
    p = plan.build(config.compose([])).train.bench
    root = tmp_path_factory.mktemp("bench")
    return root, bench.write_tasks(root, p.synthetic, p.tasks, dict(p.shots))


@pytest.fixture(scope="module")
def scored(smoke, tiny_dir):
    """The tiny model with a LoRA adapter, in training mode as the Trainer holds it, and its scorer (2 docs a task)."""
    from lec.models import load_tokenizer
    from lec.train.finetune import prepare_model

    p = plan.build(config.compose([]))
    model, _ = prepare_model(p.train, p.model, tiny_dir)
    model.train()
    return model, bench.scorer(model, load_tokenizer(p.model, path=str(tiny_dir)), TASKS, 2, smoke[1])


def test_closed_tasks_carry_the_prompt_helm_sends(smoke):
    """lec_corr2cause: the fork's instructions, the one in-context example the smoke entry asks for
    (max_train_instances=1), then the scored item in HELM's multiple-choice-joint layout; the scored items are HELM's
    valid split (the plugin's seed-0 shuffle, last 20 %)."""
    root, tasks_dir = smoke
    docs = [json.loads(line) for line in (tasks_dir / "lec_corr2cause.jsonl").read_text().splitlines()]
    source = helm_plugin.SOURCES["corr2cause"]
    instances = helm_plugin.to_instances("corr2cause", source, helm_plugin.read_rows(
        "corr2cause", source, root / "scenarios" / "corr2cause"))  # fmt: skip
    valid = [i for i in instances if i.split != "train"]
    assert len(docs) == len(valid) == 12
    for doc, inst in zip(docs, valid):
        assert doc["prompt"].startswith(helm_plugin.INSTRUCTIONS["corr2cause"] + "\n\nScenario\n: Premise: ")
        assert doc["prompt"].count("\nAnswer:") == 2  # one example (with its answer), then the item
        assert doc["prompt"].endswith(f"Scenario\n: {inst.input.text}\nA. No\nB. Yes\nAnswer:")
        assert doc["choices"] == ["A", "B"] and inst.references[doc["label"]].is_correct
    ethics = json.loads((tasks_dir / "lec_ethics_justice.jsonl").read_text().splitlines()[0])
    assert ethics["prompt"].count("\nAnswer:") == 6  # HELM's default: 5 in-context examples
    assert ethics["prompt"].endswith("A. Unreasonable\nB. Reasonable\nAnswer:")


def test_the_tasks_a_suite_backs_and_the_shots_its_entries_ask_for():
    assert set(suites.CLOSED_MC) == set(helm_plugin.SOURCES)  # every multiple-choice closed-stage kind, no sam_sum
    smoke = config.compose([]).eval
    assert suites.offline_mc_tasks(smoke.synthetic) == list(TASKS)
    assert suites.offline_mc_tasks(None) == []
    assert suites.train_instances(["corr2cause:model={model},max_train_instances=1", "mmlu:subject=x,model={model}"]) \
        == {"corr2cause": 1}  # fmt: skip


def test_the_live_model_is_scored_in_process_and_left_training(scored):
    model, score = scored
    metrics = score(model)
    assert set(metrics) == set(TASKS) and all(set(m) == {"acc"} for m in metrics.values())
    assert all(m["acc"] in (0.0, 0.5, 1.0) for m in metrics.values())  # 2 docs a task
    assert model.training  # the Trainer's mode, restored after the check
    assert score(model) == metrics  # the same requests, the same weights: the same numbers
    with pytest.raises(ValueError, match="wraps one model object"):
        score(torch.nn.Linear(1, 1))


def test_a_shared_prompt_head_changes_no_logit(scored):
    """Rows that start alike (a bench task's instructions and in-context examples) run their head once, then the
    rest on its KV cache: the logits equal one plain forward of the whole batch."""
    model, score = scored
    head = torch.randint(4, 200, (40,))
    rows = torch.stack([torch.cat([head, torch.randint(4, 200, (9,))]) for _ in range(3)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: see InProcess.__call__
    with torch.no_grad():
        model.eval()
        plain = model(rows).logits
        shared = score.lm._model_call(rows)
        model.train()
    torch.set_num_threads(threads)
    assert shared.shape == plain.shape
    torch.testing.assert_close(shared, plain, atol=1e-4, rtol=1e-4)


def test_generation_tasks_are_refused(smoke, scored):
    model, score = scored
    with pytest.raises(ValueError, match="lec_gsm is a generate_until task"):
        bench.scorer(model, score.lm.tokenizer, ["lec_gsm"], 2, smoke[1])
