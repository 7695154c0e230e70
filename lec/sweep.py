"""Sweeps: `python -m lec -m adapter.r=4,8 adapter.lr=1e-4,3e-4` → one MLflow parent run per sweep, one child per job.

How the pieces meet (Hydra 1.3 hydra/experimental/callback.py; hydra.cc/docs/1.3/experimental/callbacks):
- `SweepCallback` is registered under `hydra.callbacks` (conf/config.yaml). `on_multirun_start` runs in the launching
  process before any job: it creates the parent run with MlflowClient (never the active fluent run there) and writes
  `<sweep dir>/mlflow_parent.json`. Every job finds its parent through that file, so it works the same for the basic
  launcher (same process), submitit_local (subprocesses) and SLURM (other hosts sharing the sweep dir).
- `lec.__main__.run` passes `child_tags()` to the job's MLflow run, which tags it `mlflow.parentRunId`, `lec.sweep.id`, `lec.sweep.job`,
  `lec.sweep.overrides` (Hydra's override_dirname, also the run's name).
- `job()` wraps the task function: an exception (an OOM, a bad config, a crash) marks the child FAILED with its error
  and returns None ("no objective"), so the other jobs go on (Hydra would otherwise stop the sweep) and the Optuna
  sweeper tells the trial FAIL. (Not NaN: optuna ≥ 4 raises on `tell(COMPLETE, nan)` and the sweeper's fallback
  `tell(FAIL, values=[nan])` raises too, which would end the whole search; None takes the sweeper's float-cast
  failure path, which tells FAIL with no values.) A job that finished without its objective metric returns None too.
- `on_multirun_end` closes the parent: status FINISHED when every job finished, FAILED when any failed, always with
  tags `lec.sweep.finished` / `lec.sweep.failed` and the best job by `sweep.objective`. Hydra skips
  `on_multirun_end` when a job raises, so an atexit hook closes a parent left open (status KILLED on an interrupt).
- Resume: run the same command with `hydra.sweep.dir=<that sweep dir>`, or any sweep with `sweep.resume=<sweep dir
  or parent run id>`: the old parent is reopened and jobs whose child FINISHED with the same overrides are skipped
  (they return their recorded objective).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lec import config as lec_config
from lec import files, procs
from lec.config import LecConfig, ScoreConfig, SweepConfig

if TYPE_CHECKING:
    from lec.track import Parent

# lec.track imports mlflow (4 s): `python -m lec --cfg job / --plan` and a bad value's one line import this module
# but never touch MLflow, so lec.track is imported where it is used. Its names stay readable here (sweep.objective_of).
_FROM_TRACK = ("PARENT_FILE", "Parent", "latest_per_overrides", "objective_of", "process_tags", "read_parent",
               "write_parent")


def __getattr__(name: str) -> Any:
    if name in _FROM_TRACK:
        from lec import track

        return getattr(track, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def mlflow_client(uri: str):
    from lec.track import client

    return client(uri)

log = logging.getLogger(__name__)
JOBS_FILE = "jobs.jsonl"
_HELD = contextlib.ExitStack()  # the launcher's lock on its sweep dir


@dataclass
class Job:
    num: int
    overrides: str  # Hydra's override_dirname: the run's name and the resume key
    sweep_dir: Path
    parent: Optional[Parent]


def register_resolvers() -> None:
    """`${lec_budget_min:hours,minutes,margin}` → whole minutes: the launcher presets' time limit
    (conf/hydra/launcher/*.yaml: hardware.time_budget_h + eval.budget_min + a margin)."""
    if not OmegaConf.has_resolver("lec_budget_min"):
        OmegaConf.register_new_resolver(
            "lec_budget_min", lambda h, m, margin=0: int(math.ceil(float(h) * 60 + float(m) + float(margin))))


def parallel_jobs(config: DictConfig) -> int:
    """How many of this sweep's jobs run at once on this machine. submitit_local starts each batch of the sweeper's
    jobs at once (hydra_plugins/hydra_submitit_launcher/submitit_launcher.py): the basic sweeper's batch is every
    combination of the sweep overrides and `hydra.sweeper.params`, capped by `max_batch_size`; Optuna's is `n_jobs`.
    The basic launcher runs jobs one after another, and SLURM / Ray give each job its own CPUs: 1."""
    if not str(OmegaConf.select(config, "hydra.launcher._target_", default="")).endswith(".LocalLauncher"):
        return 1
    sweeper = config.hydra.sweeper
    if OmegaConf.select(sweeper, "n_jobs") is not None:
        return max(1, int(sweeper.n_jobs))
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(sweeper, "params") or {}
    lines = [str(o) for o in config.hydra.overrides.task] + [f"{k}={v}" for k, v in params.items()]
    jobs = 1
    for override in OverridesParser.create().parse_overrides(lines):
        if override.is_sweep_override():
            jobs *= len(list(override.sweep_string_iterator()))
    cap = OmegaConf.select(sweeper, "max_batch_size")
    return max(1, min(jobs, int(cap)) if cap else jobs)


def current_job() -> Optional[Job]:
    """The multirun job this process is running, or None for a single run / outside Hydra."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode is not RunMode.MULTIRUN:
        return None
    from lec.track import read_parent

    sweep_dir = Path(hc.runtime.cwd) / hc.sweep.dir  # an absolute sweep dir stays as it is
    return Job(int(hc.job.num), hc.job.override_dirname or "default", sweep_dir, read_parent(sweep_dir))


def child_tags() -> Dict[str, str]:
    """Tags that make the current job's run a child of its sweep's parent ({} outside a sweep)."""
    job = current_job()
    return {} if job is None or job.parent is None else _job_tags(job)


def _job_tags(job: Job) -> Dict[str, str]:
    from lec.track import process_tags

    return {"mlflow.parentRunId": job.parent.run_id, "lec.sweep.id": job.parent.sweep_id,
            "lec.sweep.job": str(job.num), "lec.sweep.overrides": job.overrides, **process_tags()}  # fmt: skip


def children(parent: Parent) -> List[Any]:
    runs, token = [], None
    while True:
        page = mlflow_client(parent.tracking_uri).search_runs(
            [parent.experiment_id], f"tags.mlflow.parentRunId = '{parent.run_id}'", max_results=1000,
            order_by=["attributes.start_time ASC"], page_token=token)  # fmt: skip
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def finished_child(job: Job) -> Optional[Any]:
    """The FINISHED child of this job's parent with the same overrides (a resumed sweep skips that job)."""
    done = [r for r in children(job.parent) if r.data.tags.get("lec.sweep.overrides") == job.overrides
            and r.info.status == "FINISHED"]  # fmt: skip
    return done[-1] if done else None


def job(dcfg: DictConfig, run: Callable[[LecConfig], Any]) -> Optional[float]:
    """Run one multirun job; never raises an Exception: a failure is recorded in MLflow and returns None."""
    from lec.track import objective_of

    info = current_job()
    start_ms = int(time.time() * 1000)
    try:
        cfg = lec_config.load(dcfg)
        if info is not None and info.parent is not None:
            done = finished_child(info)
            if done is not None:
                value = objective_of(done.data.metrics, cfg.sweep)
                log.info("job %d (%s) finished before in run %s (objective %s): skipped", info.num,
                         info.overrides, done.info.run_id, value)  # fmt: skip
                return value if math.isfinite(value) else None
        summary = run(cfg)
        client = mlflow_client(lec_config.tracking_uri(cfg))
        value = objective_of(client.get_run(summary.run_id).data.metrics, cfg.sweep)
        if not math.isfinite(value):
            log.warning("job %s finished without the objective %s", info.num if info else "?", cfg.sweep.objective)
            return None
        client.log_metric(summary.run_id, "sweep/objective", value)
        return value
    except Exception as err:  # noqa: BLE001 - the sweep goes on; the error is in MLflow and the job log
        log.error("job %s failed: %s: %s", info.num if info else "?", type(err).__name__, err,
                  exc_info=not isinstance(err, (lec_config.ConfigError, files.WriteError)))  # their one line says it all
        if info is not None and info.parent is not None:
            record_failure(info, err, start_ms)
        return None


def record_failure(info: Job, err: BaseException, start_ms: int) -> None:
    """Make sure the job has a FAILED child carrying its error: track.run made one if the run had started;
    a failure before that (a bad config of this job) gets a new FAILED child."""
    parent, client = info.parent, mlflow_client(info.parent.tracking_uri)
    error = f"{type(err).__name__}: {err}"[:5000]
    mine = [r for r in children(parent) if r.data.tags.get("lec.sweep.job") == str(info.num)
            and r.info.start_time >= start_ms]  # fmt: skip
    if mine:
        run_id = mine[-1].info.run_id
    else:
        run_id = client.create_run(parent.experiment_id, tags=_job_tags(info), run_name=info.overrides).info.run_id
    client.set_tag(run_id, "lec.error", error)
    client.log_text(run_id, "".join(traceback.format_exception(err)), "error.txt")
    client.set_terminated(run_id, "FAILED")


# ── the parent run ────────────────────────────────────────────────────────────────────────────────────────────────


def _master_cfg(config: DictConfig) -> LecConfig:
    """The sweep's own config (sweep overrides not applied) as a typed LecConfig, without Hydra's node."""
    container = OmegaConf.to_container(config, resolve=False)
    container.pop("hydra", None)
    merged = OmegaConf.merge(OmegaConf.structured(LecConfig), container)
    return OmegaConf.to_object(merged)


def _resume_target(resume: str, outputs_dir: str) -> Optional[Parent]:
    """`sweep.resume`: a sweep dir (absolute, relative to the cwd, or a name under <outputs>/sweeps) or a run id."""
    from lec.track import PARENT_FILE, read_parent

    for d in (Path(resume), Path(outputs_dir) / "sweeps" / resume):
        if (d / PARENT_FILE).exists():
            return read_parent(d)
    return None


def open_parent(config: DictConfig) -> Parent:
    """Create the sweep's parent run, or reopen the one being resumed; write <sweep dir>/mlflow_parent.json."""
    from lec import track
    from lec.track import PARENT_FILE, Parent, process_tags, read_parent, write_parent

    cfg = _master_cfg(config)
    hc = config.hydra
    sweep_dir = Path(str(hc.sweep.dir)).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    uri = lec_config.tracking_uri(cfg)
    exp = track.experiment_id(uri, cfg.mlflow.experiment, cfg.outputs_dir)
    client = mlflow_client(uri)
    parent = read_parent(sweep_dir)
    if parent is None and cfg.sweep.resume:
        parent = _resume_target(cfg.sweep.resume, cfg.outputs_dir)
        if parent is None:
            try:
                run = client.get_run(cfg.sweep.resume)
            except Exception as err:  # noqa: BLE001
                raise lec_config.ConfigError(
                    f"sweep.resume={cfg.sweep.resume!r} is neither a sweep dir with {PARENT_FILE} nor a run id "
                    f"in {uri}") from err  # fmt: skip
            tags = run.data.tags
            parent = Parent(run.info.run_id, uri, run.info.experiment_id, tags.get("lec.sweep.id", run.info.run_id),
                            tags.get("lec.sweep.dir", ""))  # fmt: skip
    task = [str(o) for o in hc.overrides.task]
    if parent is not None:
        client.update_run(parent.run_id, status="RUNNING")
        resumed = int(client.get_run(parent.run_id).data.tags.get("lec.sweep.resumed", "0")) + 1
        client.set_tag(parent.run_id, "lec.sweep.resumed", str(resumed))
        log.info("resuming sweep %s (parent run %s)", parent.sweep_id, parent.run_id)
    else:
        choices = hc.runtime.choices
        sweep_id = f"{sweep_dir.name}-{uuid.uuid4().hex[:6]}"  # readable, and unique across outputs dirs
        tags = {"lec.sweep.role": "parent", "lec.sweep.id": sweep_id, "lec.sweep.dir": str(sweep_dir),
                "lec.sweep.overrides": " ".join(task), "lec.sweep.objective": cfg.sweep.objective,
                "lec.sweep.direction": cfg.sweep.direction.value, "lec.sweep.sweeper": str(choices.get("hydra/sweeper")),
                "lec.sweep.launcher": str(choices.get("hydra/launcher")), **process_tags()}  # fmt: skip
        where = set(hc.job.config.override_dirname.exclude_keys)  # outputs_dir etc.: not what the sweep is
        name = ("sweep " + " ".join(o for o in task if o.split("=", 1)[0].lstrip("+~") not in where))[:250]
        run = client.create_run(exp, tags=tags, run_name=name)
        parent = Parent(run.info.run_id, uri, exp, sweep_id, str(sweep_dir))
        params = {f"sweep.{o.split('=', 1)[0]}": o.split("=", 1)[1] for o in task if "=" in o}
        search = OmegaConf.select(config, "hydra.sweeper.params")
        if search:
            params.update({f"search.{k}": str(v) for k, v in search.items()})
        for key, value in params.items():
            client.log_param(parent.run_id, key[:250], value[:6000])
    write_parent(sweep_dir, parent)
    return parent


def close_parent(parent: Parent, sweep: SweepConfig, interrupted: bool = False) -> Dict[str, Any]:
    """Summarise the children onto the parent (counts, best job, a table) and end it with a status that says how
    many failed. A child still RUNNING at this point lost its process (killed, OOM-killed): it is marked FAILED."""
    from lec.track import latest_per_overrides, objective_of

    client = mlflow_client(parent.tracking_uri)
    runs = children(parent)
    for i, r in enumerate(runs):
        if r.info.status == "RUNNING" and not interrupted:
            client.set_tag(r.info.run_id, "lec.error", "the job's process ended without closing its run")
            client.set_terminated(r.info.run_id, "FAILED")
            runs[i] = client.get_run(r.info.run_id)
    latest = latest_per_overrides(runs)
    rows = []
    for ovr, r in latest.items():
        rows.append({"overrides": ovr, "run_id": r.info.run_id, "job": r.data.tags.get("lec.sweep.job"),
                     "status": r.info.status, "objective": objective_of(r.data.metrics, sweep),
                     "error": r.data.tags.get("lec.error", "")})  # fmt: skip
    ok = [row for row in rows if row["status"] == "FINISHED" and math.isfinite(row["objective"])]
    failed = [row for row in rows if row["status"] != "FINISHED"]
    sign = 1 if sweep.direction == "maximize" else -1
    best = max(ok, key=lambda row: sign * row["objective"]) if ok else None
    metrics = {"sweep/n_jobs": len(rows), "sweep/n_finished": len(rows) - len(failed), "sweep/n_failed": len(failed)}
    if best:
        metrics[f"best/{sweep.objective}"] = best["objective"]
    for k, v in metrics.items():
        client.log_metric(parent.run_id, k, v)
    tags = {"lec.sweep.finished": str(len(rows) - len(failed)), "lec.sweep.failed": str(len(failed)),
            "mlflow.note.content": _note(rows, best, sweep)}  # fmt: skip
    if best:
        tags.update({"lec.sweep.best_run_id": best["run_id"], "lec.sweep.best_overrides": best["overrides"]})
    if interrupted:
        tags["lec.sweep.interrupted"] = "true"
    for k, v in tags.items():
        client.set_tag(parent.run_id, k, v[:8000])
    client.log_dict(parent.run_id, {"objective": sweep.objective, "direction": sweep.direction.value, "jobs": rows,
                                    "best": best}, "sweep_summary.json")  # fmt: skip
    status = "KILLED" if interrupted else ("FAILED" if failed else "FINISHED")
    client.set_terminated(parent.run_id, status)
    log.info("sweep %s: %d jobs, %d finished, %d failed → parent %s %s; best: %s", parent.sweep_id, len(rows),
             len(rows) - len(failed), len(failed), parent.run_id, status,
             f"{best['overrides']} ({sweep.objective} {best['objective']:.4f})" if best else "none")  # fmt: skip
    return {"status": status, "rows": rows, "best": best}


def _note(rows: List[Dict[str, Any]], best: Optional[Dict[str, Any]], sweep: SweepConfig) -> str:
    """The parent's description in the MLflow UI: a markdown table of the jobs, best first."""
    sign = -1 if sweep.direction == "maximize" else 1
    order = sorted(rows, key=lambda r: (r["status"] != "FINISHED", sign * r["objective"]
                                        if math.isfinite(r["objective"]) else math.inf))  # fmt: skip
    n_failed = sum(r["status"] != "FINISHED" for r in rows)
    lines = [f"**{len(rows)} jobs, {len(rows) - n_failed} finished, {n_failed} failed.** "
             f"Best by `{sweep.objective}` ({sweep.direction.value}): "
             + (f"`{best['overrides']}` = {best['objective']:.4f}" if best else "none"), "",
             f"| job | overrides | status | {sweep.objective} | error |", "|---|---|---|---|---|"]  # fmt: skip
    for r in order:
        obj = f"{r['objective']:.4f}" if math.isfinite(r["objective"]) else "—"
        lines.append(f"| {r['job']} | `{r['overrides']}` | {r['status']} | {obj} | {r['error'][:120]} |")
    return "\n".join(lines)


class SweepCallback(Callback):
    """Registered under hydra.callbacks.lec_sweep (conf/config.yaml); a no-op for single runs."""

    def __init__(self) -> None:
        self.parent: Optional[Parent] = None
        self.sweep: Optional[SweepConfig] = None
        self.score: Optional[ScoreConfig] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # The sweep dir is this launcher's until it exits: a second live sweep there is refused. (The lock lives in
        # the module, not on the callback: launchers pickle their callbacks into each job.)
        _HELD.enter_context(files.claim(Path(str(config.hydra.sweep.dir)).resolve(), "the sweep dir"))
        self.parent = open_parent(config)
        # submitit_local's job processes inherit this environment: hardware=cpu's threads share the cores among
        # the jobs that run at once (lec.config.cpu_threads)
        os.environ[lec_config.PARALLEL_JOBS_ENV] = str(parallel_jobs(config))
        master = _master_cfg(config)
        self.sweep, self.score = master.sweep, master.score
        atexit.register(self._close_if_open)
        log.info("sweep %s: MLflow parent run %s (%s)", self.parent.sweep_id, self.parent.run_id,
                 self.parent.tracking_uri)  # fmt: skip

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        info = current_job()
        if info is not None:
            log.info("sweep job %d: %s", info.num, info.overrides)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """One line per job in <sweep dir>/jobs.jsonl: a sweep's progress readable while it runs."""
        info = current_job()
        if info is None:
            return
        value = job_return._return_value if job_return.status.name == "COMPLETED" else None
        line = {"job": info.num, "overrides": info.overrides, "status": job_return.status.name,
                "objective": value if isinstance(value, float) and math.isfinite(value) else None,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
        with (info.sweep_dir / JOBS_FILE).open("a") as f:
            f.write(json.dumps(line) + "\n")
        done = sum(1 for _ in (info.sweep_dir / JOBS_FILE).open())
        log.info("sweep job %d done: objective %s (%d jobs done in %s)", info.num, line["objective"], done,
                 info.sweep_dir)  # fmt: skip

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent is None:
            return
        from lec.track import latest_per_overrides

        parent, self.parent = self.parent, None
        close_parent(parent, self.sweep)
        _HELD.close()
        evaluations = [r for r in latest_per_overrides(children(parent)).values()
                       if r.data.tags.get("lec.kind") == "evaluation" and r.info.status == "FINISHED"]  # fmt: skip
        if evaluations:  # `python -m lec.evaluate -m …`: the models' leaderboard instead of training plots
            _leaderboard(parent, evaluations, self.score)
        elif self.sweep.compare:
            try:
                from lec import compare

                out = compare.compare_parent(parent.tracking_uri, parent.run_id, Path(parent.sweep_dir) / "compare")
                log.info("sweep plots: %s (also the parent run's compare/ artifacts)", out / "index.html")
            except Exception as err:  # noqa: BLE001 - plots are for people; the sweep's results are already logged
                log.warning("sweep plots failed: %s: %s", type(err).__name__, err, exc_info=True)

    def _close_if_open(self) -> None:
        """Hydra skips on_multirun_end when a job raises or the sweep is interrupted: close the parent anyway,
        after the jobs this launcher still runs as its own child processes have been stopped."""
        _stop_local_jobs()
        if self.parent is not None:
            parent, self.parent = self.parent, None
            close_parent(parent, self.sweep, interrupted=True)
            _HELD.close()


def _leaderboard(parent: Parent, runs: List[Any], score: ScoreConfig) -> None:
    from lec.evaluate import leaderboard

    out = Path(parent.sweep_dir)
    try:
        board = leaderboard.build(runs, score, out)
        if board is not None:
            leaderboard.to_mlflow(mlflow_client(parent.tracking_uri), parent.run_id, board, out)
            leaderboard.print_table(board, out)
    except Exception as err:  # noqa: BLE001 - every model's own numbers are logged already
        log.error("the leaderboard failed: %s: %s", type(err).__name__, err, exc_info=True)


def _stop_local_jobs() -> None:
    """submitit_local runs each job under a controller process (`python -m submitit.local._local`) that this
    launcher started; a SIGTERM to a controller is forwarded to its job, which then stops its own servers and marks
    its run KILLED (submitit v1.5 submitit/local/local.py). A SLURM job is the cluster's to stop (scancel)."""
    running = procs.children("submitit.local._local")
    if running:
        log.warning("stopping %d submitit_local job(s) of the interrupted sweep", len(running))
        procs.stop_pids(running, grace_s=20.0)
