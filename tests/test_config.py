"""The config tree: every option of every group composes and validates; bad input fails at compose time."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf.errors import ConfigKeyError

from lec import config
from lec.config import AdapterKind, ConfigError, Device, LecConfig

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {g: sorted(p.stem for p in (config.CONF_DIR / g).glob("*.yaml")) for g in config.GROUPS}
GPU_ONLY = {"qlora"}  # needs a CUDA hardware preset
NEEDS = {"hf": ["model.hf_id=Qwen/Qwen2.5-0.5B"]}  # the generic option names its model on the command line


def test_every_group_ships_the_options_the_product_promises():
    assert set(OPTIONS["hardware"]) >= {"cpu", "rtx4090", "a100_40gb", "h100"}
    assert set(OPTIONS["model"]) >= {"tiny", "mistral7b", "llama2_7b", "qwen14b", "hf", "llama31_8b", "qwen25_7b",
                                     "qwen25_14b", "gemma2_9b", "mistral7b_v03"}
    assert set(OPTIONS["data"]) >= {"synthetic", "lima", "platypus", "dolly", "oasst1", "lima_platypus"}
    assert set(OPTIONS["adapter"]) >= {"lora", "qlora", "full"}
    assert "smoke" in OPTIONS["eval"]


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in OPTIONS.items() for o in opts])
def test_every_option_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if option in GPU_ONLY:
        overrides.append("hardware=rtx4090")
    cfg = config.compose(overrides + NEEDS.get(option, []))
    assert isinstance(cfg, LecConfig)
    assert getattr(cfg, group).name == option


def test_every_yaml_starts_with_a_comment_naming_its_command():
    for path in config.CONF_DIR.rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("#"), path
        head = "\n".join(path.read_text().splitlines()[:4])
        assert "python -m lec" in head, f"{path} does not say which command uses it"


def test_default_is_the_embedded_run(default_cfg):
    assert (default_cfg.hardware.name, default_cfg.model.name, default_cfg.data.name) == ("cpu", "tiny", "synthetic")
    assert (default_cfg.adapter.kind, default_cfg.eval.name) == (AdapterKind.lora, "smoke")
    assert default_cfg.hardware.device is Device.cpu and default_cfg.eval.eval_base


def test_challenge_composition_keeps_sourced_values():
    cfg = config.compose(["hardware=rtx4090", "model=mistral7b", "data=lima_platypus", "adapter=qlora"])
    assert cfg.hardware.vram_gb == 24 and cfg.hardware.max_seq_len == 2048
    assert cfg.model.hf_id == "mistralai/Mistral-7B-v0.1"
    assert cfg.adapter.r == 64 and cfg.adapter.quantization.quant_type == "nf4"
    assert [s.name for s in cfg.data.sources] == ["lima", "platypus"]


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        config.compose(["model=mistral8b"])
    assert "mistral7b" in str(err.value) and "qwen14b" in str(err.value)


def test_typo_key_fails_naming_the_valid_keys():
    with pytest.raises(ConfigError) as err:
        config.compose(["adapter.rr=4"])
    assert "'rr'" in str(err.value) and "alpha" in str(err.value)
    with pytest.raises(ConfigError, match="micro_batch_size"):
        config.compose(["hardware.micro_bach_size=4"])
    config.check_override_keys(["model.tiny.hidden_size=64", "data.sources.0.take=3", "model=tiny"])
    with pytest.raises(ConfigError, match="unknown key 'foo'.*valid keys: hardware"):
        config.check_override_keys(["+foo=1"])  # an added key must be in the schema too


def test_wrong_type_fails():
    with pytest.raises(ConfigError) as err:
        config.compose(["adapter.r=sixteen"])
    assert "adapter.r" in str(err.value) and "sixteen" in str(err.value) and "\n" not in str(err.value)


def test_bad_enum_names_the_valid_values():
    with pytest.raises(ConfigError) as err:
        config.compose(["adapter.kind=lorax"])
    assert "lorax" in str(err.value) and "[lora, qlora, full]" in str(err.value)


def test_typo_key_in_a_group_file_fails(tmp_path):
    from omegaconf import OmegaConf

    bad = OmegaConf.merge(OmegaConf.structured(LecConfig), {"hardware": {"name": "x"}})
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(bad, {"hardware": {"micro_bach_size": 4}})


def test_qlora_on_cpu_fails_with_the_knob_to_turn():
    with pytest.raises(ConfigError) as err:
        config.compose(["adapter=qlora"])
    assert "CUDA" in str(err.value) and "adapter=lora" in str(err.value)


def test_cfg_job_composes_validates_and_is_fast(capsys):
    """`python -m lec … --cfg job`: lec's check passes (or fails in one line) before Hydra prints the composition;
    in this process here, as a process in tests/test_readme.py (the README runs this very command)."""
    from lec import __main__ as cli

    argv = ["hardware=rtx4090", "model=mistral7b", "data=lima_platypus", "--cfg", "job"]
    cli.check_command_line(argv)
    cfg = config.compose(argv[:3])
    assert cfg.model.hf_id == "mistralai/Mistral-7B-v0.1" and cfg.hardware.name == "rtx4090"
    with pytest.raises(SystemExit) as bad:
        cli.check_command_line(["adapter=qlora", "--cfg", "job"])  # the cpu preset
    assert bad.value.code != 0 and "CUDA" in capsys.readouterr().err


def test_params_round_trip_through_yaml(default_cfg, tmp_path):
    import yaml
    from omegaconf import OmegaConf

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(config.to_container(default_cfg)))
    again = config.load(OmegaConf.load(path))
    assert again == default_cfg
