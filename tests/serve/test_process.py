"""lec/serve/process.py: a standby server (imported while the run trains) serves the first model asked for; an unused
or dead standby is stopped and never leaves a process behind."""

from __future__ import annotations

import os

import pytest
import requests
import yaml

from lec import config
from lec.serve import process


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not alive
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


@pytest.mark.e2e  # two real server start-ups
def test_the_standby_server_serves_the_first_model_and_then_a_fresh_one_starts(tmp_path, default_cfg, tiny_dir):
    params = tmp_path / "config.yaml"
    params.write_text(yaml.safe_dump(config.to_container(default_cfg)))
    with process.standby(tmp_path / "server-standby.log"):
        standby = process._standby[0]
        specs = [process.ServerSpec(params, tmp_path / f"server-{n}.log", base=tiny_dir, name=n) for n in ("a", "b")]
        with process.serving(specs, timeout_s=180) as urls:
            assert process._standby == []
            assert [requests.get(f"{u}/health", timeout=10).json()["model"] for u in urls] == ["a", "b"]
            assert "serving a on" in (tmp_path / "server-a.log").read_text()  # its log moved to the spec's file
            assert _alive(standby.pid)
        assert not _alive(standby.pid)  # `serving` stopped it like any server


def test_an_unused_or_dead_standby_is_stopped_and_a_fresh_server_starts(tmp_path):
    with process.standby(tmp_path / "server-standby.log"):
        unused = process._standby[0]
    assert not _alive(unused.pid) and process._standby == []

    with process.standby(tmp_path / "server-standby.log"):
        dead = process._standby[0]
        dead.kill()
        dead.wait()
        proc, _ = process.start(process.ServerSpec(tmp_path / "config.yaml", tmp_path / "server.log", name="fresh"))
        try:  # a new `python -m lec.serve` for this model, not the dead one
            assert proc.pid != dead.pid and process._standby == [] and proc.args[1:3] == ["-m", "lec.serve"]
            assert "--standby" not in proc.args and "fresh" in proc.args
        finally:
            process.stop(proc, grace_s=1)
