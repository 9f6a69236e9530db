"""What the benchmark scripts share: array module per device, synchronised timing, the machine record, output.

The scripts import minigraph from this checkout (not from an installed copy),
so a figure always belongs to the code next to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy  # noqa: E402

# Environment variables that change which kernels run (OpenBLAS, glibc malloc, minigraph's own).
# They are reported, never set here: the benchmark measures the environment it is given.
WATCHED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
               "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY",
               "GOMP_SPINCOUNT", "MALLOC_TRIM_THRESHOLD_",
               "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MINIGRAPH_DEVICE", "MINIGRAPH_FUSED")
CUPY_SYNC = "cupy.cuda.Device().synchronize() before starting and before stopping each clock"
TORCH_SYNC = "torch.cuda.synchronize() before starting and before stopping each clock"


# --- devices and timing -------------------------------------------------------------------
def array_module(device: str) -> ModuleType:
    """numpy for 'cpu'; cupy for 'gpu', or a RuntimeError saying why the GPU cannot be used."""
    if device == "cpu":
        return numpy
    from minigraph import backend

    backend.require_gpu("--device gpu")
    import cupy

    return cupy


def synchronizer(device: str) -> Callable[[], None]:
    """A function that waits for queued device work: a no-op on the CPU, a device sync on CuPy."""
    if device == "cpu":
        return lambda: None
    import cupy

    return cupy.cuda.Device().synchronize


def to_host(array: Any) -> numpy.ndarray:
    """A NumPy copy of a NumPy, CuPy or torch array, or of a minigraph Tensor's data."""
    from minigraph import Tensor

    array = array.data if isinstance(array, Tensor) else array
    if hasattr(array, "detach"):  # torch
        return array.detach().cpu().numpy()
    return array.get() if hasattr(array, "get") else numpy.asarray(array)  # .get(): CuPy to host


def time_calls(fn: Callable[[], Any], sync: Callable[[], None], min_reps: int = 5,
               min_seconds: float = 0.2, max_reps: int = 1000, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn``, one entry per repetition (at least ``min_reps``).

    Repeats until both ``min_reps`` calls and ``min_seconds`` of timed work are
    done (or ``max_reps``). ``sync`` runs before the clock starts and before it
    stops, so queued GPU work is counted where it belongs.
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < max_reps and (len(times) < min_reps or sum(times) < min_seconds):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn: Callable[[], Any], sync: Callable[[], None], reps: int, warmup: int = 1) -> float:
    """The median of exactly ``reps`` synchronised calls of ``fn`` after ``warmup`` calls."""
    return median(time_calls(fn, sync, min_reps=reps, min_seconds=0.0, max_reps=reps, warmup=warmup))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def summary(values: Sequence[float]) -> dict:
    """Median, min, max and the values themselves (one per round or repetition)."""
    return {"median": median(values), "min": min(values), "max": max(values), "values": list(values)}


# --- the machine record -------------------------------------------------------------------
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


def gpu_info() -> dict:
    """The CuPy device 0: name, memory, CuPy and CUDA driver/runtime versions, how timing synchronised."""
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        return {
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "memory_gib": round(props.get("totalGlobalMem", 0) / 2**30, 1),
            "cupy": cupy.__version__,
            # Encoded as 1000 * major + 10 * minor: 13000 is CUDA 13.0.
            "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "sync": CUPY_SYNC,
        }
    except Exception as exc:  # the record must not stop a benchmark; say what went wrong instead
        return {"error": f"{type(exc).__name__}: {exc}"}


def torch_info(device: str) -> dict:
    """PyTorch's version, threads and pools; on the GPU also its CUDA version, device name and sync."""
    import torch

    info: dict[str, Any] = {"version": torch.__version__, "threads": torch.get_num_threads(),
                            "pools": blas_info()}
    if device == "gpu":
        info.update(cuda=torch.version.cuda, device=torch.cuda.get_device_name(0), sync=TORCH_SYNC)
    return info


def machine_info(device: str = "cpu") -> dict:
    """The facts a figure depends on: CPU, cores, versions, BLAS kernel, tuning variables; the GPU too.

    The GPU is recorded on ``device='gpu'`` and whenever CuPy is already imported.
    """
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "blas": blas_info(),
        "env": {name: os.environ.get(name) for name in WATCHED_ENV},
    }
    for name in ("torch", "cupy", "numba"):
        module = sys.modules.get(name)
        info[name] = getattr(module, "__version__", None) if module is not None else None
    if device == "gpu" or "cupy" in sys.modules:
        info["gpu"] = gpu_info()
    return info


def describe_machine(info: dict) -> str:
    """One line: CPU and usable cores, and the GPU with its versions when there is one."""
    line = f"{info['cpu']}, {info['usable_cpus']} usable CPUs"
    gpu = info.get("gpu")
    if gpu and "error" not in gpu:
        line += (f"; GPU {gpu['name']}, CuPy {gpu['cupy']}, CUDA driver {gpu['cuda_driver']}, "
                 f"runtime {gpu['cuda_runtime']}; timing synchronised by {gpu['sync']}")
    elif gpu:
        line += f"; GPU not identified ({gpu['error']})"
    return line


def env_summary(env: dict) -> str:
    """One line naming which watched variables are set, e.g. 'OPENBLAS_CORETYPE=Haswell; others unset'."""
    set_vars = [f"{k}={v}" for k, v in env.items() if v is not None]
    return "; ".join(set_vars) + "; others unset" if set_vars else "none of " + ", ".join(env) + " set"


# --- one process per library, alternating -------------------------------------------------
def run_worker(script: str, argv: Sequence[str], variant: str, env: dict | None = None) -> dict:
    """Run ``script`` with ``argv`` plus ``--worker VARIANT`` (``env`` added to the environment).

    The worker must end its output with one JSON line, which is returned. A process per
    library, because two thread pools interleaved in one process fight over the cores.
    """
    done = subprocess.run([sys.executable, str(script), *argv, "--worker", variant],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"the {variant} worker failed (exit {done.returncode}):\n{done.stderr}")
    return last_json_line(done.stdout)


def over_rounds(rounds: Sequence[dict[str, dict[str, dict]]]) -> dict[str, dict[str, dict]]:
    """Rounds of {variant: {measurement: {figure: value}}} -> {measurement: {variant: medians}}.

    Each figure is the median over the rounds; "seconds" also keeps its spread.
    """
    table: dict[str, dict[str, dict]] = {}
    for variant, first in rounds[0].items():
        for key, figures in first.items():
            per_round = [r[variant][key] for r in rounds]
            table.setdefault(key, {})[variant] = {
                **{name: median([f[name] for f in per_round]) for name in figures},
                "seconds_over_rounds": summary([f["seconds"] for f in per_round])}
    return table


# --- output -------------------------------------------------------------------------------
@contextlib.contextmanager
def minigraph_fused(value: str) -> Iterator[None]:
    """MINIGRAPH_FUSED=value inside (minigraph reads it at each call), the caller's setting restored after."""
    before = os.environ.get("MINIGRAPH_FUSED")
    os.environ["MINIGRAPH_FUSED"] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ["MINIGRAPH_FUSED"]
        else:
            os.environ["MINIGRAPH_FUSED"] = before


_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*m")


def last_json_line(text: str) -> Any:
    """The JSON value on the last non-blank line of ``text``, terminal colour codes removed: Open
    MPI's mpiexec (seen with the H100 image's) may end a job's forwarded output with a line of
    colour resets, "\x1b[0m\x1b[0m", after the line a process printed."""
    lines = [_TERMINAL_CODES.sub("", line).strip() for line in text.splitlines()]
    return json.loads(next(line for line in reversed(lines) if line))


def emit(report: dict, as_json: bool) -> None:
    """End the output with the report as one JSON line, when asked (the tests read that line)."""
    if as_json:
        print(json.dumps(report))


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
