"""abs, sqrt, clamp, maximum/minimum, amax/amin, max/min, cat, stack and dtype casts.

Each backward is held to float64 finite differences away from its kinks; at the kinks and
ties, to the value PyTorch defines, computed by hand here (and compared with torch itself when
it is installed).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import minigraph as mg
from minigraph.backend import to_device

from conftest import TIGHT


def host(array):
    return to_device(array, "cpu")


def param(on, values):
    return mg.Tensor(on(np.asarray(values, dtype=np.float64)), requires_grad=True)


def away_from(x, points, gap=0.05):
    """x with every entry within `gap` of one of `points` moved off it (no derivative there)."""
    x = x.copy()
    for point in points:
        x[np.abs(x - point) < gap] = point + 3 * gap
    return x


def grad_of(fn, on, values, upstream=None):
    """The gradient fn's backward gives for the input `values` (upstream ones unless given)."""
    t = param(on, values)
    out = fn(t)
    out.backward(None if out.data.ndim == 0 and upstream is None else
                 on(np.ones(out.shape) if upstream is None else upstream))
    return host(t.grad)


# --- finite differences away from kinks --------------------------------------------------------
@pytest.mark.parametrize("fn,kinks", [
    (mg.abs, [0.0]), (lambda x: abs(x), [0.0]), (lambda x: x.abs(), [0.0]),
    (lambda x: mg.sqrt(x * x + 0.5), []), (lambda x: x.sqrt(), None),
    (lambda x: mg.clamp(x, min=-0.5), [-0.5]), (lambda x: mg.clamp(x, max=0.3), [0.3]),
    (lambda x: x.clamp(-0.4, 0.6), [-0.4, 0.6]), (lambda x: x.clip(max=np.float64(0.1)), [0.1]),
])
def test_unary_gradients_match_finite_differences(on, rng, fn, kinks):
    x = rng.normal(size=(5, 4))
    x = np.abs(x) + 0.1 if kinks is None else away_from(x, kinks)  # sqrt: positive inputs
    assert mg.gradcheck(fn, [param(on, x)], **TIGHT)


@pytest.mark.parametrize("op", [mg.maximum, mg.minimum])
@pytest.mark.parametrize("a_shape,b_shape", [((4, 3), (4, 3)), ((4, 3), (3,)), ((4, 1), (1, 3)), ((), (2,))])
def test_maximum_and_minimum_gradients_sum_back_to_each_operand(on, rng, op, a_shape, b_shape):
    a, b = rng.normal(size=a_shape), rng.normal(size=b_shape)
    b = b + 0.2 * (np.abs(np.broadcast_to(a, np.broadcast_shapes(a_shape, b_shape)).max() - b) < 0.1)
    assert mg.gradcheck(op, [param(on, a), param(on, b)], **TIGHT)


@pytest.mark.parametrize("fn", [
    mg.amax, mg.amin, lambda x: mg.amax(x, 0), lambda x: mg.amin(x, (0, 2), keepdim=True),
    lambda x: x.amax(dim=-1), mg.max, mg.min, lambda x: x.max(),
    lambda x: mg.max(x, 1).values, lambda x: mg.min(x, -1, keepdim=True).values, lambda x: x.max(dim=0)[0],
])
def test_extreme_gradients_match_finite_differences_without_ties(on, rng, fn):
    x = rng.permutation(60).reshape(3, 4, 5) / 7.0  # distinct values 1/7 apart: no ties in reach
    assert mg.gradcheck(fn, [param(on, x)], **TIGHT)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat_and_stack_gradients_are_each_inputs_slice(on, rng, dim):
    a, b, c = rng.normal(size=(2, 3)), rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    if dim == 0:
        b = rng.normal(size=(4, 3))  # cat: sizes may differ along dim
    elif dim in (1, -1):
        b = rng.normal(size=(2, 1))
    assert mg.gradcheck(lambda *xs: mg.cat(xs, dim=dim), [param(on, a), param(on, b), param(on, c)], **TIGHT)
    assert mg.gradcheck(lambda *xs: mg.stack(list(xs), dim), [param(on, a), param(on, a + 1), param(on, c)],
                        **TIGHT)


def test_cat_and_stack_values_are_numpys(on, rng):
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(4, 3))
    np.testing.assert_array_equal(host(mg.cat([param(on, a), param(on, b)]).data), np.concatenate([a, b]))
    np.testing.assert_array_equal(host(mg.stack((param(on, a), param(on, a * 2)), dim=2).data),
                                  np.stack([a, a * 2], axis=2))
    s = mg.stack([param(on, 1.5), param(on, -2.0)])  # 0-d tensors stack into a vector
    assert s.shape == (2,)
    s.backward(on(np.array([3.0, 4.0])))


# --- kinks and ties: PyTorch's values ----------------------------------------------------------
def test_abs_clamp_and_sqrt_at_their_kinks(on):
    np.testing.assert_array_equal(grad_of(mg.abs, on, [-2.0, 0.0, -0.0, 3.0]), [-1.0, 0.0, 0.0, 1.0])
    # clamp: the bounds themselves pass the gradient (PyTorch's inclusive rule), NaN does not
    np.testing.assert_array_equal(grad_of(lambda x: mg.clamp(x, -1.0, 1.0), on, [-2.0, -1.0, 0.0, 1.0, 2.0, np.nan]),
                                  [0.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(grad_of(lambda x: mg.clamp(x, 1.0, -1.0), on, [-2.0, 0.0, 2.0]), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(host(mg.clamp(param(on, [-2.0, 0.0, 2.0]), 1.0, -1.0).data), [-1.0, -1.0, -1.0])
    np.testing.assert_array_equal(host(mg.clamp(param(on, [np.nan]), 0.0).data), [np.nan])
    with np.errstate(divide="ignore"):  # the division by 0 is the point
        assert grad_of(mg.sqrt, on, [0.0])[0] == np.inf  # d√x/dx at 0, as PyTorch gives


def test_abs_gives_nan_a_zero_gradient_as_pytorchs_sign_does(on):
    # 0, not NaN: where the NaN output is dropped downstream (dY = 0), no NaN may leak back
    np.testing.assert_array_equal(grad_of(mg.abs, on, [np.nan, -2.0]), [0.0, -1.0])
    np.testing.assert_array_equal(grad_of(lambda x: mg.clamp(mg.abs(x), max=1.0), on, [np.nan, -0.5]), [0.0, -1.0])


def test_abs_at_nan_against_torch():
    torch = pytest.importorskip("torch")
    x = np.array([np.nan, -2.0, 0.0, 3.0])
    tx = torch.tensor(x, requires_grad=True)
    torch.clamp(torch.abs(tx), max=1.0).sum().backward()
    np.testing.assert_array_equal(grad_of(lambda t: mg.clamp(mg.abs(t), max=1.0), lambda a: a, x), tx.grad.numpy())


def test_clamp_takes_a_0d_tensor_bound_that_wants_no_gradient(on):
    bound = mg.Tensor(on(np.array(0.5)))
    np.testing.assert_array_equal(host(mg.clamp(param(on, [0.0, 1.0]), min=bound).data), [0.5, 1.0])
    learned = param(on, 0.5)
    with mg.no_grad():  # no graph: nothing is lost by reading it as a number
        np.testing.assert_array_equal(host(mg.clamp(param(on, [0.0, 1.0]), max=learned).data), [0.0, 0.5])


def test_a_bound_beyond_float32s_range_acts_as_the_infinity_it_rounds_to_without_warnings(on):
    x = np.array([1.0, -np.inf, np.inf, 3e38], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy warned of an overflow at every use of the bound
        for low, high, expected in [(-1e39, 1e40, x), (1e40, None, np.full(4, np.inf, np.float32))]:
            t = mg.Tensor(on(x), requires_grad=True)
            y = mg.clamp(t, low, high)
            y.backward(on(np.ones(4, np.float32)))
            np.testing.assert_array_equal(host(y.data), expected)
            assert y.dtype == np.float32
            # The gradient passes where low <= x <= high, with the bounds as float32 holds them.
            inside = (x >= np.float32(np.inf if low == 1e40 else -np.inf)) & (x <= np.inf)
            np.testing.assert_array_equal(host(t.grad), inside.astype(np.float32))


def test_maximum_and_minimum_split_ties_and_pass_nan_to_both(on):
    a, b = [1.0, 2.0, 3.0, np.nan], [2.0, 2.0, 1.0, 0.0]
    ta, tb = param(on, a), param(on, b)
    mg.maximum(ta, tb).backward(on(np.ones(4)))
    np.testing.assert_array_equal(host(ta.grad), [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(host(tb.grad), [1.0, 0.5, 0.0, 1.0])
    ta, tb = param(on, a), param(on, b)
    mg.minimum(ta, tb).backward(on(np.ones(4)))
    np.testing.assert_array_equal(host(ta.grad), [1.0, 0.5, 0.0, 1.0])
    np.testing.assert_array_equal(host(tb.grad), [0.0, 0.5, 1.0, 1.0])
    # A broadcast operand collects its shares: b ties with two of a's rows.
    ta, tb = param(on, [[1.0], [5.0], [1.0]]), param(on, [1.0])
    mg.maximum(ta, tb).sum().backward()
    np.testing.assert_array_equal(host(tb.grad), [0.5 + 0.0 + 0.5])


def test_amax_shares_ties_equally_and_max_along_an_axis_picks_the_first(on):
    x = [[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]
    np.testing.assert_allclose(grad_of(mg.amax, on, x), [[0, 0.5, 0.5], [0, 0, 0]])
    np.testing.assert_allclose(grad_of(lambda t: mg.amax(t, dim=1), on, x),
                               [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(grad_of(lambda t: mg.amin(t, dim=0), on, x), [[1, 0, 0], [0, 1, 1]])
    result = mg.max(param(on, x), dim=1)
    np.testing.assert_array_equal(host(result.indices), [1, 0])  # the first among ties
    assert host(result.indices).dtype == np.int64 and result.values.shape == (2,)
    np.testing.assert_array_equal(grad_of(lambda t: mg.max(t, 1).values, on, x), [[0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(grad_of(lambda t: t.min(dim=0, keepdim=True).values, on, x),
                                  [[1, 0, 0], [0, 1, 1]])
    values, indices = mg.min(param(on, x), 0, keepdim=True)  # unpacks like torch's named pair
    assert values.shape == (1, 3) and host(indices).tolist() == [[0, 1, 1]]
    # NaN is the extreme wherever it appears, as in NumPy and PyTorch; its gradient goes to it
    np.testing.assert_array_equal(grad_of(mg.max, on, [1.0, np.nan, 3.0]), [0.0, 1.0, 0.0])
    assert mg.max(param(on, [1.0, 4.0]), param(on, [3.0, 2.0])).numpy().tolist() == [3.0, 4.0]  # max(a, b)


@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_argmax_and_argmin_are_the_indices_of_max_and_min(on, rng, op):
    x = rng.normal(size=(3, 4, 5))
    x[1, 2, :] = x[1, 2, 0]  # ties: the first index, as NumPy and torch
    t = mg.Tensor(on(x))
    along, numpy_pick = ("max", np.argmax) if op == "argmax" else ("min", np.argmin)
    for dim in (0, 1, -1):
        for keepdim in (False, True):
            index = getattr(mg, op)(t, dim, keepdim=keepdim)
            assert host(index).dtype == np.int64
            np.testing.assert_array_equal(host(index), numpy_pick(x, axis=dim, keepdims=keepdim))
            np.testing.assert_array_equal(host(index), host(getattr(mg, along)(t, dim, keepdim).indices))
    flat = getattr(t, op)()
    assert flat.shape == () and int(host(flat)) == numpy_pick(x.reshape(-1))
    assert getattr(t, op)(keepdim=True).shape == (1, 1, 1)
    assert int(host(getattr(mg, op)(mg.Tensor(on(np.array([1.0, np.nan, -1.0])))))) == 1  # NaN is both extremes
    assert int(host(getattr(mg, op)(mg.Tensor(on(np.array(2.0))), dim=0))) == 0  # a 0-d x: index 0, as torch


@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_argmax_and_argmin_give_arrays_even_when_0_d(on, op):
    # NumPy's argmax gives a scalar (numpy.int64) where the result is 0-d; the docstring and
    # max(x, dim).indices promise an array of x's library on both devices.
    array_type = type(on(np.zeros(1)))
    vector = mg.Tensor(on(np.array([1.0, 3.0, 2.0])))
    for index in (getattr(vector, op)(), getattr(vector, op)(0), getattr(mg.Tensor(on(np.ones((2, 2)))), op)()):
        assert type(index) is array_type and index.shape == () and index.dtype == np.int64
    assert type(mg.max(vector, 0).indices) is array_type


def test_argmax_and_argmin_match_torch(rng):
    torch = pytest.importorskip("torch")
    x = np.round(rng.normal(size=(4, 6)), 0)  # many ties
    x[2, 3] = np.nan
    for op in ("argmax", "argmin"):
        for kwargs in ({}, {"keepdim": True}, {"dim": 0}, {"dim": 1, "keepdim": True}, {"dim": -2}):
            ours = host(getattr(mg, op)(mg.Tensor(x), **kwargs))
            theirs = getattr(torch, op)(torch.from_numpy(x), **kwargs).numpy()
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{op} {kwargs}")


def test_editing_the_returned_indices_leaves_the_gradient_where_the_extremes_were(on):
    for keepdim in (False, True):
        x = param(on, [[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])
        values, indices = mg.max(x, 1, keepdim=keepdim)
        indices[...] = 0  # the caller's array to edit: the graph must not see it
        values.sum().backward()
        np.testing.assert_array_equal(host(x.grad), [[0, 1, 0], [0, 0, 1]])


def test_casts_round_trip_and_carry_the_gradient_back_in_the_source_dtype(on, rng):
    x32 = mg.Tensor(on(rng.normal(size=(3, 2)).astype(np.float32)), requires_grad=True)
    x64 = x32.double()
    assert x64.dtype == np.float64 and x64.grad_fn.name == "cast"
    np.testing.assert_array_equal(host(x64.data), host(x32.data).astype(np.float64))
    assert x64.double() is x64 and x32.float() is x32 and x32.to(np.float32) is x32  # no-ops return self
    (x64 * mg.Tensor(on(np.full((3, 2), 0.1)))).sum().backward()
    assert x32.grad.dtype == np.float32
    np.testing.assert_allclose(host(x32.grad), np.float32(0.1), rtol=1e-7)
    y = mg.Tensor(on(np.array([1.0 + 1e-12])), requires_grad=True)
    assert host(y.to(np.float32).data).tolist() == [1.0]  # rounded, as astype rounds
    assert mg.cast(y, "float32").dtype == np.float32


def test_to_takes_a_device_a_dtype_or_both(device, rng):
    x = mg.Tensor(rng.normal(size=3), device="cpu", requires_grad=True)
    moved = x.to(device, np.float32)
    assert moved.device == device and moved.dtype == np.float32
    assert x.to(dtype=np.float64, device="cpu") is x
    moved.sum().backward()
    assert x.grad.dtype == np.float64 and host(x.grad).tolist() == [1.0, 1.0, 1.0]


def test_against_torch_at_ties_and_kinks(rng):
    torch = pytest.importorskip("torch")
    x = np.array([[1.0, 3.0, 3.0, -0.5], [2.0, 2.0, 0.0, 2.0]])
    y = np.array([[3.0, 3.0, 1.0, -0.5], [0.0, 2.0, 0.0, 5.0]])
    cases = [
        (lambda t: mg.amax(t, 1), lambda t: torch.amax(t, 1)), (lambda t: mg.amin(t), lambda t: torch.amin(t)),
        (mg.max, torch.max), (lambda t: mg.max(t, 1).values, lambda t: torch.max(t, 1).values),
        (lambda t: mg.min(t, 0).values, lambda t: torch.min(t, 0).values),
        (mg.abs, torch.abs), (lambda t: mg.clamp(t, 0.0, 2.0), lambda t: torch.clamp(t, 0.0, 2.0)),
        (lambda t: mg.clamp(t, max=-0.5), lambda t: torch.clamp(t, max=-0.5)),
        (lambda t: mg.maximum(t, mg.Tensor(y)), lambda t: torch.maximum(t, torch.from_numpy(y))),
        (lambda t: mg.minimum(mg.Tensor(y), t), lambda t: torch.minimum(torch.from_numpy(y), t)),
        (lambda t: mg.cat([t, t * 2], 1), lambda t: torch.cat([t, t * 2], 1)),
        (lambda t: mg.stack([t, t * 2], 1), lambda t: torch.stack([t, t * 2], 1)),
    ]
    for ours, theirs in cases:
        upstream = rng.normal(size=np.shape(ours(mg.Tensor(x)).data))
        mine = grad_of(ours, lambda a: a, x, upstream)
        tx = torch.tensor(x, requires_grad=True)
        out = theirs(tx)
        out.backward(torch.from_numpy(np.asarray(upstream, dtype=np.float64)))
        np.testing.assert_allclose(mine, tx.grad.numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(ours(mg.Tensor(x)).numpy(), out.detach().numpy(), rtol=1e-12)


# --- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("call,error,message", [
    (lambda x: mg.clamp(x), ValueError, r"clamp: got min=None and max=None; expected at least one bound"),
    (lambda x: mg.clamp(x, min="0"), ValueError, r"clamp: got min='0'; expected a number"),
    (lambda x: mg.clamp(x, max=x.sum()), TypeError, r"clamp: got max= a Tensor that requires grad; expected a "
     r"number, as clamp passes no gradient to its bounds"),
    (lambda x: mg.cat(x), TypeError, r"cat: got Tensor; expected a list or tuple of Tensors"),
    (lambda x: mg.cat([]), ValueError, r"cat: got an empty sequence; expected at least one Tensor"),
    (lambda x: mg.cat([x, x.T]), ValueError,
     r"cat: tensors\[1\] has shape \(3, 2\) but tensors\[0\] has \(2, 3\); expected shapes equal in "
     r"every dimension but dim=0"),
    (lambda x: mg.cat([x, x], dim=2), ValueError, r"cat: got dim=2; expected integers in \[-2, 2\)"),
    (lambda x: mg.cat([x.sum(), x.sum()]), ValueError, r"cat: got 0-d tensors"),
    (lambda x: mg.cat([x, x.float()]), TypeError, r"cat: operands have different dtypes"),
    (lambda x: mg.stack([x, x[:1]]), ValueError,
     r"stack: tensors\[1\] has shape \(1, 3\) but tensors\[0\] has \(2, 3\); expected equal shapes"),
    (lambda x: mg.stack([x], dim=-4), ValueError, r"stack: got dim=-4; expected integers in \[-3, 3\)"),
    (lambda x: mg.max(x, (0, 1)), TypeError, r"max: got dim=\(0, 1\); expected one integer axis"),
    (lambda x: mg.amax(x[:0], 0), ValueError, r"amax: cannot reduce over an axis of size 0"),
    (lambda x: mg.min(x[:, :0], 1), IndexError, r"min: the axis 1 has size 0"),
    (lambda x: mg.max(x[:0]), ValueError, r"max: got an empty tensor \(shape \(0, 3\)\)"),
    (lambda x: x[:0].min(), ValueError, r"min: got an empty tensor"),
    (lambda x: mg.argmax(x, (0, 1)), TypeError, r"argmax: got dim=\(0, 1\); expected one integer axis or None"),
    (lambda x: mg.argmin(x, 2), ValueError, r"argmin: got dim=2; expected integers in \[-2, 2\)"),
    (lambda x: x[:0].argmax(), ValueError, r"argmax: got an empty tensor \(shape \(0, 3\)\) and dim=None"),
    (lambda x: x[:, :0].argmin(1), IndexError, r"argmin: the axis 1 has size 0"),
    (lambda x: x.argmax(keepdim="yes"), TypeError, r"argmax: got keepdim='yes'"),
    (lambda x: x.to("float16"), ValueError, r"device must be one of 'cpu', 'gpu', 'auto'; got 'float16'"),
    (lambda x: x.to(np.float16), TypeError, r"cast: got dtype=<class 'numpy.float16'>; expected numpy.float32"),
    (lambda x: mg.cast(x, None), TypeError, r"cast: got dtype=None"),
    (lambda x: x.to("cpu", device="cpu"), TypeError, r"Tensor.to: got the device twice"),
])
def test_bad_arguments_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call(mg.Tensor(np.ones((2, 3)), requires_grad=True))
