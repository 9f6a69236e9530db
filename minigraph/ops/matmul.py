"""Matrix product of two 2-D operands: Y = A B."""

from __future__ import annotations

from typing import Any

from ..engine import Function, Tensor, apply, as_tensor


class MatMul(Function):
    """a: (n, k), b: (k, m) -> (n, m).

    dA = dY Bᵀ,  dB = Aᵀ dY.
    """

    __slots__ = ()
    op = "matmul"

    def forward(self, a: Any, b: Any) -> Any:
        needs_a, needs_b = self.needs_grad
        # dA needs only B and dB needs only A: keep just what will be used.
        self.saved = (a if needs_b else None, b if needs_a else None)
        return a @ b

    def backward(self, grad_output: Any) -> tuple:
        a, b = self.saved
        needs_a, needs_b = self.needs_grad
        grad_a = grad_output @ b.T if needs_a else None
        grad_b = a.T @ grad_output if needs_b else None
        return grad_a, grad_b


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product ``a @ b`` of 2-D tensors: a: (n, k), b: (k, m) -> (n, m)."""
    a = as_tensor("matmul", "a", a)
    b = as_tensor("matmul", "b", b)
    if a.data.ndim != 2 or b.data.ndim != 2 or a.data.shape[1] != b.data.shape[0]:
        raise ValueError(
            f"matmul: got shapes {a.data.shape} and {b.data.shape}; expected 2-D operands "
            f"(n, k) and (k, m) whose inner sizes agree"
        )
    return apply(MatMul(), a, b)
