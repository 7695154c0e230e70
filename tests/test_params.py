"""params.yaml is DVC's Hydra composition of conf/ with no overrides, byte for byte. The composition is done by DVC's
own function (dvc/utils/hydra.py `compose_and_dump`, what `dvc exp run` calls: compose, resolve interpolations, drop
the `hydra:` node, `OmegaConf.to_yaml`) with the settings of the committed .dvc/config, in a fresh process that finds
lec's schema the way DVC's does (hydra_plugins/lec_schema.py). After editing conf/, regenerate params.yaml with
`python tests/test_params.py` (or by any `dvc exp run` without -S)."""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from lec import config

ROOT = Path(__file__).resolve().parents[1]

# dvc/repo/experiments/queue/base.py `_update_params`, for the default params file: the same arguments, from the
# same config keys and defaults (hydra.config_dir → conf, config_name → config, plugins_path → the repo root)
COMPOSE = """
import os, sys
from dvc.config import Config
from dvc.utils.hydra import compose_and_dump
root, out, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
hydra = Config(dvc_dir=os.path.join(root, ".dvc"))["hydra"]
assert hydra.get("enabled"), ".dvc/config: hydra.enabled is not true"
compose_and_dump(out, os.path.join(root, hydra.get("config_dir", "conf")), None, hydra.get("config_name", "config"),
                 os.path.join(root, hydra.get("plugins_path", "")), overrides)
"""


def dvc_compose(out: Path, overrides=(), cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """params.yaml text as `dvc exp run [-S o …]` would write it, into `out`."""
    return subprocess.run([sys.executable, "-c", COMPOSE, str(ROOT), str(out), *overrides], cwd=cwd,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_committed_params_yaml_is_dvc_composition_of_conf(tmp_path):
    out = dvc_compose(tmp_path / "params.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    composed, committed = (tmp_path / "params.yaml").read_text(), (ROOT / "params.yaml").read_text()
    diff = "".join(difflib.unified_diff(committed.splitlines(True), composed.splitlines(True), "params.yaml",
                                        "composition of conf/"))  # fmt: skip
    assert composed == committed, f"params.yaml is stale; regenerate: python tests/test_params.py\n{diff}"
    params = OmegaConf.create(committed)
    assert "hydra" not in params and "${" not in committed  # compose() drops hydra:, resolve() every ${…}
    assert config.to_container(config.load(params)) == config.to_container(config.compose([]))  # `python -m lec`


def test_overrides_compose_like_python_m_lec_and_typos_fail_in_dvc(tmp_path):
    overrides = ["experiment=ci_small", "adapter.r=8", "eval.max_eval_instances=3"]
    out = dvc_compose(tmp_path / "params.yaml", overrides, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    cfg = config.load(OmegaConf.load(tmp_path / "params.yaml"))
    assert (cfg.adapter.r, cfg.eval.max_eval_instances, cfg.train.max_steps) == (8, 3, 12)  # all three kept
    assert config.to_container(cfg) == config.to_container(config.compose(overrides))
    out = dvc_compose(tmp_path / "bad.yaml", ["adapter.rr=8"], cwd=tmp_path)  # lec's schema is struct in DVC too
    assert out.returncode != 0 and "rr" in out.stderr and not (tmp_path / "bad.yaml").exists()


def test_dvc_yaml_params_exist_in_params_yaml():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for key in stage.get("params", []):
            node = params
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"dvc.yaml {name}.params: {key} not in params.yaml"
                node = node[part]


def test_dvc_repo_is_committed_with_hydra_on_and_analytics_off():
    from dvc.config import Config

    dvc = Config(dvc_dir=str(ROOT / ".dvc"))
    assert dvc["hydra"]["enabled"] is True and dvc["core"]["analytics"] is False
    tracked = ("dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore", "hydra_plugins/lec_schema.py")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "check-ignore", *tracked], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1 and not out.stdout, f"git-ignored: {out.stdout}"  # 1 = none of them is ignored
    out = subprocess.run(["git", "check-ignore", ".dvc/cache/x", ".dvc/tmp/x", "outputs/x", "dvc_plots/index.html"],
                         cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert len(out.stdout.split()) == 4, out.stdout  # DVC's cache and tmp, the pipeline outputs, the plots page


if __name__ == "__main__":  # regenerate the committed params.yaml from conf/
    res = dvc_compose(ROOT / "params.yaml")
    sys.stderr.write(res.stderr)
    print(f"wrote {ROOT / 'params.yaml'}" if res.returncode == 0 else "failed")
    sys.exit(res.returncode)
