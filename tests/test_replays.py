"""Winner replays evaluate the way the challenge ranked the winners: its final round, not the offline smoke suite."""

from __future__ import annotations

import pytest

from lec import config


@pytest.mark.parametrize("experiment,hardware", [("birbal", "rtx4090"), ("percent_bfd", "a100_40gb")])
def test_replay_runs_the_challenge_final_round_on_its_track(experiment, hardware):
    cfg = config.compose([f"experiment={experiment}"])
    assert cfg.hardware.name == hardware
    assert cfg.eval.name != "smoke" and cfg.eval.synthetic is None  # real HELM scenarios, not lec's generated ones
    assert cfg.eval.confs == ["open_2000", "closed_5000"]  # the final open + closed stages, ranked with Score_full
    assert cfg.eval.budget_min == 300 + 600  # private-helm do-run.sh: timeout 300m open, 600m closed
    assert cfg.eval.max_eval_instances == 100 and cfg.eval.num_threads == 30  # do-run.sh helm-run flags


def test_replay_says_what_needs_network_or_a_scenarios_dir():
    for name in ("birbal", "percent_bfd"):
        text = (config.CONF_DIR / "experiment" / f"{name}.yaml").read_text()
        assert "network" in text and "data.curation.decontam.scenarios_dir" in text, name
