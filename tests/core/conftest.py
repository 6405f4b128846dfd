"""Fixtures for the framework-free core tests: the fake adapter, its models and data."""

from __future__ import annotations

import numpy as np
import pytest

from slimkit.registry import register_adapter, unregister_adapter

from fake_adapter import FakeAdapter, FakeModel, make_mlp


@pytest.fixture
def fake_registered():
    """Registers :class:`FakeAdapter` with slimkit for one test and removes it afterwards."""
    register_adapter(FakeAdapter)
    try:
        yield FakeAdapter
    finally:
        unregister_adapter(FakeAdapter)


@pytest.fixture
def mlp() -> FakeModel:
    """fc1 (8x16), bn, relu, fc2 (16x12), relu, scale (other), logits (12x4)."""
    return make_mlp()


@pytest.fixture
def classification_data() -> tuple[np.ndarray, np.ndarray]:
    """200 samples of 8 features, 4 classes given by a fixed random linear rule."""
    rng = np.random.default_rng(123)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    w = rng.normal(size=(8, 4))
    y = np.argmax(x @ w, axis=1).astype(np.int64)
    return x, y
