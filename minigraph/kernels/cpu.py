"""Batch norm and layer norm fused for NumPy arrays by numba: few passes over the data, on all cores.

The math is the formula path's (``minigraph/ops/batch_norm.py``, derived in
docs/batchnorm.md); that code stays the definition and tests hold these kernels
to it. NumPy needs about nine separate passes over (N, p) for a forward and
backward, mostly on one core; here each direction reads the data twice:

    forward   1. per row block: Σx and Σ(x − μ_block)², merged over the blocks -> μ, Σ(x − μ)², s
              2. Y = (X − 1μ) ⊙ 1(γ s) + 1β
    backward  1. per row block: Σ dY and Σ dY ⊙ (X − 1μ), merged -> dβ, dγ = s ⊙ Σ dY ⊙ Xc
              2. dX = 1(γ s) ⊙ [dY − 1 dβ/N − (X − 1μ) ⊙ 1(s dγ)/(N − ddof)]

Accuracy: every sum accumulates in float64, and each element is computed in
float64 and rounded once to the array's dtype, so float32 results are at least
as accurate as the formula path's, which rounds after every operation. The
variance is two-pass inside each row block (the block is still in cache for the
second pass) and the blocks are merged by the exact decomposition
Σ(x − μ)² = Σ_b [Σ(x − μ_b)² + n_b (μ_b − μ)²], so no E[x²] − E[x]² cancellation.

Determinism: the row blocks depend on the shape alone, never on the thread
count or on which thread runs which block. Each block writes its sums to its own row
of a (blocks, p) array, and the rows are merged in block order, so results are
bitwise the same for every run and every thread count.

The forward saves X and μ, not Xc: X is alive anyway (it is the layer's
input), so the backward's recomputation of X − 1μ costs one subtraction per
element and no memory traffic, while materialising Xc would cost an extra
(N, p) write in the forward and an (N, p) array held until the backward.
Saving Y and recovering X̂ = (Y − β)/γ would break where γ = 0.

Threads: numba's (OpenMP) threads, NUMBA_NUM_THREADS of them. GNU OpenMP lets
a thread spin after each parallel region; when every core is busy with other
processes, the spinning thread holds the core its partner needs, and a call
can take 50–100× longer (2048 × 512 float32 forward + backward on 2 busy cores:
~70 ms, against ~1.5 ms with OMP_WAIT_POLICY=PASSIVE and ~0.65 ms on idle
cores). PyTorch's CPU kernels behave the same. On such a machine set
OMP_WAIT_POLICY=PASSIVE or NUMBA_NUM_THREADS=1 before the first batch norm.

Layer norm (``minigraph/ops/layer_norm.py``) is batch norm with rows and columns
swapped: each row of X: (M, D) is normalised over its D columns. A row is read
from memory once per kernel and then stays in cache, so

    forward   per row: Σx, then Σ(x − μ)² (two-pass), s; then Y = (X − μ1ᵀ) ⊙ s1ᵀ ⊙ 1γ + 1β
    backward  per row: Σ G and Σ G ⊙ X̂ (G = dY ⊙ γ), then dX; in the same pass each row block
              adds dY and dY ⊙ X̂ into its own row of (blocks, D) partial sums for dβ and dγ,
              merged in block order afterwards (no two threads write one sum; deterministic)

Rows are independent, so the forward runs over rows in parallel with no merge at
all. The row sums are scalar reductions, which LLVM vectorises only when it may
reassociate them: these kernels are compiled with fastmath's ``reassoc`` alone
(no ``nnan``/``ninf``, so NaN and inf propagate as in NumPy). The summation order
is then fixed by the compiled code and the row length, never by the threads, and
every sum is still float64.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

import numpy
import numba
from numba import prange

BLOCK_ELEMENTS = 65536  # one row block: 256 KiB of float32, in L2 for the forward's second pass over it
MIN_BLOCK_ROWS = 16  # and at least 16 rows, so the (blocks, p) float64 partial sums stay below N·p/16 numbers
# Below this many elements a kernel takes microseconds, less than waking a second thread costs (and far
# less than waiting for one that a busy machine has descheduled), so small inputs run on one thread.
PARALLEL_MIN_ELEMENTS = 1 << 16


def _jit(function: Callable, **extra: Any) -> Callable:
    """numba's parallel JIT, cached on disk across processes where a cache directory is writable.

    ``extra`` adds to or overrides numba.njit's options (the layer norm kernels' fastmath).

    numba caches next to this file, or in the user's cache directory when the
    package folder is read-only (NUMBA_CACHE_DIR overrides both). With neither
    writable, numba refuses ``cache=True`` at decoration time; the kernels then
    compile in every process instead of failing.
    """
    options = {"parallel": True, "fastmath": False, "nogil": True, **extra}
    try:
        return numba.njit(cache=True, **options)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(cache=False, **options)(function)


def block_rows(p: int) -> int:
    """Rows per block for an (N, p) input: a function of p alone, not of the threads, so results are deterministic.

    Measured on 2 cores at 2048 and 4096 × 512, float32: blocks of 64K elements
    beat 32K ones by ~10% (fewer partial sums to merge) and tie with 128K ones.
    """
    return max(MIN_BLOCK_ROWS, BLOCK_ELEMENTS // max(1, p))


def kernel_ready(a: Any) -> Any:
    """``a`` in the one layout the kernels are compiled for (C-contiguous, aligned, writeable); copied only if not."""
    flags = a.flags
    if flags.c_contiguous and flags.aligned and flags.writeable:
        return a
    return numpy.array(a, order="C")


# numba's workqueue threading layer (its choice where neither tbb nor GNU OpenMP loads, as in a pip
# install on macOS, or with NUMBA_THREADING_LAYER=workqueue) aborts the whole process when two Python
# threads launch parallel kernels at once. There the kernels take turns; so do the first launches,
# made before the layer is known. The other layers are thread-safe and never wait here.
_THREAD_SAFE_LAYERS = ("omp", "tbb")
_turns = threading.Lock()


def _free_turns_in_child() -> None:
    """A child forked while another thread held ``_turns`` would wait forever for that thread: free it."""
    global _turns
    _turns = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_free_turns_in_child)


class _ThreadsFor:
    """``with _ThreadsFor(x):`` runs the kernels inside on one thread when x is small, else on numba's
    default; one Python thread at a time where numba's threading layer is not thread-safe."""

    __slots__ = ("single", "threads", "taking_turns")

    def __init__(self, x: Any) -> None:
        self.single = x.size < PARALLEL_MIN_ELEMENTS

    def __enter__(self) -> None:
        self.taking_turns = threading_layer() not in _THREAD_SAFE_LAYERS
        if self.taking_turns:
            _turns.acquire()
        if self.single:
            self.threads = numba.get_num_threads()
            numba.set_num_threads(1)  # this thread's setting only

    def __exit__(self, *exc_info: Any) -> None:
        if self.single:
            numba.set_num_threads(self.threads)
        if self.taking_turns:
            _turns.release()


# --- the kernels (numba) -----------------------------------------------------------------------
@_jit
def _column_statistics(x: Any, rows: int) -> tuple[Any, Any]:
    """x: (N, p) -> column means μ: (p,) and Σ(x − μ)²: (p,), both float64."""
    n, p = x.shape
    blocks = (n + rows - 1) // rows
    block_mean = numpy.zeros((blocks, p))
    block_sum_sq = numpy.zeros((blocks, p))
    for b in prange(blocks):
        start = b * rows
        stop = min(n, start + rows)
        # Loops over j start at 0: numba's negative-index check on a j of unknown sign stops vectorization.
        for i in range(start, stop):
            for j in range(p):
                block_mean[b, j] += x[i, j]
        for j in range(p):
            block_mean[b, j] /= stop - start
        for i in range(start, stop):  # the block is still in cache: a second pass costs little
            for j in range(p):
                deviation = x[i, j] - block_mean[b, j]
                block_sum_sq[b, j] += deviation * deviation
    mean = numpy.zeros(p)
    for b in range(blocks):
        count = min(n, (b + 1) * rows) - b * rows
        for j in range(p):
            mean[j] += count * block_mean[b, j]
    mean /= n
    sum_sq = numpy.zeros(p)
    for b in range(blocks):
        count = min(n, (b + 1) * rows) - b * rows
        for j in range(p):
            shift = block_mean[b, j] - mean[j]
            sum_sq[j] += block_sum_sq[b, j] + count * shift * shift
    return mean, sum_sq


@_jit
def _normalise(x: Any, mean: Any, scale: Any, shift: Any, rows: int, out: Any) -> None:
    """out = (x − 1μ) ⊙ 1scale + 1shift; x, out: (N, p); mean, scale, shift: (p,) float64."""
    n, p = x.shape
    blocks = (n + rows - 1) // rows
    for b in prange(blocks):
        for i in range(b * rows, min(n, (b + 1) * rows)):
            for j in range(p):
                out[i, j] = (x[i, j] - mean[j]) * scale[j] + shift[j]


@_jit
def _gradient_sums(x: Any, mean: Any, grad_y: Any, rows: int) -> tuple[Any, Any]:
    """x, grad_y: (N, p) -> Σ dY: (p,) and Σ dY ⊙ (x − 1μ): (p,), both float64."""
    n, p = x.shape
    blocks = (n + rows - 1) // rows
    block_sum = numpy.zeros((blocks, p))
    block_dot = numpy.zeros((blocks, p))
    for b in prange(blocks):
        for i in range(b * rows, min(n, (b + 1) * rows)):
            for j in range(p):
                block_sum[b, j] += grad_y[i, j]
                block_dot[b, j] += grad_y[i, j] * (x[i, j] - mean[j])
    total = numpy.zeros(p)
    dot = numpy.zeros(p)
    for b in range(blocks):
        for j in range(p):
            total[j] += block_sum[b, j]
            dot[j] += block_dot[b, j]
    return total, dot


@_jit
def _input_gradient(x: Any, mean: Any, grad_y: Any, scale: Any, grad_y_mean: Any, centred_scale: Any,
                    rows: int, out: Any) -> None:
    """out = 1scale ⊙ (dY − 1 mean(dY)) − (x − 1μ) ⊙ 1centred_scale; out may be grad_y itself."""
    n, p = x.shape
    blocks = (n + rows - 1) // rows
    for b in prange(blocks):
        for i in range(b * rows, min(n, (b + 1) * rows)):
            for j in range(p):
                out[i, j] = scale[j] * (grad_y[i, j] - grad_y_mean[j]) - (x[i, j] - mean[j]) * centred_scale[j]


def _jit_rows(function: Callable) -> Callable:
    """The layer norm kernels' JIT: row sums may be reassociated (vectorised); 1/0 is inf, as in NumPy.

    error_model="numpy": a constant row with eps = 0 has variance 0, and its inv_std must be
    inf (X̂ = 0·inf = NaN, as the formula gives) instead of a ZeroDivisionError.
    """
    return _jit(function, fastmath={"reassoc"}, error_model="numpy")


@_jit_rows
def _layer_norm_rows(x: Any, weight: Any, bias: Any, eps: float, mean: Any, inv_std: Any, out: Any) -> None:
    """x, out: (M, D), D > 0; weight, bias: (D,) float64 -> writes mean, inv_std: (M,) float64 and
    out = (X − μ1ᵀ) ⊙ s1ᵀ ⊙ 1γ + 1β."""
    m, d = x.shape
    for i in prange(m):
        total = 0.0
        for j in range(d):
            total += x[i, j]
        mu = total / d
        sum_sq = 0.0
        for j in range(d):  # the row is still in cache: the second pass costs little
            deviation = x[i, j] - mu
            sum_sq += deviation * deviation
        s = 1.0 / numpy.sqrt(sum_sq / d + eps)
        mean[i] = mu
        inv_std[i] = s
        for j in range(d):
            out[i, j] = (x[i, j] - mu) * s * weight[j] + bias[j]


@_jit_rows
def _layer_norm_gradients(x: Any, mean: Any, inv_std: Any, weight: Any, grad_y: Any, rows: int,
                          want_x: bool, want_columns: bool, block_dot: Any, block_sum: Any, out: Any) -> None:
    """x, grad_y, out: (M, D), D > 0; mean, inv_std: (M,), weight: (D,), all float64.

    With ``want_columns``: block_dot[b], block_sum[b] (zeros on entry) += Σ dY ⊙ X̂ and Σ dY over
    row block b. With ``want_x``: out = s1ᵀ ⊙ [G − (G1)/D 1ᵀ − X̂ ⊙ ((G ⊙ X̂)1)/D 1ᵀ], G = dY ⊙ 1γ;
    out may be grad_y itself (each row is read in full before it is written).
    """
    m, d = x.shape
    blocks = (m + rows - 1) // rows
    for b in prange(blocks):
        for i in range(b * rows, min(m, (b + 1) * rows)):
            mu = mean[i]
            s = inv_std[i]
            sum_g = 0.0
            sum_g_xhat = 0.0
            for j in range(d):  # one read of the row for all four sums
                normalised = (x[i, j] - mu) * s
                if want_columns:
                    block_sum[b, j] += grad_y[i, j]
                    block_dot[b, j] += grad_y[i, j] * normalised
                g = grad_y[i, j] * weight[j]
                sum_g += g
                sum_g_xhat += g * normalised
            if want_x:
                mean_g = sum_g / d
                mean_g_xhat = sum_g_xhat / d
                for j in range(d):
                    out[i, j] = s * (grad_y[i, j] * weight[j] - mean_g - (x[i, j] - mu) * s * mean_g_xhat)


# --- what ops/batch_norm.py calls ------------------------------------------------------------
def batch_norm_forward(x: Any, gamma: Any, beta: Any, eps: float, ddof: int, running: tuple | None = None) -> tuple:
    """Training-mode forward: x: (N, p), gamma, beta: (p,) -> (y: (N, p), mean: (p,), sum_sq: (p,), saved,
    updated).

    ``mean`` and ``sum_sq`` = Σ(x − μ)² are float64, for the running statistics;
    ``saved`` is what ``batch_norm_backward`` takes. ``running`` (the statistics and momentum)
    is left to the caller, whose in-place NumPy updates cost next to nothing here: ``updated``
    is False (kernels/gpu.py updates them in its merge kernel, saving launches).
    """
    x = kernel_ready(x)
    n, p = x.shape
    rows = block_rows(p)
    y = numpy.empty_like(x)
    with _ThreadsFor(x):
        mean, sum_sq = _column_statistics(x, rows)
        inv_std = 1.0 / numpy.sqrt(sum_sq / (n - ddof) + eps)
        _normalise(x, mean, gamma * inv_std, beta.astype(numpy.float64), rows, y)
    return y, mean, sum_sq, (mean, inv_std, x, gamma), False


def batch_norm_backward(saved: tuple, grad_output: Any, ddof: int, needs_grad: tuple) -> tuple:
    """Training-mode backward: dY: (N, p) -> (dX: (N, p), dγ: (p,), dβ: (p,)), None where not needed."""
    mean, inv_std, x, gamma = saved
    needs_x, needs_gamma, needs_beta = needs_grad
    grad_y = kernel_ready(grad_output)
    n, p = x.shape
    rows = block_rows(p)
    grad_x = None
    if needs_x:
        # A copy made by kernel_ready is ours to overwrite; the dY we were given never is.
        grad_x = grad_y if grad_y is not grad_output else numpy.empty_like(grad_y)
    with _ThreadsFor(x):
        grad_beta, dot = _gradient_sums(x, mean, grad_y, rows)
        grad_gamma = inv_std * dot
        if needs_x:
            scale = gamma * inv_std
            _input_gradient(x, mean, grad_y, scale, grad_beta / n, scale * inv_std * grad_gamma / (n - ddof),
                            rows, grad_x)
    dtype = x.dtype
    return (grad_x,
            grad_gamma.astype(dtype) if needs_gamma else None,
            grad_beta.astype(dtype) if needs_beta else None)


def batch_norm_eval_forward(x: Any, gamma: Any, beta: Any, mean: Any, inv_std: Any) -> Any:
    """Evaluation-mode forward with fixed statistics: y = (x − 1μ) ⊙ 1(γ s) + 1β, x: (N, p)."""
    x = kernel_ready(x)
    y = numpy.empty_like(x)
    with _ThreadsFor(x):
        _normalise(x, mean.astype(numpy.float64), gamma * inv_std.astype(numpy.float64),
                   beta.astype(numpy.float64), block_rows(x.shape[1]), y)
    return y


# --- what ops/layer_norm.py calls ------------------------------------------------------------
def _affine64(a: Any, d: int, fill: float) -> Any:
    """weight or bias: (D,) as float64, or ``fill`` everywhere for None (×1 and +0 are exact)."""
    return numpy.full(d, fill) if a is None else a.astype(numpy.float64)


def layer_norm_forward(x: Any, weight: Any, bias: Any, eps: float) -> tuple:
    """x: (M, D) with M, D > 0, weight, bias: (D,) or None -> (y: (M, D), saved for ``layer_norm_backward``)."""
    x = kernel_ready(x)
    m, d = x.shape
    gamma = _affine64(weight, d, 1.0)
    y = numpy.empty_like(x)
    mean, inv_std = numpy.empty(m), numpy.empty(m)
    with _ThreadsFor(x):
        _layer_norm_rows(x, gamma, _affine64(bias, d, 0.0), eps, mean, inv_std, y)
    # X, not X̂: X is the layer's input and alive anyway; X̂ would be another (M, D) array.
    return y, (x, mean, inv_std, gamma)


def layer_norm_backward(saved: tuple, grad_output: Any, needs_grad: tuple) -> tuple:
    """dY: (M, D) -> (dX: (M, D), dγ: (D,), dβ: (D,)), None where ``needs_grad`` (three bools) says
    not needed (one pass computes dγ and dβ together when either is asked for)."""
    x, mean, inv_std, gamma = saved
    needs_x, needs_weight, needs_bias = needs_grad
    grad_y = kernel_ready(grad_output)
    m, d = x.shape
    rows = block_rows(d)
    want_columns = bool(needs_weight or needs_bias)
    blocks = (m + rows - 1) // rows if want_columns else 0
    block_dot, block_sum = numpy.zeros((blocks, d)), numpy.zeros((blocks, d))
    grad_x = None
    if needs_x:
        # A copy made by kernel_ready is ours to overwrite; the dY we were given never is.
        grad_x = grad_y if grad_y is not grad_output else numpy.empty_like(grad_y)
    with _ThreadsFor(x):
        _layer_norm_gradients(x, mean, inv_std, gamma, grad_y, rows, bool(needs_x), want_columns,
                              block_dot, block_sum, grad_x if needs_x else grad_y)
    dtype = x.dtype
    # Summed down axis 0 in block order: the same result for every thread count.
    return (grad_x,
            block_dot.sum(axis=0).astype(dtype) if needs_weight else None,
            block_sum.sum(axis=0).astype(dtype) if needs_bias else None)


def threading_layer() -> str | None:
    """numba's threading layer ('omp', 'tbb' or 'workqueue'), or None before any kernel ran."""
    try:
        return numba.threading_layer()
    except ValueError:  # not initialised yet
        return None


def compile_for(op: str, dtype: Any) -> None:
    """Compile (or load from numba's cache) ``op``'s kernels for ``dtype`` by running them on a
    tiny input: each op's on its first use only, so a net without layer norm never compiles its.

    The calls go through the functions above, so the compiled signatures are
    exactly the ones real calls use; a failure surfaces here, where
    ``minigraph.kernels`` turns it into a warning and the formula path.
    """
    ones, zeros = numpy.ones(1, dtype=dtype), numpy.zeros(1, dtype=dtype)
    if op == "batch_norm":
        x = numpy.array([[0.0], [1.0]], dtype=dtype)
        y, _, _, saved, _ = batch_norm_forward(x, ones, zeros, 1e-5, 0)
        batch_norm_backward(saved, y, 0, (True, True, True))
        batch_norm_eval_forward(x, ones, zeros, zeros, ones)
    elif op == "layer_norm":
        rows = numpy.array([[0.0, 1.0]], dtype=dtype)  # one row of D = 2
        y, saved = layer_norm_forward(rows, ones.repeat(2), zeros.repeat(2), 1e-5)
        layer_norm_backward(saved, y, (True, True, True))
    else:
        raise ValueError(f"compile_for: no kernels for op {op!r}")
