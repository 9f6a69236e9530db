"""One training step of the example net through minigraph, hand-written NumPy and PyTorch; engine overheads.

The net: (Linear → BatchNorm1d → ReLU) × 2 → Linear, MSE loss, one SGD update; widths
256 → 512 → 512 → 1, float32. Variants, each in its own worker process, alternating for --rounds
rounds: ``minigraph`` (MINIGRAPH_FUSED=1), ``minigraph-formula`` (MINIGRAPH_FUSED=0), ``numpy``
(by hand against NumPy, or CuPy on the GPU) and ``torch`` (eager; CUDA on the GPU). Also timed: a
chain of ReLUs (engine overhead per node), one call of the array library alone (the host's
cost per launch, which differs between machines and bounds every launch-bound figure) and batch
norm forward + backward alone, with its effective bandwidth against a copy. The first step's
loss and gradient norms must agree across the variants before a second round runs, or the script
exits 1. BENCHMARKS.md gives the method.

    python benchmarks/train_step.py                  # CPU: N = 2048, 4096
    python benchmarks/train_step.py --device gpu     # GPU: N = 256, 4096, 65536
    python benchmarks/train_step.py --quick --json   # tiny sizes, one round: a smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as common  # noqa: E402  (benchmarks/ is not a package)

import numpy  # noqa: E402

VARIANTS = ("minigraph", "minigraph-formula", "numpy", "torch")
FUSED = {"minigraph": "1", "minigraph-formula": "0"}  # MINIGRAPH_FUSED in the worker's environment
WIDTHS, HIDDEN = (256, 512, 512, 1), 2
LEARNING_RATE, EPS, MOMENTUM = 0.01, 1e-5, 0.1  # MOMENTUM: of the running statistics, as PyTorch's
SIZES = {"cpu": ([2048, 4096], ["2048x512", "4096x512"]),  # step N, batch norm N×p
         "gpu": ([256, 4096, 65536], ["4096x512", "65536x512", "1048576x64"]),
         "quick": ([64], ["256x64"])}
REPS = {"full": {"steps": 10, "warmup": 3, "chain": 2000, "chain_reps": 7, "bn_reps": 20},
        "quick": {"steps": 2, "warmup": 1, "chain": 200, "chain_reps": 2, "bn_reps": 3}}
PER_NODE = {"chain": "µs/node", "call": "µs/call"}  # rows given per node or per call, not per run
# The largest minigraph / PyTorch ratio the open issues ask for (CPU: issue 9; GPU: issue 8,
# whose step target starts at N = 4096: the smaller step is launch-bound).
# Passes over (N, p) that batch norm's forward + backward must make, for its bandwidth. CPU: 5 (read
# X, write Y; read dY and X, write dX): the kernels work in row blocks that stay in cache for their
# second read. GPU: 8, since the data (134 MB at 65536 × 512) is far larger than any cache and every
# output needs whole-column statistics first: forward read X, read X and write Y; backward read dY
# and X, read them again and write dX. That is what the CUDA kernels move, and PyTorch's too.
PASSES = {"cpu": 5, "gpu": 8}
TARGETS = {("cpu", "step"): 1.0, ("cpu", "batch_norm"): 0.5, ("cpu", "chain"): 1.5,
           ("gpu", "step"): 1.2, ("gpu", "batch_norm"): 1.0}


def initial_parameters(seed: int = 0) -> dict[str, numpy.ndarray]:
    """Host arrays under nn.Sequential's names; weights (in, out) ~ N(0, 2/in), biases 0, γ 1, β 0."""
    rng, params = numpy.random.default_rng(seed), {}
    for i, (fan_in, fan_out) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
        params[f"{3 * i}.weight"] = rng.normal(0.0, (2.0 / fan_in) ** 0.5, size=(fan_in, fan_out))
        params[f"{3 * i}.bias"] = numpy.zeros(fan_out)
        if i < HIDDEN:  # batch norm's γ and β
            params[f"{3 * i + 1}.weight"] = numpy.ones(fan_out)
            params[f"{3 * i + 1}.bias"] = numpy.zeros(fan_out)
    return params


def make_data(n: int, seed: int = 1) -> tuple[numpy.ndarray, numpy.ndarray]:
    """x: (N, 256) standard normal; y: (N, 1) a smooth function of x plus noise."""
    rng = numpy.random.default_rng(seed)
    x = rng.normal(size=(n, WIDTHS[0]))
    return x, numpy.tanh(x[:, :8].sum(axis=1, keepdims=True) / 3) + 0.1 * rng.normal(size=(n, 1))


class Library:
    """minigraph or PyTorch behind the names the two share; the measurements are written once against it."""

    def __init__(self, name: str, device: str) -> None:
        self.torch = name == "torch"
        if self.torch:
            import torch as lib

            self.target = lib.device("cuda" if device == "gpu" else "cpu")
            self.options = {"device": self.target, "dtype": lib.float32}
            self.sync = lib.cuda.synchronize if device == "gpu" else (lambda: None)
        else:
            import minigraph as lib

            self.options, self.sync = {"device": device, "dtype": "float32"}, common.synchronizer(device)
        self.lib, self.device, self.nn, self.relu = lib, device, lib.nn, lib.relu

    def array(self, host: numpy.ndarray) -> Any:
        """float32 on the device: a torch tensor, or minigraph's raw array (NumPy or CuPy)."""
        host = numpy.ascontiguousarray(host, dtype=numpy.float32)
        if self.torch:
            return self.lib.from_numpy(host).to(self.target)
        return self.lib.backend.to_device(host, self.device)

    def tensor(self, host: numpy.ndarray, requires_grad: bool = False) -> Any:
        if self.torch:
            return self.array(host).requires_grad_(requires_grad)
        return self.lib.Tensor(self.array(host), requires_grad=requires_grad)

    def step(self, params: dict, x: numpy.ndarray, y: numpy.ndarray) -> Callable[[], tuple]:
        """One step of the example net: zero_grad, forward, MSE loss, backward, SGD; -> (loss, grads)."""
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
            layers.append(self.nn.Linear(fan_in, fan_out, **self.options))
            if i < HIDDEN:
                layers += [self.nn.BatchNorm1d(fan_out, eps=EPS, momentum=MOMENTUM, **self.options),
                           self.nn.ReLU()]
        model = self.nn.Sequential(*layers)
        named = list(model.named_parameters())
        for name, param in named:  # torch stores a Linear weight as (out, in)
            param.data[...] = self.array(params[name].T if self.torch else params[name])
        loss_fn, optimizer = self.nn.MSELoss(), self.lib.optim.SGD(model.parameters(), lr=LEARNING_RATE)
        x, y = self.tensor(x), self.tensor(y)

        def step() -> tuple[Any, dict]:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            grads = {name: param.grad for name, param in named}
            optimizer.step()
            return loss, grads
        return step


def hand_written_step(xp: Any, params: dict, x: numpy.ndarray, y: numpy.ndarray) -> Callable[[], tuple]:
    """The same step by hand against ``xp`` (NumPy or CuPy), no graph, as fast as we could write it.

    Every (N, p) array is allocated on the first step and written with ``out=`` after that (which
    no graph rebuilt each step can do; on the CPU it saves the page faults of fresh memory). Bias,
    centring and ReLU update in place, dX overwrites the centred data, column sums are
    matrix-vector products, and the (N, 1) × (1, p) outer product is a broadcast multiply.
    """
    p = {name: xp.asarray(value.astype(numpy.float32)) for name, value in params.items()}
    x, y, ones = xp.asarray(x.astype("f4")), xp.asarray(y.astype("f4")), xp.ones(len(x), "f4")
    running = [(xp.zeros(w, "f4"), xp.ones(w, "f4")) for w in WIDTHS[1:-1]]
    buffers: dict[str, Any] = {}
    n, last = len(x), f"{3 * HIDDEN}."

    def buf(key: str, shape: tuple, dtype: str = "f4") -> Any:
        return buffers[key] if key in buffers else buffers.setdefault(key, xp.empty(shape, dtype))

    def column_dot(a: Any, b: Any) -> Any:  # 1ᵀ(A ⊙ B); einsum is NumPy's fastest (column_dot.py)
        return xp.einsum("ij,ij->j", a, b) if xp is numpy else (a * b).sum(axis=0)

    def step() -> tuple[Any, dict]:
        saved, h = [], x
        for i, (running_mean, running_var) in enumerate(running):
            lin, bn = f"{3 * i}.", f"{3 * i + 1}."
            z = xp.matmul(h, p[lin + "weight"], out=buf(f"z{i}", (n, WIDTHS[i + 1])))
            z += p[lin + "bias"]
            mean = (ones @ z) / n
            z -= mean  # z is now Xc, kept for backward
            sum_sq = column_dot(z, z)
            inv_std = 1.0 / xp.sqrt(sum_sq / n + EPS)
            running_mean[...] = (1.0 - MOMENTUM) * running_mean + MOMENTUM * mean
            running_var[...] = (1.0 - MOMENTUM) * running_var + (MOMENTUM / (n - 1)) * sum_sq
            a = xp.multiply(z, p[bn + "weight"] * inv_std, out=buf(f"a{i}", z.shape))
            a += p[bn + "bias"]
            xp.maximum(a, 0, out=a)  # ReLU in place: the next input, and the backward's mask
            saved.append((h, z, inv_std, a))
            h = a
        diff = xp.matmul(h, p[last + "weight"], out=buf("out", (n, 1)))
        diff += p[last + "bias"]
        diff -= y
        loss = (diff[:, 0] @ diff[:, 0]) / n
        diff *= 2.0 / n  # dL/dout
        grads = {last + "weight": xp.matmul(h.T, diff, out=buf("dW", p[last + "weight"].shape)),
                 last + "bias": ones @ diff}
        grad_a = xp.multiply(diff, p[last + "weight"].T, out=buf(f"da{HIDDEN - 1}", h.shape))
        for i in reversed(range(HIDDEN)):
            lin, bn = f"{3 * i}.", f"{3 * i + 1}."
            h_in, centred, inv_std, a = saved[i]
            grad_a *= xp.greater(a, 0, out=buf(f"mask{i}", a.shape, "bool"))
            grads[bn + "bias"] = grad_beta = ones @ grad_a
            grads[bn + "weight"] = grad_gamma = inv_std * column_dot(grad_a, centred)
            # dX = (γ ⊙ s) ⊙ [dY − 1 dβ / N − Xc ⊙ (s ⊙ dγ) / N], over Xc (not needed after)
            centred *= inv_std * grad_gamma / -n
            centred += grad_a
            centred -= grad_beta / n
            centred *= p[bn + "weight"] * inv_std
            grads[lin + "weight"] = xp.matmul(h_in.T, centred, out=buf(f"dW{i}", p[lin + "weight"].shape))
            grads[lin + "bias"] = ones @ centred
            if i > 0:
                grad_a = xp.matmul(centred, p[lin + "weight"].T, out=buf(f"da{i - 1}", h_in.shape))
        for name, grad in grads.items():  # SGD; the returned gradients stay unscaled
            p[name] -= xp.multiply(grad, LEARNING_RATE, out=buf("step " + name, grad.shape))
        return loss, grads
    return step


def chain_seconds(lib: Library, length: int, reps: int) -> float:
    """A chain of ``length`` ReLUs on a 4×4 leaf, forward then backward: median seconds per node."""
    leaf, upstream = lib.tensor(numpy.ones((4, 4)), requires_grad=True), lib.array(numpy.ones((4, 4)))

    def run() -> None:
        h = leaf
        for _ in range(length):
            h = lib.relu(h)
        h.backward(upstream)
        leaf.grad = None
    return common.median_seconds(run, lib.sync, reps) / length


def call_seconds(lib: Library, length: int, reps: int) -> float:
    """One call of the array library under the variant, max(a, 0) on a 4×4 array (NumPy or
    CuPy's ``maximum``; ``torch.relu``: each library's call for a ReLU forward), ``length`` in a
    row: median seconds per call. What a launch costs the host, with no engine around it: a ReLU
    node makes three such calls."""
    a = lib.array(numpy.ones((4, 4)))
    call = (lambda: lib.lib.relu(a)) if lib.torch else (lambda: common.array_module(lib.device).maximum(a, 0))

    def run() -> None:
        for _ in range(length):
            call()
    return common.median_seconds(run, lib.sync, reps) / length


def batch_norm_seconds(lib: Library, x_host: numpy.ndarray, reps: int) -> float:
    """nn.BatchNorm1d forward + backward, training mode, on x: (N, p); median seconds."""
    layer = lib.nn.BatchNorm1d(x_host.shape[1], eps=EPS, momentum=MOMENTUM, **lib.options)
    x = lib.tensor(x_host, requires_grad=True)
    grad_y = lib.array(numpy.random.default_rng(3).standard_normal(x_host.shape, dtype=numpy.float32))

    def run() -> None:
        layer.zero_grad()
        x.grad = None
        layer(x).backward(grad_y)
    return common.median_seconds(run, lib.sync, reps, warmup=2)


def worker(variant: str, args: argparse.Namespace) -> dict:
    """Every measurement for ``variant``, in this process; figures in seconds."""
    reps, device = REPS["quick" if args.quick else "full"], args.device
    if args.keep_freed_memory:  # before any array: every variant's process gets the same allocator
        from minigraph.memory import keep_freed_memory

        keep_freed_memory()
    lib = Library(variant, device) if variant != "numpy" else None
    sync, prints, times = lib.sync if lib else common.synchronizer(device), {}, {}
    for n in args.ns:
        x, y = make_data(n)
        step = lib.step(initial_parameters(), x, y) if lib else \
            hand_written_step(common.array_module(device), initial_parameters(), x, y)
        prints[str(n)] = fingerprint(*step())  # the first step, from the shared start
        for _ in range(reps["warmup"]):
            step()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt  # fresh memory mapped and zeroed
        seconds = common.median_seconds(step, sync, reps["steps"], warmup=0)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / reps["steps"]
        times[f"step N={n}"] = {"seconds": seconds, "page_faults_per_step": faults}
    if variant in ("minigraph", "torch"):
        times["chain"] = {"seconds": chain_seconds(lib, reps["chain"], reps["chain_reps"])}
        times["call"] = {"seconds": call_seconds(lib, reps["chain"], reps["chain_reps"])}
    for shape in args.bn_shapes if lib else []:
        x_host = numpy.random.default_rng(2).standard_normal(tuple(map(int, shape.split("x"))),
                                                               dtype=numpy.float32) * 2 + 1
        times[f"batch_norm {shape}"] = {"seconds": batch_norm_seconds(lib, x_host, reps["bn_reps"])}
        if variant == "minigraph":  # the bandwidth yardstick, once
            source = common.array_module(device).asarray(x_host)
            times[f"copy {shape}"] = {"seconds": common.median_seconds(source.copy, sync, reps["bn_reps"])}
    return {"fingerprint": prints, "times": times,
            "machine": common.machine_info(device) if variant == "minigraph" else None,
            "torch": common.torch_info(device) if variant == "torch" else None}


def fingerprint(loss: Any, grads: dict) -> dict[str, float]:
    """The loss and every gradient's norm as host floats (a norm does not see torch's transposed weights)."""
    norms = {name: float(numpy.linalg.norm(common.to_host(g).astype("f8"))) for name, g in grads.items()}
    return {"loss": float(common.to_host(loss)), **norms}


def check_agreement(first_round: dict[str, dict], rtol: float = 2e-3) -> list[str]:
    """Each variant's first-step loss and gradient norms against minigraph's; [] when all agree."""
    problems = []
    for variant, result in first_round.items():
        for n, reference in first_round["minigraph"]["fingerprint"].items():
            for key, want in reference.items():
                got = result["fingerprint"][n].get(key)
                # Biases before batch norm have gradients that are zero up to rounding: use the loss's scale.
                if got is None or abs(got - want) > rtol * max(abs(want), 1e-3 * reference["loss"]) + 1e-6:
                    problems.append(f"N={n} {key}: minigraph {want:.6g}, {variant} {got}")
    return problems


def report_table(table: dict, device: str) -> str:
    """Medians, ratios to PyTorch, the target; for batch norm also minigraph's bandwidth ÷ a copy's."""
    variants = [v for v in VARIANTS if any(v in row for row in table.values())]
    rows = []
    for key, row in ((k, r) for k, r in table.items() if not k.startswith("copy")):
        kind, size = key.split()[0], key.split()[-1]
        ratio = {v: row[v]["seconds"] / row["torch"]["seconds"] if v in row and "torch" in row else None
                 for v in FUSED}
        limit = None if device == "gpu" and key == "step N=256" else TARGETS.get((device, kind))
        met = None if limit is None or ratio["minigraph"] is None else ratio["minigraph"] <= limit
        bandwidth = [None, None]
        if kind == "batch_norm":  # (PASSES N p 4 bytes / time) / (2 N p 4 bytes / copy time)
            copy = table[f"copy {size}"]["minigraph"]["seconds"]
            bandwidth = [PASSES[device] / 2 * copy / row[v]["seconds"] for v in FUSED]
        rows.append([f"{key} ({PER_NODE.get(kind, 'ms')})",
                     *(row[v]["seconds"] * (1e6 if kind in PER_NODE else 1e3) if v in row else None
                       for v in variants), ratio["minigraph"], ratio["minigraph-formula"],
                     limit and f"≤ {limit}", {True: "yes", False: "no"}.get(met), *bandwidth])
    headers = ["measurement", *variants, "minigraph / PyTorch", "formula / PyTorch", "target (× PyTorch)",
               "met", "bandwidth ÷ copy", "formula bandwidth ÷ copy"]
    return common.format_table(headers, rows)


def main(argv: list[str] | None = None) -> dict | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: a smoke test")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all results")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--rounds", type=int, help="alternating rounds of workers (default 5; 3 on the GPU)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="every worker first calls minigraph.memory.keep_freed_memory()")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.ns, args.bn_shapes = SIZES["quick" if args.quick else args.device]
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return None
    try:
        common.array_module(args.device)
    except RuntimeError as exc:  # --device gpu without a usable GPU
        parser.error(str(exc))
    # PyTorch where it is installed, and on the GPU where it sees CUDA.
    has_torch = importlib.util.find_spec("torch") is not None
    has_torch = has_torch and (args.device == "cpu" or __import__("torch").cuda.is_available())
    variants = [v for v in VARIANTS if v != "torch" or has_torch]

    rounds, problems = [], []
    for index in range(args.rounds or (1 if args.quick else 5 if args.device == "cpu" else 3)):
        rounds.append({v: common.run_worker(__file__, argv, v, {"MINIGRAPH_FUSED": FUSED[v]} if v in FUSED
                                            else None) for v in variants})
        problems = check_agreement(rounds[0]) if index == 0 else problems
        if problems:
            break  # no figures from code that computes something else
        print(f"  round {index + 1} done", file=sys.stderr)
    # The parent's environment: each worker's MINIGRAPH_FUSED is its variant's.
    machine = {**rounds[0]["minigraph"]["machine"], "env": {k: os.environ.get(k) for k in common.WATCHED_ENV},
               "torch": rounds[0].get("torch", {}).get("torch")}
    table = common.over_rounds([{v: result["times"] for v, result in r.items()} for r in rounds])
    print(f"one training step, widths {' → '.join(map(str, WIDTHS))}, float32, on {args.device} "
          f"({common.describe_machine(machine)}); median of {len(rounds)} alternating worker rounds")
    print(report_table(table, args.device))
    if not has_torch:
        print(f"note: PyTorch{' with CUDA' if args.device == 'gpu' else ''} is not available: no ratios")
    print(f"tuning variables: {common.env_summary(machine['env'])}")
    print("DISAGREEMENT:\n  " + "\n  ".join(problems) if problems
          else "the variants agree on the first step's loss and gradients")
    common.emit({"benchmark": "train_step", "device": args.device, "widths": WIDTHS, "ns": args.ns,
                 "bn_shapes": args.bn_shapes, "rounds": len(rounds), "variants": variants,
                 "keep_freed_memory": args.keep_freed_memory,
                 "machine": machine, "results": table, "agree": not problems, "problems": problems,
                 "fingerprints": {v: rounds[0][v]["fingerprint"] for v in variants}}, args.json)
    if problems:
        sys.exit(1)
    return table


if __name__ == "__main__":
    main()
