"""The evaluate stage: serve each model as a real process → real `helm-run` on the suite → `helm-summarize` →
metrics from the runs' stats.json."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import requests

from lec import files
from lec.config import Backend, ModelConfig
from lec.evaluate import helm, identity
from lec.evaluate.backends import agreement
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
    lm_eval: Dict[str, Dict[str, Dict[str, float]]] = field(default_factory=dict)  # {label: {task: {metric: value}}}
    agreement: Dict[str, Dict[str, dict]] = field(default_factory=dict)  # both backends on one item set (backends.py)


def evaluate(
    ev: EvalPlan,
    serve: ServePlan,
    model: ModelConfig,
    layout: RunLayout,
    adapter_dir: Optional[Path],
    base_dir: Optional[Path],
) -> EvalResult:
    """Evaluate the tuned model (and, with eval.eval_base, the untuned base) — or, with an endpoint, the model behind
    that URL — with each of eval.backends: real HELM on the suite, lm-eval on eval.lm_eval_tasks. The server
    processes load the run's config from layout.config."""
    helm_output = layout.helm
    if ev.synthetic is not None:
        write_scenarios(helm_output, ev.synthetic)
    if ev.endpoint:
        models: List[Tuple[str, Optional[Path]]] = [("endpoint", None)]
    else:
        models = [("tuned", adapter_dir)] if adapter_dir else []
        if ev.eval_base or not models:
            models.append(("base", None))
    suite, store = list(ev.entries), Path(ev.cache_dir)
    ids = _identities(ev, serve, model, layout, models, base_dir)
    keys = {label: run_key(ev, ident) for label, ident in ids.items()}
    entries = [e.format(model=f"{helm.ORG}/{label}") for label, _ in models for e in suite]
    use_helm, use_lm_eval = Backend.helm in ev.backends, Backend.lm_eval in ev.backends
    todo = [(label, a) for label, a in models if use_helm and not restore_complete(store, keys[label], helm_output,
                                                                                  ev.suite, label, suite)]  # fmt: skip
    restored = sum(restore_finished(store, keys[label], helm_output, ev.suite, label) for label, _ in todo)
    done = [label for label, _ in models if use_helm and label not in dict(todo)]
    if done or restored:
        log.info("already evaluated on this suite (not served again for HELM): %s; finished HELM runs kept for the "
                 "rest: %d", done or "none", restored)  # fmt: skip
    result = helm.HelmRun(helm_output, ev.suite, 0, 0.0, False, None)  # nothing for HELM to run
    lm_eval: Dict[str, Dict[str, Dict[str, float]]] = {}
    serve_now = models if use_lm_eval else todo
    if serve_now:
        with _served(ev, serve, layout, serve_now, base_dir) as urls:
            # HELM fits prompts to max_sequence_length; the server's prompt template (data.template /
            # serve.prompt_template) adds tokens, so HELM is told the served context minus what the wrapper needs.
            health = {label: _health(url, serve.context) for (label, _), url in zip(serve_now, urls)}
            url_of = {label: url for (label, _), url in zip(serve_now, urls)}
            if todo:
                tokenizer = _special_tokens(model, base_dir)
                served = [helm.ServedModel(label, url_of[label], health[label]["context"] - health[label]["wrapper_tokens"],
                                           *tokenizer, ids[label].short) for label, _ in todo]  # fmt: skip
                keep = lambda: [keep_finished(store, keys[label], helm_output, ev.suite, label, None, settled_s=1.0)
                                for label, _ in todo]  # noqa: E731 - a kill -9 mid-suite loses no finished run
                result = _helm_run(ev, layout, served, store, keep)
            if use_lm_eval:
                lm_eval = _lm_eval(ev, serve, model, layout, base_dir, url_of, health, ids)
        complete = result.returncode == 0 and not result.timed_out  # helm-run exits non-zero when a run failed
        for label, _ in todo:
            keep_finished(store, keys[label], helm_output, ev.suite, label, suite if complete else None)
    metrics, unanswered, summarize_rc, n_runs = _helm_metrics(ev, layout, models, result) if use_helm else ({}, {}, None, 0)
    return EvalResult(helm_output, ev.suite, entries, metrics, result.seconds, result.timed_out, n_runs, summarize_rc,
                      [label for label, _ in models], unanswered, lm_eval,
                      agreement(metrics, lm_eval, ev.lm_eval_metrics))  # fmt: skip


def _helm_run(ev: EvalPlan, layout: RunLayout, served: List[helm.ServedModel], store: Path,
              on_tick: Callable[[], None]) -> helm.HelmRun:  # fmt: skip
    helm_output = layout.helm
    helm.write_prod_env(helm_output / "prod_env", served, store / "requests")
    conf = helm_output / "run_entries.conf"
    helm.write_conf(conf, list(ev.entries), served)
    return helm.helm_run(conf, helm_output, helm_output / "prod_env", suite=ev.suite,
                         max_eval_instances=ev.max_eval_instances, num_threads=ev.num_threads,
                         budget_s=ev.budget_min * 60, cache_dir=layout.cache, on_tick=on_tick)  # fmt: skip


def _helm_metrics(ev: EvalPlan, layout: RunLayout, models: List[Tuple[str, Optional[Path]]], result: helm.HelmRun):
    """(metrics per model, unanswered scenarios per model, helm-summarize's exit, finished runs) of the suite."""
    helm_output = layout.helm
    runs = read_suite(helm_output, ev.suite)
    if not runs and not result.timed_out:
        raise EvalError(f"helm-run finished no run (exit {result.returncode}):\n{helm.log_tail(result.log_path)}")
    if result.returncode != 0 and not result.timed_out:
        log.warning("helm-run exited %d; keeping the %d finished runs", result.returncode, len(runs))
    summarize_rc = helm.helm_summarize(helm_output, ev.suite, layout.cache) if runs else None
    by_model = scenario_metrics(runs)
    metrics = {label: by_model.get(f"{helm.ORG}/{label}", {}) for label, _ in models}
    unanswered = {}
    if result.timed_out:  # the challenge's rule: what the budget left unanswered scores 0
        expected = suite_groups(list(ev.entries))
        for label, _ in models:
            unanswered[label] = score_unanswered(metrics[label], expected)
        log.warning("eval budget of %.0f min ran out; unanswered scenarios scored 0: %s", ev.budget_min,
                    unanswered)  # fmt: skip
    return metrics, unanswered, summarize_rc, len(runs)


def _lm_eval(ev: EvalPlan, serve: ServePlan, model: ModelConfig, layout: RunLayout, base_dir: Optional[Path],
             url_of: Dict[str, str], health: Dict[str, dict],
             ids: Dict[str, identity.Identity]) -> Dict[str, Dict[str, Dict[str, float]]]:  # fmt: skip
    """lm-eval on every served model, through its /v1/completions; the smoke tasks written beside HELM's files."""
    from lec.evaluate import lm_eval_backend

    tasks_dir = None
    if ev.synthetic is not None:
        tasks_dir = lm_eval_backend.write_tasks(layout.helm, ev.synthetic.mmlu_subjects, layout.run_dir / "lm_eval_tasks")
    tokenizer = str(base_dir or model.local_path or model.hf_id)
    out = {}
    for label, url in url_of.items():
        log.info("lm-eval on %s: %s", label, ", ".join(ev.lm_eval_tasks))
        out[label] = lm_eval_backend.evaluate(url, str(health[label].get("model") or label), tokenizer,
                                              list(ev.lm_eval_tasks), tasks_dir,
                                              Path(ev.cache_dir) / "lm_eval" / ids[label].short,
                                              health[label]["context"], ev.num_threads, ev.max_eval_instances,
                                              serve.api_key)  # fmt: skip
    return out


# --- finished runs, kept per model identity ------------------------------------------------------------------------
# HELM's files for one run (helm/benchmark/runner.py `_is_run_completed`): with all of them present, `helm-run
# --skip-completed-runs` keeps the run as it is.
RUN_FILES = ("run_spec.json", "scenario.json", "scenario_state.json", "stats.json", "per_instance_stats.json")


def run_key(ev: EvalPlan, ident: identity.Identity) -> str:
    """Where a model's finished runs are kept: its identity and what shapes a run besides its name (instances per
    run, the generated scenario files, HELM's version)."""
    from importlib.metadata import version

    spec = {"max_eval_instances": ev.max_eval_instances, "synthetic": ev.synthetic and asdict(ev.synthetic),
            "helm": version("crfm-helm")}  # fmt: skip
    return f"{ident.short}-{hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]}"


def _finished(run: Path, settled_s: float = 0.0) -> bool:
    """All of HELM's files of the run are there, the last one written over `settled_s` ago (not being written)."""
    try:
        newest = max((run / name).stat().st_mtime for name in RUN_FILES)
    except (FileNotFoundError, ValueError):
        return False
    return time.time() - newest >= settled_s


def _runs_of(root: Path, label: str) -> List[Path]:
    tag = f"model={helm.ORG}_{label}"  # run names: "mmlu:subject=…,method=…,model=lec_tuned[,…]"
    return [d for d in sorted(root.glob("*")) if d.is_dir() and tag in re.split(r"[,:]", d.name)]


def restore_finished(store: Path, key: str, helm_output: Path, suite: str, label: str) -> int:
    """Copy the model's finished runs from the store into this evaluation's output; returns how many."""
    src, dst = store / "runs" / key, helm_output / "runs" / suite
    n = 0
    for run in _runs_of(src, label):
        if _finished(run) and not (dst / run.name).exists():
            shutil.copytree(run, dst / run.name)
            n += 1
    return n


def keep_finished(store: Path, key: str, helm_output: Path, suite: str, label: str,
                  complete: Optional[List[str]], settled_s: float = 0.0) -> None:  # fmt: skip
    """Copy every run this evaluation finished into the store (atomically: a half-copied run is never seen); with
    `complete` (the suite's entries, when helm-run finished all of them), record that the model has the whole suite.
    While helm-run still runs, a run counts as finished once its last file is `settled_s` old."""
    runs = [run for run in _runs_of(helm_output / "runs" / suite, label) if _finished(run, settled_s)]
    try:
        for run in runs:
            out = store / "runs" / key / run.name
            if not out.exists():
                with files.atomic_dir(out, "a finished HELM run (the evaluation store)") as tmp:
                    shutil.copytree(run, tmp, dirs_exist_ok=True)
        if complete is not None and runs:
            manifest = {"entries": sorted(complete), "runs": sorted(run.name for run in runs)}
            files.write_json(store / "runs" / key / f"complete-{label}.json", manifest, "the evaluation store")
    except files.WriteError as err:  # the store is a cache: the evaluation's own output is complete
        log.warning("%s", err)


def restore_complete(store: Path, key: str, helm_output: Path, suite: str, label: str, entries: List[str]) -> bool:
    """When the store holds every run of these entries for this model (an earlier evaluation finished them all),
    copy them into this evaluation's output and say so: the model need not be served at all."""
    try:
        manifest = json.loads((store / "runs" / key / f"complete-{label}.json").read_text())
    except (OSError, ValueError):
        return False
    runs = [store / "runs" / key / name for name in manifest.get("runs", [])]
    # Only the very same entries: which run belongs to which entry is HELM's to say (a subset runs again, from cache)
    if set(entries) != set(manifest.get("entries", [])) or not runs or not all(_finished(r) for r in runs):
        return False
    restore_finished(store, key, helm_output, suite, label)
    return True


@contextlib.contextmanager
def _served(ev: EvalPlan, serve: ServePlan, layout: RunLayout, models: List[Tuple[str, Optional[Path]]],
            base_dir: Optional[Path]) -> Iterator[List[str]]:  # fmt: skip
    """The models' base URLs: eval.endpoint as it is, else one lec server process per model (stopped after)."""
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


def _identities(ev: EvalPlan, serve: ServePlan, model: ModelConfig, layout: RunLayout,
                models: List[Tuple[str, Optional[Path]]], base_dir: Optional[Path]) -> Dict[str, identity.Identity]:
    """Each evaluated model's identity (the key of its request cache and finished runs), logged with its strength."""
    if ev.endpoint:
        health = _health(ev.endpoint.rstrip("/"), serve.context)
        for backend, api in ((Backend.helm, "challenge"), (Backend.lm_eval, "openai")):
            if backend in ev.backends and api not in health["apis"]:
                raise EvalError(f"{ev.endpoint} does not speak the {api} API that {backend.value} needs: evaluate it "
                                f"with eval.backends=[{'lm_eval' if api == 'challenge' else 'helm'}]")  # fmt: skip
        ids = {"endpoint": identity.of_endpoint(ev.endpoint, str(health.get("model")), {"context": health["context"]})}
    else:
        weights = base_dir or (Path(model.local_path) if model.local_path else
                               identity.hf_cache_dir(model.hf_id, model.revision))  # fmt: skip
        settings = {**identity.serving_settings(serve), "torch_dtype": model.torch_dtype.value}
        ids = {label: identity.of_model(weights, adapter, f"{model.hf_id}@{model.revision}", settings, layout.cache)
               for label, adapter in models}  # fmt: skip
    for label, ident in ids.items():
        log.info("%s: identity %s (%s)", label, ident.short, "by content" if ident.by_content else
                 "by name only: a changed model behind the same name is not told apart")  # fmt: skip
    return ids


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
