"""Batch norm's CUDA kernels, emulated on the CPU (tests/cuda_emulation.py), against the formula path.

CI has no GPU; this is how every change to the CUDA source is still checked there: indexing,
merges, barriers, unwritten elements, the running statistics' rounding. tests/test_kernels_gpu.py
holds the same kernels to the formula on a real GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

import cuda_emulation
import minigraph as mg
from test_kernels import problem, relative_error, term_scale

# One block; a partial tile; 3 tiles × 9 chunks, the last of each short; many chunks of few columns.
SHAPES = [(2, 1), (7, 3), (300, 70), (1000, 5)]


@pytest.fixture(scope="module")
def gpu():
    problem = cuda_emulation.compiler_problem()
    if problem:
        pytest.skip(problem)
    module = cuda_emulation.gpu_module()
    for dtype in module.DTYPES:
        module.compile_for("batch_norm", dtype)
    return module


def formula(monkeypatch, x, gamma, beta, grad_y, eps, ddof):
    """y, dX, dγ, dβ of the formula path on NumPy, in float64."""
    monkeypatch.setenv("MINIGRAPH_FUSED", "0")
    tensors = [mg.Tensor(a.astype(np.float64), requires_grad=True) for a in (x, gamma, beta)]
    out = mg.batch_norm(*tensors, eps=eps, ddof=ddof)
    out.backward(grad_y.astype(np.float64))
    return {"y": out.data, "dx": tensors[0].grad, "dgamma": tensors[1].grad, "dbeta": tensors[2].grad}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("ddof,eps", [(0, 1e-5), (1, 0.0)])
def test_forward_and_backward_equal_the_formula(gpu, monkeypatch, rng, shape, dtype, tolerance, ddof, eps):
    arrays = problem(rng, shape, dtype)
    want = formula(monkeypatch, *arrays, eps, ddof)
    y, mean, sum_sq, saved, _ = gpu.batch_norm_forward(*arrays[:3], eps, ddof)
    dx, dgamma, dbeta = gpu.batch_norm_backward(saved, arrays[3], ddof, (True, True, True))
    got = {"y": y, "dx": dx, "dgamma": dgamma, "dbeta": dbeta}
    for name, value in got.items():
        assert value.dtype == dtype and np.isfinite(value).all(), name  # NaN: an element never written
        assert relative_error(value, want[name], term_scale(name, *arrays)) <= tolerance, name
    x = arrays[0].astype(np.float64)
    assert relative_error(mean, x.mean(axis=0)) <= 1e-14
    assert relative_error(sum_sq, ((x - x.mean(axis=0)) ** 2).sum(axis=0)) <= 1e-12


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_running_statistics_are_rounded_as_the_formulas_in_place_updates_round_them(gpu, rng, dtype):
    n, p = 300, 70
    x, gamma, beta, _ = problem(rng, (n, p), dtype)
    running_mean, running_var = rng.normal(size=p).astype(dtype), rng.uniform(0.5, 2.0, p).astype(dtype)
    mean_k, var_k = running_mean.copy(), running_var.copy()
    _, mean, sum_sq, _, updated = gpu.batch_norm_forward(x, gamma, beta, 1e-5, 0, (mean_k, var_k, 0.1))
    assert updated
    # ops/batch_norm.py's _update_running_statistics, on the kernels' own statistics: bitwise equal.
    running_mean *= 1.0 - 0.1
    running_mean += 0.1 * mean
    running_var *= 1.0 - 0.1
    running_var += (0.1 / (n - 1)) * sum_sq
    np.testing.assert_array_equal(mean_k, running_mean)
    np.testing.assert_array_equal(var_k, running_var)
    strided = np.zeros(2 * p, dtype)[::2]  # a view the kernel does not write: left to the caller
    assert gpu.batch_norm_forward(x, gamma, beta, 1e-5, 0, (strided, None, 0.1))[4] is False
    assert not strided.any()


def test_the_float32_variance_survives_a_mean_of_1e4_standard_deviations(gpu, rng):
    x = (100.0 + 0.01 * rng.normal(size=(512, 3))).astype(np.float32)
    y = gpu.batch_norm_forward(x, np.ones(3, np.float32), np.zeros(3, np.float32), 0.0, 0)[0]
    np.testing.assert_allclose(y.astype(np.float64).std(axis=0), 1.0, rtol=1e-5)


def test_eval_mode_equals_the_formula(gpu, rng):
    x, gamma, beta, _ = problem(rng, (300, 70), np.float32)
    mean, var = rng.normal(size=70).astype(np.float32), rng.uniform(0.5, 2.0, 70).astype(np.float32)
    inv_std = (1.0 / np.sqrt(var + np.float32(1e-3))).astype(np.float32)
    y = gpu.batch_norm_eval_forward(x, gamma, beta, mean, inv_std)
    want = (x.astype(np.float64) - mean) * (gamma.astype(np.float64) * inv_std) + beta
    assert y.dtype == np.float32 and relative_error(y, want) <= 1e-6


def test_results_are_the_same_whichever_thread_runs_first(gpu, rng):
    """The emulated threads are scheduled by the OS, differently on every run: a merge that depended
    on their order (an atomic, a missing barrier) would show as a difference here."""
    arrays = problem(rng, (1000, 40), np.float32)
    first = gpu.batch_norm_forward(*arrays[:3], 1e-5, 0)
    grads = gpu.batch_norm_backward(first[3], arrays[3], 0, (True, True, True))
    for _ in range(2):
        again = gpu.batch_norm_forward(*arrays[:3], 1e-5, 0)
        np.testing.assert_array_equal(again[0], first[0])
        for got, want in zip(gpu.batch_norm_backward(again[3], arrays[3], 0, (True, True, True)), grads):
            np.testing.assert_array_equal(got, want)
