"""Every backward, node by node and as whole graphs, against float64 finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import minigraph as mg

from conftest import TIGHT

SHAPES = [(2, 1), (2, 3), (5, 1), (7, 4), (16, 3)]


def param(on, rng, *shape):
    return mg.Tensor(on(rng.normal(size=shape)), requires_grad=True)


@pytest.mark.parametrize("n,k,m", [(1, 1, 1), (2, 3, 4), (5, 1, 3), (4, 6, 2)])
def test_matmul_gradients_match_finite_differences(on, rng, n, k, m):
    assert mg.gradcheck(mg.matmul, [param(on, rng, n, k), param(on, rng, k, m)], **TIGHT)


@pytest.mark.parametrize("n,k,m", [(2, 1, 1), (3, 4, 2), (5, 3, 1), (4, 1, 3)])
def test_linear_gradients_match_finite_differences(on, rng, n, k, m):
    assert mg.gradcheck(mg.linear, [param(on, rng, n, k), param(on, rng, k, m), param(on, rng, m)], **TIGHT)


def test_linear_is_matmul_plus_bias_in_one_node(on, rng):
    x, w, b = param(on, rng, 6, 4), param(on, rng, 4, 3), param(on, rng, 3)
    fused, separate = mg.linear(x, w, b), x @ w + b
    np.testing.assert_array_equal(fused.numpy(), separate.numpy())
    assert fused.grad_fn.name == "linear" and mg.linear(x, w).grad_fn.name == "matmul"


@pytest.mark.parametrize("a_shape,b_shape", [
    ((4, 3), (3,)), ((3,), (4, 3)), ((4, 3), (4, 3)), ((4, 3), (1, 3)),
    ((4, 1), (1, 3)), ((2, 4, 3), (4, 1)), ((4, 3), ()),
    ((), ()),  # a loss plus a penalty: NumPy gives a scalar for 0-d + 0-d, the op an array
])
def test_add_broadcast_gradients_sum_back_to_each_operand(on, rng, a_shape, b_shape):
    a, b = param(on, rng, *a_shape), param(on, rng, *b_shape)
    assert mg.gradcheck(mg.add, [a, b], **TIGHT)
    out = mg.add(a, b)
    out.backward(on(rng.normal(size=out.shape)))
    assert a.grad.shape == a_shape and b.grad.shape == b_shape


def test_relu_gradient_matches_finite_differences_away_from_zero(on, rng):
    x = rng.normal(size=(6, 5))
    x[np.abs(x) < 0.05] = 0.5  # the kink at 0 has no derivative to check
    assert mg.gradcheck(mg.relu, [mg.Tensor(on(x), requires_grad=True)], **TIGHT)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_gradient_zero_at_and_below_zero_and_through_nan(on, rng, dtype):
    # PyTorch's rule: the upstream gradient is kept where not (x <= 0), so a NaN input keeps it
    # (NaN compares false) and the divergence stays visible in the gradients below.
    x = np.array([[-1.5, 0.0, 2.0], [np.nan, 3.0, -0.0]], dtype=dtype)
    upstream = rng.normal(size=x.shape).astype(dtype)
    t = mg.Tensor(on(x), requires_grad=True)
    mg.relu(t).backward(on(upstream))
    expected = np.where(np.isnan(x) | (x > 0), upstream, 0).astype(dtype)
    assert t.grad.dtype == dtype
    np.testing.assert_array_equal(mg.backend.to_device(t.grad, "cpu"), expected)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(2, 1), (7, 1), (5, 3), (6,)])
def test_mse_gradients_for_pred_and_target(on, rng, reduction, shape):
    pred, target = param(on, rng, *shape), param(on, rng, *shape)
    assert mg.gradcheck(lambda p, t: mg.mse_loss(p, t, reduction), [pred, target], **TIGHT)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_batch_norm_training_gradients(on, rng, shape, ddof, eps, fused_path):
    n, p = shape
    x = mg.Tensor(on(rng.normal(size=shape) * 3 + 2), requires_grad=True)
    gamma, beta = param(on, rng, p), param(on, rng, p)
    assert mg.gradcheck(lambda x, g, b: mg.batch_norm(x, g, b, eps=eps, ddof=ddof), [x, gamma, beta], **TIGHT)


def test_batch_norm_training_gradients_with_running_stats(on, rng, fused_path):
    x, gamma, beta = param(on, rng, 8, 3), param(on, rng, 3), param(on, rng, 3)
    running_mean, running_var = on(np.zeros(3)), on(np.ones(3))
    assert mg.gradcheck(lambda x, g, b: mg.batch_norm(x, g, b, running_mean, running_var),
                        [x, gamma, beta], **TIGHT)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (5, 4)])
def test_batch_norm_eval_gradients(on, rng, shape, fused_path):
    n, p = shape
    running_mean, running_var = on(rng.normal(size=p)), on(rng.uniform(0.5, 2.0, size=p))
    x, gamma, beta = param(on, rng, n, p), param(on, rng, p), param(on, rng, p)
    fn = lambda x, g, b: mg.batch_norm(x, g, b, running_mean, running_var, training=False)
    assert mg.gradcheck(fn, [x, gamma, beta], **TIGHT)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("wanted", ["x", "gamma", "beta", "x gamma", "x beta", "gamma beta"])
def test_batch_norm_gradients_when_only_some_inputs_want_them(on, rng, wanted, training,
                                                              fused_path):
    """A frozen input or scale (requires_grad=False) must not break the others' gradients:
    eval mode with only beta trainable once saved nothing and failed in backward."""
    running_mean, running_var = on(rng.normal(size=3)), on(rng.uniform(0.5, 2.0, size=3))
    inputs = [mg.Tensor(on(rng.normal(size=shape)), requires_grad=name in wanted.split())
              for name, shape in (("x", (5, 3)), ("gamma", (3,)), ("beta", (3,)))]
    fn = lambda x, g, b: mg.batch_norm(x, g, b, running_mean, running_var, training=training)
    assert mg.gradcheck(fn, inputs, **TIGHT)


def test_batch_norm_without_affine_parameters(on, rng, fused_path):
    assert mg.gradcheck(lambda x: mg.batch_norm(x, None, None), [param(on, rng, 6, 3)], **TIGHT)


@pytest.mark.parametrize("shape", [(1, 2, 2), (2, 3, 1), (3, 2, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients_for_sequences_of_channels(on, rng, shape, training, fused_path):
    """x: (N, C, L), normalised per channel over N·L values, through a transpose and reshape."""
    n, c, length = shape
    x = mg.Tensor(on(rng.normal(size=shape) * 3 + 2), requires_grad=True)
    gamma, beta = param(on, rng, c), param(on, rng, c)
    running_mean, running_var = on(rng.normal(size=c)), on(rng.uniform(0.5, 2.0, size=c))

    def normalised(x, g, b):
        return mg.batch_norm(x, g, b, running_mean, running_var, training=training, ddof=int(training))

    assert mg.gradcheck(normalised, [x, gamma, beta], **TIGHT)


@pytest.mark.parametrize("n,p1,p2", [(2, 1, 1), (10, 7, 4), (9, 3, 5)])
@pytest.mark.parametrize("ddof,eps", [(0, 1e-5), (1, 0.0)])
def test_question_net_as_one_graph(on, rng, n, p1, p2, ddof, eps):
    """The question's net: y = relu(BN(X Γ1)) Γ2, loss = MSE; all parameters at once."""
    X = param(on, rng, n, p1)
    G1, G2 = param(on, rng, p1, p2), param(on, rng, p2, 1)
    gamma = mg.Tensor(on(rng.uniform(0.5, 2.0, p2)), requires_grad=True)
    beta, y = param(on, rng, p2), mg.Tensor(on(rng.normal(size=(n, 1))))

    def net(X, G1, gamma, beta, G2):
        hidden = mg.relu(mg.batch_norm(X @ G1, gamma, beta, ddof=ddof, eps=eps))
        return mg.mse_loss(hidden @ G2, y)

    assert mg.gradcheck(net, [X, G1, gamma, beta, G2], **TIGHT)


def test_two_layer_net_with_bias_and_fan_out(on, rng):
    """Linear+bias -> BN -> ReLU twice, with a tensor used by two branches."""
    x = param(on, rng, 6, 3)
    w1, b1, w2, b2 = param(on, rng, 3, 4), param(on, rng, 4), param(on, rng, 4, 4), param(on, rng, 4)
    g1, be1 = param(on, rng, 4), param(on, rng, 4)
    target = mg.Tensor(on(rng.normal(size=(6, 4))))

    def net(x, w1, b1, w2, b2, g1, be1):
        h = mg.relu(mg.batch_norm(x @ w1 + b1, g1, be1))
        return mg.mse_loss(h @ w2 + b2 + h, target, "sum")  # h reaches the loss twice

    assert mg.gradcheck(net, [x, w1, b1, w2, b2, g1, be1], **TIGHT)
