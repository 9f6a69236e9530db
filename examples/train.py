"""Train a batch-norm net on real data: scikit-learn's diabetes set (or a larger synthetic one).

The net is Linear → BatchNorm1d → ReLU, twice, then Linear, trained on the mean
squared error. Features and target are standardised with statistics of the
training split only; errors are reported in the target's own units, beside two
references on the same split: predicting the training mean, and ordinary least
squares.

    python examples/train.py                       # diabetes, defaults (a few seconds)
    python examples/train.py --synthetic 200000 --device gpu --batch-size 4096
    python examples/train.py --plot loss.png --graph step.dot --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import minigraph as mg
from minigraph import nn, optim
from minigraph.backend import check_device, to_device


@dataclass
class Split:
    """Standardised arrays on the host: x_*: (N, p), y_*: (N, 1); y_scale turns errors back into units."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    y_scale: float
    name: str


def load_diabetes_data() -> tuple[np.ndarray, np.ndarray, str]:
    """The diabetes set (442 patients, 10 features), which ships inside scikit-learn."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    return data.data, data.target.astype(np.float64), "diabetes (scikit-learn)"


def make_synthetic(n: int, p: int = 32, seed: int = 12345) -> tuple[np.ndarray, np.ndarray, str]:
    """A nonlinear regression problem large enough to give a GPU work: x: (n, p), y: (n,)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p))
    w1, w2 = rng.normal(size=(p, 16)) / np.sqrt(p), rng.normal(size=16)
    y = np.tanh(x @ w1) @ w2 + 0.5 * np.sin(x[:, 0] * x[:, 1]) + 0.3 * rng.normal(size=n)
    return x, y, f"synthetic ({n} rows, {p} features)"


def standardised_split(x: np.ndarray, y: np.ndarray, name: str, test_fraction: float = 0.2) -> Split:
    """A fixed train/test split (independent of --seed), standardised with training statistics."""
    order = np.random.default_rng(2018).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    x_mean, x_std = x[train].mean(0), x[train].std(0)
    y_mean, y_std = y[train].mean(), y[train].std()
    scale_x = lambda rows: (x[rows] - x_mean) / x_std
    scale_y = lambda rows: ((y[rows] - y_mean) / y_std)[:, None]
    return Split(scale_x(train), scale_y(train), scale_x(test), scale_y(test), float(y_std), name)


def reference_rmses(split: Split) -> tuple[float, float]:
    """Test RMSE (target units) of predicting the training mean, and of least squares."""
    baseline = np.sqrt(np.mean(split.y_test ** 2)) * split.y_scale  # the training mean is 0 here
    design = lambda x: np.hstack([x, np.ones((len(x), 1))])
    coef, *_ = np.linalg.lstsq(design(split.x_train), split.y_train, rcond=None)
    ols = np.sqrt(np.mean((design(split.x_test) @ coef - split.y_test) ** 2)) * split.y_scale
    return float(baseline), float(ols)


def build_model(in_features: int, hidden: int, rng: np.random.Generator, dtype: Any) -> nn.Module:
    """Linear → BatchNorm1d → ReLU, twice, then Linear: (N, in_features) -> (N, 1)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden, rng=rng, dtype=dtype),
        nn.BatchNorm1d(hidden, dtype=dtype),
        nn.ReLU(),
        nn.Linear(hidden, hidden, rng=rng, dtype=dtype),
        nn.BatchNorm1d(hidden, dtype=dtype),
        nn.ReLU(),
        nn.Linear(hidden, 1, rng=rng, dtype=dtype),
    )


def evaluate(model: nn.Module, x: Any, y: Any) -> float:
    """Mean squared error (standardised units) in eval mode, with the running statistics."""
    model.eval()
    with mg.no_grad():
        loss = mg.mse_loss(model(mg.Tensor(x)), mg.Tensor(y)).item()
    model.train()
    return loss


def train(
    split: Split,
    epochs: int = 40,
    batch_size: int = 32,
    lr: float = 1e-3,
    optimizer: str = "adam",
    seed: int = 0,
    device: str = "auto",
    hidden: int = 16,
    dtype: str = "float64",
    graph_path: str | None = None,
    progress: bool = True,
) -> dict:
    """Train on ``split`` and return the figures the summary and --json report."""
    device = check_device(device)
    rng = np.random.default_rng(seed)
    np_dtype = np.dtype(dtype)
    model = build_model(split.x_train.shape[1], hidden, rng, np_dtype).to(device)
    if optimizer == "adam":
        opt = optim.Adam(model.parameters(), lr=lr)
    elif optimizer == "sgd":
        opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    else:
        raise ValueError(f"--optimizer must be sgd or adam; got {optimizer!r}")
    loss_fn = nn.MSELoss()

    # The data lives on the device once; batches are gathered there.
    x_train, y_train = (to_device(a.astype(np_dtype), device) for a in (split.x_train, split.y_train))
    x_test, y_test = (to_device(a.astype(np_dtype), device) for a in (split.x_test, split.y_test))
    n = len(split.x_train)
    if n < 2 or batch_size < 2:
        raise ValueError("batch norm needs batches of at least 2 rows: use --batch-size >= 2")

    bar = _progress(epochs, progress)
    history: dict[str, list[float]] = {"train": [], "test": []}
    start = time.perf_counter()
    for epoch in range(epochs):
        order = to_device(rng.permutation(n), device)
        running, seen = 0.0, 0
        for first in range(0, n, batch_size):
            rows = order[first:first + batch_size]
            if len(rows) < 2:  # a last batch of one row cannot be batch-normalised
                continue
            loss = loss_fn(model(mg.Tensor(x_train[rows])), mg.Tensor(y_train[rows]))
            if graph_path is not None and epoch == 0 and first == 0:
                with open(graph_path, "w") as f:
                    f.write(mg.viz.to_dot(loss, params=dict(model.named_parameters())))
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item() * len(rows)
            seen += len(rows)
        history["train"].append(running / seen)
        history["test"].append(evaluate(model, x_test, y_test))
        bar.update(1)
        bar.set_postfix(train_loss=f"{history['train'][-1]:.4f}", test_loss=f"{history['test'][-1]:.4f}")
    bar.close()
    seconds = time.perf_counter() - start

    baseline, ols = reference_rmses(split)
    return {
        "data": split.name,
        "test_rmse": float(np.sqrt(history["test"][-1]) * split.y_scale),
        "baseline_rmse": baseline,
        "ols_rmse": ols,
        "train_loss": history["train"][-1],
        "epochs": epochs,
        "device": device,
        "seconds": seconds,
        "history": history,
    }


def _progress(total: int, enabled: bool) -> Any:
    """A tqdm bar over epochs, or a do-nothing stand-in when disabled."""
    from tqdm import tqdm

    return tqdm(total=total, desc="epochs", unit="epoch", disable=not enabled, file=sys.stderr)


def plot_history(history: dict, path: str) -> None:
    """PNG of the train and test loss (standardised MSE) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(history["train"]) + 1)
    ax.plot(epochs, history["train"], label="train (running, train mode)")
    ax.plot(epochs, history["test"], label="test (eval mode)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (standardised target)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["cpu", "gpu", "auto"], default="auto")
    parser.add_argument("--hidden", type=int, default=16, help="width of both hidden layers")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--synthetic", type=int, metavar="N", help="train on N generated rows instead")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of the loss curves")
    parser.add_argument("--graph", metavar="PATH", help="write the DOT graph of one training step")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of results")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")

    x, y, name = make_synthetic(args.synthetic) if args.synthetic else load_diabetes_data()
    split = standardised_split(x, y, name)
    result = train(split, epochs=args.epochs, batch_size=args.batch_size,
                   lr=args.lr, optimizer=args.optimizer,
                   seed=args.seed, device=args.device, hidden=args.hidden, dtype=args.dtype,
                   graph_path=args.graph, progress=sys.stderr.isatty() or not args.json)
    if args.plot:
        plot_history(result["history"], args.plot)

    print(f"data: {result['data']}; {len(split.x_train)} train / {len(split.x_test)} test rows; "
          f"device {result['device']}; {result['epochs']} epochs in {result['seconds']:.2f} s")
    print(f"test RMSE, in the target's units:")
    print(f"  minigraph net           {result['test_rmse']:10.3f}")
    print(f"  least squares           {result['ols_rmse']:10.3f}")
    print(f"  predict the train mean  {result['baseline_rmse']:10.3f}")
    gain = 1 - result["test_rmse"] / result["baseline_rmse"]
    print(f"the net's error is {gain:.0%} below the baseline's and "
          f"{result['test_rmse'] / result['ols_rmse']:.2f}x that of least squares")
    if args.plot:
        print(f"loss curves: {args.plot}")
    if args.graph:
        print(f"graph of one step: {args.graph} (render with: dot -Tpng {args.graph} -o graph.png)")
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return result


if __name__ == "__main__":
    main()
