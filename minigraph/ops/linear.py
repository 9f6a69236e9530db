"""A dense layer in one node: Y = X W + 1b (matmul and bias add fused)."""

from __future__ import annotations

from typing import Any

from ..backend import column_sums
from ..engine import Function, Tensor, apply, as_tensors, verified
from .matmul import check_matmul_shapes, matmul, matmul_grads, product, save_for_matmul


@verified
class Linear(Function):
    """x: (N, k), weight: (k, m), bias: (m,) -> y: (N, m).

    dX = dY Wᵀ,  dW = Xᵀ dY  (as for matmul),  db = 1ᵀ dY.

    The same values as ``add(matmul(x, w), b)``; one node instead of two, and
    the bias is added in place to the fresh product, which saves a pass over
    (N, m) and an (N, m) allocation per layer.
    """

    __slots__ = ()
    op = "linear"

    def forward(self, x: Any, weight: Any, bias: Any) -> Any:
        self.saved = save_for_matmul(self, x, weight)
        y = product(x, weight)
        y += bias
        return y

    def backward(self, grad_output: Any) -> tuple:
        grad_x, grad_weight = matmul_grads(self, grad_output)
        return grad_x, grad_weight, column_sums(grad_output) if self.needs_grad[2] else None


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight + bias``: x: (N, k), weight: (k, m), bias: (m,) or None -> (N, m).

    Note the weight layout: (in, out), as matrix algebra writes X W, not
    PyTorch's (out, in).
    """
    if bias is None:
        return matmul(x, weight)
    weight, x, bias = as_tensors("linear", ("weight", "x", "bias"), (weight, x, bias))
    check_matmul_shapes("linear", x, weight)
    if bias.data.shape != (weight.data.shape[1],):
        raise ValueError(f"linear: bias has shape {bias.data.shape}; expected "
                         f"({weight.data.shape[1]},) for weight of shape {weight.data.shape}")
    return apply(Linear(), x, weight, bias)
