"""One training step of the example net through minigraph, hand-written NumPy and PyTorch; engine overheads.

The net: Linear → BatchNorm1d → ReLU, Linear → BatchNorm1d → ReLU, Linear, MSE loss,
one plain SGD update; widths 256 → 512 → 512 → 1, float32, N = 2048 and 4096. All of
them start from the same weights and data and must produce the same loss and
gradients (checked; float32 tolerance), or the run fails.

* ``minigraph``: ``minigraph.nn`` layers, ``nn.MSELoss`` and ``optim.SGD``.
* ``numpy`` and ``numpy-workspace``: the same formulas written by hand with no
  graph, as fast as we could make them: in-place updates of fresh buffers
  (bias, centring, ReLU, its mask in backward), the centred data's buffer
  reused for batch norm's dX, column sums as BLAS matrix-vector products, the
  (N, 1) × (1, p) outer product by broadcasting, row blocks that keep batch
  norm's four backward passes in cache. ``numpy`` gets new arrays every step,
  as minigraph does; ``numpy-workspace`` allocates every array once and writes
  into it with ``out=`` from then on, which no graph that is rebuilt each step
  can do.
* ``torch``: ``torch.nn`` eager mode with ``torch.optim.SGD``, when installed.

Also measured, per library: per-node overhead (a chain of 2,000 ReLUs on a
4×4 tensor, forward plus backward, in µs per node) and batch norm alone
(forward plus backward, N = 4096, p = 512, float32, ``nn.BatchNorm1d`` against
``torch.nn.BatchNorm1d``, with the hand-written NumPy version for reference).

Every library runs in its own process, and the processes alternate
(minigraph, numpy, numpy-workspace, torch, minigraph, ...) for ``--rounds``
rounds: two thread pools interleaved in one process fight over the cores. Each
process reports the median of its timed repetitions and its minor page faults
per step; the table shows the median over rounds.

    python benchmarks/train_step.py                   # about a minute
    python benchmarks/train_step.py --quick --json    # tiny sizes, seconds
    python benchmarks/train_step.py --device gpu      # CuPy and torch CUDA
    python benchmarks/train_step.py --keep-freed-memory   # diagnostic: no page faults
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as common  # noqa: E402  (benchmarks/ is not a package)

import numpy  # noqa: E402

LIBRARIES = ("minigraph", "numpy", "numpy-workspace", "torch")
NUMPY_KINDS = ("numpy", "numpy-workspace")
WIDTHS = (256, 512, 512, 1)
LEARNING_RATE = 0.01
EPS = 1e-5
MOMENTUM = 0.1  # batch norm's running-statistics momentum (PyTorch's default)
BLOCK_BYTES = 1 << 18  # the hand-written backward's row blocks, as in minigraph's batch norm
# glibc malloc settings for --keep-freed-memory: never hand freed memory back to the kernel.
KEEP_FREED_MEMORY = {"MALLOC_TRIM_THRESHOLD_": "4294967296", "MALLOC_MMAP_THRESHOLD_": "4294967296"}
TARGETS = {"step": ("best NumPy", 1.05), "chain": ("PyTorch", 1.5), "batch_norm": ("PyTorch", 2.0)}

Grads = dict[str, Any]


# --- shared starting point ---------------------------------------------------------------
def initial_parameters(widths: tuple[int, ...], seed: int = 0) -> dict[str, numpy.ndarray]:
    """Float64 host arrays: W{i}: (in, out) ~ N(0, 2/in), b{i} = 0; gamma{i} = 1, beta{i} = 0 per hidden layer."""
    rng = numpy.random.default_rng(seed)
    params: dict[str, numpy.ndarray] = {}
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        params[f"W{i}"] = rng.normal(0.0, (2.0 / fan_in) ** 0.5, size=(fan_in, fan_out))
        params[f"b{i}"] = numpy.zeros(fan_out)
        if i < len(widths) - 2:
            params[f"gamma{i}"] = numpy.ones(fan_out)
            params[f"beta{i}"] = numpy.zeros(fan_out)
    return params


def make_data(n: int, widths: tuple[int, ...], seed: int = 1) -> tuple[numpy.ndarray, numpy.ndarray]:
    """x: (N, widths[0]) standard normal; y: (N, 1) a smooth function of x plus noise."""
    rng = numpy.random.default_rng(seed)
    x = rng.normal(size=(n, widths[0]))
    y = numpy.tanh(x[:, :8].sum(axis=1, keepdims=True) / 3) + 0.1 * rng.normal(size=(n, 1))
    return x, y


# --- the three implementations of one step ---------------------------------------------------
class MinigraphStep:
    """The example net as ``minigraph.nn`` layers; one call = zero_grad, forward, backward, SGD step."""

    def __init__(self, params: dict, x: numpy.ndarray, y: numpy.ndarray, device: str,
                 dtype: str) -> None:
        import minigraph as mg
        from minigraph import nn, optim

        layers: list[nn.Module] = []
        hidden = len(WIDTHS) - 2
        for i, (fan_in, fan_out) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
            linear = nn.Linear(fan_in, fan_out, dtype=dtype, device=device)
            linear.weight.data[...] = mg.backend.to_device(params[f"W{i}"].astype(dtype), device)
            linear.bias.data[...] = mg.backend.to_device(params[f"b{i}"].astype(dtype), device)
            layers.append(linear)
            if i < hidden:
                layers += [nn.BatchNorm1d(fan_out, eps=EPS, momentum=MOMENTUM, dtype=dtype,
                                          device=device), nn.ReLU()]
        self.model = nn.Sequential(*layers)
        self.loss_fn = nn.MSELoss()
        self.optimizer = optim.SGD(self.model.parameters(), lr=LEARNING_RATE)
        self.x = mg.Tensor(mg.backend.to_device(x.astype(dtype), device))
        self.y = mg.Tensor(mg.backend.to_device(y.astype(dtype), device))
        self.names = {id(p): name for name, p in self.model.named_parameters()}

    def __call__(self) -> tuple[Any, Grads]:
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        grads = {self.names[id(p)]: p.grad for p in self.model.parameters()}
        self.optimizer.step()
        return loss.data, grads

    @staticmethod
    def canonical(name: str) -> str:
        """'0.weight' -> 'W0', '1.weight' -> 'gamma0', ... (Sequential indices to our names)."""
        index, kind = name.split(".")
        position = int(index)
        layer, offset = divmod(position, 3)
        if offset == 0:
            return ("W" if kind == "weight" else "b") + str(layer)
        return ("gamma" if kind == "weight" else "beta") + str(layer)


class NumpyStep:
    """The same step written by hand against an array module (NumPy, or CuPy on a GPU), no graph.

    ``workspace=False``: fresh arrays each step, as any code that builds its
    results step by step gets (minigraph included), updated in place wherever
    the math allows. ``workspace=True``: every array is allocated once and
    reused by later steps (``out=`` everywhere), so a step asks the allocator
    for nothing; that is as far as hand-written NumPy goes.
    """

    def __init__(self, params: dict, x: numpy.ndarray, y: numpy.ndarray, xp: ModuleType,
                 dtype: str, workspace: bool = False) -> None:
        device = "gpu" if xp.__name__ == "cupy" else "cpu"
        from minigraph.backend import to_device

        self.xp = xp
        self.dtype = numpy.dtype(dtype)
        self.workspace = workspace
        self.buffers: dict[str, Any] = {}
        self.p = {k: to_device(v.astype(dtype), device) for k, v in params.items()}
        hidden = len(WIDTHS) - 2
        self.running_mean = [xp.zeros(WIDTHS[i + 1], dtype=dtype) for i in range(hidden)]
        self.running_var = [xp.ones(WIDTHS[i + 1], dtype=dtype) for i in range(hidden)]
        self.x = to_device(x.astype(dtype), device)
        self.y = to_device(y.astype(dtype), device)
        self.ones = xp.ones(len(x), dtype=dtype)  # column sums as 1ᵀA: BLAS beats sum(axis=0)
        self.lr = self.dtype.type(LEARNING_RATE)

    def buffer(self, key: str, shape: tuple, dtype: Any = None) -> Any:
        """An array to write into: the one kept under ``key`` (workspace), or a new one."""
        if self.workspace and key in self.buffers:
            return self.buffers[key]
        array = self.xp.empty(shape, dtype=dtype or self.dtype)
        if self.workspace:
            self.buffers[key] = array
        return array

    def __call__(self) -> tuple[Any, Grads]:
        xp, p, ones = self.xp, self.p, self.ones
        n = self.x.shape[0]
        hidden = len(WIDTHS) - 2
        saved = []
        h = self.x
        for i in range(hidden):
            width = WIDTHS[i + 1]
            z = xp.matmul(h, p[f"W{i}"], out=self.buffer(f"z{i}", (n, width)))
            z += p[f"b{i}"]
            mean = (ones @ z) / n
            z -= mean  # z is now Xc, kept for backward
            sum_sq = xp.einsum("ij,ij->j", z, z)
            inv_std = 1.0 / xp.sqrt(sum_sq / n + EPS)
            self.running_mean[i] *= 1.0 - MOMENTUM
            self.running_mean[i] += MOMENTUM * mean
            self.running_var[i] *= 1.0 - MOMENTUM
            self.running_var[i] += (MOMENTUM / (n - 1)) * sum_sq
            a = xp.multiply(z, p[f"gamma{i}"] * inv_std, out=self.buffer(f"a{i}", (n, width)))
            a += p[f"beta{i}"]
            xp.maximum(a, 0, out=a)  # ReLU in place: a is the next input and the backward's mask
            saved.append((h, z, inv_std, a))
            h = a
        last = hidden
        diff = xp.matmul(h, p[f"W{last}"], out=self.buffer("out", (n, WIDTHS[-1])))
        diff += p[f"b{last}"]
        diff -= self.y
        flat = diff.reshape(-1)
        loss = xp.dot(flat, flat) / flat.size

        grads: Grads = {}
        grad_out = diff
        grad_out *= 2.0 / flat.size  # dL/dout, in diff's buffer
        grads[f"W{last}"] = xp.matmul(h.T, grad_out, out=self.buffer(f"dW{last}", p[f"W{last}"].shape))
        grads[f"b{last}"] = ones @ grad_out
        # (N, 1) × (1, p): an outer product, by broadcasting (BLAS is slow at inner size 1)
        grad_a = xp.multiply(grad_out, p[f"W{last}"].T, out=self.buffer(f"grad_a{last - 1}", h.shape))
        for i in reversed(range(hidden)):
            h_in, centred, inv_std, a = saved[i]
            mask = xp.greater(a, 0, out=self.buffer(f"mask{i}", a.shape, bool))
            grad_a *= mask  # ReLU's backward in place
            grad_beta = ones @ grad_a
            grad_gamma = inv_std * xp.einsum("ij,ij->j", grad_a, centred)
            grads[f"beta{i}"], grads[f"gamma{i}"] = grad_beta, grad_gamma
            grad_z = self._grad_x_into_centred(centred, inv_std * grad_gamma / -n, grad_a,
                                               grad_beta / n, p[f"gamma{i}"] * inv_std)
            grads[f"W{i}"] = xp.matmul(h_in.T, grad_z, out=self.buffer(f"dW{i}", p[f"W{i}"].shape))
            grads[f"b{i}"] = ones @ grad_z
            if i > 0:
                grad_a = xp.matmul(grad_z, p[f"W{i}"].T, out=self.buffer(f"grad_a{i - 1}", h_in.shape))
        for name, grad in grads.items():  # SGD; the gradients are returned, so they stay unscaled
            p[name] -= xp.multiply(grad, self.lr, out=self.buffer(f"step_{name}", grad.shape))
        return loss, grads

    def _grad_x_into_centred(self, centred: Any, k: Any, grad_y: Any, shift: Any, scale: Any) -> Any:
        """dX = ((Xc ⊙ k + dY) − shift) ⊙ scale, written over Xc (no longer needed), in row blocks."""
        n, width = centred.shape
        rows = n if self.xp is not numpy else max(1, BLOCK_BYTES // (width * centred.itemsize))
        for first in range(0, n, rows):
            block = centred[first:first + rows]
            block *= k
            block += grad_y[first:first + rows]
            block -= shift
            block *= scale
        return centred


class TorchStep:
    """The same net as ``torch.nn`` modules in eager mode, with ``torch.optim.SGD``."""

    def __init__(self, params: dict, x: numpy.ndarray, y: numpy.ndarray, device: str,
                 dtype: str) -> None:
        import torch

        self.torch = torch
        target = torch.device("cuda" if device == "gpu" else "cpu")
        torch_dtype = getattr(torch, dtype)
        layers: list[torch.nn.Module] = []
        hidden = len(WIDTHS) - 2
        with torch.no_grad():
            for i, (fan_in, fan_out) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
                linear = torch.nn.Linear(fan_in, fan_out)
                linear.weight.copy_(torch.from_numpy(params[f"W{i}"].T.copy()))  # torch stores (out, in)
                linear.bias.copy_(torch.from_numpy(params[f"b{i}"]))
                layers.append(linear)
                if i < hidden:
                    layers += [torch.nn.BatchNorm1d(fan_out, eps=EPS, momentum=MOMENTUM),
                               torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers).to(device=target, dtype=torch_dtype)
        self.loss_fn = torch.nn.MSELoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LEARNING_RATE)
        self.x = torch.from_numpy(x).to(device=target, dtype=torch_dtype)
        self.y = torch.from_numpy(y).to(device=target, dtype=torch_dtype)
        self.names = {id(p): name for name, p in self.model.named_parameters()}

    def __call__(self) -> tuple[Any, Grads]:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        grads = {self.names[id(p)]: p.grad for p in self.model.parameters()}
        self.optimizer.step()
        return loss.detach(), grads


def fingerprint(library: str, loss: Any, grads: Grads) -> dict[str, float]:
    """The loss and the norm of every gradient, as host floats under our names (W0, gamma0, ...)."""
    def host(a: Any) -> numpy.ndarray:
        if hasattr(a, "detach"):  # torch
            a = a.detach().cpu().numpy()
        elif hasattr(a, "get"):  # cupy
            a = a.get()
        return numpy.asarray(a, dtype=numpy.float64)

    prints = {"loss": float(host(loss))}
    for name, grad in grads.items():
        if library == "minigraph":
            name = MinigraphStep.canonical(name)
        elif library == "torch":
            name = MinigraphStep.canonical(name)
            grad = host(grad)
            grad = grad.T if grad.ndim == 2 else grad  # back to (in, out)
        prints[name] = float(numpy.linalg.norm(host(grad)))
    return prints


# --- the other two measurements ---------------------------------------------------------------
def chain_overhead(library: str, length: int, device: str, repeats: int) -> dict:
    """A chain of ``length`` ReLUs on a 4×4 float32 leaf, forward then backward; µs per node."""
    sync = common.synchronizer(device) if library == "minigraph" else _torch_sync(device)
    if library == "minigraph":
        import minigraph as mg

        xp = common.array_module(device)
        leaf = mg.Tensor(xp.ones((4, 4), dtype="float32"), requires_grad=True)
        upstream = xp.ones((4, 4), dtype="float32")
        relu = mg.relu
    else:
        import torch

        target = torch.device("cuda" if device == "gpu" else "cpu")
        leaf = torch.ones((4, 4), dtype=torch.float32, device=target, requires_grad=True)
        upstream = torch.ones((4, 4), dtype=torch.float32, device=target)
        relu = torch.relu

    def run() -> tuple[float, float]:
        """(forward, backward) seconds of one chain; the same code for both libraries."""
        start = time.perf_counter()
        h = leaf
        for _ in range(length):
            h = relu(h)
        sync()
        middle = time.perf_counter()
        h.backward(upstream)
        sync()
        leaf.grad = None
        return middle - start, time.perf_counter() - middle

    run()  # warm-up
    forward, backward = zip(*(run() for _ in range(repeats)))
    f, b = common.median(forward), common.median(backward)
    return {"us_per_node": (f + b) / length * 1e6, "forward_us_per_node": f / length * 1e6,
            "backward_us_per_node": b / length * 1e6, "length": length}


def batch_norm_alone(library: str, n: int, p: int, device: str, dtype: str, min_reps: int,
                     min_seconds: float) -> dict:
    """Batch norm forward + backward on x: (N, p), training mode with running statistics; seconds."""
    rng = numpy.random.default_rng(2)
    x_host = (rng.normal(size=(n, p)) * 2 + 1).astype(dtype)
    dy_host = rng.normal(size=(n, p)).astype(dtype)
    if library == "minigraph":
        import minigraph as mg
        from minigraph import nn

        sync = common.synchronizer(device)
        layer = nn.BatchNorm1d(p, eps=EPS, momentum=MOMENTUM, dtype=dtype, device=device)
        x = mg.Tensor(mg.backend.to_device(x_host, device), requires_grad=True)
        dy = mg.backend.to_device(dy_host, device)

        def run() -> None:
            layer.zero_grad()
            x.grad = None
            layer(x).backward(dy)
    elif library in NUMPY_KINDS:
        xp = common.array_module(device)
        sync = common.synchronizer(device)
        x, dy = xp.asarray(x_host), xp.asarray(dy_host)
        gamma, beta = xp.ones(p, dtype=dtype), xp.zeros(p, dtype=dtype)
        running = [xp.zeros(p, dtype=dtype), xp.ones(p, dtype=dtype)]

        def run() -> tuple:
            return hand_written_batch_norm(x, gamma, beta, dy, running, xp)
    else:
        import torch

        sync = _torch_sync(device)
        target = torch.device("cuda" if device == "gpu" else "cpu")
        layer = torch.nn.BatchNorm1d(p, eps=EPS, momentum=MOMENTUM).to(device=target,
                                                                      dtype=getattr(torch, dtype))
        x = torch.from_numpy(x_host).to(target).requires_grad_(True)
        dy = torch.from_numpy(dy_host).to(target)

        def run() -> None:
            layer.zero_grad(set_to_none=True)
            x.grad = None
            layer(x).backward(dy)

    times = common.time_calls(run, sync, min_reps=min_reps, min_seconds=min_seconds, warmup=3)
    return {"seconds": common.median(times), "repetitions": len(times), "n": n, "p": p}


def hand_written_batch_norm(x: Any, gamma: Any, beta: Any, grad_y: Any, running: list,
                            xp: ModuleType) -> tuple:
    """Training-mode forward (updating running stats) and backward of batch norm, by hand; (y, dX, dγ, dβ)."""
    n = x.shape[0]
    ones = xp.ones(n, dtype=x.dtype)
    mean = (ones @ x) / n
    centred = x - mean
    sum_sq = xp.einsum("ij,ij->j", centred, centred)
    inv_std = 1.0 / xp.sqrt(sum_sq / n + EPS)
    running[0] *= 1.0 - MOMENTUM
    running[0] += MOMENTUM * mean
    running[1] *= 1.0 - MOMENTUM
    running[1] += (MOMENTUM / (n - 1)) * sum_sq
    y = centred * (gamma * inv_std)
    y += beta
    grad_beta = ones @ grad_y
    grad_gamma = inv_std * xp.einsum("ij,ij->j", grad_y, centred)
    centred *= inv_std * grad_gamma / -n  # dX built in Xc's buffer, which is not needed after
    centred += grad_y
    centred -= grad_beta / n
    centred *= gamma * inv_std
    return y, centred, grad_gamma, grad_beta


def _torch_sync(device: str) -> Callable[[], None]:
    if device == "cpu":
        return lambda: None
    import torch

    return torch.cuda.synchronize


# --- one worker process: one library, every measurement ----------------------------------------
def minor_page_faults() -> int:
    """Minor page faults of this process so far (fresh memory the kernel had to map and zero)."""
    try:
        import resource
    except ImportError:  # not on every platform
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def worker(library: str, args: argparse.Namespace) -> dict:
    """Run every measurement for ``library`` in this process and return the results."""
    device, dtype = args.device, "float32"
    sync = _torch_sync(device) if library == "torch" else common.synchronizer(device)
    if library == "torch" and args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    result: dict[str, Any] = {"library": library, "step": {}, "fingerprint": {}}
    params = initial_parameters(WIDTHS)
    for n in args.ns:
        x, y = make_data(n, WIDTHS)
        if library == "minigraph":
            step: Callable = MinigraphStep(params, x, y, device, dtype)
        elif library in NUMPY_KINDS:
            step = NumpyStep(params, x, y, common.array_module(device), dtype,
                             workspace=library == "numpy-workspace")
        else:
            step = TorchStep(params, x, y, device, dtype)
        result["fingerprint"][str(n)] = fingerprint(library, *step())  # the first step, from the shared start
        for _ in range(args.warmup):
            step()
        sync()
        faults = minor_page_faults()
        times = common.time_calls(step, sync, min_reps=args.steps, min_seconds=0.0,
                                  max_reps=args.steps, warmup=0)
        result["step"][str(n)] = {
            "seconds": common.median(times), "min_seconds": min(times), "repetitions": len(times),
            "page_faults_per_step": (minor_page_faults() - faults) / len(times),
        }
    if library not in NUMPY_KINDS:
        result["chain"] = chain_overhead(library, args.chain_length, device, args.chain_repeats)
    if library != "numpy-workspace":
        result["batch_norm"] = batch_norm_alone(library, args.bn_n, args.bn_p, device, dtype,
                                                min_reps=args.bn_reps, min_seconds=0.0)
    if library == "torch":
        import torch

        result["torch_threads"] = torch.get_num_threads()
    result["machine"] = common.machine_info()
    return result


def run_worker_process(library: str, args: argparse.Namespace) -> dict:
    """Start this script as a worker for ``library`` and return its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", library,
               "--device", args.device, "--ns", *map(str, args.ns), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--chain-length", str(args.chain_length),
               "--chain-repeats", str(args.chain_repeats), "--bn-n", str(args.bn_n),
               "--bn-p", str(args.bn_p), "--bn-reps", str(args.bn_reps),
               "--torch-threads", str(args.torch_threads)]
    env = os.environ.copy()
    if args.keep_freed_memory:
        env.update(KEEP_FREED_MEMORY)
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the {library} worker failed (exit {done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


# --- the parent: alternate workers, aggregate, check, report ----------------------------------
def aggregate(rounds: list[dict[str, dict]], libraries: list[str], ns: list[int]) -> dict:
    """Median over rounds of each worker's median, per measurement and library, with the spread."""
    def summary(values: list[float]) -> dict:
        return {"median": common.median(values), "min": min(values), "max": max(values),
                "rounds": values}

    table: dict[str, dict[str, dict]] = {}
    for n in ns:
        table[f"step N={n}"] = {lib: summary([r[lib]["step"][str(n)]["seconds"] for r in rounds])
                                for lib in libraries}
        for lib in libraries:
            table[f"step N={n}"][lib]["page_faults_per_step"] = common.median(
                [r[lib]["step"][str(n)]["page_faults_per_step"] for r in rounds])
    table["chain"] = {lib: summary([r[lib]["chain"]["us_per_node"] for r in rounds])
                      for lib in libraries if "chain" in rounds[0][lib]}
    table["batch_norm"] = {lib: summary([r[lib]["batch_norm"]["seconds"] for r in rounds])
                           for lib in libraries if "batch_norm" in rounds[0][lib]}
    return table


def check_agreement(first_round: dict[str, dict], libraries: list[str], ns: list[int],
                    rtol: float = 2e-3) -> list[str]:
    """Differences between libraries in the first step's loss and gradient norms (empty: all agree)."""
    problems = []
    for n in ns:
        reference = first_round["minigraph"]["fingerprint"][str(n)]
        for lib in libraries:
            if lib == "minigraph":
                continue
            other = first_round[lib]["fingerprint"][str(n)]
            for key, want in reference.items():
                got = other.get(key)
                # Pre-batch-norm biases get gradients that are zero up to rounding: compare on loss scale.
                scale = max(abs(want), 1e-3 * abs(reference["loss"]))
                if got is None or abs(got - want) > rtol * scale + 1e-6:
                    problems.append(f"N={n} {key}: minigraph {want:.6g}, {lib} {got}")
    return problems


def ratios(per_lib: dict[str, dict]) -> dict[str, float | None]:
    """minigraph's median over the best NumPy variant's and over PyTorch's (None where missing)."""
    mine = per_lib["minigraph"]["median"]
    numpy_times = [per_lib[k]["median"] for k in NUMPY_KINDS if k in per_lib]
    return {
        "best NumPy": mine / min(numpy_times) if numpy_times else None,
        "PyTorch": mine / per_lib["torch"]["median"] if "torch" in per_lib else None,
    }


def report_table(table: dict) -> str:
    headers = ["measurement", "minigraph", "NumPy, fresh arrays", "NumPy, workspace", "PyTorch",
               "mg / best NumPy", "mg / PyTorch", "target", "met"]
    rows = []
    for task, per_lib in table.items():
        key = "step" if task.startswith("step") else task
        unit, scale = ("µs/node", 1.0) if key == "chain" else ("ms", 1e3)
        values = [per_lib[lib]["median"] * scale if lib in per_lib else None for lib in LIBRARIES]
        against, limit = TARGETS[key]
        ratio = ratios(per_lib)
        rows.append([f"{task} ({unit})", *values,
                     *(f"{ratio[k]:.3f}" if ratio[k] else None for k in ("best NumPy", "PyTorch")),
                     f"≤ {limit} × {against}",
                     None if ratio[against] is None else ("yes" if ratio[against] <= limit else "no")])
    return common.format_table(headers, rows)


def faults_table(table: dict) -> str:
    """Minor page faults per step: fresh memory the kernel mapped and zeroed during a step."""
    headers = ["page faults per step"] + list(LIBRARIES)
    rows = []
    for task, per_lib in table.items():
        if task.startswith("step"):
            rows.append([task] + [per_lib[lib]["page_faults_per_step"] if lib in per_lib else None
                                  for lib in LIBRARIES])
    return common.format_table(headers, rows)


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round; seconds")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all results")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--rounds", type=int, help="alternating rounds of worker processes (default 5)")
    parser.add_argument("--ns", type=int, nargs="+", help="batch sizes (default 2048 4096)")
    parser.add_argument("--steps", type=int, help="timed steps per worker (default 10)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--chain-length", type=int, default=2000)
    parser.add_argument("--chain-repeats", type=int, default=7)
    parser.add_argument("--bn-n", type=int, default=4096)
    parser.add_argument("--bn-p", type=int, default=512)
    parser.add_argument("--bn-reps", type=int, default=20)
    parser.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES))
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch.set_num_threads in the PyTorch worker (default: PyTorch's choice)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="diagnostic: run the workers with glibc malloc told to keep freed "
                             "memory (" + " ".join(f"{k}={v}" for k, v in KEEP_FREED_MEMORY.items())
                             + "), which removes most page faults")
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = args.rounds or 1
        args.ns = args.ns or [64]
        args.steps = args.steps or 2
        args.warmup, args.chain_length, args.chain_repeats = 1, 200, 2
        args.bn_n, args.bn_p, args.bn_reps = 256, 64, 3
    args.rounds = args.rounds or 5
    args.ns = args.ns or [2048, 4096]
    args.steps = args.steps or 10

    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return None
    try:
        common.array_module(args.device)
    except RuntimeError as exc:  # --device gpu without a usable GPU
        parser.error(str(exc))

    libraries = [lib for lib in args.libraries if lib != "torch" or torch_available()]
    if "minigraph" not in libraries:
        parser.error("--libraries must include minigraph, the one the others are compared with")
    rounds = []
    for index in range(args.rounds):
        rounds.append({lib: run_worker_process(lib, args) for lib in libraries})  # alternating
        if not args.json:
            print(f"  round {index + 1}/{args.rounds} done", file=sys.stderr)
    problems = check_agreement(rounds[0], libraries, args.ns)
    table = aggregate(rounds, libraries, args.ns)
    machine = rounds[0]["minigraph"]["machine"]
    if "torch" in libraries:
        machine["torch"] = rounds[0]["torch"]["machine"]["torch"]
        machine["torch_threads"] = rounds[0]["torch"]["torch_threads"]
        machine["torch_pools"] = rounds[0]["torch"]["machine"]["blas"]
    print(f"one training step, widths {' → '.join(map(str, WIDTHS))}, float32, on {args.device} "
          f"({machine['cpu']}, {machine['usable_cpus']} CPUs); median of {args.rounds} alternating "
          f"process rounds, each the median of its {args.steps} timed steps")
    print(report_table(table))
    print(faults_table(table))
    if "torch" not in libraries:
        print("note: PyTorch is not installed; its columns are empty")
    print(f"tuning variables: {common.env_summary(machine['env'])}"
          + (" (set by --keep-freed-memory for the workers)" if args.keep_freed_memory else ""))
    print("the libraries agree on the first step's loss and gradients" if not problems else
          "DISAGREEMENT:\n  " + "\n  ".join(problems))
    report = {"benchmark": "train_step", "device": args.device, "widths": WIDTHS, "ns": args.ns,
              "rounds": args.rounds, "steps": args.steps, "libraries": libraries,
              "keep_freed_memory": args.keep_freed_memory, "machine": machine, "results": table,
              "agree": not problems, "problems": problems,
              "fingerprints": {lib: rounds[0][lib]["fingerprint"] for lib in libraries}}
    if args.json:
        print(json.dumps(report))
    if problems:
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
