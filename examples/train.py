"""Train a batch-norm net on real data: scikit-learn's diabetes set (or a generated nonlinear one).

The net is (Linear → BatchNorm1d → ReLU) × --depth, then Linear, trained on the
mean squared error. The rows are split once, independently of --seed, into test,
validation and training rows. Features and target are standardised with
statistics of the training rows only. After each epoch the validation loss is
measured; the weights of the best epoch are saved (``nn.save``) and restored
(``load_state_dict``) before the single look at the test rows. Errors are
reported in the target's own units, beside two references fitted on the rows the
net learns from (training and validation): predicting their mean, and ordinary
least squares. Flags left out take the data set's defaults (DEFAULTS).

    python examples/train.py                       # diabetes, defaults (a few seconds)
    python examples/train.py --synthetic 2000      # Friedman's nonlinear problem, where a net beats OLS
    python examples/train.py --synthetic 200000 --device gpu --batch-size 4096
    python examples/train.py --plot loss.png --graph step.dot --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import minigraph as mg
from minigraph import nn, optim
from minigraph.backend import check_device, device_of, get_array_module, to_device
from minigraph.memory import keep_freed_memory

SPLIT_SEED = 2018  # the row split never moves with --seed, so every seed is scored on the same rows


@dataclass
class Split:
    """Standardised arrays on the host: x_*: (N, p), y_*: (N, 1); y_scale turns errors back into units."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    y_scale: float
    name: str


def load_diabetes_data() -> tuple[np.ndarray, np.ndarray, str]:
    """The diabetes set (442 patients, 10 features), which ships inside scikit-learn: x: (442, 10), y: (442,)."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    return data.data, data.target.astype(np.float64), "diabetes (scikit-learn)"


def make_friedman(n: int, p: int = 10, noise: float = 1.0, seed: int = 12345) -> tuple[np.ndarray, np.ndarray, str]:
    """Friedman's (1991) first regression problem: x: (n, p) uniform on [0, 1], y: (n,).

    y = 10 sin(π x₀ x₁) + 20 (x₂ − ½)² + 10 x₃ + 5 x₄ + noise · N(0, 1); the other
    p − 5 features are pure noise. The product inside the sine and the square make
    it a problem that no linear fit solves, so a net has something to show here.
    Generated with NumPy, so that it needs no scikit-learn.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, p))
    y = (10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3] + 5 * x[:, 4]
         + noise * rng.normal(size=n))
    return x, y, f"Friedman #1 ({n} rows, {p} features, generated)"


def standardised_split(x: np.ndarray, y: np.ndarray, name: str, test_fraction: float = 0.2,
                       val_fraction: float = 0.2) -> Split:
    """A fixed test/validation/train split of x: (N, p), y: (N,), standardised with training statistics.

    ``test_fraction`` of the rows are held out for the test; ``val_fraction`` of the
    rest for validation. The permutation depends on SPLIT_SEED only, never on --seed.
    """
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    n_val = int(round(val_fraction * (len(x) - n_test)))
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    if min(len(test), len(val)) < 1 or len(train) < 2:
        raise ValueError(
            f"{len(x)} rows split into {len(train)} training, {len(val)} validation and {len(test)} test "
            f"rows; expected at least 2 training rows (batch norm needs two rows to take a variance) and "
            f"one row in each of the others: give more rows"
        )
    x_mean, x_std = x[train].mean(0), x[train].std(0)
    y_mean, y_std = y[train].mean(), y[train].std()
    scale_x = lambda rows: (x[rows] - x_mean) / x_std
    scale_y = lambda rows: ((y[rows] - y_mean) / y_std)[:, None]
    return Split(scale_x(train), scale_y(train), scale_x(val), scale_y(val), scale_x(test), scale_y(test),
                 float(y_std), name)


def reference_rmses(split: Split) -> tuple[float, float]:
    """Test RMSE (target units) of predicting the mean, and of least squares, both fitted on train + validation.

    The net learns its weights from the training rows and picks its epoch with the
    validation rows, so the references may use both: a fit with no knobs to tune
    needs no validation rows, and more rows can only help it.
    """
    x_fit = np.vstack([split.x_train, split.x_val])
    y_fit = np.vstack([split.y_train, split.y_val])
    baseline = np.sqrt(np.mean((split.y_test - y_fit.mean()) ** 2)) * split.y_scale
    design = lambda x: np.hstack([x, np.ones((len(x), 1))])
    coef, *_ = np.linalg.lstsq(design(x_fit), y_fit, rcond=None)
    ols = np.sqrt(np.mean((design(split.x_test) @ coef - split.y_test) ** 2)) * split.y_scale
    return float(baseline), float(ols)


def build_model(in_features: int, hidden: int, depth: int, rng: np.random.Generator, dtype: Any) -> nn.Module:
    """(Linear → BatchNorm1d → ReLU) ``depth`` times, then Linear: (N, in_features) -> (N, 1).

    The Linear layers that feed batch norm have no bias: batch norm subtracts each column's
    mean, so a bias there has no effect and a zero gradient (in exact arithmetic; in floating
    point a rounding-level one, which Adam would scale up into steps of size lr).
    """
    layers: list[nn.Module] = []
    for block in range(depth):
        layers += [nn.Linear(in_features if block == 0 else hidden, hidden, bias=False, rng=rng, dtype=dtype),
                   nn.BatchNorm1d(hidden, dtype=dtype), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, 1, rng=rng, dtype=dtype))


def evaluate(model: nn.Module, x: Any, y: Any) -> float:
    """Mean squared error (standardised units) in eval mode, with the running statistics; one host sync."""
    model.eval()
    with mg.no_grad():
        loss = mg.mse_loss(model(mg.Tensor(x, device=device_of(x))), mg.Tensor(y, device=device_of(y))).item()
    model.train()
    return loss


# Defaults per data set: how much a net should be held back depends on the data. The
# diabetes set is small and nearly linear, so one hidden layer with strong weight decay
# (Adam's L2 term); chosen by 5-fold cross-validation on the training and validation rows,
# never on the test rows. Friedman's problem is nonlinear and has more rows, so two hidden
# layers and light decay; chosen on a Friedman set generated with another seed.
DEFAULTS = {
    "diabetes": {"epochs": 200, "batch_size": 64, "lr": 3e-3, "optimizer": "adam", "weight_decay": 0.1,
                 "hidden": 64, "depth": 1},
    "friedman": {"epochs": 100, "batch_size": 64, "lr": 3e-3, "optimizer": "adam", "weight_decay": 0.01,
                 "hidden": 64, "depth": 2},
}
_D = DEFAULTS["diabetes"]


def train(
    split: Split,
    epochs: int = _D["epochs"],
    batch_size: int = _D["batch_size"],
    lr: float = _D["lr"],
    optimizer: str = _D["optimizer"],
    weight_decay: float = _D["weight_decay"],
    seed: int = 0,
    device: str = "auto",
    hidden: int = _D["hidden"],
    depth: int = _D["depth"],
    dtype: str = "float64",
    graph_path: str | None = None,
    progress: bool = True,
    distributed: bool = False,
) -> dict:
    """Train on ``split``, keep the epoch with the lowest validation loss, and return the figures to report.

    Stops early, with ``diverged`` true and no test RMSE, as soon as an epoch's
    training or validation loss is not finite. With ``distributed`` (after
    ``minigraph.distributed.init()``), the rows of every batch are shared out over
    the processes, batch norm is synchronized and gradients are combined, so every
    step is the one-process step on the whole batch: the figures are the same.
    """
    device = check_device(device)
    if batch_size < 2:
        raise ValueError(f"train: batch_size={batch_size}; batch norm needs batches of at least 2 rows")
    rng = np.random.default_rng(seed)
    np_dtype = np.dtype(dtype)
    model = build_model(split.x_train.shape[1], hidden, depth, rng, np_dtype).to(device)
    rank, size = 0, 1
    if distributed:
        from minigraph import distributed as dist

        rank, size = dist.get_rank(), dist.get_world_size()
        model = dist.DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(model))
    if optimizer == "adam":
        opt = optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        raise ValueError(f"train: optimizer must be 'sgd' or 'adam'; got {optimizer!r}")
    loss_fn = nn.MSELoss()

    # The data lives on the device once; batches are gathered there.
    on_device = lambda a: to_device(a.astype(np_dtype), device)
    x_train, y_train = on_device(split.x_train), on_device(split.y_train)
    x_val, y_val = on_device(split.x_val), on_device(split.y_val)
    xp = get_array_module(x_train)
    n = len(split.x_train)

    bar = progress_bar(epochs, progress and rank == 0)
    history: dict[str, list[float]] = {"train": [], "val": []}
    best_epoch, best_val, diverged = 0, math.inf, False
    start = time.perf_counter()
    # A diverging run overflows on its way to inf/nan; it is detected and reported below,
    # so NumPy's warnings about it would only bury that message.
    with tempfile.TemporaryDirectory(prefix="minigraph-train-") as tmp, np.errstate(over="ignore", invalid="ignore"):
        best_path = os.path.join(tmp, "best.npz")
        for epoch in range(1, epochs + 1):
            order = to_device(rng.permutation(n), device)
            # The epoch's loss adds up on the device: reading it each step would make
            # the host wait for the GPU every batch. It is read once, below.
            total, seen = xp.zeros((), dtype=np_dtype), 0
            for first in range(0, n, batch_size):
                rows = order[first:first + batch_size]
                if len(rows) < 2:  # a last batch of one row cannot be batch-normalised
                    continue
                rows = rows[len(rows) * rank // size:len(rows) * (rank + 1) // size]  # this process's share
                # device=: host arrays would otherwise go to the default device, the GPU on a GPU machine.
                loss = loss_fn(model(mg.Tensor(x_train[rows], device=device)), mg.Tensor(y_train[rows], device=device))
                if graph_path is not None and epoch == 1 and first == 0 and rank == 0:
                    with open(graph_path, "w") as f:
                        f.write(mg.viz.to_dot(loss, params=dict(model.named_parameters())))
                if len(rows):  # a process with no rows of a small last batch has a NaN mean
                    total = total + loss.data * len(rows)
                opt.zero_grad()
                loss.backward()
                opt.step()
                seen += len(rows)
            if distributed:
                sums = np.array([float(total), seen])
                dist.all_reduce(sums)
                total, seen = sums
            history["train"].append(float(total) / seen)
            history["val"].append(evaluate(model, x_val, y_val))
            bar.update(1)
            bar.set_postfix(train_loss=f"{history['train'][-1]:.4g}", val_loss=f"{history['val'][-1]:.4g}")
            if not (math.isfinite(history["train"][-1]) and math.isfinite(history["val"][-1])):
                diverged = True
                break
            if history["val"][-1] < best_val:
                best_epoch, best_val = epoch, history["val"][-1]
                nn.save(model, best_path)
        bar.close()
        if best_epoch:
            model.load_state_dict(nn.load(best_path))
    seconds = time.perf_counter() - start

    baseline, ols = reference_rmses(split)
    test_rmse = None
    if not diverged:
        test_loss = evaluate(model, on_device(split.x_test), on_device(split.y_test))
        test_rmse = float(np.sqrt(test_loss) * split.y_scale)
    return {
        "data": split.name,
        "test_rmse": test_rmse,
        "baseline_rmse": baseline,
        "ols_rmse": ols,
        "val_rmse": float(np.sqrt(best_val) * split.y_scale) if best_epoch else None,
        "best_epoch": best_epoch or None,
        "train_loss": history["train"][-1],
        "epochs": len(history["train"]),
        "diverged": diverged,
        "device": device,
        "processes": size,
        "seconds": seconds,
        "history": history,
    }


def progress_bar(total: int, enabled: bool) -> Any:
    """A tqdm bar over epochs on stderr (disabled: it draws nothing); classify.py uses it too."""
    from tqdm import tqdm

    return tqdm(total=total, desc="epochs", unit="epoch", disable=not enabled, file=sys.stderr)


def plot_history(history: dict, best_epoch: int | None, path: str) -> None:
    """PNG of the training and validation loss (standardised MSE) per epoch, with the kept epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(history["train"]) + 1)
    ax.plot(epochs, history["train"], label="train (running, train mode)")
    ax.plot(epochs, history["val"], label="validation (eval mode)")
    if best_epoch:
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"kept: epoch {best_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (standardised target)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _number(kind: Callable[[str], Any], minimum: float, inclusive: bool = True, why: str = "") -> Callable:
    """An argparse type: an int, or a finite float, at least (or above) ``minimum``; else a usage error."""
    def parse(text: str) -> Any:
        what = "an integer" if kind is int else "a finite number"
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            bound = f"at least {minimum}" if inclusive else f"above {minimum}"
            raise argparse.ArgumentTypeError(f"expected {what} {bound}{why}; got {text}")
        return value
    return parse


def main(argv: list[str] | None = None, distributed: bool = False) -> int:
    """Parse the flags, train, print the summary; exit status 1 when training diverged.

    ``distributed``: run as one process of an MPI job (examples/train_distributed.py);
    process 0 prints.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Flags left out take the data set's default (DEFAULTS), so each is None here.
    default = lambda key: (f"default {DEFAULTS['diabetes'][key]} on diabetes, "
                           f"{DEFAULTS['friedman'][key]} with --synthetic")
    parser.add_argument("--epochs", type=_number(int, 1),
                        help=f"epochs to run, the best by validation loss kept; {default('epochs')}")
    parser.add_argument("--batch-size", type=_number(int, 2, why=" (batch norm needs two rows)"),
                        help=default("batch_size"))
    parser.add_argument("--lr", type=_number(float, 0, inclusive=False), help=default("lr"))
    parser.add_argument("--optimizer", choices=["sgd", "adam"], help=default("optimizer"))
    parser.add_argument("--weight-decay", type=_number(float, 0), help=default("weight_decay"))
    parser.add_argument("--hidden", type=_number(int, 1), help=f"width of the hidden layers; {default('hidden')}")
    parser.add_argument("--depth", type=_number(int, 1), help=f"hidden layers; {default('depth')}")
    parser.add_argument("--seed", type=_number(int, 0), default=0, help="initial weights and batch order")
    parser.add_argument("--device", choices=["cpu", "gpu", "auto"], default="auto")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--synthetic", type=_number(int, 1), metavar="N",
                        help="train on N generated rows of Friedman's nonlinear problem instead")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of the loss curves")
    parser.add_argument("--graph", metavar="PATH", help="write the DOT graph of one training step")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of results")
    args = parser.parse_args(argv)
    # Each step frees and reallocates the same arrays: let the allocator keep them rather than
    # map and zero fresh pages every step (a third of a CPU step at N = 2048; minigraph/memory.py).
    keep_freed_memory()

    if args.synthetic:
        try:  # too few rows is the row count's fault, whatever the other flags say
            split = standardised_split(*make_friedman(args.synthetic))
        except ValueError as exc:
            parser.error(f"argument --synthetic: {exc}")
    else:
        split = standardised_split(*load_diabetes_data())
    hyper = DEFAULTS["friedman" if args.synthetic else "diabetes"].copy()
    hyper.update({key: getattr(args, key) for key in hyper if getattr(args, key) is not None})
    rank = 0
    if distributed:
        from minigraph import distributed as dist

        dist.init()
        rank = dist.get_rank()
    result = train(split, **hyper, seed=args.seed, device=args.device, dtype=args.dtype,
                   graph_path=args.graph, progress=sys.stderr.isatty() or not args.json,
                   distributed=distributed)
    if rank != 0:
        return 1 if result["diverged"] else 0
    if args.plot:
        plot_history(result["history"], result["best_epoch"], args.plot)

    net = f"depth {hyper['depth']} x {hyper['hidden']} wide, {hyper['optimizer']} lr {hyper['lr']}, " \
          f"weight decay {hyper['weight_decay']}, batch {hyper['batch_size']}"
    print(f"data: {result['data']}; {len(split.x_train)} train / {len(split.x_val)} validation / "
          f"{len(split.x_test)} test rows")
    shared = f", batches shared out over {result['processes']} processes" if distributed else ""
    print(f"net: {net}{shared}; device {result['device']}; {result['epochs']} epochs in "
          f"{result['seconds']:.2f} s")
    if result["diverged"]:
        print(f"training diverged: the loss was {result['train_loss']} (train) and {result['history']['val'][-1]} "
              f"(validation) in epoch {result['epochs']}; no test error to report. Try a smaller --lr "
              f"(this run: {hyper['lr']}).", file=sys.stderr)
    else:
        print(f"kept epoch {result['best_epoch']} (lowest validation loss); test RMSE, in the target's units:")
        print(f"  minigraph net           {result['test_rmse']:10.3f}")
        print(f"  least squares           {result['ols_rmse']:10.3f}")
        print(f"  predict the mean        {result['baseline_rmse']:10.3f}")
        gain = 1 - result["test_rmse"] / result["baseline_rmse"]
        print(f"the net's error is {abs(gain):.0%} {'below' if gain >= 0 else 'above'} the baseline's and "
              f"{result['test_rmse'] / result['ols_rmse']:.2f}x that of least squares")
    if args.plot:
        print(f"loss curves: {args.plot}")
    if args.graph:
        print(f"graph of one step: {args.graph} (render with: dot -Tpng {args.graph} -o graph.png)")
    if args.json:
        # Strict JSON: a loss that is not finite is written as null.
        finite = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v
        print(json.dumps({k: finite(v) for k, v in result.items() if k != "history"}))
    return 1 if result["diverged"] else 0


if __name__ == "__main__":
    sys.exit(main())
