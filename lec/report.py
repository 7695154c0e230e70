"""The end-of-run summary a person reads: tuned vs base per challenge metric, standing among the reference pool,
timings, and how to open MLflow."""

from __future__ import annotations

import os
from typing import Optional

from rich.console import Console
from rich.table import Table

from lec import score
from lec.pipeline import RunSummary


def _fmt(v: Optional[float], digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def print_summary(s: RunSummary, tracking_uri: str, console: Optional[Console] = None) -> None:
    console = console or Console()
    labels = list(s.challenge)
    both = "tuned" in labels and "base" in labels
    table = Table(title=f"lec run {s.run_id[:8]} — challenge metrics")
    for col in ["scenario", "metric", *labels] + (["Δ tuned − base"] if both else []):
        table.add_column(col, justify="left" if col in ("scenario", "metric") else "right")
    for sc in score.SCENARIOS:
        for m in sc.metrics:
            vals = [s.challenge[lab].get(m.label) for lab in labels]
            if all(v is None for v in vals):
                continue
            row = [sc.name, m.label.split(" - ", 1)[-1], *[_fmt(v) for v in vals]]
            if both:
                t, b = s.challenge["tuned"].get(m.label), s.challenge["base"].get(m.label)
                row.append("—" if t is None or b is None else f"{t - b:+.3f}")
            table.add_row(*row)
    console.print(table)

    ranks = Table(title=f"standing among the reference pool (scenarios: {', '.join(_scen(s))})")
    for col in ["model", "rank", "Score_open", "Score_hidden", "Score_full", "open − hidden"]:
        ranks.add_column(col, justify="right")
    for lab, r in s.standing.items():
        st = r.standing
        ranks.add_row(lab, f"{st.rank} of {r.pool_size + 1}", _fmt(st.score_open), _fmt(st.score_hidden),
                      _fmt(st.score_full), _fmt(st.gap))  # fmt: skip
    console.print(ranks)
    if s.agreement:  # both backends scored the same items: how far the two implementations are apart
        agree = Table(title="the same items, two implementations: HELM vs lm-evaluation-harness")
        for col in ["model", "HELM metric", "HELM", "lm-eval", "lm-eval − HELM", "lm-eval from"]:
            agree.add_column(col, justify="left" if col in ("model", "HELM metric", "lm-eval from") else "right")
        for lab, pairs in s.agreement.items():
            for key, v in pairs.items():
                agree.add_row(lab, key, _fmt(v["helm"]), _fmt(v["lm_eval"]), f"{v['difference']:+.3f}",
                              ", ".join(v["lm_eval_from"]))  # fmt: skip
        console.print(agree)
    if s.compliance:
        check = Table(title="the evaluators' checklist (rules: conf/rules/)")
        for col in ("question", "answer", "why"):
            check.add_column(col)
        colour = {"yes": "green", "no": "red", "unknown": "yellow"}
        for question, a in s.compliance.items():
            check.add_row(question, f"[{colour[a['answer']]}]{a['answer']}[/]", a["why"])
        console.print(check)
    if s.train:
        console.print(f"train: {s.train['steps']} steps, loss {s.train['loss']:.3f}, "
                      f"{s.train['tokens_per_s']:.0f} tokens/s, {s.train['trainable_params']:,} trainable params")  # fmt: skip
    console.print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in s.timings.items())
                  + f" (total {sum(s.timings.values()):.1f} s)")  # fmt: skip
    if s.eval_timed_out:
        console.print("[red]the eval budget ran out: unfinished HELM runs are missing (count as 0)[/red]")
    console.print(f"outputs: {s.run_dir}")
    store = tracking_uri.replace(f"sqlite:///{os.getcwd()}/", "sqlite:///")
    console.print(f"MLflow:  mlflow ui --backend-store-uri {store}", soft_wrap=True)
    if s.run_id:  # MLflow 3 opens as a GenAI app unless told the workflow: this link opens the run's charts
        from mlflow.tracking import MlflowClient

        exp = MlflowClient(tracking_uri).get_run(s.run_id).info.experiment_id
        console.print(f"         http://127.0.0.1:5000/#/experiments/{exp}/runs/{s.run_id}/model-metrics"
                      "?workflowType=machine_learning", soft_wrap=True)  # fmt: skip


def _scen(s: RunSummary):
    return s.standing["tuned"].scenarios if "tuned" in s.standing else []
