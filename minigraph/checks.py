"""Checks of numeric arguments, shared by ops, layers and optimizers: one rule on both devices.

A number may be a Python number, a NumPy scalar, or a 0-d array of NumPy or CuPy. The last
matters because CuPy's reductions return 0-d device arrays, never scalars, so ``eps=x.var()``
or ``lr=schedule[step]`` must be accepted on the GPU exactly as on the CPU. Booleans are not
numbers here (``True`` as a learning rate is a bug). Converting a device value to a Python
number syncs the device once, at argument time, never inside an op's math.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def _scalar(value: Any, kinds: str) -> Any:
    """``value`` as a Python number if it is one of ``kinds`` ('f' real, 'i' integer), else None."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    if getattr(value, "ndim", None) == 0 and hasattr(value, "dtype"):  # NumPy scalar or 0-d array
        kind = value.dtype.kind
        if kind in "iu" and ("i" in kinds or "f" in kinds):
            return int(value)
        if kind == "f" and "f" in kinds:
            return float(value)
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if "f" in kinds and isinstance(value, numbers.Real):
        return float(value)
    return None


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    return f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def real(owner: str, name: str, value: Any, low: float = -math.inf, high: float = math.inf,
         low_open: bool = False, high_open: bool = False, example: str = "",
         infinite: bool = False) -> float:
    """``value`` as a Python float in the interval, or ValueError naming ``owner`` and ``name``.

    The interval is [low, high] by default; ``low_open`` / ``high_open`` exclude an end. The
    number must be finite unless ``infinite``: then an infinite end of the interval belongs to
    it (``max_norm=math.inf``, "no limit", as PyTorch's clip_grad_norm_ takes it). NaN never does.
    """
    number = _scalar(value, "f")
    ok = number is not None and (math.isfinite(number) or (infinite and not math.isnan(number))) \
        and (number > low if low_open else number >= low) and (number < high if high_open else number <= high)
    if not ok:
        hint = f", e.g. {example}" if example else ""
        # An infinite end is shown open unless infinity is accepted: [0.0, inf) versus [0.0, inf].
        interval = _interval(low, high, low_open, high_open or (high == math.inf and not infinite))
        raise ValueError(f"{owner}: got {name}={value!r}; expected a {'' if infinite else 'finite '}"
                         f"number in {interval}{hint}")
    return float(number)


def integer(owner: str, name: str, value: Any, low: int = 0, high: float = math.inf) -> int:
    """``value`` as a Python int in [low, high), or ValueError naming ``owner`` and ``name``."""
    number = _scalar(value, "i")
    if number is None or not low <= number < high:
        bound = f"[{low}, {high})" if high != math.inf else f">= {low}"
        raise ValueError(f"{owner}: got {name}={value!r}; expected an integer {bound}")
    return int(number)


def flag(owner: str, name: str, value: Any) -> bool:
    """``value`` as a Python bool, or a TypeError naming ``owner`` and ``name``.

    True, False, NumPy's booleans and 0-d boolean arrays (what ``nn.load`` gives back) are
    flags; 'no', 0 and None are not, as in PyTorch, where a truthy string would mean True.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_" or \
            (getattr(value, "ndim", None) == 0 and getattr(value, "dtype", None) == bool):
        return bool(value)
    raise TypeError(f"{owner}: got {name}={value!r}; expected True or False")


def axes(owner: str, value: Any, ndim: int, name: str = "axis") -> tuple[int, ...]:
    """``value`` (an int, a sequence of ints, or None for all) as axes of an ``ndim``-dimensional array.

    Negative axes count from the end, as in NumPy. Returns them as non-negative ints in the
    order given; a repeated or out-of-range axis is a ValueError naming ``owner`` and ``name``.
    """
    if value is None:
        return tuple(range(ndim))
    many = isinstance(value, (tuple, list))
    resolved = []
    for item in (value if many else (value,)):
        number = _scalar(item, "i")
        if number is None or not -ndim <= number < ndim:
            valid = f"in [{-ndim}, {ndim})" if ndim else "none (the tensor is 0-d)"
            raise ValueError(f"{owner}: got {name}={value!r}; expected integers {valid} for a "
                             f"tensor of {ndim} dimensions")
        resolved.append(number % ndim)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"{owner}: got {name}={value!r}, which names an axis twice; expected "
                         f"distinct axes")
    return tuple(resolved)
