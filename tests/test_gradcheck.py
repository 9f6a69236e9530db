"""gradcheck itself: it must catch wrong backwards, not only pass right ones."""

from __future__ import annotations

import numpy as np
import pytest

import minigraph as mg
from minigraph.ops.batch_norm import BatchNorm


class WrongScale(mg.Function):
    """y = 3x, with a backward that claims dy/dx = 2."""

    def forward(self, x):
        return 3 * x

    def backward(self, grad_output):
        return (2 * grad_output,)


class BatchNormFrozenStatistics(BatchNorm):
    """A classic mistake: treat μ and 1/σ as constants in the backward."""

    def backward(self, grad_output):
        centred, inv_std, gamma = self.saved
        return grad_output * (gamma * inv_std), None, None


def test_gradcheck_reports_the_input_index_and_values_of_a_wrong_backward(rng):
    x = mg.Tensor(rng.normal(size=(2, 3)), requires_grad=True)
    with pytest.raises(mg.GradcheckError, match=r"input 0 \(shape \(2, 3\)\): worst index \(\d, \d\): "
                                                r"analytic .* vs numeric"):
        mg.gradcheck(lambda x: mg.apply(WrongScale(), x), [x])


def test_gradcheck_catches_batch_norm_without_the_mean_and_variance_paths(rng, monkeypatch):
    monkeypatch.setenv("MINIGRAPH_FUSED", "0")  # the wrong backward reads the formula path's saved arrays
    x = mg.Tensor(rng.normal(size=(5, 3)), requires_grad=True)
    gamma, beta = mg.Tensor(np.ones(3)), mg.Tensor(np.zeros(3))
    frozen = lambda x: mg.apply(BatchNormFrozenStatistics(1e-5, 0, 0.1), x, gamma, beta)
    with pytest.raises(mg.GradcheckError, match="input 0"):
        mg.gradcheck(frozen, [x])
    right = lambda x: mg.apply(BatchNorm(1e-5, 0, 0.1), x, gamma, beta)
    assert mg.gradcheck(right, [x])


class SlightlyOff(mg.Function):
    """y = x, with a backward 1% too large: a mistake of a size the default tolerance must see."""

    def forward(self, x):
        return x.copy()

    def backward(self, grad_output):
        return (grad_output * 1.01,)


class RightOnlyForUniformUpstream(mg.Function):
    """y = x, with a backward that returns mean(dY) everywhere: right only when dY is uniform.

    Batch norm's dX is such a case (its mean and variance paths cancel a uniform dY), so
    gradcheck promises a non-uniform upstream gradient; this backward holds it to that."""

    def forward(self, x):
        return x.copy()

    def backward(self, grad_output):
        return (grad_output * 0 + grad_output.mean(),)


def test_gradcheck_catches_a_backward_one_percent_off_at_its_default_tolerance(rng):
    x = mg.Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    with pytest.raises(mg.GradcheckError, match="input 0"):
        mg.gradcheck(lambda x: mg.apply(SlightlyOff(), x), [x])


def test_gradcheck_catches_a_backward_that_is_right_only_for_a_uniform_upstream_gradient(rng):
    x = mg.Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    with pytest.raises(mg.GradcheckError, match="input 0"):
        mg.gradcheck(lambda x: mg.apply(RightOnlyForUniformUpstream(), x), [x])
    # The backward is right for a scalar output (one upstream value, uniform by force).
    assert mg.gradcheck(lambda x: mg.apply(RightOnlyForUniformUpstream(), x).sum(), [x])


def test_gradcheck_checks_only_inputs_that_require_grad_and_restores_grads(rng):
    a = mg.Tensor(rng.normal(size=(2, 2)), requires_grad=True)
    b = mg.Tensor(rng.normal(size=(2, 2)))
    a.grad = np.full((2, 2), 7.0)
    assert mg.gradcheck(mg.matmul, [a, b])
    np.testing.assert_array_equal(a.grad, 7.0)
    assert b.grad is None


def test_gradcheck_refuses_float32_inputs(rng):
    x = mg.Tensor(rng.normal(size=3).astype(np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="input 0 has dtype float32; expected float64"):
        mg.gradcheck(mg.relu, [x])


def test_gradcheck_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="no input requires grad"):
        mg.gradcheck(mg.relu, [mg.Tensor(np.ones(2))])


def test_gradcheck_rejects_non_leaf_inputs_a_zero_step_and_a_bare_tensor(rng):
    x = mg.Tensor(rng.normal(size=3), requires_grad=True)
    with pytest.raises(ValueError, match="input 0 was computed by relu; expected leaf tensors"):
        mg.gradcheck(mg.relu, [mg.relu(x)])
    with pytest.raises(ValueError, match="eps=0"):
        mg.gradcheck(mg.relu, [x], eps=0)
    with pytest.raises(TypeError, match="inputs is a Tensor; expected a list"):
        mg.gradcheck(mg.relu, x)
    with pytest.raises(ValueError, match=r"got eps='1e-6'; expected a finite number in \(0.0, inf\)"):
        mg.gradcheck(mg.relu, [x], eps="1e-6")  # was: '>' not supported between str and int


def test_gradcheck_refuses_inputs_it_cannot_perturb_in_place_before_calling_fn(on, device, rng):
    calls = []

    def fn(t):
        calls.append(1)
        return mg.relu(t)

    if device == "cpu":  # NumPy's read-only flag (CuPy has none)
        frozen = rng.normal(size=(2, 3))
        frozen.flags.writeable = False
        with pytest.raises(ValueError, match="input 0 is read-only or a broadcast view"):
            mg.gradcheck(fn, [mg.Tensor(frozen, requires_grad=True)])  # was NumPy's 'assignment
                                                                      # destination is read-only'
    strided = mg.Tensor(on(rng.normal(size=(3, 4)))[:, ::2], requires_grad=True)
    with pytest.raises(ValueError, match="input 0 is not C-contiguous"):
        mg.gradcheck(fn, [strided])
    assert not calls  # refused before fn ran, not after a backward pass


def test_gradcheck_restores_its_inputs_even_when_fn_raises_midway(on, rng):
    """gradcheck perturbs inputs in place (they may be the caller's arrays): an error must not
    leave one element shifted by eps."""
    data = on(rng.normal(size=(3, 2)))
    x = mg.Tensor(data, requires_grad=True)
    before = mg.backend.to_device(data, "cpu").copy()
    calls = []

    def flaky(t):
        calls.append(1)
        if len(calls) == 4:  # the first call builds the graph; fail inside the perturbation loop
            raise FloatingPointError("fn failed")
        return mg.relu(t)

    with pytest.raises(FloatingPointError):
        mg.gradcheck(flaky, [x])
    np.testing.assert_array_equal(mg.backend.to_device(x.data, "cpu"), before)
