"""Elementwise ops: sub, mul, div, maximum, minimum (broadcasting), neg, pow, exp, log, tanh,
sigmoid, abs, sqrt, clamp.

Notation: X, A, B are the inputs, Y the output, dY the upstream gradient, ⊙ the
elementwise product. Every binary op broadcasts as NumPy does; its backward sums
each gradient back to its operand's shape with ``sum_to_shape`` (see ``add``).
A Python number on either side becomes a constant of the tensor's dtype.
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from .. import checks
from ..backend import get_array_module
from ..engine import Function, Tensor, apply, as_tensor, is_grad_enabled, verified, verified_variants
from .add import Broadcasting, broadcasting, sum_to_shape


# --- binary, broadcasting -------------------------------------------------------------------
@verified
class Sub(Broadcasting):
    """a: A, b: B -> y = a − b: broadcast(A, B).

    dA = sum_to_shape(dY, A),  dB = −sum_to_shape(dY, B).
    """

    __slots__ = ()
    op = "sub"

    def forward(self, a: Any, b: Any) -> Any:
        return a - b

    def backward(self, grad_output: Any) -> tuple:
        needs_a, needs_b = self.needs_grad
        return (sum_to_shape(grad_output, self.a_shape) if needs_a else None,
                -sum_to_shape(grad_output, self.b_shape) if needs_b else None)


@verified
class Mul(Broadcasting):
    """a: A, b: B -> y = a ⊙ b: broadcast(A, B).

    dA = sum_to_shape(dY ⊙ B, A),  dB = sum_to_shape(dY ⊙ A, B).
    """

    __slots__ = ()
    op = "mul"

    def forward(self, a: Any, b: Any) -> Any:
        needs_a, needs_b = self.needs_grad
        self.saved = (a if needs_b else None, b if needs_a else None)  # each gradient reads the other
        return a * b

    def backward(self, grad_output: Any) -> tuple:
        a, b = self.saved
        needs_a, needs_b = self.needs_grad
        return (sum_to_shape(grad_output * b, self.a_shape) if needs_a else None,
                sum_to_shape(grad_output * a, self.b_shape) if needs_b else None)


@verified
class Div(Broadcasting):
    """a: A, b: B -> y = a / b: broadcast(A, B).

    dA = sum_to_shape(dY / B, A),  dB = −sum_to_shape(dY ⊙ Y / B, B)   (Y / B = A / B²).
    """

    __slots__ = ()
    op = "div"

    def forward(self, a: Any, b: Any) -> Any:
        y = a / b
        self.saved = (b, y if self.needs_grad[1] else None)
        return y

    def backward(self, grad_output: Any) -> tuple:
        b, y = self.saved
        needs_a, needs_b = self.needs_grad
        grad_a = grad_output / b
        return (sum_to_shape(grad_a, self.a_shape) if needs_a else None,
                -sum_to_shape(grad_a * y, self.b_shape) if needs_b else None)


class _Extreme(Broadcasting):
    """a: A, b: B -> y = the elementwise larger (``maximum``) or smaller (``minimum``) of a and b.

    The gradient goes to the operand that was taken, and half to each where they tie, as in
    PyTorch; with a NaN on either side (y is NaN) both operands get it in full:

        dA = sum_to_shape(dY ⊙ wA, A),  dB = sum_to_shape(dY ⊙ wB, B),
        wA = 0 where a loses, ½ where a = b, else 1 (wB likewise).
    """

    __slots__ = ()
    pick: str  # "maximum" or "minimum"

    def forward(self, a: Any, b: Any) -> Any:
        self.saved = (a, b)
        return getattr(get_array_module(a), self.pick)(a, b)

    def backward(self, grad_output: Any) -> tuple:
        a, b = self.saved
        xp = get_array_module(grad_output)
        a_loses, b_loses = (a < b, a > b) if self.pick == "maximum" else (a > b, a < b)
        share = xp.where(a == b, 0.5, 1.0).astype(grad_output.dtype)  # ties split, as in PyTorch
        needs_a, needs_b = self.needs_grad
        return (sum_to_shape(grad_output * xp.where(a_loses, 0, share), self.a_shape) if needs_a else None,
                sum_to_shape(grad_output * xp.where(b_loses, 0, share), self.b_shape) if needs_b else None)


Maximum, Minimum = verified_variants(_Extreme, {"Maximum": "maximum", "Minimum": "minimum"})


def sub(a: Tensor, b: Tensor) -> Tensor:
    """``a - b`` with NumPy broadcasting. Either side may be a Python number."""
    return broadcasting(Sub, "sub", a, b)


def mul(a: Tensor, b: Tensor) -> Tensor:
    """``a * b`` (elementwise) with NumPy broadcasting. Either side may be a Python number."""
    return broadcasting(Mul, "mul", a, b)


def div(a: Tensor, b: Tensor) -> Tensor:
    """``a / b`` (elementwise) with NumPy broadcasting. Either side may be a Python number.

    Division by zero gives inf or nan, as in NumPy and PyTorch; nothing checks for it.
    """
    return broadcasting(Div, "div", a, b)


def maximum(a: Tensor, b: Tensor) -> Tensor:
    """The elementwise larger of a and b, with NumPy broadcasting (NaN if either is NaN, as in
    PyTorch). Ties split the gradient in half. Either side may be a Python number."""
    return broadcasting(Maximum, "maximum", a, b)


def minimum(a: Tensor, b: Tensor) -> Tensor:
    """The elementwise smaller of a and b, as ``maximum``."""
    return broadcasting(Minimum, "minimum", a, b)


# --- unary -----------------------------------------------------------------------------------
@verified
class Neg(Function):
    """x: any shape -> y = −x.  dX = −dY."""

    __slots__ = ()
    op = "neg"

    def forward(self, x: Any) -> Any:
        return -x

    def backward(self, grad_output: Any) -> tuple:
        return (-grad_output,)


class FromOutput(Function):
    """A unary node whose derivative is a function of its output: dX = dY ⊙ f′, f′ in terms of Y.

    Subclasses give ``compute(xp, x)`` and ``derivative(y)``; only Y is kept for backward.
    ``@verified`` marks one class, never its subclasses: each of this package's subclasses is
    decorated and gradchecked on its own, and anyone else's is checked at run time.
    """

    __slots__ = ()

    def compute(self, xp: Any, x: Any) -> Any:
        raise NotImplementedError

    def derivative(self, y: Any) -> Any:
        raise NotImplementedError

    def forward(self, x: Any) -> Any:
        y = self.compute(get_array_module(x), x)
        self.saved = (y,)
        return y

    def backward(self, grad_output: Any) -> tuple:
        (y,) = self.saved
        return (grad_output * self.derivative(y),)


@verified
class Exp(FromOutput):
    """x: any shape -> y = eˣ.  dX = dY ⊙ Y."""

    __slots__ = ()
    op = "exp"

    def compute(self, xp: Any, x: Any) -> Any:
        return xp.exp(x)

    def derivative(self, y: Any) -> Any:
        return y


@verified
class Tanh(FromOutput):
    """x: any shape -> y = tanh x.  dX = dY ⊙ (1 − Y²)."""

    __slots__ = ()
    op = "tanh"

    def compute(self, xp: Any, x: Any) -> Any:
        return xp.tanh(x)

    def derivative(self, y: Any) -> Any:
        return 1 - y * y


def stable_sigmoid(xp: Any, x: Any, e: Any = None) -> Any:
    """σ(x) = 1 / (1 + e⁻ˣ) for any x without overflow; ``e``: e^(−|x|) if already computed."""
    # e^(−|x|) never overflows, and σ(−|x|) = e/(1 + e) keeps its relative precision far
    # into the tail; σ(x) = 1 − σ(−x) for x >= 0.
    if e is None:
        e = xp.exp(-xp.abs(x))
    low = e / (1 + e)
    return xp.where(x >= 0, 1 - low, low)


def stable_softplus(xp: Any, z: Any) -> tuple[Any, Any]:
    """(log(1 + e^z), e^(−|z|)) for any z without overflow: log(1 + e^z) = max(z, 0) +
    log(1 + e^(−|z|)). The second is what ``stable_sigmoid`` needs, for a backward to reuse."""
    e = xp.exp(-xp.abs(z))
    return xp.maximum(z, 0) + xp.log1p(e), e


@verified
class Sigmoid(FromOutput):
    """x: any shape -> y = σ(x) = 1 / (1 + e⁻ˣ).  dX = dY ⊙ Y ⊙ (1 − Y)."""

    __slots__ = ()
    op = "sigmoid"

    def compute(self, xp: Any, x: Any) -> Any:
        return stable_sigmoid(xp, x)

    def derivative(self, y: Any) -> Any:
        return y * (1 - y)


@verified
class Sqrt(FromOutput):
    """x: any shape, x >= 0 -> y = √x.  dX = dY / (2Y)  (inf at x = 0, nan for x < 0, as in PyTorch)."""

    __slots__ = ()
    op = "sqrt"

    def compute(self, xp: Any, x: Any) -> Any:
        return xp.sqrt(x)

    def derivative(self, y: Any) -> Any:
        return 0.5 / y


@verified
class Abs(Function):
    """x: any shape -> y = |x|.  dX = dY ⊙ sign(X)  (0 at x = 0 and at x = NaN, as in PyTorch)."""

    __slots__ = ()
    op = "abs"

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        # PyTorch's sign of NaN is 0, NumPy's NaN: without the 0, a NaN entry whose output is
        # dropped downstream (dY = 0 there) would still get 0 · NaN = NaN as its gradient.
        self.saved = (xp.nan_to_num(xp.sign(x), nan=0.0),)
        return xp.abs(x)

    def backward(self, grad_output: Any) -> tuple:
        (sign,) = self.saved
        return (grad_output * sign,)


@verified
class Clamp(Function):
    """x: any shape -> y = min(max(x, low), high), either bound may be absent.

    dX = dY where low <= x <= high (bounds included, as in PyTorch), else 0. With low > high
    every y is high, and no gradient passes.
    """

    __slots__ = ("low", "high")
    op = "clamp"

    def __init__(self, low: float | None, high: float | None) -> None:
        self.low = low
        self.high = high

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        inside = None
        y = x
        if self.low is not None:
            y = xp.maximum(y, self.low)
            inside = x >= self.low
        if self.high is not None:
            y = xp.minimum(y, self.high)
            inside = x <= self.high if inside is None else inside & (x <= self.high)
        self.saved = (inside,)
        return y

    def backward(self, grad_output: Any) -> tuple:
        (inside,) = self.saved
        return (grad_output * inside,)


@verified
class Log(Function):
    """x: any shape, x > 0 -> y = ln x.  dX = dY / X.

    ln 0 = −inf and ln of a negative number is nan, as in NumPy and PyTorch.
    """

    __slots__ = ()
    op = "log"

    def forward(self, x: Any) -> Any:
        self.saved = (x,)
        return get_array_module(x).log(x)

    def backward(self, grad_output: Any) -> tuple:
        (x,) = self.saved
        return (grad_output / x,)


@verified
class Pow(Function):
    """x: any shape, p a number -> y = xᵖ.  dX = dY ⊙ p xᵖ⁻¹  (0 when p = 0, as in PyTorch).

    A negative base with a non-integer exponent gives nan, as in NumPy and PyTorch.
    """

    __slots__ = ("exponent",)
    op = "pow"

    def __init__(self, exponent: float) -> None:
        self.exponent = exponent

    def forward(self, x: Any) -> Any:
        self.saved = (x,)
        return x ** self.exponent

    def backward(self, grad_output: Any) -> tuple:
        (x,) = self.saved
        p = self.exponent
        if p == 0:  # p·x⁻¹ would be 0·inf = nan at x = 0; the derivative of x⁰ = 1 is 0
            return (get_array_module(x).zeros_like(x),)
        return (grad_output * (p * x ** (p - 1)),)


@verified
class PowOfNumber(FromOutput):
    """c a positive number, x: any shape -> y = cˣ.  dX = dY ⊙ Y ln c."""

    __slots__ = ("base",)
    op = "pow"

    def __init__(self, base: float) -> None:
        self.base = base

    def compute(self, xp: Any, x: Any) -> Any:
        return xp.power(self.base, x).astype(x.dtype, copy=False)

    def derivative(self, y: Any) -> Any:
        return y * math.log(self.base)


def neg(x: Tensor) -> Tensor:
    """``-x``. x: any shape."""
    return apply(Neg(), as_tensor("neg", "x", x))


def exp(x: Tensor) -> Tensor:
    """Elementwise eˣ. x: any shape."""
    return apply(Exp(), as_tensor("exp", "x", x))


def log(x: Tensor) -> Tensor:
    """Elementwise natural logarithm. x: any shape, positive."""
    return apply(Log(), as_tensor("log", "x", x))


def sqrt(x: Tensor) -> Tensor:
    """Elementwise square root. x: any shape, non-negative (negative entries give nan)."""
    return apply(Sqrt(), as_tensor("sqrt", "x", x))


def abs(x: Tensor) -> Tensor:  # noqa: A001 (torch.abs's name)
    """Elementwise absolute value; also ``abs(t)``. x: any shape."""
    return apply(Abs(), as_tensor("abs", "x", x))


def clamp(x: Tensor, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002 (torch's names)
    """Each element limited to [min, max]; either bound may be None, not both. Also
    ``x.clamp(min, max)`` and ``clip``. x: any shape. The gradient passes where
    min <= x <= max (bounds included), as in PyTorch."""
    x = as_tensor("clamp", "x", x)
    if min is None and max is None:
        raise ValueError("clamp: got min=None and max=None; expected at least one bound, "
                         "e.g. clamp(x, min=0.0)")
    for name, bound in (("min", min), ("max", max)):
        # A bound is read as a number, so a 0-d Tensor that wants a gradient would silently get none.
        if isinstance(bound, Tensor) and bound.requires_grad and is_grad_enabled():
            raise TypeError(f"clamp: got {name}= a Tensor that requires grad; expected a number, as clamp "
                            f"passes no gradient to its bounds. For a learned bound use "
                            f"{'maximum' if name == 'min' else 'minimum'}(x, {name}), or pass {name}.detach()")
    bounds = [None if bound is None else checks.real("clamp", name, bound, infinite=True)
              for name, bound in (("min", min), ("max", max))]
    # Each bound as the dtype rounds it, which is how NumPy compares with it anyway; done once
    # here, a bound beyond float32's range (1e40) becomes the infinity it rounds to, quietly,
    # instead of an overflow warning at each use.
    with numpy.errstate(over="ignore"):
        bounds = [None if b is None else float(numpy.asarray(b, dtype=x.dtype)) for b in bounds]
    return apply(Clamp(*bounds), x)


clip = clamp


def tanh(x: Tensor) -> Tensor:
    """Elementwise hyperbolic tangent. x: any shape."""
    return apply(Tanh(), as_tensor("tanh", "x", x))


def sigmoid(x: Tensor) -> Tensor:
    """Elementwise logistic function 1 / (1 + e⁻ˣ), computed without overflow. x: any shape."""
    return apply(Sigmoid(), as_tensor("sigmoid", "x", x))


def pow(x: Tensor | float, exponent: Tensor | float) -> Tensor:  # noqa: A001 (torch.pow's name)
    """``x ** exponent`` where one side is a number: a tensor to a number's power (``x ** 2``,
    ``x ** 0.5``), or a positive number to a tensor's power (``2 ** x``). x: any shape.

    A tensor to a tensor's power is not supported; for a positive base write
    ``exp(b * log(a))``.
    """
    if isinstance(x, Tensor) and isinstance(exponent, Tensor):
        raise TypeError("pow: got a Tensor base and a Tensor exponent; expected a number on one "
                        "side (x ** 2, 2 ** x). For a positive base a, write exp(b * log(a))")
    if isinstance(exponent, Tensor):
        base = checks.real("pow", "base", x, low=0.0, low_open=True,
                           example="2 ** x; a non-positive base has no real power for every x")
        return apply(PowOfNumber(base), exponent)
    p = checks.real("pow", "exponent", exponent, example="x ** 2")
    return apply(Pow(p), as_tensor("pow", "x", x))
