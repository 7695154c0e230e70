"""Many evaluated models → one leaderboard: `python -m lec.evaluate -m evaluate.source=a,b,c` (one job per model,
through whichever Hydra launcher) ends with this, in the sweep's launching process.

    <sweep dir>/leaderboard.json          the organisers' format, [[name, {metric label: value}], …]:
                                          `python -m lec.score --ranks <sweep dir>/leaderboard.json` reads it back
    <sweep dir>/leaderboard_ranked.json   each entry's rank among the evaluated models (the challenge scorer) and
                                          among the reference pool (score.pool), stage scores, per-scenario win rates
    <sweep dir>/leaderboard.png           each entry's per-scenario mean of its challenge metrics
and the same files, a table (MLflow's table artifact) and the ranking note on the sweep's MLflow parent run.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from lec import files
from lec import score as scorer
from lec.config import ScoreConfig

log = logging.getLogger(__name__)
MAIN_LABELS = ("tuned", "endpoint", "base")  # the model a job was asked about: its adapter, its endpoint, else base


def entry_of(run: Any) -> Optional[Tuple[str, Dict[str, float], Dict[str, str]]]:
    """(name, challenge metrics, facts) of one finished evaluation job, from its run dir's summary.json."""
    run_dir = Path(run.data.tags.get("lec.run_dir", ""))
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        log.warning("run %s: no summary.json in %s; left out of the leaderboard", run.info.run_id, run_dir)
        return None
    label = next((lab for lab in MAIN_LABELS if summary["challenge"].get(lab)), None)
    if label is None:
        return None
    facts = {"source": run.data.tags.get("lec.eval.source", ""), "run_id": run.info.run_id, "run_dir": str(run_dir),
             "compliance": summary.get("compliance", {})}  # fmt: skip
    return run.data.tags.get("lec.eval.name") or run.info.run_name, summary["challenge"][label], facts


def build(runs: List[Any], score: ScoreConfig, out_dir: Path) -> Optional[Dict[str, Any]]:
    """Rank the finished evaluation runs among themselves and among the pool; write the files; return them."""
    entries, facts = [], []
    for run in runs:
        got = entry_of(run)
        if got is None:
            continue
        name, metrics, fact = got
        taken = {n for n, _ in entries}
        unique = name if name not in taken else next(f"{name} ({i})" for i in range(2, 10**6) if f"{name} ({i})" not in taken)
        entries.append((unique, metrics))
        facts.append(fact)
    if not entries:
        log.warning("no evaluation finished: no leaderboard")
        return None
    among = scorer.score_entries(entries, score.mode.value)
    pool = scorer.load_pool(score.pool)
    evaluated = scorer.stages_present(entries)  # rank against the pool on what was evaluated (score.only_evaluated)
    stages = evaluated if score.only_evaluated else None
    with_pool = scorer.score_entries(entries + pool, score.mode.value, stages)
    rows = []
    for (name, metrics), fact, st, sp in zip(entries, facts, among, with_pool):
        rows.append({"name": name, "rank": st.rank, "of": len(entries), "rank_in_pool": sp.rank,
                     "pool_of": len(entries) + len(pool), "score_open": st.score_open, "score_hidden": st.score_hidden,
                     "score_full": st.score_full, "scenario_win_rates": st.scenario_win_rates,
                     "raw": scorer.raw_score(metrics), **fact})  # fmt: skip
    rows.sort(key=lambda r: (r["rank"] or 10**9, r["name"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    files.write_json(out_dir / "leaderboard.json", [[n, m] for n, m in entries], "the leaderboard")
    board = {"mode": score.mode.value, "pool": score.pool, "pool_size": len(pool),
             "scenarios": [s.name for v in (stages or scorer.stages_present(entries + pool)).values() for s in v],
             "entries": rows}  # fmt: skip
    files.write_json(out_dir / "leaderboard_ranked.json", board, "the ranked leaderboard")
    plot(rows, out_dir / "leaderboard.png")
    return board


def plot(rows: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = sorted({k for r in rows for k in r["raw"] if k != "raw_score"})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(scenarios) * max(1, len(rows)) / 2), 4))
    width = 0.8 / max(1, len(rows))
    for i, r in enumerate(rows):
        xs = [j + i * width for j in range(len(scenarios))]
        ax.bar(xs, [r["raw"].get(s, 0.0) for s in scenarios], width, label=f"#{r['rank']} {r['name'][:40]}")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(scenarios))], scenarios, rotation=20)
    ax.set_ylabel("mean of the scenario's challenge metrics")
    ax.set_ylim(0, 1)
    ax.set_title("leaderboard: per-scenario scores (rank by the challenge scorer)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def to_mlflow(client: Any, run_id: str, board: Dict[str, Any], out_dir: Path) -> None:
    """The leaderboard on the sweep's parent run: files, a table artifact, and a markdown note."""
    for name in ("leaderboard.json", "leaderboard_ranked.json", "leaderboard.png"):
        client.log_artifact(run_id, str(out_dir / name), "leaderboard")
    rows = board["entries"]
    table = {"rank": [r["rank"] for r in rows], "name": [r["name"] for r in rows],
             "rank_in_pool": [r["rank_in_pool"] for r in rows], "score_open": [r["score_open"] for r in rows],
             "score_hidden": [r["score_hidden"] for r in rows], "score_full": [r["score_full"] for r in rows],
             "raw_score": [r["raw"].get("raw_score") for r in rows], "source": [r["source"] for r in rows],
             "checklist": [checklist(r["compliance"]) for r in rows],
             "run_id": [r["run_id"] for r in rows]}  # fmt: skip
    client.log_table(run_id, table, "leaderboard/leaderboard_table.json")
    client.set_tag(run_id, "mlflow.note.content", note(board)[:8000])
    client.set_tag(run_id, "lec.kind", "leaderboard")


def note(board: Dict[str, Any]) -> str:
    lines = [f"**Leaderboard of {len(board['entries'])} models** ({board['mode']} scorer; pool {board['pool']} of "
             f"{board['pool_size']}; scenarios: {', '.join(board['scenarios'])})", "",
             "| rank | model | in pool | Score_open | Score_hidden | raw score | checklist | source |",
             "|---|---|---|---|---|---|---|---|"]
    for r in board["entries"]:
        lines.append(f"| {r['rank']} | {r['name']} | {r['rank_in_pool']} of {r['pool_of']} | {_f(r['score_open'])} | "
                     f"{_f(r['score_hidden'])} | {_f(r['raw'].get('raw_score'))} | {checklist(r['compliance'])} | "
                     f"`{r['source']}` |")
    return "\n".join(lines)


def print_table(board: Dict[str, Any], where: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"leaderboard ({board['mode']} scorer, pool {board['pool']})")
    for col in ("rank", "model", "in pool", "Score_open", "Score_hidden", "Score_full", "raw score", "checklist",
                "source"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("model", "source") else "right")
    for r in board["entries"]:
        table.add_row(str(r["rank"]), r["name"], f"{r['rank_in_pool']} of {r['pool_of']}", _f(r["score_open"]),
                      _f(r["score_hidden"]), _f(r["score_full"]), _f(r["raw"].get("raw_score")),
                      checklist(r["compliance"]), r["source"])  # fmt: skip
    console = Console(width=200)
    console.print(table)
    console.print("checklist: approved base · open data, no LLM output · not trained on the test set · within "
                  "limits (y yes, n no, ? unknown; reasons in each run's summary.json)")
    console.print(f"leaderboard: {where / 'leaderboard.json'} (python -m lec.score --ranks {where / 'leaderboard.json'})")


def checklist(compliance: Dict[str, Dict[str, str]]) -> str:
    """The four answers as four letters: y (yes), n (no), ? (unknown)."""
    from lec.compliance import QUESTIONS

    return "".join({"yes": "y", "no": "n"}.get(compliance.get(q, {}).get("answer"), "?") for q in QUESTIONS)


def _f(v: Optional[float]) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
