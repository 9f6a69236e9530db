"""examples/seed_question.py: its data is the question's, its gradients are right, its report runs.

The reference computations here are plain NumPy written for this file (a forward pass of
the question's net, central differences, the question's R formulas); they share nothing with
minigraph or with the script's own translations except the question's quoted printout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "seed_question.py"
sys.path.insert(0, str(ROOT / "examples"))
import seed_question as sq  # noqa: E402  (examples/ is not a package)


@pytest.fixture(scope="module")
def data() -> sq.QuestionData:
    return sq.load_question_data()


def scale(z: np.ndarray) -> np.ndarray:
    """R's scale(): (N, p) -> (N, p), column sd with N − 1."""
    return (z - z.mean(axis=0)) / z.std(axis=0, ddof=1)


def net(X: np.ndarray, G1: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
        G2: np.ndarray) -> np.ndarray:
    """ŷ = ReLU(γ ⊙ scale(XΓ₁) + β) Γ₂ in NumPy. X: (N, p1), G1: (p1, p2), the rest (p2,) -> (N,)."""
    return np.maximum(gamma * scale(X @ G1) + beta, 0.0) @ G2


def numeric_gradients(d: sq.QuestionData, h: float = 1e-6) -> dict[str, np.ndarray]:
    """Central differences of R = mean((y − ŷ)²) in every parameter, float64."""
    params = {"dG1": d.G1.copy(), "dgamma": d.gamma.copy(), "dbeta": d.beta.copy(), "dG2": d.G2.copy()}
    loss = lambda: float(np.mean((d.y - net(d.X, params["dG1"], params["dgamma"], params["dbeta"],
                                             params["dG2"])) ** 2))
    grads = {}
    for name, array in params.items():
        flat, grad = array.reshape(-1), np.empty(array.size)  # flat is a view into array
        for k in range(flat.size):
            original = flat[k]
            flat[k] = original + h
            plus = loss()
            flat[k] = original - h
            minus = loss()
            flat[k] = original
            grad[k] = (plus - minus) / (2 * h)
        grads[name] = grad.reshape(array.shape)
    return grads


# --- the data ----------------------------------------------------------------------------
def test_data_file_loads_with_the_questions_shapes_and_says_how_it_was_made(data):
    assert data.X.shape == (10, 7) and data.G1.shape == (7, 4)
    assert data.G2.shape == data.gamma.shape == data.beta.shape == (4,)
    assert data.u.shape == data.y.shape == (10,)
    assert all(a.dtype == np.float64 for a in (data.X, data.G1, data.G2, data.u, data.y))
    np.testing.assert_array_equal(data.X, np.round(data.X))  # round(runif(...)) gave integers
    assert np.all(np.abs(data.X) <= 5)
    np.testing.assert_array_equal(data.gamma, np.arange(1, 5) + 1)   # gamma <- 1:p2+1
    np.testing.assert_array_equal(data.beta, -(np.arange(1, 5) + 1))  # beta <- (1:p2+1)*-1
    assert "set.seed(1)" in data.source and "R version" in data.source


def test_y_is_the_questions_net_plus_noise_recomputed_in_numpy(data):
    np.testing.assert_allclose(data.y, net(data.X, data.G1, data.gamma, data.beta, data.G2) + data.u,
                               rtol=0, atol=1e-14)


# --- the question's printout, reproduced from the data ------------------------------------
def question_formulas(d: sq.QuestionData) -> dict[str, np.ndarray]:
    """The question's R, rewritten here independently of the script: its ap() assigns in sequence."""
    z = d.X @ d.G1
    pre = d.gamma * scale(z) + d.beta
    ap = pre.copy()
    ap[ap < 0] = 0
    ap[ap >= 0] = 1
    stub = -2 * np.outer(d.u, d.G2) * ap
    w = d.gamma * z.std(axis=0, ddof=1)
    loop_b = []
    for i in range(4):
        x = np.outer(d.X[:, i], d.G1[i, :])  # X[,i, drop=FALSE] %*% G1[i,]
        bi = d.gamma[i] * scale(x)[:, i] + d.beta[i]
        a = bi.copy()
        a[a < 0] = 0
        a[a >= 0] = 1
        loop_b.append(np.sum(-2 * d.u * a * d.G2[i]))
    drdG1 = d.X.T @ (stub * w)
    loop_G1 = np.array([[d.X[:, i] @ (w[j] * stub[:, j]) for j in range(4)] for i in range(7)])
    drdg = scale(z).T @ (stub * d.gamma)
    return {"drdb": stub.sum(axis=0), "loop_drdb": np.array(loop_b), "drdG1": drdG1,
            "loop_drdG1": loop_G1, "drdg": drdg,
            "loop_drdg": np.array([scale(z)[:, i] @ (stub[:, i] * d.gamma[i]) for i in range(4)])}


@pytest.mark.parametrize("name", ["drdb", "loop_drdb", "drdG1", "loop_drdG1", "drdg", "loop_drdg"])
def test_the_questions_formulas_on_this_data_print_what_the_question_printed(data, name):
    printed, half_unit = sq.parse_r_print(sq.QUESTION_PRINTED[name])
    mine = question_formulas(data)[name].reshape(printed.shape)
    assert np.all(np.abs(mine - printed) <= half_unit * (1 + 1e-9)), name
    # ...and the script's own translation of the R code agrees with this one.
    script = {**sq.question_matrix_way(data), **sq.question_loops(data)}[name]
    np.testing.assert_allclose(script.reshape(printed.shape), mine, rtol=1e-12, atol=1e-12)


def test_print_comparison_is_sharp_to_the_last_printed_digit(data):
    computed = question_formulas(data)["drdg"]
    assert sq.matches_print("drdg", computed)
    nudged = computed.copy()
    nudged[3, 2] += 1.1e-6  # 48.670853 is printed to 6 decimals
    assert not sq.matches_print("drdg", nudged)
    values, tolerances = sq.parse_r_print(sq.QUESTION_PRINTED["drdb"])
    # printed as -0.4460901 0.3899186 1.26758 -0.09589582
    np.testing.assert_allclose(tolerances[0], [0.5e-7, 0.5e-7, 0.5e-5, 0.5e-8])


# --- the true gradients ----------------------------------------------------------------
def test_seed_gradients_pass_gradcheck(data):
    assert sq.gradcheck_question_net(data)


def test_seed_gradients_match_independent_central_differences(data, device):
    """On each device: the script computes with minigraph on the default device."""
    pre = data.gamma * scale(data.X @ data.G1) + data.beta
    assert np.abs(pre).min() > 1e-3  # no ReLU input near its kink, so differences are smooth
    numeric, analytic = numeric_gradients(data), sq.true_gradients(data)
    for name in ("dbeta", "dgamma", "dG1", "dG2"):
        assert analytic[name].shape == numeric[name].shape, name
        np.testing.assert_allclose(analytic[name], numeric[name], rtol=1e-6, atol=1e-8, err_msg=name)


def test_the_questions_printed_gradients_are_not_the_gradients(data):
    """The verdict: no printed result, even rescaled by N (sum loss), is the true gradient."""
    numeric, n = numeric_gradients(data), len(data.X)
    for claim, truth in [(sq.question_claim("drdb"), numeric["dbeta"]),
                         (sq.question_claim("loop_drdg"), numeric["dgamma"]),
                         (sq.question_claim("drdG1"), numeric["dG1"])]:
        assert np.max(np.abs(claim / n - truth)) > 0.05 * np.max(np.abs(truth))


def test_with_relu_mask_and_mean_loss_the_beta_formula_is_right_and_gamma_has_an_extra_gamma(data):
    """The question's formulas with a working a'(·): β is N × truth; diag for γ is N γ ⊙ truth."""
    numeric, n = numeric_gradients(data), len(data.X)
    pre = data.gamma * scale(data.X @ data.G1) + data.beta
    stub = -2 * np.outer(data.u, data.G2) * (pre > 0)
    np.testing.assert_allclose(stub.sum(axis=0), n * numeric["dbeta"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.diag(scale(data.X @ data.G1).T @ (stub * data.gamma)),
                               n * data.gamma * numeric["dgamma"], rtol=1e-6, atol=1e-8)


# --- the script ---------------------------------------------------------------------------
def test_script_json_prints_the_gradients_alone(data):
    # The checkout's minigraph, whether or not the package is installed.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    run = subprocess.run([sys.executable, str(SCRIPT), "--json"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stderr == ""  # no failed check to list
    assert len(run.stdout.splitlines()) == 1  # the README: "--json for the gradients alone"
    result = json.loads(run.stdout)
    assert set(result) == {"dbeta", "dgamma", "dG1", "dG2"}
    shapes = {key: np.asarray(value).shape for key, value in result.items()}
    assert shapes == {"dbeta": (4,), "dgamma": (4,), "dG1": (7, 4), "dG2": (4,)}
    numeric = numeric_gradients(data)
    for key, value in result.items():
        np.testing.assert_allclose(value, numeric[key], rtol=1e-6, atol=1e-8, err_msg=key)


def test_script_without_json_prints_the_report_and_its_tally(capsys):
    assert sq.main([]) == 0
    out = capsys.readouterr().out
    lines, checks, _ = sq.build_report(sq.load_question_data())
    assert out.startswith(lines[0]) and f"{len(checks)} of {len(checks)} checks hold." in out
    assert "{" not in out.splitlines()[-1]  # no JSON line without --json


def test_every_check_of_the_report_holds(data, device):
    lines, checks, _ = sq.build_report(data)
    assert len(checks) > 20
    assert [c.claim for c in checks if not c.holds] == []
