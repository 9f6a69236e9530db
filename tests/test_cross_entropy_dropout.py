"""cross_entropy and dropout: values, gradients on each device, edge cases and errors."""

from __future__ import annotations

import numpy as np
import pytest

import minigraph as mg
from minigraph import nn
from minigraph.backend import get_array_module, to_device

from conftest import TIGHT


def host(value):
    return to_device(value.data if isinstance(value, mg.Tensor) else value, "cpu")


def naive_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """−log softmax(z)ᵢ,yᵢ straight from the definition (fine for moderate logits), per row."""
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return -np.log(probs[np.arange(len(labels)), labels])


# --- cross_entropy ---------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("n,c", [(1, 1), (1, 3), (5, 2), (6, 4)])
def test_cross_entropy_gradients_match_finite_differences(on, rng, reduction, n, c):
    logits = mg.Tensor(on(rng.normal(size=(n, c)) * 2), requires_grad=True)
    labels = rng.integers(0, c, size=n)
    assert mg.gradcheck(lambda z: mg.cross_entropy(z, labels, reduction), [logits], **TIGHT)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_values_are_minus_log_softmax_at_the_labels(on, rng, reduction):
    z, y = rng.normal(size=(7, 5)), rng.integers(0, 5, size=7)
    per_row = naive_cross_entropy(z, y)
    expected = {"mean": per_row.mean(), "sum": per_row.sum(), "none": per_row}[reduction]
    got = mg.cross_entropy(mg.Tensor(on(z)), on(y), reduction)
    assert got.shape == np.shape(expected)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-13)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_backward_is_softmax_minus_onehot_scaled_by_the_reduction(on, rng, reduction):
    n, c = 6, 4
    z, y = rng.normal(size=(n, c)), np.array([0, 3, 3, 1, 0, 2])
    upstream = rng.normal(size=n) if reduction == "none" else np.array(rng.normal())
    logits = mg.Tensor(on(z), requires_grad=True)
    mg.cross_entropy(logits, y, reduction).backward(on(upstream))
    softmax = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    onehot = np.eye(c)[y]
    weight = upstream[:, None] if reduction == "none" else upstream / (n if reduction == "mean" else 1)
    np.testing.assert_allclose(host(logits.grad), (softmax - onehot) * weight, rtol=1e-12, atol=1e-15)


def test_cross_entropy_is_stable_for_huge_logits_in_float32(on):
    z = np.array([[1000.0, 0.0, -1000.0], [5000.0, 5001.0, 4999.0]], dtype=np.float32)
    y = np.array([0, 2])
    logits = mg.Tensor(on(z), requires_grad=True)
    loss = mg.cross_entropy(logits, y, "none")
    assert loss.dtype == np.float32
    shifted = z.astype(np.float64) - z.max(axis=1, keepdims=True)  # the same loss, moderate logits
    np.testing.assert_allclose(loss.numpy(), naive_cross_entropy(shifted, y), rtol=1e-6, atol=1e-6)
    loss.sum().backward()
    assert np.isfinite(host(logits.grad)).all()


def test_cross_entropy_loss_module_is_the_function(on, rng):
    z, y = rng.normal(size=(4, 3)), np.array([2, 0, 1, 1])
    for reduction in ["mean", "sum", "none"]:
        module = nn.CrossEntropyLoss(reduction)
        np.testing.assert_array_equal(module(mg.Tensor(on(z)), on(y)).numpy(),
                                      mg.cross_entropy(mg.Tensor(on(z)), y, reduction).numpy())
    assert repr(nn.CrossEntropyLoss("sum")) == "CrossEntropyLoss(reduction='sum')"


def test_cross_entropy_labels_may_be_lists_uint8_or_on_the_logits_device(on, rng):
    z = rng.normal(size=(3, 4))
    expected = naive_cross_entropy(z, np.array([3, 0, 3])).mean()
    for labels in [[3, 0, 3], np.array([3, 0, 3], dtype=np.uint8), on(np.array([3, 0, 3]))]:
        assert mg.cross_entropy(mg.Tensor(on(z)), labels).item() == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("logits_shape,labels,error,message", [
    ((3, 4), np.array([0.0, 1.0, 2.0]), TypeError, r"cross_entropy: labels have dtype float64; expected "
                                                   r"integer class indices, e.g. labels.astype"),
    ((3, 4), np.array([True, False, True]), TypeError, r"labels have dtype bool"),
    ((3, 4), np.array([0, 4, 1]), IndexError, r"cross_entropy: labels must lie in \[0, 4\); got values in "
                                              r"\[0, 4\]"),
    ((3, 4), np.array([0, -1, 1]), IndexError, r"labels must lie in \[0, 4\); got values in \[-1, 1\]"),
    ((3, 4), np.array([0, 1]), ValueError, r"cross_entropy: labels have shape \(2,\); expected \(3,\), "
                                           r"one class index per row of logits \(3, 4\)"),
    ((3, 4), np.array([[0], [1], [2]]), ValueError, r"labels have shape \(3, 1\)"),
    ((4,), np.array([0]), ValueError, r"cross_entropy: logits has shape \(4,\); expected \(N, C\)"),
    ((3, 0), np.array([0, 0, 0]), ValueError, r"logits has shape \(3, 0\)"),
    ((3, 4), mg.Tensor([0.0, 1.0, 2.0]), TypeError, r"cross_entropy: labels is a Tensor, whose data are "
                                                    r"floats; expected an integer"),
])
def test_cross_entropy_rejects_bad_labels_and_logits_by_name(logits_shape, labels, error, message):
    with pytest.raises(error, match=message):
        mg.cross_entropy(mg.Tensor(np.zeros(logits_shape)), labels)


def test_cross_entropy_rejects_an_unknown_reduction_and_gpu_labels_for_cpu_logits(gpu):
    with pytest.raises(ValueError, match="cross_entropy: got reduction='avg'"):
        mg.cross_entropy(mg.Tensor(np.zeros((2, 2))), [0, 1], "avg")
    with pytest.raises(ValueError, match="CrossEntropyLoss: got reduction='avg'"):
        nn.CrossEntropyLoss("avg")
    labels = to_device(np.array([0, 1]), gpu)
    with pytest.raises(TypeError, match=r"cross_entropy: labels is on 'gpu' but the tensor is on 'cpu'"):
        mg.cross_entropy(mg.Tensor(np.zeros((2, 2)), device="cpu"), labels)


# --- dropout ---------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_gradient_with_an_injected_mask_matches_finite_differences(on, rng, p):
    x = mg.Tensor(on(rng.normal(size=(4, 5))), requires_grad=True)
    keep = rng.random((4, 5)) >= p
    assert mg.gradcheck(lambda t: mg.dropout(t, p, keep=keep), [x], **TIGHT)


def test_dropout_gradient_with_a_reseeded_device_generator_matches_finite_differences(on, rng):
    x = mg.Tensor(on(rng.normal(size=(4, 5))), requires_grad=True)
    xp = get_array_module(x.data)
    assert mg.gradcheck(lambda t: mg.dropout(t, 0.4, generator=xp.random.default_rng(3)), [x], **TIGHT)


def test_dropout_keeps_scaled_elements_where_the_mask_says(on, rng):
    x_np, keep = rng.normal(size=(3, 4)), rng.random((3, 4)) >= 0.25
    x = mg.Tensor(on(x_np), requires_grad=True)
    y = mg.dropout(x, 0.25, keep=on(keep))
    np.testing.assert_allclose(y.numpy(), np.where(keep, x_np / 0.75, 0.0), rtol=1e-15)
    y.backward(on(np.ones((3, 4))))
    np.testing.assert_allclose(host(x.grad), np.where(keep, 1 / 0.75, 0.0), rtol=1e-15)


def test_dropout_draws_its_mask_on_the_tensors_device_from_the_generator_given(on, rng):
    x = mg.Tensor(on(rng.normal(size=(50, 40)).astype(np.float32)))
    xp = get_array_module(x.data)
    first = mg.dropout(x, 0.3, generator=xp.random.default_rng(11))
    again = mg.dropout(x, 0.3, generator=xp.random.default_rng(11))
    other = mg.dropout(x, 0.3, generator=xp.random.default_rng(12))
    assert first.device == x.device and first.dtype == np.float32
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert (first.numpy() != other.numpy()).any()
    expected_keep = host(xp.random.default_rng(11).random((50, 40), dtype=np.float32)) >= 0.3
    np.testing.assert_array_equal(first.numpy() != 0, expected_keep)


def test_dropout_keeps_about_one_minus_p_and_preserves_the_mean(on):
    x = mg.Tensor(on(np.ones(200_000)))
    y = nn.Dropout(0.3, rng=5)(x).numpy()
    kept = (y != 0).mean()
    assert abs(kept - 0.7) < 0.005  # 0.7 ± 5 standard deviations of a binomial fraction
    assert abs(y.mean() - 1.0) < 0.01


def test_dropout_edge_cases_behave_as_in_pytorch(on, rng):
    x = mg.Tensor(on(rng.normal(size=(3, 4))), requires_grad=True)
    assert mg.dropout(x, 0.0) is x and mg.dropout(x, 0.7, training=False) is x
    zeros = mg.dropout(x, 1.0)
    assert not zeros.numpy().any()
    zeros.backward(on(np.ones((3, 4))))
    assert not host(x.grad).any()
    for p in [-0.1, 1.5, float("nan")]:
        with pytest.raises(ValueError, match=r"dropout: got p=.*; expected a finite number in \[0.0, 1.0\]"):
            mg.dropout(x, p)
    with pytest.raises(ValueError, match=r"dropout: keep is float64 of shape \(3, 4\); expected a boolean "
                                         r"mask of x's shape \(3, 4\)"):
        mg.dropout(x, 0.5, keep=np.ones((3, 4)))


def test_dropout_layer_is_seedable_and_the_identity_in_eval_mode(on, rng):
    x = mg.Tensor(on(rng.normal(size=(6, 5))))
    masks = [nn.Dropout(0.5, rng=seed)(x).numpy() != 0 for seed in (1, 1, 2)]
    np.testing.assert_array_equal(masks[0], masks[1])
    assert (masks[0] != masks[2]).any()
    layer = nn.Dropout(0.5, rng=1)
    assert (layer(x).numpy() != layer(x).numpy()).any()  # one generator, advancing
    layer.eval()
    assert layer(x) is x
    assert repr(nn.Sequential(nn.Dropout(0.25))) == "Sequential(\n  (0): Dropout(p=0.25)\n)"
    with pytest.raises(ValueError, match=r"Dropout: got p=2"):
        nn.Dropout(2)
    # These named neither the layer nor the argument ("got a str as a random generator").
    with pytest.raises(TypeError, match=r"^Dropout: got rng='seed', a str; expected a random generator"):
        nn.Dropout(0.5, rng="seed")
    with pytest.raises(TypeError, match=r"^Dropout: got rng=1.5, a float; expected a random generator"):
        nn.Dropout(0.5, rng=1.5)
    with pytest.raises(TypeError, match=r"^dropout: got generator=0, a int; expected a random generator"):
        mg.dropout(x, 0.5, generator=0)


def test_a_generator_of_one_device_is_refused_for_a_tensor_on_the_other(gpu):
    x = mg.Tensor(np.ones((2, 3)), device=gpu)
    with pytest.raises(TypeError, match=r"dropout: the generator draws on 'cpu' but x is on 'gpu'"):
        mg.dropout(x, 0.5, generator=np.random.default_rng(0))
    with pytest.raises(TypeError, match="draws on 'cpu' but x is on 'gpu'"):
        nn.Dropout(0.5, rng=np.random.default_rng(0))(x)


# --- class weights, ignore_index, label smoothing ------------------------------------------------
def numpy_cross_entropy(z, y, reduction, weight=None, ignore_index=-100, eps=0.0):
    """PyTorch's definition written out: per-row (1 − ε)·w[y]·(−log p_y) + (ε/C)·Σ_c w_c·(−log p_c),
    ignored rows 0; the mean divides by the kept rows' label weights."""
    n, classes = z.shape
    log_p = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
    w = np.ones(classes) if weight is None else weight
    kept = y != ignore_index
    safe = np.where(kept, y, 0)
    a = w[safe] * kept
    losses = (1 - eps) * a * -log_p[np.arange(n), safe] + (eps / classes) * kept * -(log_p * w).sum(1)
    return {"none": losses, "sum": losses.sum(), "mean": losses.sum() / a.sum()}[reduction]


CE_CASES = [dict(), dict(weight=[0.5, 2.0, 1.0, 3.0]), dict(ignore_index=2), dict(label_smoothing=0.3),
            dict(weight=[0.5, 2.0, 1.0, 3.0], ignore_index=-1, label_smoothing=0.1)]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", CE_CASES, ids=str)
def test_weighted_ignoring_smoothed_cross_entropy_matches_its_definition(on, rng, reduction, options):
    z = rng.normal(size=(9, 4))
    y = rng.integers(0, 4, size=9)
    y[[1, 6]] = options.get("ignore_index", -100)
    weight = None if "weight" not in options else np.array(options["weight"])
    kwargs = dict(options, weight=None if weight is None else on(weight))
    t = mg.Tensor(on(z), requires_grad=True)
    expected = numpy_cross_entropy(z, y, reduction, weight, options.get("ignore_index", -100),
                                   options.get("label_smoothing", 0.0))
    np.testing.assert_allclose(host(mg.cross_entropy(t, on(y), reduction, **kwargs).data), expected, rtol=1e-12)
    assert mg.gradcheck(lambda x: mg.cross_entropy(x, on(y), reduction, **kwargs), [t], **TIGHT)


def test_cross_entropy_options_match_torch(rng):
    torch = pytest.importorskip("torch")
    z, y, w = rng.normal(size=(7, 4)), rng.integers(0, 4, size=7), rng.uniform(0.5, 2, size=4)
    y[[2, 5]] = -100
    for reduction in ("mean", "sum", "none"):
        for weight in (None, w):
            for eps in (0.0, 0.2):
                t = mg.Tensor(z, requires_grad=True)
                ours = mg.cross_entropy(t, y, reduction, weight=weight, label_smoothing=eps)
                upstream = np.asarray(rng.normal(size=ours.shape))
                ours.backward(upstream)
                tz = torch.tensor(z, requires_grad=True)
                theirs = torch.nn.functional.cross_entropy(
                    tz, torch.tensor(y), weight=None if weight is None else torch.tensor(weight),
                    reduction=reduction, label_smoothing=eps)
                theirs.backward(torch.tensor(upstream))
                np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-15)
                np.testing.assert_allclose(t.grad, tz.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_cross_entropy_loss_keeps_its_class_weights_as_a_buffer(device, rng):
    loss_fn = mg.nn.CrossEntropyLoss(weight=[1.0, 3.0], ignore_index=0, label_smoothing=0.1)
    assert list(loss_fn.state_dict()) == ["weight"] and "ignore_index=0, label_smoothing=0.1" in repr(loss_fn)
    loss_fn.to(device)
    z, y = rng.normal(size=(5, 2)), np.array([1, 0, 1, 1, 0])
    got = loss_fn(mg.Tensor(z), y).item()
    assert got == pytest.approx(numpy_cross_entropy(z, y, "mean", np.array([1.0, 3.0]), 0, 0.1), rel=1e-12)
    with np.errstate(invalid="ignore"):  # the 0/0 is the point
        all_ignored = mg.cross_entropy(mg.Tensor(z), np.zeros(5, dtype=int), ignore_index=0)
    assert np.isnan(all_ignored.item())  # 0/0, as PyTorch gives


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(weight=[1.0, 2.0]), ValueError, r"cross_entropy: got weight of shape \(2,\) .*expected \(3,\)"),
    (dict(label_smoothing=1.5), ValueError, r"cross_entropy: got label_smoothing=1.5; expected a finite number"),
    (dict(ignore_index=1.5), ValueError, r"cross_entropy: got ignore_index=1.5; expected an integer"),
    (dict(weight=mg.Tensor(np.ones(3), requires_grad=True)), TypeError, r"weight Tensor that requires grad"),
])
def test_cross_entropy_options_are_checked_by_name(kwargs, error, message):
    with pytest.raises(error, match=message):
        mg.cross_entropy(mg.Tensor(np.ones((2, 3))), np.array([0, 2]), **kwargs)
