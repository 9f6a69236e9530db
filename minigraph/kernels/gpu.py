"""Batch norm fused for CuPy arrays: CUDA kernels that read the data twice in each direction.

The math is the formula path's (``minigraph/ops/batch_norm.py``, derived in
docs/batchnorm.md); that code stays the definition and tests hold these kernels
to it. The formula on CuPy launches about eight kernels over (N, p) per forward
and backward, each a full pass through device memory. Here:

    forward   1. partial statistics per tile of 32 columns × a chunk of rows -> (chunks, p) partials
              2. one block per column merges its partials -> μ, Σ(x − μ)², s, γ s
              3. Y = (X − 1μ) ⊙ 1(γ s) + 1β
    backward  1. partial Σ dY and Σ dY ⊙ (X − 1μ) per tile and chunk
              2. one block per column merges them -> dβ, dγ = s ⊙ Σ dY ⊙ Xc and dX's three coefficients
              3. dX = 1(γ s) ⊙ [dY − 1 dβ/N] − (X − 1μ) ⊙ 1(γ s² dγ/(N − ddof))

Steps 1 and 3 move the data; step 2 reads (chunks, p) float64 partials, 0.8% of the data's
bytes at 65536×512 (at most an eighth of it, for the smallest batches).

Layout: a block is 32 × 8 threads. Its 32 threads along x take 32 neighbouring columns, so each
warp reads one row's 32 consecutive elements (128 bytes of float32) at a time; its 8 threads
along y take every 8th row of the block's chunk. Every thread keeps its column's sums in
registers, and each thread's column parameters (μ, γ s ...) are loaded once. The chunks are
chosen from the shape alone (about 2048 blocks in all), never from the card. Measured on an
H100 (BENCHMARKS.md), this runs at 0.90 of a device-to-device copy's bandwidth at 65536×512;
a version with 16-byte accesses (4 float32 per thread) was no faster there and 9% slower at
1048576×64, so the kernels stay this simple.

The merge kernel of the forward also updates the running statistics, as the formula's
in-place array operations would (six small launches fewer per layer, which counts where a
step is launch-bound).

Accuracy: every sum accumulates in float64, and each element is computed in float64 and
rounded once to the array's dtype, as in ``kernels/cpu.py``. The variance never forms
E[x²] − E[x]²: each thread sums x − x₀ and (x − x₀)² shifted by its own first value x₀ (one
sample, so about one standard deviation from its mean, whatever the mean's size), and the
per-thread (count, mean, Σ(x − mean)²) are merged by the exact decomposition
Σ(x − μ)² = Σ_a + Σ_b + δ² n_a n_b / (n_a + n_b), δ = μ_b − μ_a.

Determinism: no atomics. Every merge runs in a fixed order that depends on the shape
alone, so results are bitwise the same on every run.

The forward saves X and μ, not Xc, as the CPU kernels do: X is alive anyway (it is the
layer's input), and recomputing X − 1μ costs one subtraction, not an (N, p) array.
"""

from __future__ import annotations

from typing import Any

import cupy
import numpy

# The same numbers as the CUDA source's #defines below.
TILE = 32  # columns per block: one warp reads 32 neighbouring elements of a row
LANES = 8  # threads per column in a block; a block is TILE × LANES = 256 threads
MERGE_THREADS = 128  # threads per column when the partials are merged (one block per column)
TARGET_BLOCKS = 2048  # enough to fill any current card several times over (an H100 holds ~1000 at once)

_SOURCE = r"""
#define TILE 32
#define LANES 8
#define MERGE_THREADS 128

// (count, mean, m2) += (n_b, mean_b, m2_b): Chan et al.'s merge of two groups' moments, exact in
// exact arithmetic (m2 is Σ(x − mean)²).
__device__ __forceinline__ void merge_moments(double &count, double &mean, double &m2,
                                              double n_b, double mean_b, double m2_b) {
    if (n_b == 0.0) return;
    if (count == 0.0) { count = n_b; mean = mean_b; m2 = m2_b; return; }
    double total = count + n_b;
    double delta = mean_b - mean;
    mean += delta * (n_b / total);
    m2 += m2_b + delta * delta * (count * (n_b / total));
    count = total;
}

// Rows [start, stop) of chunk blockIdx.y for this thread's column j (one of TILE of blockIdx.x).
__device__ __forceinline__ void chunk_rows(long long n, long long chunk_rows, long long &start, long long &stop) {
    start = (long long)blockIdx.y * chunk_rows;
    stop = min(n, start + chunk_rows);
}

// Step 1 of the forward: per (chunk, column), the count is implied by the shape; the mean and
// Σ(x − mean)² go to part_mean[chunk * p + j] and part_m2[chunk * p + j].
template <typename T>
__global__ void bn_statistics_partial(const T* __restrict__ x, long long n, long long p, long long rows,
                                      double* __restrict__ part_mean, double* __restrict__ part_m2) {
    __shared__ double s_count[LANES][TILE], s_mean[LANES][TILE], s_m2[LANES][TILE];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long j = (long long)blockIdx.x * TILE + tx;
    long long start, stop;
    chunk_rows(n, rows, start, stop);
    double count = 0.0, mean = 0.0, m2 = 0.0;
    long long i = start + ty;
    if (j < p && i < stop) {
        // Shifted by this thread's first value: no E[x²] − E[x]² cancellation for a large mean.
        const double shift = (double)x[i * p + j];
        double sum = 0.0, sum_sq = 0.0;
        #pragma unroll 4
        for (; i < stop; i += LANES) {
            const double d = (double)x[i * p + j] - shift;
            sum += d;
            sum_sq += d * d;
            count += 1.0;
        }
        mean = shift + sum / count;
        m2 = fmax(sum_sq - sum * (sum / count), 0.0);
    }
    s_count[ty][tx] = count; s_mean[ty][tx] = mean; s_m2[ty][tx] = m2;
    __syncthreads();
    if (ty == 0 && j < p) {
        for (int k = 1; k < LANES; ++k)  // in lane order: deterministic
            merge_moments(count, mean, m2, s_count[k][tx], s_mean[k][tx], s_m2[k][tx]);
        part_mean[(long long)blockIdx.y * p + j] = mean;
        part_m2[(long long)blockIdx.y * p + j] = m2;
    }
}

// Step 2 of the forward: block j merges column j's partials over the chunks, then writes
// stats[0..4][j] = μ, Σ(x − μ)², s = (Σ(x − μ)²/(N − ddof) + eps)^(−1/2), γ s, β.
// With running_mean / running_var (either may be null) it also updates them as the formula path's
// in-place CuPy operations do, rounding for rounding (no FMA: _rn intrinsics), which saves six launches:
// r = T(r · T(1 − momentum)), then r = T(double(r) + momentum · μ), and for the variance with
// var_factor = momentum / (N − 1) and Σ(x − μ)² in place of momentum and μ.
template <typename T>
__global__ void bn_statistics_merge(const double* __restrict__ part_mean, const double* __restrict__ part_m2,
                                    long long chunks, long long rows, long long n, long long p,
                                    const T* __restrict__ gamma, const T* __restrict__ beta,
                                    double eps, long long ddof, double* __restrict__ stats,
                                    T* __restrict__ running_mean, T* __restrict__ running_var,
                                    double momentum, double var_factor) {
    __shared__ double s_count[MERGE_THREADS], s_mean[MERGE_THREADS], s_m2[MERGE_THREADS];
    const int t = threadIdx.x;
    const long long j = blockIdx.x;
    double count = 0.0, mean = 0.0, m2 = 0.0;
    for (long long b = t; b < chunks; b += MERGE_THREADS) {
        const double in_chunk = (double)(min(n, (b + 1) * rows) - b * rows);
        merge_moments(count, mean, m2, in_chunk, part_mean[b * p + j], part_m2[b * p + j]);
    }
    s_count[t] = count; s_mean[t] = mean; s_m2[t] = m2;
    __syncthreads();
    for (int half = MERGE_THREADS / 2; half > 0; half >>= 1) {  // a fixed tree: deterministic
        if (t < half) {
            count = s_count[t]; mean = s_mean[t]; m2 = s_m2[t];
            merge_moments(count, mean, m2, s_count[t + half], s_mean[t + half], s_m2[t + half]);
            s_count[t] = count; s_mean[t] = mean; s_m2[t] = m2;
        }
        __syncthreads();
    }
    if (t == 0) {
        const double sum_sq = s_m2[0];
        const double inv_std = 1.0 / sqrt(sum_sq / (double)(n - ddof) + eps);
        stats[j] = s_mean[0];
        stats[p + j] = sum_sq;
        stats[2 * p + j] = inv_std;
        stats[3 * p + j] = (double)gamma[j] * inv_std;
        stats[4 * p + j] = (double)beta[j];
        const T keep = (T)(1.0 - momentum);
        if (running_mean != nullptr) {
            const T kept = running_mean[j] * keep;
            running_mean[j] = (T)__dadd_rn((double)kept, __dmul_rn(momentum, s_mean[0]));
        }
        if (running_var != nullptr) {
            const T kept = running_var[j] * keep;
            running_var[j] = (T)__dadd_rn((double)kept, __dmul_rn(var_factor, sum_sq));
        }
    }
}

// Step 3 of the forward (and the evaluation-mode forward): y = (x − mean) · scale + shift.
template <typename T>
__global__ void bn_normalise(const T* __restrict__ x, long long n, long long p, long long rows,
                             const double* __restrict__ mean, const double* __restrict__ scale,
                             const double* __restrict__ shift, T* __restrict__ y) {
    const long long j = (long long)blockIdx.x * TILE + threadIdx.x;
    if (j >= p) return;
    long long start, stop;
    chunk_rows(n, rows, start, stop);
    const double m = mean[j], a = scale[j], c = shift[j];
    #pragma unroll 4
    for (long long i = start + threadIdx.y; i < stop; i += LANES)
        y[i * p + j] = (T)(((double)x[i * p + j] - m) * a + c);
}

// Step 1 of the backward: per (chunk, column), Σ dY and Σ dY ⊙ (X − 1μ).
template <typename T>
__global__ void bn_gradient_partial(const T* __restrict__ x, const T* __restrict__ grad_y, long long n,
                                    long long p, long long rows, const double* __restrict__ mean,
                                    double* __restrict__ part_sum, double* __restrict__ part_dot) {
    __shared__ double s_sum[LANES][TILE], s_dot[LANES][TILE];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long j = (long long)blockIdx.x * TILE + tx;
    long long start, stop;
    chunk_rows(n, rows, start, stop);
    double sum = 0.0, dot = 0.0;
    if (j < p) {
        const double m = mean[j];
        #pragma unroll 4
        for (long long i = start + ty; i < stop; i += LANES) {
            const double g = (double)grad_y[i * p + j];
            sum += g;
            dot += g * ((double)x[i * p + j] - m);
        }
    }
    s_sum[ty][tx] = sum; s_dot[ty][tx] = dot;
    __syncthreads();
    if (ty == 0 && j < p) {
        for (int k = 1; k < LANES; ++k) { sum += s_sum[k][tx]; dot += s_dot[k][tx]; }
        part_sum[(long long)blockIdx.y * p + j] = sum;
        part_dot[(long long)blockIdx.y * p + j] = dot;
    }
}

// Step 2 of the backward: block j sums column j's partials, then writes dβ and dγ (in T) and
// coef[0..2][j] = γ s, dβ/N, γ s · s · dγ/(N − ddof), the coefficients of dX.
template <typename T>
__global__ void bn_gradient_merge(const double* __restrict__ part_sum, const double* __restrict__ part_dot,
                                  long long chunks, long long n, long long p, long long ddof,
                                  const double* __restrict__ inv_std, const T* __restrict__ gamma,
                                  T* __restrict__ grad_gamma, T* __restrict__ grad_beta,
                                  double* __restrict__ coef) {
    __shared__ double s_sum[MERGE_THREADS], s_dot[MERGE_THREADS];
    const int t = threadIdx.x;
    const long long j = blockIdx.x;
    double sum = 0.0, dot = 0.0;
    for (long long b = t; b < chunks; b += MERGE_THREADS) {
        sum += part_sum[b * p + j];
        dot += part_dot[b * p + j];
    }
    s_sum[t] = sum; s_dot[t] = dot;
    __syncthreads();
    for (int half = MERGE_THREADS / 2; half > 0; half >>= 1) {
        if (t < half) { s_sum[t] += s_sum[t + half]; s_dot[t] += s_dot[t + half]; }
        __syncthreads();
    }
    if (t == 0) {
        const double s = inv_std[j];
        const double d_beta = s_sum[0];
        const double d_gamma = s * s_dot[0];
        const double scale = (double)gamma[j] * s;
        grad_beta[j] = (T)d_beta;
        grad_gamma[j] = (T)d_gamma;
        coef[j] = scale;
        coef[p + j] = d_beta / (double)n;
        coef[2 * p + j] = scale * s * d_gamma / (double)(n - ddof);
    }
}

// Step 3 of the backward: dX = a (dY − b) − (X − μ) c, per column (a, b, c) = coef[0..2][j].
template <typename T>
__global__ void bn_input_gradient(const T* __restrict__ x, const T* __restrict__ grad_y, long long n,
                                  long long p, long long rows, const double* __restrict__ mean,
                                  const double* __restrict__ coef, T* __restrict__ grad_x) {
    const long long j = (long long)blockIdx.x * TILE + threadIdx.x;
    if (j >= p) return;
    long long start, stop;
    chunk_rows(n, rows, start, stop);
    const double m = mean[j], a = coef[j], b = coef[p + j], c = coef[2 * p + j];
    #pragma unroll 4
    for (long long i = start + threadIdx.y; i < stop; i += LANES)
        grad_x[i * p + j] = (T)(a * ((double)grad_y[i * p + j] - b) - ((double)x[i * p + j] - m) * c);
}
"""

KERNELS = ("bn_statistics_partial", "bn_statistics_merge", "bn_normalise", "bn_gradient_partial",
           "bn_gradient_merge", "bn_input_gradient")
_C_TYPES = {numpy.dtype(numpy.float32): "float", numpy.dtype(numpy.float64): "double"}
DTYPES = tuple(_C_TYPES)
_module: Any = None  # the compiled cupy.RawModule, once compile_for ran
_functions: dict[tuple[str, numpy.dtype], Any] = {}  # (kernel, dtype) -> its cupy.RawKernel


def _name(kernel: str, dtype: numpy.dtype) -> str:
    """The C++ name of ``kernel``'s instantiation for ``dtype``, as NVRTC is asked for it."""
    return f"{kernel}<{_C_TYPES[dtype]}>"


def compile_for(op: str, dtype: Any) -> None:
    """Compile (or load from CuPy's kernel cache) ``op``'s kernels for ``dtype``, and run them once on a
    tiny input so that a failure surfaces here, where ``minigraph.kernels`` turns it into a warning."""
    global _module
    if op != "batch_norm":
        raise ValueError(f"compile_for: no GPU kernels for op {op!r}")
    if _module is None:
        names = [_name(k, d) for k in KERNELS for d in DTYPES]
        # NVRTC compiles every instantiation at once; CuPy caches the binary on disk.
        _module = cupy.RawModule(code=_SOURCE, options=("--std=c++17",), name_expressions=names)
    dtype = numpy.dtype(dtype)
    for kernel in KERNELS:
        _functions[kernel, dtype] = _module.get_function(_name(kernel, dtype))
    x = cupy.asarray([[0.0], [1.0]], dtype=dtype)
    ones, zeros = cupy.ones(1, dtype=dtype), cupy.zeros(1, dtype=dtype)
    y, _, _, saved, _ = batch_norm_forward(x, ones, zeros, 1e-5, 0, (zeros.copy(), ones.copy(), 0.1))
    batch_norm_backward(saved, y, 0, (True, True, True))
    batch_norm_eval_forward(x, ones, zeros, zeros, ones)


def layout(n: int, p: int) -> tuple[tuple[int, int], int, int]:
    """(grid, row chunks, rows per chunk) for x: (N, p): a function of the shape alone, never of the card.

    About TARGET_BLOCKS blocks of TILE columns × one chunk of rows, each thread of a block
    taking at least 4 rows (LANES threads share a chunk's rows), so that a thread's sums
    amortise its block's merge.
    """
    tiles = -(-p // TILE)
    chunks = max(1, min(-(-TARGET_BLOCKS // tiles), n // (4 * LANES)))
    rows = -(-n // chunks)
    chunks = -(-n // rows)
    return (tiles, chunks), chunks, rows


def _ready(a: Any) -> Any:
    """``a`` C-contiguous (the kernels index it as rows of p), copied only if it is not."""
    return a if a.flags.c_contiguous else cupy.ascontiguousarray(a)


def _scalars(*values: int) -> tuple:
    """Python ints as the kernels' ``long long`` arguments (CuPy would guess their C type otherwise)."""
    return tuple(numpy.int64(v) for v in values)


def batch_norm_forward(x: Any, gamma: Any, beta: Any, eps: float, ddof: int, running: tuple | None = None) -> tuple:
    """Training-mode forward: x: (N, p), gamma, beta: (p,) -> (y: (N, p), mean: (p,), sum_sq: (p,), saved,
    updated).

    ``mean`` and ``sum_sq`` = Σ(x − μ)² are float64; ``saved`` is what ``batch_norm_backward``
    takes. ``running`` = (running_mean or None, running_var or None, momentum): the (p,)
    statistics, which the merge kernel updates in place exactly as the formula path would, so
    ``updated`` is True; False where one is a strided view, left to the caller (as kernels/cpu.py
    leaves every update).
    """
    x, gamma, beta = _ready(x), _ready(gamma), _ready(beta)
    n, p = x.shape
    dtype = x.dtype
    y = cupy.empty_like(x)
    grid, chunks, rows = layout(n, p)
    partials = cupy.empty((2, chunks, p), dtype=numpy.float64)
    stats = cupy.empty((5, p), dtype=numpy.float64)  # μ, Σ(x − μ)², s, γ s, β
    block = (TILE, LANES)
    _functions["bn_statistics_partial", dtype](grid, block, (x, *_scalars(n, p, rows), partials[0], partials[1]))
    running_mean, running_var, momentum = running if running is not None else (None, None, 0.0)
    # The kernel writes contiguous (p,) arrays of x's dtype (which the op has checked); a strided view
    # is left to the caller's update.
    updated = all(a is None or a.flags.c_contiguous for a in (running_mean, running_var))
    if not updated:
        running_mean = running_var = None
    _functions["bn_statistics_merge", dtype](
        (p,), (MERGE_THREADS,),
        (partials[0], partials[1], *_scalars(chunks, rows, n, p), gamma, beta, numpy.float64(eps),
         numpy.int64(ddof), stats, running_mean, running_var, numpy.float64(momentum),
         numpy.float64(momentum / (n - 1))))
    _functions["bn_normalise", dtype](grid, block, (x, *_scalars(n, p, rows), stats[0], stats[3], stats[4], y))
    return y, stats[0], stats[1], (stats[0], stats[2], x, gamma), updated


def batch_norm_backward(saved: tuple, grad_output: Any, ddof: int, needs_grad: tuple) -> tuple:
    """Training-mode backward: dY: (N, p) -> (dX: (N, p), dγ: (p,), dβ: (p,)), None where not needed."""
    mean, inv_std, x, gamma = saved
    needs_x, needs_gamma, needs_beta = needs_grad
    grad_y = _ready(grad_output)
    n, p = x.shape
    dtype = x.dtype
    grad_x = cupy.empty_like(x) if needs_x else None  # a new array: the dY we were given is never written
    grid, chunks, rows = layout(n, p)
    block = (TILE, LANES)
    partials = cupy.empty((2, chunks, p), dtype=numpy.float64)
    coef = cupy.empty((3, p), dtype=numpy.float64)
    grads = cupy.empty((2, p), dtype=dtype)  # dγ, dβ
    _functions["bn_gradient_partial", dtype](
        grid, block, (x, grad_y, *_scalars(n, p, rows), mean, partials[0], partials[1]))
    _functions["bn_gradient_merge", dtype](
        (p,), (MERGE_THREADS,),
        (partials[0], partials[1], *_scalars(chunks, n, p, ddof), inv_std, gamma, grads[0], grads[1], coef))
    if needs_x:
        _functions["bn_input_gradient", dtype](
            grid, block, (x, grad_y, *_scalars(n, p, rows), mean, coef, grad_x))
    return grad_x, grads[0] if needs_gamma else None, grads[1] if needs_beta else None


def batch_norm_eval_forward(x: Any, gamma: Any, beta: Any, mean: Any, inv_std: Any) -> Any:
    """Evaluation-mode forward with fixed statistics: y = (x − 1μ) ⊙ 1(γ s) + 1β, x: (N, p)."""
    x = _ready(x)
    n, p = x.shape
    y = cupy.empty_like(x)
    grid, _, rows = layout(n, p)
    columns = cupy.stack([mean.astype(numpy.float64), gamma * inv_std.astype(numpy.float64),
                          beta.astype(numpy.float64)])
    _functions["bn_normalise", x.dtype](grid, (TILE, LANES),
                                        (x, *_scalars(n, p, rows), columns[0], columns[1], columns[2], y))
    return y
