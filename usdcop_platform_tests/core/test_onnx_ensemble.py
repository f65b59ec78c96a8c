"""The fused ensemble session (core.onnx_ensemble): with real PPO graphs exported by the platform,
every member's probabilities through the fused session equal policy_step's bit for bit (so the
live decision is the backtest's), and graphs that cannot be fused or do not reproduce their own
sessions are served one by one."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from usdcop_platform.adapters.store import clear_store_cache, get_store
from usdcop_platform.bench import live_fixtures as fx
from usdcop_platform.bench.live import _sb3_models
from usdcop_platform.contracts.mlops import EnsembleConfig, EnsembleMember
from usdcop_platform.core.inference import InferenceEngine
from usdcop_platform.core.onnx_ensemble import fuse
from usdcop_platform.core.onnx_policy import OnnxPolicy
from usdcop_platform.core.policy_runner import policy_step


@pytest.fixture
def ppo_models(tmp_path, cfg, train):
    models, _ = _sb3_models(tmp_path, cfg, train, 3)
    return models


def _engine(db_url, cfg, models, method="weighted_average"):
    store = get_store(db_url)
    for m in models:
        fx.register(store, m, stage=None)
    members = tuple(EnsembleMember(model_id=m.model_id, weight=w) for m, w in zip(models, (2.0, 1.0, 0.5)))
    return InferenceEngine(store, cfg.features, EnsembleConfig(method=method, members=members))


@pytest.mark.parametrize("method", ["weighted_average", "majority_vote"])
def test_fused_step_is_each_members_policy_step(db_url, cfg, ppo_models, method):
    eng = _engine(db_url, cfg, ppo_models, method)
    try:
        snap = eng.load()
        assert snap.fused is not None and snap.fused.size == 3
        one_by_one = replace(snap, fused=None)
        pos_i = cfg.features.names.index("position")
        rng = np.random.default_rng(7)
        for _ in range(40):
            x = rng.normal(0.0, 3.0, cfg.features.n_features)
            for position in (-1, 0, 1):
                for flat in (False, True):
                    eng._snapshot = snap
                    got = eng.step(x, position, force_flat=flat)
                    eng._snapshot = one_by_one
                    want = eng.step(x, position, force_flat=flat)
                    assert got.action == want.action and got.confidence == want.confidence
                    assert np.array_equal(got.probabilities, want.probabilities) and got.forced_flat == flat
                    for m, mp in zip(snap.members, got.members):
                        own = policy_step(m.policy, m.normalizer, x, position, position_index=pos_i)
                        assert np.array_equal(mp.probabilities, own.probabilities.astype(np.float64))
                        assert mp.action == own.action
    finally:
        clear_store_cache()


def test_one_member_is_not_fused(tmp_path, cfg, train):
    m = fx.make_model(tmp_path, cfg, train, seed=1)
    assert fuse([OnnxPolicy(m.onnx_path)], cfg.features.n_features) is None


def test_fixture_graphs_fuse_too(tmp_path, cfg, train):
    policies = [OnnxPolicy(fx.make_model(tmp_path, cfg, train, seed=s).onnx_path) for s in (1, 2)]
    fused = fuse(policies, cfg.features.n_features)
    assert fused is not None
    x = np.random.default_rng(3).normal(size=(5, cfg.features.n_features)).astype(np.float32)
    for got, p in zip(fused.probabilities([x, x]), policies):
        assert np.array_equal(got, p.predict_proba(x)[0])


def test_graphs_of_different_opsets_are_served_one_by_one(tmp_path, cfg, ppo_models):
    first, second = (Path(m.onnx_path) for m in ppo_models[:2])
    model = onnx.load(str(second))
    model.opset_import[0].version += 1  # same ops, a later opset: one model cannot hold both
    other = tmp_path / "later_opset.onnx"
    onnx.save(model, str(other))
    assert fuse([OnnxPolicy(first), OnnxPolicy(other)], cfg.features.n_features) is None


def test_a_graph_that_is_not_its_sessions_is_served_one_by_one(tmp_path, cfg, ppo_models):
    """A file replaced after its session was built: the fused graph would run other weights, so
    the probe comparison refuses it."""
    paths = [Path(m.onnx_path) for m in ppo_models[:2]]
    copies = [tmp_path / f"member{i}.onnx" for i in range(2)]
    for src, dst in zip(paths, copies):
        shutil.copy(src, dst)
    policies = [OnnxPolicy(p) for p in copies]
    assert fuse(policies, cfg.features.n_features) is not None
    shutil.copy(paths[0], copies[1])
    assert fuse(policies, cfg.features.n_features) is None
