"""The end-of-run summary a person reads: tuned vs base per challenge metric, scores, timings, how to open MLflow."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from lec.pipeline import RunSummary


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def print_summary(s: RunSummary, tracking_uri: str, console: Console | None = None) -> None:
    console = console or Console()
    labels = list(s.challenge)
    table = Table(title=f"lec run {s.run_id[:8]} — challenge metrics (HELM)", show_lines=False)
    table.add_column("scenario")
    table.add_column("metric")
    for label in labels:
        table.add_column(label, justify="right")
    if "base" in labels and "tuned" in labels:
        table.add_column("Δ tuned − base", justify="right")
    scenarios = sorted({sc for lab in labels for sc in s.challenge[lab]})
    for sc in scenarios:
        metric_names = next(list(s.challenge[lab][sc]) for lab in labels if sc in s.challenge[lab])
        for m in metric_names:
            vals = [s.challenge[lab].get(sc, {}).get(m) for lab in labels]
            row = [sc, m] + [_fmt(v) for v in vals]
            if len(row) - 2 < len(table.columns) - 2:
                t, b = s.challenge["tuned"].get(sc, {}).get(m), s.challenge["base"].get(sc, {}).get(m)
                row.append("—" if t is None or b is None else f"{t - b:+.3f}")
            table.add_row(*row)
    raw = [s.scores[lab].get("raw_score") for lab in labels]
    row = ["all", "raw score (geo-mean over scenarios)"] + [_fmt(v) for v in raw]
    if "base" in labels and "tuned" in labels:
        row.append(f"{s.scores['tuned'].get('raw_score', 0) - s.scores['base'].get('raw_score', 0):+.3f}")
    table.add_row(*row, style="bold")
    console.print(table)
    if s.train:
        console.print(
            f"train: {s.train['steps']} steps, loss {s.train['loss']:.3f}, "
            f"{s.train['tokens_per_s']:.0f} tokens/s, {s.train['trainable_params']:,} trainable params"
        )
    console.print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in s.timings.items())
                  + f" (total {sum(s.timings.values()):.1f} s)")  # fmt: skip
    if s.eval_timed_out:
        console.print("[red]the eval budget ran out: unfinished HELM runs are missing (count as 0)[/red]")
    console.print(f"outputs: {s.run_dir}")
    store = tracking_uri.replace(f"sqlite:///{__import__('os').getcwd()}/", "sqlite:///")
    console.print(f"MLflow:  mlflow ui --backend-store-uri {store}   → http://127.0.0.1:5000, experiment 'lec'")
