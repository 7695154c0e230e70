"""Compare runs as pictures: `python -m lec.compare <sweep dir | parent run id>` or `--runs ID ID …`.

Writes into `--out` (default `<sweep dir>/compare`, or `outputs/compare/<first run id>`):
- `objective.png`: the objective against each swept hyperparameter (one panel each; the best job starred),
- `scenarios.png`: per-scenario scores (the challenge's per-scenario means) of each run side by side, and the
  untuned base model's,
- `loss.png`: the training-loss curves overlaid, and the validation-loss curves beside them; below them the benchmark
  curves (train.bench_every_steps): open- and closed-stage means and their gap, against the same steps,
- `index.html`: a table of the runs (status, objective, swept values, errors) with the three plots,
and logs them to the sweep's parent run under `compare/` (or to `--log-to RUN_ID`). A sweep calls this by itself at
its end (`sweep.compare=true`).
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from lec.config import Direction, SweepConfig

NOT_SWEPT = ("run_name", "outputs_dir", "tracking_uri", "experiment", "mlflow.", "sweep.")  # params that say where a run went, not what it is
MAX_BARS = 12  # runs shown in the scenario plot (the best ones)
_SPLIT = re.compile(r",(?=[\w./+~-]+=)")  # override_dirname "a=1,b=[x,y]" → ["a=1", "b=[x,y]"]


def latest_children(client, experiment_id: str, parent_id: str) -> List[Any]:
    """The parent's children, one per override string: the latest attempt (a resumed sweep may retry a job)."""
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=5000,
                              order_by=["attributes.start_time ASC"])  # fmt: skip
    from lec.track import latest_per_overrides

    return sorted(latest_per_overrides(runs).values(), key=lambda r: int(r.data.tags.get("lec.sweep.job", 0)))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display in sweeps, on clusters or in CI
    import matplotlib.pyplot as plt

    return plt


def short(v: Optional[str]) -> str:
    """A value as a legend shows it: 0.00030000000000000003 → 0.0003, 16.0 → 16; text as it is."""
    if v is None:
        return "?"
    try:
        x = float(v)
    except ValueError:
        return str(v)
    if x.is_integer() and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.3g}"


def label(run, keys: Sequence[str] = ()) -> str:
    """A run's name in legends: its values of the swept keys (`r=8 lr=0.0003`), else its overrides / name."""
    if keys:
        return " ".join(f"{k.removeprefix('choice.').split('.')[-1]}={short(value(run, k))}" for k in keys)
    return run.data.tags.get("lec.sweep.overrides") or run.info.run_name or run.info.run_id[:8]


def labels(runs: Sequence[Any], keys: Sequence[str] = ()) -> List[str]:
    """Each run's legend name, cut to 40 characters; names that would be equal get the run id's start."""
    names = [label(r, keys)[:40] for r in runs]
    return [f"{n} ({r.info.run_id[:6]})" if names.count(n) > 1 else n for n, r in zip(names, runs)]


def _log_y(ax) -> None:
    """A log y axis with plain numbers at 1, 2, 5 × 10^k (0.2, 0.5, 1, 2), not 2 × 10⁻¹."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _save(fig, path: Path) -> Path:
    """Save the PNG with what its axes say (titles, axis labels, scales, legend entries, x ticks) in its metadata
    ("lec.axes", JSON): a test reads the picture's own description."""
    axes = [{"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(), "xscale": ax.get_xscale(),
             "yscale": ax.get_yscale(), "xticks": [t.get_text() for t in ax.get_xticklabels()],
             "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []}
            for ax in fig.axes]  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Description": json.dumps({"lec.axes": axes})})
    return path


def _overrides(run) -> Dict[str, str]:
    """A sweep job's overrides as {key: value} (a group choice `data=x` → `choice.data`): what was swept, as typed."""
    out = {}
    for part in _SPLIT.split(run.data.tags.get("lec.sweep.overrides", "")):
        if "=" in part:
            k, v = part.split("=", 1)
            k = k.lstrip("+~")
            out[k if "." in k else f"choice.{k}"] = v
    return out


def value(run, key: str) -> Optional[str]:
    """A run's value of a swept key: its override when it was swept (`adapter.r=8`), else the logged param (the plan's
    `train.lora.r`, `choice.data`)."""
    return _overrides(run).get(key, run.data.params.get(key))


def swept_keys(runs: Sequence[Any]) -> List[str]:
    """The hyperparameters that differ between the runs, as param names (a group choice `data=x` → `choice.data`)."""
    keys: List[str] = []
    for r in runs:
        keys += [k for k in _overrides(r) if k not in keys and not k.startswith(NOT_SWEPT)]
    if not keys:  # runs that are not from one sweep: every param whose value differs, groups before their fields
        params = [r.data.params for r in runs]
        differ = sorted(k for k in set().union(*params) if len({p.get(k) for p in params}) > 1)
        groups = {k.split(".", 1)[1] for k in differ if k.startswith("choice.")}
        keys = [k for k in differ if not k.startswith(NOT_SWEPT) and k.split(".", 1)[0] not in groups]
    return [k for k in keys if len({value(r, k) for r in runs}) > 1 or len(runs) == 1][:8]


def _numbers(values: Sequence[Optional[str]]) -> Optional[List[float]]:
    try:
        return [float(v) for v in values]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def plot_objective(runs: Sequence[Any], keys: List[str], objective: SweepConfig, path: Path) -> Optional[Path]:
    from lec.track import objective_of

    plt = _pyplot()

    if not keys:
        return None
    ys = [objective_of(r.data.metrics, objective) for r in runs]
    ok = [i for i, y in enumerate(ys) if math.isfinite(y)]
    sign = 1 if objective.direction == "maximize" else -1
    best = max(ok, key=lambda i: sign * ys[i]) if ok else None
    fig, axes = plt.subplots(1, len(keys), figsize=(max(6.4, 4.2 * len(keys)), 3.8), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], keys):
        raw = [value(r, key) for r in runs]
        nums = _numbers(raw)
        if nums is not None:
            xs = nums
            if min(nums) > 0 and max(nums) / min(nums) >= 10:  # a learning rate, a rank: ticks at the values run
                ax.set_xscale("log")
                ticks = sorted(set(nums))
                ax.set_xticks(ticks, [short(str(t)) for t in ticks])
                ax.minorticks_off()
        else:
            cats = list(dict.fromkeys(str(v) for v in raw))
            xs = [cats.index(str(v)) for v in raw]
            ax.set_xticks(range(len(cats)), cats, rotation=20, ha="right")
            ax.set_xlim(-0.5, len(cats) - 0.5)
        ax.scatter([xs[i] for i in ok], [ys[i] for i in ok], s=50, color="tab:blue", zorder=3, label="job")
        if best is not None:
            ax.scatter([xs[best]], [ys[best]], s=220, marker="*", color="tab:orange", zorder=4, label="best")
        failed = [i for i in range(len(runs)) if i not in ok]
        if failed:
            ax.scatter([xs[i] for i in failed], [0.0] * len(failed), marker="x", s=60, color="tab:red", zorder=3,
                       label="failed (at 0)")  # fmt: skip
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(objective.objective)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(f"{objective.objective} ({objective.direction.value}) vs swept hyperparameters, {len(runs)} runs",
                 fontsize=10)  # fmt: skip
    _save(fig, path)
    plt.close(fig)
    return path


def scenario_scores(run, model: str = "") -> Dict[str, float]:
    """The challenge's per-scenario means (`challenge/mean/<scenario>`, the base model's under `untuned/`); without
    them, the run's HELM metrics."""
    from lec.track import metric_prefix

    m, pre = run.data.metrics, metric_prefix(model or "tuned")
    out = {k.split("/")[-1]: v for k, v in m.items() if k.startswith(f"{pre}challenge/mean/")
           and not k.endswith("/raw_score")}  # fmt: skip
    return out or {k.removeprefix(f"{pre}helm/"): v for k, v in m.items() if k.startswith(f"{pre}helm/")}


def plot_scenarios(runs: Sequence[Any], keys: List[str], objective: SweepConfig, path: Path) -> Optional[Path]:
    """Each run's per-scenario means (best runs first) and, hatched grey, the untuned base model's: what tuning
    bought per scenario."""
    from lec.track import objective_of

    plt = _pyplot()

    scored = [r for r in runs if scenario_scores(r)]
    if not scored:
        return None
    sign = -1 if objective.direction == "maximize" else 1
    scored.sort(key=lambda r: sign * objective_of(r.data.metrics, objective) if math.isfinite(
        objective_of(r.data.metrics, objective)) else math.inf)  # fmt: skip
    scored = scored[:MAX_BARS]
    base = next((scenario_scores(r, "base") for r in scored if scenario_scores(r, "base")), {})
    bars = [(name, scenario_scores(r)) for name, r in zip(labels(scored, keys), scored)]
    bars += [("base model (untuned)", base)] if base else []
    scenarios = sorted(set().union(*(b for _, b in bars)))
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(scenarios) * max(1, len(bars) / 3)), 4.2))
    cmap = plt.get_cmap("tab10" if len(scored) <= 10 else "tab20")
    for j, (name, s) in enumerate(bars):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(scenarios))]
        is_base = base and j == len(bars) - 1
        ax.bar(xs, [s.get(sc, 0.0) for sc in scenarios], width, label=name,
               color="lightgrey" if is_base else cmap(j % cmap.N), hatch="//" if is_base else None,
               edgecolor="grey" if is_base else None)  # fmt: skip
    ax.set_xticks(range(len(scenarios)), scenarios, rotation=20 if len(scenarios) > 4 else 0, ha="right")
    ax.set_ylabel("mean of the scenario's challenge metrics")
    ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
    ax.set_title(f"per-scenario scores, {len(scored)} runs (best first)" + (" and the base model" if base else ""),
                 fontsize=10)  # fmt: skip
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)
    plt.close(fig)
    return path


BENCH_GROUPS = (("open", "-", "o"), ("closed", "--", "s"))  # (group, line style, marker) in the benchmark panel


def _bench_metric(run) -> Optional[str]:
    """The metric a run's benchmark curves are drawn on: acc when logged (lm-eval's multiple-choice accuracy)."""
    found = sorted(k.split("/", 2)[2] for k in run.data.metrics if k.startswith("bench/open_minus_closed/")
                   or k.startswith(("bench/open/", "bench/closed/")))  # fmt: skip
    return "acc" if "acc" in found else (found[0] if found else None)


def plot_loss(client, runs: Sequence[Any], keys: List[str], path: Path) -> Optional[Path]:
    """Training loss (left) and validation loss on the held-out rows (right) of each run, one colour per run; below
    them, when runs logged benchmark curves (train.bench_every_steps), each stage group's score (open solid, closed
    dashed) and the open-minus-closed gap, against the same optimizer steps."""
    plt = _pyplot()

    curves = []
    for name, r in zip(labels(runs, keys), runs):
        metric = _bench_metric(r)
        names = [f"bench/{g}/{metric}" for g in ("open", "closed", "open_minus_closed")] if metric else []
        hist = {key: sorted(client.get_metric_history(r.info.run_id, key), key=lambda h: h.step)
                for key in ("train/loss", "val/loss", *names)}  # fmt: skip
        if hist["train/loss"]:
            curves.append((name, metric, hist))
    if not curves:
        return None
    with_val = any(h["val/loss"] for _, _, h in curves)
    with_bench = any(m for _, m, _ in curves)
    cols, rows = 2 if with_val or with_bench else 1, 2 if with_bench else 1
    fig, axes = plt.subplots(rows, cols, figsize=(12.0 if cols == 2 else 7.5, 4.2 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    for j, (name, metric, hist) in enumerate(curves):
        color = cmap(j % cmap.N)
        values = [h.value for h in hist["train/loss"]]
        k = max(1, len(values) // 50)  # a moving average over ~2% of the run keeps the curves readable
        smooth = [sum(values[max(0, i - k + 1): i + 1]) / len(values[max(0, i - k + 1): i + 1]) for i in range(len(values))]
        axes[0][0].plot([h.step for h in hist["train/loss"]], smooth, label=name, linewidth=1.4, color=color)
        if with_val and hist["val/loss"]:
            axes[0][1].plot([h.step for h in hist["val/loss"]], [h.value for h in hist["val/loss"]], marker="o",
                            markersize=3, label=name, linewidth=1.4, color=color)  # fmt: skip
        if metric is None:
            continue
        for group, style, marker in BENCH_GROUPS:
            points = hist[f"bench/{group}/{metric}"]
            axes[1][0].plot([h.step for h in points], [h.value for h in points], linestyle=style, marker=marker,
                            markersize=3, linewidth=1.4, color=color,
                            label=group if len(curves) == 1 else f"{name} {group}")  # fmt: skip
        gap = hist[f"bench/open_minus_closed/{metric}"]
        axes[1][1].plot([h.step for h in gap], [h.value for h in gap], marker="o", markersize=3, linewidth=1.4,
                        color=color, label=name)  # fmt: skip
    axes[0][0].set_ylabel("train/loss" + (" (moving average)" if any(len(h["train/loss"]) >= 100 for _, _, h in curves)
                                           else ""))  # fmt: skip
    axes[0][0].set_title(f"training loss, {len(curves)} runs", fontsize=10)
    if with_val:
        axes[0][1].set_ylabel("val/loss")
        axes[0][1].set_title("validation loss (held-out rows)", fontsize=10)
    elif cols == 2:
        axes[0][1].set_visible(False)
    for ax in axes[0]:
        ax.set_xlabel("optimizer step")
        _log_y(ax)
        ax.grid(alpha=0.3, which="both")
    if with_bench:
        metric = next(m for _, m, _ in curves if m)
        axes[1][0].set_ylabel(f"bench/<group>/{metric}")
        if metric.startswith("acc"):  # an accuracy: the whole 0–1 scale, so chance and the ceiling show
            axes[1][0].set_ylim(-0.02, 1.02)
        axes[1][0].set_title("benchmark: open-stage (solid), closed-stage (dashed) means", fontsize=10)
        axes[1][1].set_ylabel(f"bench/open_minus_closed/{metric}")
        axes[1][1].set_title("open minus closed (the stage gap)", fontsize=10)
        axes[1][1].axhline(0.0, color="grey", linewidth=0.8)
        for ax in axes[1]:
            ax.set_xlabel("optimizer step")
            ax.grid(alpha=0.3)
        axes[1][0].legend(fontsize=7, loc="best")
        steps = [ax.get_xlim() for row in axes for ax in row if ax.get_visible()]
        for ax in (a for row in axes for a in row):  # the same steps on every panel: checks line up with the loss
            ax.set_xlim(min(lo for lo, _ in steps), max(hi for _, hi in steps))
    axes[0][-1 if with_val else 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)
    plt.close(fig)
    return path


def write_html(out: Path, title: str, runs: Sequence[Any], keys: List[str], objective: SweepConfig,
               plots: List[Path], note: str = "") -> Path:  # fmt: skip
    from lec.track import objective_of

    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["run", "status", objective.objective, *keys, "error"])
    rows = []
    for r in runs:
        obj = objective_of(r.data.metrics, objective)
        cells = [label(r), r.info.status, f"{obj:.4f}" if math.isfinite(obj) else "—",
                 *[value(r, k) or "" for k in keys], r.data.tags.get("lec.error", "")[:200]]  # fmt: skip
        cls = "" if r.info.status == "FINISHED" else ' class="failed"'
        rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
                    + f"<td><code>{r.info.run_id}</code></td></tr>")  # fmt: skip
    imgs = "".join(f'<h2>{p.stem}</h2><img src="{p.name}" alt="{p.stem}">' for p in plots)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px}}
tr.failed td{{background:#fdd}} img{{max-width:100%;border:1px solid #eee}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{html.escape(note)}</p>
<table><tr>{head}<th>run id</th></tr>{''.join(rows)}</table>{imgs}</body></html>"""
    path = out / "index.html"
    path.write_text(page)
    return path


def compare(client, runs: List[Any], out: Path, objective: SweepConfig, title: str, note: str = "") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    keys = swept_keys(runs)
    plots = [p for p in (plot_objective(runs, keys, objective, out / "objective.png"),
                         plot_scenarios(finished, keys, objective, out / "scenarios.png"),
                         plot_loss(client, finished, keys, out / "loss.png")) if p is not None]  # fmt: skip
    write_html(out, title, runs, keys, objective, plots, note)
    (out / "runs.json").write_text(json.dumps([{"run_id": r.info.run_id, "name": label(r), "status": r.info.status,
                                                "params": {k: value(r, k) for k in keys},
                                                "metrics": r.data.metrics} for r in runs], indent=2))  # fmt: skip
    return out


class CompareError(ValueError):
    """Nothing to compare (e.g. a run id that is no sweep's parent); the message says what was given."""


def compare_parent(uri: str, parent_id: str, out: Path) -> Path:
    """A sweep: its children (latest attempt per job) compared, plots + HTML logged to the parent under compare/."""
    from lec.track import client as mlflow_client

    client = mlflow_client(uri)
    parent = client.get_run(parent_id)
    tags = parent.data.tags
    objective = SweepConfig(objective=tags.get("lec.sweep.objective", SweepConfig.objective),
                            direction=Direction(tags.get("lec.sweep.direction", "maximize")))  # fmt: skip
    runs = latest_children(client, parent.info.experiment_id, parent_id)
    if not runs:
        raise CompareError(f"run {parent_id} has no child runs (is it a sweep's parent run?)")
    n_failed = sum(r.info.status != "FINISHED" for r in runs)
    note = f"{len(runs)} jobs, {n_failed} failed. Best: {tags.get('lec.sweep.best_overrides', '—')}"
    compare(client, runs, out, objective, parent.info.run_name or parent_id, note)
    client.log_artifacts(parent_id, str(out), "compare")
    return out


def _resolve(target: str, uri: Optional[str], outputs: Path):
    """A sweep dir (with mlflow_parent.json) → (tracking uri, parent id, default out dir); else a run id."""
    from lec.track import read_parent

    for d in (Path(target), outputs / "sweeps" / target):
        parent = read_parent(d) if d.is_dir() else None
        if parent is not None:
            return uri or parent.tracking_uri, parent.run_id, d / "compare"
    return uri or f"sqlite:///{outputs.resolve() / 'mlflow.db'}", target, outputs / "compare" / target


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lec.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep", nargs="?", help="a sweep dir (outputs/sweeps/<ts>) or a sweep's parent run id")
    p.add_argument("--runs", nargs="+", help="compare these run ids instead of a sweep")
    p.add_argument("--outputs-dir", default="outputs", help="where mlflow.db lives (default: outputs)")
    p.add_argument("--tracking-uri", help="default: sqlite:///<outputs-dir>/mlflow.db, or the sweep's own")
    p.add_argument("--out", help="where the PNGs and index.html go")
    p.add_argument("--objective", default=SweepConfig.objective, help="metric for --runs (default %(default)s)")
    p.add_argument("--direction", default="maximize", choices=["maximize", "minimize"])
    p.add_argument("--log-to", help="also log the plots to this run id (--runs only)")
    a = p.parse_args(argv)
    outputs = Path(a.outputs_dir)
    if bool(a.sweep) == bool(a.runs):
        p.error("give a sweep dir / parent run id, or --runs ID ID …")
    if a.sweep:
        uri, parent_id, out = _resolve(a.sweep, a.tracking_uri, outputs)
        try:
            out = compare_parent(uri, parent_id, Path(a.out) if a.out else out)
        except CompareError as err:
            p.error(str(err))
    else:
        from mlflow.exceptions import MlflowException

        uri = a.tracking_uri or f"sqlite:///{outputs.resolve() / 'mlflow.db'}"
        from lec.track import client as mlflow_client

        client = mlflow_client(uri)
        try:
            runs = [client.get_run(r) for r in a.runs]
        except MlflowException as err:
            p.error(f"{err.message} (tracking uri {uri})")
        out = compare(client, runs, Path(a.out) if a.out else outputs / "compare" / a.runs[0],
                      SweepConfig(objective=a.objective, direction=Direction(a.direction)), f"{len(runs)} lec runs")  # fmt: skip
        if a.log_to:
            client.log_artifacts(a.log_to, str(out), "compare")
    print(f"lec.compare: {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
