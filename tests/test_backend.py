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
    monkeypatch.delenv("MINIGRAPH_DEVICE")  # unset means auto
    assert backend.default_device() == "cpu"
    assert "no CUDA device" in backend.gpu_unavailable_reason()


def test_auto_falls_back_when_import_works_but_the_first_allocation_fails(monkeypatch, fresh_probe):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(allocation_error=CUDARuntimeError("no driver")))
    monkeypatch.setenv("MINIGRAPH_DEVICE", "auto")
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
    x = mg.Tensor(rng.normal(size=(3, 2)), requires_grad=True, device="cpu")
    moved = x.to(device)
    assert moved.device == device
    out = mg.relu(moved)
    out.backward(backend.to_device(np.ones((3, 2)), device))
    assert x.device == "cpu" and isinstance(x.grad, np.ndarray)
    np.testing.assert_array_equal(x.grad, x.data > 0)


# --- the one device rule ------------------------------------------------------------
def test_host_data_goes_to_the_default_device(device, rng):
    """The fixture makes the test's device the default, as `auto` does on a GPU machine."""
    x = rng.normal(size=(5, 4)).astype(np.float32)
    assert mg.Tensor(x).device == device and mg.Tensor([1.0, 2.0]).device == device
    layer = mg.nn.Linear(4, 3)  # layers too: the README's script runs unchanged
    out = layer(mg.Tensor(x))
    assert layer.weight.device == device and out.device == device
    assert mg.Tensor(x, device="cpu").device == "cpu"  # an explicit device= always wins


def test_raw_arrays_in_an_op_follow_its_tensor_operands(device, rng):
    """So an explicitly placed layer or tensor accepts NumPy data wherever it lives."""
    layer = mg.nn.Linear(4, 3, device=device, dtype=np.float64)
    assert layer(rng.normal(size=(2, 4))).device == device
    t = mg.Tensor(rng.normal(size=(2, 3)), device=device)
    assert (t + rng.normal(size=(2, 3))).device == device
    assert mg.mse_loss(t, rng.normal(size=(2, 3))).device == device
    assert mg.batch_norm(rng.normal(size=(4, 3)), mg.Tensor(np.ones(3), device=device), None).device == device


def test_cpu_tensors_are_shared_and_device_tensors_copied(device):
    """Tensor(numpy_array) on the CPU shares the array (torch.from_numpy); on a GPU it is a copy."""
    array = np.zeros(3)
    t = mg.Tensor(array)
    array[0] = 1.0
    assert t.numpy()[0] == (1.0 if device == "cpu" else 0.0)


def test_arrays_already_on_the_gpu_are_never_moved_implicitly(gpu, monkeypatch):
    import cupy

    monkeypatch.setenv("MINIGRAPH_DEVICE", "cpu")
    on_gpu = cupy.ones((2, 2))
    assert mg.Tensor(on_gpu).device == "gpu"
    assert mg.relu(on_gpu).device == "gpu"
    assert mg.Tensor(on_gpu, device="cpu").device == "cpu"  # unless asked
    with pytest.raises(TypeError, match="add: operands are on different devices"):
        mg.Tensor(np.ones((2, 2))) + on_gpu
    cpu = mg.Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(TypeError, match="backward: grad is on 'gpu' but the output is on 'cpu'"):
        mg.relu(cpu).backward(on_gpu)


def test_numpy_data_is_refused_inside_device_math(gpu):
    """The stand-in (or real CuPy) refuses what minigraph must never rely on: silent conversion."""
    import cupy

    with pytest.raises(TypeError):
        np.asarray(cupy.ones(2))
    with pytest.raises(TypeError):
        cupy.ones(2) + np.ones(2)


def test_what_cupy_lacks_or_restricts_is_refused(gpu):
    """CuPy 14.2 lacks or restricts these, so minigraph must not call them on the GPU; the stand-in
    refuses each as CuPy does (on a real GPU this test checks the stand-in's model of CuPy)."""
    import cupy

    grad = cupy.zeros((3, 2))
    rows = cupy.asarray([0, 0, 2])
    cupy.add.at(grad, rows, cupy.ones((3, 2)))  # what getitem's backward needs: repeated rows summed
    np.testing.assert_array_equal(grad.get(), [[2, 2], [0, 0], [1, 1]])
    with pytest.raises(NotImplementedError):
        cupy.multiply.at(grad, rows, 2.0)  # .at only for ufuncs with a scatter op
    with pytest.raises(TypeError):
        cupy.subtract.at(grad, rows, 1.0)  # subtract's atomics: int32 and uint32 only
    with pytest.raises(NotImplementedError):
        cupy.maximum.reduce(grad)  # .reduce only for add and multiply
    for call in (lambda: cupy.add(grad, 1.0, where=grad > 0), lambda: grad.sum(initial=1.0),
                 lambda: cupy.sum(grad, where=grad > 0), lambda: np.insert(grad, 0, 1.0),
                 lambda: np.vecdot(grad, grad)):
        with pytest.raises(TypeError):
            call()
    assert not hasattr(cupy, "errstate")
    generator = cupy.random.default_rng(0)
    assert not hasattr(generator, "normal") and not hasattr(generator, "choice")
    assert generator.random((2, 3), dtype=np.float32).dtype == np.float32  # what dropout draws


def test_scalars_from_reductions_act_as_numbers_on_every_device(device, rng):
    """NumPy reductions give scalars, CuPy's give 0-d arrays: both take the tensor's dtype, so the
    same script works on both machines (as PyTorch treats 0-d tensors in type promotion)."""
    stats = mg.backend.to_device(rng.normal(size=100), device)  # float64 data on the device
    x = mg.Tensor(rng.normal(size=(3, 2)).astype(np.float32), requires_grad=True)
    y = (x - stats.mean()) * stats.std() + np.float64(1.0) + np.array(2.0)
    assert y.dtype == np.float32 and y.device == device
    y.sum().backward()
    np.testing.assert_allclose(mg.backend.to_device(x.grad, "cpu"),
                               np.full((3, 2), float(stats.std())), rtol=1e-6)
    with pytest.raises(TypeError, match="different dtypes"):
        x * stats[:1]  # a (1,) array is data, not a scalar: the dtype rule holds


def test_numbers_join_an_explicitly_placed_tensor_whatever_the_default(gpu, monkeypatch):
    monkeypatch.setenv("MINIGRAPH_DEVICE", "gpu")
    on_cpu = mg.Tensor(np.ones(3), device="cpu")
    assert (on_cpu + 1.0).device == "cpu" and (2 * on_cpu).device == "cpu"
    assert (on_cpu * np.float64(3)).device == "cpu"


def test_only_writable_arrays_without_shared_elements_update_in_place(device):
    xp = np if device == "cpu" else pytest.importorskip("cupy")
    base = xp.arange(6.0).reshape(2, 3)
    assert backend.can_update_in_place(base) and backend.can_update_in_place(base[:, ::2])
    assert backend.can_update_in_place(base[:1][:, None])  # a zero stride over a length-1 axis
    assert not backend.can_update_in_place(xp.broadcast_to(xp.arange(3.0), (2, 3)))
    assert backend.can_update_in_place(xp.zeros((2, 0))) and backend.can_update_in_place(xp.zeros((0, 3)))
    if device == "cpu":
        frozen = np.arange(3.0)
        frozen.flags.writeable = False
        assert not backend.can_update_in_place(frozen)
