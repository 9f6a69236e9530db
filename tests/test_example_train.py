"""examples/train.py: it learns, keeps its best epoch, reports divergence, rejects bad flags, is reproducible.

The diabetes data ships with scikit-learn, an optional dependency (the 'examples' extra),
imported only when the data is loaded: tests that need it are marked and skip without it.
The generated Friedman data and the flag checks need neither scikit-learn nor a GPU.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minigraph as mg
from conftest import gpu_default_environment

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train.py"
sys.path.insert(0, str(ROOT / "examples"))
import train  # noqa: E402  (examples/train.py; examples/ is not a package)


def requires(*modules: str) -> pytest.MarkDecorator:
    """Skip unless every module of the 'examples' extra named here can be imported."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}, from the 'examples' "
                                                    f"extra: pip install '.[examples]'")


needs_diabetes = requires("sklearn", "tqdm")  # the data, and the progress bar train() builds


def run_script(*args: str) -> subprocess.CompletedProcess:
    """examples/train.py in a fresh interpreter, importing this checkout's minigraph."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": path})


@pytest.fixture(scope="module")
def diabetes() -> train.Split:
    if importlib.util.find_spec("sklearn") is None:
        pytest.skip("needs sklearn, from the 'examples' extra: pip install '.[examples]'")
    return train.standardised_split(*train.load_diabetes_data())


@pytest.fixture(scope="module")
def friedman() -> train.Split:
    return train.standardised_split(*train.make_friedman(1000))


# --- the data -------------------------------------------------------------------------------
@needs_diabetes
def test_split_is_fixed_and_standardised_with_training_statistics_only(diabetes):
    assert (len(diabetes.x_train), len(diabetes.x_val), len(diabetes.x_test)) == (283, 71, 88)
    np.testing.assert_allclose(diabetes.x_train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(diabetes.x_train.std(0), 1, atol=1e-12)
    for held_out in (diabetes.x_val, diabetes.x_test):  # not used for the statistics
        assert abs(held_out.mean()) > 1e-6
    # The rows are split by SPLIT_SEED alone: a second call gives the same arrays.
    again = train.standardised_split(*train.load_diabetes_data())
    np.testing.assert_array_equal(again.x_test, diabetes.x_test)
    np.testing.assert_array_equal(again.x_val, diabetes.x_val)


@needs_diabetes
def test_references_are_fitted_on_training_and_validation_rows(diabetes):
    from sklearn.linear_model import LinearRegression

    baseline, ols = train.reference_rmses(diabetes)
    x_fit = np.vstack([diabetes.x_train, diabetes.x_val])
    y_fit = np.vstack([diabetes.y_train, diabetes.y_val])
    rmse = lambda prediction: np.sqrt(np.mean((prediction - diabetes.y_test) ** 2)) * diabetes.y_scale
    assert baseline == pytest.approx(rmse(y_fit.mean()))
    assert ols == pytest.approx(rmse(LinearRegression().fit(x_fit, y_fit).predict(diabetes.x_test)))
    assert ols < baseline


def test_too_few_rows_are_blamed_on_the_row_count_not_the_batch_size():
    with pytest.raises(ValueError, match="3 rows split into 2 training, 0 validation and 1 test"):
        train.standardised_split(*train.make_friedman(3))


# --- training --------------------------------------------------------------------------------
@needs_diabetes
def test_a_few_epochs_end_well_below_the_predict_the_mean_baseline(tmp_path):
    plot, graph = tmp_path / "loss.png", tmp_path / "step.dot"
    run = run_script("--epochs", "6", "--json", "--plot", str(plot), "--graph", str(graph))
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert {"test_rmse", "baseline_rmse", "ols_rmse", "train_loss", "epochs", "device", "seconds",
            "best_epoch", "diverged"} <= set(result)
    assert result["epochs"] == 6 and result["device"] == "cpu" and result["diverged"] is False
    assert 1 <= result["best_epoch"] <= 6
    assert result["test_rmse"] < 0.85 * result["baseline_rmse"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dot = graph.read_text()
    assert dot.startswith("digraph") and "batch_norm" in dot and "mse_loss" in dot


@needs_diabetes
def test_the_same_seed_gives_identical_numbers_on_the_cpu(diabetes):
    runs = [train.train(diabetes, epochs=2, seed=seed, device="cpu", progress=False) for seed in (7, 7, 8)]
    assert runs[0]["history"] == runs[1]["history"]
    assert runs[0]["test_rmse"] == runs[1]["test_rmse"]
    assert runs[0]["history"] != runs[2]["history"]


@needs_diabetes
def test_sgd_also_learns_on_each_device(diabetes, device):
    result = train.train(diabetes, epochs=4, optimizer="sgd", lr=0.01, device=device, progress=False)
    assert result["device"] == device and result["test_rmse"] < result["baseline_rmse"]


@needs_diabetes
def test_the_best_epoch_by_validation_is_the_one_tested(diabetes):
    """A run whose validation loss peaked before its end is tested on that epoch's weights."""
    long = train.train(diabetes, epochs=30, device="cpu", progress=False)
    best = long["best_epoch"]
    assert best < 30  # else this run could not tell a restore from no restore
    assert best == 1 + int(np.argmin(long["history"]["val"]))
    assert long["val_rmse"] == pytest.approx(math.sqrt(min(long["history"]["val"])) * diabetes.y_scale)
    # The same seed stopped at the best epoch trains identically up to there and keeps its last weights.
    short = train.train(diabetes, epochs=best, device="cpu", progress=False)
    assert short["history"]["val"] == long["history"]["val"][:best]
    assert long["test_rmse"] == short["test_rmse"]


@requires("tqdm")
def test_the_loss_is_read_from_the_device_once_per_epoch_not_once_per_batch(friedman, monkeypatch):
    reads = []
    item = mg.Tensor.item
    monkeypatch.setattr(mg.Tensor, "item", lambda self: reads.append(1) or item(self))
    result = train.train(friedman, epochs=3, batch_size=32, device="cpu", progress=False)
    batches = math.ceil(len(friedman.x_train) / 32)
    # One validation loss per epoch and the test loss; per-batch reads would add 3 * batches.
    assert batches > 10 and len(reads) == result["epochs"] + 1 == 4


@requires("tqdm")
def test_on_friedmans_problem_the_net_clearly_beats_least_squares(friedman):
    result = train.train(friedman, **{**train.DEFAULTS["friedman"], "epochs": 20}, device="cpu",
                         progress=False)
    assert result["test_rmse"] < 0.8 * result["ols_rmse"]


# --- divergence and bad flags ----------------------------------------------------------------
@requires("tqdm")
def test_divergence_is_reported_as_such_with_a_nonzero_exit_status():
    run = run_script("--synthetic", "200", "--optimizer", "sgd", "--lr", "10", "--json")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "training diverged" in run.stderr and "--lr" in run.stderr
    assert "nan%" not in run.stdout and "Traceback" not in run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])  # strict JSON: no NaN
    assert result["diverged"] is True and result["test_rmse"] is None
    assert result["epochs"] < train.DEFAULTS["friedman"]["epochs"]  # it stopped at once


@pytest.mark.parametrize("flag, value", [
    ("--epochs", "-1"), ("--epochs", "0"), ("--epochs", "2.5"), ("--batch-size", "0"), ("--batch-size", "1"),
    ("--lr", "0"), ("--lr", "-0.1"), ("--lr", "nan"), ("--lr", "inf"), ("--weight-decay", "-1"),
    ("--optimizer", "rmsprop"), ("--hidden", "0"), ("--depth", "0"), ("--seed", "-1"), ("--synthetic", "0"),
    ("--synthetic", "1"), ("--device", "tpu"), ("--dtype", "int32"),
])
def test_bad_flags_are_usage_errors_naming_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        train.main([flag, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("usage:") and f"argument {flag}:" in err


def test_synthetic_1_gives_the_real_reason(capsys):
    with pytest.raises(SystemExit):
        train.main(["--synthetic", "1"])
    message = capsys.readouterr().err.strip().splitlines()[-1]  # the usage lines above name every flag
    assert "argument --synthetic: 1 rows split into" in message and "batch-size" not in message


@pytest.mark.parametrize("script,extra", [("train.py", ["--synthetic", "300", "--batch-size", "64"]),
                                          ("classify.py", ["--hidden", "16"])])
def test_device_cpu_trains_on_the_cpu_where_the_gpu_is_the_default(script, extra):
    """Found on the H100: every batch went to the default device (the GPU) while the model was on the
    CPU, so --device cpu failed on any GPU machine. The batches now name their device."""
    pytest.importorskip("sklearn")
    pytest.importorskip("tqdm")
    run = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--device", "cpu", "--epochs", "2",
                          "--json", *extra], capture_output=True, text=True, timeout=120,
                         env=gpu_default_environment())
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1])["device"] == "cpu"
