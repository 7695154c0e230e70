"""Mixtures from local files in each real source's schema (the `datasets` loaders the hub path uses too)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lec import config
from lec.config import DataConfig, SourceConfig, Template
from lec.data.mixture import DataError, build_mixture, normalise, read_jsonl
from lec.data.templates import render


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_lima_schema_from_jsonl(tmp_path):
    """GAIR/lima rows: {"conversations": [prompt, answer, ...], "source": ...}; the shipped config maps turn 0/1."""
    rows = [{"conversations": [f"question {i}", f"answer {i}"], "source": "stackexchange"} for i in range(10)]
    rows.append({"conversations": ["only a prompt"], "source": "x"})  # bad: no answer turn
    rows.append({"conversations": ["", "empty prompt"], "source": "x"})  # bad: empty instruction
    cfg = config.compose(["data=lima"]).data
    cfg.sources[0].local_path = _jsonl(tmp_path / "lima.jsonl", rows)
    cfg.val_fraction = 0.0
    mix = build_mixture(cfg, tmp_path / "out")
    assert mix.n_train == 10
    rep = mix.sources[0]
    assert rep.rows_in == 12 and rep.rows_out == 10
    assert rep.bad == {"missing output (conversations[1])": 1, "empty instruction": 1}
    assert len(rep.bad_examples) == 2
    row = read_jsonl(mix.train_path)[0]
    assert row["instruction"].startswith("question") and row["output"].startswith("answer") and row["input"] == ""
    assert json.loads((tmp_path / "out/curation_report.json").read_text())["sources"][0]["bad"]


def test_platypus_filter_from_parquet(tmp_path):
    """Open-Platypus rows carry `data_source`; the shipped config drops the GPT-4 generated subsets."""
    df = pd.DataFrame(
        {
            "instruction": [f"q{i}" for i in range(6)],
            "input": ["", "ctx", "", "", "", ""],
            "output": [f"a{i}" for i in range(6)],
            "data_source": ["scienceqa", "reclor", "airoboros", "leetcode_ne", "theoremqa", "airoboros"],
        }
    )
    path = tmp_path / "platypus.parquet"
    df.to_parquet(path)
    cfg = config.compose(["data=platypus"]).data
    cfg.sources[0].local_path = str(path)
    cfg.val_fraction = 0.0
    mix = build_mixture(cfg, tmp_path / "out")
    rep = mix.sources[0]
    assert (rep.rows_in, rep.filtered, rep.rows_out) == (6, 3, 3)
    kept = {r["instruction"] for r in read_jsonl(mix.train_path)}
    assert kept == {"q0", "q1", "q4"}


def test_dolly_schema_from_csv(tmp_path):
    """databricks-dolly-15k: instruction, context, response, category."""
    path = tmp_path / "dolly.csv"
    pd.DataFrame({"instruction": ["i1", "i2"], "context": ["c1", None], "response": ["r1", "r2"],
                  "category": ["qa", "qa"]}).to_csv(path, index=False)  # fmt: skip
    cfg = config.compose(["data=dolly"]).data
    cfg.sources[0].local_path = str(path)
    cfg.val_fraction = 0.0
    rows = read_jsonl(build_mixture(cfg, tmp_path / "out").train_path)
    by_instr = {r["instruction"]: r for r in rows}
    assert by_instr["i1"]["input"] == "c1" and by_instr["i2"]["input"] == ""


def test_guanaco_text_rows(tmp_path):
    cfg = config.compose(["data=oasst1"]).data
    text = "### Human: hi there### Assistant: hello!### Human: how are you?### Assistant: fine, thanks"
    cfg.sources[0].local_path = _jsonl(tmp_path / "g.jsonl", [{"text": text}, {"text": "   "}])
    cfg.val_fraction = 0.0
    mix = build_mixture(cfg, tmp_path / "out")
    assert mix.n_train == 1 and mix.sources[0].bad == {"empty text": 1}
    prompt, response = render(Template.guanaco, read_jsonl(mix.train_path)[0])
    assert prompt.endswith("how are you?### Assistant:") and response == " fine, thanks"


def test_mixture_weights_and_seeded_split(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [{"instruction": f"a{i}", "output": "x"} for i in range(10)])
    b = _jsonl(tmp_path / "b.jsonl", [{"instruction": f"b{i}", "output": "y"} for i in range(10)])
    cfg = DataConfig(name="mix", sources=[SourceConfig(name="a", local_path=a, weight=2.0),
                                          SourceConfig(name="b", local_path=b, weight=0.5)], val_fraction=0.2)  # fmt: skip
    m1 = build_mixture(cfg, tmp_path / "o1")
    m2 = build_mixture(cfg, tmp_path / "o2")
    assert (m1.n_train + m1.n_val) == 25 and m1.n_val == 5
    assert m1.train_path.read_text() == m2.train_path.read_text()  # seeded
    assert [s.rows_out for s in m1.sources] == [20, 5]


def test_missing_file_and_unknown_format_are_clear(tmp_path):
    cfg = DataConfig(name="x", sources=[SourceConfig(name="s", local_path=str(tmp_path / "nope.jsonl"))])
    with pytest.raises(DataError, match="does not exist"):
        build_mixture(cfg, tmp_path / "o")
    (tmp_path / "f.txt").write_text("hi")
    cfg.sources[0].local_path = str(tmp_path / "f.txt")
    with pytest.raises(DataError, match="jsonl"):
        build_mixture(cfg, tmp_path / "o")


def test_unreachable_hub_id_says_to_use_local_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    cfg = DataConfig(name="x", sources=[SourceConfig(name="s", hf_id="lec-test/does-not-exist-anywhere")])
    with pytest.raises(DataError, match="local_path"):
        build_mixture(cfg, tmp_path / "o")


def test_normalise_reports_non_text():
    src = SourceConfig(name="s", fields={"output": "answer"})
    row, reason = normalise({"instruction": "q", "answer": 3}, src, Template.alpaca)
    assert row is None and reason == "output is not text"
