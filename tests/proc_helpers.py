"""Finding and waiting for the processes a run started (tests/test_lifecycle.py, tests/evaluate/test_lifecycle.py):
the servers load <run dir>/config.yaml and helm-run writes <run dir>/helm, so their command lines name the test's
tmp dir; and waiting for a server a test started (lec.serve, mlflow server / ui) to answer."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Callable, List, Optional


def children(tmp: Path, lec: subprocess.Popen) -> List[str]:
    """Command lines of the processes that name `tmp` (what the run started), other than lec itself."""
    out = subprocess.run(["pgrep", "-af", str(tmp)], capture_output=True, text=True).stdout.splitlines()
    return [line for line in out if int(line.split()[0]) not in (lec.pid, os.getpid())]


def wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float, what: str, log: Optional[Path] = None) -> None:
    """Until `url`/health answers; fails at once, with the end of `log`, if `proc` exits. A refused connection or a
    read timeout (a server still starting on a loaded machine, the suite on every core) means "not yet"."""
    import requests

    def up() -> bool:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"{what} exited with code {proc.returncode}\n{tail}")
        try:
            return requests.get(f"{url}/health", timeout=2).ok
        except requests.RequestException:
            return False

    wait(up, timeout, what)
