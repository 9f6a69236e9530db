"""Shared fixtures: every device-aware test runs on NumPy, and on CuPy when a GPU is usable."""

from __future__ import annotations

import importlib.util

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


@pytest.fixture(params=["fused", "formula"])
def batch_norm_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Batch norm on the fused kernels (minigraph/kernels, CPU with numba) or on its formula."""
    if request.param == "fused" and importlib.util.find_spec("numba") is None:
        pytest.skip("numba is not installed (pip install 'minigraph[fast]'): no fused CPU path")
    monkeypatch.setenv("MINIGRAPH_FUSED", "1" if request.param == "fused" else "0")
    return request.param
