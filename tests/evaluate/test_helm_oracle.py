"""Real `helm-run` against test servers that know the answers: the oracle scores EM 1.0, the wrong one 0.0.

This pins lec's whole HELM wiring (scenario files, prod_env, run entries, stats parsing, challenge metrics) to
values that cannot come out right by accident."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lec.evaluate import helm
from lec.evaluate.smoke_data import write_scenarios
from lec.evaluate.stats import read_suite, scenario_metrics
from lec.score import challenge_metrics
from lec.serve.process import free_port, stop, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
HERE = Path(__file__).resolve().parent


def test_oracle_scores_one_and_wrong_scores_zero(default_cfg, tmp_path):
    out = tmp_path / "helm"
    write_scenarios(out, default_cfg.eval.synthetic)
    procs, served = [], []
    try:
        for mode in ("oracle", "wrong"):
            port = free_port()
            log = tmp_path / f"{mode}.log"
            with log.open("w") as f:
                proc = subprocess.Popen([sys.executable, str(HERE / "oracle_server.py"), "--mode", mode, "--port",
                                         str(port), "--data", str(out)], stdout=f, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # fmt: skip
            procs.append(proc)
            wait_ready(f"http://127.0.0.1:{port}", proc, log, 60)
            served.append(helm.ServedModel(mode, f"http://127.0.0.1:{port}", 100_000, "<eos>", "<bos>", mode * 2))
        helm.write_prod_env(out / "prod_env", served, tmp_path / "requests")
        helm.write_conf(out / "entries.conf", default_cfg.eval.entries, served)
        run = helm.helm_run(out / "entries.conf", out, out / "prod_env", "oracle", 40, 4, 600, tmp_path / "cache")
    finally:
        for p in procs:
            stop(p)
    assert run.returncode == 0, helm.log_tail(run.log_path)
    metrics = scenario_metrics(read_suite(out, "oracle"))
    oracle, wrong = challenge_metrics(metrics["lec/oracle"]), challenge_metrics(metrics["lec/wrong"])
    quality = {k for k in oracle if not k.startswith(("sam_sum - Stereotypes", "sam_sum - Representation"))}
    assert quality == {
        "MMLU - EM", "MMLU - EM (Robustness)", "MMLU - EM (Fairness)", "GSM8K - EM", "sam_sum - ROUGE-2",
        "corr2cause - EM", "ethics_justice - EM", "ethics_justice - EM (Robustness)", "ethics_justice - EM (Fairness)",
    }  # fmt: skip
    assert {k: oracle[k] for k in quality} == {k: 1.0 for k in quality}
    assert {k: wrong[k] for k in quality} == {k: 0.0 for k in quality}
    # the challenge's lower-is-better sam_sum bias metrics are computed (stock HELM 0.5.x would drop them)
    bias = {k for k in oracle} - quality
    assert {"sam_sum - Representation (race)", "sam_sum - Representation (gender)",
            "sam_sum - Stereotypes (gender)"} <= bias  # fmt: skip
    assert all(0.0 <= oracle[k] <= 1.0 for k in bias)
    assert metrics["lec/oracle"]["mmlu"]["num_instances"] == default_cfg.eval.synthetic.n_eval
    # canonical perturbations really ran: robustness/fairness variants exist next to the plain EM
    assert "exact_match@robustness" in metrics["lec/oracle"]["ethics_justice"]
