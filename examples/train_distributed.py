"""Train the example net data-parallel: the rows of every batch are shared out over processes.

    mpiexec -n 2 python -m mpi4py examples/train_distributed.py
    python examples/train_distributed.py          # one process: the same numbers

The data, split, model, seed, batches and optimizer are those of examples/train.py (imported
from it); its BatchNorm1d layers become SyncBatchNorm and the model is wrapped in
DistributedDataParallel. Each process takes its share of the rows of every batch
(``numpy.array_split``, so shares differ by a row when the batch does not divide evenly), and
after each backward every process holds the whole batch's gradient. The test RMSE is therefore
that of ``python examples/train.py`` with the same flags, whatever the number of processes: to
rounding with SGD; with Adam (the default) to about 1e-9, because Adam rescales the
rounding-level gradients of the Linear biases that feed batch norm (exactly 0 in exact
arithmetic) into steps of size lr. Process 0 prints the results.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train.py, beside this file

import train  # noqa: E402  (examples/train.py: data, model and references)

import minigraph as mg  # noqa: E402
from minigraph import distributed as dist, nn, optim  # noqa: E402
from minigraph.backend import check_device, to_device  # noqa: E402


def train_sharded(split: train.Split, epochs: int = 40, batch_size: int = 32, lr: float = 1e-3,
                  optimizer: str = "adam", seed: int = 0, device: str = "auto", hidden: int = 16,
                  dtype: str = "float64") -> dict:
    """train.train's loop with each batch's rows shared out over the processes."""
    rank, size = dist.get_rank(), dist.get_world_size()
    device = check_device(device)
    rng = np.random.default_rng(seed)  # the same draws, in the same order, as train.train
    np_dtype = np.dtype(dtype)
    model = train.build_model(split.x_train.shape[1], hidden, rng, np_dtype)
    model = dist.DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(model).to(device))
    opt = (optim.Adam(model.parameters(), lr=lr) if optimizer == "adam"
           else optim.SGD(model.parameters(), lr=lr, momentum=0.9))
    loss_fn = nn.MSELoss()
    x_train, y_train = (to_device(a.astype(np_dtype), device) for a in (split.x_train, split.y_train))
    x_test, y_test = (to_device(a.astype(np_dtype), device) for a in (split.x_test, split.y_test))
    n = len(split.x_train)
    if batch_size < 2:
        raise ValueError("batch norm needs batches of at least 2 rows: use --batch-size >= 2")

    history: dict[str, list[float]] = {"train": [], "test": []}
    start = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(n)
        totals = np.zeros(2)  # this process's Σ loss·rows and rows, summed over processes below
        for first in range(0, n, batch_size):
            rows = order[first:first + batch_size]
            if len(rows) < 2:  # as train.py: a last batch of one row cannot be batch-normalised
                continue
            mine = to_device(np.array_split(rows, size)[rank], device)
            with np.errstate(invalid="ignore", divide="ignore"):  # a process with no rows: 0/0
                loss = loss_fn(model(mg.Tensor(x_train[mine])), mg.Tensor(y_train[mine]))
                opt.zero_grad()
                loss.backward()
            opt.step()
            if len(mine):
                totals += (loss.item() * len(mine), len(mine))
        dist.all_reduce(totals)
        history["train"].append(float(totals[0] / totals[1]))
        history["test"].append(train.evaluate(model, x_test, y_test))  # eval: no communication
    seconds = time.perf_counter() - start

    baseline, ols = train.reference_rmses(split)
    return {
        "data": split.name,
        "processes": size,
        "test_rmse": float(np.sqrt(history["test"][-1]) * split.y_scale),
        "baseline_rmse": baseline,
        "ols_rmse": ols,
        "train_loss": history["train"][-1],
        "epochs": epochs,
        "device": device,
        "transport": dist.transport(device),
        "seconds": seconds,
        "history": history,
    }


# The flags of train.py that this loop honours; their defaults are read from train.train, so
# that both scripts run the same configuration unless told otherwise.
FLAGS = ("epochs", "batch_size", "lr", "optimizer", "seed", "device", "hidden", "dtype")
CHOICES = {"optimizer": ["sgd", "adam"], "device": ["cpu", "gpu", "auto"], "dtype": ["float32", "float64"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = inspect.signature(train.train).parameters
    for name in FLAGS:
        default = defaults[name].default
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default,
                            choices=CHOICES.get(name), help=f"as in train.py (default {default})")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of results")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")

    dist.init()
    split = train.standardised_split(*train.load_diabetes_data())
    result = train_sharded(split, **{name: getattr(args, name) for name in FLAGS})
    if dist.get_rank() == 0:
        print(f"data: {result['data']}; {len(split.x_train)} train / {len(split.x_test)} test rows; "
              f"{result['processes']} process(es), batches of {args.batch_size} rows shared out "
              f"over them; device {result['device']} ({result['transport']}); "
              f"{result['epochs']} epochs in {result['seconds']:.2f} s")
        print("test RMSE, in the target's units:")
        for label, key in (("minigraph net, data-parallel", "test_rmse"), ("least squares", "ols_rmse"),
                           ("predict the train mean", "baseline_rmse")):
            print(f"  {label:<29}{result[key]:10.3f}")
        if args.json:
            print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return result


if __name__ == "__main__":
    main()
