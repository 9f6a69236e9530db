"""Moving a tensor between devices, differentiably: what ``Tensor.to`` runs."""

from __future__ import annotations

from typing import Any

from .. import engine
from ..backend import device_of, to_device
from ..engine import Function, Tensor, apply, verified


@verified
class ToDevice(Function):
    """x on one device -> the same values on ``device``; dX = dY moved back."""

    __slots__ = ("device", "source")
    op = "to"

    def __init__(self, device: str) -> None:
        self.device = device

    def forward(self, x: Any) -> Any:
        self.source = device_of(x)
        return to_device(x, self.device)

    def backward(self, grad_output: Any) -> tuple:
        return (to_device(grad_output, self.source),)


def to(x: Tensor, device: str) -> Tensor:
    """``x`` on ``device`` ('cpu' or 'gpu', already resolved), recorded in the graph."""
    return apply(ToDevice(device), x)


engine._to_device = to
