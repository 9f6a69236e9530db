"""A CPU STAND-IN FOR CUPY, FOR TESTS ONLY. IT IS NOT A GPU, AND NOTHING MEASURED ON IT IS A GPU RESULT.

Putting this folder first on the path makes ``import cupy`` find this module::

    PYTHONPATH=tests/standin python -m pytest -q        # every GPU test variant runs here
    PYTHONPATH=tests/standin python examples/train.py --device gpu

Its arrays are NumPy arrays inside a wrapper class, so the numbers are NumPy's. What it models is
what CuPy 14 *refuses*, so that code which only works because NumPy converts silently fails on a
CPU machine, in CI, instead of on its first contact with a GPU. Each rule cites CuPy's source
(github.com/cupy/cupy, read at commit 6b6d956):

* ``ndarray`` is its own type, not a ``numpy.ndarray``. Implicit conversion to NumPy raises
  TypeError: ``numpy.asarray(x)`` (``ndarray.__array__``, cupy/_core/core.pyx), NumPy arrays as
  operands of its operators and ufuncs (``_preprocess_arg`` -> ``CScalar``,
  cupy/_core/_kernel.pyx; ``__array_ufunc__``, core.pyx), and ``x[...] = numpy_array``
  (``_scatter_op`` refuses CPU arrays, gh-2079, cupy/_core/_routines_indexing.pyx).
  ``.get()`` is the explicit way back to the host.
* NumPy ufuncs and functions given only stand-in arrays and scalars dispatch to the stand-in, as
  CuPy's ``__array_ufunc__`` / ``__array_function__`` dispatch to CuPy (core.pyx).
* ``flags`` has only ``c_contiguous``, ``f_contiguous`` and ``owndata`` (cupy/_core/flags.pyx):
  no ``writeable``. ``broadcast_to`` returns a writable zero-stride view, as CuPy's does.
* Reductions return 0-d arrays, never NumPy scalars (``sum``, ``dot``, ``max`` ...).
* ``cuda.is_available()``, ``cuda.Device().synchronize()``, ``cuda.Stream.null.synchronize()``,
  ``cuda.Event`` / ``cuda.get_elapsed_time``, ``cuda.runtime.getDeviceProperties`` and the
  memory pools answer as CuPy's do (the device's name says it is this stand-in).

It does not model: streams running asynchronously, memory limits, kernels (``ElementwiseKernel``
and friends are absent, so code needing them must check), out-of-bounds indices wrapping around,
or speed.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy

__version__ = "14.0.0+standin"  # CuPy 14's rules; the "+standin" says what this is
IS_STANDIN = True

_SCALARS = (int, float, bool, complex, numpy.generic)
# Attributes of numpy.ndarray that cupy.ndarray does not have, or that would hand out host memory.
_NOT_ON_CUPY = {"ctypes", "data", "setflags", "tofile", "dump", "dumps", "byteswap", "newbyteorder",
                "getfield", "setfield", "resize", "itemset", "ptp", "to_device", "device"}


def _refuse_host(value: Any) -> None:
    raise TypeError(
        f"Unsupported type {type(value)} (CuPy stand-in: CuPy refuses NumPy arrays here; move "
        f"them to the device first with cupy.asarray, or use .get() to bring device data back)"
    )


def _unwrap(value: Any) -> Any:
    """Stand-in arrays -> their NumPy array; NumPy arrays -> TypeError; containers recursively."""
    if type(value) is ndarray:
        return value._array
    if isinstance(value, numpy.ndarray):
        _refuse_host(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v) for v in value)
    return value


def _wrap(value: Any) -> Any:
    """NumPy arrays and NumPy scalars (what NumPy reductions return) -> stand-in arrays."""
    if isinstance(value, numpy.ndarray):
        return ndarray._of(value)
    if isinstance(value, numpy.generic):
        return ndarray._of(numpy.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _on_device(func: Any) -> Any:
    """``func`` running on unwrapped arguments, returning wrapped results; ``out=`` is honoured."""

    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out")
        if out is not None and type(out) is not ndarray:
            raise TypeError("Output arguments type must be cupy.ndarray (CuPy stand-in)")
        result = func(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()})
        return out if out is not None else _wrap(result)

    return call


class _Flags:
    """cupy/_core/flags.pyx: three flags, no ``writeable``."""

    __slots__ = ("c_contiguous", "f_contiguous", "owndata")

    def __init__(self, array: numpy.ndarray) -> None:
        self.c_contiguous = bool(array.flags.c_contiguous)
        self.f_contiguous = bool(array.flags.f_contiguous)
        self.owndata = bool(array.flags.owndata)


class ndarray:
    """A stand-in device array: a NumPy array that refuses to be mixed with NumPy arrays."""

    __slots__ = ("_array", "__weakref__")
    __array_priority__ = 100  # as cupy.ndarray: NumPy operators defer to ours
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, shape: Any, dtype: Any = float, order: str = "C") -> None:
        self._array = numpy.empty(shape, dtype=dtype, order=order)

    @classmethod
    def _of(cls, array: numpy.ndarray) -> "ndarray":
        self = object.__new__(cls)
        self._array = array
        return self

    # --- the host boundary ----------------------------------------------------------------
    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` "
                        "to construct a NumPy array explicitly. (CuPy stand-in)")

    def get(self, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True) -> numpy.ndarray:
        """A host (NumPy) copy, as ``cupy.ndarray.get``."""
        if out is not None:
            out[...] = self._array
            return out
        return numpy.array(self._array, order=order, copy=True)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        # core.pyx: NumPy ufuncs run as CuPy's when every operand is a CuPy array or a scalar;
        # a NumPy array among them is an implicit host->device copy, which CuPy refuses.
        func = getattr(ufunc, method) if method != "__call__" else ufunc
        if "out" in kwargs:
            (out,) = kwargs["out"]
            kwargs["out"] = out
        return _on_device(func)(*inputs, **kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        return _on_device(func)(*args, **kwargs)

    # --- attributes: NumPy's, minus what CuPy lacks ---------------------------------------
    @property
    def flags(self) -> _Flags:
        return _Flags(self._array)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in _NOT_ON_CUPY:
            # Dunders (__array_interface__, __array_struct__ ...) would let NumPy read host memory.
            raise AttributeError(f"'cupy.ndarray' (stand-in) has no attribute {name!r}")
        value = getattr(self._array, name)
        return _on_device(value) if callable(value) else _wrap(value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_array":
            object.__setattr__(self, name, value)
        elif name in ("shape", "strides", "dtype"):
            setattr(self._array, name, value)
        else:
            raise AttributeError(f"'cupy.ndarray' (stand-in) attribute {name!r} is not writable")

    def __repr__(self) -> str:
        return "array(" + numpy.array2string(self._array, separator=", ", prefix="array(") + ")"

    __str__ = __repr__

    # --- container protocol -----------------------------------------------------------------
    def __len__(self) -> int:
        if self._array.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._array)

    def __iter__(self) -> Any:
        if self._array.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._array)))

    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._array[_index(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._array[_index(key)] = _unwrap(value)

    # --- conversions (each one a device->host sync on CuPy) ------------------------------------
    def __float__(self) -> float:
        return float(self._array)

    def __int__(self) -> int:
        return int(self._array)

    def __complex__(self) -> complex:
        return complex(self._array)

    def __bool__(self) -> bool:
        return bool(self._array)

    def __format__(self, spec: str) -> str:
        return format(self._array, spec) if self._array.ndim else repr(self)


def _index(key: Any) -> Any:
    """Index arrays may be stand-in arrays, NumPy integer arrays (CuPy copies them) or lists."""
    if type(key) is ndarray:
        return key._array
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    return key


def _binary(name: str) -> Any:
    def op(self: ndarray, other: Any) -> Any:
        if type(other) is not ndarray and not isinstance(other, _SCALARS):
            if isinstance(other, numpy.ndarray):
                _refuse_host(other)
            return NotImplemented
        return _wrap(getattr(self._array, name)(_unwrap(other)))

    op.__name__ = name
    return op


def _inplace(name: str) -> Any:
    def op(self: ndarray, other: Any) -> Any:
        if type(other) is not ndarray and not isinstance(other, _SCALARS):
            _refuse_host(other)
        getattr(self._array, name)(_unwrap(other))
        return self

    op.__name__ = name
    return op


def _unary(name: str) -> Any:
    def op(self: ndarray) -> Any:
        return _wrap(getattr(self._array, name)())

    op.__name__ = name
    return op


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or",
              "xor", "lshift", "rshift", "divmod"):
    setattr(ndarray, f"__{_name}__", _binary(f"__{_name}__"))
    setattr(ndarray, f"__r{_name}__", _binary(f"__r{_name}__"))
    if _name != "divmod":
        setattr(ndarray, f"__i{_name}__", _inplace(f"__i{_name}__"))
for _name in ("lt", "le", "eq", "ne", "gt", "ge"):
    setattr(ndarray, f"__{_name}__", _binary(f"__{_name}__"))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_name}__", _unary(f"__{_name}__"))


# --- the module's functions ---------------------------------------------------------------------
def asarray(a: Any, dtype: Any = None, order: Any = None) -> ndarray:
    """Host data (NumPy arrays, lists, numbers) is copied to the "device"; device arrays pass through."""
    if type(a) is ndarray:
        return a if dtype is None or a.dtype == numpy.dtype(dtype) else a.astype(dtype)
    return ndarray._of(numpy.array(a, dtype=dtype, order=order or "K", copy=True))


def array(a: Any, dtype: Any = None, copy: bool = True, order: str = "K", ndmin: int = 0) -> ndarray:
    source = a._array if type(a) is ndarray else a
    return ndarray._of(numpy.array(source, dtype=dtype, copy=True, order=order, ndmin=ndmin))


ascontiguousarray = _on_device(numpy.ascontiguousarray)


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None) -> numpy.ndarray:
    return a.get(order=order, out=out) if type(a) is ndarray else numpy.asarray(a, order=order)


def get_array_module(*args: Any) -> Any:
    import sys

    return sys.modules[__name__] if any(type(a) is ndarray for a in args) else numpy


def broadcast_to(a: ndarray, shape: Any) -> ndarray:
    # CuPy's broadcast view has zero strides and accepts writes (array.view() with zero strides
    # set, cupy/_core/_routines_manipulation.pyx; no writeable flag in cupy/_core/flags.pyx);
    # NumPy's is read-only.
    # The strides are laid over the original array: as_strided over NumPy's read-only view would
    # stay read-only whatever ``writeable`` says.
    base = _unwrap(a)
    view = numpy.broadcast_to(base, shape)
    return ndarray._of(numpy.lib.stride_tricks.as_strided(base, view.shape, view.strides))


class _Ufunc:
    """A NumPy ufunc on stand-in arrays, with ``.at`` and ``.reduce`` (cupy.add.at exists since CuPy 13)."""

    def __init__(self, ufunc: Any) -> None:
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _on_device(self._ufunc)(*args, **kwargs)

    def at(self, a: ndarray, indices: Any, b: Any = None) -> None:
        self._ufunc.at(_unwrap(a), _index(indices), *(() if b is None else (_unwrap(b),)))

    def reduce(self, *args: Any, **kwargs: Any) -> Any:
        return _on_device(self._ufunc.reduce)(*args, **kwargs)


@functools.lru_cache(maxsize=None)
def __getattr__(name: str) -> Any:
    """Everything else is NumPy's function of that name, on stand-in arrays."""
    value = getattr(numpy, name)
    if isinstance(value, numpy.ufunc):
        return _Ufunc(value)
    if callable(value) and not isinstance(value, type):
        return _on_device(value)
    return value  # dtypes (float32 ...), constants (pi, inf, newaxis)


# --- random -------------------------------------------------------------------------------------
class _Generator:
    """cupy.random.Generator (cupy/random/_generator_api.pyx): draws land on the device."""

    def __init__(self, seed: Any = None) -> None:
        self._rng = numpy.random.default_rng(seed)

    def __getattr__(self, name: str) -> Any:
        return _on_device(getattr(self._rng, name))


class _Random:
    Generator = _Generator

    @staticmethod
    def default_rng(seed: Any = None) -> _Generator:
        return _Generator(seed)


random = _Random()


# --- cuda ---------------------------------------------------------------------------------------
class _CUDARuntimeError(RuntimeError):
    pass


class _OutOfMemoryError(MemoryError):
    pass


class _Device:
    def __init__(self, device: int = 0) -> None:
        self.id = int(device)
        self.compute_capability = "90"

    def synchronize(self) -> None:
        """Nothing is asynchronous here."""

    def use(self) -> None:
        pass

    def __enter__(self) -> "_Device":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


class _Stream:
    def synchronize(self) -> None:
        pass


class _StreamClass:
    null = _Stream()


class _Event:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.time = None

    def record(self, stream: Any = None) -> None:
        self.time = time.perf_counter()

    def synchronize(self) -> None:
        pass


def _get_elapsed_time(start: _Event, end: _Event) -> float:
    """Milliseconds between two recorded events, as cupy.cuda.get_elapsed_time."""
    return (end.time - start.time) * 1e3


class _Runtime:
    CUDARuntimeError = _CUDARuntimeError

    @staticmethod
    def getDeviceCount() -> int:
        return 1

    @staticmethod
    def getDeviceProperties(device: int) -> dict:
        return {"name": b"CuPy stand-in on the CPU (NOT a GPU)", "totalGlobalMem": 0,
                "major": 0, "minor": 0, "multiProcessorCount": 0}

    @staticmethod
    def driverGetVersion() -> int:
        return 0

    @staticmethod
    def runtimeGetVersion() -> int:
        return 0


class _MemoryHook:
    """cupy.cuda.MemoryHook: a context manager; the stand-in sees no allocations, so no callback fires."""

    name = "MemoryHook"

    def __enter__(self) -> "_MemoryHook":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


class _MemoryPool:
    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_bytes(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        pass

    def set_limit(self, size: int | None = None, fraction: float | None = None) -> None:
        pass


_memory_pool = _MemoryPool()
_pinned_pool = _MemoryPool()


def get_default_memory_pool() -> _MemoryPool:
    return _memory_pool


def get_default_pinned_memory_pool() -> _MemoryPool:
    return _pinned_pool


class _Cuda:
    Device = _Device
    Stream = _StreamClass
    Event = _Event
    MemoryHook = _MemoryHook
    runtime = _Runtime()
    get_elapsed_time = staticmethod(_get_elapsed_time)
    memory = type("memory", (), {"OutOfMemoryError": _OutOfMemoryError})

    @staticmethod
    def is_available() -> bool:
        return True


cuda = _Cuda()
