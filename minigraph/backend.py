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
