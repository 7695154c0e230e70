"""The seam between evaluation backends and the rest of lec: each backend turns a served model into
`{scenario: {metric: value}}`; this module puts lm-eval's results in HELM's terms (`eval.lm_eval_metrics`), picks
what is scored (the first of `eval.backends`), and compares the two where both scored the same items."""

from __future__ import annotations

from statistics import mean
from typing import Dict, List, Sequence, Tuple

Metrics = Dict[str, Dict[str, float]]  # {scenario or task: {metric: value}}
Mapping = Sequence[Tuple[str, Sequence[str]]]  # (("mmlu/exact_match", ("lec_mmlu_x/acc", …)), …)


def as_helm(lm_eval: Metrics, mapping: Mapping) -> Metrics:
    """lm-eval's `{task: {metric}}` as `{helm scenario: {metric}}`: each mapped pair, the mean of its tasks' values
    (a pair whose tasks did not all report is left out)."""
    out: Metrics = {}
    for key, sources in mapping:
        values = [lm_eval.get(task, {}).get(metric) for task, metric in (s.split("/") for s in sources)]
        if values and all(v is not None for v in values):
            scenario, metric = key.split("/")
            out.setdefault(scenario, {})[metric] = mean(values)
    return out


def scored(backends: List[str], helm: Dict[str, Metrics], lm_eval: Dict[str, Metrics],
           mapping: Mapping) -> Dict[str, Metrics]:  # fmt: skip
    """What the challenge scorer reads per model: the first backend's results, in HELM's terms."""
    if backends[0] == "helm":
        return helm
    return {label: as_helm(tasks, mapping) for label, tasks in lm_eval.items()}


def agreement(helm: Dict[str, Metrics], lm_eval: Dict[str, Metrics], mapping: Mapping) -> Dict[str, Dict[str, dict]]:
    """Where both backends scored the same items: `{label: {"mmlu/exact_match": {helm, lm_eval, difference}}}`."""
    out: Dict[str, Dict[str, dict]] = {}
    for label, tasks in lm_eval.items():
        translated = as_helm(tasks, mapping)
        for key, sources in mapping:
            scenario, metric = key.split("/")
            h, lm = helm.get(label, {}).get(scenario, {}).get(metric), translated.get(scenario, {}).get(metric)
            if h is not None and lm is not None:
                out.setdefault(label, {})[key] = {"helm": h, "lm_eval": lm, "difference": lm - h,
                                                  "lm_eval_from": list(sources)}  # fmt: skip
    return out
