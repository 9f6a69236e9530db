"""minigraph.distributed: synchronized batch norm and data-parallel training.

Two halves. In this process, without MPI: ``sync_batch_norm`` against simulated processes (one
thread each, summing through a barrier), held to ``batch_norm`` on the concatenated batch and to
finite differences. Under ``mpiexec`` (tests/distributed_worker.py, a timeout on every launch so
nothing can hang CI): training on 1 to 4 processes against one process on the whole batch, the
errors every process must raise together, and a failing process ending the whole job.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

import minigraph as mg
from minigraph import backend, distributed as dist, nn

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_common  # noqa: E402  (benchmarks/ is not a package)
import distributed_worker as worker  # noqa: E402  (tests/ is on sys.path: pytest puts it there)


def host(array):
    return backend.to_device(array, "cpu")


# --- simulated processes -------------------------------------------------------------------
class SimulatedProcesses:
    """``run(fn)`` calls fn(rank, all_reduce) on one thread per process; ``all_reduce`` sums
    every process's array in rank order, as a collective (it blocks until all have called it)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=20)  # a lone failure breaks it, no hang
        self.slots: list = [None] * size
        self.calls = 0

    def all_reduce(self, rank: int, array):
        self.slots[rank] = array.copy()
        self.barrier.wait()
        total = self.slots[0].copy()
        for other in self.slots[1:]:
            total += other
        self.barrier.wait()  # everyone has read the slots before they are reused
        if rank == 0:
            self.calls += 1
        return total

    def run(self, fn) -> list:
        results: list = [None] * self.size
        errors: list = [None] * self.size

        def body(rank: int) -> None:
            try:
                results[rank] = fn(rank, lambda array: self.all_reduce(rank, array))
            except BaseException as exc:  # noqa: BLE001  (reported per process below)
                errors[rank] = exc

        threads = [threading.Thread(target=body, args=(rank,)) for rank in range(self.size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads), "a simulated process hung"
        if any(errors):
            raise ProcessErrors(errors)
        return results


class ProcessErrors(Exception):
    def __init__(self, errors: list) -> None:
        super().__init__(errors)
        self.errors = errors


def split_rows(array: np.ndarray, rows: list[int]) -> list[np.ndarray]:
    return np.split(array, np.cumsum(rows)[:-1])


SPLITS = [[24], [12, 12], [2, 22], [1, 8, 15], [0, 4, 8, 12]]


@pytest.mark.parametrize("rows", SPLITS, ids=lambda rows: "-".join(map(str, rows)))
@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("sequence", [(), (3,)], ids=["rows", "sequences"])
def test_sync_batch_norm_is_batch_norm_of_the_concatenated_batch(rows, ddof, sequence, on, rng):
    """x: (N, p), or (N, p, L) split by samples, each channel then over all N·L values."""
    n, p = sum(rows), 4
    x = rng.normal(size=(n, p, *sequence)) * 3 + 5
    grad_y = rng.normal(size=x.shape)
    gamma, beta = rng.normal(size=p), rng.normal(size=p)
    stats = (rng.normal(size=p), rng.uniform(1, 2, size=p))

    def leaves():
        return (mg.Tensor(on(gamma), requires_grad=True), mg.Tensor(on(beta), requires_grad=True),
                on(stats[0].copy()), on(stats[1].copy()))  # updated in place: one pair each

    g, b, running_mean, running_var = leaves()
    whole = mg.Tensor(on(x), requires_grad=True)
    want = mg.batch_norm(whole, g, b, running_mean, running_var, momentum=0.3, ddof=ddof)
    want.backward(on(grad_y))

    def process(rank, all_reduce):
        g_r, b_r, mean_r, var_r = leaves()
        x_r = mg.Tensor(on(split_rows(x, rows)[rank]), requires_grad=True)
        y_r = dist.sync_batch_norm(x_r, g_r, b_r, mean_r, var_r, momentum=0.3, ddof=ddof,
                                   all_reduce=all_reduce)
        y_r.backward(on(split_rows(grad_y, rows)[rank]))
        return y_r.numpy(), host(x_r.grad), host(g_r.grad), host(b_r.grad), host(mean_r), host(var_r)

    world = SimulatedProcesses(len(rows))
    results = world.run(process)
    assert world.calls == 3  # two all-reduces forward, one backward
    np.testing.assert_allclose(np.concatenate([r[0] for r in results]), want.numpy(), rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.concatenate([r[1] for r in results]), host(whole.grad), rtol=0, atol=1e-13)
    # dγ and dβ are each process's share; their sum is the whole batch's gradient.
    np.testing.assert_allclose(sum(r[2] for r in results), host(g.grad), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(sum(r[3] for r in results), host(b.grad), rtol=1e-13, atol=1e-13)
    for r in results:  # the same running statistics everywhere, from the global mean and variance
        np.testing.assert_allclose(r[4], host(running_mean), rtol=1e-14)
        np.testing.assert_allclose(r[5], host(running_var), rtol=1e-14)
        np.testing.assert_array_equal(r[4], results[0][4])
        np.testing.assert_array_equal(r[5], results[0][5])


def test_sync_batch_norm_backward_matches_finite_differences_of_the_global_objective(rng):
    """f = Σ_r ⟨Y_r, G_r⟩ over three processes, by central differences in every input."""
    rows, p, h = [1, 3, 2], 2, 1e-6
    x, grad_y = rng.normal(size=(6, p)), rng.normal(size=(6, p))
    gamma, beta = rng.normal(size=p), rng.normal(size=p)

    def objective_and_grads(x, gamma, beta):
        def process(rank, all_reduce):
            leaves = [mg.Tensor(a, requires_grad=True) for a in (split_rows(x, rows)[rank], gamma, beta)]
            y = dist.sync_batch_norm(*leaves, ddof=1, all_reduce=all_reduce)
            g = split_rows(grad_y, rows)[rank]
            y.backward(g)
            return float((y.numpy() * g).sum()), [leaf.grad for leaf in leaves]

        results = SimulatedProcesses(len(rows)).run(process)
        grads = [np.concatenate([r[1][0] for r in results]), sum(r[1][1] for r in results),
                 sum(r[1][2] for r in results)]
        return sum(r[0] for r in results), grads

    args = [x, gamma, beta]
    _, analytic = objective_and_grads(*args)
    for which, array in enumerate(args):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            values = []
            for step in (h, -h):
                moved = [a.copy() for a in args]
                moved[which][index] += step
                values.append(objective_and_grads(*moved)[0])
            numeric[index] = (values[0] - values[1]) / (2 * h)
        np.testing.assert_allclose(analytic[which], numeric, rtol=1e-5, atol=1e-7)


def test_validation_uses_the_global_row_count_so_every_process_raises_together():
    def normalise(rows, ddof=0):
        def process(rank, all_reduce):
            return dist.sync_batch_norm(mg.Tensor(np.ones((rows[rank], 2))), None, None, ddof=ddof,
                                        all_reduce=all_reduce).shape
        return SimulatedProcesses(len(rows)).run(process)

    assert normalise([1, 1]) == [(1, 2), (1, 2)]  # a 1-row process is fine
    assert normalise([0, 3]) == [(0, 2), (3, 2)]  # so is an empty one
    for rows, ddof, expected in [([1, 0], 0, "more than 1 value per feature"), ([0, 0], 0, "N = 0"),
                                 ([1, 2], 3, "ddof=3 < N")]:
        with pytest.raises(ProcessErrors) as caught:
            normalise(rows, ddof)
        messages = {str(e) for e in caught.value.errors}
        assert len(messages) == 1 and expected in messages.pop()  # every process, the same error


def test_the_variance_is_two_pass_across_processes_for_a_float32_mean_of_1e4():
    """E[x²] − E[x]² loses every digit here (the trap is checked to be real); two passes do not."""
    rows = worker.LARGE_MEAN_ROWS[:3]
    x = (1e4 + np.random.default_rng(7).normal(size=(sum(rows), 3))).astype(np.float32)

    def process(rank, all_reduce):
        def forward(layer, x):  # what nn.SyncBatchNorm runs after init(), with this all-reduce
            return dist.sync_batch_norm(x, layer.weight, layer.bias, layer.running_mean,
                                        layer.running_var, momentum=layer.momentum, eps=layer.eps,
                                        all_reduce=all_reduce)
        return worker.large_mean_statistics(rows, rank, forward)

    check_large_mean_statistics(x, SimulatedProcesses(3).run(process))


def check_large_mean_statistics(x: np.ndarray, per_process: list[dict]) -> None:
    exact = x.astype(np.float64)
    naive = (x * x).mean(0, dtype=np.float32) - x.mean(0, dtype=np.float32) ** 2
    assert np.all(np.abs(naive / exact.var(0) - 1) > 0.1)  # the cancellation is real in float32
    n = len(x)
    for stats in per_process:
        np.testing.assert_allclose(stats["running_mean"], exact.mean(0), rtol=1e-6)
        np.testing.assert_allclose(stats["running_var"], exact.var(0, ddof=1), rtol=1e-3)
        np.testing.assert_array_equal(stats["running_var"], per_process[0]["running_var"])
    # Σ over all rows of the normalised output squared is N: each column has variance 1.
    np.testing.assert_allclose(sum(s["sum_sq"] for s in per_process), n, rtol=1e-3)


def test_sync_batch_norm_communicates_only_in_training(rng):
    calls = []
    layer = nn.SyncBatchNorm(3, dtype=np.float64)
    previous, nn.synchronized_batch_norm = nn.synchronized_batch_norm, lambda *a, **k: calls.append(1)
    try:
        layer.eval()
        out = layer(mg.Tensor(rng.normal(size=(4, 3))))
        layer.train()
        layer(mg.Tensor(rng.normal(size=(4, 3))))
    finally:
        nn.synchronized_batch_norm = previous
    assert out.shape == (4, 3) and calls == [1]


def test_before_init_sync_batch_norm_is_batch_norm1d_and_checkpoints_move_between_them(device, rng):
    x = rng.normal(size=(6, 3))
    grad_y = rng.normal(size=(6, 3))
    layers = [nn.SyncBatchNorm(3, momentum=0.2, ddof=1), nn.BatchNorm1d(3, momentum=0.2, ddof=1)]
    outputs = []
    for layer in layers:
        xt = mg.Tensor(x.astype(np.float32), requires_grad=True)
        y = layer(xt)
        y.backward(grad_y.astype(np.float32))
        outputs.append((y.numpy(), host(xt.grad), host(layer.weight.grad), layer.state_dict()))
    for got, want in zip(outputs[0][:3], outputs[1][:3]):
        np.testing.assert_array_equal(got, want)
    assert list(outputs[0][3]) == list(outputs[1][3])
    layers[1].load_state_dict(outputs[0][3])
    layers[0].load_state_dict(layers[1].state_dict())
    assert repr(layers[0]).startswith("SyncBatchNorm(3,")


def test_convert_sync_batchnorm_keeps_the_parameters_and_replaces_a_shared_layer_once():
    shared = nn.BatchNorm1d(4)
    model = nn.Sequential(nn.Linear(3, 4), shared, nn.ReLU(), shared)
    weight = shared.weight
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert converted is model
    assert type(model[1]) is nn.SyncBatchNorm and model[1] is model[3]
    assert model[1].weight is weight and model[1].running_mean is shared.running_mean
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                        "1.running_var", "1.num_batches_tracked"]
    assert type(nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm1d(2))) is nn.SyncBatchNorm


def test_single_process_code_never_imports_mpi():
    code = ("import sys, minigraph, minigraph.nn, minigraph.distributed\n"
            "print('mpi4py' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert done.stdout.strip() == "False"


def test_without_init_the_process_group_is_an_error_that_says_what_to_call(monkeypatch):
    assert not dist.is_initialized()
    for call in (dist.get_rank, dist.get_world_size, lambda: dist.DistributedDataParallel(nn.Linear(2, 1))):
        with pytest.raises(RuntimeError, match=r"call minigraph\.distributed\.init\(\) first"):
            call()
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'minigraph\[mpi\]'"):
        dist.init()
    assert not dist.is_initialized()


def test_buckets_follow_reverse_parameter_order_one_dtype_each_within_the_cap():
    params = [mg.Tensor(np.zeros(size, dtype=dtype), requires_grad=True)
              for size, dtype in [(100, np.float64), (10, np.float32), (100, np.float64), (50, np.float64)]]
    buckets = dist._plan_buckets(params, cap_bytes=1200)
    assert [[params.index(p) for p in b.params] for b in buckets] == [[3, 2], [1], [0]]


# --- under mpiexec -------------------------------------------------------------------------
def mpiexec_path() -> str | None:
    beside_python = Path(sys.executable).parent / "mpiexec"
    return str(beside_python) if beside_python.exists() else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(
    mpiexec_path() is None or importlib.util.find_spec("mpi4py") is None,
    reason="needs mpiexec and mpi4py: pip install '.[mpi]' (mpi4py and MPICH from PyPI)")

LAUNCH_TIMEOUT = 60  # seconds; MPIEXEC_TIMEOUT ends the job, the subprocess timeout backs it up


def mpirun(n: int, *args: str, module: bool = True, timeout: int = LAUNCH_TIMEOUT):
    """Run ``python [-m mpi4py] ARGS`` on n processes; returns (CompletedProcess, the dicts the
    processes reported, rank by rank: see distributed_worker.report)."""
    python = [sys.executable, "-m", "mpi4py"] if module else [sys.executable]
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as results_dir:
        env = {**os.environ, "MPIEXEC_TIMEOUT": str(timeout), "PYTHONPATH": pythonpath,
               "RESULTS_DIR": results_dir,
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",  # n processes share 2 cores
               # Open MPI's mpiexec refuses to run as root without these (containers and the GPU
               # machines run as root); MPICH ignores them.
               "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
        done = subprocess.run([mpiexec_path(), "-n", str(n), *python, *args], capture_output=True,
                              text=True, env=env, timeout=timeout + 15)
        results = [json.loads(line) for path in sorted(Path(results_dir).glob("rank*.jsonl"))
                   for line in path.read_text().splitlines()]
    return done, results


def test_the_json_line_is_found_under_the_colour_resets_open_mpi_appends():
    """As the H100 image's Open MPI mpiexec ended train_distributed.py's output (the test below failed there)."""
    printed = 'epoch 1\n{"test_rmse": 54.9, "processes": 3}\n\x1b[0m\x1b[0m\n'
    assert bench_common.last_json_line(printed) == {"test_rmse": 54.9, "processes": 3}
    assert bench_common.last_json_line('\x1b[0m{"a": 1}\x1b[0m') == {"a": 1}
    with pytest.raises(json.JSONDecodeError):  # a last line that is not JSON is still an error
        bench_common.last_json_line('{"a": 1}\nTraceback: ...\n')


def reference_training(rows: int = 24) -> dict[str, np.ndarray]:
    """One process, the whole batch: nn.SyncBatchNorm is BatchNorm1d here (no init())."""
    return worker.train(worker.build_model(), [rows], 0)


@needs_mpi
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_training_on_n_processes_matches_one_process_on_the_whole_batch(size, device, tmp_path):
    done, results = mpirun(size, str(WORKER), "train", str(tmp_path))
    assert done.returncode == 0 and len(results) == size, done.stderr[-3000:]
    assert {r["device"] for r in results} == {device}
    if device == "gpu" and size > 1:  # the stand-in has no NCCL: CuPy arrays travel through the host
        assert all(r["transport"].startswith("MPI through host memory") for r in results)
    want = reference_training()
    cases = [("train-" + "-".join(map(str, rows)), want) for rows in worker.SPLITS[size]]
    # Gradients accumulated over two backward passes, with a penalty term the same everywhere.
    cases.append(("accumulate-" + "-".join(map(str, worker.SPLITS[size][-1])),
                  worker.train_accumulating(worker.build_model(), [24], 0)))
    # Process 0 alone resumed from a checkpoint: the broadcast count drives momentum=None.
    cases.append(("resumed-" + "-".join(map(str, worker.SPLITS[size][-1])),
                  worker.train(worker.resumed_model(0), [24], 0)))
    # The first step's gradients again, from an output made before a backward that failed.
    cases.append(("after-failure-" + "-".join(map(str, worker.SPLITS[size][-1])),
                  {k: v for k, v in want.items() if k.startswith("grad.")}))
    for case, want in cases:
        per_rank = [dict(np.load(tmp_path / f"{case}.rank{r}.npz")) for r in range(size)]
        assert set(per_rank[0]) == set(want)  # parameters, running statistics, first gradients
        for key, value in want.items():
            np.testing.assert_allclose(per_rank[0][key], value, rtol=0, atol=1e-12, err_msg=f"{case} {key}")
            for other in per_rank[1:]:  # bitwise the same on every process
                np.testing.assert_array_equal(other[key], per_rank[0][key], err_msg=f"{case} {key}")
    rows = worker.LARGE_MEAN_ROWS[:size]
    x = (1e4 + np.random.default_rng(7).normal(size=(sum(rows), 3))).astype(np.float32)
    check_large_mean_statistics(x, [dict(np.load(tmp_path / f"large-mean-{size}.rank{r}.npz"))
                                    for r in range(size)])


@needs_mpi
def test_errors_about_the_whole_job_are_raised_by_every_process_together():
    done, results = mpirun(3, str(WORKER), "validation")
    assert done.returncode == 0, done.stderr[-3000:]
    by_case: dict[str, list] = {}
    for r in results:
        by_case.setdefault(r["case"], []).append(r["error"])
    expected = {
        "one_row_in_total": "ValueError: sync_batch_norm: expected more than 1 value per feature",
        "one_row_per_process": None,
        "ddof_of_the_whole_batch": "ValueError: sync_batch_norm: expected ddof=6 < N",
        "transposed_weight": "process 1 has parameter 'weight' of shape (3, 2), float32 on 'cpu' "
                             "where process 0 has parameter 'weight' of shape (2, 3)",
        "other_dtype": "process 2 has parameter 'weight' of shape (2, 3), float64",
        "other_layer": "process 1 has layer '1' of type BatchNorm1d where process 0 has layer '1' "
                       "of type SyncBatchNorm",
        "no_rows_anywhere": "the model's output has 0 rows on all 3 processes",
        "frozen_on_one_process": "process 1 has parameter 'bias' of shape (3,), float32 on 'cpu', "
                                 "frozen (requires_grad=False) where process 0 has parameter 'bias'",
        "tuple_output": "TypeError: DistributedDataParallel: the model returned a tuple",
        "other_bucket_cap": "process 2 has gradient buckets of [1, 1] parameters (from bucket_cap_mb) "
                            "where process 0 has gradient buckets of [2] parameters",
    }
    assert set(by_case) == set(expected)
    for case, errors in by_case.items():
        assert len(errors) == 3 and len(set(errors)) == 1, (case, errors)  # all, identically
        if expected[case] is None:
            assert errors[0] is None, (case, errors[0])
        else:
            assert errors[0] is not None and expected[case] in errors[0], (case, errors[0])


@needs_mpi
@pytest.mark.parametrize("launch", ["python -m mpi4py", "init's exception hook"])
def test_a_process_that_raises_ends_the_whole_job_with_its_error(launch):
    done, results = mpirun(3, str(WORKER), "raise", "1", module=launch == "python -m mpi4py",
                           timeout=30)
    assert "APPLICATION TIMED OUT" not in done.stdout + done.stderr  # ended by the abort, not the clock
    assert done.returncode != 0
    assert results == []  # nobody finished training without process 1
    if launch == "python -m mpi4py":
        # mpi4py prints the traceback at exit and aborts at once; MPICH's launcher sometimes drops
        # the tail of a process's stderr when the abort kills the job (seen in 1 run of 4 here).
        assert "Traceback (most recent call last)" in done.stderr
    else:  # init's hook flushes the traceback and a last line before it aborts
        assert "RuntimeError: deliberate failure on process 1" in done.stderr


def readme_scale_out_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Scale out", 1)[1]
    # Fenced ```py, not ```python: tests/test_docs.py runs ```python blocks in this process,
    # and this one belongs under mpiexec.
    return re.search(r"```py\n(.*?)```", section, re.S).group(1)


@needs_mpi
def test_the_readme_scale_out_snippet_runs_on_two_processes(tmp_path):
    script = tmp_path / "snippet.py"
    script.write_text(readme_scale_out_snippet() + "\nimport distributed_worker\n"
                      "distributed_worker.report(dist.get_rank(), loss=loss.item(), "
                      "grad=float(abs(next(model.parameters()).grad).sum()))\n")
    done, results = mpirun(2, str(script))
    assert done.returncode == 0 and len(results) == 2, done.stderr[-3000:]
    assert results[0]["grad"] == results[1]["grad"] > 0


@needs_mpi
def test_the_distributed_example_reports_the_single_process_test_rmse():
    """Three processes, batches of 64 rows shared out as 22, 21, 21, against examples/train.py.

    Adam with the defaults: the Linear layers before batch norm have no bias, whose rounding-level
    gradients Adam would otherwise turn into steps of size lr, different for every summation order."""
    train = pytest.importorskip("train")  # examples/train.py; needs the 'examples' extra
    flags = {"epochs": 4}
    done, _ = mpirun(3, str(ROOT / "examples" / "train_distributed.py"), "--device", "cpu", "--json",
                     *[f"--{k}={v}" for k, v in flags.items()], timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    got = bench_common.last_json_line(done.stdout)
    want = train.train(train.standardised_split(*train.load_diabetes_data()), device="cpu",
                       progress=False, **flags)
    assert got["processes"] == 3 and want["processes"] == 1
    assert got["test_rmse"] == pytest.approx(want["test_rmse"], rel=1e-12)
    assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-12)
    assert got["best_epoch"] == want["best_epoch"]


@needs_mpi
def test_the_distributed_benchmark_runs_in_quick_mode_and_its_losses_agree(device):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "distributed.py"), "--quick",
                           "--json", "--device", device], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["agree"] and set(report["runs"]) == {"1", "2"}
    two = report["runs"]["2"]
    # Per step: 2 all-reduces forward and 1 backward per SyncBatchNorm (two layers), the row
    # count at the output, and one bucket of gradients.
    assert two["collectives_per_step"] == 8 and two["rows_per_process"] == [32, 32]
    assert two["transport"] == ("MPI" if device == "cpu" else two["transport"]) and two["latency_seconds"] > 0
