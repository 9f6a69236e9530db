"""Fused kernels beside the formulas they implement: which one, if any, serves these arrays.

An op asks, e.g. ``kernels.batch_norm(x, gamma, beta)``, and gets back a module
with that op's kernel functions, or None. On None it runs its formula, which
stays the readable definition and the reference the tests hold kernels to.

- ``MINIGRAPH_FUSED=0`` (or ``false``, ``off``, ``no``) turns every kernel off,
  on both devices; ``1`` (``true``, ``on``, ``yes``, empty or unset) leaves them on.
  Any other value is a ValueError, so a misspelt "off" is never read as on. It
  is read at each call, so it can be changed at run time.
- NumPy float32/float64 arrays: ``kernels/cpu.py`` (numba). It is imported and
  compiled on first use, so ``import minigraph`` never imports numba. If numba
  is missing, or its import or compile fails, one warning is issued and the
  formula serves for the rest of the process. So it does in a child forked
  from a process that ran them on GNU OpenMP, where numba would kill the child.
- CuPy float32/float64 arrays: ``kernels/gpu.py``, batch norm's CUDA kernels, compiled by
  CuPy (NVRTC) on first use and cached on disk by CuPy. A compile failure warns once and
  the CuPy formula serves from then on. The CPU stand-in CuPy (tests/standin) runs no CUDA,
  so its arrays get the formula. Layer norm has no GPU kernels: its formula serves there.
- Anything else gets None.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from types import ModuleType
from typing import Any

import numpy

ENV_VAR = "MINIGRAPH_FUSED"
_OFF = ("0", "false", "off", "no")
_ON = ("1", "true", "on", "yes", "")
_FLOAT_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def fused_enabled(op: str = "minigraph") -> bool:
    """False when ``MINIGRAPH_FUSED`` says off (0, false, off, no); on by default; a ValueError
    naming ``op`` (the op that asked) for any other value."""
    value = os.environ.get(ENV_VAR, "1").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise ValueError(f"{op}: {ENV_VAR} is {os.environ[ENV_VAR]!r}; expected one of {', '.join(_OFF)} "
                     f"(fused kernels off) or {', '.join(_ON[:-1])} (on, the default). Set it to 0 "
                     f"to run the formulas, or unset it")


def _spin_briefly() -> bool:
    """Let numba's OpenMP threads sleep soon after a kernel, unless the user chose a policy;
    True if it set ``GOMP_SPINCOUNT``, which the caller takes back once libgomp has read it.

    GNU OpenMP keeps its threads spinning for ~300,000 iterations after each parallel
    region. In a training step the next call is a GEMM on OpenBLAS's own threads, which
    then share the cores with spinning ones: measured on 2 cores, a step at N = 2048 took
    60 ms with the default against 35.5 ms with GOMP_SPINCOUNT=1000, and batch norm alone
    0.85 ms either way (OMP_WAIT_POLICY=PASSIVE: 33 ms and 1.3 ms). libgomp reads this when
    it loads, so it counts only if no OpenMP library was loaded before the first kernel.
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return False
    os.environ["GOMP_SPINCOUNT"] = "1000"
    return True


class _Kernels:
    """One device's kernel module, imported and compiled per (op, dtype) on first use; remembers a failure.

    One instance per device and process (``_cpu``, ``_gpu`` below): a failure warns once and
    turns that device's kernels off from then on, rather than retrying on every call.
    """

    device = ""  # "CPU" or "GPU", for the warning
    compiler = ""  # what compiles them, for the warning
    formulas = ""  # what runs instead, for the warning

    def __init__(self) -> None:
        self.module: ModuleType | None = None
        self.compiled: set[tuple[str, numpy.dtype]] = set()  # (op, dtype) pairs compiled so far
        self.failure: str | None = None  # why the kernels are off, once they are
        self.warned = False

    def load(self, op: str, dtype: numpy.dtype) -> ModuleType:
        """Import the module and compile ``op`` for ``dtype`` the first time (raises on failure)."""
        raise NotImplementedError

    def explain(self, exc: Exception) -> str:
        """Why the kernels are off, from the exception that turned them off."""
        return f"{self.compiler} failed to compile or run them ({type(exc).__name__}: {exc})"

    def serving(self, op: str, dtype: numpy.dtype) -> ModuleType | None:
        """The module with ``op``'s kernels compiled for ``dtype``, or None if they cannot be had."""
        if self.failure is None and (op, dtype) not in self.compiled:
            try:
                if self.module is None:
                    self.module = self.load(op, dtype)
                else:
                    self.module.compile_for(op, dtype)
                self.compiled.add((op, dtype))
            except Exception as exc:  # compile errors, a broken install: never a crash
                self.failure = self.explain(exc)
        if self.failure is None:
            return self.module
        if not self.warned:
            self.warned = True
            warnings.warn(
                f"minigraph: the fused {self.device} kernels are off in this process: {self.failure}. "
                f"{self.formulas} instead; set {ENV_VAR}=0 to choose them without this warning.",
                RuntimeWarning, stacklevel=3,
            )
        return None


class _CpuKernels(_Kernels):
    """``kernels/cpu.py`` (numba), for NumPy arrays."""

    device = "CPU"
    compiler = "numba"
    formulas = "Batch norm and layer norm run their NumPy formulas"

    def load(self, op: str, dtype: numpy.dtype) -> ModuleType:
        spin_set = _spin_briefly()
        try:
            module = importlib.import_module(f"{__name__}.cpu")  # imports numba
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=self.forked)
            self.module = module  # (forked() reads it)
            module.compile_for(op, dtype)  # runs the kernels: the threads start, libgomp reads it
            return module
        finally:
            if spin_set:  # not passed on to this process's children, which did not ask for it
                os.environ.pop("GOMP_SPINCOUNT", None)

    def explain(self, exc: Exception) -> str:
        if isinstance(exc, ImportError):
            return f"numba cannot be imported ({type(exc).__name__}: {exc}); pip install 'minigraph[fast]' installs it"
        return super().explain(exc)

    def forked(self) -> None:
        """In a child just forked: numba terminates a child that starts GNU OpenMP threads its parent used."""
        if self.failure is None and sys.platform.startswith("linux") and self.module is not None \
                and self.module.threading_layer() == "omp":
            self.failure = ("this process was forked from one that ran them on GNU OpenMP threads, which "
                            "cannot start again in a forked child; start workers with the 'spawn' or "
                            "'forkserver' method, or install tbb for numba's fork-safe threading layer")
            self.warned = False


class _GpuKernels(_Kernels):
    """``kernels/gpu.py`` (CUDA compiled by CuPy), for CuPy arrays; batch norm only."""

    device = "GPU"
    compiler = "CuPy"
    formulas = "Batch norm runs its CuPy formula"
    ops = ("batch_norm",)

    def load(self, op: str, dtype: numpy.dtype) -> ModuleType:
        module = importlib.import_module(f"{__name__}.gpu")
        module.compile_for(op, dtype)
        return module


_cpu = _CpuKernels()
_gpu = _GpuKernels()


def _serving(op: str, x: Any, others: tuple) -> ModuleType | None:
    """The module whose kernels serve x and ``others`` for ``op``, or None: float32 or float64 arrays
    of one dtype, all NumPy (the CPU kernels) or all CuPy (the GPU kernels, where ``op`` has one)."""
    if not fused_enabled(op):
        return None
    arrays = (x,) + others
    if all(type(a) is numpy.ndarray for a in arrays):
        kernels = _cpu
    else:
        cupy = sys.modules.get("cupy")  # a CuPy array exists only once cupy is imported
        if cupy is None or op not in _gpu.ops or not all(type(a) is cupy.ndarray for a in arrays):
            return None
        if getattr(cupy, "IS_STANDIN", False):  # the CPU stand-in for tests runs no CUDA: its formula serves
            return None
        kernels = _gpu
    dtype = x.dtype
    if dtype in _FLOAT_DTYPES and all(a.dtype == dtype for a in others):
        return kernels.serving(op, dtype)
    return None


def batch_norm(x: Any, *others: Any) -> ModuleType | None:
    """The module whose batch-norm kernels serve x: (N, p) and the (p,) arrays ``others``, or None;
    None also for an empty x, which the formula handles.

    The module provides ``batch_norm_forward``, ``batch_norm_backward`` and
    ``batch_norm_eval_forward`` (see ``kernels/cpu.py`` for their contracts).
    """
    module = _serving("batch_norm", x, others)  # first: a misspelt MINIGRAPH_FUSED is an error here too
    return module if x.size else None  # (N, 0): nothing to fuse, and CUDA refuses a launch of no blocks


def layer_norm(x: Any, *others: Any) -> ModuleType | None:
    """The module whose layer-norm kernels serve x: (M, D) and the (D,) arrays ``others`` (weight,
    bias where given), or None; None also for an empty x, which the formula handles and which
    has nothing to fuse.

    The module provides ``layer_norm_forward`` and ``layer_norm_backward`` (``kernels/cpu.py``).
    """
    module = _serving("layer_norm", x, others)  # first: a misspelt MINIGRAPH_FUSED is an error here too
    return module if x.size else None
