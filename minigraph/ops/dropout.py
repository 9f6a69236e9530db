"""Inverted dropout: zero each element with probability p, scale the rest by 1/(1 − p)."""

from __future__ import annotations

from typing import Any

from .. import checks
from ..backend import default_generator, device_of_generator, get_array_module
from ..engine import Tensor, apply, as_tensor, verified
from .elementwise import Mul
from .shape import data_array

@verified
class Dropout(Mul):
    """x: any shape, M: x's shape -> y = x ⊙ M, M = 1[keep] / (1 − p) (all 0 when p = 1).

    dX = dY ⊙ M: the backward of ``mul`` with the mask as a constant.
    """

    __slots__ = ()
    op = "dropout"


def dropout(x: Tensor, p: float = 0.5, training: bool = True, generator: Any = None,
            keep: Any = None) -> Tensor:
    """Zero each element of x with probability ``p`` and scale the others by 1/(1 − p), so the
    expected value is unchanged. x: any shape -> same shape.

    Identity (x itself, nothing drawn) when ``training`` is False or p = 0; zeros when p = 1
    (PyTorch's behaviour). ``generator``: a ``numpy.random.Generator`` for a tensor on the
    CPU, a ``cupy.random.Generator`` on the GPU (``xp.random.default_rng(seed)``), or None for
    the device's default generator (``minigraph.manual_seed`` seeds it); the mask is
    drawn on the tensor's device from ``generator.random``. ``keep`` (a boolean array of x's
    shape, True = kept) replaces the draw, for tests and for replaying a mask.
    """
    x = as_tensor("dropout", "x", x)
    p = checks.real("dropout", "p", p, low=0.0, high=1.0, example="0.5")
    training = checks.flag("dropout", "training", training)  # "no" would mean training
    if not training or (p == 0 and keep is None):
        return x
    xp = get_array_module(x.data)
    if keep is None:
        if generator is None:
            generator = default_generator(xp)
        elif (drawn_on := device_of_generator(generator, "dropout")) != x.device:
            raise TypeError(f"dropout: the generator draws on {drawn_on!r} "
                            f"but x is on {x.device!r}; expected one device: make it with "
                            f"{'cupy' if x.device == 'gpu' else 'numpy'}.random.default_rng(seed)")
        keep = generator.random(x.data.shape, dtype=x.data.dtype) >= p
    else:
        keep = data_array("dropout", "keep", keep, x.device)
        if keep.dtype.kind != "b" or keep.shape != x.data.shape:
            raise ValueError(f"dropout: keep is {keep.dtype} of shape {keep.shape}; expected a "
                             f"boolean mask of x's shape {x.data.shape}")
    mask = keep.astype(x.data.dtype)
    mask *= 0.0 if p == 1 else 1.0 / (1.0 - p)
    return apply(Dropout(x.data.shape, x.data.shape), x, as_tensor("dropout", "mask", mask, like=x))
