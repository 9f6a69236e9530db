"""The backend switch: NumPy on the CPU, CuPy on a GPU.

Every op is written once against ``xp``, the array module of its inputs, which
``get_array_module`` returns. This module also decides which device new
tensors land on (``MINIGRAPH_DEVICE=cpu|gpu|auto``) and moves arrays between
devices.
"""

from __future__ import annotations

import functools
import os
import sys
from types import ModuleType
from typing import Any

import numpy

from . import checks

DEVICES = ("cpu", "gpu")
_ENV_VAR = "MINIGRAPH_DEVICE"


def _loaded_cupy() -> ModuleType | None:
    # A CuPy array can only exist if cupy was imported already, so looking in
    # sys.modules keeps the CPU-only hot path free of any import attempt.
    return sys.modules.get("cupy")


def is_gpu_array(array: Any) -> bool:
    """True when ``array`` is a CuPy array."""
    cp = _loaded_cupy()
    return cp is not None and isinstance(array, cp.ndarray)


def get_array_module(*arrays: Any) -> ModuleType:
    """The array module (``numpy`` or ``cupy``) that owns ``arrays``.

    CuPy wins when any argument is a CuPy array; everything else (NumPy arrays,
    Python scalars, None) counts as NumPy.
    """
    cp = _loaded_cupy()
    if cp is not None:
        for a in arrays:
            if isinstance(a, cp.ndarray):
                return cp
    return numpy


def device_of(array: Any) -> str:
    """``'gpu'`` for a CuPy array, ``'cpu'`` otherwise."""
    return "gpu" if is_gpu_array(array) else "cpu"


@functools.lru_cache(maxsize=None)
def _probe_gpu() -> tuple[bool, str]:
    """Try CuPy once: (usable, why not). Cached; ``is_gpu_available.cache_clear`` resets it."""
    try:
        import cupy
    except Exception as exc:  # ImportError, but also broken wheels raising anything
        return False, f"cupy cannot be imported ({type(exc).__name__}: {exc})"
    try:
        if not cupy.cuda.is_available():
            return False, "cupy is installed but reports no CUDA device"
        # With no driver, `import cupy` succeeds and the first allocation is what
        # fails (CUDARuntimeError), so make one.
        probe = cupy.arange(2, dtype=cupy.float32) + 1
        cupy.cuda.Stream.null.synchronize()
        if float(probe.sum()) != 3.0:
            return False, "cupy computed a wrong result on the device"
    except Exception as exc:
        return False, f"cupy cannot use the GPU ({type(exc).__name__}: {exc})"
    return True, ""


def is_gpu_available() -> bool:
    """True when CuPy imports, sees a CUDA device and can allocate on it."""
    return _probe_gpu()[0]


is_gpu_available.cache_clear = _probe_gpu.cache_clear  # type: ignore[attr-defined]


def gpu_unavailable_reason() -> str:
    """Why the GPU cannot be used ('' when it can)."""
    return _probe_gpu()[1]


def default_device() -> str:
    """The device new tensors go to: ``MINIGRAPH_DEVICE`` (cpu, gpu, or auto).

    ``auto`` (the default) picks the GPU when it is usable and the CPU
    otherwise. ``gpu`` without a usable GPU raises RuntimeError saying why.
    """
    choice = os.environ.get(_ENV_VAR, "auto").strip().lower() or "auto"
    if choice == "auto":
        return "gpu" if is_gpu_available() else "cpu"
    if choice == "cpu":
        return "cpu"
    if choice == "gpu":
        require_gpu(f"{_ENV_VAR}=gpu")
        return "gpu"
    raise ValueError(f"{_ENV_VAR} must be one of cpu, gpu, auto; got {choice!r}")


def require_gpu(what: str) -> None:
    """Raise RuntimeError naming ``what`` when the GPU cannot be used."""
    usable, reason = _probe_gpu()
    if not usable:
        raise RuntimeError(
            f"{what} needs a GPU, but {reason}. Install the 'cuda12' or 'cuda13' extra "
            f"on a machine with an NVIDIA driver, or use the CPU ({_ENV_VAR}=cpu)."
        )


def check_device(device: str) -> str:
    """Validate a device name, resolving ``'auto'``."""
    if device == "auto":
        return default_device()
    if device not in DEVICES:
        raise ValueError(f"device must be one of 'cpu', 'gpu', 'auto'; got {device!r}")
    return device


def placed(data: Any, device: str | None) -> Any:
    """Where data goes under minigraph's one device rule: ``device`` if given; otherwise an array
    already on the GPU stays there, and host data (NumPy arrays, lists, numbers) goes to
    ``default_device()``. The GPU is never left implicitly: device data reaches the host only
    when asked (``device='cpu'``, ``.to('cpu')``, ``.numpy()``)."""
    if device is None:
        if is_gpu_array(data):
            return data
        device = default_device()
    return to_device(data, device)


def to_device(array: Any, device: str) -> Any:
    """Return ``array`` on ``device`` ('cpu', 'gpu' or 'auto'); no copy if already there."""
    device = check_device(device)
    if device == "cpu":
        if is_gpu_array(array):
            return array.get()
        return numpy.asarray(array)
    require_gpu("to_device(..., 'gpu')")
    import cupy

    return cupy.asarray(array)


def join_device(owner: str, name: str, array: Any, device: str) -> Any:
    """A raw data array given to an op (indices, labels, a mask) on the device of its tensor.

    The device rule for arrays that are data, not operands: host arrays move to ``device``
    (no copy on the CPU); an array on the GPU stays there, so with a tensor on the CPU it is a
    TypeError naming ``owner`` and ``name``.
    """
    if is_gpu_array(array):
        if device == "gpu":
            return array
        raise TypeError(f"{owner}: {name} is on 'gpu' but the tensor is on 'cpu'; expected both on "
                        f"one device. Bring {name} to the host ({name}.get()) or move the tensor "
                        f"(tensor.to('gpu'))")
    return to_device(array, device)


def device_of_generator(generator: Any, owner: str = "", name: str = "generator") -> str:
    """``'cpu'`` for a ``numpy.random.Generator``, ``'gpu'`` for a ``cupy.random.Generator``;
    a TypeError naming ``owner`` and the argument ``name`` for anything else."""
    if isinstance(generator, numpy.random.Generator):
        return "cpu"
    cp = _loaded_cupy()
    if cp is not None and isinstance(generator, cp.random.Generator):
        return "gpu"
    raise TypeError(f"{owner + ': ' if owner else ''}got {name}={generator!r}, a "
                    f"{type(generator).__name__}; expected a random generator, "
                    f"numpy.random.default_rng(seed) or cupy.random.default_rng(seed)")


# Default random generators, one per array module, for draws given no seed or generator (Linear's
# initial weights, dropout's masks). None: fresh entropy; manual_seed sets it for all modules.
_seed: int | None = None
_default_generators: dict[str, Any] = {}


def default_generator(xp: ModuleType) -> Any:
    """The generator of ``xp`` (numpy or cupy) that draws when no ``rng``/``generator`` is given:
    one per array module, made on first use from ``manual_seed``'s seed, or from fresh entropy."""
    generator = _default_generators.get(xp.__name__)
    if generator is None:
        generator = _default_generators[xp.__name__] = xp.random.default_rng(_seed)
    return generator


def manual_seed(seed: int) -> None:
    """Seed minigraph's default generators on every device, as ``torch.manual_seed`` does.

    After it, layers made without ``rng`` (Linear's weights, Dropout's masks) and ``dropout``
    without ``generator`` repeat from run to run. NumPy's global ``numpy.random.seed`` does not
    reach them. Linear draws on the host whatever its device; dropout masks on the CPU and the
    GPU come from different streams (each library has its own generator).
    """
    global _seed
    _seed = checks.integer("manual_seed", "seed", seed, low=0)
    _default_generators.clear()  # remade from the seed on their next use


def can_update_in_place(array: Any) -> bool:
    """True when writing into ``array`` in place is safe: it is writable and no two of its
    elements share memory.

    NumPy marks read-only arrays (``flags.writeable``); CuPy has no such flag
    (cupy/_core/flags.pyx) and its ``broadcast_to`` views accept writes through zero
    strides, so an in-place update there would silently add every row's step to one
    element. The zero-stride test covers both libraries.
    """
    if not getattr(array.flags, "writeable", True):
        return False
    # An empty array has zero strides too (NumPy gives (0, 0) for (2, 0)), but no elements to share.
    return array.size == 0 or all(stride != 0 or size <= 1
                                  for stride, size in zip(array.strides, array.shape))


# --- per-library spellings of the few primitives whose fast form differs ----------------------
def column_sums(a: Any) -> Any:
    """1ᵀA for A: (N, p) -> (p,), as a matrix-vector product.

    BLAS keeps several partial sums per column (and may use several threads), so
    on NumPy this is both faster and more accurate than ``a.sum(axis=0)``, which
    adds the rows one after another; cuBLAS's GEMV is as good a spelling on CuPy.
    """
    return get_array_module(a).ones(a.shape[0], dtype=a.dtype) @ a


def column_dot(a: Any, b: Any) -> Any:
    """1ᵀ(A ⊙ B) for A, B: (N, p) -> (p,): per-column sums of an elementwise product.

    NumPy: ``einsum`` runs one fused loop and never forms A ⊙ B. CuPy: ``einsum``
    would become a batched matmul with two (N, p) copies, so the product is formed
    once and reduced (one elementwise kernel, one reduction kernel).
    """
    if is_gpu_array(a):
        return (a * b).sum(axis=0)
    return numpy.einsum("ij,ij->j", a, b)


_SQUARES_BLOCK = 4096


def sum_of_squares(a: Any) -> Any:
    """Σ aᵢ² over a 1-D array a: (n,), as a 0-d array of a's dtype.

    NumPy's float32 ``dot`` keeps a few running sums in float32, so its error grows with
    n (2.5e-4 relative at 4e7 normal values). Here rows of 4096 are dotted (cheap, accurate)
    and the row sums added in float64: error ~5e-8 at every size, for 0.15-3 ms more from a
    million elements up (BENCHMARKS.md). cuBLAS's dot already reduces as a tree, so CuPy keeps it.
    """
    if is_gpu_array(a) or a.size <= _SQUARES_BLOCK:
        return get_array_module(a).asarray(a @ a, dtype=a.dtype)
    whole = a.size - a.size % _SQUARES_BLOCK
    rows = a[:whole].reshape(-1, _SQUARES_BLOCK)
    tail = a[whole:]
    total = numpy.einsum("ij,ij->i", rows, rows).sum(dtype=numpy.float64) + float(tail @ tail)
    return numpy.asarray(total, dtype=a.dtype)
