"""Gradient clipping, as ``torch.nn.utils``: ``clip_grad_norm_`` and ``clip_grad_value_``.

Imported as ``minigraph.nn.utils`` (``nn.py`` registers this module under that name, as
``os`` does with ``os.path``), so PyTorch's spellings work unchanged::

    from minigraph.nn.utils import clip_grad_norm_
    loss.backward()
    clip_grad_norm_(model.parameters(), max_norm=1.0)
    opt.step()

Both functions scale or clamp each ``.grad`` in place, after ``backward`` and before the
optimizer's ``step``. The engine never makes a leaf's ``.grad`` an array that anyone else holds
(the caller's ``backward(grad)``, a gradient passed through to two leaves, one a hook kept: it
copies those), so in-place edits stay within that ``.grad``. An array assigned by hand,
``p.grad = array``, is that array, as in PyTorch, and is clipped with it.

On the GPU nothing here waits for the device: the norm, the clipping coefficient and the
scaling are all device arrays, and no Python branch reads them. Only
``error_if_nonfinite=True`` brings the norm to the host, as PyTorch's does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy

from . import backend, checks
from .engine import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]

# PyTorch's guard against dividing by a zero norm: clip_coef = max_norm / (total_norm + 1e-6).
_NORM_EPSILON = 1e-6


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    """Scale the gradients of ``parameters`` in place so that their total norm is at most ``max_norm``.

    The total norm is the ``norm_type``-norm of every gradient flattened and concatenated,
    ‖g‖ₚ = (Σ |gᵢ|ᵖ)^(1/p), or max |gᵢ| for ``norm_type=math.inf``. Each gradient is multiplied
    by min(max_norm / (‖g‖ₚ + 1e-6), 1), always, as in PyTorch (by 1 when it is within the
    limit). ``parameters``: a Tensor or an iterable of Tensors (a generator is read once);
    those whose ``.grad`` is None are skipped. ``max_norm``: a number in [0, inf] (inf only
    measures). ``norm_type``: in (0, inf]. All gradients must share one device and dtype.

    Returns the total norm before clipping, a 0-d Tensor of the gradients' dtype on their
    device (with no gradients, 0 of the first parameter's dtype and device). A non-finite norm makes every gradient NaN (or 0), as in
    PyTorch; with ``error_if_nonfinite=True`` it is a RuntimeError instead, raised before
    anything changes, at the cost of one wait for the device.
    """
    name = "clip_grad_norm_"
    params = _parameter_list(name, parameters)
    max_norm = checks.real(name, "max_norm", max_norm, low=0.0, infinite=True, example="1.0")
    norm_type = checks.real(name, "norm_type", norm_type, low=0.0, low_open=True, infinite=True,
                            example="2.0 or math.inf")
    error_if_nonfinite = checks.flag(name, "error_if_nonfinite", error_if_nonfinite)
    grads = _gradients(name, params)
    if not grads:  # the parameters' dtype and device; without parameters, as Tensor(0.0)
        if not params:
            return Tensor(0.0)
        like = params[0].data
        return Tensor(backend.get_array_module(like).zeros((), dtype=like.dtype), device=params[0].device)
    xp = backend.get_array_module(grads[0])
    with numpy.errstate(over="ignore", invalid="ignore"):  # inf and NaN behave as in PyTorch, silently
        total = _total_norm(xp, grads, norm_type)
        if error_if_nonfinite and not bool(xp.isfinite(total)):  # the one host sync, asked for
            raise RuntimeError(
                f"{name}: the total norm of order {norm_type} of the gradients is {float(total)}, "
                f"not finite, so it cannot be clipped; no gradient was changed. Find the NaN/inf "
                f"gradient (e.g. a log of 0), or pass error_if_nonfinite=False to scale by it anyway")
        # A 0-d device array, never a Python number: deciding "clip or not" on the host would
        # wait for the device. Multiplying by exactly 1 leaves a gradient as it was.
        coefficient = xp.minimum(max_norm / (total + _NORM_EPSILON), 1.0)
        for grad in grads:
            grad *= coefficient
    return Tensor(xp.asarray(total), device=backend.device_of(grads[0]))


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp every gradient of ``parameters`` to [-clip_value, clip_value], in place.

    ``parameters``: a Tensor or an iterable of Tensors (a generator is read once); those
    whose ``.grad`` is None are skipped. ``clip_value``: a number in [0, inf]. All gradients
    must share one device and dtype. NaN stays NaN.
    """
    name = "clip_grad_value_"
    params = _parameter_list(name, parameters)
    clip_value = checks.real(name, "clip_value", clip_value, low=0.0, infinite=True, example="1.0")
    grads = _gradients(name, params)
    for grad in grads:
        backend.get_array_module(grad).clip(grad, -clip_value, clip_value, out=grad)


def _total_norm(xp: Any, grads: list[Any], norm_type: float) -> Any:
    """‖g‖ₚ over all of ``grads`` concatenated, as a 0-d array of their dtype, on their device.

    One reduction per gradient, then one over those partial results: concatenating the
    gradients would copy them all. Empty gradients add nothing (and max has no identity).
    """
    dtype = grads[0].dtype
    grads = [grad.reshape(-1) for grad in grads if grad.size]
    if not grads:
        return xp.zeros((), dtype=dtype)
    if norm_type == math.inf:
        return xp.stack([xp.abs(grad).max() for grad in grads]).max()
    if norm_type == 2.0:
        return xp.sqrt(xp.stack([backend.sum_of_squares(grad) for grad in grads]).sum())
    if norm_type == 1.0:
        return xp.stack([xp.abs(grad).sum() for grad in grads]).sum()
    return xp.stack([(xp.abs(grad) ** norm_type).sum() for grad in grads]).sum() ** (1.0 / norm_type)


def _parameter_list(owner: str, parameters: Any) -> list[Tensor]:
    """``parameters`` (a Tensor or an iterable of them) as a list, read once."""
    if isinstance(parameters, Tensor):
        return [parameters]
    try:
        iterator = iter(parameters)
    except TypeError:
        raise TypeError(f"{owner}: got parameters={parameters!r}, a {type(parameters).__name__}; "
                        f"expected a Tensor or an iterable of Tensors, e.g. model.parameters()") from None
    is_iterator = iterator is parameters
    params = list(iterator)  # outside the try: a TypeError inside a generator is its own
    for index, param in enumerate(params):
        if not isinstance(param, Tensor):
            hint = " (pass model.parameters(), not named_parameters())" if isinstance(param, tuple) else ""
            raise TypeError(f"{owner}: parameter {index} is a {type(param).__name__}; expected a "
                            f"Tensor{hint}")
    if is_iterator and not params:
        warnings.warn(f"{owner}: parameters is an empty iterator, so nothing was clipped (a "
                      f"generator such as model.parameters() can be read only once: was it used "
                      f"already?)", stacklevel=3)
    return params


def _gradients(owner: str, params: list[Tensor]) -> list[Any]:
    """The ``.grad`` arrays of ``params`` that are not None, checked before any is changed: one
    device, one dtype, each array once, each writable in place."""
    grads: list[Any] = []
    first: dict[int, int] = {}  # id(.grad) -> index of the first parameter holding it
    for index, param in enumerate(params):
        grad = param.grad
        if grad is None:
            continue
        if grads and (backend.device_of(grad) != backend.device_of(grads[0]) or grad.dtype != grads[0].dtype):
            raise TypeError(
                f"{owner}: the gradient of parameter {index} is {grad.dtype} on "
                f"{backend.device_of(grad)!r}, that of parameter {next(iter(first.values()))} "
                f"{grads[0].dtype} on {backend.device_of(grads[0])!r}; expected one dtype on one "
                f"device. Clip each group in its own call, or move the model first (model.to(device))")
        if id(grad) in first:
            raise ValueError(
                f"{owner}: parameters {first[id(grad)]} and {index} (shape {param.shape}) have one "
                f".grad array (the same parameter twice, or one .grad assigned to both); it would "
                f"be counted twice in the norm and scaled twice. Expected each parameter once, "
                f"e.g. model.parameters()")
        if not backend.can_update_in_place(grad):
            raise ValueError(
                f"{owner}: the .grad of parameter {index} (shape {param.shape}) is read-only or a "
                f"broadcast view, so it cannot be changed in place; nothing was changed. Assign "
                f"a writable copy first: p.grad = p.grad.copy()")
        first[id(grad)] = index
        grads.append(grad)
    return grads


def _clear_grads(params: Iterable[Tensor], set_to_none: bool) -> None:
    """Optimizer.zero_grad and Module.zero_grad: ``.grad`` to None, or its array zeroed in place.

    In place is safe: the engine gives each leaf a ``.grad`` of its own (it copies any array
    someone else may hold), so zeroing one changes no other array."""
    for param in params:
        if set_to_none:
            param.grad = None
        elif param.grad is not None:
            param.grad[...] = 0
