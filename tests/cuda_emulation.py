"""Batch norm's CUDA kernels (minigraph/kernels/gpu.py) run on the CPU, for tests on machines without a GPU.

The CUDA source is compiled by the host's C++ compiler with a small prelude: each block's threads are
std::threads that share a std::barrier for ``__syncthreads()``, and the blocks of a launch run one
after another (so ``__shared__`` arrays can be static). A fake ``cupy`` module (NumPy arrays; a
``RawModule`` whose kernels call the compiled code, arguments passed as CUDA passes them, by
pointer to each value) lets gpu.py's own host code run unchanged, and every array it allocates
starts as NaN, so an element a kernel forgot to write shows.

What this checks: the kernels' indexing, merges, barriers and arithmetic, and the host code's
layout and arguments. What it cannot: anything about real hardware (speed, memory model,
NVRTC's code generation), which the GPU run of tests/test_kernels_gpu.py checks.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy

ROOT = Path(__file__).resolve().parents[1]
GPU_MODULE = ROOT / "minigraph" / "kernels" / "gpu.py"

PRELUDE = r"""
#include <barrier>
#include <cmath>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>
struct dim3_ { unsigned x, y, z; };
thread_local dim3_ threadIdx, blockIdx;
dim3_ blockDim, gridDim;
std::barrier<>* block_barrier;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
inline void __syncthreads() { block_barrier->arrive_and_wait(); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
using std::min; using std::max; using std::sqrt; using std::fmax;
"""

LAUNCHER = r"""
template <typename... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}
// One std::thread per thread of a block; the blocks run one after another, each thread moving on
// to the next block only when all have finished this one.
template <typename... A>
void launch(void (*kernel)(A...), unsigned gx, unsigned gy, unsigned bx, unsigned by, void** args) {
    gridDim = {gx, gy, 1};
    blockDim = {bx, by, 1};
    std::barrier<> barrier(bx * by);
    block_barrier = &barrier;
    std::vector<std::thread> threads;
    for (unsigned ty = 0; ty < by; ++ty)
        for (unsigned tx = 0; tx < bx; ++tx)
            threads.emplace_back([=, &barrier] {
                threadIdx = {tx, ty, 0};
                for (unsigned y = 0; y < gy; ++y)
                    for (unsigned x = 0; x < gx; ++x) {
                        blockIdx = {x, y, 0};
                        call(kernel, args, std::index_sequence_for<A...>{});
                        barrier.arrive_and_wait();
                    }
            });
    for (auto& thread : threads) thread.join();
}
"""


def _symbol(name: str) -> str:
    return re.sub(r"\W+", "_", name).strip("_")


def compiler_problem() -> str | None:
    """Why the emulation cannot be built here (no g++, or one without C++20's <barrier>), or None.
    A compile error in the kernels themselves is no such reason: ``build`` raises it."""
    if shutil.which("g++") is None:
        return "no g++ to compile the CUDA kernels for the CPU"
    with tempfile.TemporaryDirectory() as work:
        probe = Path(work) / "probe.cpp"
        probe.write_text("#include <barrier>\nint main() { std::barrier<> b(1); b.arrive_and_wait(); }\n")
        done = subprocess.run(["g++", "-std=c++20", "-pthread", str(probe), "-o", str(Path(work) / "probe")],
                              capture_output=True, text=True)
    if done.returncode != 0:
        return f"g++ lacks C++20's <barrier> (GCC 11 or later has it): {done.stderr.strip()[:200]}"
    return None


def build(source: str, names: list[str]) -> ctypes.CDLL:
    """Compile the CUDA ``source``'s instantiations ``names`` (e.g. "bn_normalise<float>") into a shared
    library, once per source (cached in the temporary directory by a hash of the code)."""
    exports = "".join(f'extern "C" void {_symbol(n)}(unsigned gx, unsigned gy, unsigned bx, unsigned by, '
                      f'void** a) {{ launch({n}, gx, gy, bx, by, a); }}\n' for n in names)
    code = PRELUDE + source + LAUNCHER + exports
    digest = hashlib.sha1(code.encode()).hexdigest()[:16]
    library = Path(tempfile.gettempdir()) / f"minigraph_cuda_emulation_{digest}.so"
    if not library.exists():
        with tempfile.TemporaryDirectory() as work:
            cpp, built = Path(work) / "kernels.cpp", Path(work) / "kernels.so"
            cpp.write_text(code)
            # -ffp-contract=off: no fused multiply-adds, like the _rn intrinsics the source relies on.
            done = subprocess.run(["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-ffp-contract=off",
                                   "-Wno-unknown-pragmas", str(cpp), "-o", str(built)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"g++ could not compile the emulated kernels:\n{done.stderr[-3000:]}")
            shutil.move(str(built), library)  # whole or not at all, for a concurrent test process
    return ctypes.CDLL(str(library))


class _Kernel:
    """A compiled kernel, called as a cupy.RawKernel is: kernel(grid, block, args)."""

    def __init__(self, library: ctypes.CDLL, name: str) -> None:
        self.function = getattr(library, _symbol(name))

    def __call__(self, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
        grid, block = tuple(grid) + (1,) * (2 - len(grid)), tuple(block) + (1,) * (2 - len(block))
        values = []  # kept alive through the call: the kernel reads them by pointer
        for a in args:
            if a is None:
                values.append(ctypes.c_void_p(0))
            elif isinstance(a, numpy.ndarray):
                assert a.flags.c_contiguous, "the kernels index arrays as C-contiguous rows"
                values.append(ctypes.c_void_p(a.ctypes.data))
            elif isinstance(a, numpy.int64):
                values.append(ctypes.c_longlong(int(a)))
            elif isinstance(a, numpy.float64):
                values.append(ctypes.c_double(float(a)))
            else:
                raise TypeError(f"a kernel argument of type {type(a).__name__}: CuPy would have to guess its C type")
        pointers = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        self.function(*grid, *block, pointers)


def _nan_filled(shape_or_like: Any, dtype: Any = numpy.float64) -> numpy.ndarray:
    if isinstance(shape_or_like, numpy.ndarray):
        return numpy.full_like(shape_or_like, numpy.nan)
    return numpy.full(shape_or_like, numpy.nan, dtype=dtype)


def gpu_module() -> types.ModuleType:
    """minigraph/kernels/gpu.py loaded against a fake cupy whose kernels run on the CPU; its compile_for
    compiles with g++ instead of NVRTC. Its arrays are NumPy's."""
    fake = types.ModuleType("cupy")

    class RawModule:
        def __init__(self, code: str, options: tuple = (), name_expressions: Any = ()) -> None:
            self.library = build(code, list(name_expressions))  # gpu.py's _SOURCE, as NVRTC would get it

        def get_function(self, name: str) -> _Kernel:
            return _Kernel(self.library, name)

    fake.RawModule = RawModule
    for name in ("ones", "zeros", "asarray", "ascontiguousarray", "stack"):
        setattr(fake, name, getattr(numpy, name))
    fake.empty, fake.empty_like = _nan_filled, _nan_filled
    spec = importlib.util.spec_from_file_location("minigraph_kernels_gpu_emulated", GPU_MODULE)
    module = importlib.util.module_from_spec(spec)
    real = sys.modules.get("cupy")
    sys.modules["cupy"] = fake  # only while gpu.py imports it: nothing else may see the fake
    try:
        spec.loader.exec_module(module)
    finally:
        if real is None:
            del sys.modules["cupy"]
        else:
            sys.modules["cupy"] = real
    return module
