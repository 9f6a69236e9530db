"""Matrix product of two 2-D operands: Y = A B."""

from __future__ import annotations

from typing import Any

from ..engine import Function, Tensor, apply, as_tensors, _reuses_grad_buffers


def _product(a: Any, b: Any) -> Any:
    """a: (n, k) @ b: (k, m) -> (n, m).

    With k == 1 the product is an outer product, which BLAS runs as a general
    GEMM several times slower than one broadcasting multiply (a net's last
    layer, (N, p) @ (p, 1), meets it in backward as dY (N, 1) @ Wᵀ (1, p)).
    Each entry is then the single product a_i b_j either way, so the values
    are equal (BLAS may return +0.0 where the multiply gives −0.0).
    """
    if a.shape[1] == 1:
        return a * b
    return a @ b


class MatMul(Function):
    """a: (n, k), b: (k, m) -> (n, m).

    dA = dY Bᵀ,  dB = Aᵀ dY.
    """

    __slots__ = ()
    op = "matmul"

    def forward(self, a: Any, b: Any) -> Any:
        needs_a, needs_b = self.needs_grad[:2]  # Linear adds a third input, the bias
        # dA needs only B and dB needs only A: keep just what will be used.
        self.saved = (a if needs_b else None, b if needs_a else None)
        return _product(a, b)

    @_reuses_grad_buffers
    def backward(self, grad_output: Any, overwrite: bool = False) -> tuple:
        a, b = self.saved
        needs_a, needs_b = self.needs_grad[:2]
        grad_a = _product(grad_output, b.T) if needs_a else None
        grad_b = _product(a.T, grad_output) if needs_b else None
        return grad_a, grad_b


def check_matmul_shapes(op: str, a: Tensor, b: Tensor) -> None:
    """Raise ValueError naming ``op`` unless a: (n, k) and b: (k, m)."""
    if a.data.ndim != 2 or b.data.ndim != 2 or a.data.shape[1] != b.data.shape[0]:
        raise ValueError(
            f"{op}: got shapes {a.data.shape} and {b.data.shape}; expected 2-D operands "
            f"(n, k) and (k, m) whose inner sizes agree"
        )


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product ``a @ b`` of 2-D tensors: a: (n, k), b: (k, m) -> (n, m)."""
    a, b = as_tensors("matmul", ("a", "b"), (a, b))
    check_matmul_shapes("matmul", a, b)
    return apply(MatMul(), a, b)
