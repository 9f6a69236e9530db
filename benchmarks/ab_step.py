"""The example net's training step at two revisions of minigraph: does an engine change cost time?

Each revision is a git revision, exported with ``git archive`` into a temporary folder, or
``WORKTREE``: this checkout as it is now. Every measurement runs in its own process, which
imports minigraph from that folder; the revisions alternate (A, B, A, B, ...) for --rounds rounds,
so that a noisy machine's drift falls on both alike. The step: (Linear → BatchNorm1d → ReLU) × 2 →
Linear, MSE loss, SGD, float32, on the CPU; the median of --steps steps after 3 warm-up steps.
Both revisions must give the same first loss (relative 1e-5), or the script exits 1: it compares
equal computations only. MINIGRAPH_FUSED and the other watched variables pass through.

    python benchmarks/ab_step.py eff7237 HEAD             # N = 2048 and 4096, 3 rounds
    python benchmarks/ab_step.py HEAD WORKTREE --n 16     # a tiny batch: the engine's own cost
    python benchmarks/ab_step.py HEAD WORKTREE --quick --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARMUP = 3


def worker(tree: str, n: int, steps: int) -> dict:
    """Time the step with the minigraph in ``tree``; returns the first loss and each step's seconds."""
    sys.path.insert(0, tree)  # first, so no installed minigraph (nor this checkout's) is imported
    import numpy as np

    import minigraph as mg
    from minigraph import nn, optim

    assert Path(mg.__file__).resolve().is_relative_to(Path(tree).resolve()), mg.__file__
    rng = np.random.default_rng(0)
    layers = [nn.Linear(256, 512, rng=1, device="cpu"), nn.BatchNorm1d(512, device="cpu"), nn.ReLU(),
              nn.Linear(512, 512, rng=2, device="cpu"), nn.BatchNorm1d(512, device="cpu"), nn.ReLU(),
              nn.Linear(512, 1, rng=3, device="cpu")]
    model = nn.Sequential(*layers)
    opt = optim.SGD(model.parameters(), lr=1e-3)
    x = rng.normal(size=(n, 256)).astype(np.float32)
    y = rng.normal(size=(n, 1)).astype(np.float32)
    loss_fn = nn.MSELoss()
    times, first_loss = [], None
    for _ in range(WARMUP + steps):
        start = time.perf_counter()
        loss = loss_fn(model(mg.Tensor(x, device="cpu")), mg.Tensor(y, device="cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
        first_loss = float(loss) if first_loss is None else first_loss
    return {"first_loss": first_loss, "seconds": times[WARMUP:]}


def disagreements(first_losses: dict[str, float], rtol: float = 1e-5) -> list[str]:
    """Each revision whose first loss differs from the first revision's by more than ``rtol``."""
    (reference, expected), *others = first_losses.items()
    return [f"first loss {loss} at {rev}, but {expected} at {reference}" for rev, loss in others
            if abs(loss - expected) > rtol * abs(expected)]


def export(revision: str, into: Path) -> str:
    """A folder holding ``revision``'s tree (or this checkout's, for WORKTREE)."""
    root = Path(__file__).resolve().parents[1]
    if revision == "WORKTREE":
        return str(root)
    folder = into / revision.replace("/", "_")
    folder.mkdir()
    archive = subprocess.run(["git", "-C", str(root), "archive", revision, "minigraph"],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"ab_step: git archive {revision} failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return str(folder)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="a git revision, or WORKTREE")
    parser.add_argument("b", help="a git revision, or WORKTREE")
    parser.add_argument("--n", type=int, nargs="+", default=[2048, 4096], help="batch sizes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="N = 64, one round of 2 steps: a smoke test")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.n[0], args.steps)))
        return {}
    if args.quick:
        args.n, args.rounds, args.steps = [64], 1, 2

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_common as common

    report = {"benchmark": "ab_step", "machine": common.machine_info("cpu"), "revisions": [args.a, args.b],
              "results": {}, "problems": []}
    print(common.describe_machine(report["machine"]))
    print("watched variables:", common.env_summary(report["machine"]["env"]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        trees = {rev: export(rev, Path(tmp)) for rev in dict.fromkeys([args.a, args.b])}
        for n in args.n:
            medians: dict[str, list[float]] = {rev: [] for rev in trees}
            losses: dict[str, float] = {}
            for _ in range(args.rounds):
                for rev, tree in trees.items():
                    out = common.run_worker(__file__, [args.a, args.b, "--n", str(n), "--steps",
                                                       str(args.steps)], tree)
                    medians[rev].append(common.median(out["seconds"]))
                    losses[rev] = out["first_loss"]
            report["problems"] += [f"N={n}: {p}" for p in disagreements(losses)]
            report["results"][f"step N={n}"] = {rev: common.summary(m) for rev, m in medians.items()}
            ms = {rev: [1e3 * s for s in m] for rev, m in medians.items()}
            a_ms, b_ms = common.median(ms[args.a]), common.median(ms[args.b])
            rows.append([f"step N={n} (ms)", a_ms, b_ms, b_ms / a_ms,
                         " / ".join(f"{v:.2f}" for v in ms[args.a]), " / ".join(f"{v:.2f}" for v in ms[args.b])])
    print(common.format_table(["measurement", args.a, args.b, "B / A", f"{args.a}, per round",
                               f"{args.b}, per round"], rows))
    for problem in report["problems"]:
        print("PROBLEM:", problem)
    common.emit(report, args.json)
    if report["problems"]:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
