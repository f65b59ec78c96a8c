"""config/ loads into typed contracts; bad content fails with file, key and reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from usdcop_platform.contracts import ConfigError, load_platform_config
from usdcop_platform.contracts.base import sha256_hex
from usdcop_platform.contracts.platform import DEFAULT_CONFIG_DIR


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, target)
    return target


def _edit(path: Path, mutate) -> None:
    data = yaml.safe_load(path.read_text())
    mutate(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_repository_config_loads(platform_config) -> None:
    cfg = platform_config
    assert cfg.instrument.bars_per_session == 60
    assert cfg.instrument.timezone == "America/Bogota"
    assert {"baseline", "smoke"} <= set(cfg.experiments)
    assert cfg.features.n_features == 15
    assert cfg.features.feature_order_hash == sha256_hex(",".join(cfg.features.names))
    assert cfg.macro.variables["dxy"].column == "fxrt_index_dxy_usa_d_dxy"
    assert cfg.macro.variables["ust2y"].column == "finc_bond_yield2y_usa_d_dgs2"


def test_experiment_hashes_are_stable_and_content_sensitive(platform_config) -> None:
    smoke = platform_config.experiment("smoke")
    assert len(smoke.config_hash) == 64
    assert smoke.config_hash == platform_config.experiment("smoke").config_hash
    changed = smoke.model_copy(update={"seeds": (0, 1)})
    assert changed.config_hash != smoke.config_hash
    assert changed.reward_config_hash == smoke.reward_config_hash


def test_malformed_yaml_names_file_and_line(config_copy: Path) -> None:
    (config_copy / "mlops.yaml").write_text("risk: [unclosed\n  x: 1\n")
    with pytest.raises(ConfigError) as exc:
        load_platform_config(config_copy)
    assert "mlops.yaml" in str(exc.value) and "malformed YAML" in str(exc.value)


def test_unknown_key_is_rejected(config_copy: Path) -> None:
    _edit(config_copy / "experiments" / "smoke.yaml", lambda d: d["environment"].update(colour="red"))
    with pytest.raises(ConfigError) as exc:
        load_platform_config(config_copy)
    assert exc.value.file.endswith("smoke.yaml")
    assert exc.value.key == "environment.colour"
    assert exc.value.reason == "unknown key"


def test_unknown_hyperparameter_is_rejected(config_copy: Path) -> None:
    _edit(config_copy / "experiments" / "smoke.yaml", lambda d: d["algorithm"]["hyperparameters"].update(lr=1))
    with pytest.raises(ConfigError, match=r"algorithm\.hyperparameters\.lr: unknown key"):
        load_platform_config(config_copy)


def test_unknown_algorithm_is_rejected(config_copy: Path) -> None:
    _edit(config_copy / "experiments" / "smoke.yaml", lambda d: d["algorithm"].update(name="DQN"))
    with pytest.raises(ConfigError, match=r"algorithm\.name"):
        load_platform_config(config_copy)


def test_wrong_type_is_rejected(config_copy: Path) -> None:
    _edit(config_copy / "mlops.yaml", lambda d: d["risk"].update(max_trades_per_day="many"))
    with pytest.raises(ConfigError) as exc:
        load_platform_config(config_copy)
    assert exc.value.key == "risk.max_trades_per_day" and "integer" in exc.value.reason


def test_missing_experiment_is_a_clear_error(platform_config) -> None:
    with pytest.raises(ConfigError, match="no experiment named 'nope'"):
        platform_config.experiment("nope")


@pytest.mark.parametrize(
    "ranges, message",
    [
        ({"train": {"start": "2020-01-01", "end": "2021-01-01"}, "val": {"start": "2020-06-01", "end": "2021-06-01"},
          "test": {"start": "2022-01-01", "end": "2022-06-01"}}, "train"),
        ({"train": {"start": "2021-01-01", "end": "2020-01-01"}, "val": {"start": "2021-06-01", "end": "2021-07-01"},
          "test": {"start": "2022-01-01", "end": "2022-06-01"}}, "after end"),
        ({"train": {"start": "2020-01-01", "end": "2020-06-01"}, "val": {"start": "2022-01-01", "end": "2022-06-01"},
          "test": {"start": "2021-01-01", "end": "2021-06-01"}}, "val"),
    ],
    ids=["overlapping", "start-after-end", "unordered"],
)
def test_bad_date_ranges(config_copy: Path, ranges: dict, message: str) -> None:
    (config_copy / "date_ranges.yaml").write_text(yaml.safe_dump(ranges))
    with pytest.raises(ConfigError) as exc:
        load_platform_config(config_copy)
    assert exc.value.file.endswith("date_ranges.yaml") and message in str(exc.value)


def test_expected_range_min_above_max(config_copy: Path) -> None:
    _edit(config_copy / "macro_variables_ssot.yaml", lambda d: d["variables"]["vix"].update(expected_range=[90, 5]))
    with pytest.raises(ConfigError) as exc:
        load_platform_config(config_copy)
    assert exc.value.key == "variables.vix" and "min 90.0 > max 5.0" in exc.value.reason


def test_negative_publication_delay(config_copy: Path) -> None:
    _edit(config_copy / "macro_variables_ssot.yaml", lambda d: d["variables"]["dxy"].update(publication_delay_days=-1))
    with pytest.raises(ConfigError) as exc:
        load_platform_config(config_copy)
    assert exc.value.key == "variables.dxy.publication_delay_days" and "anti-leakage" in exc.value.reason


def test_unknown_feature_in_contract(config_copy: Path) -> None:
    _edit(config_copy / "features.yaml", lambda d: d["names"].append("moon_phase"))
    with pytest.raises(ConfigError, match="unknown feature"):
        load_platform_config(config_copy)


def test_experiment_with_other_feature_contract_version(config_copy: Path) -> None:
    _edit(config_copy / "experiments" / "smoke.yaml", lambda d: d.update(feature_contract_version="v9"))
    with pytest.raises(ConfigError, match="feature_contract_version"):
        load_platform_config(config_copy)


def test_empty_and_missing_files(config_copy: Path) -> None:
    (config_copy / "quality.yaml").write_text("")
    with pytest.raises(ConfigError, match="quality.yaml: <root>: file is empty"):
        load_platform_config(config_copy)
    (config_copy / "quality.yaml").unlink()
    with pytest.raises(ConfigError, match="file not found"):
        load_platform_config(config_copy)
