"""Rectified linear unit: y = max(x, 0)."""

from __future__ import annotations

from typing import Any

from ..backend import get_array_module
from ..engine import Function, Tensor, apply, as_tensor, verified


@verified
class ReLU(Function):
    """x: any shape -> y: same shape.

    dX = dY ⊙ 1[y > 0]   (the subgradient at 0 is taken as 0, as in PyTorch).
    """

    __slots__ = ()
    op = "relu"

    def forward(self, x: Any) -> Any:
        y = get_array_module(x).maximum(x, 0)
        self.saved = (y,)  # the mask y > 0 is recomputed from y: no extra array kept
        return y

    def backward(self, grad_output: Any) -> tuple:
        (y,) = self.saved
        return (grad_output * (y > 0),)


def relu(x: Tensor) -> Tensor:
    """Elementwise max(x, 0). x: any shape."""
    return apply(ReLU(), as_tensor("relu", "x", x))
