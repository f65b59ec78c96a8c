"""Fixtures of the serving tests (the inference engine and the fused ensemble)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def cfg(platform_config):
    return platform_config


@pytest.fixture
def train(cfg):
    """A train-split-like raw feature matrix the fixture models' norm stats are fitted on."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, cfg.features.n_features))
    x[:, cfg.features.names.index("position")] = rng.integers(-1, 2, 500)
    return x
