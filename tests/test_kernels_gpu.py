"""Batch norm's CUDA kernels (minigraph/kernels/gpu.py) against the formula path they must equal.

These run on a real GPU only: the CuPy stand-in runs no CUDA, so there every CuPy array gets
the formula (which the device variants of test_batch_norm.py and test_gradients.py check).
On a real GPU those variants also run the kernels, through conftest's ``fused_path``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import minigraph as mg
from minigraph import backend, kernels
from conftest import require_gpu
from test_kernels import (assert_float32_fused_is_close, assert_float64_paths_agree, problem,
                          relative_error, term_scale)

# (2, 1): the smallest batch; (7, 3), (33, 40): one chunk, a partial tile; (300, 70): 9 chunks,
# 3 tiles, the last partial; (1000, 5) and (5000, 2): many chunks of few columns; (4096, 513):
# one column past a tile; (70000, 64): chunks of ~1100 rows.
SHAPES = [(2, 1), (7, 3), (33, 40), (300, 70), (1000, 5), (5000, 2), (4096, 513), (70000, 64)]


@pytest.fixture
def cupy(monkeypatch):
    """Real CuPy, with the GPU as the default device and the kernels on."""
    require_gpu()
    import cupy

    if getattr(cupy, "IS_STANDIN", False):
        pytest.skip("the CuPy stand-in runs no CUDA: batch norm's GPU kernels are checked on a real GPU")
    monkeypatch.setenv("MINIGRAPH_DEVICE", "gpu")
    monkeypatch.setenv("MINIGRAPH_FUSED", "1")
    return cupy


def host(a):
    return None if a is None else backend.to_device(a, "cpu")


def run(monkeypatch, path, x, gamma, beta, grad_y, running=True, training=True, **options):
    """Forward and backward on the GPU on ``path`` ('fused' or 'formula'): y, dX, dγ, dβ and the running
    statistics, brought back to the host."""
    monkeypatch.setenv("MINIGRAPH_FUSED", "1" if path == "fused" else "0")
    p = x.shape[1]
    stats = tuple(backend.to_device(a, "gpu") for a in (np.zeros(p, x.dtype), np.ones(p, x.dtype))) \
        if running else (None, None)
    tx, tg, tb = (mg.Tensor(backend.to_device(a, "gpu"), requires_grad=True) for a in (x, gamma, beta))
    out = mg.batch_norm(tx, tg, tb, *stats, training=training, **options)
    if training:  # the path asked for is the one that ran
        assert (out.grad_fn.kernel is not None) == (path == "fused")
    out.backward(backend.to_device(grad_y, "gpu"))
    results = {"y": host(out.data), "dx": host(tx.grad), "dgamma": host(tg.grad), "dbeta": host(tb.grad)}
    if running:
        results.update(running_mean=host(stats[0]), running_var=host(stats[1]))
    return results


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ddof,eps", [(0, 1e-5), (1, 0.0)])
def test_float64_kernels_equal_the_formula_to_1e_12(cupy, monkeypatch, rng, shape, ddof, eps):
    assert_float64_paths_agree(run, monkeypatch, problem(rng, shape), ddof=ddof, eps=eps)


@pytest.mark.parametrize("shape", [(64, 8), (4096, 64), (4096, 512), (70000, 64)])
def test_float32_kernels_are_within_1e_5_of_float64_and_no_less_accurate_than_the_formula(cupy, monkeypatch, rng,
                                                                                           shape):
    arrays = problem(rng, shape)
    # Sums in float64 and one rounding per element: never worse than float32 throughout, bar a last ulp.
    assert_float32_fused_is_close(run, monkeypatch, arrays, scale=lambda name: term_scale(name, *arrays),
                                  slack=1.5, floor=1e-7)


def test_the_float32_variance_survives_a_mean_of_1e4_standard_deviations(cupy, monkeypatch, rng):
    x = (100.0 + 0.01 * rng.normal(size=(512, 3))).astype(np.float32)
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    grad_y = rng.normal(size=x.shape).astype(np.float32)
    fused = run(monkeypatch, "fused", x, ones, zeros, grad_y, eps=0.0)
    reference = run(monkeypatch, "formula", *(a.astype(np.float64) for a in (x, ones, zeros, grad_y)), eps=0.0)
    np.testing.assert_allclose(fused["y"].std(axis=0), 1.0, rtol=1e-5)
    for name in ("y", "dx", "running_var"):
        assert relative_error(fused[name], reference[name]) <= 1e-5, name


@pytest.mark.parametrize("ddof,eps", [(0, 1e-5), (1, 0.0)])
def test_gradcheck_passes_through_the_kernels(cupy, rng, ddof, eps):
    x = mg.Tensor(cupy.asarray(rng.normal(size=(6, 3)) * 3 + 2), requires_grad=True)
    gamma, beta = (mg.Tensor(cupy.asarray(rng.normal(size=3)), requires_grad=True) for _ in range(2))
    running = cupy.zeros(3), cupy.ones(3)
    assert mg.batch_norm(x, gamma, beta).grad_fn.kernel is not None
    assert mg.gradcheck(lambda x, g, b: mg.batch_norm(x, g, b, *running, eps=eps, ddof=ddof), [x, gamma, beta])


def test_every_output_element_is_written(cupy, monkeypatch, rng):
    """The memory pool is filled with NaN first, so an element a kernel skipped would show as NaN."""
    arrays = problem(rng, (3001, 97))
    poison = cupy.full(64 << 20, np.nan)  # 512 MiB of NaN, freed back to the pool for the kernels' buffers
    del poison
    fused = run(monkeypatch, "fused", *arrays)
    for name, value in fused.items():
        assert np.isfinite(value).all(), name


def test_results_are_bitwise_the_same_on_every_run(cupy, monkeypatch, rng):
    arrays = problem(rng, (20000, 96), np.float32)
    first = run(monkeypatch, "fused", *arrays)
    for _ in range(3):
        again = run(monkeypatch, "fused", *arrays)
        for name in first:
            np.testing.assert_array_equal(again[name], first[name], err_msg=name)


def test_fortran_ordered_and_strided_input_give_the_c_ordered_results(cupy, monkeypatch, rng):
    arrays = problem(rng, (300, 7))
    want = run(monkeypatch, "fused", *arrays)
    monkeypatch.setenv("MINIGRAPH_FUSED", "1")
    for make in (cupy.asfortranarray, lambda a: cupy.repeat(a, 2, axis=-1)[..., ::2]):
        tx, tg, tb = (mg.Tensor(make(cupy.asarray(a)), requires_grad=True) for a in arrays[:3])
        out = mg.batch_norm(tx, tg, tb)
        out.backward(make(cupy.asarray(arrays[3])))
        for name, got in (("y", out.data), ("dx", tx.grad), ("dgamma", tg.grad), ("dbeta", tb.grad)):
            np.testing.assert_array_equal(host(got), want[name], err_msg=name)


def test_only_the_gradients_asked_for_are_returned_and_the_given_gradient_is_never_written(cupy, monkeypatch, rng):
    x, gamma, beta, grad_y = problem(rng, (50, 4))
    want = run(monkeypatch, "formula", x, gamma, beta, grad_y)
    monkeypatch.setenv("MINIGRAPH_FUSED", "1")
    tx, tg, tb = mg.Tensor(cupy.asarray(x), requires_grad=True), mg.Tensor(cupy.asarray(gamma)), \
        mg.Tensor(cupy.asarray(beta), requires_grad=True)
    caller_grad = cupy.asarray(grad_y)
    mg.batch_norm(tx, tg, tb).backward(caller_grad)
    assert tg.grad is None
    assert relative_error(host(tx.grad), want["dx"]) <= 1e-12 and relative_error(host(tb.grad), want["dbeta"]) <= 1e-12
    np.testing.assert_array_equal(host(caller_grad), grad_y)
    tx, tg = mg.Tensor(cupy.asarray(x)), mg.Tensor(cupy.asarray(gamma), requires_grad=True)
    mg.batch_norm(tx, tg, None).backward(caller_grad)
    assert tx.grad is None and relative_error(host(tg.grad), want["dgamma"]) <= 1e-12


@pytest.mark.parametrize("needs_gamma", [False, True])
def test_eval_mode_kernel_equals_the_formula(cupy, monkeypatch, rng, needs_gamma):
    x, gamma, beta, grad_y = problem(rng, (500, 33))
    mean, var = rng.normal(size=33), rng.uniform(0.5, 2.0, size=33)
    results = {}
    for path in ("fused", "formula"):
        monkeypatch.setenv("MINIGRAPH_FUSED", "1" if path == "fused" else "0")
        tx = mg.Tensor(cupy.asarray(x), requires_grad=True)
        tg = mg.Tensor(cupy.asarray(gamma), requires_grad=needs_gamma)
        out = mg.batch_norm(tx, tg, mg.Tensor(cupy.asarray(beta)), cupy.asarray(mean), cupy.asarray(var),
                            training=False, eps=1e-3)
        out.backward(cupy.asarray(grad_y))
        results[path] = host(out.data), host(tx.grad)
    for got, want in zip(results["fused"], results["formula"]):
        assert relative_error(got, want) <= 1e-12


def test_sequences_through_the_kernels_equal_the_formula(cupy, monkeypatch, rng):
    x, grad_y = rng.normal(size=(6, 5, 40)) * 2 + 1, rng.normal(size=(6, 5, 40))
    gamma, beta = rng.uniform(0.5, 2.0, size=5), rng.normal(size=5)
    results = {}
    for path in ("fused", "formula"):
        monkeypatch.setenv("MINIGRAPH_FUSED", "1" if path == "fused" else "0")
        tx, tg, tb = (mg.Tensor(cupy.asarray(a), requires_grad=True) for a in (x, gamma, beta))
        out = mg.batch_norm(tx, tg, tb)
        out.backward(cupy.asarray(grad_y))
        results[path] = [host(a) for a in (out.data, tx.grad, tg.grad, tb.grad)]
    for got, want in zip(results["fused"], results["formula"]):
        assert relative_error(got, want) <= 1e-12


def test_the_gpu_module_serves_cupy_arrays_unless_minigraph_fused_is_0(cupy, monkeypatch):
    from minigraph.kernels import gpu

    x, ones, zeros = cupy.ones((4, 2)), cupy.ones(2), cupy.zeros(2)
    assert kernels.batch_norm(x, ones, zeros) is gpu
    assert kernels.batch_norm(x.astype(cupy.float32), ones.astype(cupy.float32), zeros.astype(cupy.float32)) is gpu
    assert kernels.batch_norm(x.astype(cupy.float16), ones.astype(cupy.float16), zeros.astype(cupy.float16)) is None
    assert kernels.batch_norm(x, ones.astype(cupy.float32), zeros) is None  # mixed dtypes
    assert kernels.batch_norm(cupy.ones((4, 0)), cupy.ones(0), cupy.zeros(0)) is None  # nothing to launch
    assert kernels.layer_norm(x, ones, zeros) is None  # no GPU layer-norm kernels
    monkeypatch.setenv("MINIGRAPH_FUSED", "0")
    assert kernels.batch_norm(x, ones, zeros) is None


def test_minigraph_fused_0_runs_the_formula_and_not_the_kernels(cupy, monkeypatch, rng):
    """Observed, not trusted: with the kernels rigged to fail, only the formula can succeed."""
    from minigraph.kernels import gpu

    def broken(*args, **kwargs):
        raise AssertionError("a fused kernel ran")

    arrays = problem(rng, (9, 4))
    want = run(monkeypatch, "formula", *arrays)
    monkeypatch.setenv("MINIGRAPH_FUSED", "1")
    assert kernels.batch_norm(cupy.ones((2, 1)), cupy.ones(1), cupy.zeros(1)) is gpu  # compiled before rigging
    for name in ("batch_norm_forward", "batch_norm_backward", "batch_norm_eval_forward"):
        monkeypatch.setattr(gpu, name, broken)
    got = run(monkeypatch, "formula", *arrays)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    monkeypatch.setenv("MINIGRAPH_FUSED", "1")
    with pytest.raises(AssertionError, match="a fused kernel ran"):
        mg.batch_norm(mg.Tensor(cupy.ones((3, 2))), None, None)


def test_a_failed_compile_falls_back_to_the_formula_with_exactly_one_warning(cupy, monkeypatch, rng):
    from minigraph.kernels import gpu

    def fails(op, dtype):
        raise RuntimeError("NVRTC_ERROR_COMPILATION (rigged)")

    monkeypatch.setattr(kernels, "_gpu", kernels._GpuKernels())
    monkeypatch.setattr(gpu, "compile_for", fails)
    arrays = problem(rng, (20, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = run(monkeypatch, "formula", *arrays)  # rigged: the kernels cannot compile, the formula runs
        monkeypatch.setenv("MINIGRAPH_FUSED", "1")
        for _ in range(3):
            out = mg.batch_norm(mg.Tensor(cupy.asarray(arrays[0]), requires_grad=True), None, None)
            assert out.grad_fn.kernel is None
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "GPU kernels are off" in messages[0] and "rigged" in messages[0], messages
    assert np.isfinite(got["y"]).all()


def test_running_statistics_that_are_strided_views_are_updated_too(cupy, monkeypatch, rng):
    """The merge kernel updates contiguous statistics itself and leaves strided ones to the op."""
    x, gamma, beta, grad_y = problem(rng, (64, 5))
    results = {}
    for path in ("fused", "formula"):
        monkeypatch.setenv("MINIGRAPH_FUSED", "1" if path == "fused" else "0")
        storage = cupy.zeros((2, 10))
        mean, var = storage[0, ::2], storage[1, ::2]  # (5,) views with a stride of 2 elements
        var += 1.0
        mg.batch_norm(mg.Tensor(cupy.asarray(x)), mg.Tensor(cupy.asarray(gamma)), mg.Tensor(cupy.asarray(beta)),
                      mean, var, momentum=0.3)
        results[path] = host(storage)
    assert relative_error(results["fused"], results["formula"]) <= 1e-12
    assert (results["fused"][:, 1::2] == 0).all()  # the elements between were left alone
