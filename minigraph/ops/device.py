"""Moving a tensor between devices or dtypes, differentiably: what ``Tensor.to``, ``float()`` and
``double()`` run."""

from __future__ import annotations

from typing import Any

import numpy

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


@verified
class Cast(Function):
    """x of one float dtype -> the same values in ``dtype`` (rounded, to float32); dX = dY cast back."""

    __slots__ = ("dtype", "source")
    op = "cast"

    def __init__(self, dtype: numpy.dtype) -> None:
        self.dtype = dtype

    def forward(self, x: Any) -> Any:
        self.source = x.dtype
        return x.astype(self.dtype)

    def backward(self, grad_output: Any) -> tuple:
        return (grad_output.astype(self.source),)


def cast(x: Tensor, dtype: Any) -> Tensor:
    """``x`` in ``dtype`` (float32 or float64), recorded in the graph; ``x`` itself when it has that
    dtype already, as PyTorch's ``to`` returns self. Also ``x.float()``, ``x.double()`` and
    ``x.to(dtype)``."""
    x = engine.as_tensor("cast", "x", x)
    try:
        resolved = None if dtype is None else numpy.dtype(dtype)  # numpy.dtype(None) is float64
    except TypeError:
        resolved = None
    if resolved is None or resolved.name not in ("float32", "float64"):
        raise TypeError(f"cast: got dtype={dtype!r}; expected numpy.float32 or numpy.float64, the "
                        f"dtypes a Tensor holds")
    if resolved == x.dtype:
        return x
    return apply(Cast(resolved), x)


engine._to_device = to
engine._cast = cast
