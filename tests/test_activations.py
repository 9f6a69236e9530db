"""softmax, log_softmax, leaky_relu, elu, softplus and silu: values against NumPy written out,
gradients against finite differences (float64, both devices), edge cases against PyTorch's rules."""

from __future__ import annotations

import numpy as np
import pytest

import minigraph as mg
import minigraph.nn.functional as F
from minigraph import nn
from minigraph.backend import to_device

from conftest import TIGHT


def host(array):
    return to_device(array, "cpu")


def numpy_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("shape,dim", [((5,), 0), ((4, 3), 1), ((4, 3), 0), ((2, 3, 4), -1), ((2, 3, 4), 1)])
def test_softmax_and_log_softmax_values_and_gradients(on, rng, shape, dim):
    x = rng.normal(size=shape) * 3
    expected = numpy_softmax(x, dim)
    t = mg.Tensor(on(x), requires_grad=True)
    np.testing.assert_allclose(host(mg.softmax(t, dim).data), expected, rtol=1e-13)
    np.testing.assert_allclose(host(t.log_softmax(dim).data), np.log(expected), rtol=1e-13, atol=1e-14)
    assert mg.gradcheck(lambda v: mg.softmax(v, dim), [t], **TIGHT)
    assert mg.gradcheck(lambda v: mg.log_softmax(v, dim), [t], **TIGHT)


def test_the_backward_formulas_are_the_jacobians_applied(rng):
    """Independent of finite differences: each slice's Jacobian written out as a matrix."""
    x, upstream = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    for op in ("softmax", "log_softmax"):
        t = mg.Tensor(x, requires_grad=True)
        getattr(mg, op)(t, 1).backward(upstream)
        for row in range(3):
            s = numpy_softmax(x[row], 0)
            jacobian = np.diag(s) - np.outer(s, s) if op == "softmax" else np.eye(4) - s  # rows: outputs
            np.testing.assert_allclose(t.grad[row], jacobian.T @ upstream[row], rtol=1e-12, atol=1e-15)


def test_softmax_is_stable_for_large_scores_and_keeps_float32(on):
    x = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]], dtype=np.float32)
    s, log_s = mg.softmax(mg.Tensor(on(x)), 1), mg.log_softmax(mg.Tensor(on(x)), 1)
    assert s.dtype == np.float32 and log_s.dtype == np.float32
    np.testing.assert_allclose(host(s.data), [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6)
    np.testing.assert_allclose(host(log_s.data), [[0, -1000, -2000], [-np.log(3)] * 3], rtol=1e-6)


def test_softmax_of_a_0d_and_of_an_empty_tensor(on):
    one = mg.Tensor(on(np.array(2.5)), requires_grad=True)
    y = mg.softmax(one, -1)
    assert y.shape == () and float(y) == 1.0 and float(mg.log_softmax(one, 0)) == 0.0
    y.backward()
    assert float(host(one.grad)) == 0.0
    empty = mg.Tensor(on(np.zeros((0, 3))), requires_grad=True)
    for dim in (0, 1):
        out = mg.softmax(empty, dim)
        assert out.shape == (0, 3)
        out.sum().backward()
    assert empty.grad.shape == (0, 3)


@pytest.mark.parametrize("slope", [0.01, 0.2, -0.5, 1.5])
def test_leaky_relu_values_and_gradients(on, rng, slope):
    x = rng.normal(size=(6, 4))
    x = np.where(np.abs(x) < 0.05, 0.3, x)  # finite differences away from the kink
    t = mg.Tensor(on(x), requires_grad=True)
    np.testing.assert_array_equal(host(mg.leaky_relu(t, slope).data), np.where(x > 0, x, slope * x))
    assert mg.gradcheck(lambda v: mg.leaky_relu(v, slope), [t], **TIGHT)


def test_leaky_relu_at_zero_and_nan_takes_the_slope_and_passes_positives_exactly(on):
    x = np.array([-2.0, 0.0, 3.0, np.nan, 1e-30, 7.1], dtype=np.float32)
    t = mg.Tensor(on(x), requires_grad=True)
    y = F.leaky_relu(t, 0.3)
    y.sum().backward()
    values = host(y.data)
    assert y.dtype == np.float32 and t.grad.dtype == np.float32
    np.testing.assert_array_equal(values[[2, 4, 5]], x[[2, 4, 5]])  # bit for bit
    np.testing.assert_array_equal(values[[0, 1]], np.float32(0.3) * x[[0, 1]])
    assert np.isnan(values[3])
    np.testing.assert_array_equal(host(t.grad), np.float32([0.3, 0.3, 1, 0.3, 1, 1]))


def test_modules_and_functional_forms(on, rng):
    x = rng.normal(size=(3, 5))
    t = mg.Tensor(on(x))
    np.testing.assert_array_equal(host(nn.LeakyReLU(0.1)(t).data), host(mg.leaky_relu(t, 0.1).data))
    np.testing.assert_array_equal(host(nn.LeakyReLU()(t).data), np.where(x > 0, x, 0.01 * x))
    np.testing.assert_array_equal(host(nn.Softmax(dim=0)(t).data), host(F.softmax(t, 0).data))
    np.testing.assert_array_equal(host(nn.LogSoftmax(1)(t).data), host(F.log_softmax(t, dim=1).data))
    assert repr(nn.Sequential(nn.LeakyReLU(0.2), nn.LogSoftmax(dim=1))) == \
        "Sequential(\n  (0): LeakyReLU(negative_slope=0.2)\n  (1): LogSoftmax(dim=1)\n)"
    assert list(nn.Softmax(1).parameters()) == [] and nn.LeakyReLU().state_dict() == {}


@pytest.mark.parametrize("call,error,message", [
    (lambda t: mg.softmax(t), TypeError, r"softmax: got dim=None; expected the axis to normalise along, e.g. "
     r"softmax\(x, dim=1\)"),
    (lambda t: nn.LogSoftmax()(t), TypeError, r"log_softmax: got dim=None"),
    (lambda t: t.softmax(2), ValueError, r"softmax: got dim=2; expected integers in \[-2, 2\)"),
    (lambda t: mg.softmax(t, 1.5), ValueError, r"softmax: got dim=1.5"),
    (lambda t: mg.softmax(t, (0, 1)), TypeError, r"softmax: got dim=\(0, 1\); expected one integer axis"),
    (lambda t: t.log_softmax([1]), TypeError, r"log_softmax: got dim=\[1\]; expected one integer axis"),
    (lambda t: mg.leaky_relu(t, "0.1"), ValueError, r"leaky_relu: got negative_slope='0.1'; expected a finite number"),
    (lambda t: nn.LeakyReLU(float("nan")), ValueError, r"LeakyReLU: got negative_slope=nan"),
    (lambda t: F.leaky_relu(t, 0.1, inplace=True), ValueError, r"F.leaky_relu: got inplace=True"),
    (lambda t: nn.LeakyReLU(inplace=True), ValueError, r"LeakyReLU: got inplace=True"),
])
def test_bad_arguments_are_named(call, error, message):
    t = mg.Tensor(np.ones((2, 3)))
    with pytest.raises(error, match=message):
        call(t)


def test_against_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(4, 3, 5)) * 4
    x[0, 0, 0] = 0.0
    upstream = rng.normal(size=x.shape)
    cases = [(lambda v: mg.softmax(v, 1), lambda v: torch.softmax(v, 1)),
             (lambda v: mg.log_softmax(v, -1), lambda v: torch.log_softmax(v, -1)),
             (lambda v: mg.log_softmax(v, 0), lambda v: torch.log_softmax(v, 0)),
             (lambda v: mg.leaky_relu(v, 0.07), lambda v: torch.nn.functional.leaky_relu(v, 0.07)),
             (lambda v: nn.LeakyReLU(-0.3)(v), lambda v: torch.nn.LeakyReLU(-0.3)(v))]
    assert_matches_torch(torch, cases, x, upstream)


def assert_matches_torch(torch, cases, x, upstream):
    """Each (ours, theirs) pair of functions: the same values and input gradients, in float64."""
    for ours, theirs in cases:
        mine, their_x = mg.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y, their_y = ours(mine), theirs(their_x)
        y.backward(upstream)
        their_y.backward(torch.from_numpy(upstream))
        np.testing.assert_allclose(y.numpy(), their_y.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(mine.grad, their_x.grad.numpy(), rtol=1e-10, atol=1e-13)


# --- elu, softplus, silu ----------------------------------------------------------------------
def numpy_sigmoid(x):
    return np.exp(-np.logaddexp(0.0, -x))  # 1 / (1 + e^-x), spelled otherwise than minigraph's


SMOOTH = {
    "elu": (lambda t: mg.elu(t, 0.7), lambda x: np.where(x > 0, x, 0.7 * (np.exp(x) - 1)),
            lambda x: np.where(x > 0, 1.0, 0.7 * np.exp(x))),
    "softplus": (lambda t: mg.softplus(t, 2.0, 15.0),
                 lambda x: np.where(2 * x > 15, x, np.log1p(np.exp(2 * x)) / 2),
                 lambda x: np.where(2 * x > 15, 1.0, numpy_sigmoid(2 * x))),
    "silu": (mg.silu, lambda x: x * numpy_sigmoid(x),
             lambda x: numpy_sigmoid(x) * (1 + x * (1 - numpy_sigmoid(x)))),
}


@pytest.mark.parametrize("name", sorted(SMOOTH))
def test_smooth_rectifiers_values_derivatives_and_gradients(on, rng, name):
    op, value, derivative = SMOOTH[name]
    x = rng.normal(size=(5, 4)) * 3
    x = np.where(np.abs(x) < 0.05, 0.4, x)
    x[0, :2] = [9.0, 7.4]  # softplus: 2x on either side of its threshold 15
    t = mg.Tensor(on(x), requires_grad=True)
    y = op(t)
    np.testing.assert_allclose(host(y.data), value(x), rtol=1e-13, atol=1e-15)
    y.sum().backward()
    np.testing.assert_allclose(host(t.grad), derivative(x), rtol=1e-13, atol=1e-15)
    fresh = mg.Tensor(on(x), requires_grad=True)
    assert mg.gradcheck(op, [fresh], **TIGHT)


def test_smooth_rectifiers_at_extremes_kinks_and_in_float32(on):
    x = np.array([-800.0, -30.0, 0.0, 30.0, 800.0], dtype=np.float32)
    for name, (op, value, derivative) in SMOOTH.items():
        t = mg.Tensor(on(x), requires_grad=True)
        with np.errstate(over="ignore"):  # the NumPy reference itself overflows; minigraph must not
            expected, slope = value(x.astype(np.float64)), derivative(x.astype(np.float64))
        y = op(t)
        y.backward(on(np.ones(5, np.float32)))
        assert y.dtype == np.float32 and t.grad.dtype == np.float32, name
        assert np.all(np.isfinite(host(y.data))) and np.all(np.isfinite(host(t.grad))), name
        np.testing.assert_allclose(host(y.data), expected, rtol=1e-6, atol=1e-30, err_msg=name)
        np.testing.assert_allclose(host(t.grad), slope, rtol=1e-6, atol=1e-30, err_msg=name)
    grad_at_zero = {"elu": 0.7, "softplus": 0.5, "silu": 0.5}  # elu: alpha at 0, as PyTorch's
    for name, (op, _, _) in SMOOTH.items():
        t = mg.Tensor(on(np.zeros(1)), requires_grad=True)
        op(t).sum().backward()
        assert float(host(t.grad)[0]) == grad_at_zero[name], name


def test_smooth_rectifier_modules_and_functional_forms(rng):
    x = rng.normal(size=(3, 4))
    t = mg.Tensor(x)
    for module, functional in [(nn.ELU(0.5), F.elu(t, 0.5)), (nn.Softplus(3.0, 10.0), F.softplus(t, 3.0, 10.0)),
                               (nn.SiLU(), F.silu(t))]:
        np.testing.assert_array_equal(module(t).numpy(), functional.numpy())
    assert repr(nn.ELU(0.5)) == "ELU(alpha=0.5)" and repr(nn.Softplus()) == "Softplus(beta=1.0, threshold=20.0)"
    with pytest.raises(ValueError, match=r"softplus: got beta=0; expected a finite number in \(0.0, inf\)"):
        mg.softplus(t, beta=0)
    with pytest.raises(ValueError, match=r"ELU: got inplace=True"):
        nn.ELU(inplace=True)
    with pytest.raises(ValueError, match=r"F.silu: got inplace=True"):
        F.silu(t, inplace=True)


def test_smooth_rectifiers_against_torch(rng):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x = rng.normal(size=(4, 6)) * 5
    x[0, :3] = [0.0, 7.5, -700.0]
    upstream = rng.normal(size=x.shape)
    cases = [(lambda v: mg.elu(v, 1.3), lambda v: tf.elu(v, 1.3)), (mg.elu, tf.elu),
             (lambda v: mg.softplus(v, 2.0), lambda v: tf.softplus(v, 2.0)), (mg.softplus, tf.softplus),
             (mg.silu, tf.silu)]
    assert_matches_torch(torch, cases, x, upstream)
