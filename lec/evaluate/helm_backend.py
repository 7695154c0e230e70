"""HELM behind the backend seam (lec/evaluate/backends.py): real `helm-run` on the suite's run entries against each
served model's challenge API → `{label: {scenario: {metric}}}` from the runs' stats.json, with `helm-summarize` beside.

Resumable: HELM's request cache is on, one SQLite file per served model's identity (lec/evaluate/identity.py) under
`eval.cache_dir`, and every finished run is kept in <cache_dir>/runs/<identity key> (copied while helm-run runs, so a
kill -9 loses no finished run): a later evaluation of the same model restores them and `--skip-completed-runs` keeps
them; a model that has the whole suite is not served again at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from lec import files
from lec.config import ModelConfig
from lec.evaluate import helm, identity
from lec.evaluate.backends import Backend, BackendResult, EvalError, EvalJob, Served
from lec.evaluate.stats import read_suite, scenario_metrics
from lec.plan import EvalPlan, RunLayout
from lec.score import METRICS

log = logging.getLogger(__name__)


def prepare(job: EvalJob) -> List[str]:
    """Restore what the store holds of each model; the labels HELM still has to ask (a server each)."""
    ev, out, store, entries = job.ev, job.layout.helm, Path(job.ev.cache_dir), list(job.ev.entries)
    keys = {label: run_key(ev, job.identities[label]) for label in job.labels}
    todo = [label for label in job.labels if not restore_complete(store, keys[label], out, ev.suite, label, entries)]
    restored = sum(restore_finished(store, keys[label], out, ev.suite, label) for label in todo)
    done = [label for label in job.labels if label not in todo]
    if done or restored:
        log.info("already evaluated on this suite (not served again for HELM): %s; finished HELM runs kept for the "
                 "rest: %d", done or "none", restored)  # fmt: skip
    return todo


def run(job: EvalJob, served: Dict[str, Served]) -> BackendResult:
    """helm-run against the served models (none: every run was restored), then the metrics of every model."""
    ev, layout, store = job.ev, job.layout, Path(job.ev.cache_dir)
    keys = {label: run_key(ev, job.identities[label]) for label in job.labels}
    result = helm.HelmRun(layout.helm, ev.suite, 0, 0.0, False, None)  # nothing for HELM to run
    summarizer = helm.summarizer(layout.helm, ev.suite, layout.cache) if ev.summarize else \
        contextlib.nullcontext(lambda: None)  # eval.summarize=false: nothing to let go; fmt: skip
    with summarizer as summarize:  # importing while helm-run runs
        if served:
            # HELM fits prompts to max_sequence_length; the server's prompt template (data.template /
            # serve.prompt_template) adds tokens, so HELM is told the served context minus what the wrapper needs.
            tokens = _special_tokens(job.model, job.base_dir)
            models = [helm.ServedModel(label, s.url, s.health["context"] - s.health["wrapper_tokens"], *tokens,
                                       job.identities[label].short) for label, s in served.items()]  # fmt: skip
            keep = lambda: [keep_finished(store, keys[label], layout.helm, ev.suite, label, None, settled_s=1.0)
                            for label in served]  # noqa: E731 - a kill -9 mid-suite loses no finished run
            result = _helm_run(ev, layout, models, store, keep)
        summarize()  # the suite's runs are on disk: summarized beside the copying and reading below
        complete = result.returncode == 0 and not result.timed_out  # helm-run exits non-zero when a run failed
        for label in served:
            keep_finished(store, keys[label], layout.helm, ev.suite, label, list(ev.entries) if complete else None)
        metrics, unanswered, n_runs = _helm_metrics(ev, layout, job.labels, result)
    return BackendResult(metrics, result.seconds, result.timed_out, unanswered, {"runs_finished": n_runs},
                         _artifacts(layout.helm, ev.suite), {label: scored_stats(m) for label, m in metrics.items()})


def scored_stats(metrics: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    """The stats the challenge scorer reads (lec.score.METRICS: ~3 per scenario) out of the ~95 HELM reports per
    scenario (token counts, runtimes, calibration, finish reasons × each perturbation)."""
    wanted = {(m.group, m.key) for _, m in METRICS.values()}
    return {scenario: kept for scenario, stats in metrics.items()
            if (kept := {k: v for k, v in stats.items()
                         if any(k == key and (scenario == g or scenario.startswith(g + "_")) for g, key in wanted)})}


def instances(ev: EvalPlan, scenarios_dir: Optional[str], outputs_dir: Path):
    """HELM's scenario files of the suite: a given scenarios dir, the smoke suite's generator, else none (said so)."""
    from lec.data import decontam

    names = sorted({e.split(":", 1)[0] for e in ev.entries})
    if scenarios_dir:
        return decontam.read_scenarios(Path(scenarios_dir), names)
    if ev.synthetic is not None:
        return decontam.smoke_instances(ev.synthetic)
    inst = decontam.read_scenarios(outputs_dir / "helm_scenarios", names)
    inst.note = (f"eval suite '{ev.name}': its HELM scenario files are not available (set "
                 f"data.curation.decontam.scenarios_dir to a benchmark_output/scenarios dir of an earlier helm-run "
                 f"of this suite); " + inst.note)  # fmt: skip
    return inst


BACKEND = Backend("helm", "challenge", prepare, run, instances)


def _artifacts(helm_output: Path, suite: str) -> List[tuple]:
    """Per-run run_spec/stats/per_instance_stats plus the helm-run logs; not HELM's whole output tree."""
    out = []
    runs = helm_output / "runs" / suite
    for run_dir in sorted(runs.iterdir()) if runs.exists() else []:
        if run_dir.is_dir() and (run_dir / "stats.json").exists():
            name = run_dir.name.replace(":", "_").replace(",", "_").replace("=", "-")  # MLflow-safe in track.py
            out += [(run_dir / f, f"helm/{name}") for f in ("run_spec.json", "stats.json", "per_instance_stats.json")
                    if (run_dir / f).exists()]  # fmt: skip
    return out + [(f, "helm") for f in sorted(helm_output.glob("helm-*.log"))]


def _helm_run(ev: EvalPlan, layout: RunLayout, served: List[helm.ServedModel], store: Path,
              on_tick: Callable[[], None]) -> helm.HelmRun:  # fmt: skip
    helm_output = layout.helm
    helm.write_prod_env(helm_output / "prod_env", served, store / "requests")
    conf = helm_output / "run_entries.conf"
    helm.write_conf(conf, list(ev.entries), served)
    return helm.helm_run(conf, helm_output, helm_output / "prod_env", suite=ev.suite,
                         max_eval_instances=ev.max_eval_instances, num_threads=ev.num_threads,
                         budget_s=ev.budget_min * 60, cache_dir=layout.cache, on_tick=on_tick)  # fmt: skip


def _helm_metrics(ev: EvalPlan, layout: RunLayout, labels: Sequence[str], result: helm.HelmRun):
    """(metrics per model, unanswered scenarios per model, finished runs) of the suite."""
    helm_output = layout.helm
    runs = read_suite(helm_output, ev.suite)
    if not runs and not result.timed_out:
        raise EvalError(f"helm-run finished no run (exit {result.returncode}):\n{helm.log_tail(result.log_path)}")
    if result.returncode != 0 and not result.timed_out:
        log.warning("helm-run exited %d; keeping the %d finished runs", result.returncode, len(runs))
    by_model = scenario_metrics(runs)
    metrics = {label: by_model.get(f"{helm.ORG}/{label}", {}) for label in labels}
    unanswered = {}
    if result.timed_out:  # the challenge's rule: what the budget left unanswered scores 0
        expected = suite_groups(list(ev.entries))
        for label in labels:
            unanswered[label] = score_unanswered(metrics[label], expected)
        log.warning("eval budget of %.0f min ran out; unanswered scenarios scored 0: %s", ev.budget_min,
                    unanswered)  # fmt: skip
    return metrics, unanswered, len(runs)


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
