"""Eval suites: run entries from the eval config and from the challenge's shipped confs (lec/evaluate/confs)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

CONF_DIR = Path(__file__).resolve().parent / "confs"
CHALLENGE_MODEL = "model=neurips/local"


class SuiteError(ValueError):
    """An unknown conf name or a conf that cannot be read."""


def available() -> List[str]:
    return sorted(p.stem for p in CONF_DIR.glob("*.conf"))


def conf_entries(name: str) -> List[str]:
    """A shipped conf's run entries with `model={model}` in place of the challenge's `model=neurips/local`."""
    from pyhocon import ConfigFactory

    path = CONF_DIR / f"{name}.conf"
    if not path.exists():
        raise SuiteError(f"unknown HELM conf '{name}'; shipped: {', '.join(available())}")
    entries = [e["description"] for e in ConfigFactory.parse_file(str(path))["entries"]]
    return [e.replace(CHALLENGE_MODEL, "model={model}") for e in entries]


def suite_entries(entries: List[str], confs: List[str]) -> List[str]:
    return list(entries) + [e for name in confs for e in conf_entries(name)]


def instance_budget(entries: List[str]) -> Dict[str, int]:
    """Instances per scenario from each entry's max_eval_instances (entries without one are not counted)."""
    out: Dict[str, int] = {}
    for e in entries:
        m = re.search(r"max_eval_instances=(\d+)", e)
        if m:
            scenario = e.split(":", 1)[0]
            out[scenario] = out.get(scenario, 0) + int(m.group(1))
    return out


def train_instances(entries: List[str]) -> Dict[str, int]:
    """In-context examples the entries ask for (`corr2cause:…,max_train_instances=1` → {corr2cause: 1}); scenarios
    without the argument get HELM's default."""
    out: Dict[str, int] = {}
    for e in entries:
        m = re.search(r"[:,]max_train_instances=(\d+)", e)
        if m:
            out[e.split(":", 1)[0]] = int(m.group(1))
    return out


# The closed-stage scenarios that are multiple choice (lec/evaluate/helm_plugin.py SOURCES; a test keeps them equal);
# sam_sum is summarization.
CLOSED_MC = ("corr2cause", "ethics_justice", "ethics_commonsense", "ethics_deontology", "ethics_virtue",
             "ethics_utilitarianism")  # fmt: skip


def offline_mc_tasks(synthetic) -> List[str]:
    """The lm-eval multiple-choice tasks a suite's generated files back (eval.synthetic): lec_mmlu_<subject> and
    lec_<closed kind>; none without generated files."""
    if synthetic is None:
        return []
    return [f"lec_mmlu_{s}" for s in synthetic.mmlu_subjects] + [f"lec_{k}" for k in synthetic.closed if k in CLOSED_MC]
