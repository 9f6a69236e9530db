"""Weight initialisation in place, as ``torch.nn.init``: ``import minigraph.nn.init as init``.

Imported as ``minigraph.nn.init`` (``nn.py`` registers this module under that name, as it does
``minigraph.nn.functional`` and ``minigraph.nn.utils``), so PyTorch code reads unchanged::

    import minigraph.nn.init as init
    layer = nn.Linear(784, 256)
    init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    init.zeros_(layer.bias)

Each function fills a leaf ``Tensor`` (an ``nn.Parameter`` or a ``Tensor`` made from data) in
place and returns it: its array stays the same object, on its device and in its dtype, so an
optimizer that already holds the parameter goes on stepping it. The values are drawn on the host
in float64 and then cast and copied in, so a seed gives the same values on every device (up to
the cast to float32). A draw comes from ``generator`` (a ``numpy.random.Generator`` or an int
seed), or, without one, from minigraph's default NumPy generator, the one ``nn.Linear`` uses and
``minigraph.manual_seed`` seeds. Filling counts as an in-place update of the tensor, as an
optimizer's step does: a graph built from it before can no longer backward. Nothing is recorded.

The one difference from PyTorch, by design, is the fan convention. minigraph's 2-D weights are
(in_features, out_features), the transpose of PyTorch's, so for a 2-D tensor of shape (p, q)
here ``fan_in = p`` and ``fan_out = q`` (PyTorch reads ``fan_in = shape[1]``,
``fan_out = shape[0]``). ``kaiming_*_(linear.weight)`` therefore scales by ``in_features``, as
it does in PyTorch: the same layer gets the same distribution in both libraries. Tensors of
fewer than two dimensions have no fans (a ValueError, as in PyTorch); tensors of more than two
are refused, since minigraph has no convolutions whose (out, in, *kernel) layout would define
them. ``orthogonal_`` needs no fan: a uniformly random (semi-)orthogonal matrix and its transpose
have the same law, so the layout does not change what it draws.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Callable

import numpy

from . import backend, checks
from .engine import Tensor

__all__ = ["calculate_gain", "constant_", "kaiming_normal_", "kaiming_uniform_", "normal_", "ones_",
           "orthogonal_", "trunc_normal_", "uniform_", "xavier_normal_", "xavier_uniform_", "zeros_"]

# calculate_gain's table, as PyTorch's: the linear maps (convolutions included, by name) and the
# sigmoid keep the variance, tanh and ReLU get their classic gains, SELU PyTorch's empirical 3/4.
_GAINS = {name: 1.0 for name in ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                                 "conv_transpose2d", "conv_transpose3d", "sigmoid")}
_GAINS.update(tanh=5.0 / 3, relu=math.sqrt(2.0), selu=3.0 / 4)
_LEAKY_RELU_SLOPE = 0.01  # F.leaky_relu's default negative slope
_FAN_MODES = ("fan_in", "fan_out")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The gain that keeps activations' variance through ``nonlinearity``, as PyTorch's table.

    1 for ``'linear'``, the ``'conv*'`` names and ``'sigmoid'``; 5/3 for ``'tanh'``; √2 for
    ``'relu'``; √(2 / (1 + slope²)) for ``'leaky_relu'`` with ``param`` its negative slope
    (default 0.01); 3/4 for ``'selu'``. ``param`` is read only for ``'leaky_relu'``.
    """
    return _gain("calculate_gain", "param", nonlinearity, param)


def _gain(owner: str, param_name: str, nonlinearity: Any, param: Any) -> float:
    if nonlinearity == "leaky_relu":  # a str compared with ==: a non-str never matches
        slope = _LEAKY_RELU_SLOPE if param is None else checks.real(owner, param_name, param, example="0.2")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if isinstance(nonlinearity, str) and nonlinearity in _GAINS:
        return _GAINS[nonlinearity]
    names = ", ".join(repr(name) for name in [*_GAINS, "leaky_relu"])
    raise ValueError(f"{owner}: got nonlinearity={nonlinearity!r}; expected one of {names} "
                     f"(torch.nn.functional's lower-case names)")


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0,
             generator: numpy.random.Generator | int | None = None) -> Tensor:
    """Fill ``tensor`` (any shape) with draws from the uniform distribution U(a, b); a <= b."""
    name = "uniform_"
    target = _target(name, tensor)
    low, high = _interval(name, a, b)
    return _fill(tensor, target, _host_generator(name, generator).uniform(low, high, size=target.shape))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0,
            generator: numpy.random.Generator | int | None = None) -> Tensor:
    """Fill ``tensor`` (any shape) with draws from the normal distribution N(mean, std²); std >= 0."""
    name = "normal_"
    target = _target(name, tensor)
    mean = checks.real(name, "mean", mean)
    std = checks.real(name, "std", std, low=0.0)
    return _fill(tensor, target, _host_generator(name, generator).normal(mean, std, size=target.shape))


def constant_(tensor: Tensor, val: float) -> Tensor:
    """Fill ``tensor`` (any shape) with ``val``: a number the tensor's dtype holds (±inf too;
    NaN is refused, where PyTorch would fill with it)."""
    return _constant("constant_", tensor, val)


def ones_(tensor: Tensor) -> Tensor:
    """Fill ``tensor`` (any shape) with ones."""
    return _constant("ones_", tensor, 1.0)


def zeros_(tensor: Tensor) -> Tensor:
    """Fill ``tensor`` (any shape) with zeros."""
    return _constant("zeros_", tensor, 0.0)


def _constant(owner: str, tensor: Tensor, val: Any) -> Tensor:
    target = _target(owner, tensor)
    val = checks.real(owner, "val", val, infinite=True, example="0.1")
    largest = float(numpy.finfo(target.dtype).max)
    if math.isfinite(val) and abs(val) > largest:  # PyTorch refuses it too, rather than fill inf
        raise ValueError(f"{owner}: got val={val!r}, beyond the range of the tensor's dtype "
                         f"{target.dtype} (largest {largest:.6g}); expected a number it can hold")
    return _fill(tensor, target, numpy.full(target.shape, val))


def xavier_uniform_(tensor: Tensor, gain: float = 1.0,
                    generator: numpy.random.Generator | int | None = None) -> Tensor:
    """Glorot & Bengio (2010): fill ``tensor`` (fan_in, fan_out) with U(-bound, bound),
    bound = gain · √(6 / (fan_in + fan_out)); gain >= 0."""
    name = "xavier_uniform_"
    target, generator, std = _xavier(name, tensor, gain, generator)
    bound = math.sqrt(3.0) * std  # a uniform on (-bound, bound) has standard deviation std
    return _fill(tensor, target, generator.uniform(-bound, bound, size=target.shape))


def xavier_normal_(tensor: Tensor, gain: float = 1.0,
                   generator: numpy.random.Generator | int | None = None) -> Tensor:
    """Glorot & Bengio (2010): fill ``tensor`` (fan_in, fan_out) with N(0, std²),
    std = gain · √(2 / (fan_in + fan_out)); gain >= 0."""
    target, generator, std = _xavier("xavier_normal_", tensor, gain, generator)
    return _fill(tensor, target, generator.normal(0.0, std, size=target.shape))


def _xavier(owner: str, tensor: Tensor, gain: Any, generator: Any) -> tuple[Any, Any, float]:
    target = _target(owner, tensor)
    gain = checks.real(owner, "gain", gain, low=0.0, example="init.calculate_gain('relu')")
    generator = _host_generator(owner, generator)
    fan_in, fan_out = _fans(owner, target)
    # (0, 0) would divide by zero (PyTorch's ZeroDivisionError); any empty tensor has nothing to fill.
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out)) if target.size else 0.0
    return target, generator, std


def kaiming_uniform_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator: numpy.random.Generator | int | None = None) -> Tensor:
    """He et al. (2015): fill ``tensor`` (fan_in, fan_out) with U(-bound, bound),
    bound = gain · √(3 / fan), gain = ``calculate_gain(nonlinearity, a)``.

    ``a``: the negative slope of the leaky ReLU after this layer (read only for
    ``'leaky_relu'``; the default 0 makes it a ReLU's √2). ``mode``: ``'fan_in'`` (the default,
    shape[0] here, ``in_features`` of a Linear) keeps the forward pass's variance, ``'fan_out'``
    (shape[1]) the backward pass's. An empty tensor is left as it is, with PyTorch's warning.
    """
    name = "kaiming_uniform_"
    target, generator, std = _kaiming(name, tensor, a, mode, nonlinearity, generator)
    if target is None:
        return tensor
    bound = math.sqrt(3.0) * std  # a uniform on (-bound, bound) has standard deviation std
    return _fill(tensor, target, generator.uniform(-bound, bound, size=target.shape))


def kaiming_normal_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator: numpy.random.Generator | int | None = None) -> Tensor:
    """He et al. (2015): fill ``tensor`` (fan_in, fan_out) with N(0, std²), std = gain / √fan;
    the arguments as ``kaiming_uniform_``'s."""
    target, generator, std = _kaiming("kaiming_normal_", tensor, a, mode, nonlinearity, generator)
    if target is None:
        return tensor
    return _fill(tensor, target, generator.normal(0.0, std, size=target.shape))


def _kaiming(owner: str, tensor: Tensor, a: Any, mode: Any, nonlinearity: Any,
             generator: Any) -> tuple[Any, Any, float]:
    """The target array, the generator and the standard deviation; a None target for an empty tensor."""
    target = _target(owner, tensor)
    if not isinstance(mode, str) or mode.lower() not in _FAN_MODES:  # PyTorch takes 'FAN_IN' too
        raise ValueError(f"{owner}: got mode={mode!r}; expected 'fan_in' or 'fan_out'")
    gain = _gain(owner, "a", nonlinearity, a)
    generator = _host_generator(owner, generator)
    if target.size == 0:  # before the fans, as PyTorch: an empty tensor of any rank is a no-op
        warnings.warn(f"{owner}: initializing a zero-element tensor is a no-op", stacklevel=3)
        return None, generator, 0.0
    fan_in, fan_out = _fans(owner, target)
    return target, generator, gain / math.sqrt(fan_in if mode.lower() == "fan_in" else fan_out)


def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0,
                  generator: numpy.random.Generator | int | None = None) -> Tensor:
    """Fill ``tensor`` (any shape) with draws from N(mean, std²) conditioned on [a, b].

    ``a`` and ``b`` are values, not multiples of ``std`` (as in PyTorch); either may be infinite,
    a <= b (a == b fills with a); std > 0. The draw is exact wherever [a, b] lies: rejection from
    the normal when [a, b] holds much of its mass, otherwise from a uniform proposal on [a, b],
    or from an exponential one on a one-sided tail (Robert, 1995), so unlike PyTorch it gives no
    warning for a mean far from [a, b]. In float32 the values lie in [a, b] as rounded to float32.
    """
    name = "trunc_normal_"
    target = _target(name, tensor)
    mean = checks.real(name, "mean", mean)
    std = checks.real(name, "std", std, low=0.0, low_open=True)
    low, high = _interval(name, a, b, infinite=True)
    generator = _host_generator(name, generator)
    if low == high:
        return _fill(tensor, target, numpy.full(target.shape, low))
    draw = _truncated_normal_sampler(generator, mean, std, low, high)
    return _fill(tensor, target, _rejection_sample(target.size, *draw).reshape(target.shape))


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _truncated_normal_sampler(generator: numpy.random.Generator, mean: float, std: float, low: float,
                              high: float) -> tuple[Callable[[int], Any], Callable[[Any], Any]]:
    """A proposal (count -> candidates) and an acceptance test (candidates -> mask) whose accepted
    candidates are exactly N(mean, std²) conditioned on [low, high]."""

    def inside(x: Any) -> Any:
        return (x >= low) & (x <= high)

    alpha, beta = (low - mean) / std, (high - mean) / std
    if _normal_cdf(beta) - _normal_cdf(alpha) > 0.3:  # at most ~3 rounds of plain rejection per 10 values
        return (lambda n: generator.normal(mean, std, size=n)), inside
    if math.isfinite(low) and math.isfinite(high):
        # Uniform proposal on [low, high], accepted with the density's ratio to its peak there.
        mode = min(max(mean, low), high)
        log_peak = -0.5 * ((mode - mean) / std) ** 2
        return ((lambda n: generator.uniform(low, high, size=n)),
                lambda x: numpy.log1p(-generator.random(x.size)) <= -0.5 * ((x - mean) / std) ** 2 - log_peak)
    # A one-sided tail beyond the mean (the other end infinite): mirrored onto [edge, inf) in
    # standard units, an exponential proposal shifted to the edge, Robert's optimal rate.
    sign = 1.0 if alpha > 0 else -1.0
    edge = alpha if alpha > 0 else -beta
    rate = (edge + math.sqrt(edge * edge + 4.0)) / 2.0

    def propose(n: int) -> Any:
        return mean + sign * std * (edge + generator.exponential(1.0 / rate, size=n))

    def accept(x: Any) -> Any:
        z = sign * (x - mean) / std
        return (numpy.log1p(-generator.random(x.size)) <= -0.5 * (z - rate) ** 2) & inside(x)

    return propose, accept


def _rejection_sample(size: int, propose: Callable[[int], Any], accept: Callable[[Any], Any]) -> Any:
    """``size`` accepted candidates (flat, float64): the rejected ones are proposed again until
    every position holds one."""
    values = propose(size)
    pending = numpy.flatnonzero(~accept(values))
    while pending.size:
        candidates = propose(pending.size)
        ok = accept(candidates)
        values[pending[ok]] = candidates[ok]
        pending = pending[~ok]
    return values


def orthogonal_(tensor: Tensor, gain: float = 1.0,
                generator: numpy.random.Generator | int | None = None) -> Tensor:
    """Saxe et al. (2013): fill ``tensor`` (p, q) with ``gain`` times a uniformly random
    (semi-)orthogonal matrix: orthonormal rows when p <= q, orthonormal columns when p >= q.

    Drawn as PyTorch does: the QR factors of a Gaussian matrix, each column of Q multiplied by
    the sign of R's diagonal so that Q is Haar-distributed (Mezzadri, 2007).
    """
    name = "orthogonal_"
    target = _target(name, tensor)
    gain = checks.real(name, "gain", gain)
    generator = _host_generator(name, generator)
    rows, cols = _matrix_shape(name, target, "orthogonal")
    if target.size == 0:
        return tensor
    gaussian = generator.standard_normal((rows, cols))
    tall = gaussian if rows >= cols else gaussian.T  # QR of the tall way round gives orthonormal columns
    q, r = numpy.linalg.qr(tall)
    signs = numpy.sign(numpy.diagonal(r))
    q *= numpy.where(signs == 0, 1.0, signs)  # a zero on R's diagonal has probability 0; keep the column
    return _fill(tensor, target, gain * (q if rows >= cols else q.T))


def _target(owner: str, tensor: Any) -> Any:
    """The array of ``tensor`` to fill in place, or a TypeError/ValueError naming ``owner``."""
    if not isinstance(tensor, Tensor):
        what = (f"a {type(tensor).__module__.split('.')[0]}.ndarray of {tensor.dtype}"
                if hasattr(tensor, "dtype") and hasattr(tensor, "shape") else f"a {type(tensor).__name__}")
        raise TypeError(f"{owner}: got {what}; expected a minigraph Tensor or nn.Parameter of float32 "
                        f"or float64 (wrap an array: nn.Parameter(numpy.zeros((3, 4), numpy.float32)))")
    if tensor._creator is not None:
        raise ValueError(f"{owner}: got a Tensor computed by an op (a non-leaf of shape "
                         f"{tuple(tensor.shape)}); expected a leaf, such as a layer's Parameter: "
                         f"an op's output is saved by its graph and cannot be overwritten")
    data = tensor._data
    if data.dtype.name not in ("float32", "float64"):  # Tensor refuses others; guard the private slot
        raise TypeError(f"{owner}: got a Tensor of {data.dtype}; expected float32 or float64")
    if not backend.can_update_in_place(data):
        raise ValueError(f"{owner}: the Tensor's array is read-only or a broadcast view, so it cannot "
                         f"be filled in place; give it a writable array first: t.data = t.data.copy()")
    return data


def _host_generator(owner: str, generator: Any) -> numpy.random.Generator:
    """``generator`` as a NumPy Generator: minigraph's default one for None, a new one for an int seed."""
    if generator is None:
        return backend.default_generator(numpy)
    if isinstance(generator, numpy.random.Generator):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool) and generator >= 0:
        return numpy.random.default_rng(int(generator))
    raise TypeError(f"{owner}: got generator={generator!r}, a {type(generator).__name__}; expected None, a "
                    f"non-negative int seed or a numpy.random.Generator (values are drawn on the host "
                    f"whatever the device, so a CuPy or torch generator does not serve)")


def _interval(owner: str, a: Any, b: Any, infinite: bool = False) -> tuple[float, float]:
    low = checks.real(owner, "a", a, infinite=infinite)
    high = checks.real(owner, "b", b, infinite=infinite)
    if low > high:
        raise ValueError(f"{owner}: got a={a!r} > b={b!r}; expected a <= b")
    if not infinite and not math.isfinite(high - low):
        raise ValueError(f"{owner}: got a={a!r} and b={b!r}, whose distance overflows float64; "
                         f"expected a narrower interval")
    return low, high


def _matrix_shape(owner: str, target: Any, what: str) -> tuple[int, int]:
    if target.ndim != 2:
        more = ("minigraph has no convolutions, whose layout would give them meaning" if target.ndim > 2
                else "as in PyTorch")
        raise ValueError(f"{owner}: got a tensor of shape {target.shape}; expected 2 dimensions "
                         f"(in_features, out_features) for {what} ({more})")
    return target.shape


def _fans(owner: str, target: Any) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight (in_features, out_features): its shape, in that order."""
    return _matrix_shape(owner, target, "fan_in and fan_out")


def _fill(tensor: Tensor, target: Any, values: Any) -> Tensor:
    """Copy host float64 ``values`` into ``target`` (``tensor``'s array) in its dtype, on its device."""
    with numpy.errstate(over="ignore"):  # a draw beyond float32's range becomes ±inf, as PyTorch's
        values = values.astype(target.dtype)
    target[...] = backend.to_device(values, backend.device_of(target))
    tensor._version[0] += 1  # graphs built before the fill can no longer backward
    return tensor
