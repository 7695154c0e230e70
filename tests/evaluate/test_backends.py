"""The backend seam (lec/evaluate/backends.py): what each backend needs of a server, how lm-eval's results reach the
scorer's names, which backend is scored, and where the two are compared."""

from __future__ import annotations

import pytest

from lec.data import decontam
from lec.evaluate.backends import BackendResult, agreement, in_challenge_terms, scored
from lec.evaluate.registry import registry

MAPPING = (("mmlu/exact_match", ("lec_mmlu_a/acc", "lec_mmlu_b/acc")), ("gsm/final_number_exact_match",
                                                                        ("lec_gsm/exact_match_strict-match",)))
HELM = {"tuned": {"mmlu": {"exact_match": 0.5}, "gsm": {"final_number_exact_match": 0.1}}}
LM_EVAL = {"tuned": {"lec_mmlu_a": {"acc": 0.6}, "lec_mmlu_b": {"acc": 0.4},
                     "lec_gsm": {"exact_match_strict-match": 0.2}}}  # fmt: skip


def test_each_backend_names_the_api_it_needs():
    assert {name: b.api for name, b in registry().items()} == {"helm": "challenge", "lm_eval": "openai"}


def test_lm_eval_reaches_the_scorer_through_the_mapping_and_a_partial_pair_is_left_out():
    assert in_challenge_terms("lm_eval", LM_EVAL["tuned"], MAPPING) == \
        {"mmlu": {"exact_match": pytest.approx(0.5)}, "gsm": {"final_number_exact_match": 0.2}}  # fmt: skip
    assert in_challenge_terms("lm_eval", {"lec_mmlu_a": {"acc": 0.6}}, MAPPING) == {}  # lec_mmlu_b did not report
    assert in_challenge_terms("helm", HELM["tuned"], MAPPING) is HELM["tuned"]


@pytest.mark.parametrize("order,expect", [(["helm", "lm_eval"], 0.1), (["lm_eval", "helm"], 0.2)])
def test_the_first_backend_is_scored(order, expect):
    results = {"helm": BackendResult(HELM), "lm_eval": BackendResult(LM_EVAL)}
    assert scored(results, order, MAPPING)["tuned"]["gsm"]["final_number_exact_match"] == expect


def test_agreement_is_lm_eval_minus_helm_on_the_mapped_items_and_empty_with_one_backend():
    pairs = agreement({"helm": BackendResult(HELM), "lm_eval": BackendResult(LM_EVAL)}, MAPPING)["tuned"]
    assert pairs["mmlu/exact_match"]["difference"] == pytest.approx(0.0)
    assert pairs["gsm/final_number_exact_match"]["difference"] == pytest.approx(0.1)
    assert agreement({"helm": BackendResult(HELM)}, MAPPING) == {}


def test_instances_of_two_backends_are_one_set():
    a = decontam.EvalInstances(["x", "y"], ["helm/a", "helm/a"], files=["a"], available=True, note="helm")
    b = decontam.EvalInstances(["y", "z"], ["lm_eval/t", "lm_eval/t"], missing=["gone (OSError)"], note="lm-eval")
    both = decontam.merge([a, b])
    assert both.units == ["x", "y", "z"] and both.origin == ["helm/a", "helm/a", "lm_eval/t"]
    assert both.available and both.missing == ["gone (OSError)"] and both.note == "helm; lm-eval"
    assert decontam.merge([a]) is a
