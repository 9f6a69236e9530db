"""scripts/gpu_check.sh: what its summary reports when steps fail, hang or cannot start.

The GPU machine's time is short, so the script must call the interpreter the image has
(`python3`), stop after a failed preflight, and write its summary within its budget even when
a step hangs. Each test puts a fake `python3` first on PATH, so no step does real work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import gpu_default_environment

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def run_check(tmp_path: Path, fake_python: str, **env: str) -> tuple[subprocess.CompletedProcess, str]:
    """gpu_check.sh with PYTHON unset and `python3` a shell script; returns the run and summary.txt."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python3 = bin_dir / "python3"
    python3.write_text("#!/bin/sh\n" + fake_python + "\n")
    python3.chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    environ.update(PATH=f"{bin_dir}{os.pathsep}{environ['PATH']}", **env)
    logdir = tmp_path / "logs"
    run = subprocess.run(["bash", str(SCRIPT), str(logdir)], capture_output=True, text=True,
                         env=environ, timeout=120)
    return run, (logdir / "summary.txt").read_text()


def verdicts(summary: str) -> dict[str, str]:
    """{step: verdict} from the summary's '  name  exit STATUS  VERDICT' lines."""
    rows = [line.split(None, 3) for line in summary.splitlines() if " exit " in line]
    return {row[0]: row[3] for row in rows if len(row) == 4}


def test_it_runs_python3_and_a_failed_preflight_stops_the_run_and_fails_it(tmp_path):
    calls = tmp_path / "calls"
    run, summary = run_check(tmp_path, f'echo "$@" >>{calls}; exit 3')
    assert calls.exists(), "the script never ran `python3`"
    assert run.returncode == 1, run.stdout + run.stderr
    steps = verdicts(summary)
    assert steps["preflight"] == "FAILED"
    assert steps["tests"] == "NOT RUN" and steps["example_seed_question"] == "NOT RUN"
    assert "-m pytest" not in calls.read_text()  # nothing after the preflight ran


def test_a_hanging_step_cannot_keep_the_summary_past_the_budget(tmp_path):
    started = time.monotonic()
    run, summary = run_check(tmp_path, "exec sleep 60", GPU_CHECK_BUDGET="15")
    assert time.monotonic() - started < 15
    assert run.returncode == 1, run.stdout + run.stderr
    steps = verdicts(summary)
    assert steps["environment"] == "TIMED OUT"
    assert steps["preflight"] == "NOT RUN" and steps["tests"] == "NOT RUN"


def test_the_figures_script_runs_every_step_in_quick_mode(tmp_path):
    """scripts/gpu_figures.sh --quick on the GPU this test run has, else on the CuPy stand-in. Its CPU
    training step runs where the GPU is the default device (which found examples/train.py's bug)."""
    pytest.importorskip("sklearn")
    pytest.importorskip("tqdm")
    env = {**gpu_default_environment(), "PYTHON": sys.executable}
    logdir = tmp_path / "figures"
    run = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_figures.sh"), str(logdir), "--quick"],
                         capture_output=True, text=True, env=env, timeout=300)
    summary = (logdir / "summary.txt").read_text()
    assert run.returncode == 0, summary + run.stderr
    steps = {row.split()[0]: row.split()[3] for row in summary.splitlines() if " exit " in row}
    assert steps == {"bn_gpu": "ok", "train_step": "ok", "train_gpu": "ok", "train_cpu": "ok"}, summary
