"""Host memory: let the C allocator keep freed arrays for reuse instead of returning them.

A training step on the CPU allocates the same (N, p) arrays every step and frees them at its
end. glibc returns large freed blocks to the kernel (or maps each one afresh), so every step
then pays the kernel to map and zero those pages again: at N = 2048 on the example net, about
4000 page faults per step and a third of the step's time (BENCHMARKS.md). Hand-written NumPy
avoids it by allocating once; an autograd engine cannot, since each step builds a new graph.
``keep_freed_memory()`` asks glibc to keep freed blocks up to a limit, so the next step reuses
them. It changes the whole process's allocator (every library in it), so it is opt-in: call it
once at the start of a training script, as ``examples/train.py`` does. The cost: the process
keeps up to ``limit_bytes`` of freed memory mapped rather than giving it back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from . import checks

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2: 32 MiB with 64-bit longs, 512 KiB with 32-bit.
_LARGEST_MMAP_THRESHOLD = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)


def keep_freed_memory(limit_bytes: int = 2 ** 30) -> bool:
    """Keep up to ``limit_bytes`` of freed host memory for reuse, and serve arrays of up to
    32 MiB from that reusable heap (glibc only; CuPy's GPU arrays already have their own pool).

    Returns True when the allocator took both settings, False where there is no glibc (macOS,
    Windows, musl), which changes nothing there. Calling it again with another limit updates it.
    """
    limit = checks.integer("keep_freed_memory", "limit_bytes", limit_bytes, low=0, high=2 ** 31)
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (glibc's own: musl's mallopt would do nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # Setting the trim threshold also stops glibc from raising its mmap threshold by itself, so
    # both are set: blocks up to the threshold come from the heap, and freed heap is kept.
    return bool(mallopt(_M_MMAP_THRESHOLD, _LARGEST_MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))
