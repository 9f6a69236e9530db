"""Device selection: MINIGRAPH_DEVICE, and the fallback when CuPy is missing or has no GPU."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import minigraph as mg
from minigraph import backend


@pytest.fixture
def fresh_probe():
    backend.is_gpu_available.cache_clear()
    yield
    backend.is_gpu_available.cache_clear()


def fake_cupy(is_available: bool = True, allocation_error: Exception | None = None):
    def arange(*args, **kwargs):
        if allocation_error is not None:
            raise allocation_error
        return np.arange(*args, **kwargs)

    cuda = types.SimpleNamespace(is_available=lambda: is_available,
                                 Stream=types.SimpleNamespace(null=types.SimpleNamespace(synchronize=lambda: None)))
    return types.SimpleNamespace(cuda=cuda, arange=arange, float32=np.float32,
                                 ndarray=type("ndarray", (), {}))


class CUDARuntimeError(RuntimeError):
    pass


def test_cpu_is_chosen_by_the_environment_variable(monkeypatch):
    monkeypatch.setenv("MINIGRAPH_DEVICE", "cpu")
    assert backend.default_device() == "cpu"
    t = mg.Tensor([1.0, 2.0])
    assert isinstance(t.data, np.ndarray) and t.device == "cpu"


def test_an_unknown_device_name_is_rejected(monkeypatch):
    monkeypatch.setenv("MINIGRAPH_DEVICE", "tpu")
    with pytest.raises(ValueError, match="MINIGRAPH_DEVICE must be one of cpu, gpu, auto; got 'tpu'"):
        backend.default_device()


def test_auto_falls_back_to_cpu_when_cupy_is_missing(monkeypatch, fresh_probe):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    monkeypatch.setenv("MINIGRAPH_DEVICE", "auto")
    assert not backend.is_gpu_available()
    assert "cannot be imported" in backend.gpu_unavailable_reason()
    assert backend.default_device() == "cpu"


def test_auto_falls_back_to_cpu_when_cupy_sees_no_device(monkeypatch, fresh_probe):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(is_available=False))
    monkeypatch.delenv("MINIGRAPH_DEVICE", raising=False)
    assert backend.default_device() == "cpu"
    assert "no CUDA device" in backend.gpu_unavailable_reason()


def test_auto_falls_back_when_import_works_but_the_first_allocation_fails(monkeypatch, fresh_probe):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(allocation_error=CUDARuntimeError("no driver")))
    assert not backend.is_gpu_available()
    assert "CUDARuntimeError: no driver" in backend.gpu_unavailable_reason()
    assert backend.default_device() == "cpu"


def test_a_working_cupy_is_chosen_by_auto(monkeypatch, fresh_probe):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    monkeypatch.setenv("MINIGRAPH_DEVICE", "auto")
    assert backend.default_device() == "gpu"


def test_gpu_without_a_usable_gpu_says_why(monkeypatch, fresh_probe):
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setenv("MINIGRAPH_DEVICE", "gpu")
    with pytest.raises(RuntimeError, match="MINIGRAPH_DEVICE=gpu needs a GPU, but cupy cannot be imported"):
        backend.default_device()
    with pytest.raises(RuntimeError, match="needs a GPU"):
        backend.to_device(np.ones(2), "gpu")


def test_numpy_arrays_use_numpy():
    assert backend.get_array_module(np.ones(2), None, 3.0) is np
    assert backend.to_device(np.ones(2), "cpu").__class__ is np.ndarray
    with pytest.raises(ValueError, match="device must be one of"):
        backend.to_device(np.ones(2), "cuda")


def test_tensors_move_between_devices_and_gradients_follow(device, rng):
    x = mg.Tensor(rng.normal(size=(3, 2)), requires_grad=True)
    moved = x.to(device)
    assert moved.device == device
    out = mg.relu(moved)
    out.backward(backend.to_device(np.ones((3, 2)), device))
    assert x.device == "cpu" and isinstance(x.grad, np.ndarray)
    np.testing.assert_array_equal(x.grad, x.data > 0)
