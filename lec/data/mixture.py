"""Curate a data mixture: load each source, normalise rows to {instruction, input, output}, count bad rows,
filter, weight, shuffle (seeded) and split into train/val JSONL plus a report.

Curation filters (language, length in tokens, dedup, decontamination; lec.data.filters) run between normalise and
mix; every row read is accounted for in the report (bad, filtered, LLM-generated, not taken, or dropped by a step).
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

from lec import files, progress
from lec.config import DataConfig, SourceConfig, Template
from lec.data.synthetic import GENERATORS
from lec.data.filters import Context, run_steps
from lec.data.templates import chat_messages

log = logging.getLogger(__name__)

_INDEX = re.compile(r"^(?P<col>[^\[\]]+)\[(?P<i>-?\d+)\]$")
_JOIN = re.compile(r"^join\((?P<col>[^\[\]]+)\[(?P<a>-?\d*):(?P<b>-?\d*)\]\)$")
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
TEXT_TEMPLATES = (Template.guanaco, Template.plain)  # rows carry one `text` field


class DataError(ValueError):
    """A source that cannot be read at all (missing file, unknown format, unreachable hub id)."""


@dataclass
class SourceReport:
    name: str
    rows_in: int = 0  # rows read (threads built, for thread sources)
    rows_out: int = 0  # rows in the final mixture (train + val, after weights)
    bad: Dict[str, int] = field(default_factory=dict)  # reason → count (missing field, empty, not text)
    filtered: int = 0  # dropped by the source's own row filters
    llm_generated: int = 0  # dropped as LLM-generated (data.curation.llm_generated)
    not_taken: int = 0  # left out by take / fraction
    curated: int = 0  # rows left after the mixture-level curation steps
    dropped: str = ""  # why the whole source was left out, if it was
    messages: Optional[int] = None  # thread sources: message rows read
    bad_examples: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class Mixture:
    train_path: Path
    val_path: Path
    n_train: int
    n_val: int
    sources: List[SourceReport]
    steps: List[Any] = field(default_factory=list)  # lec.data.filters.StepReport per curation step
    decontam: Dict[str, Any] = field(default_factory=dict)

    def report(self) -> Dict[str, Any]:
        return {
            "n_train": self.n_train,
            "n_val": self.n_val,
            "sources": [vars(s) for s in self.sources],
            "steps": [vars(s) for s in self.steps],
            "decontam": self.decontam,
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
        if path.suffix.lower() == ".jsonl":
            return _jsonl_rows(path)  # line by line, so one broken line is a counted bad row, not a failed source
        return datasets.load_dataset(fmt, data_files=str(path), split="train")
    try:
        return datasets.load_dataset(src.hf_id, src.config_name, split=src.split, revision=src.revision)
    except Exception as err:  # datasets raises many types for an unreachable/unknown hub id
        raise DataError(
            f"source '{src.name}': could not load '{src.hf_id}' from the hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Offline? Download it and set "
            f"data.sources[…].local_path to a jsonl/json/parquet/csv file"
        ) from err


BAD = "__lec_bad__"  # key of a placeholder row for a line that could not be read


def _shown(value: Any) -> str:
    """A value as the report shows it: cut to 200 characters, lone surrogates escaped (the report is UTF-8)."""
    return str(value)[:200].encode("utf-8", "backslashreplace").decode("utf-8")


def _jsonl_rows(path: Path) -> Iterable[Dict[str, Any]]:
    """One row per line; every line is accounted for: a blank line, undecodable bytes or broken JSON is a bad row
    with its reason. A UTF-8 byte-order mark (Windows editors write one) is not part of the JSON."""
    with path.open("rb") as f:
        for raw in f:
            shown = raw[:200].decode("utf-8", "replace")
            try:
                text = raw.decode("utf-8").removeprefix("\ufeff")
            except UnicodeDecodeError:
                yield {BAD: "undecodable line (not UTF-8)", "line": shown}
                continue
            if not text.strip():
                yield {BAD: "blank line", "line": shown}
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError:
                yield {BAD: "not valid JSON", "line": shown}
                continue
            yield row if isinstance(row, dict) else {BAD: "line is not a JSON object", "line": str(row)[:200]}


def oasst_threads(messages: Iterable[Dict[str, Any]], max_turns: Optional[int] = None) -> List[Dict[str, Any]]:
    """OASST1 message rows (message_id, parent_id, role, text, rank, lang, …) → one row per message tree: the path
    from the root prompt that always follows the best-ranked reply (rank 0; the Guanaco recipe's "top-rated paths"),
    cut to end on an assistant turn. A row has `conversations` (the turns), `lang`/`message_tree_id` of the root, and
    `text` in the "### Human: … ### Assistant: …" layout of timdettmers/openassistant-guanaco."""
    children: Dict[str, List[Dict[str, Any]]] = {}
    roots = []
    for m in messages:
        if m.get("deleted"):
            continue
        if m.get("parent_id") is None:
            roots.append(m)
        else:
            children.setdefault(m["parent_id"], []).append(m)
    threads = []
    for root in roots:
        path = [root]
        while children.get(path[-1]["message_id"]) and (max_turns is None or len(path) < max_turns):
            replies = children[path[-1]["message_id"]]
            path.append(min(replies, key=lambda m: (m.get("rank") is None, m.get("rank") or 0)))
        while path and path[-1].get("role") != "assistant":
            path.pop()
        if not path:
            continue
        text = "".join(f"### {'Human' if m['role'] == 'prompter' else 'Assistant'}: {m['text']}" for m in path)
        threads.append({"conversations": [m["text"] for m in path], "text": text, "lang": root.get("lang"),
                        "message_tree_id": root.get("message_tree_id", root["message_id"])})  # fmt: skip
    return threads


class BadField(ValueError):
    """A field that exists but has the wrong shape; the message is the bad-row reason."""


def _turns(row: Dict[str, Any], col: str) -> List[str]:
    turns = row[col]
    if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
        raise BadField(f"{col} is not a list of turns (got {type(turns).__name__})")  # a string would be sliced
    return turns


def _get(row: Dict[str, Any], spec: str) -> Any:
    """A column (`output`), a list element (`conversations[1]`, negative indices allowed) or a joined slice
    (`join(conversations[:-1])`, turns joined by blank lines)."""
    m = _JOIN.match(spec)
    if m:
        return "\n\n".join(_turns(row, m["col"])[slice(int(m["a"]) if m["a"] else None, int(m["b"]) if m["b"] else None)])
    m = _INDEX.match(spec)
    if not m:
        return row[spec]
    return _turns(row, m["col"])[int(m["i"])]


def normalise(row: Dict[str, Any], src: SourceConfig, template: Template) -> Tuple[Optional[Dict[str, str]], str]:
    """(row in lec's schema, "") or (None, reason it is bad)."""
    threads = template in TEXT_TEMPLATES or (template is Template.chat and "text" in src.fields)
    wanted = ["text"] if threads else ["instruction", "input", "output"]
    mapping = {k: src.fields.get(k, k) for k in wanted}
    out: Dict[str, str] = {}
    for key, spec in mapping.items():
        try:
            value = _get(row, spec)
        except BadField as err:
            return None, str(err)
        except (KeyError, IndexError, TypeError):
            if key == "input":  # optional: most instruction data has no separate input
                out[key] = ""
                continue
            return None, f"missing {key} ({spec})"
        if value is None and key == "input":
            value = ""
        if not isinstance(value, str):
            return None, f"{key} is not text"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape ("\\ud800") decodes to a str no file can hold
            return None, f"{key} has a lone surrogate (not text)"
        out[key] = value  # (bytes that are not UTF-8 were caught when the line was decoded; U+FFFD itself is text)
    for key in ("text", "instruction", "output"):
        if key in out and not out[key].strip():
            return None, f"empty {key}"
    if not threads and "trained_spans" in row:
        spans, why = _trained_spans(row["trained_spans"], len(out["instruction"]))
        if why:
            return None, why
        out["trained_spans"] = spans
    if threads and template in (Template.guanaco, Template.chat):
        try:
            chat_messages(out)  # a thread with no answer to train on would fail training later
        except ValueError as err:
            return None, str(err)
    return out, ""


def _trained_spans(spans: Any, n: int) -> Tuple[List[List[int]], str]:
    """A row's `trained_spans`: [start, end) character ranges of its instruction that the loss covers too (the
    in-context answers of a few-shot prompt, lec/data/synthetic.py), in order and apart; else the reason they are
    bad."""
    ok = isinstance(spans, list) and all(isinstance(s, list) and len(s) == 2 and all(type(i) is int for i in s)
                                         for s in spans)  # fmt: skip
    if not ok:
        return [], "trained_spans is not a list of [start, end] integer pairs"
    ends = [i for s in spans for i in s]
    if any(a >= b for a, b in spans) or ends != sorted(ends) or (ends and (ends[0] < 0 or ends[-1] > n)):
        return [], f"trained_spans are not ordered, non-empty ranges inside the instruction's {n} characters"
    return spans, ""


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


def _llm_generated(row: Dict[str, Any], column_values: Dict[str, List[str]]) -> Optional[str]:
    for col, values in column_values.items():
        if row.get(col) in values:
            return f"{col}={row.get(col)}"
    return None


def build_mixture(cfg: DataConfig, out_dir: Path, ctx: "Optional[Context]" = None) -> Mixture:
    """Load → filter → normalise → take/fraction per source; curation steps over the pooled rows (lec.data.filters;
    `ctx` brings the model tokenizer and the eval instances, without them those steps are skipped and say so);
    seeded val split; weights (re-drawn per pass when resample_epochs > 1) → train/val JSONL + curation_report.json."""
    ctx = ctx or Context(cfg.template)
    rng = random.Random(cfg.seed)
    banned = cfg.curation.llm_generated
    rows: List[Dict[str, str]] = []
    reports = []
    for i, src in enumerate(cfg.sources):
        report = SourceReport(src.name)
        reports.append(report)
        if banned.enabled and src.hf_id in banned.hf_ids:
            report.dropped = f"LLM-generated source {src.hf_id} (challenge rules; data.curation.llm_generated)"
            log.warning("source %s dropped: %s", src.name, report.dropped)
            continue
        raw_rows = load_source(src, seed=cfg.seed * 1000 + i)  # per-source seed stream; < 1e6 (eval uses more)
        if src.threads == "oasst":
            raw_rows = list(raw_rows)
            report.messages = len(raw_rows)
            raw_rows = oasst_threads(raw_rows, src.max_turns)
        kept: List[Dict[str, str]] = []
        bad = Counter()
        for raw in progress.iterate(raw_rows, f"curate {src.name}"):  # periodic log lines in sweeps / logs
            report.rows_in += 1
            if BAD in raw:
                bad[raw[BAD]] += 1
                if len(report.bad_examples) < cfg.curation.examples_per_reason * 2:
                    report.bad_examples.append({"reason": raw[BAD], "row": {"line": raw["line"]}})
                continue
            if banned.enabled and _llm_generated(raw, banned.column_values):
                report.llm_generated += 1
                continue
            if src.filter and not keep(raw, src.filter):
                report.filtered += 1
                continue
            row, reason = normalise(raw, src, cfg.template)
            if row is None:
                bad[reason] += 1
                if len(report.bad_examples) < cfg.curation.examples_per_reason * 2:
                    report.bad_examples.append({"reason": reason, "row": {_shown(k): _shown(v) for k, v in raw.items()}})
                continue
            kept.append(row)
        n_ok = len(kept)
        if src.fraction is not None:
            kept = [kept[j] for j in sorted(rng.sample(range(len(kept)), round(len(kept) * src.fraction)))]
        if src.take is not None:
            kept = kept[: src.take]
        report.not_taken, report.bad = n_ok - len(kept), dict(bad)
        if bad:
            log.warning("source %s: %d bad rows dropped (%s)", src.name, sum(bad.values()), dict(bad))
        rows += [dict(r, source=src.name) for r in kept]
    rows, steps = run_steps(rows, cfg.curation, ctx)
    if not rows:
        raise DataError(f"data '{cfg.name}': no usable rows (see the per-source report: {[vars(r) for r in reports]})")
    by_name = {r.name: r for r in reports}
    for r in rows:
        by_name[r["source"]].curated += 1
    # validation rows come from the curated pool before weighting, so no copy of a val row is trained on
    rng.shuffle(rows)
    n_val = int(len(rows) * cfg.val_fraction)
    val, pool = rows[:n_val], rows[n_val:]
    weight = {s.name: s.weight for s in cfg.sources}
    train: List[Dict[str, str]] = []
    for _ in range(cfg.resample_epochs):  # one pass per epoch, each with its own draw of the fractional weights
        epoch: List[Dict[str, str]] = []
        for name in by_name:
            epoch += _weighted([r for r in pool if r["source"] == name], weight[name], rng)
        rng.shuffle(epoch)
        train += epoch
    for r in val + train[: len(train) // cfg.resample_epochs]:
        by_name[r["source"]].rows_out += 1
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, val_path = out_dir / "train.jsonl", out_dir / "val.jsonl"
    _write_jsonl(train_path, train)
    _write_jsonl(val_path, val)
    inst = ctx.eval_instances
    mixture = Mixture(train_path, val_path, len(train), n_val, reports, steps,
                      inst.summary() if inst is not None else {"available": False, "note": "no eval instances given"})  # fmt: skip
    files.write_json(out_dir / "curation_report.json", mixture.report(), "the curation report")
    return mixture


def _weighted(rows: List[Dict[str, str]], weight: float, rng: random.Random) -> List[Dict[str, str]]:
    """weight 1 keeps every row once; 0.5 a seeded half; 2.5 every row twice plus a seeded half."""
    whole, frac = int(weight), weight - int(weight)
    return rows * whole + (rng.sample(rows, int(len(rows) * frac)) if frac else [])


def _write_jsonl(path: Path, rows: List[Dict[str, str]]) -> None:
    """Written whole or not at all: a full disk never leaves a short train.jsonl that training would take as given."""
    with files.atomic(path, f"the curated rows ({path.name})") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> List[Dict[str, str]]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]
