"""The seam between evaluation backends and the rest of lec.

A backend is two functions over one `EvalJob` (the models to evaluate, their identities, the plan's parts):
- `prepare(job)` → the labels it still needs served (HELM restores runs an earlier evaluation finished; the rest are
  asked again), and
- `run(job, served)` → a `BackendResult`: `{label: {scenario or task: {metric: value}}}` in the backend's own names,
  plus how long it took, whether its budget ran out, what it left unanswered, and the files worth keeping.
`lec.evaluate.registry` names them, `lec.evaluate.run` serves what they ask for and calls them; this module puts each backend's results in the
challenge's terms (the scorer's scenario/metric names; lm-eval's through `eval.lm_eval_metrics`), picks what is
scored (the first of `eval.backends`), and compares two backends where both scored the same items. Nothing outside
lec/evaluate/ knows which backend ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from lec.config import ModelConfig
from lec.plan import EvalPlan, RunLayout, ServePlan



class EvalError(RuntimeError):
    """A backend failed or finished nothing; the message carries the tail of its log."""


Metrics = Dict[str, Dict[str, float]]  # {scenario or task: {metric: value}}
Mapping = Sequence[Tuple[str, Sequence[str]]]  # (("mmlu/exact_match", ("lec_mmlu_x/acc", …)), …)


@dataclass(frozen=True)
class Served:
    url: str
    health: dict  # the server's /health (or what stands for it): context, wrapper_tokens, model, apis


@dataclass(frozen=True)
class EvalJob:
    ev: EvalPlan
    serve: ServePlan
    model: ModelConfig
    layout: RunLayout
    base_dir: Optional[Path]
    labels: Tuple[str, ...]  # "tuned", "base", "endpoint"
    identities: Dict[str, Any]  # {label: lec.evaluate.identity.Identity}


@dataclass
class BackendResult:
    metrics: Dict[str, Metrics]  # {label: …} in the backend's own names
    seconds: float = 0.0
    timed_out: bool = False
    unanswered: Dict[str, List[str]] = field(default_factory=dict)  # {label: scenarios scored 0 by the budget rule}
    stats: Dict[str, float] = field(default_factory=dict)  # eval/<name>: runs finished, …
    artifacts: List[Tuple[Path, str]] = field(default_factory=list)  # (file, MLflow artifact dir)
    # what a person reads first (MLflow charts); None = every metric. The rest is a table (lec.track)
    headline: Optional[Dict[str, Metrics]] = None


@dataclass(frozen=True)
class Backend:
    name: str
    api: str  # what it asks the server through: "challenge" (/process, /tokenize) or "openai" (/v1/*)
    prepare: Callable[[EvalJob], List[str]]
    run: Callable[[EvalJob, Dict[str, Served]], BackendResult]
    # the items it asks, for decontamination: (eval plan, data.curation.decontam.scenarios_dir, outputs dir)
    instances: Callable[[EvalPlan, Optional[str], Path], Any]  # → lec.data.decontam.EvalInstances


def in_challenge_terms(name: str, metrics: Metrics, mapping: Mapping) -> Metrics:
    """One model's results of backend `name` under the scorer's scenario/metric names: HELM's are those names;
    lm-eval's `{task: {metric}}` become each mapped pair's mean over its tasks (a pair whose tasks did not all report
    is left out)."""
    if name == "helm":
        return metrics
    out: Metrics = {}
    for key, sources in mapping:
        values = [metrics.get(task, {}).get(metric) for task, metric in (s.split("/") for s in sources)]
        if values and all(v is not None for v in values):
            scenario, metric = key.split("/")
            out.setdefault(scenario, {})[metric] = mean(values)
    return out


def scored(results: Dict[str, BackendResult], order: Sequence[str], mapping: Mapping) -> Dict[str, Metrics]:
    """What the challenge scorer reads per model: the first backend's results, in the challenge's terms."""
    first = order[0]
    return {label: in_challenge_terms(first, m, mapping) for label, m in results[first].metrics.items()}


def agreement(results: Dict[str, BackendResult], mapping: Mapping) -> Dict[str, Dict[str, dict]]:
    """Where HELM and lm-eval scored the same items: `{label: {"mmlu/exact_match": {helm, lm_eval, difference}}}`."""
    if "helm" not in results or "lm_eval" not in results:
        return {}
    out: Dict[str, Dict[str, dict]] = {}
    for label, tasks in results["lm_eval"].metrics.items():
        translated = in_challenge_terms("lm_eval", tasks, mapping)
        for key, sources in mapping:
            scenario, metric = key.split("/")
            h = results["helm"].metrics.get(label, {}).get(scenario, {}).get(metric)
            lm = translated.get(scenario, {}).get(metric)
            if h is not None and lm is not None:
                out.setdefault(label, {})[key] = {"helm": h, "lm_eval": lm, "difference": lm - h,
                                                  "lm_eval_from": list(sources)}  # fmt: skip
    return out
