"""A resumed evaluation against a fresh one (goal: a second start after a kill near the end takes ≤ 20 % of a fresh
run's wall time).

Three real `python -m lec.evaluate` runs of the tiny base model on the smoke suite (real helm-run, real server):
1. fresh: an empty request cache, timed start to end;
2. killed: the same command on another empty cache, kill -9 at `--kill-at` of the fresh run's wall time ("near the
   end"; its server and helm-run die with it);
3. resumed: the same command as 2 again, timed start to end: it re-asks only what was not answered.
The wall times include what every start pays (Python, HELM's imports, the server's start-up, the MLflow run).

    .venv/bin/python benchmarks/eval_resume.py [--instances 120] [--kill-at 0.9]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout

from lec.evaluate import helm  # noqa: E402


def answered(cache: Path) -> int:
    return len(helm.answered_requests(cache / "requests"))


def command(tmp: Path, name: str, cache: str, instances: int) -> list:
    return [sys.executable, "-m", "lec.evaluate", f"outputs_dir={tmp}", f"eval.cache_dir={tmp / cache}",
            f"hydra.run.dir={tmp / name}", "eval.eval_base=false", f"eval.max_eval_instances={instances}",
            f"eval.synthetic.n_eval={instances}"]  # fmt: skip


def timed(cmd: list) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=120, help="instances per scenario (the smoke suite's files)")
    ap.add_argument("--kill-at", type=float, default=0.9, help="the kill, as a fraction of the fresh run's wall time")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lec-resume-"))
    fresh = timed(command(tmp, "fresh", "c1", args.instances))
    total = answered(tmp / "c1")

    proc = subprocess.Popen(command(tmp, "killed", "c2", args.instances), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    start = time.perf_counter()
    while time.perf_counter() - start < args.kill_at * fresh and proc.poll() is None:
        time.sleep(0.2)
    if proc.poll() is not None:
        raise SystemExit("the evaluation finished before the kill: lower --kill-at")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(2)
    at_kill = answered(tmp / "c2")
    resumed = timed(command(tmp, "resumed", "c2", args.instances))
    print(f"tiny base model, smoke suite with {args.instances} instances per scenario: {total} distinct requests")
    print(f"fresh evaluation:                        {fresh:.1f} s")
    print(f"killed -9 at {args.kill_at:.0%} of that time, {at_kill} of {total} requests answered "
          f"({at_kill / total:.0%}); started again: {resumed:.1f} s")
    print(f"ratio resumed / fresh: {resumed / fresh:.2f} (goal ≤ 0.20)")


if __name__ == "__main__":
    main()
