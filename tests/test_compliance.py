"""The evaluators' checklist: each answer from what the run knows, "unknown" where it knows nothing, never a "yes"
without its evidence."""

from __future__ import annotations

import json

import pytest

from lec import compliance, config, plan


def _plan(*overrides: str) -> plan.Plan:
    return plan.build(config.compose(list(overrides)))


@pytest.mark.parametrize("overrides, answer, why", [
    ([], "no", "in-process test model"),
    (["hardware=rtx4090", "model=mistral7b"], "yes", "family mistral, licence apache-2.0"),
    (["hardware=rtx4090", "model=qwen14b"], "yes", "family qwen"),
    (["hardware=rtx4090", "model=mistral7b", "model.hf_id=mistralai/Mistral-7B-Instruct-v0.2"], "no", "instruction-tuned"),
    (["hardware=rtx4090", "model=gemma2_9b"], "no", "none of the approved families"),
    (["hardware=rtx4090", "model=mistral7b", "model.license="], "unknown", "model.license is not set"),
    (["hardware=rtx4090", "model=llama31_8b"], "no", "licence llama3.1 is not one of"),
])  # fmt: skip
def test_the_base_model_question(overrides, answer, why):
    got = compliance.base_model(_plan(*overrides))
    assert got["answer"] == answer and why in got["why"], got


def _check(tmp_path, p, curation=None, train=None, eval_seconds=60.0, timed_out=False):
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    if curation is not None:
        (run_dir / "curation.json").write_text(json.dumps(curation))
    return compliance.check(p, plan.RunLayout.of(str(tmp_path), run_dir), trained=train is not None, train=train,
                            eval_seconds=eval_seconds, eval_timed_out=timed_out)  # fmt: skip


def test_a_run_that_did_not_train_knows_nothing_of_its_data_or_training(tmp_path):
    got = _check(tmp_path, _plan("hardware=rtx4090", "model=mistral7b"))
    assert [got[q]["answer"] for q in compliance.QUESTIONS] == ["yes", "unknown", "unknown", "unknown"]


def test_decontaminated_licensed_data_on_a_track_gpu_within_the_hours_is_compliant(tmp_path):
    curation = {"curation/mmlu_order/llm_generated": 0, "curation/decontam/instances": 300,
                "curation/step/decontam/dropped": 2}  # fmt: skip
    got = _check(tmp_path, _plan("hardware=rtx4090", "model=mistral7b", "data=synthetic"), curation,
                 train={"elapsed_s": 2 * 3600})  # fmt: skip
    assert got["open_data_no_llm_output"]["answer"] == "yes"
    assert got["not_trained_on_test_set"] == {"answer": "yes", "why": got["not_trained_on_test_set"]["why"]}
    assert "300 suite instances" in got["not_trained_on_test_set"]["why"] and "2 training rows removed" in \
        got["not_trained_on_test_set"]["why"]  # fmt: skip
    assert got["within_limits"]["answer"] == "yes"


@pytest.mark.parametrize("overrides, train, eval_seconds, timed_out, why", [
    ([], {"elapsed_s": 60}, 60.0, False, "hardware=cpu, not a track's GPU"),
    (["hardware=rtx4090", "model=mistral7b"], {"elapsed_s": 30 * 3600}, 60.0, False, "training took 30.0 h"),
    (["hardware=rtx4090", "model=mistral7b"], {"elapsed_s": 60}, 3 * 3600.0, False, "the evaluation took 180 min"),
    (["hardware=rtx4090", "model=mistral7b"], {"elapsed_s": 60}, 60.0, True, "ran past its budget"),
])  # fmt: skip
def test_limits_are_checked_against_the_rules(tmp_path, overrides, train, eval_seconds, timed_out, why):
    got = _check(tmp_path, _plan(*overrides), {}, train, eval_seconds, timed_out)["within_limits"]
    assert got["answer"] == "no" and why in got["why"], got


def test_what_lec_did_not_check_is_unknown_never_yes(tmp_path):
    p = _plan("data.curation.decontam.enabled=false", "data.curation.llm_generated.enabled=false")
    got = _check(tmp_path, p, {"curation/decontam/instances": 0}, train={"elapsed_s": 1})
    assert got["not_trained_on_test_set"]["answer"] == "unknown"
    nothing_to_check = _check(tmp_path, _plan(), {"curation/decontam/instances": 0}, train={"elapsed_s": 1})
    assert nothing_to_check["not_trained_on_test_set"]["answer"] == "unknown"
    unlicensed = _check(tmp_path, _plan("data.sources.0.license="), {}, train={"elapsed_s": 1})
    assert unlicensed["open_data_no_llm_output"]["answer"] == "unknown"


def test_rules_are_data_another_competition_s_file_drops_in(tmp_path):
    p = _plan("hardware=rtx4090", "model=gemma2_9b", "+rules.base_families.gemma=gemma", "rules.base_licenses=[gemma]")
    assert compliance.base_model(p)["answer"] == "yes"
