"""Layer norm forward + backward on the CPU: minigraph's formula, its fused numba kernel, and PyTorch.

Each call is one ``layer_norm(x, (D,), weight, bias)`` over x: (M, D) float32 and one backward
with a fixed dY, the three gradients (dX, dγ, dβ) included. Every variant runs in its own
worker process (two thread pools in one process fight over the cores), and the workers
alternate for ``--rounds`` rounds; each figure is the median over the rounds of the median
per call. The workers also return y and dX's first row, which must agree with the formula's.

    OPENBLAS_NUM_THREADS=1 python benchmarks/layer_norm.py   # (4096, 1024) and (32768, 64)
    python benchmarks/layer_norm.py --quick --json            # one tiny shape: a smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as common  # noqa: E402  (benchmarks/ is not a package)

import numpy  # noqa: E402

SCRIPT = Path(__file__).resolve()
SHAPES = {"full": ((4096, 1024), (32768, 64)), "quick": ((64, 16),)}
# variant -> MINIGRAPH_FUSED in its worker's environment (torch ignores it)
VARIANTS = {"minigraph-formula": "0", "minigraph-fused": "1", "torch": "1"}


def problem(shape: tuple[int, int]) -> list[numpy.ndarray]:
    """x with rows of different offsets, weight, bias, dY: float32, the same in every worker."""
    rng = numpy.random.default_rng(0)
    x = rng.normal(size=shape) * 2 + rng.normal(size=(shape[0], 1)) * 3
    arrays = x, rng.uniform(0.5, 2, size=shape[1]), rng.normal(size=shape[1]), rng.normal(size=shape)
    return [a.astype(numpy.float32) for a in arrays]


def step_for(variant: str, x: numpy.ndarray, weight: numpy.ndarray, bias: numpy.ndarray, grad_y: numpy.ndarray):
    """A function running one forward + backward and returning (y, dX)."""
    if variant == "torch":
        import torch

        leaves = [torch.from_numpy(a).requires_grad_() for a in (x, weight, bias)]
        upstream = torch.from_numpy(grad_y)

        def step():
            for leaf in leaves:
                leaf.grad = None
            y = torch.nn.functional.layer_norm(leaves[0], x.shape[1:], leaves[1], leaves[2])
            y.backward(upstream)
            return y, leaves[0].grad
        return step
    import minigraph as mg

    leaves = [mg.Tensor(a, requires_grad=True) for a in (x, weight, bias)]

    def step():
        for leaf in leaves:
            leaf.grad = None
        y = mg.layer_norm(leaves[0], x.shape[1:], leaves[1], leaves[2])
        y.backward(grad_y)
        return y, leaves[0].grad
    return step


def worker(variant: str, shapes: list[tuple[int, int]], min_reps: int, min_seconds: float) -> dict:
    results = {}
    for shape in shapes:
        step = step_for(variant, *problem(shape))
        times = common.time_calls(step, lambda: None, min_reps=min_reps, min_seconds=min_seconds, warmup=2)
        y, grad_x = step()
        results[f"{shape[0]}x{shape[1]}"] = {"seconds": common.median(times),
                                             # which path minigraph's node took (torch's nodes have no kernel)
                                             "fused": getattr(y.grad_fn, "kernel", None) is not None,
                                             "y0": common.to_host(y)[0].tolist(),
                                             "dx0": common.to_host(grad_x)[0].tolist()}
    return {"results": results, "machine": common.machine_info("cpu")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one tiny shape, one round: a smoke test")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all results")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shapes = SHAPES["quick" if args.quick else "full"]
    min_reps, min_seconds = (1, 0.0) if args.quick else (10, 0.5)
    if args.worker:
        print(json.dumps(worker(args.worker, shapes, min_reps, min_seconds)))
        return {}
    variants = dict(VARIANTS)
    try:
        import torch  # noqa: F401  (only to know whether its worker can run)
    except ImportError:
        del variants["torch"]
    argv_out = ["--quick"] if args.quick else []
    rounds, machine = [], None
    for _ in range(1 if args.quick else args.rounds):
        this_round = {}
        for variant, fused in variants.items():
            done = common.run_worker(str(SCRIPT), argv_out, variant, env={"MINIGRAPH_FUSED": fused})
            this_round[variant] = done["results"]
            if variant == "minigraph-fused":  # the record with numba's version in it
                machine = done["machine"]
        rounds.append(this_round)
    machine["env"] = common.machine_info("cpu")["env"]  # as given: MINIGRAPH_FUSED is set per worker
    table = common.over_rounds([{v: {k: {"seconds": f["seconds"]} for k, f in r.items()} for v, r in rnd.items()}
                                for rnd in rounds])
    first = rounds[0]
    agree = all(numpy.allclose(first[v][k][name], first["minigraph-formula"][k][name], rtol=1e-4, atol=1e-5)
                for v in variants for k in first[v] for name in ("y0", "dx0"))
    print(f"layer norm forward + backward, float32, CPU ({common.describe_machine(machine)}); "
          f"{common.env_summary(machine['env'])}; MINIGRAPH_FUSED set per variant")
    def cell(figures: dict) -> str:
        spread = figures["seconds_over_rounds"]
        return f"{figures['seconds'] * 1e3:.2f} ({spread['min'] * 1e3:.1f}–{spread['max'] * 1e3:.1f})"

    print(f"median ms per call (the rounds' min–max) over {len(rounds)} round(s)")
    print(common.format_table(["M × D"] + list(variants),
                              [[key.replace("x", " × ")] + [cell(table[key][v]) for v in variants] for key in table]))
    fused_ran = all(f["fused"] for rnd in rounds for f in rnd["minigraph-fused"].values())
    print(f"y and dX agree with the formula's: {agree}; minigraph-fused ran the kernel: {fused_ran}")
    report = {"benchmark": "layer_norm", "machine": machine, "variants": list(variants), "agree": agree,
              "fused_ran": fused_ran, "results": table}
    common.emit(report, args.json)
    return report


if __name__ == "__main__":
    main()
