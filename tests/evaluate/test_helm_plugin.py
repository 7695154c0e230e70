"""lec's HELM plugin scenarios: file layout, splits, labels, and clear errors on bad data."""

from __future__ import annotations

import random

import pytest

from lec.evaluate import helm_plugin as hp
from lec.evaluate.smoke_data import CLOSED, write_closed


@pytest.mark.parametrize("kind", list(CLOSED))
def test_every_smoke_file_reads_into_instances_with_one_correct_reference(tmp_path, kind):
    write_closed(tmp_path, kind, 50, random.Random(0))
    instances = hp.ChallengeScenario(kind).get_instances(str(tmp_path / "scenarios" / kind))
    assert len(instances) == 50
    assert all(sum(hp.CORRECT_TAG in r.tags for r in i.references) == 1 for i in instances)
    valid = [i for i in instances if i.split == hp.VALID_SPLIT]
    expected_valid = 50 if kind == "sam_sum" else 50 - int(50 * hp.SOURCES[kind].train_fraction)
    assert len(valid) == expected_valid


def test_labels_map_to_the_forks_options(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('label,input\n1,"A causes B. Hypothesis: A causes B."\n0,"B causes A. Hypothesis: A causes B."\n')
    rows = hp.read_rows("corr2cause", hp.SOURCES["corr2cause"], tmp_path, str(path))
    answers = {i.input.text[:1]: next(r.output.text for r in i.references if hp.CORRECT_TAG in r.tags)
               for i in hp.to_instances("corr2cause", hp.SOURCES["corr2cause"], rows)}  # fmt: skip
    assert answers == {"A": "Yes", "B": "No"}


def test_missing_columns_and_bad_labels_say_what_is_expected(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("scenario\nsomething\n")
    with pytest.raises(hp.ScenarioDataError, match=r"lacks column\(s\) \['label'\]"):
        hp.read_rows("ethics_justice", hp.SOURCES["ethics_justice"], tmp_path, str(path))
    with pytest.raises(hp.ScenarioDataError, match="row 0 is malformed.*label must be 0 or 1"):
        hp.to_instances("ethics_justice", hp.SOURCES["ethics_justice"], [{"label": "7", "scenario": "x"}])
    with pytest.raises(hp.ScenarioDataError, match="does not exist"):
        hp.read_rows("ethics_justice", hp.SOURCES["ethics_justice"], tmp_path, str(tmp_path / "nope.csv"))


def test_run_specs_follow_the_fork(tmp_path):
    from helm.benchmark.run_spec import get_run_spec_function

    mc = get_run_spec_function("corr2cause")()
    assert mc.adapter_spec.method == "multiple_choice_joint" and mc.adapter_spec.max_tokens == 1
    assert mc.groups == ["corr2cause"]
    ss = get_run_spec_function("sam_sum")()
    assert ss.adapter_spec.max_tokens == 128 and ss.adapter_spec.temperature == 0.3
    assert sum("BiasMetric" in m.class_name for m in ss.metric_specs) == 6  # challenge-scored bias stats included
