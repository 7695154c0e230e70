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
