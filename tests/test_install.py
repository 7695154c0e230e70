"""lec as an installed package (README "Install as a package"): a wheel built from this checkout, installed into a
fresh venv and run from an empty directory, composes and runs the default, and takes a user's own config options
from their own directory (hydra.searchpath) with lec's schema checks.

The fresh venv must use the dependencies already installed (no network) without seeing this environment's lec
(an editable install of some checkout). It is made with `venv --without-pip`; a `.pth` file in its site-packages
names one extra directory, a farm of symlinks to every entry of this interpreter's site-packages except lec's own
(`lec`, `lec-*.dist-info`, `__editable__*`). A path named in a `.pth` file is only appended to sys.path, its own
`.pth` files are not run, so nothing of the editable lec is importable or listed in importlib.metadata. The
dependencies' console scripts (helm-run, helm-summarize, …) are copied into the venv's bin with its python in the
shebang: `pip install lec.whl` with dependencies would put them there, and lec runs the ones next to its python.
pip itself comes from this interpreter (`pip --python <venv python>`), so the venv needs none of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # this environment's scripts
SMALL = ["train.max_steps=5", "eval.max_eval_instances=3", "eval.eval_base=false"]  # the default, in about a minute
ONE_ENTRY = "eval.entries=['mmlu:subject=number_order,model={model},data_augmentation=canonical']"


def _pyproject_packages() -> list[str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_pyproject_lists_every_subpackage():
    """pyproject.toml lists lec's packages by hand (the conf/ → lec.conf mapping rules out packages.find), so a new
    subpackage that is not listed would be missing from the wheel."""
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lec").rglob("__init__.py")}
    assert sorted(found | {"lec.conf"}) == sorted(_pyproject_packages())


# --- the installed wheel ------------------------------------------------------------------------------------------


@dataclass
class Venv:
    python: Path
    site: Path  # its site-packages
    env: dict  # PATH with its bin first and this environment's bin left out; no PYTHONPATH

    def run(self, *args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python), *args], cwd=cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip


def _source_copy(dest: Path) -> Path:
    """What a build reads (pyproject.toml, README.md, lec/, conf/), copied so no build/ or egg-info lands here."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("lec", "conf"):
        shutil.copytree(ROOT / d, dest / d, ignore=ignore)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, dest / f)
    return dest


def _deps_farm(dest: Path) -> Path:
    """Symlinks to this environment's installed distributions, lec's own left out."""
    dest.mkdir()
    for site in dict.fromkeys(Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")):
        for entry in site.iterdir():
            n = entry.name
            if n == "lec" or n.startswith(("lec-", "__editable__")) or n.endswith(".pth") or (dest / n).exists():
                continue
            (dest / n).symlink_to(entry)
    return dest


def _fresh_venv(path: Path, deps: Path) -> Venv:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())  # fmt: skip
    (site / "_lec_test_deps.pth").write_text(f"{deps}\n")
    for script in BIN.iterdir():  # the dependencies' CLIs, re-pointed at the fresh python
        target = path / "bin" / script.name
        if target.exists() or not script.is_file() or script.name.startswith(("activate", "pip", "python")):
            continue
        with script.open("rb") as f:
            first = f.readline()
        if first.startswith(b"#!") and b"python" in first:
            target.write_bytes(f"#!{python}\n".encode() + script.read_bytes()[len(first):])
            target.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    path_dirs = [d for d in env.get("PATH", "").split(os.pathsep) if d and Path(d).resolve() != BIN.resolve()]
    env["PATH"] = os.pathsep.join([str(path / "bin"), *path_dirs])
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    return Venv(python, site, env)


def _pip(venv: Venv, *args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--python", str(venv.python), "--disable-pip-version-check", "install",
           "--no-deps", "--no-index", *args]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=venv.env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]


def _tree(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*") if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """The wheel built from a copy of the checkout, and the symlink farm of this environment's dependencies."""
    tmp = tmp_path_factory.mktemp("install")
    src = _source_copy(tmp / "src")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
           str(tmp / "dist"), str(src)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("lec-*.whl")
    return tmp, src, wheel, _deps_farm(tmp / "deps")


@pytest.fixture(scope="module")
def installed(build):
    tmp, _, wheel, deps = build
    venv = _fresh_venv(tmp / "venv", deps)
    _pip(venv, str(wheel))
    work = tmp / "work"
    work.mkdir()
    return venv, work


@pytest.fixture(scope="module")
def user_conf(build):
    """A user's own config dir: a model and a data mixture lec does not ship, and a model with a typo key."""
    tmp = build[0]
    d = tmp / "myconf"
    (d / "model").mkdir(parents=True)
    (d / "data").mkdir()
    (d / "model" / "mymodel.yaml").write_text(
        "# my own model: lec's tiny one, narrower\n"
        "defaults:\n  - tiny\n  - _self_\n"
        "name: mymodel\n"
        "tiny:\n  hidden_size: 64\n  intermediate_size: 128\n"
    )
    (d / "model" / "typo.yaml").write_text("defaults:\n  - tiny\n  - _self_\nname: typo\nlora_rnak: 8\n")
    rows = tmp / "mine.jsonl"
    rows.write_text("".join(json.dumps({"instruction": f"Add {i} and {i + 1}.", "input": "", "output": str(2 * i + 1)})
                            + "\n" for i in range(200)))  # fmt: skip
    (d / "data" / "mydata.yaml").write_text(
        "# my own mixture: one local jsonl file\n"
        "defaults:\n  - synthetic\n  - _self_\n"
        "name: mydata\n"
        "template: alpaca\n"
        f"sources:\n  - name: mine\n    local_path: {rows}\n    license: mine\n"
    )
    return d


@pytest.mark.e2e
def test_wheel_carries_config_and_data(build):
    _, _, wheel, _ = build
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {f"lec/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    for sub in ("evaluate/confs", "reference"):
        want |= {f"lec/{sub}/{p.name}" for p in (ROOT / "lec" / sub).iterdir() if p.is_file()}
    want |= {str(p.relative_to(ROOT)) for p in (ROOT / "lec").rglob("*.py")}
    assert want - names == set()
    assert "lec/conf/hydra/launcher/slurm_h100.yaml" in names and "lec/evaluate/confs/open_600.conf" in names


@pytest.mark.e2e
def test_sdist_builds_the_same_wheel(build, tmp_path):
    """The sdist keeps conf/ at its top (package-dir maps it again), so a wheel built from it carries the same files."""
    _, src, wheel, _ = build
    make = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    sdist = subprocess.run([sys.executable, "-c", make, str(tmp_path)], cwd=src, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert sdist.returncode == 0, sdist.stderr[-3000:]
    tarball = tmp_path / sdist.stdout.split()[-1]
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
           str(tmp_path / "dist"), str(tarball)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    (again,) = (tmp_path / "dist").glob("lec-*.whl")
    assert set(zipfile.ZipFile(again).namelist()) == set(zipfile.ZipFile(wheel).namelist())


@pytest.mark.e2e
def test_installed_lec_imports_from_the_venv_and_composes(installed):
    venv, work = installed
    out = venv.run("-c", "import lec, lec.config as c, importlib.metadata as m; "
                   "print(lec.__file__); print(c.CONF_DIR); print(m.distribution('lec')._path)", cwd=work)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lec_file, conf_dir, dist = map(Path, out.stdout.split())
    assert lec_file.is_relative_to(venv.site) and conf_dir == venv.site / "lec" / "conf" and dist.parent == venv.site
    job = venv.run("-m", "lec", "--cfg", "job", cwd=work)
    assert job.returncode == 0, job.stderr
    assert "name: tiny" in job.stdout and "name: synthetic" in job.stdout and "name: smoke" in job.stdout
    helm = venv.run("-c", "import helm, shutil; print(shutil.which('helm-run'))", cwd=work)
    assert Path(helm.stdout.strip()).parent == venv.python.parent  # the venv's own helm-run, not this env's
    usage = venv.run("-m", "lec", "--help", cwd=work)
    assert usage.returncode == 0, usage.stderr
    models = ", ".join(sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")))
    assert f"model: {models}" in usage.stdout and "eval: " in usage.stdout
    assert list(work.iterdir()) == []  # composing writes nothing


@pytest.mark.e2e
def test_installed_lec_runs_the_default_in_an_empty_dir(installed):
    venv, work = installed
    before = _tree(venv.site / "lec")
    out = venv.run("-m", "lec", *SMALL, cwd=work, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert sorted(p.name for p in work.iterdir()) == ["outputs"]  # nothing else lands in the working dir
    (run_dir,) = (work / "outputs" / "runs").iterdir()
    assert (run_dir / "helm" / "runs" / "smoke").is_dir() and (work / "outputs" / "mlflow.db").is_file()
    assert (work / "outputs" / "cache").is_dir()  # the tiny model and NLTK data: under outputs_dir, not site-packages
    assert _tree(venv.site / "lec") == before  # the installed package is never written to


@pytest.mark.e2e
def test_user_config_dir_adds_options_to_the_installed_lec(installed, user_conf):
    venv, work = installed
    search = f"hydra.searchpath=[file://{user_conf}]"
    job = venv.run("-m", "lec", search, "model=mymodel", "data=mydata", "--cfg", "job", cwd=work)
    assert job.returncode == 0, job.stderr
    assert "name: mymodel" in job.stdout and "hidden_size: 64" in job.stdout and "name: mydata" in job.stdout
    out_dir = work / "user_outputs"
    out = venv.run("-m", "lec", search, "model=mymodel", "data=mydata", f"outputs_dir={out_dir}", *SMALL, ONE_ENTRY,
                   cwd=work, timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    (run_dir,) = (out_dir / "runs").iterdir()
    cfg = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "name: mymodel" in cfg and "hidden_size: 64" in cfg and "local_path: " + str(user_conf.parent) in cfg
    curation = json.loads(next(run_dir.rglob("curation.json")).read_text())
    assert curation["curation/mine/rows_in"] == 200  # the rows of the user's own jsonl were trained on


@pytest.mark.e2e
def test_user_option_with_a_bad_key_fails_in_one_line(installed, user_conf):
    venv, work = installed
    for extra in ([], ["--cfg", "job"]):
        out = venv.run("-m", "lec", f"hydra.searchpath=[file://{user_conf}]", "model=typo", *extra, cwd=work)
        assert out.returncode == 2, out.stderr
        (line,) = out.stderr.strip().splitlines()
        assert line.startswith("lec: invalid config: model/typo: unknown key 'model.lora_rnak'"), line
        assert "valid keys: name, hf_id" in line
    missing = venv.run("-m", "lec", f"hydra.searchpath=[file://{user_conf}]", "model=mymodle", cwd=work)
    assert missing.returncode == 2 and "available: " in missing.stderr and "mymodel" in missing.stderr


@pytest.mark.e2e
def test_editable_install_reads_the_checkout_conf(build, tmp_path):
    """`pip install -e .` (scripts/setup.sh): the lec.conf mapping must leave CONF_DIR at the checkout's conf/."""
    tmp, src, _, deps = build
    venv = _fresh_venv(tmp_path / "venv", deps)
    _pip(venv, "--no-build-isolation", "-e", str(src))
    out = venv.run("-c", "import lec.config as c; print(c.__file__); print(c.CONF_DIR)", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(src / "lec" / "config.py"), str(src / "conf")]
    job = venv.run("-m", "lec", "--cfg", "job", cwd=tmp_path)
    assert job.returncode == 0 and "name: tiny" in job.stdout, job.stderr
