"""What tests/test_distributed.py runs under mpiexec, one scenario per launch (many checks each,
since every launch costs an MPI start-up). Each process prints ``RESULT <json>`` lines; arrays go
to ``<outdir>/<case>.rank<r>.npz``. The parent computes the single-process references itself,
with the same functions from this module (importing it starts no MPI).

    mpiexec -n 3 python -m mpi4py tests/distributed_worker.py train OUTDIR
    mpiexec -n 3 python -m mpi4py tests/distributed_worker.py validation
    mpiexec -n 2 python [-m mpi4py] tests/distributed_worker.py raise RANK
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

import minigraph as mg
from minigraph import nn, optim

# Rows per process for each world size: equal shards, unequal ones, 1-row and 0-row processes.
SPLITS = {
    1: [[24]],
    2: [[12, 12], [2, 22], [1, 23]],
    3: [[8, 8, 8], [1, 8, 15]],
    4: [[6, 6, 6, 6], [0, 4, 8, 12], [1, 1, 1, 21]],
}
STEPS = 4
FEATURES, HIDDEN, OUTPUTS = 5, 7, 2
LARGE_MEAN_ROWS = [100, 300, 112, 50]  # float32 data of mean 1e4, split over the processes


def build_model() -> nn.Module:
    """Linear → SyncBatchNorm → ReLU → Linear in float64, the same weights on every call. The
    batch norm keeps a cumulative average (momentum=None), so its running statistics depend on
    the batch counter too (the momentum-number path is the large-mean check's)."""
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN, dtype=np.float64, rng=1),
                         nn.SyncBatchNorm(HIDDEN, momentum=None, dtype=np.float64), nn.ReLU(),
                         nn.Linear(HIDDEN, OUTPUTS, dtype=np.float64, rng=2))


def resumed_model(rank: int) -> nn.Module:
    """build_model() that, on process 0 only, resumed from a checkpoint 3 batches in: DDP's
    broadcast must give every process that count, and each process's host copy of it too."""
    model = build_model()
    if rank == 0:
        state = model.state_dict()
        state["1.num_batches_tracked"], state["1.running_mean"] = np.array(3), np.full(HIDDEN, 0.5)
        model.load_state_dict(state)
    return model


def batch(step: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole batch of a step: x: (24, FEATURES), y: (24, OUTPUTS)."""
    rng = np.random.default_rng(100 + step)
    return rng.normal(size=(24, FEATURES)) + 3.0, rng.normal(size=(24, OUTPUTS))


def shard(array: np.ndarray, split: list[int], rank: int) -> np.ndarray:
    start = sum(split[:rank])
    return array[start:start + split[rank]]


def train(model: nn.Module, rows: list[int], rank: int) -> dict[str, np.ndarray]:
    """STEPS steps of SGD with momentum on this process's shard; returns the final state and
    the gradients of the first step (prefixed 'grad.')."""
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    first_grads = {}
    for step in range(STEPS):
        x, y = batch(step)
        with warnings.catch_warnings():  # a 0-row process's mean loss is 0/0: NaN, unused
            warnings.simplefilter("ignore", RuntimeWarning)
            loss = nn.MSELoss()(model(mg.Tensor(shard(x, rows, rank))), mg.Tensor(shard(y, rows, rank)))
            opt.zero_grad()
            loss.backward()
        if step == 0:
            first_grads = {f"grad.{name}": mg.backend.to_device(p.grad, "cpu")
                           for name, p in model.named_parameters()}
        opt.step()
    inner = getattr(model, "module", model)
    return {**inner.state_dict(), **{k.replace("module.", ""): v for k, v in first_grads.items()}}


def train_accumulating(model: nn.Module, rows: list[int], rank: int) -> dict[str, np.ndarray]:
    """STEPS updates, each after two backward passes (two batches) whose gradients accumulate,
    each loss with a penalty on the first weight that is the same on every process."""
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    inner = getattr(model, "module", model)
    for step in range(STEPS):
        opt.zero_grad()
        for part in (step, step + STEPS):
            x, y = batch(part)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                loss = nn.MSELoss()(model(mg.Tensor(shard(x, rows, rank))), mg.Tensor(shard(y, rows, rank)))
                penalty = mg.mse_loss(inner[0].weight, mg.Tensor(np.zeros(inner[0].weight.shape)))
                (loss + penalty).backward()
        opt.step()
    return inner.state_dict()


def gradients_after_a_failed_backward(model: nn.Module, rows: list[int], rank: int) -> dict[str, np.ndarray]:
    """The first step's gradients, taken from an output made before a backward pass that failed
    after DDP's output hook had run (a leaf hook raises): the failure must not leave DDP
    believing its all-reduce is already queued."""
    x, y = batch(0)
    inner = getattr(model, "module", model)
    early = model(mg.Tensor(shard(x, rows, rank)))
    late = model(mg.Tensor(shard(x, rows, rank)))

    def fail(grad):
        raise ArithmeticError("planted failure")

    remove = inner[0].weight.register_hook(fail)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            nn.MSELoss()(late, mg.Tensor(shard(y, rows, rank))).backward()
        except ArithmeticError:
            pass
        remove()
        model.zero_grad()
        nn.MSELoss()(early, mg.Tensor(shard(y, rows, rank))).backward()
    return {f"grad.{name}": mg.backend.to_device(p.grad, "cpu") for name, p in inner.named_parameters()}


def large_mean_statistics(rows: list[int], rank: int, forward=None) -> dict[str, np.ndarray]:
    """SyncBatchNorm's float32 statistics of data with mean 1e4 and standard deviation 1.

    ``forward(layer, x)`` replaces ``layer(x)`` (the tests pass simulated processes' version)."""
    x = (1e4 + np.random.default_rng(7).normal(size=(sum(rows), 3))).astype(np.float32)
    layer = nn.SyncBatchNorm(3, momentum=1.0, eps=0.0)  # momentum 1: running = this batch's
    x_rank = mg.Tensor(shard(x, rows, rank))
    y = layer(x_rank) if forward is None else forward(layer, x_rank)
    return {"running_mean": layer.running_mean, "running_var": layer.running_var,
            "sum_sq": (y.numpy().astype(np.float64) ** 2).sum(axis=0)}


def report(rank: int, **fields) -> None:
    """Append one JSON line to $RESULTS_DIR/rank<r>.jsonl (mpiexec interleaves stdout lines)."""
    with open(Path(os.environ["RESULTS_DIR"]) / f"rank{rank}.jsonl", "a") as f:
        f.write(json.dumps({"rank": rank, **fields}) + "\n")


def scenario_train(outdir: Path) -> None:
    from minigraph import distributed as dist

    dist.init()
    rank, size = dist.get_rank(), dist.get_world_size()
    device = mg.backend.default_device()
    for rows in SPLITS[size]:
        state = train(dist.DistributedDataParallel(build_model()), rows, rank)
        np.savez(outdir / f"train-{'-'.join(map(str, rows))}.rank{rank}.npz", **state)
    rows = SPLITS[size][-1]
    state = train_accumulating(dist.DistributedDataParallel(build_model()), rows, rank)
    np.savez(outdir / f"accumulate-{'-'.join(map(str, rows))}.rank{rank}.npz", **state)
    state = train(dist.DistributedDataParallel(resumed_model(rank)), rows, rank)
    np.savez(outdir / f"resumed-{'-'.join(map(str, rows))}.rank{rank}.npz", **state)
    grads = gradients_after_a_failed_backward(dist.DistributedDataParallel(build_model()), rows, rank)
    np.savez(outdir / f"after-failure-{'-'.join(map(str, rows))}.rank{rank}.npz", **grads)
    rows = LARGE_MEAN_ROWS[:size]
    np.savez(outdir / f"large-mean-{size}.rank{rank}.npz", **{
        k: mg.backend.to_device(v, "cpu") for k, v in large_mean_statistics(rows, rank).items()})
    report(rank, size=size, device=device, transport=dist.transport(device))


def scenario_validation() -> None:
    """Each case must raise the same error on every process together (or work everywhere)."""
    from minigraph import distributed as dist

    dist.init()
    rank, size = dist.get_rank(), dist.get_world_size()

    def outcome(case: str, run) -> None:
        try:
            run()
            report(rank, case=case, error=None)
        except Exception as exc:
            report(rank, case=case, error=f"{type(exc).__name__}: {exc}")

    def one_row_in_total():
        nn.SyncBatchNorm(3)(mg.Tensor(np.ones((1 if rank == 0 else 0, 3), dtype=np.float32)))

    def one_row_per_process():
        nn.SyncBatchNorm(3)(mg.Tensor(np.full((1, 3), float(rank), dtype=np.float32)))

    def ddof_of_the_whole_batch():  # N = 2·size rows: ddof = N is too large only globally
        nn.SyncBatchNorm(3, ddof=2 * size)(mg.Tensor(np.ones((2, 3), dtype=np.float32)))

    def transposed_weight():  # (2, 3) against (3, 2): the same bytes, a different model
        dist.DistributedDataParallel(nn.Linear(2, 3) if rank == 0 else nn.Linear(3, 2))

    def other_dtype():
        dist.DistributedDataParallel(nn.Linear(2, 3, dtype=np.float64 if rank == size - 1 else np.float32))

    def other_layer():
        norm = nn.BatchNorm1d(3) if rank == 1 else nn.SyncBatchNorm(3)
        dist.DistributedDataParallel(nn.Sequential(nn.Linear(2, 3), norm))

    def no_rows_anywhere():
        model = dist.DistributedDataParallel(nn.Linear(2, 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            empty = np.ones((0, 2), dtype=np.float32)
            nn.MSELoss()(model(mg.Tensor(empty)), mg.Tensor(empty[:, :1])).backward()

    def frozen_on_one_process():  # its zeros would be averaged into the others' gradients
        layer = nn.Linear(2, 3)
        if rank == 1:
            layer.bias.requires_grad = False
        dist.DistributedDataParallel(layer)

    def other_bucket_cap():  # (2,) against (1, 1): gradient messages of other lengths
        dist.DistributedDataParallel(nn.Linear(2, 3), bucket_cap_mb=1e-6 if rank == 2 else 25)

    def tuple_output():  # only a returned Tensor is hooked: gradients would stay un-averaged
        class TwoHeads(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Linear(2, 3)

            def forward(self, x):
                out = self.body(x)
                return out, out * 2.0

        model = dist.DistributedDataParallel(TwoHeads())
        first, _ = model(mg.Tensor(np.ones((2, 2), dtype=np.float32)))
        first.sum().backward()

    for case, run in [("one_row_in_total", one_row_in_total), ("one_row_per_process", one_row_per_process),
                      ("ddof_of_the_whole_batch", ddof_of_the_whole_batch),
                      ("transposed_weight", transposed_weight), ("other_dtype", other_dtype),
                      ("other_layer", other_layer), ("no_rows_anywhere", no_rows_anywhere),
                      ("frozen_on_one_process", frozen_on_one_process), ("tuple_output", tuple_output),
                      ("other_bucket_cap", other_bucket_cap)]:
        outcome(case, run)


def scenario_raise(failing_rank: int) -> None:
    """Process ``failing_rank`` raises in its second step while the others train on."""
    from minigraph import distributed as dist

    dist.init()
    rank = dist.get_rank()
    model = dist.DistributedDataParallel(build_model())
    opt = optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        if step == 1 and rank == failing_rank:
            raise RuntimeError(f"deliberate failure on process {rank}")
        x, y = batch(step)
        loss = nn.MSELoss()(model(mg.Tensor(x)), mg.Tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    report(rank, finished=True)  # must never be reached by the processes left waiting


if __name__ == "__main__":
    name, args = sys.argv[1], sys.argv[2:]
    if name == "train":
        scenario_train(Path(args[0]))
    elif name == "validation":
        scenario_validation()
    elif name == "raise":
        scenario_raise(int(args[0]))
    else:
        raise SystemExit(f"distributed_worker: unknown scenario {name!r}")
