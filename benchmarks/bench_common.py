"""What the benchmark scripts share: array module per device, synchronised timing, machine facts, tables.

The scripts import minigraph from this checkout (not from an installed copy),
so a figure always belongs to the code next to it.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy  # noqa: E402

# Environment variables that change which kernels OpenBLAS and glibc malloc use.
# They are reported, never set: the benchmark measures the environment it is given.
WATCHED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
               "MKL_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
               "MALLOC_TOP_PAD_", "MINIGRAPH_DEVICE")


def array_module(device: str) -> ModuleType:
    """numpy for 'cpu'; cupy for 'gpu', or a RuntimeError saying why the GPU cannot be used."""
    if device == "cpu":
        return numpy
    from minigraph import backend

    backend.require_gpu("--device gpu")
    import cupy

    return cupy


def synchronizer(device: str) -> Callable[[], None]:
    """A function that waits for queued device work: a no-op on the CPU, a stream sync on CuPy."""
    if device == "cpu":
        return lambda: None
    import cupy

    return cupy.cuda.Device().synchronize


def time_calls(fn: Callable[[], Any], sync: Callable[[], None], min_reps: int = 5,
               min_seconds: float = 0.2, max_reps: int = 1000, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn``, one entry per repetition (at least ``min_reps``).

    Repeats until both ``min_reps`` calls and ``min_seconds`` of timed work are
    done (or ``max_reps``). ``sync`` runs before the clock starts and before it
    stops, so queued GPU work is counted where it belongs.
    """
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    spent = 0.0
    while len(times) < max_reps and (len(times) < min_reps or spent < min_seconds):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def blas_info() -> list[dict]:
    """threadpoolctl's view of the loaded BLAS / OpenMP pools (kernel, threads), or [] without it."""
    try:
        import threadpoolctl
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "version", "num_threads", "architecture", "threading_layer",
            "prefix")
    return [{k: pool.get(k) for k in keep if k in pool} for pool in threadpoolctl.threadpool_info()]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """The facts a figure depends on: CPU, cores, library versions, BLAS kernel, tuning variables."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "blas": blas_info(),
        "env": {name: os.environ.get(name) for name in WATCHED_ENV},
    }
    for name in ("torch", "cupy"):
        module = sys.modules.get(name)
        info[name] = getattr(module, "__version__", None) if module is not None else None
    return info


def env_summary(env: dict) -> str:
    """One line naming which watched variables are set, e.g. 'OPENBLAS_CORETYPE=Haswell; others unset'."""
    set_vars = [f"{k}={v}" for k, v in env.items() if v is not None]
    return "; ".join(set_vars) + "; others unset" if set_vars else "none of " + ", ".join(env) + " set"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (pipe-separated), columns padded for reading in a terminal too."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)
