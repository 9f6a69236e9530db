"""Shared fixtures: every device-aware test runs on NumPy, and on CuPy when a GPU is usable.

On a machine without a GPU, run the suite a second time with the CuPy stand-in first on the
path (``PYTHONPATH=tests/standin python -m pytest -q``): then every GPU variant runs against
an array type that refuses what CuPy refuses. The stand-in is not a GPU.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from minigraph import backend

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ["cpu", "gpu"]

# Tolerances for the suite's finite-difference checks: 100 times tighter than gradcheck's defaults
# (PyTorch's, atol 1e-5 and rtol 1e-3), which let a backward 0.1% off pass. CI has no torch, so
# these checks are the only gradient checks it runs. Central differences in float64 agree with a
# right backward on these inputs to within a fifth of rtol=1e-6, atol=1e-8 (measured on NumPy and
# the stand-in), so this leaves some 50 times headroom for a GPU's summation order.
TIGHT = {"atol": 1e-7, "rtol": 1e-5}
STANDIN_HINT = "PYTHONPATH=tests/standin runs it on the CuPy stand-in"


def pytest_report_header(config: pytest.Config) -> str:
    if not backend.is_gpu_available():
        return f"GPU tests: skipped, {backend.gpu_unavailable_reason()} ({STANDIN_HINT})"
    import cupy

    if getattr(cupy, "IS_STANDIN", False):
        return f"GPU tests: on the CuPy STAND-IN ({cupy.__file__}); this is NOT a GPU"
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    return f"GPU tests: on {name.decode() if isinstance(name, bytes) else name}, CuPy {cupy.__version__}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Skips counted by reason: one line per reason instead of one per test."""
    reasons = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.write_sep("-", "skipped, by reason")
        for reason, count in reasons.most_common():
            terminalreporter.write_line(f"{count:5d}  {reason}")


def on_standin(device: str) -> bool:
    """True when ``device`` is 'gpu' served by the stand-in, whose numerics are NumPy's own."""
    if device != "gpu":
        return False
    import cupy

    return getattr(cupy, "IS_STANDIN", False)


def gpu_default_environment() -> dict[str, str]:
    """os.environ as on a GPU machine, for a child process: MINIGRAPH_DEVICE unset (auto: the GPU),
    this checkout's minigraph, and the CuPy stand-in first on the path where there is no real GPU."""
    paths = [str(ROOT)]
    if not backend.is_gpu_available() or getattr(sys.modules.get("cupy"), "IS_STANDIN", False):
        paths.insert(0, str(ROOT / "tests" / "standin"))
    env = {k: v for k, v in os.environ.items() if k != "MINIGRAPH_DEVICE"}
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


def run_python(code: str, *paths: Path, cwd: Path | None = None) -> str:
    """Run ``code`` in a fresh interpreter with ``paths`` as its PYTHONPATH; its stdout, after
    asserting that it exited 0 (stderr shown if not)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                          cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def require_gpu() -> None:
    if not backend.is_gpu_available():
        pytest.skip(f"no usable GPU: {backend.gpu_unavailable_reason()} ({STANDIN_HINT})")


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    if request.param == "gpu":
        require_gpu()
    return request.param


@pytest.fixture(autouse=True)
def default_device_of_the_test(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs with MINIGRAPH_DEVICE set to the device it is about: its ``device``
    parameter, else the CPU. Data without ``device=`` goes to the default device, so a test
    written once (``Tensor(numpy_array)``, ``nn.Linear(4, 3)``) runs on each device in turn,
    as a user's script runs unchanged on a CPU and on a GPU machine."""
    device = request.getfixturevalue("device") if "device" in request.fixturenames else "cpu"
    monkeypatch.setenv("MINIGRAPH_DEVICE", device)


@pytest.fixture
def gpu() -> str:
    """For tests that need a GPU (or the stand-in) alongside the CPU."""
    require_gpu()
    return "gpu"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def on(device: str):
    """on(array) -> the array on the test's device."""
    return lambda array: backend.to_device(np.asarray(array), device)


@pytest.fixture(params=["fused", "formula"])
def fused_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Ops with fused kernels (minigraph/kernels: batch norm and layer norm on the CPU with numba, batch
    norm on a real GPU with CUDA) on the kernels or on their formulas. Where no kernel serves (layer
    norm on a GPU, anything on the CuPy stand-in, which runs no CUDA) both run the formula."""
    if request.param == "fused" and importlib.util.find_spec("numba") is None:
        pytest.skip("numba is not installed (pip install 'minigraph[fast]'): no fused CPU path")
    monkeypatch.setenv("MINIGRAPH_FUSED", "1" if request.param == "fused" else "0")
    return request.param


@pytest.fixture
def resume_from_files(tmp_path):
    """resume(model, opt, scheduler, make_model, build_scheduler) -> (model, opt, scheduler): the
    three saved with nn.save, then a new model (other weights), a new two-group SGD (other rates
    and momentum) and a new scheduler from build_scheduler (other settings) loaded from the files,
    the optimizer after building the scheduler, as in PyTorch's recipe."""
    from minigraph import nn, optim

    def resume(model, opt, scheduler, make_model, build_scheduler):
        for name, obj in (("model", model), ("opt", opt), ("scheduler", scheduler)):
            nn.save(obj.state_dict(), tmp_path / f"{name}.npz")
        model = make_model(10)
        model.load_state_dict(nn.load(tmp_path / "model.npz"))
        params = list(model.parameters())
        opt = optim.SGD([{"params": params[:1], "lr": 1.0}, {"params": params[1:]}], lr=2.0, momentum=0.3)
        scheduler = build_scheduler(opt)
        opt.load_state_dict(nn.load(tmp_path / "opt.npz"))
        scheduler.load_state_dict(nn.load(tmp_path / "scheduler.npz"))
        return model, opt, scheduler

    return resume
