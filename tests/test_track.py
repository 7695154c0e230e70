"""lec/track.py: runs end FAILED with their error; outside a sweep a run has no parent; what goes to MLflow."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from lec import config, plan, track


def test_failed_run_records_its_error_and_has_no_parent_outside_a_sweep(tmp_path):
    p = plan.build(config.compose([f"outputs_dir={tmp_path}"]))
    assert p.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"  # the store under outputs_dir
    with pytest.raises(MemoryError):
        with track.run(p, "boom") as active:
            run_id = active.info.run_id
            raise MemoryError("CUDA out of memory (simulated by the test)")
    run = MlflowClient(p.tracking_uri).get_run(run_id)
    assert run.info.status == "FAILED" and "MemoryError: CUDA out of memory" in run.data.tags["lec.error"]
    assert "mlflow.parentRunId" not in run.data.tags and "lec.sweep.id" not in run.data.tags


def test_metric_names_are_valid_mlflow_keys():
    assert track.metric_name("MMLU - EM (Robustness)") == "mmlu_em_robustness"
    assert track.metric_name("challenge", "Score_full") == "challenge/score_full"


@pytest.mark.parametrize("adapter, logged", [("lora", {"config.json", "model.safetensors"}), ("full", {"config.json"})])
def test_full_fine_tune_weights_stay_on_disk_not_in_mlflow(tmp_path, adapter, logged):
    import mlflow

    weights = tmp_path / "adapter"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    (weights / "model.safetensors").write_bytes(b"\0" * 1024)
    p = plan.build(config.compose([f"adapter={adapter}", f"outputs_dir={tmp_path}"]))
    mlflow.set_tracking_uri(p.tracking_uri)
    with mlflow.start_run() as run:
        track._log_weights(p.train.method, weights)
    client = track.client(p.tracking_uri)
    assert {f.path.split("/")[-1] for f in client.list_artifacts(run.info.run_id, "adapter")} == logged
    assert client.get_run(run.info.run_id).data.tags["lec.weights_dir"] == str(weights.resolve())
