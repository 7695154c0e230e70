"""lec/procs.py: children die with lec (even on kill -9), stop() ends whole process groups, signals become
`Stopped` and a true end state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from lec import procs


def _pids_with(marker: str):
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def _gone_within(marker: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _pids_with(marker):
            return True
        time.sleep(0.1)
    return False


def test_end_state_says_how_a_run_ended():
    assert procs.end_state(None) == ("FINISHED", "finished")
    assert procs.end_state(procs.Stopped(signal.SIGTERM)) == ("KILLED", "stopped by SIGTERM")
    assert procs.end_state(KeyboardInterrupt()) == ("KILLED", "stopped by SIGINT")
    status, reason = procs.end_state(ValueError("bad\nthing   here"))
    assert status == "FAILED" and reason == "ValueError: bad thing here"


def test_stop_ends_the_whole_process_group_and_escalates_to_sigkill():
    """A child that ignores SIGTERM and has a grandchild: both are gone after stop(), within grace + a little."""
    marker = f"lec-test-{uuid.uuid4().hex}"
    code = textwrap.dedent(f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "{marker}"])
        time.sleep(600)
    """)
    proc = procs.start([sys.executable, "-c", code, marker])
    deadline = time.monotonic() + 10
    while len(_pids_with(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_pids_with(marker)) == 2
    start = time.monotonic()
    procs.stop([proc], grace_s=1.0)
    assert proc.returncode == -signal.SIGKILL and time.monotonic() - start < 5
    assert _gone_within(marker, 5), "the grandchild outlived its group's stop"


def test_children_die_with_lec_when_it_is_killed_with_sigkill(tmp_path):
    """PR_SET_PDEATHSIG: a kill -9 of the lec process (no finally runs) still takes its servers with it."""
    marker = f"lec-test-{uuid.uuid4().hex}"
    parent = textwrap.dedent(f"""
        import sys, time
        from lec import procs
        procs.start([sys.executable, "-c", "import time; time.sleep(600)", "{marker}"])
        print("started", flush=True)
        time.sleep(600)
    """)
    lec = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    assert lec.stdout.readline().strip() == "started"
    assert _pids_with(marker)
    lec.send_signal(signal.SIGKILL)
    lec.wait(10)
    assert _gone_within(marker, 5), "a child outlived lec's kill -9"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_unwinds_through_child_and_stops_it(sig):
    """`entry_point` + `child`: SIGTERM/SIGHUP/SIGINT → the child is stopped, one line, exit 128 + N."""
    marker = f"lec-test-{uuid.uuid4().hex}"
    parent = textwrap.dedent(f"""
        import sys, time
        from lec import procs
        with procs.entry_point():
            with procs.child([sys.executable, "-c", "import time; time.sleep(600)", "{marker}"], grace_s=2):
                print("started", flush=True)
                time.sleep(600)
    """)
    lec = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert lec.stdout.readline().strip() == "started"
    lec.send_signal(sig)
    _, err = lec.communicate(timeout=15)
    assert lec.returncode == 128 + sig
    assert err.strip().splitlines() == [err.strip()] and signal.Signals(sig).name in err
    assert _gone_within(marker, 5)


def test_a_second_signal_during_the_unwind_does_not_cut_it_short():
    marker = f"lec-test-{uuid.uuid4().hex}"
    parent = textwrap.dedent(f"""
        import sys, time
        from lec import procs
        with procs.entry_point():
            try:
                print("started", flush=True)
                time.sleep(600)
            finally:
                print("cleaning", flush=True)
                time.sleep(1.0)  # a slow cleanup; the second SIGTERM arrives during it
                print("cleaned", flush=True)
    """)
    lec = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert lec.stdout.readline().strip() == "started"
    lec.send_signal(signal.SIGTERM)
    assert lec.stdout.readline().strip() == "cleaning"
    lec.send_signal(signal.SIGTERM)
    out, _ = lec.communicate(timeout=15)
    assert "cleaned" in out and lec.returncode == 128 + signal.SIGTERM
    assert os.path.exists("/proc/self")  # (the test process itself is untouched)
