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
* Only what CuPy 14.2 has (read at tag v14.2.0): the NumPy names ``cupy/__init__.py`` does not
  define (``errstate``, ``vecdot``, ``insert`` ...) are missing here too, and NumPy's function of
  such a name given stand-in arrays raises TypeError, as ``__array_function__`` returns
  NotImplemented when CuPy has no function of that name (core.pyx). Ufuncs take only ``out``,
  ``dtype`` and ``casting`` (``ufunc.__call__``, cupy/_core/_kernel.pyx); ``ufunc.at`` exists only
  for the ufuncs with a scatter op and dtypes CuPy's atomics cover (``ufunc.at``, _kernel.pyx;
  ``_scatter_op_single``, _routines_indexing.pyx); ``ufunc.reduce`` only for add and multiply,
  without ``initial``/``where``; reductions take no ``initial``/``where`` (``ndarray.sum``,
  core.pyx; ``cupy.sum``, cupy/_math/sumprod.py); ``random.Generator`` has only CuPy's
  distributions (no ``normal``, ``choice``, ``permutation`` ..., cupy/random/_generator_api.pyx).
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


# NumPy's public names that cupy/__init__.py (v14.2.0) does not define: cupy.<name> is an
# AttributeError, and numpy.<name>(cupy_array) a TypeError (__array_function__, core.pyx, finds no
# cupy.<name> and returns NotImplemented). Computed as dir(numpy) minus the names cupy/__init__.py
# imports or defines; NumPy's types and submodules that no array code calls are left out.
_NOT_IN_CUPY = frozenset({
    "asmatrix", "block", "bmat", "busday_count", "busday_offset", "datetime_as_string", "datetime_data",
    "einsum_path", "errstate", "frompyfunc", "fromregex", "geomspace", "getbufsize", "geterr",
    "geterrcall", "histogram_bin_edges", "insert", "is_busday", "isnat", "matvec", "nanpercentile",
    "nanquantile", "nditer", "nested_iters", "polyder", "polydiv", "polyint", "setbufsize", "seterr",
    "seterrcall", "spacing", "unstack", "vecdot", "vecmat", "longdouble", "clongdouble", "float128",
    "complex256", "matrix", "memmap", "ndenumerate", "emath", "ma", "rec", "char", "strings",
})
# CuPy's reductions have no ``initial`` or ``where``: ndarray.sum/max/mean(axis, dtype, out,
# keepdims) (cupy/_core/core.pyx), cupy.sum(a, axis, dtype, out, keepdims) (cupy/_math/sumprod.py),
# cupy.amax(a, axis, out, keepdims) (cupy/_statistics/order.py).
_REDUCTIONS = frozenset({"sum", "prod", "max", "min", "amax", "amin", "mean", "var", "std", "any", "all",
                         "nansum", "nanprod", "nanmax", "nanmin", "nanmean", "nanvar", "nanstd",
                         "argmax", "argmin", "cumsum", "cumprod"})


def _refuse_reduction_kwargs(name: str, kwargs: dict) -> None:
    refused = sorted({"initial", "where"} & set(kwargs))
    if name in _REDUCTIONS and refused:
        raise TypeError(f"{name}() got an unexpected keyword argument {refused[0]!r} (CuPy stand-in: "
                        f"CuPy's reductions take axis, dtype, out and keepdims only)")


def _on_device(func: Any) -> Any:
    """``func`` running on unwrapped arguments, returning wrapped results; ``out=`` is honoured."""

    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        _refuse_reduction_kwargs(getattr(func, "__name__", ""), kwargs)
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
        if "out" in kwargs:
            (out,) = kwargs["out"]
            kwargs["out"] = out
        if ufunc.__name__ in _NOT_IN_CUPY:  # core.pyx: no cupy.<name> (vecdot ...): NotImplemented
            return NotImplemented
        device_ufunc = _Ufunc(ufunc)
        if method == "__call__":
            return device_ufunc(*inputs, **kwargs)
        if not hasattr(device_ufunc, method):  # core.pyx: getattr(cupy_ufunc, method) fails
            return NotImplemented
        return getattr(device_ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        if getattr(func, "__module__", None) == "numpy" and func.__name__ in _NOT_IN_CUPY:
            return NotImplemented  # core.pyx: no cupy.<name>, so NumPy raises TypeError
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


# ufunc.at exists only where the ufunc has a scatter op (cupy/_core/_kernel.pyx, ``ufunc.at``:
# NotImplementedError otherwise), and with integer index arrays only for the dtypes its atomics
# cover (``_scatter_op_single``, cupy/_core/_routines_indexing.pyx: TypeError otherwise).
_INTS = ("int32", "int64", "uint32", "uint64")
_SCATTER_DTYPES = {
    "add": ("float16", "float32", "float64") + _INTS,
    "subtract": ("int32", "uint32"),
    "maximum": ("float32", "float64") + _INTS,
    "minimum": ("float32", "float64") + _INTS,
    "bitwise_and": _INTS, "bitwise_or": _INTS, "bitwise_xor": _INTS,
}


def _scatters_atomically(indices: Any) -> bool:
    """Whether CuPy's ``_scatter_op`` takes the atomic path for ``indices``: an integer array, or
    several arrays. Ints and slices alone, or one boolean mask, need no atomics (no dtype limit)."""
    parts = indices if isinstance(indices, tuple) else (indices,)
    arrays = [_index(p) if type(p) is ndarray else numpy.asarray(p)
              for p in parts if type(p) is ndarray or isinstance(p, (numpy.ndarray, list))]
    # An empty list is an empty integer index (_prepare_slice_list, _routines_indexing.pyx).
    return len(arrays) > 1 or any(a.dtype.kind in "iu" or a.size == 0 for a in arrays)


_GUFUNC_KEYWORDS = ("axes", "axis", "keepdims", "casting", "dtype", "signature", "order", "out")


class _Ufunc:
    """A NumPy ufunc on stand-in arrays, with CuPy's ``__call__`` keywords, ``.at`` and ``.reduce``."""

    def __init__(self, ufunc: Any) -> None:
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # ufunc.__call__ (cupy/_core/_kernel.pyx) pops out, dtype and casting, then raises
        # TypeError('Wrong arguments ...') for anything left: no where=, order=, subok=. matmul is
        # a generalized ufunc there (_GUFunc.__call__, cupy/_core/_gufuncs.py), with axes too.
        allowed = _GUFUNC_KEYWORDS if self.__name__ == "matmul" else ("out", "dtype", "casting")
        unknown = {k: v for k, v in kwargs.items() if k not in allowed}
        if unknown:
            raise TypeError(f"Wrong arguments {unknown} (CuPy stand-in: CuPy's ufuncs take out, dtype "
                            f"and casting only)")
        return _on_device(self._ufunc)(*args, **kwargs)

    def at(self, a: ndarray, indices: Any, b: Any = None) -> None:
        dtypes = _SCATTER_DTYPES.get(self.__name__)
        if dtypes is None:
            raise NotImplementedError(f"`cupy_{self.__name__}.at` is not supported yet (CuPy stand-in)")
        if _scatters_atomically(indices) and a.dtype.name not in dtypes:
            raise TypeError(f"cupy.{self.__name__}.at only supports {', '.join(dtypes)} as data type "
                            f"(CuPy stand-in; got {a.dtype})")
        self._ufunc.at(_unwrap(a), _index(indices), *(() if b is None else (_unwrap(b),)))

    # ufunc.outer, .reduce, .accumulate, .reduceat (cupy/_core/_kernel.pyx): outer for every ufunc;
    # the others only as sum/prod, cumsum/cumprod and add's reduceat, with no initial or where.
    def outer(self, a: Any, b: Any, **kwargs: Any) -> Any:
        return self(*_unwrap_outer(a, b), **kwargs)

    def reduce(self, array: ndarray, axis: Any = 0, dtype: Any = None, out: Any = None,
               keepdims: bool = False) -> Any:
        self._only("reduce", ("add", "multiply"))
        return _on_device(self._ufunc.reduce)(array, axis=axis, dtype=dtype, out=out, keepdims=keepdims)

    def accumulate(self, array: ndarray, axis: Any = 0, dtype: Any = None, out: Any = None) -> Any:
        self._only("accumulate", ("add", "multiply"))
        return _on_device(self._ufunc.accumulate)(array, axis=axis, dtype=dtype, out=out)

    def reduceat(self, array: ndarray, indices: Any, axis: Any = 0, dtype: Any = None, out: Any = None) -> Any:
        self._only("reduceat", ("add",))
        return _on_device(self._ufunc.reduceat)(array, indices, axis=axis, dtype=dtype, out=out)

    def _only(self, method: str, names: tuple) -> None:
        if self.__name__ not in names:
            raise NotImplementedError(f"`cupy_{self.__name__}.{method}` is not supported yet (CuPy stand-in)")


def _unwrap_outer(a: Any, b: Any) -> tuple:
    """A and B shaped as ufunc.outer does (A.shape + (1,) * B.ndim and (1,) * A.ndim + B.shape)."""
    a, b = asarray(a), asarray(b)
    return a.reshape(a.shape + (1,) * b.ndim), b.reshape((1,) * a.ndim + b.shape)


@functools.lru_cache(maxsize=None)
def __getattr__(name: str) -> Any:
    """Everything else that CuPy has is NumPy's function of that name, on stand-in arrays."""
    if name in _NOT_IN_CUPY:
        raise AttributeError(f"module 'cupy' has no attribute {name!r} (CuPy stand-in: CuPy 14.2 has none)")
    value = getattr(numpy, name)
    if isinstance(value, numpy.ufunc):
        return _Ufunc(value)
    if callable(value) and not isinstance(value, type):
        return _on_device(value)
    return value  # dtypes (float32 ...), constants (pi, inf, newaxis)


# --- random -------------------------------------------------------------------------------------
# The distributions cupy.random.Generator implements (cupy/random/_generator_api.pyx, v14.2.0);
# NumPy's others (normal, choice, permutation, shuffle, lognormal ...) are AttributeErrors there.
_GENERATOR_METHODS = frozenset({
    "random", "uniform", "integers", "beta", "chisquare", "dirichlet", "exponential", "f", "geometric",
    "hypergeometric", "logseries", "standard_exponential", "poisson", "power", "standard_normal", "gamma",
    "standard_gamma", "binomial",
})


class _Generator:
    """cupy.random.Generator (cupy/random/_generator_api.pyx): draws land on the device."""

    def __init__(self, seed: Any = None) -> None:
        self._rng = numpy.random.default_rng(seed)

    def __getattr__(self, name: str) -> Any:
        if name not in _GENERATOR_METHODS:
            raise AttributeError(f"'cupy.random.Generator' object has no attribute {name!r} (CuPy "
                                 f"stand-in: CuPy's Generator has {', '.join(sorted(_GENERATOR_METHODS))})")
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
