"""cross_entropy against class probabilities (labels of the logits' shape): values, gradients for
the logits and the targets on each device, PyTorch's semantics, and errors."""

from __future__ import annotations

import numpy as np
import pytest

import minigraph as mg
from minigraph import nn
from minigraph.backend import to_device
from minigraph.nn import functional as F

from conftest import TIGHT

WEIGHT = [0.5, 2.0, 1.0, 3.0]


def host(value):
    return to_device(value.data if isinstance(value, mg.Tensor) else value, "cpu")


def numpy_soft_cross_entropy(z, t, reduction, weight=None, eps=0.0):
    """The definition written out: T′ = (1 − ε)·T + ε/C, ℓᵢ = −Σ_c w_c·T′ᵢc·log softmaxᵢc, summed
    per row straight from the probabilities; the mean divides by the number of rows."""
    n, classes = z.shape
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)  # fine for moderate logits
    w = np.ones(classes) if weight is None else np.asarray(weight)
    mixed = (1 - eps) * t + eps / classes
    losses = np.array([-sum(w[c] * mixed[i, c] * np.log(probs[i, c]) for c in range(classes))
                       for i in range(n)])
    return {"none": losses, "sum": losses.sum(), "mean": losses.sum() / n}[reduction]


def distributions(rng, n, classes):
    t = rng.random((n, classes)) + 0.05
    return t / t.sum(axis=1, keepdims=True)


OPTIONS = [dict(), dict(weight=WEIGHT), dict(label_smoothing=0.3), dict(weight=WEIGHT, label_smoothing=0.1)]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_soft_cross_entropy_matches_its_definition(on, rng, reduction, options):
    z, t = rng.normal(size=(6, 4)) * 2, distributions(rng, 6, 4)
    expected = numpy_soft_cross_entropy(z, t, reduction, options.get("weight"), options.get("label_smoothing", 0.0))
    kwargs = dict(options, weight=None if "weight" not in options else on(WEIGHT))
    for targets in (on(t), mg.Tensor(on(t)), t.tolist()):  # array, Tensor, list: one value
        got = mg.cross_entropy(mg.Tensor(on(z)), targets, reduction, **kwargs)
        assert got.shape == np.shape(expected)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-13)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_soft_cross_entropy_gradients_for_logits_and_targets_match_finite_differences(on, rng, reduction,
                                                                                     options):
    kwargs = dict(options, weight=None if "weight" not in options else on(WEIGHT))
    z = mg.Tensor(on(rng.normal(size=(5, 4)) * 2), requires_grad=True)
    # Rows that are not distributions too: the formula must not lean on Σ_c Tᵢc = 1.
    t = mg.Tensor(on(rng.uniform(-0.5, 1.5, size=(5, 4))), requires_grad=True)
    assert mg.gradcheck(lambda a, b: mg.cross_entropy(a, b, reduction, **kwargs), [z, t], **TIGHT)


def test_soft_cross_entropy_gives_each_input_only_the_gradient_it_asks_for(on, rng):
    z_np, t_np = rng.normal(size=(3, 5)), distributions(rng, 3, 5)
    z, t = mg.Tensor(on(z_np), requires_grad=True), mg.Tensor(on(t_np))
    mg.cross_entropy(z, t).backward()
    probs = np.exp(z_np) / np.exp(z_np).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(host(z.grad), (probs - t_np) / 3, rtol=1e-12, atol=1e-15)  # rows sum to 1
    assert t.grad is None
    z, t = mg.Tensor(on(z_np)), mg.Tensor(on(t_np), requires_grad=True)
    mg.cross_entropy(z, t, "sum").backward()
    np.testing.assert_allclose(host(t.grad), -np.log(probs), rtol=1e-12)
    assert z.grad is None


def test_one_hot_probabilities_give_the_class_index_loss(on, rng):
    """A one-hot T is the label it marks: with ε both ways, unweighted (a weighted "mean" divides
    by N here but by the labels' weights there, as in PyTorch)."""
    z, y = rng.normal(size=(6, 3)), rng.integers(0, 3, size=6)
    onehot = np.eye(3)[y]
    for reduction in ("mean", "sum", "none"):
        soft = mg.cross_entropy(mg.Tensor(on(z)), on(onehot), reduction, label_smoothing=0.2)
        hard = mg.cross_entropy(mg.Tensor(on(z)), on(y), reduction, label_smoothing=0.2)
        np.testing.assert_allclose(soft.numpy(), hard.numpy(), rtol=1e-13)
    weighted = mg.cross_entropy(mg.Tensor(on(z)), on(onehot), "mean", weight=on(WEIGHT[:3]))
    np.testing.assert_allclose(weighted.numpy(), (np.array(WEIGHT[:3])[y] * -np.log(
        np.exp(z) / np.exp(z).sum(1, keepdims=True))[np.arange(6), y]).sum() / 6, rtol=1e-13)


def test_soft_cross_entropy_is_stable_and_stays_float32(on):
    z = np.array([[1000.0, 0.0, -1000.0], [5000.0, 5001.0, 4999.0]], dtype=np.float32)
    t = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=np.float32)
    logits, targets = mg.Tensor(on(z), requires_grad=True), mg.Tensor(on(t), requires_grad=True)
    loss = mg.cross_entropy(logits, targets, "none")
    assert loss.dtype == np.float32
    # By hand: row 0 has log P = (0, −1000, −2000) to float64's precision, so ℓ = 0.5·1000; row 1 is
    # −Σ T·(Z − max) + log Σ e^(Z − max), its rows summing to 1.
    expected = [0.5 * 1000.0, -(0.2 * -1 + 0.3 * 0 + 0.5 * -2) + np.log(np.exp([-1.0, 0.0, -2.0]).sum())]
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)
    loss.sum().backward()
    assert logits.grad.dtype == targets.grad.dtype == np.float32
    assert np.isfinite(host(logits.grad)).all() and np.isfinite(host(targets.grad)).all()


def test_the_loss_module_and_functional_take_probabilities(on, rng):
    z, t = rng.normal(size=(4, 3)), distributions(rng, 4, 3)
    expected = numpy_soft_cross_entropy(z, t, "sum", WEIGHT[:3], 0.1)
    module = nn.CrossEntropyLoss("sum", weight=WEIGHT[:3], label_smoothing=0.1).to(mg.Tensor(on(z)).device)
    assert module(mg.Tensor(on(z)), on(t)).item() == pytest.approx(expected, rel=1e-13)
    got = F.cross_entropy(mg.Tensor(on(z)), target=on(t), weight=on(WEIGHT[:3]), reduction="sum",
                          label_smoothing=0.1)
    assert got.item() == pytest.approx(expected, rel=1e-13)
    with pytest.raises(ValueError, match=r"cross_entropy: got ignore_index=1 with class-probability targets"):
        nn.CrossEntropyLoss(ignore_index=1)(mg.Tensor(on(z)), on(t))


def test_a_negative_ignore_index_ignores_nothing_as_in_pytorch(rng):
    z, t = rng.normal(size=(4, 3)), distributions(rng, 4, 3)
    t[1] = -1.0  # a row of -1s is not "ignored": only class indices are
    expected = numpy_soft_cross_entropy(z, t, "mean")
    assert mg.cross_entropy(mg.Tensor(z), t, ignore_index=-1).item() == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("logits_dtype,targets,error,message", [
    (np.float64, np.array([[0, 1, 0], [1, 0, 0]]), TypeError,
     r"cross_entropy: labels of the logits' shape \(2, 3\) are class probabilities, which must be floats; "
     r"got dtype int64. For class indices pass shape \(2,\)"),
    (np.float64, [[0, 1, 0], [1, 0, 0]], TypeError, r"must be floats; got dtype int64"),
    (np.float64, np.ones((2, 3), dtype=bool), TypeError, r"must be floats; got dtype bool"),
    (np.float32, np.full((2, 3), 1 / 3), TypeError,
     r"cross_entropy: logits have dtype float32 but the class probabilities float64; expected one dtype "
     r"\(minigraph does not promote\)"),
    (np.float64, lambda: mg.Tensor(np.full((2, 3), 1 / 3, dtype=np.float32)), TypeError,
     r"logits have dtype float64 but the class probabilities float32"),
    (np.float64, np.full((2, 4), 0.25), ValueError,
     r"cross_entropy: labels have shape \(2, 4\); expected \(2,\), one class index per row of logits "
     r"\(2, 3\), or class probabilities of the logits' shape"),
    (np.float64, np.full((3, 3), 0.25), ValueError, r"labels have shape \(3, 3\); expected \(2,\)"),
    (np.float64, mg.Tensor(np.full((2, 4), 0.25)), TypeError,
     r"cross_entropy: labels is a Tensor, whose data are floats; expected an integer NumPy/CuPy array of "
     r"shape \(2,\) \(class indices\), or class probabilities of the logits' shape \(2, 3\); got a Tensor "
     r"of shape \(2, 4\)"),
    (np.float64, np.full(2, 0.5), TypeError,
     r"labels have dtype float64; expected integer class indices, e.g. labels.astype\(numpy.int64\), or "
     r"class probabilities of the logits' shape \(2, 3\)"),
])
def test_bad_probability_targets_are_refused_by_name(logits_dtype, targets, error, message):
    targets = targets() if callable(targets) else targets  # a Tensor made here lands on the CPU
    with pytest.raises(error, match=message):
        mg.cross_entropy(mg.Tensor(np.zeros((2, 3), dtype=logits_dtype)), targets)


def test_probability_targets_refuse_a_class_to_ignore_and_keep_the_option_checks():
    z, t = mg.Tensor(np.zeros((2, 3))), np.full((2, 3), 1 / 3)
    for index in (0, 2, 7):
        with pytest.raises(ValueError, match=rf"cross_entropy: got ignore_index={index} with class-probability "
                                             rf"targets .*leave it at its default \(-100\)"):
            mg.cross_entropy(z, t, ignore_index=index)
    with pytest.raises(ValueError, match=r"cross_entropy: got weight of shape \(2,\)"):
        mg.cross_entropy(z, t, weight=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"cross_entropy: got label_smoothing=-0.1"):
        mg.cross_entropy(z, t, label_smoothing=-0.1)


def test_probabilities_on_the_other_device_are_refused(gpu):
    z = mg.Tensor(np.zeros((2, 3)), device="cpu")
    with pytest.raises(TypeError, match=r"cross_entropy: labels is on 'gpu' but the tensor is on 'cpu'"):
        mg.cross_entropy(z, to_device(np.full((2, 3), 1 / 3), gpu))
    with pytest.raises(TypeError, match=r"cross_entropy: the class probabilities are on 'gpu' but the "
                                        r"logits on 'cpu'"):
        mg.cross_entropy(z, mg.Tensor(np.full((2, 3), 1 / 3), device=gpu))


def test_soft_cross_entropy_matches_torch(rng):
    torch = pytest.importorskip("torch")
    z, t, w = rng.normal(size=(7, 4)), distributions(rng, 7, 4), rng.uniform(0.5, 2, size=4)
    for reduction in ("mean", "sum", "none"):
        for weight in (None, w):
            for eps in (0.0, 0.2):
                logits, targets = mg.Tensor(z, requires_grad=True), mg.Tensor(t, requires_grad=True)
                ours = mg.cross_entropy(logits, targets, reduction, weight=weight, label_smoothing=eps)
                upstream = np.asarray(rng.normal(size=ours.shape))
                ours.backward(upstream)
                tz, tt = torch.tensor(z, requires_grad=True), torch.tensor(t, requires_grad=True)
                theirs = torch.nn.functional.cross_entropy(
                    tz, tt, weight=None if weight is None else torch.tensor(weight), reduction=reduction,
                    label_smoothing=eps)
                theirs.backward(torch.tensor(upstream))
                np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-15)
                np.testing.assert_allclose(logits.grad, tz.grad.numpy(), rtol=1e-12, atol=1e-15)
                np.testing.assert_allclose(targets.grad, tt.grad.numpy(), rtol=1e-12, atol=1e-15)
