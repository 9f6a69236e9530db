"""examples/train.py: it trains, beats the baseline, is reproducible, and writes its artefacts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
train = pytest.importorskip("train")  # examples/train.py; needs the 'examples' extra


@pytest.fixture(scope="module")
def diabetes():
    return train.standardised_split(*train.load_diabetes_data())


def test_split_is_standardised_with_training_statistics_only(diabetes):
    np.testing.assert_allclose(diabetes.x_train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(diabetes.x_train.std(0), 1, atol=1e-12)
    assert abs(diabetes.x_test.mean()) > 1e-6  # test rows were not used for the statistics
    assert len(diabetes.x_train) + len(diabetes.x_test) == 442


def test_a_few_epochs_end_well_below_the_predict_the_mean_baseline(tmp_path):
    plot, graph = tmp_path / "loss.png", tmp_path / "step.dot"
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train.py"), "--epochs", "6", "--lr", "0.01", "--device", "cpu",
         "--json", "--plot", str(plot), "--graph", str(graph)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert {"test_rmse", "baseline_rmse", "ols_rmse", "train_loss", "epochs", "device", "seconds"} <= set(result)
    assert result["epochs"] == 6 and result["device"] == "cpu"
    assert result["test_rmse"] < 0.85 * result["baseline_rmse"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dot = graph.read_text()
    assert dot.startswith("digraph") and "batch_norm" in dot and "mse_loss" in dot


def test_the_same_seed_gives_identical_numbers_on_the_cpu(diabetes):
    runs = [train.train(diabetes, epochs=2, seed=seed, device="cpu", progress=False) for seed in (7, 7, 8)]
    assert runs[0]["history"] == runs[1]["history"]
    assert runs[0]["history"] != runs[2]["history"]


def test_sgd_also_learns(diabetes):
    result = train.train(diabetes, epochs=4, optimizer="sgd", lr=0.01, device="cpu", progress=False)
    assert result["test_rmse"] < result["baseline_rmse"]


def test_references_are_what_they_claim(diabetes):
    baseline, ols = train.reference_rmses(diabetes)
    mean_prediction = np.sqrt(np.mean((diabetes.y_test - diabetes.y_train.mean()) ** 2)) * diabetes.y_scale
    assert baseline == pytest.approx(mean_prediction)
    assert ols < baseline
