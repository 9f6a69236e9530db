"""nll_loss: against its definition written out in NumPy, finite differences in float64 on both
devices, cross_entropy (which it equals after log_softmax), and torch."""

from __future__ import annotations

import numpy as np
import pytest

import minigraph as mg
import minigraph.nn.functional as F
from minigraph import nn
from minigraph.backend import to_device

from conftest import TIGHT


def host(value):
    return to_device(value, "cpu")


def numpy_nll(log_probs, labels, reduction, weight=None, ignore_index=-100):
    """The definition, one row at a time."""
    losses, weights = [], []
    for row, label in zip(log_probs, labels):
        w = 0.0 if label == ignore_index else (1.0 if weight is None else weight[label])
        losses.append(0.0 if label == ignore_index else -w * row[label])
        weights.append(w)
    losses = np.array(losses)
    return {"none": losses, "sum": losses.sum(), "mean": losses.sum() / sum(weights)}[reduction]


OPTIONS = [{}, {"weight": [0.5, 2.0, 1.0, 3.0]}, {"ignore_index": 2},
           {"weight": [1.0, 0.2, 4.0, 1.5], "ignore_index": 0}]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_nll_loss_values_and_gradients(on, rng, reduction, options):
    x = rng.normal(size=(7, 4))
    labels = np.array([0, 1, 2, 3, 2, 1, 0])
    weight = options.get("weight")
    kwargs = dict(options, weight=None if weight is None else on(np.array(weight)))
    t = mg.Tensor(on(x), requires_grad=True)
    loss = mg.nll_loss(t, on(labels), reduction, **kwargs)
    expected = numpy_nll(x, labels, reduction, weight, options.get("ignore_index", -100))
    np.testing.assert_allclose(host(loss.data), expected, rtol=1e-13)
    assert mg.gradcheck(lambda v: mg.nll_loss(v, on(labels), reduction, **kwargs), [t], **TIGHT)


def test_the_gradient_is_minus_the_weight_at_each_label_only(on):
    x = mg.Tensor(on(np.zeros((3, 4))), requires_grad=True)
    mg.nll_loss(x, on(np.array([2, 1, 2])), "sum", weight=on(np.array([1.0, 2.0, 3.0, 4.0]))).backward()
    np.testing.assert_array_equal(host(x.grad), [[0, 0, -3, 0], [0, -2, 0, 0], [0, 0, -3, 0]])


def test_after_log_softmax_it_is_cross_entropy(on, rng):
    z, labels = rng.normal(size=(6, 5)) * 3, np.array([4, 0, 1, 1, 3, -100])
    weight = on(rng.uniform(0.5, 2.0, size=5))
    a, b = mg.Tensor(on(z), requires_grad=True), mg.Tensor(on(z), requires_grad=True)
    nll = F.nll_loss(F.log_softmax(a, dim=1), on(labels), weight)
    ce = F.cross_entropy(b, on(labels), weight)
    np.testing.assert_allclose(host(nll.data), host(ce.data), rtol=1e-13)
    nll.backward()
    ce.backward()
    np.testing.assert_allclose(host(a.grad), host(b.grad), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("loss", ["nll_loss", "cross_entropy", "cross_entropy_smoothed"])
@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5]])
def test_a_mean_over_only_ignored_rows_is_nan_but_its_gradient_is_zero(on, rng, loss, weight):
    # Ignored rows take no part in the loss, so their gradient is 0, even when the "mean" is
    # 0/0 = NaN because every row is ignored (PyTorch's too: it never writes those rows). The
    # scale dL/0 = inf times the rows' weight 0 made it NaN, which an optimizer step spreads
    # into every weight of the model.
    z = mg.Tensor(on(rng.normal(size=(4, 3))), requires_grad=True)
    labels = on(np.full(4, 1))
    options = dict(weight=None if weight is None else on(np.array(weight)), ignore_index=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if loss == "nll_loss":
            out = F.nll_loss(F.log_softmax(z, dim=1), labels, **options)
        else:
            out = F.cross_entropy(z, labels, label_smoothing=0.1 if loss.endswith("smoothed") else 0.0, **options)
        assert np.isnan(out.item())
        out.backward()
    np.testing.assert_array_equal(host(z.grad), np.zeros((4, 3)))


def test_the_module_keeps_weights_as_a_buffer_and_float32_stays_float32(device, rng):
    loss_fn = nn.NLLLoss(weight=np.array([1.0, 2.0, 0.5], dtype=np.float32), ignore_index=1)
    assert "weight" in loss_fn.state_dict() and repr(loss_fn) == "NLLLoss(ignore_index=1)"
    loss_fn.to(device)
    x = mg.Tensor(rng.normal(size=(4, 3)).astype(np.float32), requires_grad=True, device=device)
    loss = loss_fn(nn.LogSoftmax(dim=1)(x), np.array([0, 1, 2, 2]))
    loss.backward()
    assert loss.dtype == np.float32 and x.grad.dtype == np.float32


@pytest.mark.parametrize("call,error,message", [
    (lambda x: mg.nll_loss(x, np.array([0, 1])), ValueError,
     r"nll_loss: labels have shape \(2,\); expected \(3,\), one class index per row of log_probs \(3, 4\)$"),
    (lambda x: mg.nll_loss(x, np.array([0.0, 1.0, 2.0])), TypeError, r"nll_loss: labels have dtype float64; "
     r"expected integer class indices, e.g. labels.astype\(numpy.int64\)$"),
    (lambda x: mg.nll_loss(x, np.array([0, 4, 1])), IndexError, r"nll_loss: labels"),
    (lambda x: mg.nll_loss(x, np.array([0, 1, 2]), "avg"), ValueError, r"nll_loss: got reduction='avg'"),
    (lambda x: mg.nll_loss(x[0], np.array([0])), ValueError,
     r"nll_loss: log_probs has shape \(4,\); expected \(N, C\)"),
    (lambda x: mg.nll_loss(x, np.array([0, 1, 2]), weight=[1.0, 2.0]), ValueError,
     r"nll_loss: got weight of shape \(2,\) and dtype float64; expected \(4,\) real numbers"),
    (lambda x: nn.NLLLoss(weight=np.ones((2, 2))), ValueError, r"NLLLoss: got weight of shape \(2, 2\)"),
])
def test_bad_arguments_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call(mg.Tensor(np.zeros((3, 4)), requires_grad=True))


def test_against_torch(rng):
    torch = pytest.importorskip("torch")
    z = rng.normal(size=(8, 5))
    labels = np.array([0, 4, 2, 2, -100, 1, 3, 4])
    for reduction in ("mean", "sum", "none"):
        for weight in (None, rng.uniform(0.1, 3.0, size=5)):
            mine, theirs = mg.Tensor(z, requires_grad=True), torch.tensor(z, requires_grad=True)
            ours = mg.nll_loss(mg.log_softmax(mine, 1), labels, reduction, weight=weight)
            their_loss = torch.nn.functional.nll_loss(torch.log_softmax(theirs, 1), torch.from_numpy(labels),
                                                      None if weight is None else torch.from_numpy(weight),
                                                      reduction=reduction)
            upstream = rng.normal(size=ours.shape)
            ours.backward(upstream)
            their_loss.backward(torch.from_numpy(np.asarray(upstream)))
            np.testing.assert_allclose(ours.numpy(), their_loss.detach().numpy(), rtol=1e-13)
            np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-12, atol=1e-15)
