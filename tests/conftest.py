"""Shared fixtures: every device-aware test runs on NumPy, and on CuPy when a GPU is usable."""

from __future__ import annotations

import numpy as np
import pytest

from minigraph import backend

DEVICES = ["cpu", "gpu"]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    if request.param == "gpu" and not backend.is_gpu_available():
        pytest.skip(f"no usable GPU: {backend.gpu_unavailable_reason()}")
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def on(device: str):
    """on(array) -> the array on the test's device."""
    return lambda array: backend.to_device(np.asarray(array), device)
