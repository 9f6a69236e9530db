"""The seed question, checked: batch norm's gradients for ŷ = ReLU(BN(XΓ₁))Γ₂, loss R = N⁻¹Σ(y − ŷ)².

A Cross Validated post (Feb 2018) derived ∂R/∂β, ∂R/∂γ and ∂R/∂Γ₁ in matrix form, wrote R
code for them and printed results. This script loads the post's data (regenerated in R with
its own seed and steps, examples/data/question_data.json), computes the true gradients with
minigraph (checked by ``mg.gradcheck``), recomputes each of the post's formulas in NumPy
(line-by-line translations of its R code, which reproduce its printed numbers), and shows,
one identity at a time, how each printed result relates to the truth.

    python examples/seed_question.py          # the report
    python examples/seed_question.py --json   # the true gradients alone, as one JSON line

Exit status 0 when every identity the report states holds numerically, 1 otherwise (with
--json, the identities that fail are listed on stderr).
docs/batchnorm.md derives the formulas.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

try:
    import minigraph as mg
except ModuleNotFoundError as error:  # run from a checkout without `pip install .`
    if error.name != "minigraph":
        raise
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import minigraph as mg

DATA = Path(__file__).resolve().parent / "data" / "question_data.json"

# ---------------------------------------------------------------------------------------
# The question's printed output, quoted verbatim from the post. These are its *claims*:
# the script recomputes each from the data and tests it; nothing below is an expected
# value of this script's own computations.
# ---------------------------------------------------------------------------------------
QUESTION_PRINTED: dict[str, str] = {
    "drdb": """
           [,1]      [,2]    [,3]        [,4]
[1,] -0.4460901 0.3899186 1.26758 -0.09589582
""",
    "loop_drdb": """
[1] -0.44609015  0.38991862  1.26758024 -0.09589582
""",
    "drdG1": """
           [,1]       [,2]       [,3]       [,4]
[1,] -61.531877  122.66157  360.08132 -51.666215
[2,]   7.047767  -14.04947  -41.24316   5.917769
[3,] 124.157678 -247.50384 -726.56422 104.250961
[4,]  44.151682  -88.01478 -258.37333  37.072659
[5,]  22.478082  -44.80924 -131.54056  18.874078
[6,]  22.098857  -44.05327 -129.32135  18.555655
[7,]  79.617345 -158.71430 -465.91653  66.851965
""",
    "drdg": """
           [,1]      [,2]       [,3]       [,4]
[1,]  0.8580574 -1.125017  -4.876398  0.4611406
[2,] -4.5463304  5.960787  25.837103 -2.4433071
[3,]  2.0706860 -2.714919 -11.767849  1.1128364
[4,] -8.5641868 11.228681  48.670853 -4.6025996
""",
    "loop_drdg": """
[1]   0.8580574   5.9607870 -11.7678486  -4.6025996
""",
}
# The post prints loop_drdG1 too; its block is character-for-character the drdG1 block.
QUESTION_PRINTED["loop_drdG1"] = QUESTION_PRINTED["drdG1"]


def parse_r_print(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Numbers of an R console print and half a unit in each one's last printed digit.

    Row/column labels such as ``[,1]`` and ``[3,]`` are dropped. Returns (values,
    tolerances), both (rows, cols); an R vector prints as one row.
    """
    values, tolerances = [], []
    for line in text.strip().splitlines():
        tokens = [t for t in line.split() if not t.startswith("[")]
        if not tokens:
            continue
        values.append([float(t) for t in tokens])
        # R rounded the true value to the printed digits, so it lies within half a unit of them.
        tolerances.append([0.5 * 10.0 ** -len(t.partition(".")[2]) for t in tokens])
    return np.array(values), np.array(tolerances)


def question_claim(name: str) -> np.ndarray:
    """A printed result as an array: (p2,) for the R vectors and 1-row matrices, else 2-D."""
    values, _ = parse_r_print(QUESTION_PRINTED[name])
    return values[0] if len(values) == 1 else values


def matches_print(name: str, computed: np.ndarray) -> bool:
    """True if ``computed`` rounds to what the question printed under ``name``."""
    values, tolerances = parse_r_print(QUESTION_PRINTED[name])
    computed = np.asarray(computed, dtype=float).reshape(values.shape)
    return bool(np.all(np.abs(computed - values) <= tolerances * (1 + 1e-9)))


# ---------------------------------------------------------------------------------------
# The data
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuestionData:
    """The question's arrays. N = 10 rows, p1 = 7 inputs, p2 = 4 hidden units."""

    X: np.ndarray      # (N, p1) integer-valued inputs
    G1: np.ndarray     # (p1, p2) Γ₁
    G2: np.ndarray     # (p2,) Γ₂ (an R vector; a (p2, 1) column in the net)
    gamma: np.ndarray  # (p2,) γ
    beta: np.ndarray   # (p2,) β
    u: np.ndarray      # (N,) the noise added to y
    y: np.ndarray      # (N,) the target
    source: str = field(repr=False)


def load_question_data(path: Path = DATA) -> QuestionData:
    """Read the JSON written by R (matrices as lists of rows) into float64 arrays."""
    raw = json.loads(Path(path).read_text())
    arr = lambda key: np.array(raw[key], dtype=np.float64)
    return QuestionData(arr("X"), arr("G1"), arr("G2"), arr("gamma"), arr("beta"), arr("u"),
                        arr("y"), raw["source"])


# ---------------------------------------------------------------------------------------
# The truth: minigraph
# ---------------------------------------------------------------------------------------
def question_loss(X: mg.Tensor, G1: mg.Tensor, gamma: mg.Tensor, beta: mg.Tensor,
                  G2: mg.Tensor, y: mg.Tensor) -> mg.Tensor:
    """R = N⁻¹ Σ (y − ReLU(BN(XΓ₁))Γ₂)², with R's scale() (ddof=1, eps=0) as the BN.

    X: (N, p1), G1: (p1, p2), gamma, beta: (p2,), G2: (p2, 1), y: (N, 1) -> scalar.
    """
    hidden = mg.relu(mg.batch_norm(X @ G1, gamma, beta, ddof=1, eps=0.0))
    return mg.mse_loss(hidden @ G2, y, reduction="mean")


def _leaves(data: QuestionData) -> tuple[mg.Tensor, ...]:
    """(X, G1, gamma, beta, G2, y) as fresh float64 tensors; the four parameters want grad."""
    param = lambda a: mg.Tensor(a.copy(), requires_grad=True)  # copies: gradcheck perturbs in place
    return (mg.Tensor(data.X), param(data.G1), param(data.gamma), param(data.beta),
            param(data.G2[:, None]), mg.Tensor(data.y[:, None]))


def true_gradients(data: QuestionData) -> dict[str, np.ndarray]:
    """∂R/∂β (p2,), ∂R/∂γ (p2,), ∂R/∂Γ₁ (p1, p2), ∂R/∂Γ₂ (p2,) by minigraph's backward."""
    X, G1, gamma, beta, G2, y = _leaves(data)
    question_loss(X, G1, gamma, beta, G2, y).backward()
    host = lambda grad: mg.backend.to_device(grad, "cpu")  # minigraph ran on the default device
    return {"dbeta": host(beta.grad), "dgamma": host(gamma.grad), "dG1": host(G1.grad),
            "dG2": host(G2.grad[:, 0])}


def gradcheck_question_net(data: QuestionData) -> bool:
    """mg.gradcheck of R with respect to Γ₁, γ, β and Γ₂ together (raises on a mismatch)."""
    X, G1, gamma, beta, G2, y = _leaves(data)
    return mg.gradcheck(lambda g1, g, b, g2: question_loss(X, g1, g, b, g2, y), [G1, gamma, beta, G2])


def frozen_statistics_dG1(data: QuestionData) -> np.ndarray:
    """∂R/∂Γ₁, (p1, p2), when batch norm divides by constants equal to this batch's μ and σ².

    That is eval mode (``training=False``) with running statistics set to the batch's own:
    the forward value is unchanged, but μ and σ no longer depend on Γ₁.
    """
    X, G1, gamma, beta, G2, y = _leaves(data)
    z = data.X @ data.G1
    on_device = lambda a: mg.backend.to_device(a, X.device)  # running statistics live beside x
    normalised = mg.batch_norm(X @ G1, gamma, beta, running_mean=on_device(z.mean(axis=0)),
                               running_var=on_device(z.var(axis=0, ddof=1)), training=False, eps=0.0)
    mg.mse_loss(mg.relu(normalised) @ G2, y, reduction="mean").backward()
    return mg.backend.to_device(G1.grad, "cpu")


# ---------------------------------------------------------------------------------------
# The question's R code, translated line by line
# ---------------------------------------------------------------------------------------
def r_scale(z: np.ndarray) -> np.ndarray:
    """R's scale(): centre each column, divide by its sd with N − 1. (N, p) -> (N, p)."""
    return (z - z.mean(axis=0)) / z.std(axis=0, ddof=1)


def question_ap(v: np.ndarray) -> np.ndarray:
    """The question's ``ap`` exactly: ``v[v < 0] <- 0; v[v >= 0] <- 1; v``.

    The second assignment runs after the first has turned every negative into 0, so it
    sets *every* element to 1: the function is constant.
    """
    v = v.copy()
    v[v < 0] = 0
    v[v >= 0] = 1
    return v


def relu_derivative(v: np.ndarray) -> np.ndarray:
    """What ``ap`` was meant to be: 1 where v > 0, else 0 (minigraph's relu uses the same)."""
    return (v > 0).astype(v.dtype)


def question_b(data: QuestionData, z: np.ndarray) -> np.ndarray:
    """``b(x)``: γ ⊙ scale(x) + β, γ and β broadcast over rows (the post's γ ⊗ 1_N). (N, p2)."""
    return data.gamma * r_scale(z) + data.beta


def question_stub(data: QuestionData, ap: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``stub <- -2*u %*% t(G2) * ap(b(X%*%G1))``: (N, p2). u stands for ε̂ = y − ŷ."""
    return -2.0 * np.outer(data.u, data.G2) * ap(question_b(data, data.X @ data.G1))


def question_matrix_way(data: QuestionData, ap: Callable[[np.ndarray], np.ndarray] = question_ap,
                        sd_power: float = 1.0) -> dict[str, np.ndarray]:
    """The post's closed forms: drdb (p2,), drdG1 (p1, p2), drdg (p2, p2).

    ``sd_power=1`` is its code, ``w <- γ⊗1 * (apply(X%*%G1, 2, sd) ⊗ 1)``, which multiplies by
    σ; ``sd_power=-1`` is what its text defines, w = (γ ⊗ 1) ⊙ σ⁻¹.
    """
    z = data.X @ data.G1
    stub = question_stub(data, ap)
    w = data.gamma * z.std(axis=0, ddof=1) ** sd_power  # one row, broadcast over the N rows
    return {
        "drdb": np.ones(len(z)) @ stub,
        "drdG1": data.X.T @ (stub * w),
        "drdg": r_scale(z).T @ (stub * data.gamma),
    }


def question_bi(data: QuestionData, x: np.ndarray, i: int) -> np.ndarray:
    """``bi(x, i)``: γ_i · scale(x)[, i] + β_i, an (N,) vector."""
    return data.gamma[i] * r_scale(x)[:, i] + data.beta[i]


def question_loops(data: QuestionData, ap: Callable[[np.ndarray], np.ndarray] = question_ap
                   ) -> dict[str, np.ndarray]:
    """The post's element-by-element "checks": loop_drdb (p2,), loop_drdG1 (p1, p2), loop_drdg (p2,)."""
    z = data.X @ data.G1
    p1, p2 = data.G1.shape
    stub = question_stub(data, ap)
    w = data.gamma * z.std(axis=0, ddof=1)
    # Update 1: bi(X[,i, drop=FALSE] %*% G1[i,], i) -- column i of X times row i of Γ₁.
    loop_drdb = np.array([
        np.sum(-2.0 * data.u * ap(question_bi(data, np.outer(data.X[:, i], data.G1[i, :]), i))
               * data.G2[i])
        for i in range(p2)
    ])
    # Update 3: t(X[,i]) %*% diag(w[,j]) %*% stub[,j]
    loop_drdG1 = np.array([[data.X[:, i] @ np.diag(np.full(len(z), w[j])) @ stub[:, j]
                            for j in range(p2)] for i in range(p1)])
    # Update 4: t(scale(X %*% G1)[,i]) %*% (stub[,i] * gamma[i])
    loop_drdg = np.array([r_scale(z)[:, i] @ (stub[:, i] * data.gamma[i]) for i in range(p2)])
    return {"loop_drdb": loop_drdb, "loop_drdG1": loop_drdG1, "loop_drdg": loop_drdg}


# ---------------------------------------------------------------------------------------
# The closed-form answer in NumPy (docs/batchnorm.md), split into its paths
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pieces:
    """Forward quantities and the backward's parts for the question's net. Z = XΓ₁."""

    Zc: np.ndarray         # (N, p2) centred Z
    s: np.ndarray          # (p2,) 1/σ, σ the sd with N − 1
    Zhat: np.ndarray       # (N, p2) scale(Z)
    pre: np.ndarray        # (N, p2) b(Z), the ReLU's input
    residual: np.ndarray   # (N,) ε̂ = y − ŷ
    dY: np.ndarray         # (N, p2) ∂R/∂b(Z) = (−2/N) ε̂ Γ₂ᵀ ⊙ 1[b(Z) > 0]
    dbeta: np.ndarray      # (p2,) 1ᵀdY
    dgamma: np.ndarray     # (p2,) 1ᵀ(dY ⊙ Ẑ)
    dZ: np.ndarray         # (N, p2) ∂R/∂Z, all three paths
    fixed_w: np.ndarray    # (p1, p2) Xᵀ(dY ⊙ γs): Γ₁'s gradient with μ and σ held fixed
    mean_path: np.ndarray  # (p1, p2) Xᵀ(1 (γ s dβ) / N), the part through μ
    var_path: np.ndarray   # (p1, p2) Xᵀ(Zc ⊙ γ s² dγ / (N − 1)), the part through σ
    dG1: np.ndarray        # (p1, p2) fixed_w − mean_path − var_path
    dG2: np.ndarray        # (p2,) Vᵀ(−2ε̂/N), V = ReLU(b(Z))


def closed_form(data: QuestionData) -> Pieces:
    """The derivation's formulas in plain NumPy, no minigraph: an independent route to the truth."""
    n = len(data.X)
    z = data.X @ data.G1
    zc = z - z.mean(axis=0)
    s = 1.0 / np.sqrt((zc * zc).sum(axis=0) / (n - 1))
    zhat = zc * s
    pre = data.gamma * zhat + data.beta
    hidden = np.maximum(pre, 0.0)
    residual = data.y - hidden @ data.G2
    d_yhat = -2.0 * residual / n
    dY = np.outer(d_yhat, data.G2) * relu_derivative(pre)
    dbeta, dgamma = dY.sum(axis=0), (dY * zhat).sum(axis=0)
    dZ = data.gamma * s * (dY - dbeta / n - zc * (s * dgamma) / (n - 1))
    fixed_w = data.X.T @ (dY * data.gamma * s)
    mean_path = data.X.T @ np.outer(np.ones(n), data.gamma * s * dbeta / n)
    var_path = data.X.T @ (zc * data.gamma * s ** 2 * dgamma / (n - 1))
    return Pieces(zc, s, zhat, pre, residual, dY, dbeta, dgamma, dZ, fixed_w, mean_path, var_path,
                  fixed_w - mean_path - var_path, hidden.T @ d_yhat)


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------
@dataclass
class Check:
    """One numerical statement of the report and whether it holds."""

    claim: str
    holds: bool
    detail: str = ""


def same(a: np.ndarray, b: np.ndarray, rtol: float = 1e-10) -> tuple[bool, str]:
    """Equal up to rounding, relative to the larger array's scale; and the max |a − b|."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    gap = float(np.max(np.abs(a - b)))
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), 1e-300)
    return gap <= rtol * scale, f"max |diff| = {gap:.2e}"


def different(a: np.ndarray, b: np.ndarray, min_rel: float = 1e-3) -> tuple[bool, str]:
    """Clearly unequal: max |a − b| above min_rel of the larger array's scale."""
    ok, detail = same(a, b, rtol=min_rel)
    return not ok, detail


def negligible(a: np.ndarray, scale: float, rtol: float = 1e-12) -> tuple[bool, str]:
    """max |a| is rounding noise next to ``scale``, the size of the terms that produced it."""
    gap = float(np.max(np.abs(a)))
    return gap <= rtol * scale, f"max |entry| = {gap:.2e}, term scale {scale:.2e}"


def fmt(a: np.ndarray) -> str:
    """An array on as few lines as it takes, 7 significant digits like R."""
    return np.array2string(np.asarray(a), precision=7, suppress_small=True, max_line_width=100,
                           floatmode="maxprec", separator=" ").replace("\n", "\n" + " " * 6)


def build_report(data: QuestionData) -> tuple[list[str], list[Check], dict[str, np.ndarray]]:
    """Every section's text, the checks it rests on, and the true gradients."""
    lines: list[str] = []
    checks: list[Check] = []
    n = len(data.X)

    def say(text: str = "") -> None:
        lines.append(text)

    def check(claim: str, result: tuple[bool, str] | bool) -> None:
        holds, detail = result if isinstance(result, tuple) else (result, "")
        checks.append(Check(claim, bool(holds), detail))
        say(f"  [{'ok' if holds else 'FAILS'}] {claim}" + (f"  ({detail})" if detail else ""))

    truth = true_gradients(data)
    grad_ok = gradcheck_question_net(data)  # raises GradcheckError if the backward is wrong
    pieces = closed_form(data)
    asked = question_matrix_way(data)                         # the post's code as written
    loops = question_loops(data)
    fixed_ap = question_matrix_way(data, ap=relu_derivative)  # same, with a working a'(·)
    fixed_loops = question_loops(data, ap=relu_derivative)
    text_w = question_matrix_way(data, ap=relu_derivative, sd_power=-1.0)  # w with σ⁻¹, as its text says
    sd = 1.0 / pieces.s

    say("The question's net: ŷ = ReLU(γ ⊙ scale(XΓ₁) + β) Γ₂,  R = N⁻¹ Σ (y − ŷ)²,  "
        f"N = {n}, p1 = {data.X.shape[1]}, p2 = {data.G1.shape[1]}")
    say(f"Data: {DATA.name} ({data.source.split(' by ')[0]})")
    say()
    say("== Ground truth ==")
    check("mg.gradcheck passes for Γ₁, γ, β, Γ₂ (central differences, float64)", grad_ok)
    for key in truth:
        check(f"the closed form of docs/batchnorm.md (plain NumPy) gives minigraph's {key}",
              same(getattr(pieces, key), truth[key]))
    check("the residual y − ŷ equals the noise u, so the post's use of u for ε̂ is right",
          same(pieces.residual, data.u, rtol=1e-13))
    check("the question's code reproduces all six printed results from this data",
          all(matches_print(k, v) for k, v in {**asked, **loops}.items()))
    say()

    # --- β -----------------------------------------------------------------------------
    say("== ∂R/∂β ==")
    say(f"  question printed (drdb):  {fmt(question_claim('drdb'))}")
    say(f"  true ∂R/∂β (mean loss):   {fmt(truth['dbeta'])}")
    say(f"  N · true ∂R/∂β:           {fmt(n * truth['dbeta'])}")
    check("its formula 1ᵀ(stub) recomputed from the data matches the print",
          matches_print("drdb", asked["drdb"]))
    check("its ap() returns 1 everywhere (negatives → 0, then every value ≥ 0 → 1)",
          bool(np.all(question_ap(pieces.pre) == 1.0)) and bool(np.any(pieces.pre < 0)))
    check("so the printed drdb is −2(1ᵀu)Γ₂ᵀ, the ReLU mask missing",
          matches_print("drdb", -2.0 * data.u.sum() * data.G2))
    check("with a working a'(·) its formula gives exactly N × the true ∂R/∂β (sum, not mean)",
          same(fixed_ap["drdb"], n * truth["dbeta"]))
    check("printed drdb differs from N × truth", different(question_claim("drdb"), n * truth["dbeta"]))
    say("  verdict: WRONG as printed. The formula 1ᵀ(a'(b(XΓ₁)) ⊙ −2ε̂Γ₂ᵀ) is the gradient of the")
    say("  SUM Σ(y − ŷ)²; for the stated mean R divide by N. Its value is also wrong because the")
    say("  post's ap() is constant 1, which turns the ReLU mask off.")
    say("  The loop check (Update 1):")
    check("the loop reproduces its print", matches_print("loop_drdb", loops["loop_drdb"]))
    bi_columns = np.column_stack([question_bi(data, np.outer(data.X[:, i], data.G1[i, :]), i)
                                  for i in range(data.G1.shape[1])])
    check("bi(X[,i] %*% G1[i,], i) is not column i of b(XΓ₁): X[,i] Γ₁[i,:] is a rank-one "
          "outer product of input i and row i of Γ₁", different(bi_columns, pieces.pre))
    check("it is γ_i·sign(Γ₁[i,i])·scale(X[,i]) + β_i, a function of input i alone",
          same(bi_columns, data.gamma * np.sign(np.diag(data.G1)) * r_scale(data.X[:, :data.G1.shape[1]])
               + data.beta))
    say(f"  loop with a working a'(·): {fmt(fixed_loops['loop_drdb'])}")
    check("with a working a'(·) the loop no longer agrees with the matrix way",
          different(fixed_loops["loop_drdb"], fixed_ap["drdb"]))
    say("  The two agreed only because ap() ≡ 1 makes both equal −2(1ᵀu)Γ₂ᵀ whatever bi() computes.")
    say()

    # --- γ -----------------------------------------------------------------------------
    say("== ∂R/∂γ ==")
    say(f"  question printed diag(drdg) = loop_drdg: {fmt(question_claim('loop_drdg'))}")
    say(f"  true ∂R/∂γ (mean loss):                  {fmt(truth['dgamma'])}")
    check("its p×p formula scale(XΓ₁)ᵀ(stub ⊙ γ) matches the printed drdg",
          matches_print("drdg", asked["drdg"]))
    check("its loop matches loop_drdg", matches_print("loop_drdg", loops["loop_drdg"]))
    check("the loop is the diagonal of the matrix, entry by entry the same formula",
          same(loops["loop_drdg"], np.diag(asked["drdg"])))
    check("with a working a'(·), diag of its matrix is N · γ ⊙ true ∂R/∂γ (extra factor γ and N)",
          same(np.diag(fixed_ap["drdg"]), n * data.gamma * truth["dgamma"]))
    check("dropping γ: diag(Ẑᵀ ∂R/∂b) = 1ᵀ(∂R/∂b ⊙ Ẑ) is the true ∂R/∂γ",
          same(np.diag(pieces.Zhat.T @ pieces.dY), truth["dgamma"]))
    check("printed diagonal differs from the truth even after dividing by N·γ",
          different(question_claim("loop_drdg") / (n * data.gamma), truth["dgamma"]))
    say("  verdict: WRONG. b is linear in γ with ∂b/∂γ_j = Ẑ_j, so no factor γ belongs in the")
    say("  gradient; only the diagonal of the p×p matrix corresponds to a parameter (γ multiplies")
    say("  column j only), and the mean loss needs 1/N. Its loop re-computes the same formula, so")
    say("  it cannot detect any of this; and ap() ≡ 1 again removes the ReLU mask.")
    say()

    # --- Γ₁ ----------------------------------------------------------------------------
    say("== ∂R/∂Γ₁ ==")
    say(f"  question printed (drdG1):\n      {fmt(question_claim('drdG1'))}")
    say(f"  true ∂R/∂Γ₁ (mean loss):\n      {fmt(truth['dG1'])}")
    say(f"  its parts: fixed-w Xᵀ(∂R/∂b ⊙ γs):\n      {fmt(pieces.fixed_w)}")
    say(f"  path through μ, Xᵀ 1(γ s ⊙ dβ)/N:\n      {fmt(pieces.mean_path)}")
    say(f"  path through σ, Xᵀ(Zc ⊙ γ s² ⊙ dγ)/(N − 1):\n      {fmt(pieces.var_path)}")
    check("its formula Xᵀ(stub ⊙ w) matches the printed drdG1", matches_print("drdG1", asked["drdG1"]))
    check("its double loop matches loop_drdG1", matches_print("loop_drdG1", loops["loop_drdG1"]))
    check("the loop equals the matrix entry by entry (the same formula, so it proves nothing)",
          same(loops["loop_drdG1"], asked["drdG1"]))
    check("the code's w = γ ⊙ σ multiplies by the sd (the text says σ⁻¹): with a working a'(·), "
          "its value is N · fixed-w ⊙ σ² column by column",
          same(question_matrix_way(data, ap=relu_derivative)["drdG1"], n * pieces.fixed_w * sd ** 2))
    check("with w = γ ⊙ σ⁻¹ as its text says and a working a'(·), it gives N · fixed-w",
          same(text_w["drdG1"], n * pieces.fixed_w))
    check("fixed-w is the gradient of eval-mode batch norm frozen at this batch's μ and σ "
          "(minigraph, training=False): holding w constant means holding the statistics constant",
          same(frozen_statistics_dG1(data), pieces.fixed_w))
    check("truth = fixed-w − path through μ − path through σ", same(pieces.dG1, truth["dG1"]))
    check("fixed-w alone is not the gradient (the μ and σ paths are not small)",
          different(pieces.fixed_w, truth["dG1"], min_rel=0.05))
    dZ_fixed = pieces.dY * data.gamma * pieces.s
    invariants = lambda g: np.vstack([g.sum(axis=0), (g * pieces.Zhat).sum(axis=0)])  # (2, p2)
    scale = float(np.abs(pieces.dZ).sum() * np.abs(pieces.Zhat).max())  # what the sums add up
    check("why: BN's output ignores a shift or rescale of any column of Z = XΓ₁, so the true "
          "∂R/∂Z has zero column sums and is orthogonal to Ẑ column by column",
          negligible(invariants(pieces.dZ), scale))
    check("... while the fixed-w ∂R/∂Z = ∂R/∂b ⊙ γs is not",
          not negligible(invariants(dZ_fixed), scale, rtol=1e-3)[0])
    check("printed drdG1 / N differs from the truth",
          different(question_claim("drdG1") / n, truth["dG1"]))
    say("  verdict: WRONG, four ways: (1) w multiplies by σ instead of σ⁻¹; (2) no 1/N;")
    say("  (3) the paths through μ and σ (both functions of Γ₁) are missing; (4) ap() ≡ 1 drops the")
    say("  ReLU mask. The printed matrix is also rank one: with the mask gone the stub is the outer")
    say("  product −2uΓ₂ᵀ, so drdG1 = −2(Xᵀu)(Γ₂ ⊙ γ ⊙ σ)ᵀ.")
    check("printed drdG1 is −2(Xᵀu)(Γ₂ ⊙ γ ⊙ σ)ᵀ to printed digits",
          matches_print("drdG1", -2.0 * np.outer(data.X.T @ data.u, data.G2 * data.gamma * sd)))
    say()

    # --- Γ₂ ----------------------------------------------------------------------------
    say("== ∂R/∂Γ₂ (the question printed none for the BN net) ==")
    say(f"  true ∂R/∂Γ₂ (mean loss): {fmt(truth['dG2'])}")
    v = np.maximum(pieces.pre, 0.0)
    check("its no-BN formula labelled ∂R/∂Γ₁, −2Vᵀε̂ (shape p2×1), is N × ∂R/∂Γ₂ with V = ReLU(b(XΓ₁)): "
          "the two labels are swapped", same(-2.0 * v.T @ data.u, n * truth["dG2"]))
    say()
    return lines, checks, truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true",
                        help="print only the true gradients of the mean loss, as one JSON line")
    parser.add_argument("--data", type=Path, default=DATA, help="the question's data (JSON)")
    args = parser.parse_args(argv)

    lines, checks, truth = build_report(load_question_data(args.data))
    failed = [c for c in checks if not c.holds]
    if args.json:
        # stdout carries the gradients alone, so that it can be piped; failures still show.
        print(json.dumps({key: truth[key].tolist() for key in ("dbeta", "dgamma", "dG1", "dG2")}))
        for check in failed:
            print(f"FAILS: {check.claim}" + (f"  ({check.detail})" if check.detail else ""), file=sys.stderr)
    else:
        print("\n".join(lines))
        print(f"{len(checks) - len(failed)} of {len(checks)} checks hold.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
