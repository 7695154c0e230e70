"""Tracking: the one module that turns what ran into MLflow entries and DVC files.

- `run(plan, name, tags)`: an MLflow run that ends FINISHED, or FAILED with the error recorded;
- `log_plan(plan, choices)`: params = the flattened plan (what ran, not what was typed) + `choice.<group>`, the plan
  and config as artifacts, and the environment that ran it (lec's git commit, library versions, GPU, `pip freeze`);
- `record_<stage>(result, plan, layout)`: each stage's typed result → metrics, tags, artifacts and the stage's DVC
  metrics/plots files under the run dir.
Sweep helpers that read runs back (the parent file, the objective, the latest child per overrides) live here too, so
`sweep` and `compare` both import tracking and not each other.

Pitfalls handled (MLflow ≥ 3.7): the file store is deprecated, so the store is `sqlite:///<abs outputs>/mlflow.db`;
the artifact root defaults to ./mlruns relative to the cwd, so the experiment is created with an explicit
`outputs/mlartifacts` location; metric names may not contain `(`, `)` or `,`, so keys are sanitised.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import platform
import re
import socket
import subprocess
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import mlflow
from mlflow.entities import Metric

from lec import files, procs
from lec import plan as lec_plan
from lec.config import AdapterKind, SweepConfig
from lec.plan import Plan, RunLayout

log = logging.getLogger(__name__)
_BAD = re.compile(r"[^\w\-. :]", re.ASCII)
PARENT_FILE = "mlflow_parent.json"
# A one-stage suite (smoke, open_*) has no Score_full: the stage's own score stands in.
FALLBACK = {"challenge/score_full": ("challenge/score_open", "challenge/score_hidden")}


# --- the store and the run ----------------------------------------------------------------------------------------


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


# MLflow ≥ 3 opens an experiment without a kind as a GenAI one (its overview says "No data" and lists runs under
# "Evaluations"); "finetuning" is one of the UI's kinds (mlflow/server/js ExperimentKind) that opens the runs table
KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_TAGS = {KIND_TAG: "finetuning"}


def experiment_id(tracking_uri: str, experiment: str, outputs_dir: str, reap_dead: bool = True) -> str:
    """The experiment's id, created on first use. Runs that start together on a fresh outputs dir would race in
    MLflow's SQLite schema migration, so opening a SQLite store is serialised by a lock file beside it. The store's
    runs whose process is gone (kill -9, OOM killer, power loss) are marked here (`reap`)."""
    out = Path(outputs_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    with _store_lock(tracking_uri):
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            # A remote `mlflow server` keeps artifacts where it was told to (--artifacts-destination); a local store
            # keeps them under outputs/, not in ./mlruns of whatever the cwd is.
            location = None if tracking_uri.startswith(("http://", "https://")) else (out / "mlartifacts").as_uri()
            try:
                exp_id = mlflow.create_experiment(experiment, artifact_location=location, tags=EXPERIMENT_TAGS)
            except mlflow.exceptions.MlflowException:  # created concurrently by a process on another machine
                exp_id = mlflow.get_experiment_by_name(experiment).experiment_id
        else:
            exp_id = exp.experiment_id
            if exp.tags.get(KIND_TAG) is None:  # a store made before lec tagged its experiments
                mlflow.MlflowClient(tracking_uri).set_experiment_tag(exp_id, KIND_TAG, EXPERIMENT_TAGS[KIND_TAG])
    if reap_dead:
        reap(tracking_uri, exp_id)
    return exp_id


@contextlib.contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(tracking_uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- who runs a run: host + pid + the process's start time, a heartbeat; finding runs whose process is gone ------

HEARTBEAT_S = 60.0  # how often a running run refreshes its lec.heartbeat tag (runs on other hosts are judged by it)


def process_tags() -> Dict[str, str]:
    """lec.host, lec.pid, lec.pid_start (the kernel's start time of the pid, so a reused pid is not mistaken) and, in a
    SLURM job, lec.slurm_job_id."""
    tags = {"lec.host": socket.gethostname(), "lec.pid": str(os.getpid()), "lec.pid_start": _pid_start(os.getpid())}
    if os.environ.get("SLURM_JOB_ID"):  # a SLURM job: which one (sacct, scancel, its log)
        tags["lec.slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return tags


def _pid_start(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 (starttime), counted after the command name


def is_alive(tags: Mapping[str, str]) -> Optional[bool]:
    """Is the process that runs this run still there? None when that cannot be told from this host."""
    if tags.get("lec.host") != socket.gethostname() or not tags.get("lec.pid", "").isdigit():
        return None
    start = _pid_start(int(tags["lec.pid"]))
    return bool(start) and start == tags.get("lec.pid_start", start)


def reap(tracking_uri: str, experiment: str, stale_after_s: Optional[float] = None) -> List[Any]:
    """Mark KILLED the RUNNING runs whose process is gone: on this host by pid (always), on other hosts by a
    heartbeat older than `stale_after_s` (only when asked: `python -m lec.runs --stale-after`). Returns them."""
    c = client(tracking_uri)
    found = []
    for r in c.search_runs([experiment], "attributes.status = 'RUNNING'", max_results=1000):
        tags = r.data.tags
        alive = is_alive(tags)
        beat = float(tags.get("lec.heartbeat", r.info.start_time / 1000))
        if alive is None and stale_after_s is not None and "lec.pid" in tags:
            alive = time.time() - beat < stale_after_s
        if alive is not False:
            continue
        why = (f"its process (pid {tags.get('lec.pid')} on {tags.get('lec.host')}) ended without closing the run: "
               "killed with SIGKILL, by the OOM killer, or the machine went down")  # fmt: skip
        c.set_tag(r.info.run_id, "lec.end", why)
        c.set_tag(r.info.run_id, "lec.end_found_by", f"pid {os.getpid()} on {socket.gethostname()} at "
                                                     f"{time.strftime('%Y-%m-%dT%H:%M:%S')}")  # fmt: skip
        c.set_terminated(r.info.run_id, "KILLED", end_time=int(beat * 1000))  # its last sign of life
        log.warning("run %s (%s) marked KILLED: %s", r.info.run_id, r.info.run_name, why)
        found.append(r)
    return found


@contextlib.contextmanager
def _heartbeat(run_id: str, tracking_uri: str) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        c = client(tracking_uri)
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat only delays finding a dead run
                c.set_tag(run_id, "lec.heartbeat", f"{time.time():.0f}")

    t = threading.Thread(target=beat, name="lec-heartbeat", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)


@contextlib.contextmanager
def run(plan: Plan, run_name: str, tags: Optional[Dict[str, str]] = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends in a true state: FINISHED; KILLED when a signal stopped the body (procs.Stopped,
    KeyboardInterrupt); FAILED with the error's one line (tag lec.error) and traceback (error.txt) otherwise. Tag
    lec.end says how it ended. A sweep job passes its child tags (mlflow.parentRunId + lec.sweep.*)."""

    exp = experiment_id(plan.tracking_uri, plan.experiment, plan.outputs_dir)
    tags = {**process_tags(), "lec.heartbeat": f"{time.time():.0f}", **(tags or {})}
    with mlflow.start_run(experiment_id=exp, run_name=run_name, tags=tags) as active, \
            _heartbeat(active.info.run_id, plan.tracking_uri):
        try:
            yield active
        except BaseException as err:
            status, reason = procs.end_state(err)
            with contextlib.suppress(Exception):  # the store may be what failed (disk full): the error still shows
                mlflow.set_tags({"lec.end": reason, **({"lec.error": reason} if status == "FAILED" else {})})
                mlflow.log_text("".join(traceback.format_exception(err)), "error.txt")
            with contextlib.suppress(Exception):
                mlflow.end_run(status=status)
            raise
        mlflow.set_tag("lec.end", "finished")


def log_plan(plan: Plan, config: Dict[str, Any], choices: Optional[Dict[str, str]] = None) -> None:
    """params = the flattened plan (+ `choice.<group>`); artifacts plan/plan.yaml, config/config.yaml and
    environment/pip_freeze.txt; tags lec.env.* (see `environment`)."""
    params = lec_plan.params(plan)
    params.update({f"choice.{g}": c for g, c in (choices or {}).items()})
    items = list(params.items())
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per call
        mlflow.log_params(dict(items[i : i + 100]))
    mlflow.log_text(lec_plan.to_yaml(plan), "plan/plan.yaml")
    serve = config.get("serve", {})
    if serve.get("api_key") is not None:  # the run dir's config.yaml keeps it (the servers read it); MLflow does not
        config = {**config, "serve": {**serve, "api_key": "set"}}
    mlflow.log_dict(config, "config/config.yaml")
    env, freeze = environment()
    mlflow.set_tags({f"lec.env.{k}": v for k, v in env.items()})
    mlflow.log_text(freeze, "environment/pip_freeze.txt")


def environment() -> tuple:
    """What is needed to rebuild the run ("Docker and pip are not that reproducible", the organisers found):
    ({lec commit, dirty tree, python, torch, cuda, gpu, transformers, peft, crfm-helm, …}, `pip freeze` text)."""
    from importlib.metadata import PackageNotFoundError, version

    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    env: Dict[str, str] = {"python": platform.python_version(), "platform": platform.platform()}
    commit = git("rev-parse", "HEAD") if (root / ".git").exists() else None
    env["git_commit"] = commit or "unknown (not a git checkout: an installed lec)"
    env["git_dirty"] = str(bool(git("status", "--porcelain", "--untracked-files=no"))) if commit else "unknown"
    for dist in ("lec", "torch", "transformers", "peft", "accelerate", "crfm-helm", "mlflow", "hydra-core", "dvc",
                 "bitsandbytes"):  # fmt: skip
        try:
            env[dist] = version(dist)
        except PackageNotFoundError:
            env[dist] = "not installed"
    import torch

    env["cuda"] = str(torch.version.cuda) if torch.cuda.is_available() else "none"
    env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return env, freeze()


def freeze() -> str:
    """What `pip freeze --all` prints, read in this process (starting pip is 1.5 s): every installed distribution as
    name==version, sorted by name; an editable install (PEP 610 direct_url.json) as `-e <where it lives>`."""
    from importlib.metadata import distributions

    lines: Dict[str, str] = {}
    for dist in distributions():
        name, recorded = dist.metadata["Name"], dist.read_text("direct_url.json")
        if not name or (name.lower() in lines and not recorded):  # found twice (a checkout's *.egg-info on sys.path
            continue  # beside the installed one): the installer's record says how it was installed
        direct = json.loads(recorded or "{}")
        editable = direct.get("dir_info", {}).get("editable")
        lines[name.lower()] = f"-e {direct['url'].removeprefix('file://')}" if editable else f"{name}=={dist.version}"
    return "".join(f"{lines[k]}\n" for k in sorted(lines))


def metric_prefix(label: str) -> str:
    """Where a model's metrics go: the tuned model's at the top (`challenge/…`, `helm/…`), the base model's under
    `untuned/` (the MLflow UI lists chart sections alphabetically: the tuned model's headline comes first), another
    evaluated model's under its label."""
    return {"tuned": "", "base": "untuned/"}.get(label, f"{label}/")


def metric_name(*parts: str) -> str:
    """A valid MLflow key from HELM/challenge names: 'MMLU - EM (Robustness)' → 'mmlu_em_robustness'."""
    clean = []
    for p in parts:
        p = _BAD.sub("", p.replace("@", "_").replace(" - ", "_").replace(" ", "_")).lower()
        p = re.sub(r"_+", "_", p).strip("_")
        clean.append(p if p.strip(".") else "unnamed")
    return "/".join(clean)


def active_run_id() -> Optional[str]:
    run = mlflow.active_run()
    return run.info.run_id if run else None


def log_metrics(metrics: Mapping[str, float], step: Optional[int] = None) -> None:
    clean = {k: float(v) for k, v in metrics.items() if v is not None}
    if not clean:
        return
    if _queue is None:
        mlflow.log_metrics(clean, step=step)
        return
    now_ms = int(time.time() * 1000)
    _queue.metrics += [Metric(k, v, now_ms, step or 0) for k, v in clean.items()]
    if time.monotonic() - _queue.flushed >= _queue.every_s:
        _queue.flush()


@dataclass
class _Queue:
    every_s: float
    metrics: List[Any] = field(default_factory=list)
    flushed: float = field(default_factory=time.monotonic)

    def flush(self) -> None:
        run_id, pending, self.metrics, self.flushed = mlflow.active_run().info.run_id, self.metrics, [], time.monotonic()
        for i in range(0, len(pending), 1000):  # MLflow's limit per log_batch
            mlflow.MlflowClient().log_batch(run_id, metrics=pending[i : i + 1000])


_queue: Optional[_Queue] = None


@contextlib.contextmanager
def batched_metrics(every_s: float = 5.0) -> Iterator[None]:
    """Inside the block, `log_metrics` queues and writes the queue in one MLflow call every `every_s` seconds and at
    the end: each call is a SQLite transaction (~12 ms on CPU), and one per training step was 10 % of the embedded
    default's training. The charts of a running training lag by at most `every_s`."""
    global _queue
    outer, _queue = _queue, _Queue(every_s)
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):  # the store may be what failed: the error on its way out says so
            _queue.flush()
        raise
    else:
        _queue.flush()
    finally:
        _queue = outer


def _write_json(path: Path, data) -> None:
    files.write_json(path, data, f"the stage's metrics ({path.name})")


# --- each stage's result → MLflow + its DVC files -----------------------------------------------------------------


def record_curate(mixture, plan: Plan, layout: RunLayout) -> None:
    """curation/… metrics, the curation report artifact, <dir>/curation.json (DVC metrics)."""
    metrics = {"curation/n_train": mixture.n_train, "curation/n_val": mixture.n_val}
    for s in mixture.sources:
        prefix = f"curation/{metric_name(s.name)}"
        dropped = sum(st.dropped_by_source.get(s.name, 0) for st in mixture.steps)
        metrics.update({f"{prefix}/rows_in": s.rows_in, f"{prefix}/rows_out": s.rows_out,
                        f"{prefix}/bad": sum(s.bad.values()), f"{prefix}/filtered": s.filtered,
                        f"{prefix}/llm_generated": s.llm_generated, f"{prefix}/curation_dropped": dropped})  # fmt: skip
    for st in mixture.steps:
        if st.enabled:
            metrics[f"curation/step/{st.step}/dropped"] = st.rows_in - st.rows_out
            metrics[f"curation/step/{st.step}/seconds"] = st.seconds
    metrics["curation/decontam/instances"] = mixture.decontam.get("instances", 0)
    log_metrics(metrics)
    mlflow.set_tag("lec.decontam", mixture.decontam.get("note", "")[:5000])
    mlflow.log_dict(mixture.report(), "curation/curation_report.json")
    _write_json(layout.run_dir / "curation.json", metrics)


def train_summary(result) -> Dict[str, Any]:
    return {"steps": result.steps, "planned_steps": result.planned_steps, "loss": result.train_loss,
            "seconds": result.seconds, "elapsed_s": result.elapsed_s, "stopped_by_budget": result.stopped_by_budget,
            "tokens_per_s": result.tokens / max(result.seconds, 1e-9), "trainable_params": result.trainable_params,
            "resumed_from": str(result.resumed_from) if result.resumed_from else None,
            "resumed_from_run": result.resumed_from_run, "stop_reason": result.stop_reason,
            "adapter_step": result.adapter_step, "best_val_loss": result.best_val_loss,
            "bench_seconds": result.bench_seconds}  # fmt: skip


def record_finetune(result, plan: Plan, layout: RunLayout) -> None:
    """train/final_… metrics, the resolved step count as a param, the weights, <dir>/train.json + train_loss.csv."""
    summary = train_summary(result)
    log_metrics({f"train/final_{k}": v for k, v in summary.items() if isinstance(v, (int, float))})
    mlflow.log_params({"train.steps": result.planned_steps,  # epochs → steps is known only after curation
                       "train.lora.resolved_targets": ",".join(result.lora_targets)})  # what all-linear became
    mlflow.set_tags({"lec.train.stop_reason": result.stop_reason,  # the weights evaluated: the best by val/loss
                     "lec.train.adapter_step": str(result.adapter_step)})  # (train.keep_best) or the last step
    if result.resumed_from is not None:  # the run this one continues (its checkpoint said which)
        mlflow.set_tags({"lec.resumed_from_checkpoint": str(result.resumed_from),
                         **({"lec.resumed_from_run": result.resumed_from_run} if result.resumed_from_run else {})})
    _log_weights(plan.train.method, result.adapter_dir)
    _loss_csv(Path(result.log_path), layout.run_dir / "train_loss.csv")
    _write_json(layout.run_dir / "train.json", summary)


def _log_weights(method: AdapterKind, weights: Path) -> None:
    """A LoRA adapter (MBs) goes to MLflow whole; a full fine-tune (14 GB for a 7B in bf16) stays on disk, and MLflow
    gets its config/tokenizer files and the path (tag lec.weights_dir)."""
    mlflow.set_tag("lec.weights_dir", str(weights.resolve()))
    if method is not AdapterKind.full:
        mlflow.log_artifacts(str(weights), "adapter")
        return
    for f in sorted(weights.iterdir()):
        if f.is_file() and f.suffix not in (".safetensors", ".bin", ".pt", ".pth"):
            mlflow.log_artifact(str(f), "adapter")


def _loss_csv(log_path: Path, csv_path: Path) -> None:
    """train_log.jsonl → step,loss CSV (the loss-curve plot in dvc.yaml)."""
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()] if log_path.exists() else []
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss"])
        w.writerows([r["step"], r["train/loss"]] for r in rows if "train/loss" in r)


def record_evaluate(ev, plan: Plan, layout: RunLayout) -> None:
    """Each backend's metrics per model under its name (`helm/…`, `lm_eval/…`; the base model's under `untuned/`), the
    HELM–lm-eval agreement, the budget tags, the backends' files, <dir>/eval_metrics.json + scenario_scores.csv."""
    mlflow.set_tags({"lec.eval_suite": ev.suite, "lec.eval_timed_out": str(ev.timed_out),
                     "lec.eval.backends": ",".join(ev.results)})  # fmt: skip
    if ev.timed_out:  # say so where people look: the run's tags and a metric per model
        mlflow.set_tag("lec.eval_budget_overrun", f"the eval stopped at the {plan.eval.budget_min:g} min budget; "
                       f"unanswered scenarios scored 0: {ev.unanswered}")  # fmt: skip
        log_metrics({f"{metric_prefix(label)}eval/unanswered_scenarios": len(groups)
                     for label, groups in ev.unanswered.items()})  # fmt: skip
    for name, result in ev.results.items():
        # charts: what a person reads first (HELM: the stats the scorer reads); every stat: a table beside them
        for label, groups in (result.metrics if result.headline is None else result.headline).items():
            prefix = metric_prefix(label)
            for group, metrics in groups.items():
                log_metrics({f"{prefix}{name}/{metric_name(group, k)}": v for k, v in metrics.items()})
        rows = [(label, group, k, v) for label, groups in result.metrics.items() for group, metrics in groups.items()
                for k, v in metrics.items()]  # fmt: skip
        if rows:
            mlflow.log_table({"model": [r[0] for r in rows], "scenario": [r[1] for r in rows],
                              "metric": [r[2] for r in rows], "value": [r[3] for r in rows]},
                             f"eval/{name}_metrics.json")  # fmt: skip
        log_metrics({f"eval/{name}/seconds": result.seconds,
                     **{f"eval/{name}/{k}": v for k, v in result.stats.items()}})  # fmt: skip
        for path, where in result.artifacts:
            mlflow.log_artifact(str(path), metric_name(*where.split("/")))
    for label, pairs in ev.agreement.items():
        prefix = metric_prefix(label)
        log_metrics({f"{prefix}agreement/{metric_name(*k.split('/'))}/lm_eval_minus_helm": v["difference"]
                     for k, v in pairs.items()})  # fmt: skip
    log_metrics({"eval/seconds": ev.seconds})
    _write_json(layout.run_dir / "eval_metrics.json", {
        "metrics": ev.metrics, "scored_by": next(iter(ev.results)),
        "by_backend": {name: r.metrics for name, r in ev.results.items()}, "agreement": ev.agreement,
        "seconds": ev.seconds, "timed_out": ev.timed_out, "unanswered": ev.unanswered,
        "backends": {name: {"seconds": r.seconds, "timed_out": r.timed_out, **r.stats} for name, r in ev.results.items()},
    })  # fmt: skip
    with (layout.run_dir / "scenario_scores.csv").open("w", newline="") as f:  # the per-scenario plot in dvc.yaml
        w = csv.writer(f)
        w.writerow(["model_scenario_metric", "value"])
        w.writerows([f"{label}|{sc}|{k}", v] for label, scs in ev.metrics.items()
                    for sc, ms in scs.items() for k, v in ms.items())  # fmt: skip


def record_compliance(compliance: Dict[str, Dict[str, str]]) -> None:
    """lec.compliance.<question> = yes | no | unknown, and the reason beside it."""
    for question, a in compliance.items():
        mlflow.set_tags({f"lec.compliance.{question}": a["answer"], f"lec.compliance.{question}.why": a["why"][:5000]})


def record_score(scored, plan: Plan, layout: RunLayout) -> None:
    """challenge/… metrics per model (metrics, scenario means, standing), pool tags, <dir>/score.json."""
    for label, metrics in scored.challenge.items():
        prefix = metric_prefix(label)
        log_metrics({f"{prefix}challenge/{metric_name(k)}": v for k, v in metrics.items()})
        log_metrics({f"{prefix}challenge/mean/{metric_name(k)}": v for k, v in scored.scores[label].items()})
        if label not in scored.standing:
            mlflow.set_tag(f"lec.{label}.unranked", scored.unranked.get(label, ""))
            continue
        st = scored.standing[label].standing
        log_metrics({f"{prefix}challenge/{k}": v for k, v in {
            "score_open": st.score_open, "score_hidden": st.score_hidden, "score_full": st.score_full,
            "rank": st.rank, "rank_open": st.rank_open, "rank_hidden": st.rank_hidden,
            "gap_open_minus_hidden": st.gap}.items()})  # fmt: skip
    if {"tuned", "base"} <= set(scored.scores):  # what fine-tuning bought, as its own charts
        tuned, base = _headline(scored, "tuned"), _headline(scored, "base")
        log_metrics({k.replace("challenge/", "challenge/tuned_minus_base/", 1): tuned[k] - base[k]
                     for k in tuned if base.get(k) is not None})  # fmt: skip
    mlflow.set_tags({"lec.score_pool": plan.score.pool, "lec.score_mode": plan.score.mode.value,
                     "lec.score_pool_size": str(scored.pool_size), "lec.score_scenarios": ",".join(scored.scenarios)})  # fmt: skip
    flat = {}
    for label, ranked in scored.standing.items():
        st = ranked.standing
        for k, v in {"score_open": st.score_open, "score_hidden": st.score_hidden, "score_full": st.score_full,
                     "rank": st.rank, "gap": st.gap}.items():  # fmt: skip
            if v is not None:
                flat[f"{label}/{k}"] = v
    for label, means in scored.scores.items():
        flat.update({f"{label}/mean/{k}": v for k, v in means.items() if v is not None})
    _write_json(layout.run_dir / "score.json", flat)


def _headline(scored, label: str) -> Dict[str, float]:
    """One model's challenge score per stage and mean per scenario (the keys record_score logs them under)."""
    out = {f"challenge/mean/{metric_name(k)}": v for k, v in scored.scores[label].items() if v is not None}
    if label in scored.standing:
        st = scored.standing[label].standing
        out.update({f"challenge/{k}": v for k, v in (("score_open", st.score_open), ("score_hidden", st.score_hidden),
                                                      ("score_full", st.score_full)) if v is not None})  # fmt: skip
    return out


# --- reading runs back: sweeps and comparisons --------------------------------------------------------------------


@dataclass
class Parent:
    """What a job needs to find its sweep's parent run; stored as <sweep dir>/mlflow_parent.json."""

    run_id: str
    tracking_uri: str
    experiment_id: str
    sweep_id: str
    sweep_dir: str


def read_parent(sweep_dir: Path) -> Optional[Parent]:
    path = sweep_dir / PARENT_FILE
    return Parent(**json.loads(path.read_text())) if path.exists() else None


def write_parent(sweep_dir: Path, parent: Parent) -> None:
    (sweep_dir / PARENT_FILE).write_text(json.dumps(asdict(parent), indent=2))


def objective_of(metrics: Dict[str, float], sweep: SweepConfig) -> float:
    for key in (sweep.objective, *FALLBACK.get(sweep.objective, ())):
        if key in metrics and metrics[key] is not None:
            return float(metrics[key])
    return float("nan")


def latest_per_overrides(runs: List[Any]) -> Dict[str, Any]:
    """Per override string, the latest of `runs` (oldest first): a resumed sweep retries failed jobs."""
    return {r.data.tags.get("lec.sweep.overrides", r.info.run_id): r for r in runs}
