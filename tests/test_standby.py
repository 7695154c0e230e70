"""lec/standby.py: a standby interpreter runs the CLI it is handed (its output in the job's log), an unused or dead
one is stopped and leaves no process behind; the model server and helm-run start from theirs."""

from __future__ import annotations

import os
import sys

import pytest
import requests
import yaml

from lec import config, standby
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


def test_a_handed_standby_runs_the_cli_with_its_arguments_into_the_jobs_log(tmp_path):
    with standby.ready("echo", "json.tool:main", ["csv"], tmp_path / "standby-echo.log"):
        (tmp_path / "in.json").write_text('{"b": 1, "a": [2]}')
        proc = standby.hand("echo", ["--sort-keys", "--compact", str(tmp_path / "in.json")], tmp_path / "job.log")
        assert proc is not None and proc.wait(60) == 0
        assert (tmp_path / "job.log").read_text() == '{"a":[2],"b":1}\n'  # json.tool's output, in the job's log
        assert standby.hand("echo", [], tmp_path / "again.log") is None  # one job per standby
    assert "echo" in " ".join(proc.args) and str(tmp_path) in " ".join(proc.args)  # `ps` tells which run it serves


def test_an_unused_or_dead_standby_is_stopped_and_the_caller_starts_its_own(tmp_path):
    with standby.ready("idle", "json.tool:main", [], tmp_path / "standby-idle.log"):
        unused = standby._waiting["idle"]
    assert not _alive(unused.pid) and "idle" not in standby._waiting

    with standby.ready("dead", "json.tool:main", [], tmp_path / "standby-dead.log"):
        dead = standby._waiting["dead"]
        dead.kill()
        dead.wait()
        assert standby.hand("dead", [], tmp_path / "job.log") is None and "dead" not in standby._waiting

    with standby.ready("server", sys.executable, [], tmp_path / "standby-server.log"):  # a broken one: not its entry
        standby._waiting["server"].wait(60)
        proc, _ = process.start(process.ServerSpec(tmp_path / "config.yaml", tmp_path / "server.log", name="fresh"))
        try:  # a new `python -m lec.serve` for this model
            assert proc.args[1:3] == ["-m", "lec.serve"] and "fresh" in proc.args
        finally:
            process.stop(proc, grace_s=1)


@pytest.mark.e2e  # two real server start-ups
def test_the_standby_server_serves_the_first_model_and_a_fresh_one_the_second(tmp_path, default_cfg, tiny_dir):
    params = tmp_path / "config.yaml"
    params.write_text(yaml.safe_dump(config.to_container(default_cfg)))
    with process.standby(tmp_path / "standby-server.log"):
        waiting = standby._waiting["server"]
        specs = [process.ServerSpec(params, tmp_path / f"server-{n}.log", base=tiny_dir, name=n) for n in ("a", "b")]
        with process.serving(specs, timeout_s=180) as urls:
            assert "server" not in standby._waiting
            assert [requests.get(f"{u}/health", timeout=10).json()["model"] for u in urls] == ["a", "b"]
            assert "serving a on" in (tmp_path / "server-a.log").read_text()  # its log moved to the spec's file
            assert _alive(waiting.pid)
        assert not _alive(waiting.pid)  # `serving` stopped it like any server
