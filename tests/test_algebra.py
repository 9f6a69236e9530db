"""The small algebra: elementwise ops, reductions, shapes, indexing and conversions.

Gradients against float64 finite differences on each device; values against NumPy computing
the same expression directly; each error names the op and what it expected.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import minigraph as mg
from minigraph.backend import to_device

from conftest import TIGHT


def leaf(on, array):
    return mg.Tensor(on(np.asarray(array, dtype=np.float64)), requires_grad=True)


def host(value):
    return to_device(value.data if isinstance(value, mg.Tensor) else value, "cpu")


def away_from_zero(rng, shape):
    """Values in ±[0.5, 2]: safe divisors, and far from the kinks of |x|-like functions."""
    return rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)


# --- elementwise -----------------------------------------------------------------------------
BROADCAST_PAIRS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((4,), (3, 4)), ((3, 1), (1, 4)),
                   ((2, 3, 4), (3, 1)), ((3, 4), ())]


@pytest.mark.parametrize("op", [mg.sub, mg.mul, mg.div])
@pytest.mark.parametrize("a_shape,b_shape", BROADCAST_PAIRS)
def test_binary_op_gradients_are_summed_back_to_each_operands_shape(on, rng, op, a_shape, b_shape):
    a, b = leaf(on, rng.normal(size=a_shape)), leaf(on, away_from_zero(rng, b_shape))
    assert mg.gradcheck(op, [a, b], **TIGHT)
    out = op(a, b)
    out.backward(on(rng.normal(size=out.shape)))
    assert a.grad.shape == a_shape and b.grad.shape == b_shape


@pytest.mark.parametrize("name,fn,domain", [
    ("neg", mg.neg, "any"), ("exp", mg.exp, "any"), ("log", mg.log, "positive"),
    ("tanh", mg.tanh, "any"), ("sigmoid", mg.sigmoid, "any"),
    ("x ** 2", lambda x: x ** 2, "any"), ("x ** 3", lambda x: x ** 3, "any"),
    ("x ** 1", lambda x: x ** 1, "any"), ("x ** 0.5", lambda x: x ** 0.5, "positive"),
    ("x ** -1.5", lambda x: x ** -1.5, "positive"), ("x ** 0", lambda x: x ** 0, "with zeros"),
    ("2 ** x", lambda x: 2 ** x, "any"), ("0.3 ** x", lambda x: 0.3 ** x, "any"),
    ("1 - x", lambda x: 1 - x, "any"), ("x / 3", lambda x: x / 3, "any"),
    ("3 / x", lambda x: 3 / x, "positive"), ("2 * x", lambda x: 2 * x, "any"),
])
def test_unary_and_number_operand_gradients_match_finite_differences(on, rng, name, fn, domain):
    x = rng.normal(size=(3, 4)) * 1.5
    if domain == "positive":
        x = rng.uniform(0.3, 3.0, size=(3, 4))
    elif domain == "with zeros":
        x[0, :2] = 0.0  # d(x⁰)/dx is 0 there too, not 0·inf
    assert mg.gradcheck(fn, [leaf(on, x)], **TIGHT), name


def test_operators_compute_what_numpy_computes_on_either_side(on, rng):
    a_np, b_np = rng.normal(size=(3, 4)), away_from_zero(rng, (4,))
    pos_np = rng.uniform(0.5, 2.0, size=(3, 4))
    a, b, pos = leaf(on, a_np), leaf(on, b_np), leaf(on, pos_np)
    cases = {
        "a - b": (a - b, a_np - b_np), "a * b": (a * b, a_np * b_np), "a / b": (a / b, a_np / b_np),
        "-a": (-a, -a_np), "a ** 3": (a ** 3, a_np ** 3), "pos ** 0.5": (pos ** 0.5, np.sqrt(pos_np)),
        "2 * a": (2 * a, 2 * a_np), "1 - a": (1 - a, 1 - a_np), "a - 1": (a - 1, a_np - 1),
        "a / 3": (a / 3, a_np / 3), "3 / b": (3 / b, 3 / b_np), "2 ** a": (2 ** a, 2.0 ** a_np),
        "exp": (a.exp(), np.exp(a_np)), "log": (pos.log(), np.log(pos_np)),
        "tanh": (a.tanh(), np.tanh(a_np)), "sigmoid": (a.sigmoid(), 1 / (1 + np.exp(-a_np))),
        "pow method": (a.pow(2), a_np ** 2), "relu method": (a.relu(), np.maximum(a_np, 0)),
    }
    for name, (got, expected) in cases.items():
        assert isinstance(got, mg.Tensor) and got.device == a.device, name
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-14, atol=1e-15, err_msg=name)


def test_numpy_scalars_and_arrays_on_the_left_defer_to_the_tensor(on, rng):
    x_np = rng.normal(size=(2, 3))
    x = leaf(on, x_np)
    for got, expected in [(np.float64(2.0) * x, 2 * x_np), (on(np.ones(3)) - x, 1 - x_np),
                          (on(np.full(3, 2.0)) / x, 2 / x_np), (np.float64(2.0) ** x, 2 ** x_np)]:
        assert isinstance(got, mg.Tensor)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-14)


@pytest.mark.parametrize("expression", [
    lambda x: x - 1.5, lambda x: 1.5 - x, lambda x: x * 2, lambda x: 2 * x, lambda x: x / 4,
    lambda x: 4 / x, lambda x: x ** 2, lambda x: 2 ** x, lambda x: -x, lambda x: x.exp(),
    lambda x: x.log(), lambda x: x.tanh(), lambda x: x.sigmoid(), lambda x: x.sum(axis=0),
    lambda x: x.mean(), lambda x: x.T, lambda x: x[[1, 1]], lambda x: x.reshape(-1),
])
def test_float32_stays_float32_in_values_and_gradients_with_python_numbers(on, expression):
    x = mg.Tensor(on(np.array([[0.5, 1.0], [1.5, 2.0]], dtype=np.float32)), requires_grad=True)
    y = expression(x)
    assert y.dtype == np.float32
    y.backward(on(np.ones(y.shape, dtype=np.float32)))
    assert x.grad.dtype == np.float32


def test_a_zero_dimensional_loss_can_be_scaled_shifted_and_differentiated(on, rng):
    """NumPy returns scalars, not arrays, from math on 0-d arrays; gradients stay arrays."""
    x_np = rng.normal(size=3)
    x = leaf(on, x_np)
    s = x.sum()
    loss = (s * 2 - 1) ** 2 / 4 + 1.0
    assert loss.shape == () and isinstance(loss.data, type(x.data))
    loss.backward()
    assert type(x.grad) is type(x.data)
    expected = (2 * x_np.sum() - 1) * np.ones(3)  # d/dx of (2s − 1)²/4 is (2s − 1)·ds/dx
    np.testing.assert_allclose(host(x.grad), expected, rtol=1e-14)


class Double(mg.Function):
    """y = 2x, unverified: its backward goes through the engine's run-time check."""

    def forward(self, x):
        return x * 2

    def backward(self, grad_output):
        return (grad_output * 2,)


def test_a_users_function_on_a_zero_dimensional_input_may_compute_with_numpy_scalars():
    x = mg.Tensor(np.array(1.5), requires_grad=True)
    y = mg.apply(Double(), x)  # NumPy gives a float64 scalar in forward and in backward
    assert isinstance(y.data, np.ndarray) and y.item() == 3.0
    y.backward()
    assert isinstance(x.grad, np.ndarray) and x.grad.shape == () and float(x.grad) == 2.0


def test_sigmoid_is_finite_and_precise_far_into_both_tails(on):
    x = np.array([-1000.0, -40.0, -1.0, 0.0, 1.0, 40.0, 1000.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in exp would warn
        y = mg.sigmoid(mg.Tensor(on(x))).numpy()
    expected = [1 / (1 + math.exp(-v)) if v > -700 else 0.0 for v in x]
    np.testing.assert_allclose(y, expected, rtol=1e-15, atol=0)
    assert y[1] > 0  # σ(−40) ≈ 4e-18 keeps its digits instead of rounding to 0


def test_pow_needs_a_number_on_one_side():
    x, y = mg.Tensor([1.0, 2.0], requires_grad=True), mg.Tensor([1.0, 2.0])
    with pytest.raises(TypeError, match=r"pow: got a Tensor base and a Tensor exponent.*exp\(b \* log\(a\)\)"):
        x ** y
    with pytest.raises(ValueError, match=r"pow: got base=-2; expected a finite number in \(0.0, inf\)"):
        (-2) ** x
    with pytest.raises(ValueError, match=r"pow: got exponent=nan"):
        x ** float("nan")


def test_binary_ops_name_themselves_when_shapes_do_not_broadcast():
    a, b = mg.Tensor(np.ones((3, 4))), mg.Tensor(np.ones(3))
    for op, name in [(mg.sub, "sub"), (mg.mul, "mul"), (mg.div, "div")]:
        with pytest.raises(ValueError, match=rf"^{name}: cannot broadcast shapes \(3, 4\) and \(3,\)"):
            op(a, b)
    with pytest.raises(TypeError, match="mul: operands have different dtypes"):
        a * mg.Tensor(np.ones(4, dtype=np.float32))
    with pytest.raises(TypeError, match="exp: x must be a Tensor or an array; got str"):
        mg.exp("x")


# --- reductions ------------------------------------------------------------------------------
AXES = [None, 0, 1, -1, (0, 2), (2, 0), (), (-1, -3)]


@pytest.mark.parametrize("name", ["sum", "mean"])
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_match_numpy_and_finite_differences(on, rng, name, axis, keepdims):
    x_np = rng.normal(size=(2, 3, 4))
    x = leaf(on, x_np)
    reduce = getattr(mg, name)
    out = reduce(x, axis=axis, keepdims=keepdims)
    expected = getattr(np, name)(x_np, axis=axis, keepdims=keepdims)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-13)
    assert mg.gradcheck(lambda t: reduce(t, axis=axis, keepdims=keepdims), [x], **TIGHT)


def test_reductions_are_tensor_methods_too(on, rng):
    x_np = rng.normal(size=(3, 4))
    x = leaf(on, x_np)
    np.testing.assert_allclose(x.sum().item(), x_np.sum(), rtol=1e-14)
    np.testing.assert_allclose(x.mean(axis=0).numpy(), x_np.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(x.sum(1, keepdims=True).numpy(), x_np.sum(1, keepdims=True), rtol=1e-14)


@pytest.mark.parametrize("name", ["sum", "mean"])
def test_reductions_take_pytorchs_dim_and_keepdim_too(on, rng, name):
    x_np = rng.normal(size=(2, 3, 4))
    x = leaf(on, x_np)
    for torch_style, numpy_style in [(dict(dim=1), dict(axis=1)), (dict(dim=(0, 2), keepdim=True),
                                     dict(axis=(0, 2), keepdims=True)), (dict(keepdim=True), dict(keepdims=True))]:
        out = getattr(x, name)(**torch_style)
        # Equal up to the summation order, which CuPy's reduction kernels choose (an ulp apart on an H100).
        np.testing.assert_allclose(out.numpy(), getattr(np, name)(x_np, **numpy_style), rtol=1e-14, atol=1e-15)
    with pytest.raises(TypeError, match=rf"{name}: got both axis=0 and dim=1; expected one of them "
                                        rf"\(dim is PyTorch's name for axis\)"):
        getattr(mg, name)(x, 0, dim=1)
    with pytest.raises(TypeError, match=rf"{name}: got both keepdims=True and keepdim=False"):
        getattr(x, name)(keepdims=True, keepdim=False)
    with pytest.raises(TypeError, match=rf"{name}: got keepdim='yes'; expected True or False"):
        getattr(x, name)(keepdim="yes")


def test_the_gradient_of_a_reduction_is_a_writable_leaf_grad(on, rng):
    x = leaf(on, rng.normal(size=(3, 4)))
    x.mean(axis=0).sum().backward()
    np.testing.assert_allclose(host(x.grad), np.full((3, 4), 1 / 3), rtol=1e-15)
    x.grad[0, 0] = 5.0  # the leaf owns its gradient: no broadcast view of the upstream one
    assert float(host(x.grad)[1, 0]) == pytest.approx(1 / 3)


def test_reductions_reject_bad_axes():
    x = mg.Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"sum: got axis=2; expected integers in \[-2, 2\) for a tensor of 2"):
        x.sum(axis=2)
    with pytest.raises(ValueError, match=r"mean: got axis=\(0, -2\), which names an axis twice"):
        x.mean(axis=(0, -2))
    with pytest.raises(ValueError, match=r"sum: got axis=1.5"):
        x.sum(axis=1.5)
    with pytest.raises(TypeError, match=r"mean: got keepdims=1; expected True or False"):
        x.mean(keepdims=1)


# --- transpose and reshape -------------------------------------------------------------------
@pytest.mark.parametrize("shape,call,numpy_call", [
    ((3, 4), lambda x: x.T, lambda a: a.T),
    ((3, 4), lambda x: x.transpose(), lambda a: a.transpose()),
    ((2, 3, 4), lambda x: x.T, lambda a: a.T),
    ((2, 3, 4), lambda x: x.transpose(1, 2, 0), lambda a: a.transpose(1, 2, 0)),
    ((2, 3, 4), lambda x: x.transpose((2, 0, 1)), lambda a: a.transpose((2, 0, 1))),
    ((2, 3, 4), lambda x: mg.transpose(x, (0, -1, 1)), lambda a: a.transpose(0, 2, 1)),
    ((2, 3, 4), lambda x: x.reshape(6, 4), lambda a: a.reshape(6, 4)),
    ((2, 3, 4), lambda x: x.reshape((4, -1)), lambda a: a.reshape(4, -1)),
    ((2, 3, 4), lambda x: x.reshape(-1), lambda a: a.reshape(-1)),
    ((3, 4), lambda x: x.T.reshape(2, 6), lambda a: a.T.reshape(2, 6)),  # reshape of a non-contiguous view
    ((1,), lambda x: mg.reshape(x, ()), lambda a: a.reshape(())),
])
def test_transpose_and_reshape_match_numpy_and_finite_differences(on, rng, shape, call, numpy_call):
    x_np = rng.normal(size=shape)
    x = leaf(on, x_np)
    np.testing.assert_array_equal(call(x).numpy(), numpy_call(x_np))
    assert mg.gradcheck(call, [x], **TIGHT)


def test_transpose_and_reshape_reject_what_does_not_fit():
    x = mg.Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"transpose: got axes=\(0,\) for a tensor of shape \(2, 3\); "
                                         r"expected a permutation of \(0, 1\)"):
        x.transpose(0)
    with pytest.raises(ValueError, match=r"transpose: got axes=\(1, 1\), which names an axis twice"):
        x.transpose(1, 1)
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\) \(6 elements\) "
                                         r"into \(4, -1\)"):
        x.reshape(4, -1)
    with pytest.raises(ValueError, match=r"into \(-1, -1\)"):
        x.reshape(-1, -1)
    with pytest.raises(ValueError, match=r"into \(7,\)"):
        x.reshape(7)
    with pytest.raises(ValueError, match=r"reshape: got shape entry=-2"):
        x.reshape(-2, -3)


# --- indexing --------------------------------------------------------------------------------
KEYS = {
    "int": 1, "negative int": -1, "slice": slice(1, 3), "column": (slice(None), 2),
    "element": (2, 1), "ellipsis": (Ellipsis, 0), "new axis": (None, 1),
    "strided slice": slice(None, None, -2), "rows with repeats": np.array([2, 0, 2, 2]),
    "list of rows": [0, 0, 3], "negative rows": np.array([-1, 0, -1]), "rows then column": (np.array([1, 1]), 2),
    "column of rows": (slice(None), np.array([0, 2, 0])), "no rows": np.array([], dtype=np.int64),
    "two index arrays": (np.array([0, 1, 1]), np.array([2, 2, 2])),
    "mask": np.array([True, False, True, True]),
    "2-d mask": np.arange(12).reshape(4, 3) % 5 == 0,
}


@pytest.mark.parametrize("name", list(KEYS))
def test_indexing_matches_numpy_and_finite_differences(on, rng, name):
    key = KEYS[name]
    x_np = rng.normal(size=(4, 3))
    x = leaf(on, x_np)
    np.testing.assert_array_equal(x[key].numpy(), x_np[key])
    assert mg.gradcheck(lambda t: t[key], [x], **TIGHT)


@pytest.mark.parametrize("index_on_device", [False, True])
def test_rows_taken_several_times_receive_the_sum_of_their_gradients(on, rng, index_on_device):
    """x[idx] = S x with S the (k, n) selection matrix, so dX = Sᵀ dY: summed over repeats."""
    idx = np.array([3, 0, 3, 3, 1, 0])
    x = leaf(on, rng.normal(size=(5, 2)))
    upstream = rng.normal(size=(len(idx), 2))
    rows = x[on(idx) if index_on_device else idx]
    assert rows.device == x.device
    rows.backward(on(upstream))
    selection = np.eye(5)[idx]
    np.testing.assert_allclose(host(x.grad), selection.T @ upstream, rtol=1e-14)


def test_iterating_a_tensor_gives_its_rows_as_graph_nodes(on, rng):
    x_np = rng.normal(size=(3, 2))
    x = leaf(on, x_np)
    rows = list(x)
    assert [r.shape for r in rows] == [(2,)] * 3
    np.testing.assert_array_equal(rows[2].numpy(), x_np[2])
    (rows[0] * rows[2]).sum().backward()
    np.testing.assert_allclose(host(x.grad), [x_np[2], [0, 0], x_np[0]], rtol=1e-15)
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        iter(x.sum())


@pytest.mark.parametrize("key,error,message", [
    (3, IndexError, r"getitem: index 3 is out of range for axis 0 of size 3 \(tensor of shape \(3, 2\)\)"),
    ((0, -3), IndexError, r"getitem: index -3 is out of range for axis 1 of size 2"),
    (np.array([0, 3]), IndexError, r"getitem: the index array for axis 0 must lie in \[-3, 3\); got "
                                   r"values in \[0, 3\]"),
    ((slice(None), [0, -3]), IndexError, r"the index array for axis 1 must lie in \[-2, 2\); got values in \[-3, 0\]"),
    ((0, 0, 0), IndexError, r"getitem: the index uses 3 axes but the tensor has shape \(3, 2\)"),
    ((Ellipsis, 0, Ellipsis), IndexError, r"more than one '...'"),
    (np.array([0.0, 1.0]), TypeError, r"getitem: got an index array of dtype float64; expected integers"),
    (mg.Tensor([0.0]), TypeError, r"getitem: an index array is a Tensor, whose data are floats"),
    (True, TypeError, r"getitem: got the boolean True as an index"),
    (1.0, TypeError, r"getitem: got an index of type float"),
    ("a", TypeError, r"getitem: got an index of type str"),
    (np.array([True, False]), IndexError, r"getitem: a boolean mask of shape \(2,\) at axis 0; expected "
                                          r"the shape of the axes it selects from, \(3,\)"),
])
def test_indexing_rejects_what_it_does_not_support_by_name(key, error, message):
    with pytest.raises(error, match=message):
        mg.Tensor(np.ones((3, 2)))[key]


def test_an_index_array_on_the_gpu_never_moves_to_a_cpu_tensor_implicitly(gpu):
    x = mg.Tensor(np.ones((3, 2)), device="cpu")
    rows = mg.backend.to_device(np.array([0, 1]), gpu)
    with pytest.raises(TypeError, match=r"getitem: an index array is on 'gpu' but the tensor is on 'cpu'"):
        x[rows]


# --- conversions, truth and equality ---------------------------------------------------------
def test_float_of_a_one_element_tensor_is_its_value(on):
    for shape in [(), (1,), (1, 1)]:
        t = mg.Tensor(on(np.full(shape, 2.5)))
        assert float(t) == 2.5 == t.item()
    with pytest.raises(TypeError, match=r"float\(\): got a Tensor of shape \(2,\); expected one element"):
        float(mg.Tensor(on(np.ones(2))))


def test_a_one_element_tensor_formats_as_its_number(on):
    loss = mg.Tensor(on(np.array(2.0 / 3.0, dtype=np.float32)))
    assert f"{loss:.4f}" == f"{2.0 / 3.0:.4f}" and f"{loss:>8.2e}" == f"{float(loss):>8.2e}"
    assert f"{loss}" == str(loss)
    with pytest.raises(TypeError, match=r"format\(\): got a Tensor of shape \(2,\) and the format '.3f'"):
        format(mg.Tensor(on(np.ones(2))), ".3f")


def test_truth_value_of_a_tensor_raises_instead_of_guessing(on):
    for t in [mg.Tensor(on(np.zeros(1))), mg.Tensor(on(np.ones((2, 2)))), mg.Tensor(on(np.zeros((0,))))]:
        with pytest.raises(TypeError, match=r"the truth value of a Tensor .* is not defined.*is not None"):
            bool(t)
    with pytest.raises(TypeError, match="truth value"):
        if mg.Tensor(on(np.ones(1))):
            pass


def test_equality_is_identity_between_tensors_and_an_error_with_anything_else(on):
    a, b = mg.Tensor(on(np.ones(2))), mg.Tensor(on(np.ones(2)))
    assert a == a and a != b and not (a == b)
    assert {a: 1, b: 2}[b] == 2 and len({a, b, a}) == 2 and b in [a, b]
    for other in [1.0, 0, on(np.ones(2)), [1.0, 1.0]]:
        with pytest.raises(TypeError, match=r"Tensor == .*: minigraph has no elementwise comparisons"):
            a == other
        with pytest.raises(TypeError, match="no elementwise comparisons"):
            a != other
    with pytest.raises(TypeError, match="not supported"):
        a < 1.0
