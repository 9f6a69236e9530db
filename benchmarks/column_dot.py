"""Column sums 1ᵀA and column dots 1ᵀ(A ⊙ B): which spelling is fastest per backend, and how accurate.

Batch norm needs both on (N, p) arrays every step: 1ᵀX for the mean and 1ᵀdY for dβ,
1ᵀ(Xc ⊙ Xc) for the variance and 1ᵀ(dY ⊙ Xc) for dγ. This script times the NumPy
spellings (``--device cpu``) or the CuPy ones (``--device gpu``) and measures each one's
error against the same sums in extended precision (numpy.longdouble, on the host),
relative to the largest column value; the fastest spelling per case is marked, so that
minigraph can pick one per backend behind one function.

    python benchmarks/column_dot.py                 # NumPy, the training benchmark's shapes and others
    python benchmarks/column_dot.py --device gpu    # CuPy, the GPU benchmark's shapes
    python benchmarks/column_dot.py --quick --json  # one tiny shape: a smoke test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as common  # noqa: E402  (benchmarks/ is not a package)

import numpy  # noqa: E402

SHAPES = {"cpu": ((4096, 512), (2048, 512), (256, 64), (65536, 16)),
          "gpu": ((4096, 512), (65536, 512), (1048576, 64), (256, 64)),
          "quick": ((64, 8),)}
# (what it computes, spelling, f(xp, a, b), the devices it runs on); ``ones`` is made in each
# call, as a library function would, except where the spelling says otherwise.
SPELLINGS = [
    ("1ᵀ(A⊙B)", 'einsum("ij,ij->j")', lambda xp, a, b: xp.einsum("ij,ij->j", a, b), "cpu gpu"),
    ("1ᵀ(A⊙B)", "(a * b).sum(axis=0)", lambda xp, a, b: (a * b).sum(axis=0), "cpu gpu"),
    ("1ᵀ(A⊙B)", "ones @ (a * b)", lambda xp, a, b: xp.ones(len(a), dtype=a.dtype) @ (a * b), "cpu gpu"),
    # A (1, N) @ (N, p) GEMM instead of the GEMV above: cuBLAS picks its kernels by shape.
    ("1ᵀ(A⊙B)", "ones((1, N)) @ (a * b)",
     lambda xp, a, b: (xp.ones((1, len(a)), dtype=a.dtype) @ (a * b))[0], "gpu"),
    ("1ᵀ(A⊙B)", "einsum(..., optimize=True)",
     lambda xp, a, b: xp.einsum("ij,ij->j", a, b, optimize=True), "cpu"),
    ("1ᵀ(A⊙B)", "vecdot(a.T, b.T)", lambda xp, a, b: xp.vecdot(a.T, b.T), "cpu"),
    ("1ᵀA", "a.sum(axis=0)", lambda xp, a, b: a.sum(axis=0), "cpu gpu"),
    ("1ᵀA", "ones @ a", lambda xp, a, b: xp.ones(len(a), dtype=a.dtype) @ a, "cpu gpu"),
    ("1ᵀA", 'einsum("ij->j")', lambda xp, a, b: xp.einsum("ij->j", a), "cpu gpu"),
]


def measure(device: str, shape: tuple[int, int], dtype: str, min_reps: int, min_seconds: float) -> list[dict]:
    """One row per spelling: median seconds and relative error, for data with a nonzero mean."""
    xp, sync = common.array_module(device), common.synchronizer(device)
    rng = numpy.random.default_rng(0)
    a_host = (rng.normal(size=shape) + 3.0).astype(dtype)  # an offset, as in real activations
    b_host = rng.normal(size=shape).astype(dtype)
    a, b = xp.asarray(a_host), xp.asarray(b_host)
    # Extended precision (80-bit on x86-64) as the reference: exact enough for float64 sums too.
    a_ext = a_host.astype(numpy.longdouble)
    exact = {"1ᵀ(A⊙B)": numpy.einsum("ij,ij->j", a_ext, b_host.astype(numpy.longdouble)),
             "1ᵀA": a_ext.sum(axis=0)}
    rows = []
    for kind, name, f, devices in SPELLINGS:
        if device not in devices.split() or name.startswith("vecdot") and not hasattr(numpy, "vecdot"):
            continue  # numpy.vecdot needs NumPy 2.0
        times = common.time_calls(lambda: f(xp, a, b), sync, min_reps=min_reps, min_seconds=min_seconds)
        got = common.to_host(f(xp, a, b)).astype(numpy.longdouble)
        error = float(abs(got - exact[kind]).max() / max(abs(exact[kind]).max(), 1e-300))
        rows.append({"shape": list(shape), "dtype": dtype, "kind": kind, "spelling": name,
                     "seconds": common.median(times), "relative_error": error})
    for kind in exact:  # mark the fastest spelling of each kind
        min((r for r in rows if r["kind"] == kind), key=lambda r: r["seconds"])["fastest"] = True
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one tiny shape: a smoke test")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all results")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    args = parser.parse_args(argv)
    try:
        common.array_module(args.device)
    except RuntimeError as exc:  # --device gpu without a usable GPU
        parser.error(str(exc))
    min_reps, min_seconds = (1, 0.0) if args.quick else (5, 0.2)
    rows = [row for shape in SHAPES["quick" if args.quick else args.device] for dtype in args.dtypes
            for row in measure(args.device, shape, dtype, min_reps, min_seconds)]
    machine = common.machine_info(args.device)
    print(f"column sums on {args.device} ({common.describe_machine(machine)}); median µs per call")
    print(common.format_table(
        ["N × p", "dtype", "computes", "spelling", "µs", "relative error", "fastest"],
        [[f"{r['shape'][0]} × {r['shape'][1]}", r["dtype"], r["kind"], r["spelling"], r["seconds"] * 1e6,
          f"{r['relative_error']:.1e}", "←" if r.get("fastest") else ""] for r in rows]))
    report = {"benchmark": "column_dot", "device": args.device, "machine": machine, "results": rows}
    common.emit(report, args.json)
    return report


if __name__ == "__main__":
    main()
