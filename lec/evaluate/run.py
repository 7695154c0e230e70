"""The evaluate stage: serve each model as a real process → real `helm-run` on the suite → `helm-summarize` →
metrics from the runs' stats.json."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import requests

from lec.config import ModelConfig
from lec.evaluate import helm
from lec.evaluate.smoke_data import write_scenarios
from lec.evaluate.stats import read_suite, scenario_metrics
from lec.plan import EvalPlan, RunLayout, ServePlan
from lec.score import METRICS
from lec.serve.process import ServerSpec, serving

log = logging.getLogger(__name__)


class EvalError(RuntimeError):
    """helm-run failed or produced no finished run; the message carries the tail of its log."""


@dataclass
class EvalResult:
    helm_output: Path
    suite: str
    entries: List[str]  # filled run entries (all models)
    metrics: Dict[str, Dict[str, Dict[str, float]]]  # {label: {scenario: {metric: value}}}
    seconds: float
    timed_out: bool
    runs_finished: int
    summarize_rc: Optional[int] = None
    labels: List[str] = field(default_factory=list)
    unanswered: Dict[str, List[str]] = field(default_factory=dict)  # {label: scenarios with no finished run}


def evaluate(
    ev: EvalPlan,
    serve: ServePlan,
    model: ModelConfig,
    layout: RunLayout,
    adapter_dir: Optional[Path],
    base_dir: Optional[Path],
) -> EvalResult:
    """Evaluate the tuned model (and, with eval.eval_base, the untuned base) on the plan's suite with real HELM.
    The server processes load the run's config from layout.config."""
    helm_output = layout.helm
    cache = layout.cache
    if ev.synthetic is not None:
        write_scenarios(helm_output, ev.synthetic)

    models = [("tuned", adapter_dir)] if adapter_dir else []
    if ev.eval_base or not models:
        models.append(("base", None))
    # On a CPU box the servers share the cores: one torch thread each keeps them from oversubscribing.
    threads = 1 if len(models) > 1 and serve.device.value == "cpu" else serve.num_threads
    specs = [
        ServerSpec(layout.config, layout.run_dir / f"server-{label}.log", base=base_dir, adapter=adapter, name=label,
                   threads=threads)  # fmt: skip
        for label, adapter in models
    ]
    tokenizer = _special_tokens(model, base_dir)
    suite = list(ev.entries)
    with serving(specs, timeout_s=serve.startup_timeout_s) as urls:
        # HELM fits prompts to max_sequence_length; the server's prompt template (data.template / serve.prompt_template)
        # adds tokens, so HELM is told the served context minus what the server reports its wrapper needs.
        health = [requests.get(f"{url}/health", timeout=10).json() for url in urls]
        context = [h["context"] - h["wrapper_tokens"] for h in health]
        served = [helm.ServedModel(label, url, n, *tokenizer) for (label, _), url, n in zip(models, urls, context)]
        helm.write_prod_env(helm_output / "prod_env", served)
        conf = helm_output / "run_entries.conf"
        entries = helm.write_conf(conf, suite, served)
        result = helm.helm_run(
            conf,
            helm_output,
            helm_output / "prod_env",
            suite=ev.suite,
            max_eval_instances=ev.max_eval_instances,
            num_threads=ev.num_threads,
            budget_s=ev.budget_min * 60,
            cache_dir=cache,
        )
    runs = read_suite(helm_output, ev.suite)
    if not runs and not result.timed_out:
        raise EvalError(f"helm-run finished no run (exit {result.returncode}):\n{helm.log_tail(result.log_path)}")
    if result.returncode != 0 and not result.timed_out:
        log.warning("helm-run exited %d; keeping the %d finished runs", result.returncode, len(runs))
    summarize_rc = helm.helm_summarize(helm_output, ev.suite, cache) if runs else None
    by_model = scenario_metrics(runs)
    metrics = {label: by_model.get(f"{helm.ORG}/{label}", {}) for label, _ in models}
    unanswered = {}
    if result.timed_out:  # the challenge's rule: what the budget left unanswered scores 0
        expected = suite_groups(suite)
        for label, _ in models:
            unanswered[label] = score_unanswered(metrics[label], expected)
        log.warning("eval budget of %.0f min ran out; unanswered scenarios scored 0: %s", ev.budget_min,
                    unanswered)  # fmt: skip
    return EvalResult(
        helm_output,
        ev.suite,
        entries,
        metrics,
        result.seconds,
        result.timed_out,
        len(runs),
        summarize_rc,
        [label for label, _ in models],
        unanswered,
    )


def suite_groups(entries: List[str]) -> List[str]:
    """The HELM scenario group of each run entry ("mmlu:subject=…" → "mmlu"), in order, once each."""
    return list(dict.fromkeys(e.split(":", 1)[0] for e in entries))


def score_unanswered(metrics: Dict[str, Dict[str, float]], expected: List[str]) -> List[str]:
    """Fill every scored higher-is-better challenge metric of a suite scenario that finished no run with 0.0
    (in place) and return those scenarios. Lower-is-better metrics stay missing, which the scorer ranks worst."""
    missing = [g for g in expected if not any(k == g or k.startswith(g + "_") for k in metrics)]
    for group in missing:
        for _, metric in METRICS.values():
            if metric.group == group and not metric.lower_is_better:
                metrics.setdefault(group, {})[metric.key] = 0.0
    return missing


def _special_tokens(model: ModelConfig, base_dir: Optional[Path]) -> tuple:
    """(end_of_text_token, prefix_token) for HELM's tokenizer config, from the model's own tokenizer."""
    from lec.models import load_tokenizer

    tok = load_tokenizer(model, path=str(base_dir) if base_dir else None)
    return tok.eos_token or "</s>", tok.bos_token or tok.eos_token or "<s>"
