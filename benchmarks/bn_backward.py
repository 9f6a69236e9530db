"""Batch norm's backward three ways: minigraph's vectorized node, a loop over features, the explicit Jacobian.

Training mode, the gradients of x (N, p), γ (p,) and β (p,) from an upstream dY (N, p):

1. ``minigraph``: the BatchNorm node's own ``backward`` (whole-array formulas, MINIGRAPH_FUSED=0);
   ``minigraph fused``: the same node on the fused kernels (minigraph/kernels: numba, two
   passes over (N, p), all cores), where they serve the arrays and MINIGRAPH_FUSED allows;
2. ``loop``: one feature (column) at a time with per-column scalar formulas, the
   "per-activation" way of writing it;
3. ``jacobian``: the textbook route. With vec stacking columns, the Np × Np
   Jacobian of vec(Y) with respect to vec(X) is

       J = (D_γs ⊗ I_N)(I_p ⊗ C_N) − (D_γs³ ⊗ I_N) K Kᵀ / (N − ddof),

   C_N = I_N − 11ᵀ/N the centring matrix and K = I_p ∗ Xc the Khatri–Rao product
   (column j is e_j ⊗ Xc[:, j], so K Kᵀ is block diagonal with blocks Xc_j Xc_jᵀ).
   Then vec(dX) = Jᵀ vec(dY), dγ = (I_p ∗ X̂)ᵀ vec(dY), dβ = (I_p ⊗ 1_N)ᵀ vec(dY).
   It is built only where its estimated peak, 2·(Np)² numbers, fits under
   ``--jacobian-cap-gib``.

Each method is timed on the backward alone, from the same forward statistics, and
checked against the minigraph node with allclose. Peak memory on the CPU is
tracemalloc's peak over one call: every NumPy data buffer and Python object
allocated during it (NumPy reports its buffers to tracemalloc), not memory BLAS
keeps for itself, not the inputs that already existed. On a GPU it is the peak
of bytes handed out by CuPy's memory pool during the call.

    python benchmarks/bn_backward.py                 # the full grid, about a minute
    python benchmarks/bn_backward.py --quick --json  # tiny sizes, seconds
    python benchmarks/bn_backward.py --plot bn_backward.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tracemalloc
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as common  # noqa: E402  (benchmarks/ is not a package)

import numpy  # noqa: E402

import minigraph as mg  # noqa: E402  (bench_common puts the checkout first on sys.path)
from minigraph.backend import to_device  # noqa: E402

FULL_NS = (16, 64, 256, 1024, 4096)
FULL_PS = (2, 8, 32, 128, 512)
QUICK_NS = (8, 32)
QUICK_PS = (2, 8)
METHODS = ("minigraph", "minigraph fused", "loop", "jacobian")
SHORT = {"minigraph": "mg", "minigraph fused": "fused", "loop": "loop", "jacobian": "jacobian"}

Grads = tuple[Any, Any, Any]  # (dX (N, p), dγ (p,), dβ (p,))


# --- the problem and its forward statistics ---------------------------------------------------
def make_problem(n: int, p: int, xp: ModuleType, dtype: str, seed: int = 0) -> dict:
    """Random x: (N, p) with column scales and offsets, γ, β: (p,), dY: (N, p), all on xp's device."""
    rng = numpy.random.default_rng(seed)
    x = rng.normal(size=(n, p)) * rng.uniform(0.5, 3.0, size=p) + rng.normal(size=p) * 2
    arrays = {
        "x": x,
        "gamma": rng.uniform(0.5, 2.0, size=p),
        "beta": rng.normal(size=p),
        "grad_y": rng.normal(size=(n, p)),  # random: a uniform dY would make dX vanish
    }
    device = "gpu" if xp.__name__ == "cupy" else "cpu"
    return {k: to_device(v.astype(dtype), device) for k, v in arrays.items()}


def forward_statistics(x: Any, ddof: int, eps: float) -> tuple[Any, Any]:
    """Xc = X − 1μ: (N, p) and s = (σ² + eps)^(−1/2): (p,), the two-pass variance, in plain array code."""
    centred = x - x.mean(axis=0)
    variance = (centred * centred).sum(axis=0) / (x.shape[0] - ddof)
    return centred, 1.0 / (variance + eps) ** 0.5


# --- method 1: minigraph's node, on the formula or on the fused kernels --------------------------
def minigraph_node(problem: dict, ddof: int, eps: float, fused: bool = False) -> mg.Function | None:
    """The BatchNorm node after a forward pass, holding what its backward needs.

    ``fused=False``: the formula path. ``fused=True``: the fused kernels, or None
    where none serves (numba missing, a GPU array, MINIGRAPH_FUSED=0 in the environment).
    """
    x = mg.Tensor(problem["x"], requires_grad=True)
    gamma = mg.Tensor(problem["gamma"], requires_grad=True)
    beta = mg.Tensor(problem["beta"], requires_grad=True)
    with contextlib.nullcontext() if fused else common.minigraph_fused("0"):
        node = mg.batch_norm(x, gamma, beta, eps=eps, ddof=ddof).grad_fn
    return node if node.kernel is not None or not fused else None


def minigraph_backward(node: mg.Function, grad_y: Any) -> Grads:
    """The node's vectorized backward, called directly: no graph walk, no .grad bookkeeping."""
    return tuple(node.backward(grad_y))


# --- method 2: a loop over features -----------------------------------------------------------
def loop_backward(centred: Any, inv_std: Any, gamma: Any, grad_y: Any, ddof: int) -> Grads:
    """Column by column, each with scalar coefficients: dβ_j, dγ_j, then dX[:, j]."""
    xp = mg.backend.get_array_module(centred)
    n, p = centred.shape
    grad_x = xp.empty_like(grad_y)
    grad_gamma = xp.empty_like(gamma)
    grad_beta = xp.empty_like(gamma)
    for j in range(p):
        c, dy = centred[:, j], grad_y[:, j]
        s, g = float(inv_std[j]), float(gamma[j])
        db = float(dy.sum())
        dg = s * float(xp.dot(dy, c))
        grad_beta[j] = db
        grad_gamma[j] = dg
        grad_x[:, j] = (g * s) * (dy - db / n - c * (s * dg / (n - ddof)))
    return grad_x, grad_gamma, grad_beta


# --- method 3: the explicit Jacobian ----------------------------------------------------------
def khatri_rao_identity(columns: Any) -> Any:
    """I_p ∗ A for A: (N, p): the (Np, p) matrix whose column j is e_j ⊗ A[:, j]."""
    xp = mg.backend.get_array_module(columns)
    n, p = columns.shape
    eye = xp.eye(p, dtype=columns.dtype)
    return (eye[:, None, :] * columns[None, :, :]).reshape(n * p, p)


def jacobian_x(centred: Any, inv_std: Any, gamma: Any, ddof: int) -> Any:
    """d vec(Y) / d vec(X): (Np, Np), vec stacking columns, built from Kronecker products."""
    xp = mg.backend.get_array_module(centred)
    n, p = centred.shape
    dtype = centred.dtype
    centring = xp.eye(n, dtype=dtype) - xp.asarray(1.0 / n, dtype=dtype)  # C_N
    jac = xp.kron(xp.diag(gamma * inv_std), centring)  # (D_γs ⊗ I_N)(I_p ⊗ C_N) = D_γs ⊗ C_N
    k = khatri_rao_identity(centred)
    variance_path = k @ k.T  # block diagonal: Xc_j Xc_jᵀ
    variance_path *= xp.repeat(gamma * inv_std ** 3 / (n - ddof), n)[:, None]  # (D_γs³ ⊗ I_N) ·
    jac -= variance_path
    return jac


def jacobian_backward(centred: Any, inv_std: Any, gamma: Any, grad_y: Any, ddof: int) -> Grads:
    """Build J, J_γ = I_p ∗ X̂ and J_β = I_p ⊗ 1_N, then multiply their transposes by vec(dY)."""
    xp = mg.backend.get_array_module(centred)
    n, p = centred.shape
    vec_dy = grad_y.T.reshape(-1)  # vec: the columns stacked
    grad_x = (jacobian_x(centred, inv_std, gamma, ddof).T @ vec_dy).reshape(p, n).T
    grad_gamma = khatri_rao_identity(centred * inv_std).T @ vec_dy
    grad_beta = xp.kron(xp.eye(p, dtype=centred.dtype), xp.ones((n, 1), dtype=centred.dtype)).T @ vec_dy
    return grad_x, grad_gamma, grad_beta


def jacobian_bytes(n: int, p: int, itemsize: int) -> int:
    """Estimated peak of the Jacobian route: J and K Kᵀ, each (Np)² numbers (np.kron adds ~nothing)."""
    return 2 * (n * p) ** 2 * itemsize


# --- measuring ---------------------------------------------------------------------------------
def peak_bytes(fn: Callable[[], Any], device: str) -> int:
    """Peak bytes allocated while ``fn`` runs (see the module docstring for what is counted)."""
    if device == "cpu":
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            baseline = tracemalloc.get_traced_memory()[0]
            result = fn()
            peak = tracemalloc.get_traced_memory()[1] - baseline
            del result
        finally:
            tracemalloc.stop()
        return peak
    return _gpu_peak_bytes(fn)


def _gpu_peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak of the bytes CuPy's pool hands out during ``fn`` (a MemoryHook counting malloc and free)."""
    import cupy

    class PeakHook(cupy.cuda.MemoryHook):
        name = "PeakHook"

        def __init__(self) -> None:
            self.current = 0
            self.peak = 0
            self.sizes: dict[int, int] = {}

        # CuPy calls the hooks with keyword arguments (device_id, size, mem_size, mem_ptr, pmem_id).
        def malloc_postprocess(self, **kwargs: Any) -> None:
            self.sizes[kwargs["mem_ptr"]] = kwargs["mem_size"]
            self.current += kwargs["mem_size"]
            self.peak = max(self.peak, self.current)

        def free_postprocess(self, **kwargs: Any) -> None:
            self.current -= self.sizes.pop(kwargs["mem_ptr"], 0)

    cupy.cuda.Device().synchronize()
    hook = PeakHook()
    with hook:
        result = fn()
        cupy.cuda.Device().synchronize()
        del result
    return hook.peak


def max_relative_error(got: Grads, want: Grads) -> float:
    """Largest |got − want| over the three gradients, each relative to want's largest entry."""
    worst = 0.0
    for a, b in zip(got, want):
        a, b = to_device(a, "cpu"), to_device(b, "cpu")
        scale = max(float(abs(b).max()), 1e-300)
        worst = max(worst, float(abs(a - b).max()) / scale)
    return worst


def run_case(n: int, p: int, device: str, dtype: str, ddof: int, eps: float, cap_bytes: int,
             min_reps: int, min_seconds: float) -> dict:
    """Time, peak memory and agreement of every method on one (N, p)."""
    xp = common.array_module(device)
    sync = common.synchronizer(device)
    problem = make_problem(n, p, xp, dtype)
    node = minigraph_node(problem, ddof, eps)
    fused_node = minigraph_node(problem, ddof, eps, fused=True)
    centred, inv_std = forward_statistics(problem["x"], ddof, eps)
    gamma, grad_y = problem["gamma"], problem["grad_y"]
    itemsize = problem["x"].itemsize
    methods: dict[str, Callable[[], Grads]] = {
        "minigraph": lambda: minigraph_backward(node, grad_y),
        "minigraph fused": lambda: minigraph_backward(fused_node, grad_y),
        "loop": lambda: loop_backward(centred, inv_std, gamma, grad_y, ddof),
        "jacobian": lambda: jacobian_backward(centred, inv_std, gamma, grad_y, ddof),
    }
    estimate = jacobian_bytes(n, p, itemsize)
    skipped = {}
    if fused_node is None:
        skipped["minigraph fused"] = ("skipped: no fused kernel serves these arrays (numba not installed, "
                                      "MINIGRAPH_FUSED=0, or a GPU array)")
    if estimate > cap_bytes:
        skipped["jacobian"] = (f"skipped: the Jacobian needs ~{estimate / 2**30:.1f} GiB, "
                               f"above the {cap_bytes / 2**30:.1f} GiB cap")
    reference = methods["minigraph"]()
    tolerance = 1e-9 if dtype == "float64" else 2e-4
    result: dict[str, Any] = {"n": n, "p": p, "np": n * p, "dtype": dtype, "device": device,
                              "methods": {}}
    for name in METHODS:
        if name in skipped:
            result["methods"][name] = {"skipped": skipped[name]}
            continue
        fn = methods[name]
        error = max_relative_error(fn(), reference)
        times = common.time_calls(fn, sync, min_reps=min_reps, min_seconds=min_seconds)
        result["methods"][name] = {
            "seconds": common.median(times),
            "repetitions": len(times),
            "peak_bytes": peak_bytes(fn, device),
            "max_relative_error": error,
            "agrees": error <= tolerance,
        }
    result["jacobian_estimated_bytes"] = estimate
    return result


# --- reporting ---------------------------------------------------------------------------------
def table(results: list[dict]) -> str:
    headers = ["N", "p", "N·p"] + [f"{m} ms" for m in METHODS] + [f"{m} MiB" for m in METHODS] + \
              [f"{SHORT[m]} / mg" for m in METHODS[1:]] + ["all agree"]
    rows = []
    for r in results:
        m = r["methods"]
        seconds = [m[k].get("seconds") for k in METHODS]
        mib = [m[k]["peak_bytes"] / 2**20 if "peak_bytes" in m[k] else None for k in METHODS]
        base = seconds[0]
        ratio = [s / base if s is not None and base else None for s in seconds[1:]]
        agree = all(v.get("agrees", True) for v in m.values())
        rows.append([r["n"], r["p"], r["np"]] + [s * 1e3 if s is not None else None for s in seconds]
                    + mib + [_times(x) for x in ratio]
                    + ["yes" if agree else "NO"])
    return common.format_table(headers, rows)


def _times(ratio: float | None) -> str | None:
    if ratio is None:
        return None
    return f"{ratio:.1f}×" if ratio < 10 else f"{ratio:,.0f}×"


def plot(results: list[dict], path: str) -> None:
    """Log-log PNG: backward time against N·p, one colour per method, one marker per p."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"minigraph": "tab:blue", "minigraph fused": "tab:green", "loop": "tab:orange",
               "jacobian": "tab:red"}
    markers = "osD^v<>"
    ps = sorted({r["p"] for r in results})
    fig, ax = plt.subplots(figsize=(9.5, 5))
    for method in METHODS:
        for index, p in enumerate(ps):
            points = sorted((r["np"], r["methods"][method]["seconds"]) for r in results
                            if r["p"] == p and "seconds" in r["methods"][method])
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, color=colours[method], marker=markers[index % len(markers)],
                        label=f"{method}, p={p}", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N·p (elements of X)")
    ax.set_ylabel("backward time (s)")
    ax.set_title("Batch norm backward: vectorized (formula, fused) vs per-feature loop vs explicit Jacobian")
    ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes; runs in seconds")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all results")
    parser.add_argument("--plot", metavar="PATH", help="write a log-log PNG of time against N·p")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--ns", type=int, nargs="+", help="batch sizes N (default: a grid)")
    parser.add_argument("--ps", type=int, nargs="+", help="feature counts p (default: a grid)")
    parser.add_argument("--ddof", type=int, default=0)
    parser.add_argument("--eps", type=float, default=1e-5)
    parser.add_argument("--jacobian-cap-gib", type=float, default=2.0,
                        help="skip the Jacobian where its estimated peak exceeds this (GiB)")
    args = parser.parse_args(argv)

    try:
        common.array_module(args.device)
    except RuntimeError as exc:  # --device gpu without a usable GPU
        parser.error(str(exc))
    ns = args.ns or (QUICK_NS if args.quick else FULL_NS)
    ps = args.ps or (QUICK_PS if args.quick else FULL_PS)
    min_reps, min_seconds = (1, 0.0) if args.quick else (5, 0.2)
    cap = int(args.jacobian_cap_gib * 2**30)
    results = []
    for n in ns:
        for p in ps:
            results.append(run_case(n, p, args.device, args.dtype, args.ddof, args.eps, cap,
                                    min_reps, min_seconds))
            if not args.json:
                print(f"  done N={n}, p={p}", file=sys.stderr)
    info = common.machine_info()
    print(f"batch norm backward, {args.dtype} on {args.device} ({info['cpu']}); "
          f"median time per call, tracemalloc peak per call")
    print(table(results))
    for r in results:
        for method, m in r["methods"].items():
            if "skipped" in m:
                print(f"note: N={r['n']}, p={r['p']}: {method} {m['skipped']}")
    print(f"tuning variables: {common.env_summary(info['env'])}")
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    report = {"benchmark": "bn_backward", "dtype": args.dtype, "device": args.device,
              "ddof": args.ddof, "eps": args.eps, "machine": info, "results": results}
    if args.json:
        print(json.dumps(report))
    if not all(m.get("agrees", True) for r in results for m in r["methods"].values()):
        print("error: the methods disagree (see 'all agree')", file=sys.stderr)
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
