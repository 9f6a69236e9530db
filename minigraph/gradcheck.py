"""The gradient check: analytic backward against float64 central differences."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy

from . import backend, checks
from .engine import Tensor, no_grad


class GradcheckError(AssertionError):
    """A backward disagrees with finite differences (or returned a malformed gradient)."""


def _projected(fn: Callable[..., Tensor], inputs: Sequence[Tensor], weights: Any) -> float:
    """⟨fn(inputs), weights⟩ as a Python float, without recording a graph."""
    with no_grad():
        out = fn(*inputs).data
    xp = backend.get_array_module(out)
    return float(xp.vdot(out.reshape(-1), weights.reshape(-1)))


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
) -> bool:
    """Check ``fn``'s backward against central differences, for every input that requires grad.

    fn(*inputs) must return a Tensor. A non-scalar output is reduced to the
    scalar ⟨output, V⟩ with V a random (non-uniform) upstream gradient, so that
    gradients which cancel under a uniform V (batch norm's do) are still tested.
    Inputs must be float64 (float32 differences fail for the wrong reasons).
    Works on NumPy and CuPy inputs; an element passes when
    |analytic − numeric| <= atol + rtol·|numeric|.

    Returns True, or raises GradcheckError naming the input, the worst index,
    and the analytic and numeric values. The inputs' ``.grad`` are restored.
    """
    if isinstance(inputs, Tensor) or not isinstance(inputs, Sequence):
        raise TypeError(f"gradcheck: inputs is a {type(inputs).__name__}; expected a list or "
                        f"tuple of the arguments of fn, e.g. [x, w]")
    eps = checks.real("gradcheck", "eps", eps, low=0.0, low_open=True, example="1e-6")
    atol = checks.real("gradcheck", "atol", atol, low=0.0, example="1e-5")
    rtol = checks.real("gradcheck", "rtol", rtol, low=0.0, example="1e-3")
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad; expected at least one Tensor "
                         "with requires_grad=True")
    for i in checked:
        if not inputs[i].is_leaf:
            raise ValueError(f"gradcheck: input {i} was computed by {inputs[i].grad_fn.name}; "
                             f"expected leaf tensors (compute it inside fn instead)")
        if inputs[i].data.dtype != numpy.float64:
            raise TypeError(f"gradcheck: input {i} has dtype {inputs[i].data.dtype}; expected "
                            f"float64 (finite differences in lower precision are too noisy)")
        # Each element is perturbed in place through a flat view, so the array must take writes
        # and the view must be the array itself (a reshape of a strided array is a copy).
        if not backend.can_update_in_place(inputs[i].data):
            raise ValueError(f"gradcheck: input {i} is read-only or a broadcast view, and its "
                             f"elements are perturbed in place; expected a writable array, e.g. "
                             f"Tensor(array.copy(), requires_grad=True)")
        if not inputs[i].data.flags.c_contiguous:
            raise ValueError(f"gradcheck: input {i} is not C-contiguous, so its elements cannot be "
                             f"perturbed through a flat view; expected a contiguous array, e.g. "
                             f"Tensor(numpy.ascontiguousarray(array), requires_grad=True)")

    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn returned {type(out).__name__}; expected a Tensor")
    xp = backend.get_array_module(out.data)
    rng = numpy.random.default_rng(seed)
    weights = xp.asarray(rng.uniform(0.5, 1.5, out.data.shape) * rng.choice([-1.0, 1.0], out.data.shape),
                         dtype=out.data.dtype)
    if not out.requires_grad:
        raise GradcheckError("gradcheck: fn's output does not require grad, so no input's "
                             "gradient reaches it")

    saved_grads = [inputs[i].grad for i in checked]
    for i in checked:
        inputs[i].grad = None
    try:
        out.backward(weights)
        analytic = [inputs[i].grad for i in checked]
    finally:
        for i, g in zip(checked, saved_grads):
            inputs[i].grad = g

    for i, grad in zip(checked, analytic):
        x = inputs[i]
        if grad is None:
            grad = xp.zeros_like(x.data)  # not reached by backward: it claims a zero gradient
        if grad.shape != x.data.shape or grad.dtype != x.data.dtype:
            raise GradcheckError(f"gradcheck: input {i}: backward gave shape {grad.shape} "
                                 f"dtype {grad.dtype}; expected {x.data.shape} {x.data.dtype}")
        flat = x.data.reshape(-1)  # a view: perturbing it perturbs the input
        numeric = numpy.empty(flat.size)
        for k in range(flat.size):
            original = flat[k].copy()  # exactly the stored value, restored even if fn raises
            try:
                flat[k] = original + eps
                plus = _projected(fn, inputs, weights)
                flat[k] = original - eps
                minus = _projected(fn, inputs, weights)
            finally:
                flat[k] = original
            numeric[k] = (plus - minus) / (2 * eps)
        numeric = numeric.reshape(x.data.shape)
        analytic_host = backend.to_device(grad, "cpu").astype(numpy.float64)
        gap = numpy.abs(analytic_host - numeric)
        bad = ~(gap <= atol + rtol * numpy.abs(numeric))  # NaN anywhere counts as bad
        if bad.any():
            worst = numpy.unravel_index(
                numpy.argmax(numpy.where(bad, numpy.nan_to_num(gap, nan=numpy.inf), -1.0)), gap.shape)
            raise GradcheckError(
                f"gradcheck: input {i} (shape {x.data.shape}): worst index "
                f"{tuple(int(j) for j in worst)}: analytic {float(analytic_host[worst])!r} vs "
                f"numeric {float(numeric[worst])!r} (atol={atol}, rtol={rtol})"
            )
    return True
