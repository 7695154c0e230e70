"""What a served model *is*, as a content hash: the key of its evaluation caches (HELM's request cache, lm-eval's).

    identity = sha256(base weights' files + adapter's files + serving format + decoding settings)

so a retrained checkpoint (other adapter bytes), another base, another prompt template or another served context
never reads another model's answers, while the same model evaluated again — after a kill, on another machine with
the cache on a shared path — reads every answer it already has. Files are hashed by content (weights included);
each file's digest is remembered by (path, size, mtime) in `<cache>/digests.json`, so a 15 GB base is read once.
A model that lec does not hold (a hub id not downloaded here, an endpoint someone else runs) has no content to hash:
its identity is its name (hub id + revision, or URL + served name), which the evaluation logs as weaker.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

from lec import files

CHUNK = 8 << 20  # bytes read per hashing step


@dataclass(frozen=True)
class Identity:
    digest: str  # sha256 hex
    by_content: bool  # False: only names were hashed (hub id, URL): a changed model behind the name is not seen

    @property
    def short(self) -> str:
        return self.digest[:16]


def of_model(weights: Optional[Path], adapter: Optional[Path], name: str, serving: Dict[str, object],
             cache: Path) -> Identity:  # fmt: skip
    """The identity of a model served from files: `weights` (a directory, or None for a hub id known by `name`),
    `adapter` (a PEFT or full fine-tuned directory, or None), `serving` (format + decoding settings, plain data)."""
    h = hashlib.sha256()
    _update(h, {"serving": serving})
    by_content = True
    if weights is not None and Path(weights).is_dir():
        _update(h, {"weights": dir_digests(Path(weights), cache)})
    else:
        by_content = False
        _update(h, {"weights": name})
    if adapter is not None:
        _update(h, {"adapter": dir_digests(Path(adapter), cache)})
    return Identity(h.hexdigest(), by_content)


def of_endpoint(url: str, served_name: str, serving: Dict[str, object]) -> Identity:
    h = hashlib.sha256()
    _update(h, {"endpoint": url.rstrip("/"), "model": served_name, "serving": serving})
    return Identity(h.hexdigest(), False)


def serving_settings(serve, context: Optional[int] = None) -> Dict[str, object]:
    """The parts of a ServePlan that change what the model answers (not where it listens or how it batches)."""
    keep = ("context", "prompt_template", "chat", "template_if_blank_lines_below", "cut_at", "strip_prefixes",
            "max_new_tokens_limit", "device")  # fmt: skip
    plain = asdict(serve)
    out = {k: (v.value if hasattr(v, "value") else list(v) if isinstance(v, tuple) else v)
           for k, v in plain.items() if k in keep}  # fmt: skip
    if context is not None:
        out["context"] = context
    return out


def dir_digests(root: Path, cache: Path) -> List[List[str]]:
    """[relative path, sha256] of every file under `root` (sorted), skipping lec's own bookkeeping files."""
    memo_path = cache / "digests.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    out, changed = [], False
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(".") or rel in ("README.md", "lec_state.json"):
            continue  # peft writes a README with no weights in it; lec's state is not the model
        st = path.stat()
        key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if key not in memo:
            memo[key] = file_digest(path)
            changed = True
        out.append([rel, memo[key]])
    if changed:
        try:
            files.write_json(memo_path, memo, "the weight digests")
        except files.WriteError:
            pass  # a cache: the next evaluation hashes again
    return out


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _update(h, data: object) -> None:
    h.update(json.dumps(data, sort_keys=True, default=str).encode())
    h.update(b"\0")


def hf_cache_dir(hf_id: str, revision: Optional[str]) -> Optional[Path]:
    """A hub model's snapshot directory when it is already in the local Hugging Face cache, else None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hf_id, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached here (or no hub library): hashed by name
        return None


