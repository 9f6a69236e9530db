"""minigraph.nn.utils: gradient clipping against NumPy written out (concatenate, norm, scale) and
against torch.nn.utils."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

import minigraph as mg
from minigraph import nn
from minigraph.backend import to_device
from minigraph.nn.utils import clip_grad_norm_, clip_grad_value_

from conftest import on_standin, run_python

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ((3, 4), (5,), (2, 2), ())  # a 0-d parameter too
NORM_TYPES = (1.0, 2.0, 3.5, math.inf)


def host(array):
    return to_device(array, "cpu")


def with_grads(rng, on, shapes=SHAPES, dtype=np.float64, scale=1.0):
    """Parameters on the test's device, each with a random .grad, and host copies of the grads."""
    grads = [np.asarray(scale * rng.normal(size=shape), dtype=dtype) for shape in shapes]
    params = [mg.Tensor(on(rng.normal(size=shape).astype(dtype)), requires_grad=True) for shape in shapes]
    for param, grad in zip(params, grads):
        param.grad = on(grad.copy())
    return params, grads


def clipped_by_hand(grads, max_norm, norm_type):
    """PyTorch's definition, with NumPy: the norm of all gradients concatenated, then one scale."""
    total = np.linalg.norm(np.concatenate([g.reshape(-1) for g in grads]), ord=norm_type)
    coefficient = min(max_norm / (total + 1e-6), 1.0)
    return total, [g * coefficient for g in grads]


# --- clip_grad_norm_ ---------------------------------------------------------------------------


@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_grad_norm_scales_every_gradient_by_one_factor_down_to_max_norm(device, on, rng, norm_type, dtype):
    params, grads = with_grads(rng, on, dtype=dtype)
    total, expected = clipped_by_hand([g.astype(np.float64) for g in grads], 0.5, norm_type)
    assert total > 0.5  # the case under test: the norm is over the limit
    returned = clip_grad_norm_(params, max_norm=0.5, norm_type=norm_type)
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    assert returned.shape == () and returned.dtype == dtype and returned.device == device
    assert not returned.requires_grad
    np.testing.assert_allclose(returned.numpy(), total, rtol=tolerance)
    for param, want in zip(params, expected):
        assert param.grad.dtype == dtype
        np.testing.assert_allclose(host(param.grad), want, rtol=tolerance, atol=tolerance * 1e-3)
    clipped = np.concatenate([host(p.grad).reshape(-1) for p in params]).astype(np.float64)
    # max_norm less PyTorch's 1e-6 guard: the norm ends at 0.5 · total / (total + 1e-6)
    np.testing.assert_allclose(np.linalg.norm(clipped, ord=norm_type), 0.5, rtol=1e-5)


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_clip_grad_norm_leaves_gradients_within_max_norm_exactly_as_they_were(device, on, rng, norm_type):
    params, grads = with_grads(rng, on)
    total, _ = clipped_by_hand(grads, 1.0, norm_type)
    returned = clip_grad_norm_(params, max_norm=2 * total, norm_type=norm_type)
    np.testing.assert_allclose(returned.numpy(), total, rtol=1e-12)
    for param, grad in zip(params, grads):
        np.testing.assert_array_equal(host(param.grad), grad)  # multiplied by exactly 1


def test_clip_grad_norm_skips_parameters_without_a_gradient(device, on, rng):
    params, grads = with_grads(rng, on)
    params[1].grad = None
    frozen = mg.Tensor(on(rng.normal(size=3)))  # requires_grad=False: never has a .grad
    kept = [g for i, g in enumerate(grads) if i != 1]
    total, expected = clipped_by_hand(kept, 0.25, 2.0)
    returned = clip_grad_norm_([frozen, *params], 0.25)
    np.testing.assert_allclose(returned.numpy(), total, rtol=1e-12)
    assert params[1].grad is None and frozen.grad is None
    for param, want in zip([p for i, p in enumerate(params) if i != 1], expected):
        np.testing.assert_allclose(host(param.grad), want, rtol=1e-12)


def test_clip_grad_norm_takes_one_tensor_or_a_generator_read_once(device, on, rng):
    (param,), (grad,) = with_grads(rng, on, shapes=((4, 3),))
    total, (want,) = clipped_by_hand([grad], 0.1, 2.0)
    np.testing.assert_allclose(clip_grad_norm_(param, 0.1).numpy(), total, rtol=1e-12)
    np.testing.assert_allclose(host(param.grad), want, rtol=1e-12)

    model = nn.Linear(3, 2, dtype=np.float64, rng=0)
    model(mg.Tensor(rng.normal(size=(5, 3)))).sum().backward()
    grads = [host(p.grad) for p in model.parameters()]
    total, expected = clipped_by_hand(grads, 0.1, 2.0)
    np.testing.assert_allclose(clip_grad_norm_(model.parameters(), 0.1).numpy(), total, rtol=1e-12)
    for param, want in zip(model.parameters(), expected):
        np.testing.assert_allclose(host(param.grad), want, rtol=1e-12)


def test_clip_grad_norm_of_no_gradients_is_zero_of_the_parameters_dtype_and_device(device, on):
    params = [mg.Tensor(on(np.ones(3, dtype=np.float32)), requires_grad=True)]
    returned = clip_grad_norm_(params, 1.0)
    assert returned.numpy() == 0 and returned.dtype == np.float32 and returned.device == device
    assert params[0].grad is None


def test_an_empty_iterator_of_parameters_warns_that_nothing_was_clipped():
    params = iter([])
    with pytest.warns(UserWarning, match=r"clip_grad_norm_: parameters is an empty iterator"):
        total = clip_grad_norm_(params, 1.0)
    assert total.numpy() == 0 and total.dtype == np.float64  # as Tensor(0.0)
    with pytest.warns(UserWarning, match=r"clip_grad_value_: parameters is an empty iterator"):
        clip_grad_value_((p for p in []), 1.0)


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_an_empty_gradient_adds_nothing_to_the_norm(device, on, rng, norm_type):
    """Even the max norm, whose reduction has no identity (PyTorch raises there)."""
    params, grads = with_grads(rng, on, shapes=((0, 3), (4,), (0,)))
    total, expected = clipped_by_hand(grads, 0.1, norm_type)
    np.testing.assert_allclose(clip_grad_norm_(params, 0.1, norm_type).numpy(), total, rtol=1e-12)
    np.testing.assert_allclose(host(params[1].grad), expected[1], rtol=1e-12)
    params, _ = with_grads(rng, on, shapes=((0,),))
    assert clip_grad_norm_(params, 0.1, norm_type).numpy() == 0


def test_max_norm_inf_measures_the_norm_and_max_norm_zero_zeroes_the_gradients(device, on, rng):
    params, grads = with_grads(rng, on)
    total, _ = clipped_by_hand(grads, 1.0, 2.0)
    np.testing.assert_allclose(clip_grad_norm_(params, math.inf).numpy(), total, rtol=1e-12)
    for param, grad in zip(params, grads):
        np.testing.assert_array_equal(host(param.grad), grad)
    clip_grad_norm_(params, 0.0)
    for param in params:
        np.testing.assert_array_equal(host(param.grad), 0.0)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_a_non_finite_norm_scales_as_pytorch_does_unless_error_if_nonfinite(device, on, rng, bad):
    params, grads = with_grads(rng, on)
    grads[0][0, 1] = bad
    params[0].grad = on(grads[0].copy())
    with pytest.raises(RuntimeError, match=r"clip_grad_norm_: the total norm of order 2.0 of the "
                                           r"gradients is (inf|nan), not finite"):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    for param, grad in zip(params, grads):  # raised before anything changed
        np.testing.assert_array_equal(host(param.grad), grad)
    returned = clip_grad_norm_(params, 1.0)
    assert np.isnan(returned.numpy()) if np.isnan(bad) else returned.numpy() == np.inf
    with np.errstate(invalid="ignore"):  # inf · 0
        _, expected = clipped_by_hand(grads, 1.0, 2.0)  # NaN, or 0 times each finite element
    for param, want in zip(params, expected):
        np.testing.assert_array_equal(host(param.grad), want)


def test_error_if_nonfinite_lets_a_finite_norm_through(device, on, rng):
    params, grads = with_grads(rng, on)
    total, expected = clipped_by_hand(grads, 0.5, 2.0)
    np.testing.assert_allclose(clip_grad_norm_(params, 0.5, error_if_nonfinite=True).numpy(), total,
                               rtol=1e-12)
    np.testing.assert_allclose(host(params[0].grad), expected[0], rtol=1e-12)


@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("factor", [0.3, 3.0])
def test_clip_grad_norm_matches_torch_in_float64(rng, norm_type, factor):
    torch = pytest.importorskip("torch")
    params, grads = with_grads(rng, np.asarray, shapes=((3, 4), (5,), (2, 2), (6,)))
    params[2].grad = None
    ours_total, _ = clipped_by_hand([g for i, g in enumerate(grads) if i != 2], 1.0, norm_type)
    theirs = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in params]
    for index, (param, grad) in enumerate(zip(theirs, grads)):
        param.grad = None if index == 2 else torch.from_numpy(grad.copy())
    max_norm = factor * ours_total
    their_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    returned = clip_grad_norm_(params, max_norm, norm_type)
    np.testing.assert_allclose(returned.numpy(), their_total.numpy(), rtol=1e-13)
    for ours, param in zip(params, theirs):
        assert (ours.grad is None) == (param.grad is None)
        if param.grad is not None:
            np.testing.assert_allclose(ours.grad, param.grad.numpy(), rtol=1e-13)


# --- clip_grad_value_ --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_grad_value_clamps_each_element_in_place(device, on, rng, dtype):
    params, grads = with_grads(rng, on, dtype=dtype)
    params[2].grad = None
    arrays = [p.grad for p in params]
    assert clip_grad_value_(params, 0.7) is None
    for index, (param, grad) in enumerate(zip(params, grads)):
        if index == 2:
            assert param.grad is None
            continue
        assert param.grad is arrays[index] and param.grad.dtype == dtype
        np.testing.assert_array_equal(host(param.grad), np.clip(grad, dtype(-0.7), dtype(0.7)))


def test_clip_grad_value_inf_changes_nothing_and_nan_stays_nan(device, on, rng):
    params, grads = with_grads(rng, on, scale=1e30)
    grads[0][1, 1] = np.nan
    params[0].grad = on(grads[0].copy())
    clip_grad_value_(params, math.inf)
    for param, grad in zip(params, grads):
        np.testing.assert_array_equal(host(param.grad), grad)
    clip_grad_value_(params[0], 0.0)
    assert np.isnan(host(params[0].grad)[1, 1])
    assert np.count_nonzero(host(params[0].grad)) == 1  # only the NaN


def test_clip_grad_value_matches_torch(rng):
    torch = pytest.importorskip("torch")
    params, grads = with_grads(rng, np.asarray)
    theirs = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in params]
    for param, grad in zip(theirs, grads):
        param.grad = torch.from_numpy(grad.copy())
    torch.nn.utils.clip_grad_value_(theirs, 0.4)
    clip_grad_value_(params, 0.4)
    for ours, param in zip(params, theirs):
        np.testing.assert_array_equal(ours.grad, param.grad.numpy())


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda p: clip_grad_norm_(p, -1.0), r"clip_grad_norm_: got max_norm=-1.0; expected a number in "
                                         r"\[0.0, inf\], e.g. 1.0"),
    (lambda p: clip_grad_norm_(p, math.nan), r"got max_norm=nan; expected a number in \[0.0, inf\]"),
    (lambda p: clip_grad_norm_(p, "1"), r"got max_norm='1'"),
    (lambda p: clip_grad_norm_(p, True), r"got max_norm=True"),
    (lambda p: clip_grad_norm_(p, 1.0, 0), r"clip_grad_norm_: got norm_type=0; expected a number in "
                                           r"\(0.0, inf\], e.g. 2.0 or math.inf"),
    (lambda p: clip_grad_norm_(p, 1.0, -1.0), r"got norm_type=-1.0"),
    (lambda p: clip_grad_norm_(p, 1.0, -math.inf), r"got norm_type=-inf"),
    (lambda p: clip_grad_norm_(p, 1.0, math.nan), r"got norm_type=nan"),
    (lambda p: clip_grad_value_(p, -0.5), r"clip_grad_value_: got clip_value=-0.5; expected a number "
                                          r"in \[0.0, inf\]"),
    (lambda p: clip_grad_value_(p, math.nan), r"got clip_value=nan"),
])
def test_bad_numbers_are_value_errors_that_name_the_function_and_change_nothing(rng, call, message):
    params, grads = with_grads(rng, np.asarray)
    with pytest.raises(ValueError, match=message):
        call(params)
    for param, grad in zip(params, grads):
        np.testing.assert_array_equal(param.grad, grad)


def test_numbers_may_be_0d_arrays_from_a_reduction(device, on, rng):
    params, grads = with_grads(rng, on)
    total, expected = clipped_by_hand(grads, 0.5, 3.0)
    returned = clip_grad_norm_(params, on(np.array(0.5)), norm_type=on(np.array(3.0)))
    np.testing.assert_allclose(returned.numpy(), total, rtol=1e-12)
    np.testing.assert_allclose(host(params[0].grad), expected[0], rtol=1e-12)
    clip_grad_value_(params, on(np.array(0.01)))
    assert np.abs(host(params[0].grad)).max() <= 0.01


def test_error_if_nonfinite_must_be_a_bool(rng):
    params, _ = with_grads(rng, np.asarray)
    with pytest.raises(TypeError, match=r"clip_grad_norm_: got error_if_nonfinite='no'; expected True or False"):
        clip_grad_norm_(params, 1.0, error_if_nonfinite="no")


@pytest.mark.parametrize("function", [lambda p: clip_grad_norm_(p, 1.0), lambda p: clip_grad_value_(p, 1.0)])
def test_parameters_that_are_not_tensors_are_type_errors_naming_the_function(function, rng):
    params, _ = with_grads(rng, np.asarray)
    name = r"clip_grad_(norm|value)_"
    with pytest.raises(TypeError, match=name + r": got parameters=3, a int; expected a Tensor or an iterable"):
        function(3)
    with pytest.raises(TypeError, match=name + r": parameter 1 is a ndarray; expected a Tensor"):
        function([params[0], np.ones(3)])
    with pytest.raises(TypeError, match=r"parameter 0 is a tuple; expected a Tensor \(pass "
                                        r"model.parameters\(\), not named_parameters\(\)\)"):
        function(nn.Linear(2, 2).named_parameters())


@pytest.mark.parametrize("function", [lambda p: clip_grad_norm_(p, 1.0), lambda p: clip_grad_value_(p, 1.0)])
def test_a_type_error_raised_inside_a_generator_of_parameters_is_not_blamed_on_the_argument(function, rng):
    params, _ = with_grads(rng, np.asarray)

    def parameters():
        yield params[0]
        yield params[1] * "two"  # the caller's own bug, raised while clipping reads the generator

    with pytest.raises(TypeError, match=r"mul: b must be a Tensor"):
        function(parameters())


@pytest.mark.parametrize("function", [lambda p: clip_grad_norm_(p, 0.1), lambda p: clip_grad_value_(p, 0.1)])
def test_gradients_of_two_dtypes_are_a_type_error_and_nothing_changes(function, rng):
    params, grads = with_grads(rng, np.asarray)
    single, single_grads = with_grads(rng, np.asarray, shapes=((3,),), dtype=np.float32)
    with pytest.raises(TypeError, match=r"clip_grad_(norm|value)_: the gradient of parameter 4 is float32 on "
                                        r"'cpu', that of parameter 0 float64 on 'cpu'; expected one dtype"):
        function(params + single)
    for param, grad in zip(params + single, grads + single_grads):
        np.testing.assert_array_equal(param.grad, grad)


@pytest.mark.parametrize("function", [lambda p: clip_grad_norm_(p, 0.1), lambda p: clip_grad_value_(p, 0.1)])
def test_gradients_on_two_devices_are_a_type_error(function, gpu, rng):
    on_cpu, _ = with_grads(rng, np.asarray, shapes=((2,),))
    on_gpu, _ = with_grads(rng, lambda a: to_device(a, "gpu"), shapes=((2,),))
    with pytest.raises(TypeError, match=r"the gradient of parameter 1 is float64 on 'gpu', that of "
                                        r"parameter 0 float64 on 'cpu'; expected one dtype on one device"):
        function(on_cpu + on_gpu)


@pytest.mark.parametrize("function", [lambda p: clip_grad_norm_(p, 0.1), lambda p: clip_grad_value_(p, 0.1)])
def test_one_gradient_array_listed_twice_is_refused_rather_than_scaled_twice(function, rng):
    """PyTorch counts it twice in the norm and scales it twice (by the coefficient squared)."""
    params, grads = with_grads(rng, np.asarray, shapes=((3, 4), (5,), (3, 4)))
    with pytest.raises(ValueError, match=r"parameters 0 and 2 \(shape \(3, 4\)\) have one .grad array"):
        function([params[0], params[1], params[0]])
    params[2].grad = params[0].grad
    with pytest.raises(ValueError, match=r"parameters 0 and 2 \(shape \(3, 4\)\) have one .grad array"):
        function(params)
    np.testing.assert_array_equal(params[0].grad, grads[0])
    np.testing.assert_array_equal(params[1].grad, grads[1])


@pytest.mark.parametrize("function", [lambda p: clip_grad_norm_(p, 0.1), lambda p: clip_grad_value_(p, 0.1)])
def test_a_read_only_gradient_is_refused_before_anything_changes(function, rng):
    params, grads = with_grads(rng, np.asarray)
    params[1].grad = np.broadcast_to(np.float64(2.0), (5,))
    with pytest.raises(ValueError, match=r"the .grad of parameter 1 \(shape \(5,\)\) is read-only or a "
                                         r"broadcast view"):
        function(params)
    np.testing.assert_array_equal(params[0].grad, grads[0])


# --- in place, and nothing else changes ----------------------------------------------------------


def test_clipping_changes_neither_the_callers_gradient_nor_another_leafs(device, on, rng):
    """a + b hands the upstream gradient through to both leaves; backward copies it for each
    (engine._fresh), so clipping one .grad in place changes neither the other nor the caller's array."""
    a, b = (mg.Tensor(on(rng.normal(size=(3, 4))), requires_grad=True) for _ in range(2))
    upstream = on(rng.normal(size=(3, 4)))
    kept = host(upstream).copy()  # host() is no copy on the CPU
    (a + b).backward(upstream)
    clip_grad_norm_([a], 0.1)
    total, (want,) = clipped_by_hand([kept], 0.1, 2.0)
    np.testing.assert_allclose(host(a.grad), want, rtol=1e-12)
    np.testing.assert_array_equal(host(b.grad), kept)
    np.testing.assert_array_equal(host(upstream), kept)
    clip_grad_value_([b], 0.01)
    np.testing.assert_allclose(host(a.grad), want, rtol=1e-12)
    np.testing.assert_array_equal(host(upstream), kept)


def test_clipping_a_leafs_gradient_leaves_the_array_given_to_its_backward_alone(device, on, rng):
    leaf = mg.Tensor(on(rng.normal(size=(4,))), requires_grad=True)
    upstream = on(rng.normal(size=(4,)))
    kept = host(upstream).copy()  # host() is no copy on the CPU
    leaf.backward(upstream)
    clip_grad_norm_(leaf, 0.1)
    np.testing.assert_array_equal(host(upstream), kept)


def test_clipping_leaves_the_gradient_a_leaf_hook_kept_alone(device, on, rng):
    leaf = mg.Tensor(on(rng.normal(size=(4,))), requires_grad=True)
    seen = []
    leaf.register_hook(seen.append)
    (leaf * 3.0).sum().backward()
    clip_grad_norm_(leaf, 0.1)
    np.testing.assert_array_equal(host(seen[0]), np.full(4, 3.0))


def test_a_numpy_scalar_assigned_as_a_0d_gradient_is_clipped_in_place():
    param = mg.Tensor(np.array(1.0), requires_grad=True)
    param.grad = np.arange(4.0).sum()  # NumPy's reduction: a numpy.float64, where CuPy gives a 0-d array
    assert clip_grad_norm_(param, 1.0).item() == 6.0
    np.testing.assert_allclose(param.grad, 6.0 / (6.0 + 1e-6), rtol=1e-15)
    clip_grad_value_(param, 0.5)
    assert param.grad == 0.5


def test_gradients_that_are_views_of_one_buffer_are_each_scaled_once(device, on, rng):
    """As DistributedDataParallel leaves them: disjoint views into one flat array."""
    params, grads = with_grads(rng, on, shapes=((2, 3), (4,)))
    flat = on(np.concatenate([g.reshape(-1) for g in grads]))
    params[0].grad, params[1].grad = flat[:6].reshape(2, 3), flat[6:]
    total, expected = clipped_by_hand(grads, 0.2, 2.0)
    clip_grad_norm_(params, 0.2)
    np.testing.assert_allclose(host(flat), np.concatenate([e.reshape(-1) for e in expected]), rtol=1e-12)


# --- the device is never waited for --------------------------------------------------------------


# A CUDA kernel that keeps its stream busy for a given time (the GPU's own clock, in nanoseconds):
# whatever the host queues behind it waits, so a host read of a device value blocks until it ends.
_SPIN_SOURCE = r"""
extern "C" __global__ void spin_for(unsigned long long nanoseconds) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < nanoseconds);
}
"""


# Every way of reading a device array's value on the host: the stand-in's detector wraps them all.
_HOST_READS = ("__bool__", "__float__", "__int__", "__index__", "__complex__", "__format__", "__repr__",
               "__str__", "item", "get", "tolist")


@contextlib.contextmanager
def host_waits_seen(gpu: str, monkeypatch: pytest.MonkeyPatch, seconds: float) -> Iterator[Callable[[], bool]]:
    """Yields ``waited()``: whether the host has waited for a device value since the block began.

    On a real GPU, the current stream is kept busy by a one-thread kernel for ``seconds``: work
    queued behind it cannot finish, so the stream is done before then only if the host waited for
    it (a read of any device value does). The block must end its check within ``seconds``. On
    the stand-in, which runs no CUDA, every way of reading a device array on the host is wrapped
    to record that it was used (methods the class reaches through ``__getattr__`` included).
    """
    import cupy

    if on_standin(gpu):
        reads = []

        def recording(name: str) -> Callable:
            own = cupy.ndarray.__dict__.get(name)

            def read(self, *args, **kwargs):
                reads.append(name)
                method = own.__get__(self) if own is not None else cupy.ndarray.__getattr__(self, name)
                return method(*args, **kwargs)
            return read

        with monkeypatch.context() as patch:  # undoes these alone, leaving the fixtures' settings
            for name in _HOST_READS:
                patch.setattr(cupy.ndarray, name, recording(name), raising=False)
            yield lambda: bool(reads)
        return
    stream = cupy.cuda.get_current_stream()
    stream.synchronize()
    spin = cupy.RawKernel(_SPIN_SOURCE, "spin_for")
    spin((1,), (1,), (np.uint64(seconds * 1e9),))
    try:
        yield lambda: stream.done
    finally:
        stream.synchronize()


def test_clipping_on_the_gpu_never_waits_for_the_device(gpu, rng, monkeypatch):
    """Clipping queues its work and returns, as PyTorch's clip_grad_norm_ does: no host read of
    the norm. Only error_if_nonfinite=True must wait, and the detector is shown to see that."""
    params, _ = with_grads(rng, lambda a: to_device(a, "gpu"), scale=10.0)

    def clip_all(max_norm: float, clip_value: float) -> None:
        for norm_type in NORM_TYPES:
            total = clip_grad_norm_(params, max_norm, norm_type)
            assert total.device == "gpu"
        clip_grad_value_(params, clip_value)

    clip_all(1e6, 1e6)  # compiles CuPy's kernels now: a compile is not a wait, but it is slow
    started = time.perf_counter()
    clip_all(1e6, 1e6)
    # The device is kept busy far longer than the host needs to queue the calls (at least 2 s).
    busy_seconds = max(2.0, 50 * (time.perf_counter() - started))
    before = [host(p.grad) for p in params]
    with host_waits_seen(gpu, monkeypatch, busy_seconds) as waited:
        started = time.perf_counter()
        clip_all(1.0, 0.1)
        waited_while_clipping, elapsed = waited(), time.perf_counter() - started
        assert elapsed < busy_seconds, (f"inconclusive: clipping took {elapsed:.2f} s of host time, longer "
                                        f"than the {busy_seconds:.1f} s the device was kept busy")
        assert not waited_while_clipping, "clipping waited for the device"
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
        assert waited()  # the one wait asked for is seen: the check above can fail
    assert all(np.abs(host(p.grad)).max() <= 0.1 for p in params)
    assert any(not np.array_equal(host(p.grad), b) for p, b in zip(params, before))


# --- where it lives ----------------------------------------------------------------------------


def test_nn_utils_is_importable_under_pytorchs_names():
    assert mg.nn.utils.clip_grad_norm_ is clip_grad_norm_
    code = ("import minigraph.nn.utils as a\n"
            "from minigraph.nn.utils import clip_grad_norm_, clip_grad_value_\n"
            "from minigraph.nn import utils\n"
            "assert a is utils and utils.clip_grad_norm_ is clip_grad_norm_\n"
            "print('ok')")
    assert run_python(code, ROOT).strip() == "ok"
