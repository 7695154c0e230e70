"""How long lec takes to stop cleanly under each fault, on the embedded default cut to CI size.

    python benchmarks/fault_stops.py            # one round of each fault; a table fault → outcome → seconds

Each fault is delivered while `helm-run` is evaluating (both model servers up), except the disk faults, which
happen where they happen. "Clean" means: lec exited and no process whose command line names the run's outputs dir
is left (the servers load <run dir>/config.yaml, helm-run writes <run dir>/helm). The goal is 15 s
(tests/test_lifecycle.py asserts it; this prints what it is)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["experiment=ci_small", "train.max_steps=2", "eval.eval_base=true"]


def _children(tmp: Path, pid: int) -> list:
    """Command lines of the processes that name the run's outputs dir, other than lec itself."""
    out = subprocess.run(["pgrep", "-af", str(tmp)], capture_output=True, text=True).stdout.splitlines()
    return [line for line in out if int(line.split()[0]) not in (pid, os.getpid())]


def _until(pred, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.05)


def _status(tmp: Path, uri: str = "") -> str:
    client = MlflowClient(uri or f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("lec")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    ended = [r.info.status if r.info.status == "FINISHED" else f"{r.info.status} ({r.data.tags.get('lec.end', '')[:40]})"
             for r in runs]  # fmt: skip
    return ", ".join(sorted(ended))


def signal_during_evaluate(sig: int, *extra: str) -> tuple:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        flags = [e for e in extra if e.startswith("-")]
        cmd = [sys.executable, "-m", "lec", *flags, f"outputs_dir={tmp}", *SMALL, *(e for e in extra if e not in flags)]
        lec = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _until(lambda: any("helm" in c for c in _children(tmp, lec.pid)) or lec.poll() is not None, 300)
        sent = time.monotonic()
        lec.send_signal(sig)
        if sig == signal.SIGKILL:
            lec.wait()
        else:
            lec.communicate(timeout=60)
        _until(lambda: not _children(tmp, lec.pid), 60)
        took = time.monotonic() - sent
        left = len(_children(tmp, lec.pid))
        if sig == signal.SIGKILL:  # what the next lec start finds
            subprocess.run([sys.executable, "-m", "lec.runs", "--reap", f"outputs_dir={tmp}"], cwd=ROOT,
                           capture_output=True, timeout=120)  # fmt: skip
        return took, f"exit {lec.returncode}, {left} processes left, runs: {_status(tmp)}"


def full_disk() -> tuple:
    with tempfile.TemporaryDirectory() as d:
        tmp, mnt = Path(d), Path(d) / "disk"
        mnt.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)]).returncode:
            return float("nan"), "skipped (mounting a tmpfs needs root)"
        try:
            uri = f"sqlite:///{tmp}/mlflow.db"
            start = time.monotonic()
            out = subprocess.run([sys.executable, "-m", "lec", f"outputs_dir={mnt}", f"mlflow.tracking_uri={uri}",
                                  *SMALL], cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
            took = time.monotonic() - start
            partial = [p.name for p in mnt.rglob("train.jsonl*")]
            return took, f"exit {out.returncode}: `{out.stderr.strip().splitlines()[-1][:90]}…`, partial files: " \
                         f"{partial or 'none'}, runs: {_status(tmp, uri)}"  # fmt: skip
        finally:
            subprocess.run(["umount", "-l", str(mnt)])


def unwritable_outputs() -> tuple:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "file").write_text("")
        start = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "lec", f"outputs_dir={d}/file/outputs"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        return time.monotonic() - start, f"exit {out.returncode}: `{out.stderr.strip()[:90]}…`"


def main() -> None:
    faults = [
        ("SIGTERM during evaluate", lambda: signal_during_evaluate(signal.SIGTERM)),
        ("SIGINT (Ctrl-C) during evaluate", lambda: signal_during_evaluate(signal.SIGINT)),
        ("SIGHUP during evaluate", lambda: signal_during_evaluate(signal.SIGHUP)),
        ("kill -9 during evaluate (then lec.runs --reap)", lambda: signal_during_evaluate(signal.SIGKILL)),
        ("SIGTERM to a sweep (basic launcher)", lambda: signal_during_evaluate(signal.SIGTERM, "-m", "adapter.r=4,8")),
        ("SIGTERM to a sweep (submitit_local)",
         lambda: signal_during_evaluate(signal.SIGTERM, "-m", "hydra/launcher=submitit_local", "adapter.r=4")),
        ("disk full during curate (3 MB outputs_dir)", full_disk),
        ("unwritable outputs_dir", unwritable_outputs),
    ]
    goal = 15.0  # s: the bound for a signalled stop (servers, helm-run and their groups gone)
    print("| fault | outcome | seconds to a clean stop | ÷ 15 s goal |\n|---|---|---|---|")
    for name, fault in faults:
        took, outcome = fault()
        print(f"| {name} | {outcome} | {took:.1f} | {took / goal:.2f} |", flush=True)


if __name__ == "__main__":
    main()
