"""The challenge's confs ship with lec: entry counts, instance budgets, model placeholders."""

from __future__ import annotations

import pytest

from lec import config, plan
from lec.evaluate.suites import SuiteError, conf_entries, instance_budget, suite_entries


def test_open_600_is_the_public_88_entry_conf():
    entries = conf_entries("open_600")
    assert len(entries) == 88 and sum(instance_budget(entries).values()) == 600
    budget = instance_budget(entries)
    assert budget == {"big_bench": 329, "mmlu": 216, "gsm": 19, "bbq": 18, "truthful_qa": 9, "summarization_cnndm": 9}
    assert all("model={model}" in e and "neurips/local" not in e for e in entries)


@pytest.mark.parametrize("name,n,instances", [("open_2000", 87, 2000), ("closed_5000", 22, 5000),
                                              ("open_100", 87, 100), ("closed_100", 22, 100)])  # fmt: skip
def test_final_stage_confs(name, n, instances):
    entries = conf_entries(name)
    assert len(entries) == n and sum(instance_budget(entries).values()) == instances


def test_closed_stage_scenarios():
    scenarios = {e.split(":")[0] for e in conf_entries("closed_5000")}
    assert scenarios == {"sam_sum", "corr2cause", "ethics_justice", "ethics_commonsense", "ethics_virtue",
                         "ethics_deontology", "ethics_utilitarianism", "math", "summarization_cnndm"}  # fmt: skip


def test_suites_compose_with_their_budgets():
    budgets = {"open_600": 120, "open_2000": 300, "closed_5000": 600, "full": 900}
    for name, minutes in budgets.items():
        cfg = config.compose([f"eval={name}"])
        assert cfg.eval.budget_min == minutes
    full = config.compose(["eval=full"]).eval
    assert len(suite_entries(full.entries, full.confs)) == 87 + 22
    assert [e.format(model="lec/tuned") for e in suite_entries([], ["closed_100"])][0].count("model=lec/tuned") == 1


def test_unknown_conf_is_a_clear_error():
    with pytest.raises(SuiteError, match="open_600"):
        conf_entries("open_601")
    with pytest.raises(config.ConfigError, match="eval=smoke: unknown HELM conf"):
        plan.build(config.compose(["eval=smoke", "eval.confs=[nope]"]))  # the plan resolves the suite, before work
