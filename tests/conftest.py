"""Shared fixtures: the default config and its plan, the tiny model materialised once per session, and a serving
Engine on it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# The hub is unreachable on CI machines: fail hub lookups at once instead of retrying for a minute.
# (huggingface_hub reads these at import, so they are set before anything imports it.)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

from lec import config, plan


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which turns -n into workers
def pytest_cmdline_main(config):
    """The suite runs on every core by default: `pytest` means `pytest -n auto --dist loadfile` (pytest-xdist; one
    worker runs each file, so a module's fixtures are made once). `-n 0` or `-p no:xdist` runs everything in this
    process (debugging; --pdb does too)."""
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return
    if config.option.numprocesses is None:
        config.option.numprocesses = "auto"
    if config.option.dist == "no" and config.option.numprocesses != 0:
        config.option.dist = "loadfile"


@pytest.fixture(scope="session", autouse=True)
def _compose_each_defaults_list_once():
    """Hydra composes conf/ in 0.4 s of CPU (22 files read, merged onto lec's schema), and the fast set composes
    ~350 times, nearly all the same few defaults lists with one value changed (`adapter.r=0`, …). Hydra itself
    composes in two steps: the config groups chosen (`hardware=rtx4090`) build the defaults list and the merged
    config, then the value overrides are applied to it (hydra/_internal/config_loader_impl.py, v1.3
    `_load_configuration_impl`). Here the first step is done once per set of group choices and kept; the second,
    Hydra's own `_apply_overrides_to_config`, runs on a deep copy every time (≈ 20 ms). Only successful
    compositions are kept, so every error is raised afresh, by Hydra; lec's own key check and validation
    (config.load) run every time; sweep overrides, an edited conf/ file or another conf dir go the whole way."""
    import copy

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    original = config.compose_raw
    cache: dict = {}

    def compose_raw(overrides=None, config_dir=None):
        overrides = list(overrides or [])
        root = Path(config_dir or config.CONF_DIR)
        config.check_override_keys(overrides)
        try:
            parsed = OverridesParser.create().parse_overrides(overrides=overrides)
        except HydraException as err:
            raise config.CompositionError(config.one_line(err)) from None
        if any(o.is_sweep_override() or o.is_hydra_override() for o in parsed):
            return original(overrides, config_dir)

        groups, values = [], []  # `hardware=rtx4090` (a folder of conf/) | `adapter.r=8`
        for o in parsed:
            is_group = o.key_or_group.startswith("hydra/") or (root / o.key_or_group).is_dir()
            (groups if is_group else values).append(o)
        stamp = max((p.stat().st_mtime_ns for p in root.rglob("*.yaml")), default=0)
        key = (tuple(o.input_line for o in groups), str(root), stamp)
        if key not in cache:
            cache[key] = original(list(key[0]), config_dir)
        cfg = copy.deepcopy(cache[key])
        try:
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        except HydraException as err:
            raise config.CompositionError(config.one_line(err)) from None
        return cfg

    config.compose_raw = compose_raw
    yield
    config.compose_raw = original


@pytest.fixture(scope="session")
def default_cfg() -> config.LecConfig:
    return config.compose([])


@pytest.fixture(scope="session")
def default_plan(default_cfg) -> plan.Plan:
    """The plan of the default run (what `python -m lec` with no overrides would do)."""
    return plan.build(default_cfg)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, default_cfg) -> Path:
    from lec.models import materialize_base

    return materialize_base(default_cfg.model, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def engine(default_plan, tiny_dir):
    from lec.serve.load import load_engine

    return load_engine(default_plan.serve, default_plan.model, base=str(tiny_dir))


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its schema migrated and nothing else in it (MLflow's Default experiment): what the
    first client call on a new mlflow.db makes by running its 50+ alembic migrations (3 s of CPU, more on a busy
    machine). Made once per test process."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def mlflow_db(tmp_path, _mlflow_template) -> Path:
    """tmp_path holding a migrated, empty mlflow.db: a test whose store is `outputs_dir={tmp_path}` (or
    `sqlite:///{tmp_path}/mlflow.db`) starts on it as on a new store, without the migration. Tests of how a new
    store is created (tests/test_track.py concurrent first starts, the e2e runs) start on no file at all."""
    import shutil

    shutil.copyfile(_mlflow_template, tmp_path / "mlflow.db")
    return tmp_path


@pytest.fixture
def keep_signal_handlers():
    """For a CLI's main() called in this process: its procs.entry_point() takes SIGTERM and SIGHUP for the
    process's lifetime; pytest's (and xdist's) handlers come back afterwards."""
    import signal

    from lec import procs

    saved = {sig: signal.getsignal(sig) for sig in procs.STOP_SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture
def tmpfs(tmp_path):
    """`tmpfs("3m")` → a fresh directory on a tmpfs of that size (writes past it fail with ENOSPC, like a full
    disk); unmounted after the test. Needs root (CI runs as root), else the test is skipped."""
    import subprocess

    mounted = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"disk-{len(mounted)}"
        mnt.mkdir()
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)]
        if os.geteuid() != 0 or subprocess.run(cmd).returncode:
            pytest.skip("mounting a tmpfs needs root")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)])


@contextlib.contextmanager
def uvicorn_thread(app):
    """`with uvicorn_thread(app) as url:` — the ASGI app on a real 127.0.0.1 port, served by a thread of this process."""
    import threading
    import time

    import uvicorn

    from lec.serve.process import free_port

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)
