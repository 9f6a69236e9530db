"""binary_cross_entropy_with_logits, l1_loss, smooth_l1_loss and huber_loss: values against their
definitions written out in NumPy, gradients for input and target against finite differences on
each device, PyTorch's rules at the kinks and for huge logits, PyTorch itself, layers, errors."""

from __future__ import annotations

import numpy as np
import pytest

import minigraph as mg
from minigraph import nn
from minigraph.backend import to_device
from minigraph.nn import functional as F

from conftest import TIGHT

REDUCTIONS = ["mean", "sum", "none"]
SHAPE = (5, 3)
# weight and pos_weight as PyTorch broadcasts them against (5, 3) logits: None, per element,
# per class (the last dim), per row, one number.
WEIGHTS = {"none": None, "elementwise": (5, 3), "per class": (3,), "per row": (5, 1), "scalar": ()}
POS_WEIGHTS = {"none": None, "per class": (3,), "scalar": ()}


def host(value):
    return to_device(value.data if isinstance(value, mg.Tensor) else value, "cpu")


def reduce(losses, reduction):
    return {"none": losses, "sum": losses.sum(), "mean": losses.sum() / losses.size}[reduction]


def numpy_bce(x, t, reduction, weight=None, pos_weight=None):
    """The definition: −w·[p·t·log σ(x) + (1 − t)·log(1 − σ(x))], σ(x) = 1 / (1 + e⁻ˣ), for
    moderate x; the mean divides by the element count."""
    sigma = 1 / (1 + np.exp(-x))
    w = 1.0 if weight is None else weight
    p = 1.0 if pos_weight is None else pos_weight
    return reduce(-w * (p * t * np.log(sigma) + (1 - t) * np.log(1 - sigma)), reduction)


def numpy_robust(x, t, reduction, kind, b):
    """Element by element, with the branches as the PyTorch documentation states them."""
    losses = np.empty_like(x)
    for i, (xi, ti) in enumerate(zip(x.ravel(), t.ravel())):
        z = abs(xi - ti)
        if kind == "l1":
            losses.flat[i] = z
        elif kind == "smooth_l1":
            losses.flat[i] = 0.5 * z * z / b if z < b else z - 0.5 * b
        else:  # huber
            losses.flat[i] = 0.5 * z * z if z < b else b * (z - 0.5 * b)
    return reduce(losses, reduction)


def robust(kind, b):
    """The minigraph function for ``kind`` with its threshold ``b``: (input, target, reduction) -> loss."""
    return {"l1": lambda x, t, r: mg.l1_loss(x, t, r),
            "smooth_l1": lambda x, t, r: mg.smooth_l1_loss(x, t, r, beta=b),
            "huber": lambda x, t, r: mg.huber_loss(x, t, r, delta=b)}[kind]


ROBUST = [("l1", 0.0), ("smooth_l1", 0.0), ("smooth_l1", 0.5), ("smooth_l1", 1.0), ("huber", 0.7), ("huber", 2.0)]


def spread_from_kinks(rng, b, shape=SHAPE):
    """input, target whose differences stay 0.05 away from 0 and from ±b: no kink within reach
    of a finite difference."""
    d = rng.uniform(0.05, 3.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    near_b = np.abs(np.abs(d) - b) < 0.05
    d[near_b] += 0.1 * np.sign(d[near_b])
    t = rng.normal(size=shape)
    return t + d, t


def weight_arrays(rng, weight_key, pos_key):
    w = None if WEIGHTS[weight_key] is None else rng.uniform(0.2, 2.0, size=WEIGHTS[weight_key])
    p = None if POS_WEIGHTS[pos_key] is None else rng.uniform(0.3, 4.0, size=POS_WEIGHTS[pos_key])
    return w, p


# ---------------------------------------------------------------- binary_cross_entropy_with_logits

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight_key", WEIGHTS)
@pytest.mark.parametrize("pos_key", POS_WEIGHTS)
def test_bce_with_logits_matches_its_definition(on, rng, reduction, weight_key, pos_key):
    x, t = rng.normal(size=SHAPE) * 3, rng.uniform(size=SHAPE)
    w, p = weight_arrays(rng, weight_key, pos_key)
    expected = numpy_bce(x, t, reduction, w, p)
    got = mg.binary_cross_entropy_with_logits(mg.Tensor(on(x)), on(t), None if w is None else on(w), reduction,
                                              None if p is None else on(p))
    assert got.shape == np.shape(expected)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight_key", ["none", "per row", "elementwise"])
@pytest.mark.parametrize("pos_key", POS_WEIGHTS)
def test_bce_with_logits_gradients_for_input_and_target_match_finite_differences(on, rng, reduction, weight_key,
                                                                                 pos_key):
    w, p = weight_arrays(rng, weight_key, pos_key)
    x = mg.Tensor(on(rng.normal(size=SHAPE) * 3), requires_grad=True)
    t = mg.Tensor(on(rng.uniform(size=SHAPE)), requires_grad=True)
    w, p = (None if a is None else on(a) for a in (w, p))
    assert mg.gradcheck(lambda x, t: mg.binary_cross_entropy_with_logits(x, t, w, reduction, p), [x, t], **TIGHT)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_of_huge_logits_is_finite_and_exact(on, dtype):
    # σ(±1000) is 1 or 0 to every digit, so by hand: the loss is |x| for the wrong sign and 0
    # for the right one; with p = 3 a missed positive costs 3·1000. dx = l·σ(x) − p·t with
    # l = 1 + (p − 1)·t, and dt = (p − 1)·log(1 + e⁻ˣ) − x.
    x = np.array([1000.0, -1000.0, 1000.0, -1000.0], dtype=dtype)
    t = np.array([0.0, 1.0, 1.0, 0.0], dtype=dtype)
    p = 3.0
    logits, targets = mg.Tensor(on(x), requires_grad=True), mg.Tensor(on(t), requires_grad=True)
    loss = mg.binary_cross_entropy_with_logits(logits, targets, reduction="none", pos_weight=[p])
    loss.backward(on(np.ones(4, dtype=dtype)))
    sigma, softplus_neg = (x > 0).astype(dtype), np.maximum(-x, 0)
    level = 1 + (p - 1) * t
    assert loss.dtype == logits.grad.dtype == targets.grad.dtype == dtype
    np.testing.assert_array_equal(loss.numpy(), (1 - t) * x + level * softplus_neg)
    np.testing.assert_array_equal(host(logits.grad), level * sigma - p * t)
    np.testing.assert_array_equal(host(targets.grad), (p - 1) * softplus_neg - x)
    assert np.isfinite(host(loss)).all()


def test_bce_with_logits_target_gets_no_gradient_as_data(on, rng):
    x = mg.Tensor(on(rng.normal(size=SHAPE)), requires_grad=True)
    t = mg.Tensor(on(rng.uniform(size=SHAPE)))
    mg.binary_cross_entropy_with_logits(x, t).backward()
    assert t.grad is None and x.grad is not None
    # σ(x) − t over n: the gradient without pos_weight, by hand
    np.testing.assert_allclose(host(x.grad), (1 / (1 + np.exp(-x.numpy())) - t.numpy()) / x.numpy().size, rtol=1e-12)


# ---------------------------------------------------------------- l1, smooth l1, huber

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind,b", ROBUST)
def test_robust_loss_matches_its_definition(on, rng, reduction, kind, b):
    x, t = rng.normal(size=SHAPE) * 2, rng.normal(size=SHAPE)
    expected = numpy_robust(x, t, reduction, kind, b)
    got = robust(kind, b)(mg.Tensor(on(x)), on(t), reduction)
    assert got.shape == np.shape(expected)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind,b", ROBUST)
def test_robust_loss_gradients_away_from_kinks_match_finite_differences(on, rng, reduction, kind, b):
    x, t = spread_from_kinks(rng, b)
    x, t = mg.Tensor(on(x), requires_grad=True), mg.Tensor(on(t), requires_grad=True)
    loss = robust(kind, b)
    assert mg.gradcheck(lambda x, t: loss(x, t, reduction), [x, t], **TIGHT)


def torch_rule_slope(d, kind, b):
    """dℓ/dx as PyTorch's CPU kernels choose it at every d, kinks included: l1 (and smooth l1
    with beta = 0, which PyTorch hands to l1) is sgn(d), 0 at 0 and at NaN; smooth l1 is −1 for
    d <= −b, 1 for d >= b, d/b between (NaN stays NaN); Huber is that times delta."""
    if b == 0.0:
        return np.nan_to_num(np.sign(d), nan=0.0)
    slope = np.where(d <= -b, -1.0, np.where(d >= b, 1.0, d / b))
    slope[np.isnan(d)] = np.nan
    return slope * (b if kind == "huber" else 1.0)


@pytest.mark.parametrize("kind,b", ROBUST)
def test_robust_loss_at_its_kinks_and_at_nan_follows_pytorchs_rule(on, kind, b):
    d = np.array([0.0, -0.0, b, -b, 0.25 * b, 2 * b + 1.0, np.nan])
    t = np.linspace(-1.0, 1.0, d.size)
    x, target = mg.Tensor(on(t + d), requires_grad=True), mg.Tensor(on(t), requires_grad=True)
    upstream = np.linspace(0.5, 2.0, d.size)
    loss = robust(kind, b)(x, target, "none")
    loss.backward(on(upstream))
    d = host(x.data) - t  # the differences as rounded in t + d
    expected = torch_rule_slope(d, kind, b) * upstream
    np.testing.assert_allclose(host(x.grad), expected, rtol=1e-14, atol=0)
    np.testing.assert_allclose(host(target.grad), -expected, rtol=1e-14, atol=0)
    # Both branches meet at |d| = b: the loss is continuous there.
    np.testing.assert_allclose(loss.numpy()[:6], numpy_robust(t[:6] + d[:6], t[:6], "none", kind, b), rtol=1e-14)


def test_huber_is_delta_times_smooth_l1_and_beta_zero_is_l1(rng):
    x, t = rng.normal(size=SHAPE) * 2, rng.normal(size=SHAPE)
    for delta in (0.3, 1.0, 2.5):
        np.testing.assert_allclose(mg.huber_loss(mg.Tensor(x), t, "none", delta).numpy(),
                                   delta * mg.smooth_l1_loss(mg.Tensor(x), t, "none", delta).numpy(), rtol=1e-14)
    np.testing.assert_array_equal(mg.smooth_l1_loss(mg.Tensor(x), t, "none", beta=0.0).numpy(),
                                  mg.l1_loss(mg.Tensor(x), t, "none").numpy())


@pytest.mark.parametrize("kind,b", ROBUST)
def test_robust_loss_keeps_float32(on, rng, kind, b):
    x = mg.Tensor(on(rng.normal(size=SHAPE).astype(np.float32)), requires_grad=True)
    loss = robust(kind, b)(x, on(rng.normal(size=SHAPE).astype(np.float32)), "mean")
    loss.backward()
    assert loss.dtype == x.grad.dtype == np.float32


# ---------------------------------------------------------------- PyTorch

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_matches_torch_for_every_weight_and_pos_weight(rng, reduction):
    torch = pytest.importorskip("torch")
    for weight_key in WEIGHTS:
        for pos_key in POS_WEIGHTS:
            w, p = weight_arrays(rng, weight_key, pos_key)
            x, t = rng.normal(size=SHAPE) * 4, rng.uniform(size=SHAPE)
            logits, targets = mg.Tensor(x, requires_grad=True), mg.Tensor(t, requires_grad=True)
            ours = F.binary_cross_entropy_with_logits(logits, targets, w, reduction=reduction, pos_weight=p)
            upstream = rng.normal(size=ours.shape)
            ours.backward(upstream)
            tx, tt = torch.tensor(x, requires_grad=True), torch.tensor(t, requires_grad=True)
            theirs = torch.nn.functional.binary_cross_entropy_with_logits(
                tx, tt, None if w is None else torch.tensor(w), reduction=reduction,
                pos_weight=None if p is None else torch.tensor(p))
            theirs.backward(torch.tensor(upstream))
            where = f"weight {weight_key}, pos_weight {pos_key}"
            np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12, err_msg=where)
            np.testing.assert_allclose(logits.grad, tx.grad.numpy(), rtol=1e-12, atol=1e-15, err_msg=where)
            np.testing.assert_allclose(targets.grad, tt.grad.numpy(), rtol=1e-12, atol=1e-15, err_msg=where)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind,b", ROBUST)
def test_robust_loss_matches_torch_at_and_off_the_kinks(rng, reduction, kind, b):
    torch = pytest.importorskip("torch")
    t = rng.normal(size=12)
    d = np.concatenate([[0.0, b, -b, np.nan], rng.normal(size=8) * 2])
    x = t + d
    ours_x, ours_t = mg.Tensor(x, requires_grad=True), mg.Tensor(t, requires_grad=True)
    functional = {"l1": lambda a, c, r: F.l1_loss(a, c, reduction=r),
                  "smooth_l1": lambda a, c, r: F.smooth_l1_loss(a, c, reduction=r, beta=b),
                  "huber": lambda a, c, r: F.huber_loss(a, c, r, delta=b)}[kind]
    ours = functional(ours_x, ours_t, reduction)
    upstream = rng.normal(size=ours.shape)
    ours.backward(upstream)
    tx, tt = torch.tensor(x, requires_grad=True), torch.tensor(t, requires_grad=True)
    theirs = {"l1": lambda a, c, r: torch.nn.functional.l1_loss(a, c, reduction=r),
              "smooth_l1": lambda a, c, r: torch.nn.functional.smooth_l1_loss(a, c, reduction=r, beta=b),
              "huber": lambda a, c, r: torch.nn.functional.huber_loss(a, c, reduction=r, delta=b)}[kind](
        tx, tt, reduction)
    theirs.backward(torch.tensor(upstream))
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-13, equal_nan=True)
    np.testing.assert_allclose(ours_x.grad, tx.grad.numpy(), rtol=1e-13, equal_nan=True)
    np.testing.assert_allclose(ours_t.grad, tt.grad.numpy(), rtol=1e-13, equal_nan=True)


# ---------------------------------------------------------------- layers

def test_loss_layers_give_their_functions_values(on, rng):
    x, t = rng.normal(size=SHAPE) * 2, rng.uniform(size=SHAPE)
    w, p = rng.uniform(0.5, 2.0, size=(5, 1)), rng.uniform(0.5, 2.0, size=3)
    pairs = [
        (nn.BCEWithLogitsLoss(on(w), reduction="sum", pos_weight=on(p)), numpy_bce(x, t, "sum", w, p)),
        (nn.BCEWithLogitsLoss(), numpy_bce(x, t, "mean")),
        (nn.L1Loss("none"), numpy_robust(x, t, "none", "l1", 0.0)),
        (nn.SmoothL1Loss(beta=0.5), numpy_robust(x, t, "mean", "smooth_l1", 0.5)),
        (nn.HuberLoss("sum", 0.7), numpy_robust(x, t, "sum", "huber", 0.7)),
    ]
    for layer, expected in pairs:
        np.testing.assert_allclose(layer(mg.Tensor(on(x)), on(t)).numpy(), expected, rtol=1e-12, err_msg=repr(layer))


def test_bce_with_logits_layer_keeps_weights_as_buffers_that_move_and_save(rng):
    w, p = rng.uniform(0.5, 2.0, size=(5, 1)), [1.0, 2.0, 3.0]
    layer = nn.BCEWithLogitsLoss(mg.Tensor(w), pos_weight=p)
    state = layer.state_dict()
    assert set(state) == {"weight", "pos_weight"}
    np.testing.assert_array_equal(state["pos_weight"], p)
    assert set(nn.BCEWithLogitsLoss(pos_weight=p).state_dict()) == {"pos_weight"}  # None is not saved
    layer.float()
    assert layer.weight.dtype == layer.pos_weight.dtype == np.float32
    x = mg.Tensor(rng.normal(size=SHAPE).astype(np.float32))
    out = layer(x, rng.uniform(size=SHAPE).astype(np.float32))
    assert out.dtype == np.float32


def test_loss_layers_show_their_options():
    assert repr(nn.SmoothL1Loss("sum", beta=0.5)) == "SmoothL1Loss(reduction='sum', beta=0.5)"
    assert repr(nn.HuberLoss(delta=2.0)) == "HuberLoss(delta=2.0)"
    assert repr(nn.L1Loss()) == "L1Loss()"


# ---------------------------------------------------------------- errors

LOSSES = {
    "binary_cross_entropy_with_logits": lambda x, t, **kw: mg.binary_cross_entropy_with_logits(x, t, **kw),
    "l1_loss": lambda x, t, **kw: mg.l1_loss(x, t, **kw),
    "smooth_l1_loss": lambda x, t, **kw: mg.smooth_l1_loss(x, t, **kw),
    "huber_loss": lambda x, t, **kw: mg.huber_loss(x, t, **kw),
}


@pytest.mark.parametrize("name", LOSSES)
def test_a_bad_reduction_is_named(name):
    with pytest.raises(ValueError, match=rf"{name}: got reduction='avg'; expected one of"):
        LOSSES[name](mg.Tensor(np.zeros(3)), np.zeros(3), reduction="avg")


@pytest.mark.parametrize("name", LOSSES)
def test_a_column_against_a_vector_is_refused_not_broadcast(name):
    with pytest.raises(ValueError, match=rf"{name}: input has shape \(4, 1\) but target has shape \(4,\)"):
        LOSSES[name](mg.Tensor(np.zeros((4, 1))), np.zeros(4))


@pytest.mark.parametrize("name", LOSSES)
def test_mixed_dtypes_are_refused_not_promoted(name):
    with pytest.raises(TypeError, match=rf"{name}: operands have different dtypes \(float32, float64\)"):
        LOSSES[name](mg.Tensor(np.zeros(3, dtype=np.float32)), np.zeros(3))


@pytest.mark.parametrize("key", ["weight", "pos_weight"])
def test_bce_weights_that_do_not_broadcast_or_would_grow_the_loss_are_refused(key):
    x = mg.Tensor(np.zeros((4, 1)))
    for shape in [(3,), (4, 2), (2, 4, 1)]:
        with pytest.raises(ValueError, match=rf"binary_cross_entropy_with_logits: got {key} of shape "
                                             rf"\({shape[0]},"):
            mg.binary_cross_entropy_with_logits(x, np.zeros((4, 1)), **{key: np.ones(shape)})


@pytest.mark.parametrize("key", ["weight", "pos_weight"])
def test_bce_weights_take_no_gradient_and_no_strings(key):
    x = mg.Tensor(np.zeros(3))
    with pytest.raises(TypeError, match=rf"binary_cross_entropy_with_logits: got a {key} Tensor that requires grad"):
        mg.binary_cross_entropy_with_logits(x, np.zeros(3), **{key: mg.Tensor(np.ones(3), requires_grad=True)})
    with pytest.raises(TypeError, match=rf"binary_cross_entropy_with_logits: got {key}=\['a'\]; expected"):
        mg.binary_cross_entropy_with_logits(x, np.zeros(3), **{key: ["a"]})


def test_thresholds_out_of_range_are_refused_as_pytorch_does():
    x = mg.Tensor(np.zeros(3))
    with pytest.raises(ValueError, match=r"smooth_l1_loss: got beta=-0.5; expected a finite number in \[0.0, inf\)"):
        mg.smooth_l1_loss(x, np.zeros(3), beta=-0.5)
    with pytest.raises(ValueError, match=r"huber_loss: got delta=0.0; expected a finite number in \(0.0, inf\)"):
        mg.huber_loss(x, np.zeros(3), delta=0.0)
    with pytest.raises(ValueError, match=r"HuberLoss: got delta=-1"):
        nn.HuberLoss(delta=-1)
    with pytest.raises(ValueError, match=r"SmoothL1Loss: got beta=nan"):
        nn.SmoothL1Loss(beta=float("nan"))
    with pytest.raises(ValueError, match=r"BCEWithLogitsLoss: got reduction='avg'"):
        nn.BCEWithLogitsLoss(reduction="avg")


def test_functional_forms_take_reduction_by_keyword_where_pytorch_reads_another_argument():
    x, t = mg.Tensor(np.zeros(3)), np.zeros(3)
    with pytest.raises(TypeError):  # PyTorch's third parameter of l1_loss is size_average
        F.l1_loss(x, t, "sum")
    with pytest.raises(TypeError):  # and of smooth_l1_loss too
        F.smooth_l1_loss(x, t, "sum")
    # huber_loss's third parameter is reduction in PyTorch as well
    np.testing.assert_array_equal(F.huber_loss(mg.Tensor(np.ones(3)), t, "sum").numpy(), 1.5)
