"""Speed of the embedded default (issue: default run ≤ 120 s on 2 CPU cores; `--cfg job` ≤ 2 s).

Prints, in one run:
- `python -m lec --cfg job` (import + compose + validate) against a baseline measured here: an entry point that
  imports the training stack up front (`import torch, transformers, peft, mlflow`), which lec defers;
- the whole `python -m lec` wall time with its per-stage breakdown (from the run's summary.json) against the
  target, and each stage's share.

    .venv/bin/python benchmarks/default_run.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_TARGET_S, COMPOSE_TARGET_S = 120.0, 2.0


def timed(cmd: list[str], **kw) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, **kw)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    py = sys.executable

    compose = statistics.median(timed([py, "-m", "lec", "--cfg", "job"]) for _ in range(args.repeat))
    eager = statistics.median(timed([py, "-c", "import torch, transformers, peft, mlflow"]) for _ in range(args.repeat))
    print(f"compose  python -m lec --cfg job: {compose:.2f} s (target ≤ {COMPOSE_TARGET_S:.0f} s, "
          f"{compose / COMPOSE_TARGET_S:.2f}× the target)")  # fmt: skip
    print(f"baseline eager import of torch+transformers+peft+mlflow: {eager:.2f} s "
          f"→ lec's lazy entry point is {eager / compose:.1f}× faster")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        wall = timed([py, "-m", "lec", f"outputs_dir={tmp}", f"hydra.run.dir={tmp}/run"], timeout=1200)
        summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())
    stages = summary["timings"]
    overhead = wall - sum(stages.values())
    print(f"default  python -m lec: {wall:.1f} s wall (target ≤ {RUN_TARGET_S:.0f} s, {wall / RUN_TARGET_S:.2f}× the target)")
    for name, secs in list(stages.items()) + [("startup + MLflow + report", overhead)]:
        print(f"  {name:<28} {secs:6.1f} s  {secs / wall:5.1%}")
    tuned, base = summary["scores"]["tuned"]["raw_score"], summary["scores"]["base"]["raw_score"]
    print(f"scores   tuned raw {tuned:.3f} vs base {base:.3g}")
    if wall > RUN_TARGET_S or compose > COMPOSE_TARGET_S:
        sys.exit(1)


if __name__ == "__main__":
    main()
