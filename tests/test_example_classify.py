"""examples/classify.py: the split, learning on each device, reproducibility, the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import gpu_default_environment

pytest.importorskip("sklearn")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
classify = pytest.importorskip("classify")  # examples/classify.py; needs the 'examples' extra


@pytest.fixture(scope="module")
def digits():
    return classify.load_split()


def test_the_split_is_fixed_stratified_and_standardised_with_training_statistics(digits):
    again = classify.load_split()
    np.testing.assert_array_equal(digits.x_test, again.x_test)
    assert len(digits.y_train) + len(digits.y_test) == 1797
    train_share = np.bincount(digits.y_train) / len(digits.y_train)
    test_share = np.bincount(digits.y_test) / len(digits.y_test)
    assert np.abs(train_share - test_share).max() < 0.01  # every class in the same proportion
    np.testing.assert_allclose(digits.x_train.mean(axis=0), 0, atol=1e-12)
    spread = digits.x_train.std(axis=0)
    assert np.all(np.isclose(spread, 1) | np.isclose(spread, 0))  # constant corner pixels stay 0
    assert np.abs(digits.x_test.mean(axis=0)).max() > 1e-3  # test rows did not set the statistics


def test_a_few_epochs_learn_far_above_chance_on_each_device(digits, device):
    result = classify.train(digits, epochs=3, hidden=32, seed=0, device=device, progress=False)
    assert result["device"] == device
    assert result["test_accuracy"] > 0.6  # chance is 0.1; a narrow net after 3 epochs is near 0.75
    assert result["history"]["train_loss"][-1] < result["history"]["train_loss"][0]


def test_the_same_seed_gives_identical_numbers_and_another_seed_does_not(digits):
    runs = [classify.train(digits, epochs=2, hidden=32, seed=seed, device="cpu",
                           progress=False)["history"]
            for seed in (5, 5, 6)]
    assert runs[0] == runs[1]
    assert runs[0]["train_loss"] != runs[2]["train_loss"]


def test_the_command_line_runs_on_the_gpu_path_and_writes_json_and_a_plot(tmp_path):
    """On a machine without a GPU, the GPU path runs against the CuPy stand-in."""
    env = gpu_default_environment()  # this checkout's minigraph, whichever one the environment installed
    plot = tmp_path / "curves.png"
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "classify.py"), "--epochs", "2", "--hidden", "32", "--device", "gpu",
         "--json", "--plot", str(plot)],
        capture_output=True, text=True, timeout=120, env=env, check=True,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["device"] == "gpu" and result["epochs"] == 2
    assert 0.5 < result["test_accuracy"] <= 1 and 0.9 < result["baseline_accuracy"] <= 1
    assert "logistic regression" in run.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,message", [
    (["--epochs", "0"], "--epochs must be at least 1; got 0"),
    (["--batch-size", "1"], "--batch-size must be at least 2"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--dropout", "1"], r"--dropout must be in \[0, 1\); got 1.0"),
    (["--hidden", "0"], "--hidden must be at least 1"),
    (["--seed", "-3"], "--seed must be a non-negative integer"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
])
def test_bad_arguments_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        classify.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:")
    assert re.search(message, err)
