"""Batch norm forward + backward on the GPU: the CUDA kernels, minigraph's node on both paths, PyTorch.

Training mode, float32, x: (N, p) with a random dY. Timed in one process, on one stream:

- ``kernels``: ``minigraph/kernels/gpu.py`` called directly (no graph): forward, then backward;
- ``minigraph``: ``mg.batch_norm`` and ``backward`` through the graph, running statistics
  updated, on the kernels (MINIGRAPH_FUSED=1) and on the formula (``formula``, MINIGRAPH_FUSED=0);
- ``torch``: ``torch.nn.functional.batch_norm`` in training mode on CUDA, forward and backward;
- ``copy``: a device-to-device copy of x by CuPy and by PyTorch, the bandwidth yardstick.

Each figure is the median over rounds of (time of ``reps`` calls back to back) / reps, with
the device synchronised before the clock starts and before it stops: the throughput of
queued work, as a training loop sees it. Bandwidth counts the 8 passes over (N, p) that a
forward and backward must make when the data does not fit in cache (BENCHMARKS.md), and a
copy's 2.

    python benchmarks/bn_gpu.py           # 4096×512, 65536×512, 1048576×64
    python benchmarks/bn_gpu.py --quick   # one small shape, a smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as common  # noqa: E402  (benchmarks/ is not a package)

import numpy  # noqa: E402

SHAPES = {"full": ["4096x512", "65536x512", "1048576x64"], "quick": ["256x64"]}
REPS = {"full": (20, 7), "quick": (3, 2)}  # calls per round, rounds
EPS = 1e-5
AGREEMENT = 1e-4  # float32 paths that compute the same function differ by rounding, far below this
PASSES = 8  # forward: read X; read X, write Y. Backward: read dY, X; read dY, X, write dX.


def pipelined_seconds(fn: Callable[[], Any], sync: Callable[[], None], reps: int, rounds: int) -> float:
    """Median over ``rounds`` of the seconds per call of ``reps`` calls queued back to back."""
    fn()  # warm-up: compiles, allocates the pool
    sync()
    per_call = []
    for _ in range(rounds):
        sync()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        per_call.append((time.perf_counter() - start) / reps)
    return common.median(per_call)


def measure(shape: str, reps: int, rounds: int, has_torch: bool) -> dict[str, float]:
    import cupy

    import minigraph as mg
    from minigraph.kernels import gpu

    n, p = map(int, shape.split("x"))
    rng = cupy.random.default_rng(0)
    x = rng.standard_normal((n, p), dtype=cupy.float32) * 2 + 1
    grad_y = rng.standard_normal((n, p), dtype=cupy.float32)
    gamma, beta = cupy.ones(p, cupy.float32), cupy.zeros(p, cupy.float32)
    sync = common.synchronizer("gpu")
    times: dict[str, float] = {}

    def kernels() -> None:
        y, _, _, saved, _ = gpu.batch_norm_forward(x, gamma, beta, EPS, 0)
        gpu.batch_norm_backward(saved, grad_y, 0, (True, True, True))

    has_kernels = not getattr(cupy, "IS_STANDIN", False)  # the CPU stand-in runs no CUDA: formula and copy only
    if has_kernels:
        gpu.compile_for("batch_norm", numpy.float32)
        times["kernels"] = pipelined_seconds(kernels, sync, reps, rounds)

    running = cupy.zeros(p, cupy.float32), cupy.ones(p, cupy.float32)
    tx = mg.Tensor(x, requires_grad=True)
    tg, tb = mg.Tensor(gamma, requires_grad=True), mg.Tensor(beta, requires_grad=True)

    def node() -> None:
        tx.grad = tg.grad = tb.grad = None
        mg.batch_norm(tx, tg, tb, *running, eps=EPS).backward(grad_y)

    outputs = {}  # (y, dX) of each path, to check that the paths compute the same
    for name, fused in (("minigraph", "1"), ("formula", "0"))[0 if has_kernels else 1:]:
        with common.minigraph_fused(fused):
            times[name] = pipelined_seconds(node, sync, reps, rounds)
            tx.grad = None
            y = mg.batch_norm(tx, tg, tb, eps=EPS)
            y.backward(grad_y)
            outputs[name] = common.to_host(y), common.to_host(tx.grad)

    copy = cupy.empty_like(x)
    times["copy (CuPy)"] = pipelined_seconds(lambda: cupy.copyto(copy, x), sync, reps, rounds)
    if has_torch:
        import torch

        tsync = torch.cuda.synchronize
        t_x = torch.as_tensor(x, device="cuda").requires_grad_(True)
        t_grad = torch.as_tensor(grad_y, device="cuda")
        weight = torch.ones(p, device="cuda", requires_grad=True)
        bias = torch.zeros(p, device="cuda", requires_grad=True)
        t_mean, t_var = torch.zeros(p, device="cuda"), torch.ones(p, device="cuda")

        def torch_step() -> None:
            t_x.grad = weight.grad = bias.grad = None
            out = torch.nn.functional.batch_norm(t_x, t_mean, t_var, weight, bias, training=True, eps=EPS)
            out.backward(t_grad)

        times["torch"] = pipelined_seconds(torch_step, tsync, reps, rounds)
        t_x.grad = None
        out = torch.nn.functional.batch_norm(t_x, None, None, weight, bias, training=True, eps=EPS)
        out.backward(t_grad)
        outputs["torch"] = common.to_host(out), common.to_host(t_x.grad)
        t_copy = torch.empty_like(t_x)
        times["copy (torch)"] = pipelined_seconds(lambda: t_copy.copy_(t_x), tsync, reps, rounds)
    return {"seconds": times, "disagreement": disagreement(outputs)}


def disagreement(outputs: dict[str, tuple]) -> dict[str, float]:
    """Each path's largest difference from the formula's y and dX, relative to the largest |value|
    (dX's terms cancel, so its error is measured against them: |dY| ≈ 1, here)."""
    y_ref, dx_ref = (a.astype(numpy.float64) for a in outputs["formula"])
    scale = max(float(numpy.abs(y_ref).max()), 1.0)
    return {name: float(max(numpy.abs(y - y_ref).max(), numpy.abs(dx - dx_ref).max()) / scale)
            for name, (y, dx) in outputs.items() if name != "formula"}


def report(results: dict[str, dict]) -> str:
    headers = ["shape", "what", "ms", "GB/s", "÷ best copy", "÷ torch"]
    rows = []
    for shape, result in results.items():
        times = result["seconds"]
        n, p = map(int, shape.split("x"))
        one_pass = n * p * 4
        copy = min(v for k, v in times.items() if k.startswith("copy"))
        copy_rate = 2 * one_pass / copy
        for what, seconds in times.items():
            rate = (2 if what.startswith("copy") else PASSES) * one_pass / seconds
            rows.append([shape, what, seconds * 1e3, rate / 1e9, rate / copy_rate,
                         seconds / times["torch"] if "torch" in times and not what.startswith("copy") else None])
    return common.format_table(headers, rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small shape: a smoke test")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all results")
    args = parser.parse_args(argv)
    try:
        common.array_module("gpu")
    except RuntimeError as exc:
        parser.error(str(exc))
    mode = "quick" if args.quick else "full"
    reps, rounds = REPS[mode]
    try:
        import torch

        has_torch = torch.cuda.is_available()
    except ImportError:
        has_torch = False
    results = {shape: measure(shape, reps, rounds, has_torch) for shape in SHAPES[mode]}
    machine = common.machine_info("gpu")
    print(f"batch norm forward + backward, float32, training mode, on {common.describe_machine(machine)}; "
          f"median of {rounds} rounds of {reps} queued calls")
    print(report(results))
    worst = max((v for r in results.values() for v in r["disagreement"].values()), default=0.0)
    agree = worst <= AGREEMENT
    print(f"largest difference from the formula's y and dX: {worst:.1e} "
          f"({'within' if agree else 'OVER'} {AGREEMENT:g})")
    if not has_torch:
        print("note: PyTorch with CUDA is not available: no torch figures")
    common.emit({"benchmark": "bn_gpu", "shapes": SHAPES[mode], "machine": machine,
                 "torch": common.torch_info("gpu") if has_torch else None, "results": results,
                 "agree": agree}, args.json)
    if not agree:
        sys.exit(1)
    return results


if __name__ == "__main__":
    main()
