"""Batch normalization over the rows of x: (N, p), one mean and variance per column.

A sequence batch x: (N, C, L) is normalised per channel over its N·L rows of C channels
(``over_channels``), as ``torch.nn.BatchNorm1d`` does; the Functions below see only 2-D x.

Notation (docs/batchnorm.md derives every line):
    μ = 1ᵀX / N                    column means, (p,)
    Xc = X − 1μ                    centred data, (N, p)
    σ² = 1ᵀ(Xc ⊙ Xc) / (N − ddof)  column variances, (p,)
    s = (σ² + eps)^(−1/2)          inv_std, (p,)
    X̂ = Xc ⊙ s                     normalised data (never materialised)
    Y = X̂ ⊙ γ + β
Row vectors (p,) broadcast over the N rows, which is what the question writes
as γ ⊗ 1_N.
"""

from __future__ import annotations

from typing import Any, Callable

from .. import checks, kernels
from ..backend import (can_update_in_place, column_dot, column_sums, device_of, get_array_module,
                       is_gpu_array)
from ..engine import Function, Tensor, apply, as_tensor, verified
from .shape import reshape, transpose


@verified
class BatchNorm(Function):
    """Training mode: normalise with the batch's own statistics.

    x: (N, p), gamma: (p,), beta: (p,) -> y: (N, p).

    dβ = 1ᵀ dY
    dγ = 1ᵀ(dY ⊙ X̂) = s ⊙ 1ᵀ(dY ⊙ Xc)
    dX = (γ ⊙ s) ⊙ [dY − 1 dβ / N − Xc ⊙ (s ⊙ dγ) / (N − ddof)]

    The last two terms are the paths through μ and through σ².
    """

    __slots__ = ("eps", "ddof", "momentum", "running_mean", "running_var", "kernel")
    op = "batch_norm"

    def __init__(self, eps: float, ddof: int, momentum: float,
                 running_mean: Any = None, running_var: Any = None) -> None:
        self.eps = eps
        self.ddof = ddof
        self.momentum = momentum
        self.running_mean = running_mean
        self.running_var = running_var
        self.kernel = None  # the fused kernels that ran the forward, if any (minigraph.kernels)

    def forward(self, x: Any, gamma: Any, beta: Any) -> Any:
        self.kernel = kernels.batch_norm(x, gamma, beta)
        if self.kernel is not None:  # the formula below, fused into two passes over x
            y, mean, sum_sq, saved, updated = self.kernel.batch_norm_forward(
                x, gamma, beta, self.eps, self.ddof, (self.running_mean, self.running_var, self.momentum))
            if updated:  # by the kernels, as _update_running_statistics would
                self.running_mean = self.running_var = None
            else:
                self._update_running_statistics(mean, sum_sq, x.shape[0])
            if any(self.needs_grad):
                self.saved = saved
            return y
        n = x.shape[0]
        mean = column_sums(x) / n
        centred = x - mean
        # Two-pass variance: E[x²] − E[x]² cancels catastrophically for large means.
        sum_sq = column_dot(centred, centred)
        return self.normalise(centred, mean, sum_sq, n, gamma, beta)

    def normalise(self, centred: Any, mean: Any, sum_sq: Any, n: int, gamma: Any, beta: Any) -> Any:
        """Y from the batch's statistics; updates the running ones and saves what backward needs.

        centred: (rows, p), mean and sum_sq = 1ᵀ(Xc ⊙ Xc): (p,), all of the whole batch of
        ``n`` rows (a synchronized batch norm passes statistics summed over every process).
        """
        xp = get_array_module(centred)
        inv_std = 1.0 / xp.sqrt(sum_sq / (n - self.ddof) + self.eps)
        y = centred * (gamma * inv_std)
        y += beta
        self._update_running_statistics(mean, sum_sq, n)
        if any(self.needs_grad):
            self.saved = (centred, inv_std, gamma)
        return y

    def _update_running_statistics(self, mean: Any, sum_sq: Any, n: int) -> None:
        """In place, from the batch's mean: (p,) and Σ(x − μ)²: (p,)."""
        if self.running_mean is not None:
            self.running_mean *= 1.0 - self.momentum
            self.running_mean += self.momentum * mean
        if self.running_var is not None:
            # PyTorch's convention: the running variance is the unbiased one.
            self.running_var *= 1.0 - self.momentum
            self.running_var += (self.momentum / (n - 1)) * sum_sq
        self.running_mean = self.running_var = None  # updated; the graph need not keep them

    def backward(self, grad_output: Any) -> tuple:
        if self.kernel is not None:
            return self.kernel.batch_norm_backward(self.saved, grad_output, self.ddof, self.needs_grad)
        centred, inv_std, gamma = self.saved
        needs_x, needs_gamma, needs_beta = self.needs_grad
        grad_beta = column_sums(grad_output)
        grad_gamma = inv_std * column_dot(grad_output, centred)
        grad_x = None
        if needs_x:
            grad_x = self.input_gradient(grad_output, grad_beta, grad_gamma, grad_output.shape[0])
        return grad_x, grad_gamma if needs_gamma else None, grad_beta if needs_beta else None

    def input_gradient(self, grad_output: Any, grad_beta: Any, grad_gamma: Any, n: int) -> Any:
        """dX: (rows, p) from dY: (rows, p) and the whole batch's dβ, dγ: (p,) over its ``n`` rows."""
        centred, inv_std, gamma = self.saved
        # dX = (γ s) ⊙ [dY − dβ/N − Xc ⊙ (s dγ)/(N − ddof)], built in one new buffer.
        # (Overwriting dY would save nothing: Xc ⊙ k needs a temporary anyway.)
        grad_x = centred * (inv_std * grad_gamma / -(n - self.ddof))
        grad_x += grad_output
        grad_x -= grad_beta / n
        grad_x *= gamma * inv_std
        return grad_x


@verified
class BatchNormEval(Function):
    """Evaluation mode: normalise with fixed running statistics, which are constants.

    x: (N, p), gamma: (p,), beta: (p,) -> y: (N, p), with Xc = X − running_mean and
    s = (running_var + eps)^(−1/2):

    dβ = 1ᵀ dY,   dγ = s ⊙ 1ᵀ(dY ⊙ Xc),   dX = dY ⊙ (γ ⊙ s)
    """

    __slots__ = ("eps", "running_mean", "running_var")
    op = "batch_norm"

    def __init__(self, eps: float, running_mean: Any, running_var: Any) -> None:
        self.eps = eps
        self.running_mean = running_mean
        self.running_var = running_var

    def forward(self, x: Any, gamma: Any, beta: Any) -> Any:
        xp = get_array_module(x)
        inv_std = 1.0 / xp.sqrt(self.running_var + self.eps)
        kernel = kernels.batch_norm(x, gamma, beta)
        if kernel is not None and not self.needs_grad[1]:  # fused in one pass; dγ would need Xc kept
            centred = None
            y = kernel.batch_norm_eval_forward(x, gamma, beta, self.running_mean, inv_std)
        else:
            centred = x - self.running_mean
            y = centred * (gamma * inv_std)
            y += beta
        self.running_mean = self.running_var = None  # read; the graph need not keep them
        # Saved whenever backward can run, even for dβ alone: it unpacks all three. The (p,)
        # arrays cost nothing; the (N, p) Xc is kept only for dγ.
        if any(self.needs_grad):
            self.saved = (centred if self.needs_grad[1] else None, inv_std, gamma)
        return y

    def backward(self, grad_output: Any) -> tuple:
        centred, inv_std, gamma = self.saved
        needs_x, needs_gamma, needs_beta = self.needs_grad
        grad_gamma = inv_std * column_dot(grad_output, centred) if needs_gamma else None
        grad_beta = column_sums(grad_output) if needs_beta else None
        grad_x = None
        if needs_x:
            grad_x = grad_output * (gamma * inv_std)
        return grad_x, grad_gamma, grad_beta


def _statistic(op: str, name: str, value: Any, x: Tensor, updated: bool) -> Any:
    """A running statistic as a raw (p,) array on x's device and dtype.

    Both statistics are checked before either is touched, so a bad one can never leave
    the other half-updated (``updated``: training will write them in place).
    """
    if value is None:
        return None
    if isinstance(value, Tensor):
        value = value.data
    p = x.data.shape[1]
    if getattr(value, "shape", None) == (p,) and value.dtype != x.data.dtype \
            and is_gpu_array(value) == is_gpu_array(x.data):
        # Most often data of another dtype than the layer's, which owns the statistic: say so,
        # rather than point at a statistic the caller never passed.
        raise ValueError(
            f"{op}: {name} has dtype {value.dtype} but x has dtype {x.data.dtype}; expected one "
            f"dtype. minigraph does not promote silently: convert the data "
            f"(x.astype(numpy.{value.dtype})) or build the layer with the data's dtype, e.g. "
            f"nn.BatchNorm1d(..., dtype=numpy.{x.data.dtype})"
        )
    if not hasattr(value, "shape") or value.shape != (p,) or is_gpu_array(value) != is_gpu_array(x.data):
        got = (f"{type(value).__name__} of shape {value.shape}, dtype {value.dtype} on "
               f"{device_of(value)!r}" if hasattr(value, "shape") else type(value).__name__)
        raise ValueError(
            f"{op}: {name} is a {got}; expected an array of shape ({p},) and dtype "
            f"{x.data.dtype} on {x.device!r}, like x"
        )
    if updated and not can_update_in_place(value):
        raise ValueError(f"{op}: {name} is read-only or a broadcast view, so training cannot "
                         f"update it in place; expected a writable array, e.g. {name}.copy()")
    return value


def _affine(op: str, name: str, value: Any, x: Tensor, fill: float) -> Tensor:
    """gamma or beta as a (p,) tensor; None means the constant ``fill`` (no affine part)."""
    p = x.data.shape[1]
    if value is None:
        xp = get_array_module(x.data)
        return Tensor(xp.full((p,), fill, dtype=x.data.dtype))
    value = as_tensor(op, name, value, like=x)
    if value.data.shape != (p,):
        raise ValueError(f"{op}: {name} has shape {value.data.shape}; expected ({p},) "
                         f"for input of shape {x.data.shape}")
    return value


def checked_operands(op: str, x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any,
                     training: bool) -> tuple:
    """x as a (N, p) or (N, p, L) Tensor, gamma and beta as (p,) Tensors, the running statistics as
    (p,) arrays (or None), all on x's device and dtype; a ValueError or TypeError naming ``op``
    otherwise."""
    # A raw array x goes to the device of whichever of gamma, beta is a Tensor.
    x = as_tensor(op, "x", x, like=next((v for v in (gamma, beta) if isinstance(v, Tensor)), None))
    if x.data.ndim not in (2, 3):
        raise ValueError(f"{op}: x has shape {x.data.shape}; expected a 2-D (N, p) batch or a 3-D "
                         f"(N, p, L) batch of sequences (p features or channels)")
    return (x, _affine(op, "gamma", gamma, x, 1.0), _affine(op, "beta", beta, x, 0.0),
            _statistic(op, "running_mean", running_mean, x, updated=training),
            _statistic(op, "running_var", running_var, x, updated=training))


def over_channels(x: Tensor, normalise: Callable[[Tensor], Tensor]) -> Tensor:
    """``normalise`` (a batch norm of (rows, p) input) applied to x: (N, p) as it is, or to
    x: (N, p, L) through its N·L rows of p channels: X (N, p, L) -> Xᵀ (N, L, p) -> (N·L, p).

    So each channel's statistics are over the N samples and L positions together, and the
    gradients come back through the same reshape and transpose (two copies of x's size).
    """
    if x.data.ndim == 2:
        return normalise(x)
    n, p, length = x.data.shape
    rows = reshape(transpose(x, (0, 2, 1)), (n * length, p))
    return transpose(reshape(normalise(rows), (n, length, p)), (0, 2, 1))


def batch_norm(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    running_mean: Any = None,
    running_var: Any = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    ddof: int = 0,
) -> Tensor:
    """Batch norm of x: (N, p) with scale gamma: (p,) and shift beta: (p,).

    x may also be (N, p, L), p channels of length L: each channel is normalised over all N·L
    of its values (N below is then N·L), as ``torch.nn.BatchNorm1d`` does.
    Training normalises each column by its batch mean and its variance
    Σ(x − μ)²/(N − ddof); ``ddof=1`` reproduces R's ``scale()``. If running
    statistics (arrays or tensors of shape (p,)) are given they are updated in
    place: running = (1 − momentum)·running + momentum·batch, the variance
    unbiased. Evaluation (``training=False``) normalises with the running
    statistics instead and needs both. gamma/beta may be None (scale 1, shift 0).
    """
    training = checks.flag("batch_norm", "training", training)  # "False" would mean training
    x, gamma, beta, running_mean, running_var = checked_operands(
        "batch_norm", x, gamma, beta, running_mean, running_var, training)
    n = x.data.shape[0] * (x.data.shape[2] if x.data.ndim == 3 else 1)  # rows: N, or N·L
    eps = checks.real("batch_norm", "eps", eps, low=0.0)
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: training=False normalises with running statistics; "
                             "expected running_mean and running_var, got None")
        return over_channels(x, lambda rows: apply(BatchNormEval(eps, running_mean, running_var),
                                                   rows, gamma, beta))
    if n < 2:
        raise ValueError(f"batch_norm: expected more than 1 value per feature when training, "
                         f"got input of shape {x.data.shape}")
    ddof = checks.integer("batch_norm", "ddof", ddof, low=0, high=n)
    momentum = checks.real("batch_norm", "momentum", momentum, low=0.0, high=1.0)
    return over_channels(x, lambda rows: apply(BatchNorm(eps, ddof, momentum, running_mean, running_var),
                                               rows, gamma, beta))
