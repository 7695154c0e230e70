"""lm-evaluation-harness as lec's second backend, offline: its `local-completions` model against the lec server's
/v1/completions on the smoke tasks lec writes over the files HELM reads; its request cache keyed per model."""

from __future__ import annotations


import pytest

from lec.evaluate import lm_eval_backend
from lec.evaluate.smoke_data import write_scenarios
from lec.serve.app import create_app
from tests.conftest import uvicorn_thread


@pytest.fixture(scope="module")
def served(engine):
    app = create_app(engine, name="base", max_batch_size=8, batch_wait_ms=2)
    with uvicorn_thread(app) as url:
        yield url, app


@pytest.mark.e2e  # lm-eval's local-completions against a served model, twice: a minute on 2 cores
def test_the_smoke_tasks_run_offline_and_a_second_run_is_answered_from_the_cache(served, default_cfg, tiny_dir,
                                                                                    tmp_path):  # fmt: skip
    url, app = served
    synthetic = default_cfg.eval.synthetic
    write_scenarios(tmp_path / "helm", synthetic)
    tasks_dir = lm_eval_backend.write_tasks(tmp_path / "helm", synthetic.mmlu_subjects, tmp_path / "tasks")
    tasks = [f"lec_mmlu_{synthetic.mmlu_subjects[0]}", "lec_gsm"]
    run = lambda: lm_eval_backend.evaluate(url, "base", str(tiny_dir), tasks, tasks_dir, tmp_path / "cache" / "m1",
                                           context=2048, num_concurrent=2, limit=6)  # noqa: E731
    first = run()
    assert set(first) == set(tasks)
    assert 0.0 <= first[tasks[0]]["acc"] <= 1.0 and 0.0 <= first["lec_gsm"]["exact_match_strict-match"] <= 1.0
    steps = app.state.batcher.steps
    assert steps > 0
    assert run() == first and app.state.batcher.steps == steps  # every request answered from lm-eval's cache


def test_metrics_of_keeps_values_and_drops_stderr():
    results = {"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": 0.1, "exact_match,strict-match": 0.25}}
    assert lm_eval_backend.metrics_of(results) == {"t": {"acc": 0.5, "exact_match_strict-match": 0.25}}


@pytest.mark.e2e  # imports lm-eval and indexes its task registry: 15 s
def test_the_backend_gives_its_instances_for_decontamination(default_cfg, tmp_path):
    """Each eval doc as the model is asked it and its right answer; a task that cannot load here is named."""
    synthetic = default_cfg.eval.synthetic
    write_scenarios(tmp_path / "helm", synthetic)
    tasks_dir = lm_eval_backend.write_tasks(tmp_path / "helm", synthetic.mmlu_subjects, tmp_path / "tasks")
    subject = synthetic.mmlu_subjects[0]
    texts, origin, unavailable = lm_eval_backend.instances([f"lec_mmlu_{subject}", "no_such_task_here"], tasks_dir)
    assert len(texts) == synthetic.n_eval and set(origin) == {f"lm_eval/lec_mmlu_{subject}"}
    assert all(t.startswith("Question: ") and t.endswith(("A", "B", "C", "D")) for t in texts), texts[:2]
    assert unavailable and unavailable[0].startswith("no_such_task_here")


def test_curation_decontaminates_against_lm_eval_s_own_tasks(default_plan, tmp_path, monkeypatch):
    """With lm_eval's own tasks, their instances join HELM's; a task offline is reported, not passed over."""
    import dataclasses

    from lec.config import Backend
    from lec.data import curate

    seen = {}

    def fake(tasks, tasks_dir=None):
        seen["tasks"] = tasks
        return ["Question: a leaked question text with enough words to match it whole. Answer: B"], ["lm_eval/x"], \
            ["y (DatasetNotFoundError)"]  # fmt: skip

    monkeypatch.setattr(lm_eval_backend, "instances", fake)
    ev = dataclasses.replace(default_plan.eval, backends=(Backend.helm, Backend.lm_eval),
                             lm_eval_tasks=("lec_gsm", "x", "y"))  # fmt: skip
    inst = curate.eval_instances(default_plan.data, ev, tmp_path)
    assert seen["tasks"] == ["x", "y"]  # lec_* tasks read HELM's generated files: counted once, from there
    assert inst.origin[-1] == "lm_eval/x" and len(inst.units) > 1  # the smoke suite's + lm-eval's
    assert "y (DatasetNotFoundError)" in inst.missing and "not available here" in inst.note
