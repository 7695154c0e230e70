"""Drive the real crfm-helm CLI: write prod_env, the run-entry conf, then `helm-run` and `helm-summarize`.

prod_env pitfall (stanford-crfm/helm v0.5.16 src/helm/clients/auto_client.py): since crfm-helm 0.5.5 a deployment
without an explicit `base_url` gets `base_url=None`, so lec always writes `args.base_url` for both the client and
the tokenizer.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import yaml

from lec import procs, progress
from lec import standby as lec_standby

log = logging.getLogger(__name__)
ORG = "lec"  # HELM model names are lec/<label>, e.g. lec/tuned, lec/base
PLUGIN = "lec.evaluate.helm_plugin"  # the closed-stage scenarios; also a `helm` entry point for users' own helm-run


@dataclass
class ServedModel:
    label: str  # "tuned" | "base" | a leaderboard entry's name
    url: str
    max_sequence_length: int
    end_of_text_token: str
    prefix_token: str
    identity: str  # lec/evaluate/identity.py, short: the request cache's shard

    @property
    def helm_name(self) -> str:  # what HELM's run names and stats carry: lec/<label>
        return f"{ORG}/{self.label}"

    @property
    def deployment(self) -> str:
        """HELM keys its request cache by the deployment's first path part (one SQLite file per host organisation,
        helm/clients/auto_client.py) and the request (which names the model): `lec-<identity>/<label>` gives each
        served model its own cache file, so another model under the same label never reads these answers."""
        return f"{ORG}-{self.identity}/{self.label}"


def answered_requests(request_cache: Path, identity: Optional[str] = None) -> List[str]:
    """The requests HELM's request cache holds answers for (its keys: JSON of the request,
    helm/common/key_value_store.py `request_to_key`), of one served identity or of all: what a resumed evaluation
    will not ask again."""
    keys: List[str] = []
    for db in sorted(request_cache.glob(f"{ORG}-{identity or '*'}.sqlite")):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as con:
                keys += [k for (k,) in con.execute("SELECT key FROM unnamed")]
        except sqlite3.OperationalError:  # helm-run has created the file, not yet its table
            pass
    return keys


@dataclass
class HelmRun:
    output_path: Path
    suite: str
    returncode: int
    seconds: float
    timed_out: bool
    log_path: Path


def write_prod_env(prod_env: Path, models: List[ServedModel], request_cache: Path) -> None:
    """HELM's local config dir: the served models' deployments, metadata and tokenizers, and `cache/` (where
    helm-run keeps its request cache) pointing at `request_cache`, which outlives the run dir."""
    prod_env.mkdir(parents=True, exist_ok=True)
    request_cache.mkdir(parents=True, exist_ok=True)
    link = prod_env / "cache"
    if link.is_symlink() or link.exists():
        if link.resolve() != request_cache.resolve():
            link.unlink() if link.is_symlink() else shutil.rmtree(link)
    if not link.exists():
        link.symlink_to(request_cache.resolve(), target_is_directory=True)
    deployments, metadata, tokenizers = [], [], []
    for m in models:
        deployments.append(
            {
                "name": m.deployment,
                "model_name": m.helm_name,
                "tokenizer_name": m.helm_name,
                "max_sequence_length": m.max_sequence_length,
                "client_spec": {
                    "class_name": "helm.clients.http_model_client.HTTPModelClient",
                    "args": {"base_url": m.url, "timeout": 600, "do_cache": True},
                },
            }
        )
        metadata.append(
            {
                "name": m.helm_name,
                "display_name": f"lec {m.label}",
                "description": f"lec-served model ({m.label})",
                "creator_organization_name": "lec",
                "access": "open",
                "release_date": datetime.date(2023, 10, 1),  # HELM parses a YAML date, not a string
                "tags": ["TEXT_MODEL_TAG", "FULL_FUNCTIONALITY_TEXT_MODEL_TAG"],
            }
        )
        tokenizers.append(
            {
                "name": m.helm_name,
                "tokenizer_spec": {
                    "class_name": "helm.tokenizers.http_model_tokenizer.HTTPModelTokenizer",
                    "args": {"base_url": m.url},
                },
                "end_of_text_token": m.end_of_text_token,
                "prefix_token": m.prefix_token,
            }
        )
    _dump(prod_env / "model_deployments.yaml", {"model_deployments": deployments})
    _dump(prod_env / "model_metadata.yaml", {"models": metadata})
    _dump(prod_env / "tokenizer_configs.yaml", {"tokenizer_configs": tokenizers})


def write_conf(path: Path, entries: List[str], models: List[ServedModel]) -> List[str]:
    """The run-entry conf (HOCON) with `{model}` filled in for every served model."""
    filled = [e.format(model=m.helm_name) for m in models for e in entries]
    lines = ["entries: ["] + [f'  {{description: "{d}", priority: 1}},' for d in filled] + ["]"]
    path.write_text("\n".join(lines) + "\n")
    return filled


# Common English abbreviations that end in "." without ending a sentence (lower-case, no final dot: Punkt's format).
PUNKT_ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "inc", "ltd",
                       "co", "corp", "u.s", "u.k", "no", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
                       "sept", "oct", "nov", "dec", "a.m", "p.m")  # fmt: skip


def write_punkt_tab(nltk_dir: Path) -> Path:
    """An English Punkt model in nltk's `punkt_tab` layout, written offline (nltk.download needs the network).

    HELM's metrics import nltk, which looks for `punkt_tab` at import; the bias metrics and BLEU really tokenize
    with it (`word_tokenize`). Punkt with no learned statistics splits sentences at . ! ? and keeps the listed
    abbreviations whole; nltk's downloaded model also learned collocations and sentence starters, so sentence
    boundaries can differ on rare abbreviations — word tokens, which is what HELM's metrics count, do not.
    """
    d = nltk_dir / "tokenizers" / "punkt_tab" / "english"
    d.mkdir(parents=True, exist_ok=True)
    for name in ("collocations.tab", "sent_starters.txt", "ortho_context.tab"):
        (d / name).touch()
    (d / "abbrev_types.txt").write_text("\n".join(PUNKT_ABBREVIATIONS) + "\n")
    return d


def helm_env(cache_dir: Path) -> Dict[str, str]:
    """Environment for HELM's CLIs: an offline NLTK data dir with punkt_tab, no tokenizer thread oversubscription."""
    nltk_dir = cache_dir / "nltk_data"
    write_punkt_tab(nltk_dir)
    env = dict(os.environ)
    env.update({"NLTK_DATA": str(nltk_dir), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
    return env


def _cli(name: str) -> str:
    """The CLI next to this interpreter (the venv's), else on PATH."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)


def standby(cache_dir: Path, log_path: Path) -> contextlib.AbstractContextManager:
    """helm-run's interpreter (crfm-helm's console script helm.benchmark.run:main), started now to import HELM and
    the metrics every suite's first run would import (~4 s of CPU) while the run trains; `helm_run` hands it its
    arguments (lec/standby.py)."""
    return lec_standby.ready("helm-run", "helm.benchmark.run:main", ("helm.benchmark.metrics.basic_metrics",),
                             log_path, env=helm_env(cache_dir))  # fmt: skip


def helm_run(
    conf: Path,
    output_path: Path,
    prod_env: Path,
    suite: str,
    max_eval_instances: int,
    num_threads: int,
    budget_s: float,
    cache_dir: Path,
    on_tick: Optional[Callable[[], None]] = None,
) -> HelmRun:
    """`helm-run` under a wall-clock budget; on overrun the process is stopped and finished runs are kept.
    `on_tick()` is called every 2 s while it runs (the evaluation keeps each run as soon as it finishes)."""
    args = [
        "--conf-paths", str(conf),
        "--suite", suite,
        "--max-eval-instances", str(max_eval_instances),
        "--num-threads", str(num_threads),
        "--output-path", str(output_path),
        "--local-path", str(prod_env),  # its cache/ is the request cache: answered requests are not asked again
        "--skip-completed-runs",  # a run that finished in this output dir (an evaluation started again) is kept
        "--plugins", PLUGIN,
    ]  # fmt: skip
    log_path = output_path / f"helm-run-{suite}.log"
    output_path.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    timed_out = False
    with log_path.open("w") as out:
        proc = lec_standby.hand("helm-run", args, log_path) or procs.start(
            [_cli("helm-run"), *args], stdout=out, stderr=subprocess.STDOUT, env=helm_env(cache_dir))
        with procs.stopping(proc, grace_s=5.0):  # stopped however this ends
            try:
                rc = progress.wait(proc, budget_s, f"helm-run {suite}",  # periodic "N runs finished" log lines
                                   lambda: f"{len(list((output_path / 'runs' / suite).glob('*/stats.json')))} runs "
                                   "finished", tick=on_tick)  # fmt: skip
            except subprocess.TimeoutExpired:
                timed_out = True
                procs.stop([proc], grace_s=30.0)  # finished runs are on disk; a run being written is left unfinished
                rc = proc.returncode
    return HelmRun(output_path, suite, rc, time.perf_counter() - start, timed_out, log_path)


# helm-summarize's console script (crfm-helm's entry point helm.benchmark.presentation.summarize:main), with a gate
# between its import and its work: the import is ~10 s of CPU (HELM's whole presentation layer; `helm-run --help`
# takes 1 s), so it is done while helm-run runs, and the work starts when helm-run has finished.
_SUMMARIZE = ("import sys\n"
              "from helm.benchmark.presentation.summarize import main\n"
              "if sys.stdin.readline().strip() == 'go':\n"
              "    sys.exit(main())\n")


@contextlib.contextmanager
def summarizer(output_path: Path, suite: str, cache_dir: Path, timeout_s: float = 600) -> Iterator[Callable[[], None]]:
    """`helm-summarize` (HELM's summaries for `helm-server`), started at once and importing while the block runs
    helm-run; the block calls the yielded `go()` once the runs are on disk, and the summaries are written while it
    reads them. Waited for at the block's end when let go (else it exits without work); stopped however the block
    ends. The metrics come from stats.json, so a failed summary is a warning."""
    cmd = [sys.executable, "-c", _SUMMARIZE, "--suite", suite, "--output-path", str(output_path),
           "--schema-validation", "warn", "-n", "1"]  # fmt: skip
    output_path.mkdir(parents=True, exist_ok=True)
    log_path = output_path / f"helm-summarize-{suite}.log"
    started = []
    with log_path.open("w") as out, procs.child(cmd, grace_s=5.0, stdin=subprocess.PIPE, stdout=out,
                                                stderr=subprocess.STDOUT, env=helm_env(cache_dir)) as proc:  # fmt: skip

        def go() -> None:
            with contextlib.suppress(BrokenPipeError):  # it died importing: its log says why, the wait below warns
                if any((output_path / "runs" / suite).glob("*/stats.json")):  # nothing finished: nothing to do
                    proc.stdin.write(b"go\n")
                    started.append(True)
                proc.stdin.close()

        try:
            yield go
        finally:
            if not proc.stdin.closed:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
        if started:
            try:
                if proc.wait(timeout_s) != 0:
                    log.warning("helm-summarize exited %d (see %s); the metrics come from stats.json",
                                proc.returncode, log_path)  # fmt: skip
            except subprocess.TimeoutExpired:  # summaries are for people
                log.warning("helm-summarize took over %.0f s; stopped", timeout_s)


def _dump(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def log_tail(path: Optional[Path], lines: int = 25) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
