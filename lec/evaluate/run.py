"""The evaluate stage: the models to evaluate (tuned, base, or an endpoint) → their identities → a server process per
model that a backend still needs → each backend of eval.backends on the served models (lec/evaluate/backends.py: HELM,
lm-eval) → what is scored, in the challenge's terms, and where two backends agree."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import requests

from lec.config import ModelConfig
from lec.evaluate import helm, identity
from lec.evaluate.backends import BackendResult, EvalError, EvalJob, Metrics, Served, agreement, scored
from lec.evaluate.registry import registry
from lec.evaluate.smoke_data import write_scenarios
from lec.plan import EvalPlan, RunLayout, ServePlan
from lec.serve.process import ServerSpec, serving

log = logging.getLogger(__name__)
__all__ = ["EvalError", "EvalResult", "evaluate"]


@dataclass
class EvalResult:
    suite: str
    labels: List[str]
    results: Dict[str, BackendResult]  # {backend: its results in its own names}, in eval.backends order
    metrics: Dict[str, Metrics]  # {label: {scenario: {metric}}}: what is scored (the first backend's, challenge terms)
    agreement: Dict[str, Dict[str, dict]] = field(default_factory=dict)  # HELM vs lm-eval on one item set

    @property
    def seconds(self) -> float:  # the backends' own wall time, not the servers' start-up
        return sum(r.seconds for r in self.results.values())

    @property
    def timed_out(self) -> bool:
        return any(r.timed_out for r in self.results.values())

    @property
    def unanswered(self) -> Dict[str, List[str]]:  # of the scored backend: what the budget rule scored 0
        return next(iter(self.results.values())).unanswered


def evaluate(
    ev: EvalPlan,
    serve: ServePlan,
    model: ModelConfig,
    layout: RunLayout,
    adapter_dir: Optional[Path],
    base_dir: Optional[Path],
) -> EvalResult:
    """Evaluate the tuned model (and, with eval.eval_base, the untuned base) — or, with an endpoint, the model behind
    that URL — with each of eval.backends. A model is served (a real process loading layout.config) only if some
    backend still has something to ask it; every server is stopped before this returns."""
    if ev.synthetic is not None:  # the smoke suite's items, which both backends read
        write_scenarios(layout.helm, ev.synthetic)
    if ev.endpoint:
        models: List[Tuple[str, Optional[Path]]] = [("endpoint", None)]
    else:
        models = [("tuned", adapter_dir)] if adapter_dir else []
        if ev.eval_base or not models:
            models.append(("base", None))
    known = {"endpoint": _endpoint_health(ev, serve)} if ev.endpoint else {}  # asked once, before any work
    ids = _identities(ev, serve, model, layout, models, base_dir, known)
    job = EvalJob(ev, serve, model, layout, base_dir, tuple(label for label, _ in models), ids)
    backends = [registry()[b.value] for b in ev.backends]
    todo = {b.name: b.prepare(job) for b in backends}
    serve_now = [(label, a) for label, a in models if any(label in t for t in todo.values())]
    results: Dict[str, BackendResult] = {}
    with _served(ev, serve, layout, serve_now, base_dir) as urls:
        served = {label: Served(url, known.get(label) or _health(url, serve.context))
                  for (label, _), url in zip(serve_now, urls)}  # fmt: skip
        for b in backends:
            results[b.name] = b.run(job, {label: served[label] for label in todo[b.name]})
    return EvalResult(ev.suite, list(job.labels), results, scored(results, list(results), ev.lm_eval_metrics),
                      agreement(results, ev.lm_eval_metrics))  # fmt: skip


@contextlib.contextmanager
def _served(ev: EvalPlan, serve: ServePlan, layout: RunLayout, models: List[Tuple[str, Optional[Path]]],
            base_dir: Optional[Path]) -> Iterator[List[str]]:  # fmt: skip
    """The models' base URLs: eval.endpoint as it is, else one lec server process per model (stopped after)."""
    if not models:  # every backend had its answers already
        yield []
        return
    if ev.endpoint:
        yield [ev.endpoint.rstrip("/")]
        return
    # On a CPU box the servers share the cores: one torch thread each keeps them from oversubscribing.
    threads = 1 if len(models) > 1 and serve.device.value == "cpu" else serve.num_threads
    specs = [ServerSpec(layout.config, layout.run_dir / f"server-{label}.log", base=base_dir, adapter=adapter,
                        name=label, threads=threads) for label, adapter in models]  # fmt: skip
    with serving(specs, timeout_s=serve.startup_timeout_s) as urls:
        yield urls


def _health(url: str, context: int) -> dict:
    """What the server at `url` says of itself: lec's /health (both APIs); else an OpenAI-compatible server's
    /v1/models (vLLM, TGI: lm-eval only); else a challenge-API server's /tokenize. Without /health the served
    context is serve.max_seq_len and no prompt wrapper is assumed."""
    try:
        r = requests.get(f"{url}/health", timeout=10)
        if r.ok and "context" in r.json():
            return {**r.json(), "apis": ("challenge", "openai")}
    except (requests.RequestException, ValueError):
        pass
    try:
        r = requests.get(f"{url}/v1/models", timeout=10)
        if r.ok and r.json().get("data"):
            return {"context": context, "wrapper_tokens": 0, "model": r.json()["data"][0]["id"], "apis": ("openai",)}
    except (requests.RequestException, ValueError, KeyError, IndexError, AttributeError):
        pass
    try:
        requests.post(f"{url}/tokenize", json={"text": "a"}, timeout=10).raise_for_status()
    except requests.RequestException as err:
        raise EvalError(f"{url} answers neither the challenge API (/tokenize) nor the OpenAI API (/v1/models): "
                        f"{err}") from err  # fmt: skip
    return {"context": context, "wrapper_tokens": 0, "model": None, "apis": ("challenge",)}


def _endpoint_health(ev: EvalPlan, serve: ServePlan) -> dict:
    """eval.endpoint's /health (or what stands for it); refused at once when it lacks an API a backend needs."""
    health = _health(ev.endpoint.rstrip("/"), serve.context)
    for b in ev.backends:
        api = registry()[b.value].api
        if api not in health["apis"]:
            other = [n for n, spec in registry().items() if spec.api in health["apis"]]
            raise EvalError(f"{ev.endpoint} does not speak the {api} API that {b.value} needs: evaluate it "
                            f"with eval.backends=[{','.join(other)}]")  # fmt: skip
    return health


def _identities(ev: EvalPlan, serve: ServePlan, model: ModelConfig, layout: RunLayout,
                models: List[Tuple[str, Optional[Path]]], base_dir: Optional[Path],
                known: Dict[str, dict]) -> Dict[str, identity.Identity]:  # fmt: skip
    """Each evaluated model's identity (the key of its request caches and finished runs), logged with its strength
    and with how many answers HELM's request cache already holds for it (a resumed evaluation asks none of them)."""
    if ev.endpoint:
        health = known["endpoint"]
        ids = {"endpoint": identity.of_endpoint(ev.endpoint, str(health.get("model")), {"context": health["context"]})}
    else:
        weights = base_dir or (Path(model.local_path) if model.local_path else
                               identity.hf_cache_dir(model.hf_id, model.revision))  # fmt: skip
        settings = {**identity.serving_settings(serve), "torch_dtype": model.torch_dtype.value}
        ids = {label: identity.of_model(weights, adapter, f"{model.hf_id}@{model.revision}", settings, layout.cache)
               for label, adapter in models}  # fmt: skip
    for label, ident in ids.items():
        log.info("%s: identity %s (%s); %d answers in HELM's request cache", label, ident.short,
                 "by content" if ident.by_content else "by name only: a changed model behind the same name is not told "
                 "apart", len(helm.answered_requests(Path(ev.cache_dir) / "requests", ident.short)))  # fmt: skip
    return ids
