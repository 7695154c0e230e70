"""The evaluators' checklist, answered from what lec knows about a run (the challenge's evaluators answered it by hand
for every submission). Four questions, each answered "yes" (compliant), "no" or "unknown" — never "yes" without
evidence — with the reason in one line:

    approved_base_model       an open base model from the approved families and licences, not instruction-tuned
    open_data_no_llm_output   every training source has a licence, and LLM-generated rows were checked for
    not_trained_on_test_set   the training rows were decontaminated against the evaluated suite's instances
    within_limits             training on a track's GPU within its hours; the evaluation within its budget

The rules are data (conf/rules/, `rules=<name>`); the answers go to summary.json `compliance`, MLflow tags
`lec.compliance.<question>`, the console and the leaderboard.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

from lec.plan import Plan, RunLayout

Answer = Dict[str, str]  # {"answer": yes | no | unknown, "why": "…"}
QUESTIONS = ("approved_base_model", "open_data_no_llm_output", "not_trained_on_test_set", "within_limits")


def _a(answer: str, why: str) -> Answer:
    return {"answer": answer, "why": why}


def check(plan: Plan, layout: RunLayout, trained: bool, train: Optional[dict], eval_seconds: Optional[float],
          eval_timed_out: bool) -> Dict[str, Answer]:  # fmt: skip
    """The four answers for one run; `trained`: this run fine-tuned the model (else its data is not known here)."""
    curation = _read(layout.run_dir / "curation.json") if trained else None
    return {
        "approved_base_model": base_model(plan),
        "open_data_no_llm_output": open_data(plan, curation),
        "not_trained_on_test_set": test_set(plan, curation),
        "within_limits": limits(plan, trained, train, eval_seconds, eval_timed_out),
    }


def base_model(plan: Plan) -> Answer:
    m, rules = plan.model, plan.rules
    if m.tiny is not None:
        return _a("no", "lec's in-process test model, not one of the approved base models")
    name = m.hf_id or m.local_path or m.name
    family = next((f for f, pattern in rules.base_families.items() if re.search(pattern, name, re.I)), None)
    if rules.instruction_tuned and re.search(rules.instruction_tuned, name, re.I):
        return _a("no", f"{name} is named like an instruction-tuned model (the rules ask for a base model)")
    if family is None:
        return _a("unknown" if not m.hf_id else "no", f"{name} is from none of the approved families "
                  f"({', '.join(rules.base_families)})")  # fmt: skip
    if not m.license:
        return _a("unknown", f"{name} ({family}): model.license is not set")
    if m.license.lower() not in rules.base_licenses:
        return _a("no", f"{name}: licence {m.license} is not one of {', '.join(rules.base_licenses)}")
    return _a("yes", f"{name}: family {family}, licence {m.license}, a base model by name")


def open_data(plan: Plan, curation: Optional[dict]) -> Answer:
    if curation is None:
        return _a("unknown", "this run did not train: its training data is not known here")
    sources = plan.data.sources
    unlicensed = [s.name for s in sources if not s.license or s.license.lower() in ("unknown", "n/a")]
    if unlicensed:
        return _a("unknown", f"no licence recorded for {', '.join(unlicensed)} (data.sources.*.license)")
    unchecked = [s.name for s in sources if s.generator is None and not plan.data.curation.llm_generated.enabled]
    if unchecked:
        return _a("unknown", f"LLM-generated rows were not looked for in {', '.join(unchecked)} "
                  "(data.curation.llm_generated.enabled=false)")  # fmt: skip
    removed = sum(v for k, v in curation.items() if k.endswith("/llm_generated"))
    licences = ", ".join(sorted({s.license for s in sources}))
    return _a("yes", f"licences: {licences}; {removed} LLM-generated rows removed; lec's generators use no LLM")


def test_set(plan: Plan, curation: Optional[dict]) -> Answer:
    if curation is None:
        return _a("unknown", "this run did not train: its training data is not known here")
    if not plan.data.curation.decontam.enabled:
        return _a("unknown", "decontamination was off (data.curation.decontam.enabled=false)")
    instances = curation.get("curation/decontam/instances", 0)
    if not instances:
        return _a("unknown", "no instance of the evaluated suite was available to check against "
                  "(data.curation.decontam.scenarios_dir)")  # fmt: skip
    dropped = curation.get("curation/step/decontam/dropped", 0)
    return _a("yes", f"decontaminated against {instances} suite instances ({plan.data.curation.decontam.ngram}-grams): "
              f"{dropped} training rows removed")  # fmt: skip


def limits(plan: Plan, trained: bool, train: Optional[dict], eval_seconds: Optional[float],
           eval_timed_out: bool) -> Answer:  # fmt: skip
    rules, hw = plan.rules, plan.train.hardware
    if eval_timed_out:
        return _a("no", f"the evaluation ran past its budget of {plan.eval.budget_min:g} min")
    if eval_seconds is not None and eval_seconds > rules.max_eval_min * 60:
        return _a("no", f"the evaluation took {eval_seconds / 60:.0f} min (the rules allow {rules.max_eval_min:g})")
    if not trained or train is None:
        return _a("unknown", "this run did not train: training time and hardware are not known here")
    if hw not in rules.track_hardware:
        return _a("no", f"trained on hardware={hw}, not a track's GPU ({', '.join(rules.track_hardware)})")
    hours = (train.get("elapsed_s") or train.get("seconds") or 0) / 3600
    if hours > rules.max_train_hours:
        return _a("no", f"training took {hours:.1f} h (the rules allow {rules.max_train_hours:g} h)")
    return _a("yes", f"trained {hours:.2f} h on {hw}; evaluation within {rules.max_eval_min:g} min")


def _read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def counts(compliance: Dict[str, Answer]) -> Tuple[int, int, int]:
    """(yes, no, unknown) among the answers."""
    answers = [a["answer"] for a in compliance.values()]
    return answers.count("yes"), answers.count("no"), answers.count("unknown")
