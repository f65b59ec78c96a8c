"""The `search` section of an experiment: invalid ranges are refused naming the key."""

from __future__ import annotations

import pytest
import yaml

from usdcop_platform.contracts.errors import ConfigError
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.contracts.platform import DEFAULT_CONFIG_DIR, load_platform_config

LR = "algorithm.hyperparameters.learning_rate"


def smoke_raw() -> dict:
    return yaml.safe_load((DEFAULT_CONFIG_DIR / "experiments" / "smoke.yaml").read_text())


@pytest.mark.parametrize(
    ("key", "spec", "message"),
    [
        (LR, {"low": 1e-3, "high": 1e-4}, "must be smaller than high"),
        (LR, {"low": 0.0, "high": 1e-3, "log": True}, "a log range needs low > 0"),
        (LR, {"low": -1.0, "high": 1e-3}, "gives an invalid experiment"),  # learning_rate must be > 0
        ("algorithm.hyperparameters.n_epochs", {"low": 1.5, "high": 4, "type": "int"}, "integer bounds"),
        ("algorithm.hyperparameters.batch_size", {"low": 8, "high": 4096, "type": "int"}, "exceeds n_steps*n_envs"),
        ("algorithm.net_arch", {"choices": []}, "choices must not be empty"),
        ("algorithm.hyperparameters.no_such_key", {"low": 0.0, "high": 1.0}, "no_such_key is not a field"),
        ("environment.cost_bps", {"low": 0.0, "high": 1.0}, "only algorithm.*"),
    ],
)
def test_invalid_search_space_names_the_key(key: str, spec: dict, message: str) -> None:
    raw = smoke_raw()
    raw["search"]["params"] = {key: spec}
    with pytest.raises(ValueError) as err:
        ExperimentConfig.model_validate(raw)
    assert key in str(err.value) and message in str(err.value)


def test_invalid_search_space_in_a_yaml_file_is_a_config_error_naming_the_key(tmp_path) -> None:
    import shutil

    config_dir = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, config_dir)
    raw = smoke_raw()
    raw["search"]["params"][LR] = {"low": 1e-2, "high": 1e-3}
    (config_dir / "experiments" / "smoke.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_platform_config(config_dir).experiment("smoke")
    assert LR in str(err.value) and "smoke" in str(err.value)


def test_search_section_does_not_change_the_config_hash() -> None:
    raw = smoke_raw()
    with_search = ExperimentConfig.model_validate(raw)
    raw.pop("search")
    assert ExperimentConfig.model_validate(raw).config_hash == with_search.config_hash
    assert "search" not in with_search.canonical()
