"""Each concept has one home (issue #16): the code is scanned for second copies, and derived registries are tied."""

from __future__ import annotations

import re
from pathlib import Path

from usdcop_platform.contracts.base import hmac_sha256_hex, sha256_hex, sha256_parts
from usdcop_platform.contracts.features import feature_order_hash

PACKAGE = Path(__file__).resolve().parents[2] / "usdcop_platform"


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE.parent)): p.read_text() for p in PACKAGE.rglob("*.py")}


def _offenders(pattern: str, allowed: set[str]) -> list[str]:
    rx = re.compile(pattern)
    return sorted(f"{path}:{text[:m.start()].count(chr(10)) + 1}" for path, text in _sources().items()
                  if path not in allowed for m in rx.finditer(text))


def test_hashing_lives_in_contracts_base() -> None:
    assert _offenders(r"\bhashlib\b", {"usdcop_platform/contracts/base.py"}) == []
    assert sha256_parts(["a", b"b", "c"]) == sha256_hex("abc")
    assert sha256_hex("\udc80") == sha256_parts(["\udc80"])  # lone surrogates (header bytes) hash, not raise
    assert len(hmac_sha256_hex("cookie", b"csrf")) == 64 and hmac_sha256_hex("a", b"m") != hmac_sha256_hex("b", b"m")


def test_feature_order_hash_has_one_formula() -> None:
    # the formula `sha256_hex(",".join(...))` is written once, in contracts/features.py
    assert _offenders(r"""sha256_hex\(\s*["'],["']\.join""", {"usdcop_platform/contracts/features.py"}) == []
    assert feature_order_hash(["a", "b"]) == sha256_hex("a,b") == feature_order_hash(iter(["a", "b"]))


# ---- derived registries ---------------------------------------------------------------------------


def test_feature_registry_is_the_feature_definitions() -> None:
    """KNOWN_FEATURES (what a contract may name) is FEATURE_SPECS (what core.features computes)."""
    from usdcop_platform.contracts import features as contract_features
    from usdcop_platform.core import features as engine

    assert engine.FEATURE_SPECS is contract_features.FEATURE_SPECS
    assert contract_features.KNOWN_FEATURES == tuple(engine.FEATURE_SPECS)
    kinds = {type(s).__name__ for s in engine.FEATURE_SPECS.values()}
    assert kinds == {"LogReturn", "Wilder", "Macro", "State"}


def test_registries_derived_from_the_repository_config(platform_config) -> None:  # noqa: ANN001
    from usdcop_platform.core.features import FEATURE_SPECS, Macro
    from usdcop_platform.core.synthetic import REAL_MACRO_CALIBRATION

    contract, ssot = platform_config.features, platform_config.macro
    assert set(contract.names) <= set(FEATURE_SPECS)
    assert set(contract.state_features) == {n for n in contract.names if type(FEATURE_SPECS[n]).__name__ == "State"}
    read = {v for n in contract.names if isinstance(FEATURE_SPECS[n], Macro) for v in FEATURE_SPECS[n].inputs}
    assert set(contract.macro_variables) == read and read <= set(ssot.variables)
    assert set(REAL_MACRO_CALIBRATION) == set(ssot.variables), "synthetic calibration per SSOT variable"
    assert contract.feature_order_hash == feature_order_hash(contract.names)


def test_required_macro_variables_come_from_the_features(tmp_path: Path) -> None:
    """Dropping a variable the features read is a ConfigError naming the readers; dropping the feature
    too makes it loadable (nothing in contracts/macro.py lists required variables)."""
    import shutil

    import pytest
    import yaml

    from usdcop_platform.contracts.errors import ConfigError
    from usdcop_platform.contracts.platform import DEFAULT_CONFIG_DIR, load_platform_config

    cfg = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    ssot_path = cfg / "macro_variables_ssot.yaml"
    ssot = yaml.safe_load(ssot_path.read_text())
    del ssot["variables"]["usdmxn"]
    ssot_path.write_text(yaml.safe_dump(ssot, sort_keys=False))
    with pytest.raises(ConfigError) as exc:
        load_platform_config(cfg)
    assert exc.value.file.endswith("macro_variables_ssot.yaml") and exc.value.key == "variables"
    assert "usdmxn" in exc.value.reason and "usdmxn_change_1d" in exc.value.reason

    features_path = cfg / "features.yaml"
    features = yaml.safe_load(features_path.read_text())
    features["names"] = [n for n in features["names"] if n != "usdmxn_change_1d"]
    features_path.write_text(yaml.safe_dump(features, sort_keys=False))
    for exp in (cfg / "experiments").glob("*.yaml"):
        exp.unlink()  # experiments pin the contract version; the contract itself is what is tested
    (cfg / "experiments" / ".keep").write_text("")
    loaded = load_platform_config(cfg)
    assert "usdmxn" not in loaded.features.macro_variables and "usdmxn" not in loaded.macro.variables


def test_api_has_one_authentication_stack() -> None:
    """Keys are checked by api/auth.py's Authenticator, called from api/deps.py (the route dependencies)
    and api/edge.py (requests with a body, before it is read; deps takes that principal over)."""
    import inspect

    from usdcop_platform.api import deps, inference

    allowed = {"usdcop_platform/api/deps.py", "usdcop_platform/api/auth.py", "usdcop_platform/api/edge.py"}
    assert _offenders(r"Security\(\s*api_key_header|\.authenticator\.authenticate\(|Authenticator\(", allowed) == []
    assert _offenders(r"""this needs \{?['"]?\w""", {"usdcop_platform/api/deps.py"}) == []  # the 403 wording
    assert inspect.iscoroutinefunction(inference.viewer) and inference.viewer.__name__ == "require_viewer_cached"
    assert not inspect.iscoroutinefunction(deps.require_role("viewer"))


def test_a_bars_session_and_grid_index_have_one_home(calendar) -> None:  # noqa: ANN001
    """The session of an instant and its index in the session grid are made in core/calendar.py only;
    the column forms (session_expr, grid_index_expr) agree with the scalar ones on every minute of a day."""
    from datetime import UTC, datetime, timedelta

    import polars as pl

    assert _offenders(r"convert_time_zone\([^)]*\)\s*\.dt\.date\(\)|\blocal\.dt\.date\(\)",
                      {"usdcop_platform/core/calendar.py"}) == []
    assert _offenders(r"first_bar_start\.hour \* 60", {"usdcop_platform/core/calendar.py"}) == []  # grid minutes
    start = datetime(2024, 6, 4, 0, 0, tzinfo=UTC)
    instants = [start + timedelta(minutes=m) for m in range(0, 24 * 60)] + [start + timedelta(hours=14, seconds=1)]
    frame = pl.DataFrame({"time": instants}).select(
        pl.col("time"), calendar.session_expr().alias("s"), calendar.grid_index_expr().alias("k"))
    assert frame["s"].to_list() == [calendar.session_of(t) for t in instants]
    assert frame["k"].to_list() == [calendar.bar_index(t) for t in instants]
    assert frame["k"].drop_nulls().to_list() == list(range(calendar.bars_per_session))


def test_shells_read_configuration_through_settings() -> None:
    """`get_config()` without a directory is the repo's config/, whatever USDCOP_CONFIG_DIR says:
    the Dagster definitions, the API and the use cases go through settings.platform_config()."""
    allowed = {"usdcop_platform/contracts/platform.py", "usdcop_platform/contracts/__init__.py"}
    shells = ("usdcop_platform/defs/", "usdcop_platform/api/", "usdcop_platform/app/")
    found = [o for o in _offenders(r"\bget_config\(\)", allowed) if o.startswith(shells)]
    assert found == []
