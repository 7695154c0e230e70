"""`python -m lec.runs [--reap [--stale-after S]] [key=value …]`: the store's runs, who runs them, and whether
that process is still there. The overrides pick the store as `python -m lec` would (`outputs_dir=…`,
`mlflow.tracking_uri=…`, `mlflow.experiment=…`).

A run whose process ended without closing it (kill -9, the OOM killer, a power cut) stays RUNNING in MLflow. Every
lec start marks such runs of this host KILLED (their pid is gone; `lec.pid_start` guards against a reused pid).
`--reap` does the same now, and with `--stale-after S` also marks the runs of other hosts (a SLURM node) whose
`lec.heartbeat` tag is older than S seconds (a live run refreshes it every 60 s).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

from rich.console import Console
from rich.table import Table

from lec import config, track


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lec.runs", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="outputs_dir=… / mlflow.tracking_uri=… (as for python -m lec)")
    parser.add_argument("--reap", action="store_true", help="mark RUNNING runs whose process is gone KILLED")
    parser.add_argument("--stale-after", type=float, default=None, metavar="S",
                        help="with --reap: also runs on other hosts whose heartbeat is older than S seconds")  # fmt: skip
    parser.add_argument("--all", action="store_true", help="every run, not only the RUNNING ones and the reaped")
    args = parser.parse_args(argv)
    if args.stale_after is not None and (not args.reap or args.stale_after <= 0):
        parser.error("--stale-after S needs --reap and S > 0")
    try:
        cfg = config.compose(args.overrides)
    except config.ConfigError as err:
        sys.stderr.write(f"lec: invalid config: {err}\n")
        return 2
    uri = config.tracking_uri(cfg)
    exp = track.experiment_id(uri, cfg.mlflow.experiment, cfg.outputs_dir, reap_dead=False)  # a listing changes nothing
    reaped = track.reap(uri, exp, args.stale_after) if args.reap else []
    c = track.client(uri)
    runs = c.search_runs([exp], None if args.all else "attributes.status = 'RUNNING'", max_results=1000,
                         order_by=["attributes.start_time DESC"])  # fmt: skip
    if not args.all:
        runs += [c.get_run(r.info.run_id) for r in reaped]
    table = Table(title=f"lec runs in {uri} (experiment {cfg.mlflow.experiment})")
    for col in ("run", "name", "status", "host", "pid", "process", "heartbeat", "end"):
        table.add_column(col)
    now = time.time()
    for r in runs:
        t = r.data.tags
        alive = track.is_alive(t)
        beat = f"{now - float(t['lec.heartbeat']):.0f} s ago" if "lec.heartbeat" in t and r.info.status == "RUNNING" else "—"
        process = {True: "alive", False: "gone", None: "other host"}[alive] if "lec.pid" in t else "—"
        table.add_row(r.info.run_id[:12], r.info.run_name or "", r.info.status, t.get("lec.host", "—"),
                      t.get("lec.pid", "—"), process, beat, t.get("lec.end", "")[:60])  # fmt: skip
    Console().print(table)
    print(f"{len(reaped)} run(s) marked KILLED" if args.reap else f"{len(runs)} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
