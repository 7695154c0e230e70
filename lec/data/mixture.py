"""Curate a data mixture: load each source, normalise rows to {instruction, input, output}, count bad rows,
filter, weight, shuffle (seeded) and split into train/val JSONL plus a report.

Curation filters (language, length in tokens, dedup, decontamination) plug in between normalise and mix.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from lec.config import DataConfig, SourceConfig, Template
from lec.data.synthetic import GENERATORS

log = logging.getLogger(__name__)

_INDEX = re.compile(r"^(?P<col>[^\[\]]+)\[(?P<i>-?\d+)\]$")
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class DataError(ValueError):
    """A source that cannot be read at all (missing file, unknown format, unreachable hub id)."""


@dataclass
class SourceReport:
    name: str
    rows_in: int = 0
    rows_out: int = 0
    bad: Dict[str, int] = field(default_factory=dict)  # reason → count (missing field, empty, not text)
    filtered: int = 0
    bad_examples: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class Mixture:
    train_path: Path
    val_path: Path
    n_train: int
    n_val: int
    sources: List[SourceReport]

    def report(self) -> Dict[str, Any]:
        return {
            "n_train": self.n_train,
            "n_val": self.n_val,
            "sources": [vars(s) for s in self.sources],
        }


def load_source(src: SourceConfig, seed: int) -> Iterable[Dict[str, Any]]:
    """Raw rows of one source: a lec generator, a local file (real `datasets` loaders) or a hub id."""
    if src.generator:
        if src.generator not in GENERATORS:
            raise DataError(f"source '{src.name}': unknown generator '{src.generator}'; valid: {sorted(GENERATORS)}")
        return GENERATORS[src.generator](src.n, seed)
    import datasets

    if src.local_path:
        path = Path(src.local_path)
        fmt = LOCAL_FORMATS.get(path.suffix.lower())
        if not path.exists():
            raise DataError(f"source '{src.name}': local_path {path} does not exist")
        if fmt is None:
            raise DataError(f"source '{src.name}': cannot read {path.suffix} files; valid: {sorted(LOCAL_FORMATS)}")
        return datasets.load_dataset(fmt, data_files=str(path), split="train")
    try:
        return datasets.load_dataset(src.hf_id, src.config_name, split=src.split, revision=src.revision)
    except Exception as err:  # datasets raises many types for an unreachable/unknown hub id
        raise DataError(
            f"source '{src.name}': could not load '{src.hf_id}' from the hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Offline? Download it and set "
            f"data.sources[…].local_path to a jsonl/json/parquet/csv file"
        ) from err


def _get(row: Dict[str, Any], spec: str) -> Any:
    """A column (`output`) or a list element (`conversations[1]`, negative indices allowed)."""
    m = _INDEX.match(spec)
    if not m:
        return row[spec]
    return row[m["col"]][int(m["i"])]


def normalise(row: Dict[str, Any], src: SourceConfig, template: Template) -> Tuple[Optional[Dict[str, str]], str]:
    """(row in lec's schema, "") or (None, reason it is bad)."""
    wanted = ["text"] if template is Template.guanaco else ["instruction", "input", "output"]
    mapping = {k: src.fields.get(k, k) for k in wanted}
    out: Dict[str, str] = {}
    for key, spec in mapping.items():
        try:
            value = _get(row, spec)
        except (KeyError, IndexError, TypeError):
            if key == "input":  # optional: most instruction data has no separate input
                out[key] = ""
                continue
            return None, f"missing {key} ({spec})"
        if value is None and key == "input":
            value = ""
        if not isinstance(value, str):
            return None, f"{key} is not text"
        out[key] = value
    for key in ("text", "instruction", "output"):
        if key in out and not out[key].strip():
            return None, f"empty {key}"
    return out, ""


def keep(row: Dict[str, Any], rules: Dict[str, Any]) -> bool:
    """Row filters on source columns: `{col}_in: [...]` keeps listed values, `{col}_not_in: [...]` drops them."""
    for rule, values in rules.items():
        if rule.endswith("_not_in"):
            if row.get(rule[: -len("_not_in")]) in values:
                return False
        elif rule.endswith("_in"):
            if row.get(rule[: -len("_in")]) not in values:
                return False
        else:
            raise DataError(f"unknown filter rule '{rule}'; valid forms: <column>_in, <column>_not_in")
    return True


def build_mixture(cfg: DataConfig, out_dir: Path) -> Mixture:
    rng = random.Random(cfg.seed)
    rows: List[Dict[str, str]] = []
    reports = []
    for i, src in enumerate(cfg.sources):
        report = SourceReport(src.name)
        kept: List[Dict[str, str]] = []
        bad = Counter()
        for raw in load_source(src, seed=cfg.seed * 1000 + i):  # per-source seed stream; < 1e6 (eval uses more)
            report.rows_in += 1
            if src.filter and not keep(raw, src.filter):
                report.filtered += 1
                continue
            row, reason = normalise(raw, src, cfg.template)
            if row is None:
                bad[reason] += 1
                if len(report.bad_examples) < 3:
                    report.bad_examples.append({"reason": reason, "row": {k: str(v)[:200] for k, v in raw.items()}})
                continue
            kept.append(row)
        if src.take is not None:
            kept = kept[: src.take]
        kept = _weighted(kept, src.weight, rng)
        report.bad, report.rows_out = dict(bad), len(kept)
        if bad:
            log.warning("source %s: %d bad rows dropped (%s)", src.name, sum(bad.values()), dict(bad))
        rows += [dict(r, source=src.name) for r in kept]
        reports.append(report)
    if not rows:
        raise DataError(f"data '{cfg.name}': no usable rows (see the per-source report: {[vars(r) for r in reports]})")
    rng.shuffle(rows)
    n_val = int(len(rows) * cfg.val_fraction)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, val_path = out_dir / "train.jsonl", out_dir / "val.jsonl"
    _write_jsonl(train_path, rows[n_val:])
    _write_jsonl(val_path, rows[:n_val])
    mixture = Mixture(train_path, val_path, len(rows) - n_val, n_val, reports)
    (out_dir / "curation_report.json").write_text(json.dumps(mixture.report(), indent=2))
    return mixture


def _weighted(rows: List[Dict[str, str]], weight: float, rng: random.Random) -> List[Dict[str, str]]:
    """weight 1 keeps every row once; 0.5 a seeded half; 2.5 every row twice plus a seeded half."""
    whole, frac = int(weight), weight - int(weight)
    return rows * whole + (rng.sample(rows, int(len(rows) * frac)) if frac else [])


def _write_jsonl(path: Path, rows: List[Dict[str, str]]) -> None:
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> List[Dict[str, str]]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]
