"""The fused batch-norm and layer-norm kernels (minigraph/kernels) against the formula paths they must equal."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import minigraph as mg
from minigraph import kernels

ROOT = Path(__file__).resolve().parents[1]
HAS_NUMBA = importlib.util.find_spec("numba") is not None
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed (pip install 'minigraph[fast]')")

# (2, 1): the smallest batch; (700, 200) and (2500, 64): three row blocks each, the last one
# short, and large enough to run on every thread.
SHAPES = [(2, 1), (7, 3), (700, 200), (2500, 64)]


@pytest.fixture
def fused(monkeypatch):
    monkeypatch.setenv("MINIGRAPH_FUSED", "1")


def problem(rng, shape, dtype=np.float64):
    """x: (N, p) with columns of different offsets and scales, γ, β: (p,), a random dY: (N, p)."""
    n, p = shape
    x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, size=p) + rng.normal(size=p) * 3
    arrays = x, rng.uniform(0.5, 2.0, size=p), rng.normal(size=p), rng.normal(size=shape)
    return [a.astype(dtype) for a in arrays]


def run(monkeypatch, path, x, gamma, beta, grad_y, running=True, **options):
    """Forward and backward on ``path`` ('fused' or 'formula'): y, dX, dγ, dβ and the running statistics."""
    monkeypatch.setenv("MINIGRAPH_FUSED", "1" if path == "fused" else "0")
    p = x.shape[1]
    stats = (np.zeros(p, x.dtype), np.ones(p, x.dtype)) if running else (None, None)
    tx, tg, tb = (mg.Tensor(a.copy(), requires_grad=True) for a in (x, gamma, beta))
    out = mg.batch_norm(tx, tg, tb, *stats, **options)
    assert (out.grad_fn.kernel is not None) == (path == "fused")  # the path asked for is the one that ran
    out.backward(grad_y)
    results = {"y": out.data, "dx": tx.grad, "dgamma": tg.grad, "dbeta": tb.grad}
    if running:
        results.update(running_mean=stats[0], running_var=stats[1])
    return results


def relative_error(got, want, scale=0.0):
    """max |got − want| relative to max |want|, or to ``scale`` where that is larger, in float64."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), scale, 1e-300))


def term_scale(name, x, gamma, beta, grad_y):
    """The size of the terms that make up a result: for dX, |γ s dY|.

    dX is a difference of terms that cancel (for N = 2 exactly: two points always normalise to
    ±1, so dX is 0 and computes as rounding noise), so its rounding error is relative to them.
    """
    if name != "dx":
        return 0.0
    return float(np.abs(gamma).max() * np.abs(grad_y).max() / np.asarray(x, np.float64).std(axis=0).min())


# Layer norm's, on X: (M, D), the rows (M) taking the place of batch norm's columns (p).
# (x's shape, normalized_shape): D = 1 (X̂ = 0), one row, a short last block, 3-D x over two dims,
# and two large enough for every thread: (700, 200) and (2500, 64) have three row blocks each.
LN_CASES = [((5, 1), (1,)), ((1, 7), (7,)), ((9, 3), (3,)), ((3, 4, 5), (4, 5)), ((700, 200), (200,)),
            ((2500, 64), (64,))]
AFFINE = {"both": (True, True), "weight": (True, False), "bias": (False, True), "none": (False, False)}


def ln_problem(rng, x_shape, shape=None, affine="both", dtype=np.float64):
    """x with rows of different offsets and scales, weight, bias of ``shape`` (default: x's last dim;
    None where ``affine`` leaves them out) and a random dY, all of ``dtype``."""
    shape = x_shape[-1:] if shape is None else shape
    x = (rng.normal(size=x_shape) * rng.uniform(0.5, 3.0, size=x_shape[:-1] + (1,))
         + rng.normal(size=x_shape[:-1] + (1,)) * 3)
    has_weight, has_bias = AFFINE[affine]
    weight = rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1, 1], size=shape) if has_weight else None
    bias = rng.normal(size=shape) if has_bias else None
    return [None if a is None else a.astype(dtype) for a in (x, weight, bias, rng.normal(size=x_shape))]


def ln_run(monkeypatch, path, x, weight, bias, grad_y, wanted=(True, True, True), eps=1e-5):
    """layer_norm over weight's (or x's last) dims on ``path``, forward and backward: y and the
    gradients of the inputs given that ``wanted`` says require grad."""
    monkeypatch.setenv("MINIGRAPH_FUSED", "1" if path == "fused" else "0")
    shape = x.shape[-1:] if weight is None and bias is None else (weight if weight is not None else bias).shape
    tensors = [None if a is None else mg.Tensor(a.copy(), requires_grad=w) for a, w in zip((x, weight, bias), wanted)]
    out = mg.layer_norm(tensors[0], shape, tensors[1], tensors[2], eps=eps)
    assert (out.grad_fn.kernel is not None) == (path == "fused")  # the path asked for is the one that ran
    out.backward(grad_y)
    results = {"y": out.data}
    for name, t, w in zip(("dx", "dweight", "dbias"), tensors, wanted):
        if t is not None:
            assert (t.grad is not None) == w, name
            if w:
                results[name] = t.grad
    return results


def ln_term_scale(name, x, weight, grad_y, shape):
    """For dX, the size of its terms s·γ·dY (they cancel: for D = 1 dX is 0, computed as noise)."""
    if name != "dx":
        return 0.0
    rows = np.asarray(x, np.float64).reshape(-1, int(np.prod(shape)))
    gamma = 1.0 if weight is None else np.abs(weight).max()
    return float(gamma * np.abs(grad_y).max() / max(rows.std(axis=1).min(), 1e-300))


# --- the two paths are the same function ---------------------------------------------------------
@needs_numba
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ddof,eps", [(0, 1e-5), (1, 0.0)])
def test_float64_fused_equals_the_formula_to_1e_12(monkeypatch, rng, shape, ddof, eps):
    assert_float64_paths_agree(run, monkeypatch, problem(rng, shape), ddof=ddof, eps=eps)


def assert_float64_paths_agree(run_path, monkeypatch, arrays, **options):
    """``run_path`` (this file's ``run`` or test_kernels_gpu.py's) on the kernels and on the formula:
    every result float64 and the same to 1e-12 of its size (dX: of its terms' size)."""
    fused = run_path(monkeypatch, "fused", *arrays, **options)
    formula = run_path(monkeypatch, "formula", *arrays, **options)
    assert fused.keys() == formula.keys()
    for name in formula:
        assert fused[name].dtype == np.float64
        assert relative_error(fused[name], formula[name], term_scale(name, *arrays)) <= 1e-12, name


def assert_float32_fused_is_close(run_path, monkeypatch, arrays, scale=lambda name: 0.0, slack=1.0, floor=0.0):
    """``run_path`` on float32 copies of the float64 ``arrays``: the kernels' results float32,
    within 1e-5 of the float64 formula's (relative to ``scale(name)`` where larger), and no
    further from it than ``slack`` times the float32 formula's error plus ``floor``."""
    reference = run_path(monkeypatch, "formula", *arrays)
    single = [a.astype(np.float32) for a in arrays]
    fused = run_path(monkeypatch, "fused", *single)
    formula = run_path(monkeypatch, "formula", *single)
    for name in reference:
        assert fused[name].dtype == np.float32
        fused_error = relative_error(fused[name], reference[name], scale(name))
        assert fused_error <= 1e-5, name
        assert fused_error <= slack * relative_error(formula[name], reference[name], scale(name)) + floor, name


# batch norm's problem(rng, (N, p)) and run, layer norm's ln_problem(rng, x_shape) and ln_run
OPS = {"batch_norm": (problem, run), "layer_norm": (ln_problem, ln_run)}


@needs_numba
@pytest.mark.parametrize("op,shape", [("batch_norm", (64, 8)), ("batch_norm", (4096, 64)), ("layer_norm", (64, 8)),
                                      ("layer_norm", (300, 257)), ("layer_norm", (6, 50, 40))])
def test_float32_fused_is_within_1e_5_of_float64_and_no_less_accurate_than_the_formula(monkeypatch, rng, op, shape):
    make, run_op = OPS[op]
    assert_float32_fused_is_close(run_op, monkeypatch, make(rng, shape))


@needs_numba
@pytest.mark.parametrize("op,shape,names", [("batch_norm", (512, 3), ("y", "dx", "running_var")),
                                            ("layer_norm", (3, 512), ("y", "dx", "dweight", "dbias"))])
def test_the_float32_variance_survives_a_mean_of_1e4_standard_deviations(monkeypatch, rng, op, shape, names):
    """The large-mean cases of test_batch_norm.py and test_layer_norm.py (E[x²] − E[x]² loses every
    digit there), checked against float64 and not only loosely. Batch norm normalises the 3 columns
    of 512 values, layer norm the 3 rows of 512."""
    run_op = OPS[op][1]
    x = (100.0 + 0.01 * rng.normal(size=shape)).astype(np.float32)
    ones, zeros = np.ones(shape[1], np.float32), np.zeros(shape[1], np.float32)
    grad_y = rng.normal(size=x.shape).astype(np.float32)
    fused = run_op(monkeypatch, "fused", x, ones, zeros, grad_y, eps=0.0)
    reference = run_op(monkeypatch, "formula", *(a.astype(np.float64) for a in (x, ones, zeros, grad_y)), eps=0.0)
    np.testing.assert_allclose(fused["y"].std(axis=0 if op == "batch_norm" else 1), 1.0, rtol=1e-5)
    for name in names:
        assert relative_error(fused[name], reference[name]) <= 1e-5, name


@needs_numba
@pytest.mark.parametrize("ddof,eps", [(0, 1e-5), (1, 0.0)])
def test_gradcheck_passes_through_the_fused_path(fused, rng, ddof, eps):
    x = mg.Tensor(rng.normal(size=(6, 3)) * 3 + 2, requires_grad=True)
    gamma, beta = (mg.Tensor(rng.normal(size=3), requires_grad=True) for _ in range(2))
    running = np.zeros(3), np.ones(3)
    assert mg.batch_norm(x, gamma, beta).grad_fn.kernel is not None
    assert mg.gradcheck(lambda x, g, b: mg.batch_norm(x, g, b, *running, eps=eps, ddof=ddof), [x, gamma, beta])


@needs_numba
def test_fortran_ordered_input_and_gradient_give_the_c_ordered_results(monkeypatch, rng):
    arrays = problem(rng, (300, 7))
    want = run(monkeypatch, "fused", *arrays)
    got = run(monkeypatch, "fused", *(np.asfortranarray(a) for a in arrays))
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@needs_numba
def test_only_the_gradients_asked_for_are_returned_and_they_match(monkeypatch, rng):
    x, gamma, beta, grad_y = problem(rng, (50, 4))
    want = run(monkeypatch, "formula", x, gamma, beta, grad_y)
    monkeypatch.setenv("MINIGRAPH_FUSED", "1")
    tx, tg, tb = mg.Tensor(x, requires_grad=True), mg.Tensor(gamma), mg.Tensor(beta, requires_grad=True)
    mg.batch_norm(tx, tg, tb).backward(grad_y)
    assert tg.grad is None
    assert relative_error(tx.grad, want["dx"]) <= 1e-12 and relative_error(tb.grad, want["dbeta"]) <= 1e-12
    tx, tg = mg.Tensor(x), mg.Tensor(gamma, requires_grad=True)
    mg.batch_norm(tx, tg, None).backward(grad_y)
    assert tx.grad is None and relative_error(tg.grad, want["dgamma"]) <= 1e-12


@needs_numba
def test_the_fused_backward_never_writes_into_the_gradient_it_was_given(monkeypatch, rng):
    x, gamma, beta, grad_y = problem(rng, (40, 5))
    want = run(monkeypatch, "formula", x, gamma, beta, grad_y)["dx"]
    monkeypatch.setenv("MINIGRAPH_FUSED", "1")
    tx = mg.Tensor(x, requires_grad=True)
    node = mg.batch_norm(tx, mg.Tensor(gamma), mg.Tensor(beta)).grad_fn
    caller_grad = grad_y.copy()
    grad_x = node.backward(caller_grad)[0]
    assert grad_x is not caller_grad and relative_error(grad_x, want) <= 1e-12
    np.testing.assert_array_equal(caller_grad, grad_y)


@needs_numba
@pytest.mark.parametrize("needs_gamma", [False, True])
def test_eval_mode_fused_equals_the_formula(monkeypatch, rng, needs_gamma):
    x, gamma, beta, grad_y = problem(rng, (500, 33))
    mean, var = rng.normal(size=33), rng.uniform(0.5, 2.0, size=33)
    results = {}
    for path in ("fused", "formula"):
        monkeypatch.setenv("MINIGRAPH_FUSED", "1" if path == "fused" else "0")
        tx, tg = mg.Tensor(x, requires_grad=True), mg.Tensor(gamma, requires_grad=needs_gamma)
        out = mg.batch_norm(tx, tg, mg.Tensor(beta), mean, var, training=False, eps=1e-3)
        out.backward(grad_y)
        results[path] = out.data, tx.grad
    for got, want in zip(results["fused"], results["formula"]):
        assert relative_error(got, want) <= 1e-12


@needs_numba
@pytest.mark.parametrize("op", list(OPS))
def test_results_are_bitwise_the_same_for_every_thread_count(monkeypatch, rng, op):
    import numba

    make, run_op = OPS[op]
    arrays = make(rng, (6000, 64))  # 384k elements: above the one-thread size, 6 row blocks
    counts = sorted({1, numba.config.NUMBA_NUM_THREADS})
    before = numba.get_num_threads()
    try:
        results = []
        for count in counts + counts:  # each count twice: also the same from run to run
            numba.set_num_threads(count)
            results.append(run_op(monkeypatch, "fused", *arrays))
    finally:
        numba.set_num_threads(before)
    for other in results[1:]:
        for name in results[0]:
            np.testing.assert_array_equal(other[name], results[0][name], err_msg=name)


_TWO_THREADS = """
import threading, numpy as np, minigraph as mg
rng = np.random.default_rng(0)
arrays = [(rng.normal(size=(3000, 64)), rng.normal(size=(3000, 64))) for _ in range(2)]
def step(x, grad_y):
    tx = mg.Tensor(x, requires_grad=True)
    out = mg.batch_norm(tx, None, None)
    assert out.grad_fn.kernel is not None
    out.backward(grad_y)
    return out.data, tx.grad
want = [step(*a) for a in arrays]
same = []
def worker(i):
    for _ in range(20):
        same.append(all(np.array_equal(g, w) for g, w in zip(step(*arrays[i]), want[i])))
threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
for t in threads: t.start()
for t in threads: t.join()
import numba
print(numba.threading_layer(), len(same), all(same))
"""


@needs_numba
@pytest.mark.parametrize("layer", ["default", "workqueue"])
def test_two_python_threads_may_run_the_kernels_at_once(layer):
    """numba's workqueue layer (where neither tbb nor GNU OpenMP loads, e.g. pip on macOS) aborts the
    process on concurrent launches; the kernels must take turns there, and agree with a lone thread."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MINIGRAPH_FUSED="1", MINIGRAPH_DEVICE="cpu",
               NUMBA_THREADING_LAYER=layer)
    done = subprocess.run([sys.executable, "-c", _TWO_THREADS], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    used, count, same = done.stdout.split()
    assert used == layer or layer == "default"
    assert (count, same) == ("40", "True")


_FORK_WHILE_A_THREAD_RUNS_A_KERNEL = """
import multiprocessing, numpy as np, minigraph as mg
from minigraph.kernels import cpu
def child(queue):
    x = mg.Tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    queue.put(mg.batch_norm(x, None, None).grad_fn.kernel is not None)
if __name__ == "__main__":
    mg.batch_norm(mg.Tensor(np.ones((3, 2))), None, None)
    cpu._turns.acquire()  # what another thread inside a kernel holds at the moment of the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    process.join(30)
    if process.exitcode is None:
        process.kill()
    print(cpu.threading_layer(), process.exitcode, queue.get(timeout=5) if process.exitcode == 0 else None)
"""


@needs_numba
@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="no fork")
def test_a_child_forked_while_another_thread_ran_a_kernel_does_not_wait_for_it_forever(tmp_path):
    """On the workqueue layer, which is fork-safe, the child runs the kernels; the lock the parent's
    other thread held at the fork must not be held in the child, where that thread does not exist."""
    script = tmp_path / "fork_while_running.py"
    script.write_text(_FORK_WHILE_A_THREAD_RUNS_A_KERNEL)
    env = dict(os.environ, PYTHONPATH=str(ROOT), MINIGRAPH_FUSED="1", MINIGRAPH_DEVICE="cpu",
               NUMBA_THREADING_LAYER="workqueue")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["workqueue", "0", "True"], done.stderr[-2000:]


# --- layer norm: the fused kernel against its formula -----------------------------------------
@needs_numba
@pytest.mark.parametrize("x_shape,shape", LN_CASES)
@pytest.mark.parametrize("affine", list(AFFINE))
def test_layer_norm_float64_fused_equals_the_formula_to_1e_12(monkeypatch, rng, x_shape, shape, affine):
    x, weight, bias, grad_y = ln_problem(rng, x_shape, shape, affine)
    fused = ln_run(monkeypatch, "fused", x, weight, bias, grad_y)
    formula = ln_run(monkeypatch, "formula", x, weight, bias, grad_y)
    assert fused.keys() == formula.keys()
    for name in formula:
        assert fused[name].dtype == np.float64 and fused[name].shape == formula[name].shape
        scale = ln_term_scale(name, x, weight, grad_y, shape)
        assert relative_error(fused[name], formula[name], scale) <= 1e-12, name


@needs_numba
@pytest.mark.parametrize("x_shape,shape", [((4, 3), (3,)), ((2, 3, 4), (3, 4))])
@pytest.mark.parametrize("affine", list(AFFINE))
def test_layer_norm_gradcheck_passes_through_the_fused_path(fused, rng, x_shape, shape, affine):
    x, weight, bias, _ = ln_problem(rng, x_shape, shape, affine)
    given = [mg.Tensor(a, requires_grad=True) for a in (x, weight, bias) if a is not None]

    def fn(x, *rest):
        parts = iter(rest)
        return mg.layer_norm(x, shape, next(parts) if weight is not None else None,
                             next(parts) if bias is not None else None, eps=1e-3)

    assert fn(*given).grad_fn.kernel is not None
    assert mg.gradcheck(fn, given, atol=1e-7, rtol=1e-5)


@needs_numba
@pytest.mark.parametrize("wanted", [(True, False, False), (False, True, False), (False, False, True),
                                    (False, True, True), (True, True, False), (True, False, True)])
def test_layer_norm_only_the_gradients_asked_for_are_returned_and_they_match(monkeypatch, rng, wanted):
    arrays = ln_problem(rng, (300, 40), (40,))
    want = ln_run(monkeypatch, "formula", *arrays)
    got = ln_run(monkeypatch, "fused", *arrays, wanted=wanted)  # asserts the others got no gradient
    assert len(got) == 1 + sum(wanted)
    for name in got:
        assert relative_error(got[name], want[name]) <= 1e-12, name


@needs_numba
def test_layer_norm_non_contiguous_input_and_gradient_give_the_contiguous_results(monkeypatch, rng):
    x, weight, bias, grad_y = ln_problem(rng, (300, 7), (7,))
    want = ln_run(monkeypatch, "fused", x, weight, bias, grad_y)
    strided = [np.asfortranarray(x), weight, np.repeat(bias, 2)[::2], np.asfortranarray(grad_y)]
    got = ln_run(monkeypatch, "fused", *strided)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@needs_numba
def test_layer_norm_fused_backward_never_writes_into_the_gradient_it_was_given(monkeypatch, rng):
    x, weight, bias, grad_y = ln_problem(rng, (40, 5), (5,))
    want = ln_run(monkeypatch, "formula", x, weight, bias, grad_y)["dx"]
    monkeypatch.setenv("MINIGRAPH_FUSED", "1")
    node = mg.layer_norm(mg.Tensor(x, requires_grad=True), 5, mg.Tensor(weight), mg.Tensor(bias)).grad_fn
    caller_grad = grad_y.copy()
    grad_x = node.backward(caller_grad)[0]
    assert grad_x is not caller_grad and relative_error(grad_x, want) <= 1e-12
    np.testing.assert_array_equal(caller_grad, grad_y)


@needs_numba
def test_layer_norm_a_constant_row_without_eps_is_nan_on_both_paths_and_the_rest_agrees(monkeypatch, rng):
    """Variance 0 and eps = 0: inv_std is 1/0 = inf and X̂ = 0·inf = NaN, as NumPy computes it;
    the kernel must neither raise ZeroDivisionError nor spill the NaN into other rows' results."""
    x, weight, bias, grad_y = ln_problem(rng, (20, 6), (6,))
    x[3] = 2.5
    with np.errstate(divide="ignore", invalid="ignore"):
        fused = ln_run(monkeypatch, "fused", x, weight, bias, grad_y, eps=0.0)
        formula = ln_run(monkeypatch, "formula", x, weight, bias, grad_y, eps=0.0)
    for name in ("y", "dx"):
        assert np.isnan(fused[name][3]).all() and np.isnan(formula[name][3]).all(), name
        others = np.delete(np.arange(20), 3)
        assert relative_error(fused[name][others], formula[name][others],
                              ln_term_scale(name, x[others], weight, grad_y, (6,))) <= 1e-12, name
    for name in ("dweight", "dbias"):  # the NaN row is in every column's sum on both paths
        assert np.array_equal(np.isnan(fused[name]), np.isnan(formula[name])), name


# --- choosing the path ---------------------------------------------------------------------------
@needs_numba
def test_minigraph_fused_0_runs_the_formula_and_not_the_kernels(monkeypatch, rng):
    """Observed, not trusted: with the kernels rigged to fail, only the formula can succeed."""
    from minigraph.kernels import cpu

    def broken(*args, **kwargs):
        raise AssertionError("a fused kernel ran")

    x, gamma, beta, grad_y = problem(rng, (9, 4))
    want = run(monkeypatch, "formula", x, gamma, beta, grad_y)
    # Compiled before rigging: compile_for runs the kernels, which would turn them off for good.
    monkeypatch.setenv("MINIGRAPH_FUSED", "1")
    assert kernels.batch_norm(x, gamma, beta) is cpu
    ln_want = ln_run(monkeypatch, "formula", x, gamma, beta, grad_y)
    monkeypatch.setenv("MINIGRAPH_FUSED", "1")
    assert kernels.layer_norm(x, gamma, beta) is cpu
    for name in ("batch_norm_forward", "batch_norm_backward", "batch_norm_eval_forward", "layer_norm_forward",
                 "layer_norm_backward"):
        monkeypatch.setattr(cpu, name, broken)
    got = run(monkeypatch, "formula", x, gamma, beta, grad_y)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    mg.batch_norm(mg.Tensor(x), None, None, np.zeros(4), np.ones(4), training=False)
    ln_got = ln_run(monkeypatch, "formula", x, gamma, beta, grad_y)
    for name in ln_want:
        np.testing.assert_array_equal(ln_got[name], ln_want[name])
    monkeypatch.setenv("MINIGRAPH_FUSED", "1")  # the rigged kernels are live: they do run when on
    with pytest.raises(AssertionError, match="a fused kernel ran"):
        mg.batch_norm(mg.Tensor(x), None, None)
    with pytest.raises(AssertionError, match="a fused kernel ran"):
        mg.layer_norm(mg.Tensor(x), 4)


def test_other_arrays_and_dtypes_are_left_to_the_formula(fused):
    class StandIn(np.ndarray):  # like a CuPy array: not exactly numpy.ndarray
        pass

    x = np.ones((4, 2))
    assert kernels.batch_norm(x.view(StandIn), np.ones(2), np.zeros(2)) is None
    assert kernels.batch_norm(x.astype(np.float16), np.ones(2, np.float16), np.zeros(2, np.float16)) is None
    assert kernels.batch_norm(x, np.ones(2, np.float32), np.zeros(2)) is None  # mixed dtypes
    assert kernels.batch_norm(x.astype(">f8"), np.ones(2), np.zeros(2)) is None  # not native byte order
    assert kernels.layer_norm(x.view(StandIn)) is None
    assert kernels.layer_norm(x, np.ones(2, np.float32)) is None
    assert kernels.layer_norm(np.ones((0, 2))) is None and kernels.layer_norm(np.ones((2, 0))) is None  # empty


@pytest.mark.parametrize("value,on", [("0", False), ("off", False), ("False", False), ("1", True), ("", True),
                                      (" Yes ", True)])
def test_minigraph_fused_is_read_at_each_call(monkeypatch, value, on):
    monkeypatch.setenv("MINIGRAPH_FUSED", value)
    assert kernels.fused_enabled() is on


@pytest.mark.parametrize("value", ["disabled", "none", "2", "fasle"])
def test_an_unclear_minigraph_fused_is_an_error_not_silently_on(monkeypatch, rng, value):
    """A user who wrote MINIGRAPH_FUSED=disabled asked for the formula; running the kernels would ignore them."""
    monkeypatch.setenv("MINIGRAPH_FUSED", value)
    running = np.zeros(3), np.ones(3)
    for training in (True, False):
        with pytest.raises(ValueError, match=f"batch_norm: MINIGRAPH_FUSED is '{value}'; expected one of 0, "):
            mg.batch_norm(mg.Tensor(rng.normal(size=(4, 3))), None, None, *running, training=training)
        np.testing.assert_array_equal(running[0], 0.0)  # refused before the statistics were touched
        np.testing.assert_array_equal(running[1], 1.0)
    with pytest.raises(ValueError, match=f"layer_norm: MINIGRAPH_FUSED is '{value}'; expected one of 0, "):
        mg.layer_norm(mg.Tensor(rng.normal(size=(4, 3))), 3)


def test_a_failed_numba_import_falls_back_to_the_formula_with_exactly_one_warning(monkeypatch, rng):
    monkeypatch.setattr(kernels, "_cpu", kernels._CpuKernels())  # a fresh process's state
    monkeypatch.delitem(sys.modules, "minigraph.kernels.cpu", raising=False)
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
    monkeypatch.setenv("MINIGRAPH_FUSED", "1")
    arrays = problem(rng, (8, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [run_unchecked(*(a.astype(dtype) for a in arrays)) for dtype in (np.float64, np.float32)]
        results.append(run_unchecked(*arrays))
    messages = [str(w.message) for w in caught if "fused CPU kernels" in str(w.message)]
    assert len(messages) == 1 and "numba" in messages[0], messages
    assert "minigraph.kernels.cpu" not in sys.modules
    monkeypatch.setenv("MINIGRAPH_FUSED", "0")
    want = run_unchecked(*arrays)
    np.testing.assert_array_equal(results[0], want)


@needs_numba
def test_a_failed_compile_falls_back_to_the_formula_with_exactly_one_warning(monkeypatch, rng):
    from numba.core.errors import TypingError

    from minigraph.kernels import cpu

    def failing_compile(op, dtype):
        raise TypingError("simulated")

    monkeypatch.setattr(kernels, "_cpu", kernels._CpuKernels())
    monkeypatch.setattr(cpu, "compile_for", failing_compile)
    monkeypatch.setenv("MINIGRAPH_FUSED", "1")
    arrays = problem(rng, (8, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = [run_unchecked(*arrays) for _ in range(3)]
    messages = [str(w.message) for w in caught if "fused CPU kernels" in str(w.message)]
    assert len(messages) == 1 and "TypingError" in messages[0], messages
    monkeypatch.setenv("MINIGRAPH_FUSED", "0")
    np.testing.assert_array_equal(got[0], run_unchecked(*arrays))


def _child_runs_batch_norm(queue):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = mg.Tensor(np.ones((300, 300)) * np.arange(300.0)[:, None], requires_grad=True)
        nodes = [mg.batch_norm(x, None, None).grad_fn for _ in range(2)]
    queue.put(([node.kernel is None for node in nodes],
               [str(w.message) for w in caught if "fused CPU kernels" in str(w.message)]))


@needs_numba
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="GNU OpenMP's fork hazard is Linux's")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_of_a_process_that_ran_the_kernels_runs_the_formula_instead_of_dying(fused, rng):
    import multiprocessing

    from minigraph.kernels import cpu

    mg.batch_norm(mg.Tensor(rng.normal(size=(300, 300))), None, None)  # the threads are started
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_runs_batch_norm, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0  # numba would have terminated it (SIGTERM, exit code -15)
    formula_ran, messages = queue.get(timeout=10)
    if cpu.threading_layer() == "omp":
        assert formula_ran == [True, True] and len(messages) == 1 and "forked" in messages[0]
    else:  # tbb and workqueue are fork-safe: the kernels run on
        assert formula_ran == [False, False] and messages == []


def run_unchecked(x, gamma, beta, grad_y):
    """dX through whichever path serves, without asserting which one it is."""
    tx = mg.Tensor(x, requires_grad=True)
    mg.batch_norm(tx, mg.Tensor(gamma), mg.Tensor(beta)).backward(grad_y)
    return tx.grad


def test_import_minigraph_imports_no_numba_nor_does_the_formula_path():
    code = ("import sys, numpy, minigraph as mg; imported = 'numba' in sys.modules; "
            "mg.batch_norm(mg.Tensor(numpy.ones((3, 2)), requires_grad=True), None, None).backward(numpy.ones((3, 2))); "
            "print(imported, 'numba' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(ROOT), MINIGRAPH_FUSED="0")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


@needs_numba
def test_kernels_still_compile_where_no_cache_directory_is_usable(monkeypatch):
    """numba refuses cache=True when it finds no writable cache location; the kernels then skip the cache."""
    import numba

    from minigraph.kernels import cpu

    # IPythonCacheLocator serves only IPython cells, so for a file numba finds no location at all.
    monkeypatch.setattr(numba.config, "CACHE_LOCATOR_CLASSES", "IPythonCacheLocator")

    def doubled(a):
        return 2 * a

    with pytest.raises(RuntimeError, match="no locator available"):
        numba.njit(cache=True)(doubled)
    compiled = cpu._jit(doubled)
    assert compiled(np.arange(3.0)).tolist() == [0.0, 2.0, 4.0]


@needs_numba
@pytest.mark.parametrize("preset,while_starting,after", [
    ({}, "1000", None), ({"OMP_WAIT_POLICY": "active"}, None, None), ({"GOMP_SPINCOUNT": "50"}, "50", "50")])
def test_the_openmp_threads_are_told_to_sleep_soon_unless_the_user_chose(preset, while_starting, after):
    """Spinning OpenMP threads would hold the cores OpenBLAS's GEMM threads need next (a step 1.7×
    slower here); the user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT always wins. libgomp reads the
    variable when the first kernel starts its threads (inside compile_for); after that minigraph
    takes back what it set, so the process's children inherit the user's environment."""
    code = ("import os, numpy, minigraph as mg; from minigraph.kernels import cpu; "
            "gomp = lambda: 'libgomp' in open('/proc/self/maps').read(); "
            "compile_for = cpu.compile_for; seen = []; "
            "cpu.compile_for = lambda op, dtype: (seen.append((os.environ.get('GOMP_SPINCOUNT'), gomp())), "
            "compile_for(op, dtype)); "
            "mg.batch_norm(mg.Tensor(numpy.ones((3, 2)), requires_grad=True), None, None); "
            "print(seen[0][0], os.environ.get('GOMP_SPINCOUNT'), seen[0][1], gomp(), cpu.threading_layer())")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(preset, PYTHONPATH=str(ROOT), MINIGRAPH_FUSED="1", MINIGRAPH_DEVICE="cpu")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    during, later, gomp_before, gomp_after, layer = done.stdout.split()
    assert (during, later) == (str(while_starting), str(after))
    if layer == "omp" and sys.platform.startswith("linux"):
        # GNU OpenMP loaded inside compile_for, so it read the variable as it was set then.
        assert (gomp_before, gomp_after) == ("False", "True")


def test_each_ops_kernels_compile_on_its_first_use_only():
    """A net without layer norm never pays for compiling its kernels (nor the reverse)."""
    pytest.importorskip("numba")
    code = ("import json, numpy, minigraph as mg; from minigraph import kernels; "
            "ops = lambda: sorted(op for op, _ in kernels._cpu.compiled); "
            "x = mg.Tensor(numpy.ones((3, 2), numpy.float32), requires_grad=True); "
            "mg.batch_norm(x, None, None).sum().backward(); first = ops(); "
            "mg.layer_norm(x, (2,)).sum().backward(); print(json.dumps([first, ops()]))")
    env = dict(os.environ, PYTHONPATH=str(ROOT), MINIGRAPH_FUSED="1", MINIGRAPH_DEVICE="cpu")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [["batch_norm"], ["batch_norm", "layer_norm"]]
