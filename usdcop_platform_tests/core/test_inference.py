"""ONNX inference engine against the real SQL store and real ONNX files: verification, ensemble,
hot reload with atomic swap, thread safety, bad observations."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from usdcop_platform.adapters.store import clear_store_cache, get_store
from usdcop_platform.bench import live_fixtures as fx
from usdcop_platform.contracts.mlops import EnsembleConfig, EnsembleMember
from usdcop_platform.core.actions import HOLD
from usdcop_platform.core.inference import (
    InferenceEngine,
    InvalidObservation,
    ModelVerificationError,
    NoProductionModel,
    combine,
)
from usdcop_platform.core.policy_runner import policy_step


@pytest.fixture
def store(db_url):
    s = get_store(db_url)
    yield s
    clear_store_cache()


def obs(cfg, seed=1, n=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n or 1, cfg.features.n_features))
    x[:, cfg.features.names.index("position")] = rng.integers(-1, 2, n or 1)
    return x if n else x[0]


def engine(store, cfg, ensemble=None, **kw):
    return InferenceEngine(store, cfg.features, ensemble or cfg.mlops.ensemble, **kw)


def test_no_production_model(store, cfg):
    eng = engine(store, cfg)
    with pytest.raises(NoProductionModel, match="no production model"):
        eng.load()
    with pytest.raises(NoProductionModel):
        eng.predict(np.zeros(cfg.features.n_features))
    assert eng.status()["loaded"] is False and "NoProductionModel" in eng.status()["last_error"]


def test_serves_production_and_matches_policy_step(store, cfg, train, tmp_path):
    m = fx.make_model(tmp_path, cfg, train, seed=1)
    fx.register(store, m)
    eng = engine(store, cfg)
    snap = eng.load()
    assert [x.model_id for x in snap.members] == [m.model_id]
    member = snap.members[0]
    x = obs(cfg)
    pos_i = cfg.features.names.index("position")
    for position in (-1, 0, 1):
        want = policy_step(member.policy, member.normalizer, x, position, position_index=pos_i)
        got = eng.step(x, position)
        assert got.action == want.action and got.confidence == want.confidence
        assert np.array_equal(got.probabilities, want.probabilities.astype(np.float64))
    # the API path (position inside the observation) gives the same numbers
    x2 = x.copy()
    x2[pos_i] = 1
    assert np.array_equal(eng.predict(x2).probabilities, eng.step(x, 1).probabilities)
    flat = eng.step(x, 1, force_flat=True)
    assert flat.forced_flat


@pytest.mark.parametrize("bad,msg", [
    (np.full(14, 0.0), "exactly 15 values"),
    (np.full(16, 0.0), "exactly 15 values"),
    (np.array([np.nan] + [0.0] * 14), "NaN"),
    (np.array([0.0] * 14 + [np.inf]), "inf"),
    (np.array([0.0] * 13 + [0.5, 0.0]), "position"),
    ("abc", "numbers"),
])
def test_bad_observations(store, cfg, train, tmp_path, bad, msg):
    fx.register(store, fx.make_model(tmp_path, cfg, train, seed=1))
    eng = engine(store, cfg)
    with pytest.raises(InvalidObservation, match=msg):
        eng.predict(bad)


def test_corrupted_onnx_refused(store, cfg, train, tmp_path):
    m = fx.make_model(tmp_path, cfg, train, seed=1)
    fx.register(store, m)
    raw = bytearray(m.onnx_path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    m.onnx_path.write_bytes(bytes(raw))
    with pytest.raises(ModelVerificationError, match="corrupted or replaced"):
        engine(store, cfg).load()


def test_unloadable_onnx_with_matching_hash_refused(store, cfg, train, tmp_path):
    m = fx.make_model(tmp_path, cfg, train, seed=1)
    m.onnx_path.write_bytes(b"not an onnx graph")
    from usdcop_platform.contracts.base import file_hash

    fx.register(store, fx.FixtureModel(m.model_id, {**m.record, "onnx_hash": file_hash(m.onnx_path)},
                                       m.onnx_path, m.norm_stats))
    with pytest.raises(ModelVerificationError, match="not a loadable ONNX model"):
        engine(store, cfg).load()


@pytest.mark.parametrize("field,value,msg", [
    ("feature_order_hash", "0" * 64, "feature_order_hash"),
    ("model_hash", "f" * 64, "model_hash"),
    ("norm_stats_hash", "e" * 64, "norm stats hash"),
])
def test_hash_mismatch_refused(store, cfg, train, tmp_path, field, value, msg):
    m = fx.make_model(tmp_path, cfg, train, seed=1)
    fx.register(store, fx.FixtureModel(m.model_id, {**m.record, field: value}, m.onnx_path, m.norm_stats))
    with pytest.raises(ModelVerificationError, match=msg):
        engine(store, cfg).load()


def test_missing_file_and_not_servable(store, cfg, train, tmp_path):
    m = fx.make_model(tmp_path, cfg, train, seed=1)
    fx.register(store, fx.FixtureModel(m.model_id, {**m.record, "onnx_path": str(tmp_path / "nope.onnx")},
                                       m.onnx_path, m.norm_stats))
    with pytest.raises(ModelVerificationError, match="does not exist"):
        engine(store, cfg).load()
    m2 = fx.make_model(tmp_path, cfg, train, seed=2)
    rec = fx.register(store, m2, stage=None)
    with pytest.raises(ModelVerificationError, match="not servable"):
        engine(store, cfg).load_member({**rec, "servable": False}, 1.0)


def test_hot_reload_swaps_and_failed_reload_keeps_old(store, cfg, train, tmp_path):
    a = fx.make_model(tmp_path, cfg, train, seed=1)
    fx.register(store, a)
    eng = engine(store, cfg)
    first = eng.load()
    assert eng.maybe_reload() is False  # registry unchanged
    b = fx.make_model(tmp_path, cfg, train, seed=2)
    fx.register(store, b)  # promotes b: registry version moves
    assert eng.maybe_reload() is True
    assert eng.snapshot.primary.model_id == b.model_id and eng.snapshot.registry_version > first.registry_version
    # a broken model promoted: the reload fails, b keeps serving, the error is reported
    c = fx.make_model(tmp_path, cfg, train, seed=3)
    c.onnx_path.write_bytes(b"garbage")
    fx.register(store, fx.FixtureModel(c.model_id, c.record, c.onnx_path, c.norm_stats))
    assert eng.maybe_reload() is False
    assert eng.snapshot.primary.model_id == b.model_id
    assert "corrupted or replaced" in eng.status()["last_error"]
    assert eng.predict(obs(cfg)).members[0].model_id == b.model_id
    assert eng.stats["failed_loads"] == 1 and eng.stats["reloads"] == 1


def test_poll_interval_throttles_registry_reads(store, cfg, train, tmp_path):
    fx.register(store, fx.make_model(tmp_path, cfg, train, seed=1))
    clock = [0.0]
    eng = engine(store, cfg, poll_interval_s=5.0, clock=lambda: clock[0])
    eng.load()
    fx.register(store, fx.make_model(tmp_path, cfg, train, seed=2))
    assert eng.maybe_reload() is False  # within the interval: not even polled
    clock[0] = 6.0
    assert eng.maybe_reload() is True


def test_concurrent_predictions_during_swaps(store, cfg, train, tmp_path):
    models = [fx.make_model(tmp_path, cfg, train, seed=s) for s in (1, 2, 3)]
    fx.register(store, models[0])
    eng = engine(store, cfg)
    eng.load()
    x = obs(cfg, n=8)
    errors: list[BaseException] = []
    seen: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                for p in eng.predict_batch(x):
                    assert np.isclose(p.probabilities.sum(), 1.0, atol=1e-5)
                    seen.add(p.members[0].model_id)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for m in models[1:] + models[:1]:
        fx.register(store, m)
        eng.maybe_reload()
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert seen <= {m.model_id for m in models}


def _ensemble(method, ids_weights):
    return EnsembleConfig(method=method, members=tuple(EnsembleMember(model_id=i, weight=w) for i, w in ids_weights))


def test_weighted_average_ensemble(store, cfg, train, tmp_path):
    models = [fx.make_model(tmp_path, cfg, train, seed=s) for s in (1, 2, 3)]
    for m in models:
        fx.register(store, m, stage=None)
    eng = engine(store, cfg, _ensemble("weighted_average", [(models[0].model_id, 3.0), (models[1].model_id, 1.0),
                                                            (models[2].model_id, 1.0)]))
    xs = obs(cfg, n=20)
    for p in eng.predict_batch(xs):
        manual = (3 * p.members[0].probabilities + p.members[1].probabilities + p.members[2].probabilities) / 5
        assert np.allclose(p.probabilities, manual, atol=1e-12)
        assert p.action == int(np.argmax(manual)) and p.confidence == pytest.approx(manual.max())
    assert len(eng.status()["members"]) == 3


def test_majority_vote_and_tie_is_hold():
    probs = np.array([
        [[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]],  # member 1: SELL, BUY
        [[0.6, 0.3, 0.1], [0.7, 0.2, 0.1]],  # member 2: SELL, SELL
        [[0.1, 0.1, 0.8], [0.1, 0.1, 0.8]],  # member 3: BUY, BUY
    ])
    p, action, conf = combine("majority_vote", np.ones(3), probs)
    assert action.tolist() == [0, 2]  # two SELL votes; two BUY votes
    assert conf[0] == pytest.approx(p[0, 0])
    tie = np.array([[[0.7, 0.2, 0.1]], [[0.1, 0.2, 0.7]]])
    _, action, _ = combine("majority_vote", np.ones(2), tie)
    assert action.tolist() == [HOLD]  # one SELL vote, one BUY vote: no majority
    _, action, _ = combine("majority_vote", np.array([1.0, 2.0]), tie)
    assert action.tolist() == [2]  # weighted votes break it


def test_majority_vote_engine(store, cfg, train, tmp_path):
    models = [fx.make_model(tmp_path, cfg, train, seed=s) for s in (1, 2, 3)]
    for m in models:
        fx.register(store, m, stage=None)
    eng = engine(store, cfg, _ensemble("majority_vote", [(m.model_id, 1.0) for m in models]))
    for p in eng.predict_batch(obs(cfg, n=30)):
        votes = np.bincount([m.action for m in p.members], minlength=3)
        if votes.max() >= 2:
            assert p.action == int(votes.argmax())
        else:
            assert p.action == HOLD


def test_staging_member_is_optional(store, cfg, train, tmp_path):
    prod = fx.make_model(tmp_path, cfg, train, seed=1)
    fx.register(store, prod)
    ens = EnsembleConfig(method="weighted_average", members=(EnsembleMember(stage="production", weight=1.0),
                                                             EnsembleMember(stage="staging", weight=1.0)))
    eng = engine(store, cfg, ens)
    assert [m.model_id for m in eng.load().members] == [prod.model_id]
    stg = fx.make_model(tmp_path, cfg, train, seed=2)
    fx.register(store, stg, stage=None)  # staging
    assert [m.model_id for m in eng.load().members] == [prod.model_id, stg.model_id]


def test_warm_up_refuses_non_probability_output(store, cfg, train, tmp_path):
    m = fx.make_model(tmp_path, cfg, train, seed=1)
    # same graph without the softmax: logits are not probabilities
    import onnx

    model = onnx.load(str(m.onnx_path))
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"][0]
    softmax.op_type = "Identity"
    del softmax.attribute[:]
    onnx.save(model, str(m.onnx_path))
    from usdcop_platform.contracts.base import file_hash

    fx.register(store, fx.FixtureModel(m.model_id, {**m.record, "onnx_hash": file_hash(m.onnx_path)},
                                       m.onnx_path, m.norm_stats))
    with pytest.raises(ModelVerificationError, match="warm-up"):
        engine(store, cfg).load()


def test_relative_paths_resolve_against_models_root(store, cfg, train, tmp_path):
    m = fx.make_model(tmp_path, cfg, train, seed=1)
    rel = {**m.record, "onnx_path": str(Path(m.onnx_path).relative_to(tmp_path)),
           "norm_stats_path": str(Path(m.record["norm_stats_path"]).relative_to(tmp_path))}
    fx.register(store, fx.FixtureModel(m.model_id, rel, m.onnx_path, m.norm_stats))
    assert engine(store, cfg, models_root=tmp_path).load().primary.model_id == m.model_id
