"""Normalization: train-only stats, std < 1e-8 -> 1, clip ±5, float32, hashed file that travels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from usdcop_platform.contracts.base import content_hash
from usdcop_platform.core.normalization import MIN_STD, NormalizationError, NormStats, fit


@pytest.fixture
def contract(platform_config):
    return platform_config.features


def _matrix(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, (n, 15))
    x[:, 13] = rng.choice([-1.0, 0.0, 1.0], n)  # position
    x[:, 14] = rng.integers(0, 60, n) / 59  # time_norm
    return x


def test_fit_uses_market_features_only_and_population_std(contract) -> None:
    x = _matrix(500)
    s = NormStats.fit(x, contract)
    assert s.market_features == contract.market_features and len(s.mean) == 13
    np.testing.assert_allclose(s.mean, x[:, :13].mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(s.std, x[:, :13].std(axis=0), rtol=1e-13)
    assert s.feature_order_hash == contract.feature_order_hash and s.n_rows == 500
    assert fit(x, contract) == s


def test_apply_zscores_clips_and_passes_state_through(contract) -> None:
    train = _matrix(1000)
    s = NormStats.fit(train, contract)
    x = _matrix(50, seed=1)
    x[0, 2] = 1e6  # far outlier -> clipped
    x[1, 4] = -1e6
    z = s.apply(x)
    assert z.dtype == np.float32 and z.shape == x.shape
    assert z[0, 2] == contract.normalization_clip and z[1, 4] == -contract.normalization_clip
    expected = np.clip((x[:, :13] - np.array(s.mean)) / np.array(s.std), -5, 5).astype(np.float32)
    np.testing.assert_array_equal(z[:, :13], expected)
    np.testing.assert_array_equal(z[:, 13:], x[:, 13:].astype(np.float32))
    one = s.apply(x[3])
    assert one.shape == (15,) and np.array_equal(one, z[3])


def test_constant_feature_gets_unit_std(contract) -> None:
    x = _matrix(100)
    x[:, 5] = 42.0
    x[:, 6] = 1.0 + np.arange(100) * (MIN_STD / 1000)  # std far below the threshold
    s = NormStats.fit(x, contract)
    assert s.std[5] == 1.0 and s.std[6] == 1.0
    z = s.apply(x)
    assert np.all(z[:, 5] == 0.0) and np.isfinite(z).all()


def test_train_only_stats_do_not_see_other_rows(contract) -> None:
    train, test = _matrix(300, 0), _matrix(300, 1) + 100.0
    a = NormStats.fit(train, contract)
    assert a == NormStats.fit(train.copy(), contract)
    assert a != NormStats.fit(np.vstack([train, test]), contract)


def test_json_round_trip_and_hash(contract, tmp_path) -> None:
    s = NormStats.fit(_matrix(200), contract)
    path = s.to_json(tmp_path / "m" / "norm_stats.json")
    data = json.loads(path.read_text())
    assert data["hash"] == s.hash == content_hash(s.to_dict()) == s.stats_hash
    back = NormStats.from_json(path)
    assert back == s and back.hash == s.hash
    np.testing.assert_array_equal(back.apply(_matrix(10, 3)), s.apply(_matrix(10, 3)))


def test_tampered_or_malformed_file_is_refused(contract, tmp_path) -> None:
    s = NormStats.fit(_matrix(200), contract)
    path = s.to_json(tmp_path / "norm_stats.json")
    data = json.loads(path.read_text())
    data["mean"][0] += 1.0
    path.write_text(json.dumps(data))
    with pytest.raises(NormalizationError, match="recorded hash"):
        NormStats.from_json(path)
    path.write_text("{not json")
    with pytest.raises(NormalizationError, match="cannot read"):
        NormStats.from_json(path)
    bad = s.to_dict() | {"std": [0.0] * 13}
    with pytest.raises(NormalizationError, match="non-positive"):
        NormStats.from_dict(bad)
    with pytest.raises(NormalizationError, match="format_version"):
        NormStats.from_dict(s.to_dict() | {"format_version": 99})
    with pytest.raises(NormalizationError, match="malformed"):
        NormStats.from_dict({k: v for k, v in s.to_dict().items() if k != "mean"})


def test_bad_inputs(contract) -> None:
    x = _matrix(20)
    with pytest.raises(NormalizationError, match="empty"):
        NormStats.fit(x[:0], contract)
    x_nan = x.copy()
    x_nan[3, 7] = np.nan
    with pytest.raises(NormalizationError, match="dxy_change_1d"):
        NormStats.fit(x_nan, contract)
    s = NormStats.fit(x, contract)
    with pytest.raises(NormalizationError, match="NaN/inf"):
        s.apply(x_nan)
    with pytest.raises(NormalizationError, match="shape"):
        s.apply(x[:, :14])
    other = contract.model_copy(update={"names": contract.names[::-1]})
    with pytest.raises(NormalizationError, match="feature_order_hash"):
        s.check_contract(other)
    s.check_contract(contract)


def test_apply_is_bit_for_bit_the_per_column_formula(contract) -> None:
    """apply's one full-width expression gives exactly the definition: market columns
    clip((x - mean) / std, ±clip), every other column untouched, then float32."""
    rng = np.random.default_rng(5)
    train = rng.normal(size=(300, contract.n_features)) * rng.uniform(0.001, 1000, contract.n_features)
    stats = fit(train, contract)
    x = rng.normal(size=(2000, contract.n_features)) * rng.uniform(0.001, 1e6, contract.n_features)
    x[:7] = np.array([0.0, -0.0, 1e-300, -1e300, stats.mean[0], 5e-324, 1.0])[:, None]  # zeros, extremes, the mean
    idx = [contract.names.index(n) for n in contract.market_features]
    want = x.copy()
    want[:, idx] = np.clip((x[:, idx] - np.asarray(stats.mean)) / np.asarray(stats.std), -stats.clip, stats.clip)
    got = stats.apply(x)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), want.astype(np.float32).view(np.uint32))
    assert np.array_equal(stats.apply(x[3]), got[3])
