"""MLflow tracking: SQLite store and artifacts under outputs/, params = the flattened resolved config.

Pitfalls handled (MLflow ≥ 3.7): the file store is deprecated, so the store is `sqlite:///<abs outputs>/mlflow.db`;
the artifact root defaults to ./mlruns relative to the cwd, so the experiment is created with an explicit
`outputs/mlartifacts` location; metric names may not contain `(`, `)` or `,`, so keys are sanitised.
"""

from __future__ import annotations

import contextlib
import logging
import re
import traceback
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional

import mlflow
from mlflow.tracking import MlflowClient

from lec import config as lec_config
from lec.config import LecConfig

log = logging.getLogger(__name__)
MAX_PARAM = 6000  # MLflow's MAX_PARAM_VAL_LENGTH
_BAD = re.compile(r"[^\w\-. :]", re.ASCII)


def outputs(cfg: LecConfig) -> Path:
    return Path(cfg.outputs_dir).resolve()


def tracking_uri(cfg: LecConfig) -> str:
    return cfg.mlflow.tracking_uri or f"sqlite:///{outputs(cfg) / 'mlflow.db'}"


def experiment_id(cfg: LecConfig) -> str:
    out = outputs(cfg)
    out.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(cfg))
    exp = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    if exp is not None:
        return exp.experiment_id
    try:
        return mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=(out / "mlartifacts").as_uri())
    except mlflow.exceptions.MlflowException:  # created concurrently by another job of a sweep
        return mlflow.get_experiment_by_name(cfg.mlflow.experiment).experiment_id


@contextlib.contextmanager
def run(cfg: LecConfig, run_name: str, tags: Optional[Dict[str, str]] = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED, or FAILED with the error recorded when the body raises. Inside a Hydra
    multirun job it is a child of the sweep's parent run (lec/sweep.py: mlflow.parentRunId + lec.sweep.* tags)."""
    from lec import sweep

    exp = experiment_id(cfg)
    tags = {**sweep.child_tags(), **(tags or {})}
    with mlflow.start_run(experiment_id=exp, run_name=run_name, tags=tags) as active:
        try:
            yield active
        except BaseException as err:
            mlflow.set_tags({"lec.error": f"{type(err).__name__}: {err}"[:5000]})
            mlflow.log_text("".join(traceback.format_exception(err)), "error.txt")
            mlflow.end_run(status="FAILED")
            raise


def flatten(data: Mapping[str, Any], prefix: str = "") -> Dict[str, str]:
    flat: Dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value)[:MAX_PARAM]
    return flat


def log_config(cfg: LecConfig, choices: Optional[Dict[str, str]] = None) -> None:
    """params = the flattened resolved config (+ `choice.<group>`), and the whole config as config/config.yaml."""
    container = lec_config.to_container(cfg)
    params = flatten(container)
    params.update({f"choice.{g}": c for g, c in (choices or {}).items()})
    mlflow.log_params(params)
    mlflow.log_dict(container, "config/config.yaml")


def metric_name(*parts: str) -> str:
    """A valid MLflow key from HELM/challenge names: 'MMLU - EM (Robustness)' → 'mmlu_em_robustness'."""
    clean = []
    for p in parts:
        p = _BAD.sub("", p.replace("@", "_").replace(" - ", "_").replace(" ", "_")).lower()
        p = re.sub(r"_+", "_", p).strip("_")
        clean.append(p if p.strip(".") else "unnamed")
    return "/".join(clean)


def log_metrics(metrics: Mapping[str, float], step: Optional[int] = None) -> None:
    clean = {k: float(v) for k, v in metrics.items() if v is not None}
    if clean:
        mlflow.log_metrics(clean, step=step)


def run_info(run_id: str, cfg: LecConfig) -> Dict[str, Any]:
    client = MlflowClient(tracking_uri(cfg))
    r = client.get_run(run_id)
    return {"status": r.info.status, "metrics": r.data.metrics, "params": r.data.params}
