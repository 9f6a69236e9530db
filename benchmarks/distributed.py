"""Data-parallel training over MPI: time per step on 1, 2, 4 processes, the communication's share,
and all-reduce latency and bandwidth.

The net is train_step.py's, with SyncBatchNorm: (Linear → SyncBatchNorm → ReLU) × 2 → Linear,
widths 256 → 512 → 512 → 1, float32, MSE loss, SGD with momentum, wrapped in
DistributedDataParallel. Strong scaling: the whole batch has --rows rows (4096), shared out
evenly, so P processes each get 4096/P. For each process count the parent launches
``mpiexec -n P`` on this script (``--worker``), under MPIEXEC_TIMEOUT.

Per step (after warm-up, each step starting at a barrier): the wall time of the slowest process;
and the time spent inside all-reduces, measured by wrapping the job's all-reduce, on every
process. That time includes waiting for the slowest process to arrive, so with uneven
processes it measures imbalance as well as transfer. Latency: an all-reduce of one float64.
Bandwidth: all-reduces of float32 buffers of 64 KiB to 16 MiB (larger than the caches the
fast sizes live in), as algorithm bandwidth (bytes / time) and bus bandwidth (× 2(P−1)/P, the
bytes each process must send and receive in a ring, NCCL's convention).

BLAS threads per process: --threads, 1 by default, so that P processes use P cores and the
speed-up measures what more processes buy; ``--threads auto`` gives each max(1, usable CPUs // P)
instead. (On the shared 2-vCPU machine of BENCHMARKS.md, two OpenBLAS threads made a 64-row step
30× slower than one thread, while other work held the second core.) P above the core count is
oversubscribed, and the table says so. The JSON records the threads used.

    python benchmarks/distributed.py                 # 1, 2, 4 processes
    python benchmarks/distributed.py --quick --json  # 1 and 2 processes, tiny sizes: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as common  # noqa: E402  (benchmarks/ is not a package)

import numpy  # noqa: E402

WIDTHS = (256, 512, 512, 1)
SIZES = {"full": {"ranks": [1, 2, 4], "rows": 4096, "steps": 20, "warmup": 3,
                  "bandwidth_kib": [64, 1024, 16384], "latency_calls": 2000},
         "quick": {"ranks": [1, 2], "rows": 64, "steps": 3, "warmup": 1,
                   "bandwidth_kib": [64], "latency_calls": 50}}
TIMEOUT = 300  # seconds per launch


# --- the worker: one process of an mpiexec job ------------------------------------------------
def build_model(dtype: Any) -> Any:
    from minigraph import nn

    layers: list = []
    rng = numpy.random.default_rng(0)
    for i, (fan_in, fan_out) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
        layers.append(nn.Linear(fan_in, fan_out, dtype=dtype, rng=rng))
        if i < len(WIDTHS) - 2:
            layers += [nn.SyncBatchNorm(fan_out, dtype=dtype), nn.ReLU()]
    return nn.Sequential(*layers)


class TimedAllReduce:
    """Wraps the job's all-reduce: counts calls and bytes, adds up the seconds spent inside."""

    def __init__(self, all_reduce: Any, sync: Any) -> None:
        self.all_reduce, self.sync = all_reduce, sync
        self.calls = self.bytes = 0
        self.seconds = 0.0
        self.largest = (0, 0.0)  # (bytes, seconds) of the largest message since the last reset

    def __call__(self, array: Any) -> Any:
        self.sync()
        start = time.perf_counter()
        result = self.all_reduce(array)
        self.sync()
        seconds = time.perf_counter() - start
        self.seconds += seconds
        self.calls += 1
        self.bytes += array.nbytes
        if array.nbytes >= self.largest[0]:
            self.largest = (array.nbytes, seconds)
        return result


def worker(sizes: dict, device: str) -> None:
    import minigraph as mg
    from minigraph import distributed as dist, nn, optim

    dist.init()
    world = dist._world
    rank, size = dist.get_rank(), dist.get_world_size()
    xp, sync = common.array_module(device), common.synchronizer(device)

    # Latency: one float64, many times; the median of 5 batches.
    one = xp.zeros(1, dtype=xp.float64)
    batches = []
    for _ in range(6):
        dist.barrier()
        start = time.perf_counter()
        for _ in range(sizes["latency_calls"] // 5):
            dist.all_reduce(one)
        sync()
        batches.append((time.perf_counter() - start) / (sizes["latency_calls"] // 5))
    latency = common.median(batches[1:])  # the first batch warms up

    bandwidth = []
    for kib in sizes["bandwidth_kib"]:
        buffer = xp.ones(kib * 256, dtype=xp.float32)
        times = []
        for _ in range(max(3, min(20, 16384 // kib))):
            dist.barrier()
            sync()
            start = time.perf_counter()
            dist.all_reduce(buffer)
            sync()
            times.append(time.perf_counter() - start)
        seconds = common.median(times)
        bandwidth.append({"kib": kib, "seconds": seconds, "algorithm_gbps": kib * 1024 / seconds / 1e9,
                          "bus_gbps": 2 * (size - 1) / size * kib * 1024 / seconds / 1e9})

    # Training steps, strong scaling: this process's share of the batch.
    rows = numpy.array_split(numpy.arange(sizes["rows"]), size)[rank]
    data = numpy.random.default_rng(1)
    x_all = data.normal(size=(sizes["rows"], WIDTHS[0])).astype(numpy.float32)
    y_all = (numpy.tanh(x_all[:, :8]).sum(axis=1, keepdims=True) + 0.1 * data.normal(
        size=(sizes["rows"], 1))).astype(numpy.float32)
    x, y = mg.Tensor(x_all[rows]), mg.Tensor(y_all[rows])
    model = dist.DistributedDataParallel(build_model(numpy.float32))
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.MSELoss()
    timer = TimedAllReduce(world.all_reduce, sync)
    world.all_reduce = timer  # every collective of SyncBatchNorm and DDP goes through it
    steps, communication, gradients, losses = [], [], [], []
    for step in range(sizes["warmup"] + sizes["steps"]):
        dist.barrier()
        sync()
        before, timer.largest = timer.seconds, (0, 0.0)
        start = time.perf_counter()
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        if step >= sizes["warmup"]:
            steps.append(time.perf_counter() - start)
            communication.append(timer.seconds - before)
            gradients.append(timer.largest[1])  # the gradient bucket: what overlap could hide
        losses.append(loss.item() * len(rows))
    calls_per_step = timer.calls / (sizes["warmup"] + sizes["steps"])
    bytes_per_step = timer.bytes / (sizes["warmup"] + sizes["steps"])
    world.all_reduce = timer.all_reduce

    # The step ends when the slowest process ends; loss: the whole batch's, after every step.
    slowest = numpy.array(steps)
    world.comm.Allreduce(world.mpi.IN_PLACE, slowest, op=world.mpi.MAX)
    comm_all = world.comm.gather(common.median(communication), root=0)
    gradients_all = world.comm.gather(common.median(gradients) if gradients else 0.0, root=0)
    total_losses = dist.all_reduce(numpy.array(losses)) / sizes["rows"]
    if rank == 0:
        print(json.dumps({
            "processes": size, "rows_per_process": [len(r) for r in numpy.array_split(
                numpy.arange(sizes["rows"]), size)],
            "step_seconds": common.summary(slowest.tolist()),
            "communication_seconds_by_process": [float(c) for c in comm_all],
            "gradient_allreduce_seconds_by_process": [float(c) for c in gradients_all],
            "collectives_per_step": calls_per_step, "bytes_per_step": bytes_per_step,
            "latency_seconds": latency, "bandwidth": bandwidth,
            "losses": total_losses.tolist(),
            "transport": dist.transport(device),
            "threads": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
        }))


# --- the parent: one mpiexec job per process count --------------------------------------------
def mpiexec() -> str:
    beside_python = Path(sys.executable).parent / "mpiexec"
    found = str(beside_python) if beside_python.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit("benchmarks/distributed.py: mpiexec not found; pip install '.[mpi]'")
    return found


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def launch(processes: int, mode: str, device: str, threads: str) -> dict:
    if threads == "auto":
        threads = str(max(1, usable_cpus() // processes))
    env = {**os.environ, "MPIEXEC_TIMEOUT": str(TIMEOUT), "MINIGRAPH_DEVICE": device,
           "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads,
           # Open MPI's mpiexec refuses root without these (as GPU machines run); MPICH ignores them.
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(common.ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([mpiexec(), "-n", str(processes), sys.executable, "-m", "mpi4py", __file__,
                           "--worker", mode, "--device", device],
                          capture_output=True, text=True, env=env, timeout=TIMEOUT + 30)
    if done.returncode != 0:
        raise RuntimeError(f"the {processes}-process job failed (exit {done.returncode}):\n{done.stderr}")
    return common.last_json_line(done.stdout)


def over_rounds(results: list[dict]) -> dict:
    """One process count's rounds -> the median of each figure over rounds (the first round's
    losses, collectives and threads; every round's step medians under "step_seconds")."""
    merged = dict(results[0])
    merged["step_seconds"] = common.summary([r["step_seconds"]["median"] for r in results])
    for key in ("communication_seconds_by_process", "gradient_allreduce_seconds_by_process"):
        merged[key] = [common.median(values) for values in zip(*[r[key] for r in results])]
    merged["latency_seconds"] = common.median([r["latency_seconds"] for r in results])
    merged["bandwidth"] = [
        {"kib": sizes[0]["kib"], **{key: common.median([b[key] for b in sizes])
                                    for key in ("seconds", "algorithm_gbps", "bus_gbps")}}
        for sizes in zip(*[r["bandwidth"] for r in results])]
    return merged


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 and 2 processes, tiny sizes")
    parser.add_argument("--ranks", type=int, nargs="+", help="process counts (default 1 2 4)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--rounds", type=int, help="rounds over the process counts (3; quick: 1)")
    parser.add_argument("--threads", default="1", help="BLAS threads per process: a number or auto")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of results")
    parser.add_argument("--worker", choices=sorted(SIZES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(SIZES[args.worker], args.device)
        return {}

    mode = "quick" if args.quick else "full"
    sizes = SIZES[mode]
    counts = args.ranks or sizes["ranks"]
    rounds = args.rounds or (1 if args.quick else 3)
    # Process counts alternate within each round, so slow spells of a shared machine hit all.
    per_round = [{p: launch(p, mode, args.device, args.threads) for p in counts} for _ in range(rounds)]
    runs = {p: over_rounds([r[p] for r in per_round]) for p in counts}
    usable = usable_cpus()
    first = runs[min(runs)]
    # The same model, data and steps on any number of processes: the losses must agree.
    agree = all(numpy.allclose(r["losses"], first["losses"], rtol=1e-4)
                for one_round in per_round for r in one_round.values())

    print(f"# Data-parallel step, {sizes['rows']} rows in all, widths {WIDTHS}, float32, "
          f"device {args.device}; medians over {rounds} round(s)")
    print(common.describe_machine(common.machine_info(args.device)))
    rows = []
    for p, r in runs.items():
        step = r["step_seconds"]["median"]
        comm = max(r["communication_seconds_by_process"])
        gradient = max(r["gradient_allreduce_seconds_by_process"])
        rows.append([p, "yes" if p > usable else "no", r["threads"]["OPENBLAS_NUM_THREADS"],
                     step * 1e3, first["step_seconds"]["median"] / step, comm * 1e3, comm / step,
                     gradient * 1e3, r["collectives_per_step"], r["bytes_per_step"] / 1024])
    print(common.format_table(["processes", "oversubscribed", "BLAS threads each", "step (ms)",
                               "speed-up", "in all-reduces (ms, max over processes)",
                               "communication share", "of which the gradient bucket (ms)",
                               "all-reduces per step", "KiB all-reduced per step"], rows))
    print()
    rows = [[p, r["transport"], r["latency_seconds"] * 1e6 if p > 1 else None] +
            [f"{b['algorithm_gbps']:.2f} / {b['bus_gbps']:.2f}" if p > 1 else None for b in r["bandwidth"]]
            for p, r in runs.items()]  # one process: MPI returns at once, nothing to measure
    print(common.format_table(["processes", "transport", "latency (µs, 8 bytes)"] +
                              [f"{b['kib']} KiB: algorithm / bus GB/s" for b in first["bandwidth"]], rows))
    print(f"losses agree across process counts: {agree}")
    report = {"benchmark": "distributed", "device": args.device, "mode": mode, "agree": agree,
              "machine": common.machine_info(args.device), "runs": runs, "rounds": per_round}
    common.emit(report, args.json)
    if not agree:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
