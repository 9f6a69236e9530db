"""Layer norm: values against NumPy written out, gradients against finite differences and PyTorch,
the layer's parameters and state_dict, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

import minigraph as mg
import minigraph.nn.functional as F
from minigraph import nn
from minigraph.backend import to_device

from conftest import TIGHT

# (x's shape, normalized_shape): 2-D and 3-D x, over the last one or two dims.
CASES = [((6, 5), (5,)), ((4, 5), (4, 5)), ((3, 4, 5), (5,)), ((3, 4, 5), (4, 5)), ((2, 1, 3), (1, 3))]
AFFINE = ["both", "weight", "bias", "none"]


@pytest.fixture(autouse=True)
def every_test_on_both_paths(fused_path):
    """Every test here runs on the fused kernel and on the formula (see conftest.fused_path);
    tests/test_kernels.py holds the two paths to each other."""


def host(a):
    return to_device(a.data if isinstance(a, mg.Tensor) else a, "cpu")


def by_hand(x, shape, weight=None, bias=None, eps=1e-5):
    """torch.nn.functional.layer_norm's definition in NumPy: mean and biased variance over the last dims."""
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    centred = x - x.mean(axis=axes, keepdims=True)
    y = centred / np.sqrt((centred ** 2).mean(axis=axes, keepdims=True) + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def operands(rng, x_shape, shape, affine):
    """Host float64 x, weight, bias (None where ``affine`` leaves them out); x far from standard."""
    x = rng.normal(size=x_shape) * rng.uniform(0.5, 3.0, size=x_shape[-1]) + rng.normal(size=x_shape[-1])
    weight = rng.normal(size=shape) if affine in ("both", "weight") else None
    bias = rng.normal(size=shape) if affine in ("both", "bias") else None
    return x, weight, bias


def leaf(on, array, requires_grad=True):
    return None if array is None else mg.Tensor(on(array), requires_grad=requires_grad)


@pytest.mark.parametrize("x_shape,shape", CASES)
@pytest.mark.parametrize("affine", AFFINE)
def test_forward_matches_the_definition_written_out_in_numpy(on, rng, x_shape, shape, affine):
    x, weight, bias = operands(rng, x_shape, shape, affine)
    out = mg.layer_norm(mg.Tensor(on(x)), shape, leaf(on, weight, False), leaf(on, bias, False), eps=1e-3)
    assert out.shape == x_shape
    np.testing.assert_allclose(host(out), by_hand(x, shape, weight, bias, eps=1e-3), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_shape,shape", CASES)
@pytest.mark.parametrize("affine", AFFINE)
def test_gradients_match_finite_differences(on, rng, x_shape, shape, affine):
    x, weight, bias = operands(rng, x_shape, shape, affine)
    given = [t for t in (leaf(on, x), leaf(on, weight), leaf(on, bias)) if t is not None]

    def fn(x, *rest):
        parts = iter(rest)
        w = next(parts) if weight is not None else None
        b = next(parts) if bias is not None else None
        return mg.layer_norm(x, shape, w, b, eps=1e-3)

    assert mg.gradcheck(fn, given, **TIGHT)


def test_gradients_through_a_non_contiguous_x_match_finite_differences(on, rng):
    # x.T is a strided view: the op reshapes a copy of it, and dX goes back through the transpose.
    x, weight, bias = leaf(on, rng.normal(size=(4, 6))), leaf(on, rng.normal(size=4)), leaf(on, rng.normal(size=4))
    assert mg.gradcheck(lambda x, w, b: mg.layer_norm(x.T, 4, w, b), [x, weight, bias], **TIGHT)


def all_gradients(on, x, weight, bias, upstream, wanted):
    """The .grad of x, weight, bias after one backward, with requires_grad as in ``wanted``."""
    tensors = [leaf(on, a, w) for a, w in zip((x, weight, bias), wanted)]
    mg.layer_norm(tensors[0], weight.shape, tensors[1], tensors[2]).backward(on(upstream))
    return [None if t.grad is None else host(t.grad) for t in tensors]


@pytest.mark.parametrize("wanted", [(True, False, False), (False, True, False), (False, False, True),
                                    (False, True, True), (True, False, True)])
def test_only_the_inputs_that_require_grad_get_one_and_it_is_the_full_gradient(on, rng, wanted):
    x, weight, bias = rng.normal(size=(3, 4, 5)), rng.normal(size=5), rng.normal(size=5)
    upstream = rng.normal(size=x.shape)
    every = all_gradients(on, x, weight, bias, upstream, (True, True, True))
    some = all_gradients(on, x, weight, bias, upstream, wanted)
    for name, full, got, want in zip(("x", "weight", "bias"), every, some, wanted):
        if want:
            np.testing.assert_allclose(got, full, rtol=1e-14, atol=1e-15, err_msg=name)
        else:
            assert got is None, name


def test_the_gradients_of_sums_of_outputs_are_those_of_closed_forms(on, rng):
    """Checks that need no finite differences, for dY = 1: without a weight dX = 0 (each row of X̂
    sums to 0, whatever X); with one, dβ counts the rows and dγ sums X̂ over them."""
    x, weight = rng.normal(size=(3, 4, 5)) * 4 + 2, rng.normal(size=(4, 5))
    tx = leaf(on, x)
    mg.layer_norm(tx, (4, 5)).backward(on(np.ones(x.shape)))
    np.testing.assert_allclose(host(tx.grad), 0.0, atol=1e-12)
    tw, tb = leaf(on, weight), leaf(on, np.zeros((4, 5)))
    mg.layer_norm(leaf(on, x), (4, 5), tw, tb).backward(on(np.ones(x.shape)))
    np.testing.assert_allclose(host(tb.grad), np.full((4, 5), 3.0), rtol=1e-15)
    np.testing.assert_allclose(host(tw.grad), by_hand(x, (4, 5)).sum(axis=0), rtol=1e-12, atol=1e-14)


def test_variance_is_stable_for_a_large_mean_in_float32(on, rng):
    """E[x²] − E[x]² loses every digit here; the two-pass variance does not."""
    x = (100.0 + 0.01 * rng.normal(size=(3, 512))).astype(np.float32)
    out = host(mg.layer_norm(mg.Tensor(on(x)), (512,), eps=0.0))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.std(axis=1), 1.0, rtol=1e-2)
    np.testing.assert_allclose(out, by_hand(x.astype(np.float64), (512,), eps=0.0), atol=1e-3)
    naive_var = (x * x).mean(1) - x.mean(1) ** 2
    assert np.all(np.abs(naive_var / x.astype(np.float64).var(1) - 1) > 0.1)  # the trap is real


@pytest.mark.parametrize("x_shape", [(0, 3), (3, 0)])
def test_empty_inputs_give_empty_outputs_and_gradients_without_warnings(on, x_shape):
    shape = x_shape[1:]
    x, weight = leaf(on, np.zeros(x_shape)), leaf(on, np.ones(shape))
    with np.errstate(all="raise"):
        out = mg.layer_norm(x, shape, weight, weight)
        out.backward(on(np.ones(x_shape)))
    assert out.shape == x_shape and x.grad.shape == x_shape
    np.testing.assert_array_equal(host(weight.grad), np.zeros(shape))  # two empty sums


def test_raw_arrays_join_the_device_of_the_tensor_operand(device, on, rng):
    x, weight = rng.normal(size=(4, 3)), rng.normal(size=3)
    out = mg.layer_norm(x, (3,), mg.Tensor(on(weight)))  # raw x goes to weight's device
    assert out.device == device
    np.testing.assert_allclose(host(mg.layer_norm(mg.Tensor(on(x)), 3, weight)), by_hand(x, (3,), weight),
                               rtol=1e-12)


def test_the_layer_and_the_functional_form_are_the_op(device, rng):
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    layer = nn.LayerNorm((3, 4))
    assert isinstance(layer.weight, nn.Parameter) and layer.weight.device == device
    assert layer.weight.dtype == np.float32 and layer.bias.shape == (3, 4)
    np.testing.assert_array_equal(host(layer.weight), np.ones((3, 4)))
    np.testing.assert_array_equal(host(layer.bias), np.zeros((3, 4)))
    with mg.no_grad():
        layer.weight.data[...] = layer.weight.data * 2.0  # a non-trivial affine part
    expected = by_hand(x.astype(np.float64), (3, 4), 2.0 * np.ones((3, 4)), np.zeros((3, 4)))
    np.testing.assert_allclose(host(layer(mg.Tensor(x))), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(host(layer(mg.Tensor(x))),
                                  host(F.layer_norm(mg.Tensor(x), (3, 4), layer.weight, layer.bias)))
    plain = nn.LayerNorm(4, eps=1e-3, elementwise_affine=False, dtype=np.float64)
    assert plain.weight is None and plain.bias is None and list(plain.parameters()) == []
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(host(plain(x64)), by_hand(x64, (4,), eps=1e-3), rtol=1e-12)
    no_bias = nn.LayerNorm([4], bias=False)
    assert no_bias.bias is None and [name for name, _ in no_bias.named_parameters()] == ["weight"]
    assert repr(no_bias) == "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=False)"


def test_state_dict_round_trips_through_a_file(tmp_path, device, rng):
    source = nn.LayerNorm((3, 4), dtype=np.float64)
    for p in source.parameters():
        p.data[...] = to_device(rng.normal(size=(3, 4)), device)
    assert list(source.state_dict()) == ["weight", "bias"]
    assert list(nn.LayerNorm(4, bias=False).state_dict()) == ["weight"]
    assert nn.LayerNorm(4, elementwise_affine=False).state_dict() == {}
    nn.save(source.state_dict(), tmp_path / "ln.npz")
    fresh = nn.LayerNorm((3, 4), dtype=np.float64)
    result = fresh.load_state_dict(nn.load(tmp_path / "ln.npz"))
    assert result.missing_keys == [] and result.unexpected_keys == []
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value, err_msg=key)
    x = mg.Tensor(rng.normal(size=(2, 3, 4)))
    np.testing.assert_array_equal(host(fresh(x)), host(source(x)))


def test_against_torch_values_and_every_gradient(rng):
    torch = pytest.importorskip("torch")
    for x_shape, shape in CASES:
        for affine in AFFINE:
            x, weight, bias = operands(rng, x_shape, shape, affine)
            upstream = rng.normal(size=x_shape)
            ours = [mg.Tensor(a, requires_grad=True) if a is not None else None for a in (x, weight, bias)]
            theirs = [torch.tensor(a, requires_grad=True) if a is not None else None for a in (x, weight, bias)]
            y = mg.layer_norm(ours[0], shape, ours[1], ours[2], eps=1e-4)
            their_y = torch.nn.functional.layer_norm(theirs[0], shape, theirs[1], theirs[2], eps=1e-4)
            y.backward(upstream)
            their_y.backward(torch.from_numpy(upstream))
            np.testing.assert_allclose(y.numpy(), their_y.detach().numpy(), rtol=1e-12, atol=1e-13)
            for name, mine, their in zip(("x", "weight", "bias"), ours, theirs):
                if mine is not None:
                    np.testing.assert_allclose(mine.grad, their.grad.numpy(), rtol=1e-10, atol=1e-12,
                                               err_msg=f"{name} {x_shape} {shape} {affine}")


def test_the_layer_matches_torchs_layer(rng):
    torch = pytest.importorskip("torch")
    for args, kwargs in [(((3, 4),), {}), ((4,), {"bias": False}), ((4,), {"elementwise_affine": False})]:
        ours, theirs = nn.LayerNorm(*args, dtype=np.float64, **kwargs), torch.nn.LayerNorm(*args, dtype=torch.float64,
                                                                                            **kwargs)
        # torch 2.11 leaves bias out of the repr; later versions print it, as minigraph does.
        mine = repr(ours) if "bias=" in repr(theirs) else repr(ours).replace(f", bias={ours.bias is not None}", "")
        assert mine == repr(theirs)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        ours.load_state_dict({k: rng.normal(size=v.shape) for k, v in ours.state_dict().items()})
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
        x = rng.normal(size=(2, 3, 4))
        np.testing.assert_allclose(ours(x).numpy(), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("call,error,message", [
    (lambda x: mg.layer_norm(x, (4,)), ValueError,
     r"layer_norm: x has shape \(2, 3\) but normalized_shape is \(4,\); expected x's last 1 dim\(s\) to be \(4,\)"),
    (lambda x: mg.layer_norm(x, (2, 3, 1)), ValueError, r"layer_norm: x has shape \(2, 3\) but normalized_shape"),
    (lambda x: mg.layer_norm(x, ()), ValueError, r"layer_norm: got normalized_shape=\(\); expected at least one dim"),
    (lambda x: mg.layer_norm(x, (3.0,)), ValueError, r"layer_norm: got normalized_shape=3.0; expected an integer"),
    (lambda x: mg.layer_norm(x, None), ValueError, r"layer_norm: got normalized_shape=None"),
    (lambda x: mg.layer_norm(x, 3, weight=np.ones(2)), ValueError,
     r"layer_norm: weight has shape \(2,\); expected normalized_shape \(3,\)"),
    (lambda x: mg.layer_norm(x, 3, bias=np.ones((1, 3))), ValueError,
     r"layer_norm: bias has shape \(1, 3\); expected normalized_shape \(3,\)"),
    (lambda x: mg.layer_norm(x, 3, weight=np.ones(3, dtype=np.float32)), TypeError,
     r"layer_norm: operands have different dtypes \(float64, float32\); expected one dtype"),
    (lambda x: mg.layer_norm(x, 3, eps=-1e-5), ValueError, r"layer_norm: got eps=-1e-05; expected a finite number"),
    (lambda x: mg.layer_norm([[1.0, 2.0, 3.0]], 3), TypeError, r"layer_norm: x must be a Tensor or an array; got list"),
    (lambda x: mg.layer_norm(np.ones((2, 3), dtype=complex), 3), TypeError, r"got an array of dtype complex128; "
     r"expected float32 or float64"),
    (lambda x: F.layer_norm(x, 2), ValueError, r"layer_norm: x has shape \(2, 3\) but normalized_shape is \(2,\)"),
    (lambda x: nn.LayerNorm(0.5), ValueError, r"LayerNorm: got normalized_shape=0.5; expected an integer >= 0"),
    (lambda x: nn.LayerNorm(3, elementwise_affine="no"), TypeError, r"LayerNorm: got elementwise_affine='no'"),
    (lambda x: nn.LayerNorm(3, dtype=np.float16), TypeError, r"LayerNorm: got dtype=.*expected a float dtype"),
    (lambda x: nn.LayerNorm(4)(x), ValueError, r"layer_norm: x has shape \(2, 3\) but normalized_shape is \(4,\)"),
])
def test_bad_arguments_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call(mg.Tensor(np.ones((2, 3))))


def test_operands_on_different_devices_are_refused(gpu):
    x = mg.Tensor(np.ones((2, 3)), device="cpu")
    with pytest.raises(TypeError, match=r"layer_norm: operands are on different devices \('cpu', 'gpu'\)"):
        mg.layer_norm(x, 3, mg.Tensor(np.ones(3), device="gpu"))
    with pytest.raises(TypeError, match=r"layer_norm: operands are on different devices"):
        nn.LayerNorm(3, dtype=np.float64, device="gpu")(x)
