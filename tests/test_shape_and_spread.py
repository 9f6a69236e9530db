"""PyTorch's shape vocabulary (size, numel, dim, view, permute, flatten, squeeze, unsqueeze, t,
clone) and the spread of a tensor (var, std): values against NumPy, gradients against finite
differences in float64 on both devices, edge cases against PyTorch's rules."""

from __future__ import annotations

import numpy as np
import pytest

import minigraph as mg
from minigraph.backend import to_device

from conftest import TIGHT


def host(array):
    return to_device(array, "cpu")


def test_size_numel_and_dim():
    t = mg.Tensor(np.zeros((2, 3, 4)))
    assert t.size() == (2, 3, 4) and t.size(1) == 3 and t.size(-1) == 4
    assert t.numel() == 24 and t.dim() == 3 and mg.Tensor(np.array(1.0)).numel() == 1
    with pytest.raises(IndexError, match=r"Tensor.size: dim=3 is out of range for an input of shape \(2, 3, 4\)"):
        t.size(3)
    with pytest.raises(TypeError, match=r"Tensor.size: got dim=1.0; expected an integer dimension"):
        t.size(1.0)


@pytest.mark.parametrize("make,expected_shape,numpy_form", [
    (lambda t: t.view(6, 4), (6, 4), lambda a: a.reshape(6, 4)),
    (lambda t: t.view(-1), (24,), lambda a: a.reshape(-1)),
    (lambda t: t.permute(2, 0, 1), (4, 2, 3), lambda a: a.transpose(2, 0, 1)),
    (lambda t: mg.permute(t, (1, 2, 0)), (3, 4, 2), lambda a: a.transpose(1, 2, 0)),
    (lambda t: t.flatten(), (24,), lambda a: a.reshape(-1)),
    (lambda t: mg.flatten(t, 1), (2, 12), lambda a: a.reshape(2, 12)),
    (lambda t: t.flatten(0, 1), (6, 4), lambda a: a.reshape(6, 4)),
    (lambda t: t.unsqueeze(0), (1, 2, 3, 4), lambda a: a[None]),
    (lambda t: t.unsqueeze(-1), (2, 3, 4, 1), lambda a: a[..., None]),
    (lambda t: mg.unsqueeze(t, 2), (2, 3, 1, 4), lambda a: a[:, :, None]),
    (lambda t: t.unsqueeze(1).squeeze(), (2, 3, 4), lambda a: a),
    (lambda t: t.unsqueeze(1).squeeze(1), (2, 3, 4), lambda a: a),
    (lambda t: t.unsqueeze(1).squeeze(0), (2, 1, 3, 4), lambda a: a[:, None]),  # size 2: left alone
    (lambda t: t[:, :1, None].squeeze((1, 2)), (2, 4), lambda a: a[:, 0]),
    (lambda t: t[0].t(), (4, 3), lambda a: a[0].T),
    (lambda t: t[0].transpose(1, 0), (4, 3), lambda a: a[0].T),  # a swap to both NumPy and PyTorch
    (lambda t: t.transpose(2, 0, 1), (4, 2, 3), lambda a: a.transpose(2, 0, 1)),
    (lambda t: t[0, 0].t(), (4,), lambda a: a[0, 0]),
    (lambda t: t.clone(), (2, 3, 4), lambda a: a),
])
def test_shape_forms_move_values_and_gradients_as_numpy_does(on, rng, make, expected_shape, numpy_form):
    x = rng.normal(size=(2, 3, 4))
    t = mg.Tensor(on(x), requires_grad=True)
    y = make(t)
    assert y.shape == expected_shape
    np.testing.assert_array_equal(host(y.data), numpy_form(x))
    assert mg.gradcheck(make, [t], **TIGHT)


def test_a_0d_tensor_flattens_to_one_element_and_squeezes_to_itself(on):
    t = mg.Tensor(on(np.array(3.0)), requires_grad=True)
    assert t.flatten().shape == (1,) and t.squeeze().shape == () and t.squeeze(0).shape == ()
    assert t.unsqueeze(0).shape == (1,) and t.t().shape == ()


def test_clone_owns_its_array_and_passes_the_gradient(on):
    t = mg.Tensor(on(np.arange(3.0)), requires_grad=True)
    copy = t.clone()
    copy.data[0] = 99.0
    assert float(host(t.data)[0]) == 0.0
    (copy * 2.0).sum().backward()
    np.testing.assert_array_equal(host(t.grad), [2.0, 2.0, 2.0])


@pytest.mark.parametrize("call,error,message", [
    (lambda t: t.permute(1, 0), ValueError, r"permute: got dims=\(1, 0\) for a tensor of shape \(2, 3, 4\); "
     r"expected a permutation of \(0, 1, 2\)"),
    (lambda t: t.permute(0, 0, 1), ValueError, r"permute: got dims=\(0, 0, 1\), which names an axis twice"),
    (lambda t: t.unsqueeze(4), IndexError, r"unsqueeze: dim=4 is out of range for an input of shape \(2, 3, 4\); "
     r"expected one in \[-4, 3\]"),
    (lambda t: t.squeeze(3), IndexError, r"squeeze: dim=3 is out of range"),
    (lambda t: t.squeeze(True), TypeError, r"squeeze: got dim=True; expected an integer dimension"),
    (lambda t: t.flatten(2, 1), ValueError, r"flatten: start_dim=2 comes after end_dim=1"),
    (lambda t: t[0].transpose(0, 1), ValueError, r"transpose: got x.transpose\(0, 1\) on a 2-D tensor, which "
     r"NumPy reads as no change and PyTorch as a swap; expected x.T or x.t\(\) to swap, or x itself"),
    (lambda t: t.transpose(1, 2), ValueError, r"transpose: got x.transpose\(1, 2\) on a tensor of shape \(2, 3, 4\); "
     r"expected a permutation of all 3 axes \(NumPy's meaning\). To swap two, as PyTorch's transpose does: "
     r"x.permute\(0, 2, 1\)"),
    (lambda t: t.transpose(1, 5), ValueError, r"transpose: got axes=\(1, 5\); expected integers in \[-3, 3\)"),
    (lambda t: t.t(), ValueError, r"t: got a tensor of shape \(2, 3, 4\); expected at most 2 dimensions"),
    (lambda t: t.view(5, -1), ValueError, r"reshape: cannot reshape a tensor of shape \(2, 3, 4\)"),
    (lambda t: t.var(unbiased=True, correction=0), TypeError, r"var: got both unbiased=True and correction=0"),
    (lambda t: t.std(correction=-1), ValueError, r"std: got correction=-1; expected a finite number in \[0.0, inf\)"),
    (lambda t: t.var(dim=3), ValueError, r"var: got dim=3; expected integers in \[-3, 3\)"),
    (lambda t: t.std(keepdim=1.5), TypeError, r"std: got keepdim=1.5; expected True or False"),
])
def test_bad_arguments_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call(mg.Tensor(np.ones((2, 3, 4))))


# --- var and std ------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [None, 0, 1, (0, 2), -1])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("correction", [0, 1, 2.5])
def test_var_and_std_values_and_gradients(on, rng, dim, keepdim, correction):
    x = rng.normal(size=(3, 4, 5)) * 2 + 1
    t = mg.Tensor(on(x), requires_grad=True)
    axis = dim if dim is None or isinstance(dim, int) else tuple(dim)
    n = x.size if dim is None else np.prod([x.shape[a] for a in np.atleast_1d(dim)])
    expected = ((x - x.mean(axis=axis, keepdims=True)) ** 2).sum(axis=axis, keepdims=keepdim) / (n - correction)
    np.testing.assert_allclose(host(mg.var(t, dim, keepdim=keepdim, correction=correction).data), expected,
                               rtol=1e-13)
    np.testing.assert_allclose(host(t.std(dim, keepdim=keepdim, correction=correction).data), np.sqrt(expected),
                               rtol=1e-13)
    assert mg.gradcheck(lambda v: mg.var(v, dim, keepdim=keepdim, correction=correction), [t], **TIGHT)
    assert mg.gradcheck(lambda v: mg.std(v, dim, keepdim=keepdim, correction=correction), [t], **TIGHT)


def test_unbiased_is_correction_one_or_zero(rng):
    x = rng.normal(size=(4, 6))
    t = mg.Tensor(x)
    np.testing.assert_allclose(t.var(1, True).numpy(), x.var(1, ddof=1), rtol=1e-13)
    np.testing.assert_allclose(t.var(1, unbiased=False).numpy(), x.var(1), rtol=1e-13)
    np.testing.assert_allclose(t.std().numpy(), x.std(ddof=1), rtol=1e-13)


def test_var_is_stable_for_a_large_mean_in_float32(on, rng):
    x = (rng.normal(size=(1000, 3)) + 1e4).astype(np.float32)
    t = mg.Tensor(on(x), requires_grad=True)
    got = mg.var(t, 0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(host(got.data), x.astype(np.float64).var(0, ddof=1), rtol=1e-3)
    (got.sum() + t.std()).backward()
    assert t.grad.dtype == np.float32  # float32 stays float32, gradients too


def test_std_of_a_constant_has_gradient_zero_as_pytorchs(on):
    t = mg.Tensor(on(np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 3.0]])), requires_grad=True)
    s = t.std(1)
    np.testing.assert_array_equal(host(s.data), [0.0, 1.0])
    s.sum().backward()
    np.testing.assert_allclose(host(t.grad), [[0, 0, 0], [-0.5, 0, 0.5]], rtol=1e-15)


def test_std_that_is_nan_has_a_nan_gradient_not_the_zero_stds_rule(on):
    # An infinite entry makes the mean infinite and std NaN; dY/((n − c)·NaN) ⊙ (X − μ) is NaN for
    # every entry (PyTorch's too). The zero-std rule (divide by 1) must not claim NaN, which left
    # ±inf gradients where X − μ is infinite.
    t = mg.Tensor(on(np.array([[np.inf, 0.0, 1.0], [1.0, 2.0, 3.0]])), requires_grad=True)
    with np.errstate(invalid="ignore"):
        s = t.std(1)
        assert np.isnan(host(s.data)[0])
        s.sum().backward()
    grad = host(t.grad)
    assert np.isnan(grad[0]).all()
    np.testing.assert_allclose(grad[1], [-0.5, 0.0, 0.5], rtol=1e-15)


def test_against_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(3, 4, 5))
    x[0, 0, :] = 1.5  # a constant slice: std 0
    upstream_shape = {None: (), 1: (3, 5), (0, 2): (4,)}
    for op in ("var", "std"):
        for dim, kwargs in [(None, {}), (1, {"correction": 0}), ((0, 2), {"keepdim": False, "correction": 2}),
                            (1, {"unbiased": False})]:
            mine, theirs = mg.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
            y = getattr(mine, op)(dim, **kwargs)
            their_y = getattr(theirs, op)(dim, **kwargs)
            upstream = rng.normal(size=upstream_shape[dim])
            y.backward(upstream)
            their_y.backward(torch.from_numpy(np.asarray(upstream)))
            np.testing.assert_allclose(y.numpy(), their_y.detach().numpy(), rtol=1e-13, err_msg=f"{op} {dim} {kwargs}")
            np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-11, atol=1e-14)
    t, tt = mg.Tensor(x), torch.from_numpy(x)
    for mine, theirs in [(t.permute(2, 0, 1), tt.permute(2, 0, 1)), (t.flatten(1), tt.flatten(1)),
                         (t[:, :1].squeeze(), tt[:, :1].squeeze()), (t.unsqueeze(-2), tt.unsqueeze(-2)),
                         (t[0].t(), tt[0].t()), (t.squeeze(0), tt.squeeze(0))]:
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


# --- expand, logsumexp and the operators' method spellings -------------------------------------
@pytest.mark.parametrize("x_shape,sizes,out_shape", [((1, 3), (4, 3), (4, 3)), ((1, 3), (4, -1), (4, 3)),
                                                     ((3,), (2, 4, 3), (2, 4, 3)), ((2, 1), ((2, 5),), (2, 5)),
                                                     ((2, 3), (2, 3), (2, 3))])
def test_expand_broadcasts_and_sums_the_gradient_back(on, rng, x_shape, sizes, out_shape):
    x = rng.normal(size=x_shape)
    t = mg.Tensor(on(x), requires_grad=True)
    y = t.expand(*sizes)
    assert y.shape == out_shape
    np.testing.assert_array_equal(host(y.data), np.broadcast_to(x, out_shape))
    weights = mg.Tensor(on(rng.normal(size=out_shape)))  # fixed across gradcheck's calls
    assert mg.gradcheck(lambda v: v.expand(*sizes) * weights, [t], **TIGHT)
    assert t.expand_as(mg.Tensor(on(np.zeros(out_shape)))).shape == out_shape


def test_expand_refuses_sizes_it_cannot_reach():
    t = mg.Tensor(np.ones((1, 3)))
    for sizes in [(3,), (2, 3, 4), (4, -2), (2.0, 3)]:
        with pytest.raises(ValueError, match=r"expand: cannot expand a tensor of shape \(1, 3\) to .*; expected at "
                                             r"least 2 sizes, the last 2 equal to x's or -1"):
            t.expand(*sizes)


@pytest.mark.parametrize("dim,keepdim", [(1, False), ((0, 2), True), (-1, False), ((0, 1, 2), False)])
def test_logsumexp_values_and_gradients(on, rng, dim, keepdim):
    x = rng.normal(size=(3, 4, 5)) * 3
    t = mg.Tensor(on(x), requires_grad=True)
    expected = np.log(np.exp(x).sum(axis=dim, keepdims=keepdim))
    np.testing.assert_allclose(host(mg.logsumexp(t, dim, keepdim).data), expected, rtol=1e-13)
    assert mg.gradcheck(lambda v: v.logsumexp(dim, keepdim), [t], **TIGHT)


def test_logsumexp_is_stable_and_handles_infinite_slices(on):
    x = np.array([[1000.0, 1000.0], [-np.inf, -np.inf], [np.inf, 0.0], [-1e4, -1e4]], dtype=np.float32)
    with np.errstate(divide="ignore"):  # log 0 for the slice of -inf, as NumPy's log warns
        y = host(mg.logsumexp(mg.Tensor(on(x)), 1).data)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [1000 + np.log(2), -np.inf, np.inf, -1e4 + np.log(2)], rtol=1e-6)
    with pytest.raises(TypeError, match=r"logsumexp: got dim=None; expected the axis or axes to reduce"):
        mg.logsumexp(mg.Tensor(x), None)


def test_method_spellings_of_the_operators_are_the_operators(on, rng):
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    ta, tb = mg.Tensor(on(a)), mg.Tensor(on(b))
    for method, expected in [("add", a + b), ("sub", a - b), ("mul", a * b), ("div", a / b)]:
        np.testing.assert_array_equal(host(getattr(ta, method)(tb).data), expected)
    np.testing.assert_allclose(host(ta.mm(tb.T).data), a @ b.T, rtol=1e-13)
    np.testing.assert_allclose(host(ta.matmul(tb.t()).data), a @ b.T, rtol=1e-13)
    np.testing.assert_array_equal(host(ta.neg().data), -a)
    np.testing.assert_array_equal(host(ta.square().data), a ** 2)
    assert ta.tolist() == a.tolist() and mg.Tensor(on(np.array(2.5))).tolist() == 2.5
    assert ta.cpu().device == "cpu" and ta.cpu().tolist() == a.tolist()


def test_expand_logsumexp_and_cpu_against_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(3, 1, 5))
    upstream = rng.normal(size=(2, 3, 4, 5))
    mine, theirs = mg.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    mine.expand(2, 3, 4, -1).backward(upstream)
    theirs.expand(2, 3, 4, -1).backward(torch.from_numpy(upstream))
    np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-13)
    for dim, keepdim in [(2, False), ((0, 2), True)]:
        mine, theirs = mg.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y, their_y = mine.logsumexp(dim, keepdim), theirs.logsumexp(dim, keepdim)
        np.testing.assert_allclose(y.numpy(), their_y.detach().numpy(), rtol=1e-13)
        y.sum().backward()
        their_y.sum().backward()
        np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-12)
