"""Matrix product of two 2-D operands: Y = A B."""

from __future__ import annotations

from typing import Any

from ..engine import Function, Tensor, apply, as_tensors, verified


def product(a: Any, b: Any) -> Any:
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


def matmul_grads(fn: Function, grad_output: Any) -> tuple[Any, Any]:
    """dA = dY Bᵀ and dB = Aᵀ dY for a node that saved (A, B) and read needs_grad[:2]."""
    a, b = fn.saved[:2]
    needs_a, needs_b = fn.needs_grad[:2]
    return (product(grad_output, b.T) if needs_a else None,
            product(a.T, grad_output) if needs_b else None)


def save_for_matmul(fn: Function, a: Any, b: Any) -> tuple[Any, Any]:
    """What ``matmul_grads`` will read: dA needs only B and dB needs only A."""
    needs_a, needs_b = fn.needs_grad[:2]
    return (a if needs_b else None, b if needs_a else None)


@verified
class MatMul(Function):
    """a: (n, k), b: (k, m) -> (n, m).

    dA = dY Bᵀ,  dB = Aᵀ dY.
    """

    __slots__ = ()
    op = "matmul"

    def forward(self, a: Any, b: Any) -> Any:
        self.saved = save_for_matmul(self, a, b)
        return product(a, b)

    def backward(self, grad_output: Any) -> tuple:
        return matmul_grads(self, grad_output)


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
