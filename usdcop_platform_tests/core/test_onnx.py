"""ONNX export + parity gate, and the onnxruntime-only OnnxPolicy used by backtests and serving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from usdcop_platform.core import onnx_export as ox
from usdcop_platform.core import training as tr
from usdcop_platform.core.onnx_policy import OnnxPolicy, OnnxPolicyError
from usdcop_platform_tests.training_synth import synthetic_market, tiny

POS = 13
META = {"model_id": "smoke-1.0.0-abcdef012345", "feature_order_hash": "f" * 64}


@pytest.fixture(scope="module")
def trained(platform_config):
    data = tr.TrainingData(train=synthetic_market(8, 0), val=synthetic_market(4, 1), obs_bound=5.0)
    exp = tiny(platform_config.experiment("smoke"))
    return tr.train_seed(exp, data, 0, total_timesteps=512).model, data


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    model, _ = trained
    return ox.export_onnx(model, tmp_path_factory.mktemp("onnx") / "policy.onnx", META)


def test_graph_has_opset_17_metadata_and_named_outputs(exported) -> None:
    graph = onnx.load(str(exported))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert {p.key: p.value for p in graph.metadata_props} == META
    assert [i.name for i in graph.graph.input] == ["obs"]
    assert [o.name for o in graph.graph.output] == ["probabilities", "value"]


def test_parity_passes_on_random_and_real_observations(trained, exported) -> None:
    model, data = trained
    report = ox.check_parity(model, exported, data.val.obs, POS, seed=1)
    assert report.passed
    assert report.n_observations >= 1000 and report.n_random > 0 and report.n_real > 0
    assert report.max_abs_diff_probs <= 1e-5 and report.argmax_mismatches == 0


def test_probabilities_are_softmax_of_the_sb3_logits_and_value(trained, exported) -> None:
    model, data = trained
    obs = data.val.obs[:64]
    probs, value = OnnxPolicy(exported).predict_proba(obs)
    with torch.no_grad():
        t = torch.as_tensor(obs)
        logits = model.policy.get_distribution(t).distribution.logits
        ref = torch.softmax(logits, dim=-1).numpy()
        ref_value = model.policy.predict_values(t).squeeze(-1).numpy()
    assert probs.dtype == np.float32 and probs.shape == (64, 3) and value.shape == (64,)
    np.testing.assert_allclose(probs, ref, atol=1e-6)
    np.testing.assert_allclose(value, ref_value, atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    actions, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(probs.argmax(axis=1), actions)


def test_a_perturbed_graph_fails_parity(trained, exported, tmp_path) -> None:
    model, data = trained
    graph = onnx.load(str(exported))
    init = max(graph.graph.initializer, key=lambda i: np.prod(i.dims))  # a weight matrix
    w = numpy_helper.to_array(init).copy()
    w += 1e-3
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(graph, str(bad))
    report = ox.check_parity(model, bad, data.val.obs, POS)
    assert not report.passed
    assert report.max_abs_diff_probs > 1e-5


def test_parity_needs_enough_and_real_observations(trained, exported) -> None:
    model, data = trained
    with pytest.raises(ValueError, match="at least 1000"):
        ox.check_parity(model, exported, data.val.obs, POS, n_total=999)
    with pytest.raises(ValueError, match="real observations"):
        ox.check_parity(model, exported, data.val.obs[:0], POS)


def test_onnx_policy_single_observation_path_and_metadata(trained, exported) -> None:
    _, data = trained
    policy = OnnxPolicy(exported)
    assert policy.model_id == META["model_id"] and policy.feature_order_hash == META["feature_order_hash"]
    assert policy.input_name == "obs" and policy.n_features == 15
    probs, value = policy.predict_proba(data.val.obs[:5])
    for i in range(5):
        p1, v1 = policy.predict_one(data.val.obs[i])
        np.testing.assert_allclose(p1, probs[i], atol=1e-7)
        assert v1 == pytest.approx(float(value[i]), abs=1e-6)
    policy.check_feature_order(META["feature_order_hash"])
    with pytest.raises(OnnxPolicyError, match="feature_order_hash"):
        policy.check_feature_order("0" * 64)


def test_onnx_policy_refuses_bad_files_and_shapes(exported, tmp_path) -> None:
    with pytest.raises(OnnxPolicyError, match="not found"):
        OnnxPolicy(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(OnnxPolicyError, match="not a loadable"):
        OnnxPolicy(junk)
    policy = OnnxPolicy(exported)
    with pytest.raises(OnnxPolicyError, match=r"\(n, 15\)"):
        policy.predict_proba(np.zeros((2, 14), dtype=np.float32))
    with pytest.raises(ValueError):
        policy.predict_one(np.zeros(14, dtype=np.float32))


def test_serving_module_imports_onnxruntime_but_never_torch() -> None:
    code = (
        "import sys, usdcop_platform.core.onnx_policy as m, usdcop_platform.core.actions;"
        "bad = [n for n in ('torch', 'stable_baselines3', 'dagster', 'sqlalchemy', 'mlflow') if n in sys.modules];"
        "assert not bad, bad; assert 'onnxruntime' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_export_is_deterministic(trained, tmp_path) -> None:
    model, _ = trained
    a = ox.export_onnx(model, tmp_path / "a.onnx", META).read_bytes()
    b = ox.export_onnx(model, tmp_path / "b.onnx", META).read_bytes()
    assert a == b
