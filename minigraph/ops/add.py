"""Broadcasting addition: y = a + b, e.g. a bias (p,) over a batch (N, p)."""

from __future__ import annotations

from typing import Any

import numpy

from ..backend import column_sums, get_array_module
from ..engine import Function, Tensor, apply, as_tensors, verified


def sum_to_shape(grad: Any, shape: tuple) -> Any:
    """Sum ``grad`` over the axes that broadcasting stretched, giving ``shape``.

    This is the adjoint of broadcasting ``shape`` up to ``grad.shape``: the
    leading axes broadcasting added, and every axis where ``shape`` has 1.
    """
    if grad.shape == shape:
        return grad
    if grad.ndim == 2 and grad.shape[1:] == shape:  # a bias (p,) added to every row of (N, p)
        return column_sums(grad)
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, size in enumerate(shape) if size == 1 and grad.shape[lead + i] != 1
    )
    return grad.sum(axis=axes).reshape(shape)


class Broadcasting(Function):
    """Base of the binary elementwise nodes: a: shape A, b: shape B, broadcastable -> broadcast(A, B).

    It keeps both operand shapes, so each backward can sum its gradients back to them.
    """

    __slots__ = ("a_shape", "b_shape")

    def __init__(self, a_shape: tuple, b_shape: tuple) -> None:
        self.a_shape = a_shape
        self.b_shape = b_shape


def broadcasting(node: type, op: str, a: Any, b: Any) -> Tensor:
    """Check that ``a`` and ``b`` broadcast and apply the ``Broadcasting`` subclass ``node``.

    Either side may be a Python number, taken as a constant of the other's dtype; raw arrays join
    the tensor operand's device.
    """
    a, b = as_tensors(op, ("a", "b"), (a, b))
    a_shape, b_shape = a.data.shape, b.data.shape
    if a_shape != b_shape:
        try:
            numpy.broadcast_shapes(a_shape, b_shape)
        except ValueError:
            raise ValueError(
                f"{op}: cannot broadcast shapes {a_shape} and {b_shape}; expected shapes that "
                f"agree or are 1 in every trailing dimension, e.g. (N, p) and (p,)"
            ) from None
    return apply(node(a_shape, b_shape), a, b)


@verified
class Add(Broadcasting):
    """a: shape A, b: shape B, broadcastable -> y: broadcast(A, B).

    dA = sum_to_shape(dY, A),  dB = sum_to_shape(dY, B).
    """

    __slots__ = ()
    op = "add"

    def forward(self, a: Any, b: Any) -> Any:
        y = a + b
        # NumPy returns a scalar, not a 0-d array, for two 0-d operands (a loss plus a penalty).
        return y if y.ndim else get_array_module(a).asarray(y)

    def backward(self, grad_output: Any) -> tuple:
        needs_a, needs_b = self.needs_grad
        return (
            sum_to_shape(grad_output, self.a_shape) if needs_a else None,
            sum_to_shape(grad_output, self.b_shape) if needs_b else None,
        )


def add(a: Tensor, b: Tensor) -> Tensor:
    """``a + b`` with NumPy broadcasting; each gradient is summed back to its operand's shape.

    Either side may be a Python number, taken as a constant of the other's dtype.
    """
    return broadcasting(Add, "add", a, b)
