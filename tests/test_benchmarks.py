"""benchmarks/: each script runs in --quick mode (on each device), and what they compare agrees.

No timing is asserted anywhere: figures depend on the machine, and belong in BENCHMARKS.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_python
from minigraph import kernels

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import bn_backward  # noqa: E402  (benchmarks/ is not a package)
import train_step  # noqa: E402

HAS_NUMBA = importlib.util.find_spec("numba") is not None


def run_script(name: str, *args: str, env: dict | None = None) -> dict:
    """Run benchmarks/<name> with --quick --json (``env`` added to the environment); return its
    last line parsed as JSON."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), "--quick", "--json", *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_bn_backward_quick_mode_runs_agrees_and_plots(tmp_path):
    plot = tmp_path / "bn.png"
    report = run_script("bn_backward.py", "--plot", str(plot))
    assert report["benchmark"] == "bn_backward" and report["results"]
    for case in report["results"]:
        assert set(case["methods"]) == {"minigraph", "minigraph fused", "loop", "jacobian"}
        if not (HAS_NUMBA and kernels.fused_enabled()):  # the one method that may be skipped, for this reason
            assert "no fused kernel" in case["methods"].pop("minigraph fused")["skipped"]
        assert all(m["agrees"] for m in case["methods"].values())
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_step_quick_mode_runs_and_the_variants_agree(device):
    report = run_script("train_step.py", "--device", device)
    assert report["benchmark"] == "train_step" and report["agree"] and not report["problems"]
    assert {"minigraph", "minigraph-formula", "numpy"} <= set(report["variants"])
    kinds = {key.split()[0] for key in report["results"]}
    assert {"step", "chain", "call", "batch_norm", "copy"} <= kinds
    for kind in ("chain", "call"):  # per node and per call: minigraph and torch (where it ran), a positive time
        assert set(report["results"][kind]) == {"minigraph", "torch"} & set(report["variants"]) and \
            all(r["seconds"] > 0 for r in report["results"][kind].values())
    if device == "gpu":
        assert "name" in report["machine"]["gpu"], report["machine"]["gpu"]

    # The agreement check is what makes the figures comparable: it must catch a 1 % change.
    first_round = {v: {"fingerprint": prints} for v, prints in report["fingerprints"].items()}
    assert train_step.check_agreement(first_round) == []
    n = next(iter(first_round["numpy"]["fingerprint"]))
    first_round["numpy"]["fingerprint"][n]["3.weight"] *= 1.01
    problems = train_step.check_agreement(first_round)
    assert len(problems) == 1 and "3.weight" in problems[0] and "numpy" in problems[0]


def test_launches_counts_each_call_that_launches_work_once():
    """Five operations that launch a kernel (two adds, a sum, a multiply, a maximum), and five that
    do not (.shape, .T, .reshape, [0], asarray of a device array); ``within`` keeps only the calls
    made while a function of the named file runs."""
    code = ("import launches, cupy\n"
            "a = cupy.ones((3, 4))\n"
            "f = lambda: (a + a).sum(axis=0) * a.shape[0] + cupy.maximum(cupy.asarray(a), 0).T.reshape(-1)[0]\n"
            "names = lambda counts: sorted(callee for (where, callee), k in counts.items() for _ in range(k))\n"
            "print(names(launches.count_calls(f)))\n"
            "print(names(launches.count_calls(f, within='<string>')))\n"
            "print(names(launches.count_calls(f, within='elsewhere.py')))")
    everything, within, elsewhere = map(eval, run_python(code, BENCHMARKS, cwd=BENCHMARKS).split("\n")[-4:-1])
    assert everything == ["__add__", "__add__", "__mul__", "maximum", "sum"], everything
    assert within == everything and elsewhere == []


def test_launches_quick_mode_counts_both_steps():
    report = run_script("launches.py")
    results = report["results"]
    step, hand = results["minigraph step"], results["hand-written step"]
    batch_norm = results["minigraph step, within batch norm"]["calls"]
    assert hand["calls"] > 0 and 0 < batch_norm < step["calls"]
    assert sum(step["by_caller"].values()) == step["calls"]
    assert any(key.startswith("minigraph/ops/relu.py") for key in step["by_caller"])
    assert any(key.startswith("minigraph/ops/batch_norm.py") for key in step["by_caller"])
    fused = results["minigraph step, batch norm fused (estimate)"]["calls"]
    assert fused == step["calls"] - batch_norm + train_step.HIDDEN * report["kernel_launches_per_layer"]


def reference_gradients(x, gamma, beta, grad_y, ddof, eps, h=1e-6):
    """Central differences of ⟨BN(x; γ, β), dY⟩, with a forward written here from the definition."""
    def objective(x, gamma, beta):
        n = x.shape[0]
        mean = x.sum(axis=0) / n
        variance = ((x - mean) ** 2).sum(axis=0) / (n - ddof)
        return float(((x - mean) / np.sqrt(variance + eps) * gamma + beta).ravel() @ grad_y.ravel())

    args = [x, gamma, beta]
    grads = []
    for k, array in enumerate(args):
        grad = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            shifted = [a.copy() for a in args]
            shifted[k][index] += h
            up = objective(*shifted)
            shifted[k][index] -= 2 * h
            grad[index] = (up - objective(*shifted)) / (2 * h)
        grads.append(grad)
    return grads


@pytest.mark.parametrize("ddof", [0, 1])
def test_the_backward_methods_agree_with_finite_differences(ddof, monkeypatch):
    eps = 1e-5
    problem = bn_backward.make_problem(6, 3, np, "float64", seed=3)
    x, gamma, beta, grad_y = (problem[k] for k in ("x", "gamma", "beta", "grad_y"))
    want = reference_gradients(x, gamma, beta, grad_y, ddof, eps)
    node = bn_backward.minigraph_node(problem, ddof, eps)
    assert node.kernel is None  # "minigraph" is the formula, whatever the environment says
    centred, inv_std = bn_backward.forward_statistics(x, ddof, eps)
    methods = {
        "minigraph": bn_backward.minigraph_backward(node, grad_y),
        "loop": bn_backward.loop_backward(centred, inv_std, gamma, grad_y, ddof),
        "jacobian": bn_backward.jacobian_backward(centred, inv_std, gamma, grad_y, ddof),
    }
    if HAS_NUMBA:
        monkeypatch.setenv("MINIGRAPH_FUSED", "1")
        methods["minigraph fused"] = bn_backward.minigraph_backward(
            bn_backward.minigraph_node(problem, ddof, eps, fused=True), grad_y)
    for name, got in methods.items():
        for label, g, w in zip(("dX", "dgamma", "dbeta"), got, want):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7, err_msg=f"{name} {label}")


def test_the_jacobian_is_block_diagonal_and_matches_finite_differences():
    """J itself, not only Jᵀ vec(dY): column-major vec, one N×N block per feature."""
    n, p, ddof, eps, h = 4, 2, 0, 1e-5, 1e-6
    problem = bn_backward.make_problem(n, p, np, "float64", seed=4)
    x, gamma = problem["x"], problem["gamma"]
    centred, inv_std = bn_backward.forward_statistics(x, ddof, eps)
    jac = bn_backward.jacobian_x(centred, inv_std, gamma, ddof)

    def vec_y(x):
        c = x - x.mean(axis=0)
        return (c / np.sqrt((c ** 2).sum(axis=0) / (n - ddof) + eps) * gamma).T.ravel()

    numeric = np.zeros((n * p, n * p))
    for column in range(n * p):
        step = np.zeros(n * p)
        step[column] = h
        delta = step.reshape(p, n).T  # un-vec: column-major
        numeric[:, column] = (vec_y(x + delta) - vec_y(x - delta)) / (2 * h)
    np.testing.assert_allclose(jac, numeric, rtol=1e-6, atol=1e-8)
    assert np.all(jac[:n, n:] == 0) and np.all(jac[n:, :n] == 0)


def test_layer_norm_quick_mode_runs_and_the_variants_agree():
    report = run_script("layer_norm.py")
    assert report["benchmark"] == "layer_norm" and report["agree"]
    assert {"minigraph-formula", "minigraph-fused"} <= set(report["variants"])
    assert set(report["results"]["64x16"]) == set(report["variants"])
    assert report["fused_ran"] == (HAS_NUMBA and kernels.fused_enabled())


def test_column_dot_quick_mode_runs(device):
    report = run_script("column_dot.py", "--device", device)
    assert report["benchmark"] == "column_dot" and report["results"]
    assert all(row["relative_error"] < 1e-4 for row in report["results"])
    for kind in ("1ᵀ(A⊙B)", "1ᵀA"):  # one fastest spelling per kind, shape and dtype
        for dtype in ("float32", "float64"):
            rows = [r for r in report["results"] if r["kind"] == kind and r["dtype"] == dtype]
            assert sum(bool(r.get("fastest")) for r in rows) == 1


def in_a_git_checkout() -> bool:
    return shutil.which("git") is not None and subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode == 0


@pytest.mark.skipif(not in_a_git_checkout(), reason="ab_step.py exports git revisions: needs git and a checkout")
def test_ab_step_quick_mode_times_a_revision_against_the_worktree():
    # Formula batch norm: the exported revision would compile numba's kernels afresh (seconds).
    report = run_script("ab_step.py", "HEAD", "WORKTREE", env={"MINIGRAPH_FUSED": "0"})
    assert report["benchmark"] == "ab_step" and not report["problems"]
    medians = report["results"]["step N=64"]
    assert set(medians) == {"HEAD", "WORKTREE"} and all(m["median"] > 0 for m in medians.values())


def test_ab_step_refuses_to_compare_revisions_that_compute_different_losses():
    import ab_step

    assert ab_step.disagreements({"a": 1.0, "b": 1.0 + 1e-7}) == []
    problems = ab_step.disagreements({"a": 1.0, "b": 1.0 + 1e-4, "c": 1.0})
    assert len(problems) == 1 and "at b" in problems[0] and "at a" in problems[0]


def test_bn_gpu_quick_mode_runs_and_the_paths_agree(gpu):
    import cupy

    report = run_script("bn_gpu.py")
    assert report["benchmark"] == "bn_gpu" and report["agree"]
    result = report["results"]["256x64"]
    want = {"formula", "copy (CuPy)"}
    if not getattr(cupy, "IS_STANDIN", False):  # real CUDA: the kernels, timed and checked against the formula
        want |= {"kernels", "minigraph"}
        assert "minigraph" in result["disagreement"]
    assert want <= set(result["seconds"]) and all(t > 0 for t in result["seconds"].values())
