"""Mixtures from local files in each real source's schema (the `datasets` loaders the hub path uses too)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    rows.append({"conversations": ["only a prompt"], "source": "x"})  # bad: no answer turn → empty instruction
    rows.append({"conversations": ["", "empty prompt"], "source": "x"})  # bad: empty instruction
    rows.append({"conversations": [], "source": "x"})  # bad: no turns at all
    rows.append({"conversations": ["multi q1", "multi a1", "multi q2", "multi a2"], "source": "x"})
    cfg = config.compose(["data=lima"]).data
    cfg.sources[0].local_path = _jsonl(tmp_path / "lima.jsonl", rows)
    cfg.val_fraction = 0.0
    mix = build_mixture(cfg, tmp_path / "out")
    assert mix.n_train == 11
    rep = mix.sources[0]
    assert rep.rows_in == 14 and rep.rows_out == 11
    assert rep.bad == {"empty instruction": 2, "missing output (conversations[-1])": 1}
    assert len(rep.bad_examples) == 3
    by_out = {r["output"]: r for r in read_jsonl(mix.train_path)}
    assert by_out["answer 3"]["instruction"] == "question 3" and by_out["answer 3"]["input"] == ""
    assert by_out["multi a2"]["instruction"] == "multi q1\n\nmulti a1\n\nmulti q2"  # earlier turns joined
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
    assert (rep.rows_in, rep.llm_generated, rep.filtered, rep.rows_out) == (6, 3, 0, 3)  # the curation guard
    kept = {r["instruction"] for r in read_jsonl(mix.train_path)}
    assert kept == {"q0", "q1", "q4"}
    cfg.curation.llm_generated.enabled = False  # the mixture's own row filter drops the same rows
    rep = build_mixture(cfg, tmp_path / "out2").sources[0]
    assert (rep.llm_generated, rep.filtered, rep.rows_out) == (0, 3, 3)


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
    cfg.sources[0].threads = None  # timdettmers/openassistant-guanaco: threads already rendered as text
    cfg.sources[0].filter = {}
    cfg.sources[0].local_path = _jsonl(tmp_path / "g.jsonl", [{"text": text}, {"text": "   "}])
    cfg.val_fraction = 0.0
    mix = build_mixture(cfg, tmp_path / "out")
    assert mix.n_train == 1 and mix.sources[0].bad == {"empty text": 1}
    prompt, response = render(Template.guanaco, read_jsonl(mix.train_path)[0])
    assert prompt.endswith("how are you?### Assistant:") and response == " fine, thanks"


def test_mixture_weights_and_seeded_split(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [{"instruction": f"alpha item {i}", "output": "x"} for i in range(20)])
    b = _jsonl(tmp_path / "b.jsonl", [{"instruction": f"beta item {i}", "output": "y"} for i in range(20)])
    cfg = DataConfig(name="mix", sources=[SourceConfig(name="a", local_path=a, weight=2.0),
                                          SourceConfig(name="b", local_path=b, weight=0.5)], val_fraction=0.25)  # fmt: skip
    m1 = build_mixture(cfg, tmp_path / "o1")
    m2 = build_mixture(cfg, tmp_path / "o2")
    assert m1.n_val == 10  # a quarter of the 40 curated rows, split off before weighting
    assert m1.train_path.read_text() == m2.train_path.read_text()  # seeded
    train, val = read_jsonl(m1.train_path), read_jsonl(m1.val_path)
    val_a = sum(r["source"] == "a" for r in val)
    assert sum(r["source"] == "a" for r in train) == 2 * (20 - val_a)
    assert sum(r["source"] == "b" for r in train) == int((20 - (10 - val_a)) * 0.5)
    assert not {r["instruction"] for r in val} & {r["instruction"] for r in train}  # no val row is trained on


def test_take_fraction_and_per_epoch_resampling(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [{"instruction": f"alpha item {i}", "output": "x"} for i in range(40)])
    b = _jsonl(tmp_path / "b.jsonl", [{"instruction": f"beta item {i}", "output": "y"} for i in range(40)])
    cfg = DataConfig(name="mix", val_fraction=0.0, resample_epochs=3, sources=[
        SourceConfig(name="a", local_path=a, take=10),
        SourceConfig(name="b", local_path=b, fraction=0.5, weight=0.5)])  # fmt: skip
    mix = build_mixture(cfg, tmp_path / "o")
    ra, rb = mix.sources
    assert (ra.rows_in, ra.not_taken, ra.curated) == (40, 30, 10)
    assert (rb.rows_in, rb.not_taken, rb.curated) == (40, 20, 20)
    rows = read_jsonl(mix.train_path)
    assert mix.n_train == len(rows) == 3 * (10 + 10)  # three passes, each 10 of a + half of b's 20
    passes = [rows[i * 20 : (i + 1) * 20] for i in range(3)]
    b_sets = [frozenset(r["instruction"] for r in p if r["source"] == "b") for p in passes]
    assert all(len(s) == 10 for s in b_sets) and len(set(b_sets)) > 1  # b's half is re-drawn per pass
    assert all({r["instruction"] for r in p if r["source"] == "a"} == {f"alpha item {i}" for i in range(10)}
               for p in passes)  # fmt: skip


def test_oasst1_threads_from_message_rows(tmp_path):
    """OpenAssistant/oasst1 message rows → the best-ranked path per tree, English roots only."""
    def msg(mid, parent, role, text, rank=None, lang="en", deleted=False):
        return {"message_id": mid, "parent_id": parent, "role": role, "text": text, "rank": rank, "lang": lang,
                "deleted": deleted, "message_tree_id": "t" + mid[0]}  # fmt: skip

    rows = [
        msg("1", None, "prompter", "How do plants make food?"),
        msg("1a", "1", "assistant", "Worse answer.", rank=1),
        msg("1b", "1", "assistant", "By photosynthesis.", rank=0),
        msg("1c", "1b", "prompter", "What does it need?"),
        msg("1d", "1c", "assistant", "Light, water and carbon dioxide.", rank=0),
        msg("2", None, "prompter", "Wie spät ist es?", lang="de"),
        msg("2a", "2", "assistant", "Keine Ahnung.", rank=0, lang="de"),
        msg("3", None, "prompter", "Unanswered question"),
        msg("4", None, "prompter", "A deleted reply"),
        msg("4a", "4", "assistant", "gone", rank=0, deleted=True),
    ]
    cfg = config.compose(["data=oasst1"]).data
    cfg.sources[0].local_path = _jsonl(tmp_path / "oasst.jsonl", rows)
    cfg.val_fraction = 0.0
    mix = build_mixture(cfg, tmp_path / "out")
    rep = mix.sources[0]
    assert rep.messages == 10 and rep.rows_in == 2 and rep.filtered == 1  # trees with an answer; de dropped
    (row,) = read_jsonl(mix.train_path)
    assert row["text"] == ("### Human: How do plants make food?### Assistant: By photosynthesis."
                           "### Human: What does it need?### Assistant: Light, water and carbon dioxide.")  # fmt: skip
    prompt, response = render(Template.guanaco, row)
    assert response == " Light, water and carbon dioxide."
    cfg.sources[0].max_turns = 2  # Percent-BFD: first exchange only
    (row,) = read_jsonl(build_mixture(cfg, tmp_path / "out2").train_path)
    assert row["text"] == "### Human: How do plants make food?### Assistant: By photosynthesis."


def test_winner_mixtures_from_files_in_their_schema(tmp_path):
    """birbal (question/answer), percent_bfd (instruction/input/data_source/output), knovel (prompt text)."""
    cfg = config.compose(["data=birbal"]).data
    q = "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n"
    cfg.sources[0].local_path = _jsonl(tmp_path / "b.jsonl", [{"question": q, "answer": "5"}])
    cfg.val_fraction = 0.0
    (row,) = read_jsonl(build_mixture(cfg, tmp_path / "b").train_path)
    assert render(cfg.template, row) == (q, "5")

    cfg = config.compose(["data=percent_bfd"]).data
    path = tmp_path / "p.parquet"
    pd.DataFrame({"instruction": ["Name a primary colour."], "input": ["Pick one."], "data_source": ["dolly"],
                  "output": ["Red."]}).to_parquet(path)  # fmt: skip
    cfg.sources[0].local_path, cfg.val_fraction = str(path), 0.0
    (row,) = read_jsonl(build_mixture(cfg, tmp_path / "p").train_path)
    prompt, response = render(cfg.template, row)
    assert prompt.endswith("Human: Name a primary colour.\nPick one.\nAssistant: ") and response == "Red."

    cfg = config.compose(["data=knovel"]).data
    cfg.sources[0].local_path = _jsonl(tmp_path / "k.jsonl", [{"prompt": "Summarize: a long dialogue. Summary: short."}])
    cfg.val_fraction = 0.0
    (row,) = read_jsonl(build_mixture(cfg, tmp_path / "k").train_path)
    assert render(cfg.template, row) == ("", "Summarize: a long dialogue. Summary: short.")  # all of it trained


def test_llm_generated_sources_and_rows_are_dropped_and_counted(tmp_path):
    rows = [{"instruction": f"question number {i}", "output": "an answer", "data_source": s}
            for i, s in enumerate(["scienceqa", "airoboros", "leetcode_ne", "reclor"])]  # fmt: skip
    local = _jsonl(tmp_path / "p.jsonl", rows)
    cfg = DataConfig(name="x", val_fraction=0.0, sources=[SourceConfig(name="plat", local_path=local),
                     SourceConfig(name="alpaca", hf_id="tatsu-lab/alpaca")])  # fmt: skip
    mix = build_mixture(cfg, tmp_path / "o")  # the banned hub source is never even loaded (offline here)
    plat, alpaca = mix.sources
    assert plat.llm_generated == 2 and plat.curated == 2
    assert "LLM-generated" in alpaca.dropped and alpaca.rows_in == 0
    cfg.curation.llm_generated.enabled = False
    cfg.sources = cfg.sources[:1]
    assert build_mixture(cfg, tmp_path / "o2").n_train == 4


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


def test_undecodable_text_is_a_counted_bad_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"instruction": "fine question here", "output": "ok"}\n'
                     b'{"instruction": "broken \xff\xfe bytes", "output": "ok"}\n'
                     b'{"instruction": "truncated\n')  # fmt: skip
    cfg = DataConfig(name="x", val_fraction=0.0, sources=[SourceConfig(name="s", local_path=str(path))])
    try:
        mix = build_mixture(cfg, tmp_path / "o")
    except DataError:
        pytest.fail("one undecodable row must not sink the source")
    assert mix.n_train == 1 and mix.sources[0].bad == {"undecodable line (not UTF-8)": 1, "not valid JSON": 1}


def test_normalise_reports_non_text():
    src = SourceConfig(name="s", fields={"output": "answer"})
    row, reason = normalise({"instruction": "q", "answer": 3}, src, Template.alpaca)
    assert row is None and reason == "output is not text"


@pytest.mark.parametrize("spans, why", [
    ([[0, 2], [5, 6]], ""),
    ([[0, 2], [1, 3]], "not ordered"), ([[3, 3]], "not ordered"), ([[0, 7]], "inside the instruction's 6"),
    ([[-1, 2]], "inside"), ([[0, 2.0]], "integer pairs"), ("0-2", "integer pairs"), ([[True, 2]], "integer pairs"),
])  # fmt: skip
def test_trained_spans_are_kept_or_a_counted_reason(spans, why):
    """A row's trained_spans (the in-context answers a few-shot row also trains on) travel with it when they are
    ordered ranges of its instruction; anything else makes the row bad, with the reason."""
    src = SourceConfig(name="s")
    row, reason = normalise({"instruction": "Q: a A", "output": "b", "trained_spans": spans}, src, Template.raw)
    if why:
        assert row is None and why in reason
    else:
        assert row["trained_spans"] == spans and reason == ""


def _ledger_balances(mix) -> None:
    """Every row read is accounted for exactly once: bad, filtered, LLM-generated, not taken, dropped by a curation
    step, or curated."""
    dropped = {}
    for step in mix.steps:
        for name, n in step.dropped_by_source.items():
            dropped[name] = dropped.get(name, 0) + n
    for rep in mix.sources:
        accounted = sum(rep.bad.values()) + rep.filtered + rep.llm_generated + rep.not_taken + rep.curated
        assert rep.rows_in == accounted + dropped.get(rep.name, 0), vars(rep)


def test_conversations_given_as_a_string_are_a_bad_row_not_characters(tmp_path):
    """LIMA's mapping reads conversations[0] / join(conversations[:-1]): a string there would be sliced into
    characters ("W\\n\\nh\\n\\na…") and trained on."""
    rows = [{"conversations": ["What is 2+2?", "4"]}, {"conversations": "What is 2+2? 4"},
            {"conversations": ["q", 5]}]  # fmt: skip
    cfg = config.compose(["data=lima"]).data
    cfg.sources[0].local_path = _jsonl(tmp_path / "lima.jsonl", rows)
    cfg.val_fraction = 0.0
    mix = build_mixture(cfg, tmp_path / "out")
    assert mix.n_train == 1 and [r["instruction"] for r in read_jsonl(mix.train_path)] == ["What is 2+2?"]
    assert mix.sources[0].bad == {"conversations is not a list of turns (got str)": 1,
                                  "conversations is not a list of turns (got list)": 1}  # fmt: skip
    _ledger_balances(mix)


def test_bom_blank_lines_and_replacement_characters_are_read_as_they_are(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"instruction": "first, after a byte-order mark", "output": "a"}\n'
                     b"   \n"
                     b"\n"
                     b'{"instruction": "a real \xef\xbf\xbd in the text", "output": "b"}\n'
                     b'{"instruction": "lone \\ud800 surrogate", "output": "c"}\n')  # fmt: skip
    cfg = DataConfig(name="x", val_fraction=0.0, sources=[SourceConfig(name="s", local_path=str(path))])
    mix = build_mixture(cfg, tmp_path / "o")
    assert sorted(r["output"] for r in read_jsonl(mix.train_path)) == ["a", "b"]
    assert "\ufffd" in next(r["instruction"] for r in read_jsonl(mix.train_path) if r["output"] == "b")
    rep = mix.sources[0]
    assert rep.rows_in == 5 and rep.bad == {"blank line": 2, "instruction has a lone surrogate (not text)": 1}
    _ledger_balances(mix)


_value = st.one_of(st.text(max_size=30), st.integers(), st.none(), st.lists(st.text(max_size=10), max_size=3),
                   st.booleans())  # fmt: skip
_row = st.dictionaries(st.sampled_from(["instruction", "input", "output", "conversations", "x"]), _value, max_size=4)
_line = st.one_of(_row.map(lambda r: json.dumps(r).encode()), st.binary(max_size=40),
                  st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")))  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_line, min_size=1, max_size=25))
def test_any_file_is_curated_or_refused_cleanly_and_every_line_is_accounted_for(tmp_path, lines):
    """Fuzzed lines (rows of any shape, random bytes, surrogates): never a crash, and the ledger balances."""
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n")
    cfg = DataConfig(name="x", val_fraction=0.0, sources=[SourceConfig(name="s", local_path=str(path))])
    try:
        mix = build_mixture(cfg, tmp_path / "o")
    except DataError as err:
        assert "no usable rows" in str(err)
        return
    assert mix.sources[0].rows_in == len(lines)
    _ledger_balances(mix)
    for r in read_jsonl(mix.train_path):
        assert isinstance(r["instruction"], str) and r["instruction"].strip() and r["output"].strip()
