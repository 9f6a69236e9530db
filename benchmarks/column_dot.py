"""Column sums and column sums of products, 1ᵀA and 1ᵀ(A ⊙ B): which NumPy spelling is fastest, and how accurate.

Batch norm needs both on (N, p) arrays every step: 1ᵀX for the mean and 1ᵀdY for dβ,
1ᵀ(Xc ⊙ Xc) for the variance and 1ᵀ(dY ⊙ Xc) for dγ. minigraph uses ``ones @ A``
(BLAS matrix-vector) for the first kind and ``einsum("ij,ij->j")`` for the second.
This script times the alternatives and measures each one's error against the same sums
in extended precision (numpy.longdouble), relative to the largest column value.

    python benchmarks/column_dot.py            # (N, p) of the training benchmark and a few others
    python benchmarks/column_dot.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as common  # noqa: E402  (benchmarks/ is not a package)

import numpy  # noqa: E402

FULL_SHAPES = ((4096, 512), (2048, 512), (256, 64), (65536, 16))
QUICK_SHAPES = ((64, 8),)

# name -> f(a, b) computing 1ᵀ(A ⊙ B): (p,)
PRODUCT_SUMS: dict[str, Callable[[Any, Any], Any]] = {
    'einsum("ij,ij->j")': lambda a, b: numpy.einsum("ij,ij->j", a, b),
    "(a * b).sum(axis=0)": lambda a, b: (a * b).sum(axis=0),
    "ones @ (a * b)": lambda a, b: numpy.ones(len(a), dtype=a.dtype) @ (a * b),
    'einsum(..., optimize=True)': lambda a, b: numpy.einsum("ij,ij->j", a, b, optimize=True),
    "vecdot(a.T, b.T)": lambda a, b: numpy.vecdot(a.T, b.T),
}
# name -> f(a) computing 1ᵀA: (p,)
SUMS: dict[str, Callable[[Any], Any]] = {
    "a.sum(axis=0)": lambda a: a.sum(axis=0),
    "ones @ a": lambda a: numpy.ones(len(a), dtype=a.dtype) @ a,
    'einsum("ij->j")': lambda a: numpy.einsum("ij->j", a),
}


def relative_error(got: numpy.ndarray, want: numpy.ndarray) -> float:
    """max |got − want| / max |want|, in extended precision."""
    return float(abs(got.astype(numpy.longdouble) - want).max() / max(abs(want).max(), 1e-300))


def measure(shape: tuple[int, int], dtype: str, min_reps: int, min_seconds: float) -> list[dict]:
    """One row per spelling: median seconds and relative error, for data with a nonzero mean."""
    rng = numpy.random.default_rng(0)
    a = (rng.normal(size=shape) + 3.0).astype(dtype)  # an offset, as in real activations
    b = rng.normal(size=shape).astype(dtype)
    # Extended precision (80-bit on x86-64) as the reference: exact enough for float64 sums too.
    a_ext, b_ext = a.astype(numpy.longdouble), b.astype(numpy.longdouble)
    exact_products = (a_ext * b_ext).sum(axis=0)
    exact_sums = a_ext.sum(axis=0)
    rows = []
    cases = [(name, "1ᵀ(A⊙B)", lambda f=f: f(a, b), exact_products) for name, f in PRODUCT_SUMS.items()]
    cases += [(name, "1ᵀA", lambda f=f: f(a), exact_sums) for name, f in SUMS.items()]
    for name, kind, fn, exact in cases:
        if "vecdot" in name and not hasattr(numpy, "vecdot"):
            continue  # NumPy < 2.0
        times = common.time_calls(fn, lambda: None, min_reps=min_reps, min_seconds=min_seconds)
        rows.append({"shape": list(shape), "dtype": dtype, "kind": kind, "spelling": name,
                     "seconds": common.median(times), "relative_error": relative_error(fn(), exact)})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one tiny shape; runs in a second")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all results")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    args = parser.parse_args(argv)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    min_reps, min_seconds = (1, 0.0) if args.quick else (5, 0.2)
    rows = [row for shape in shapes for dtype in args.dtypes
            for row in measure(shape, dtype, min_reps, min_seconds)]
    print(common.format_table(
        ["N × p", "dtype", "computes", "spelling", "µs", "relative error"],
        [[f"{r['shape'][0]} × {r['shape'][1]}", r["dtype"], r["kind"], r["spelling"],
          r["seconds"] * 1e6, f"{r['relative_error']:.1e}"] for r in rows]))
    report = {"benchmark": "column_dot", "machine": common.machine_info(), "results": rows}
    if args.json:
        print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
