"""Batch normalization over the rows of x: (N, p), one mean and variance per column.

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

import numbers
from typing import Any

from ..backend import get_array_module, is_gpu_array
from ..engine import Function, Tensor, apply, as_tensor, _reuses_grad_buffers
from .. import kernels
from .add import column_sums

def column_dot(a: Any, b: Any) -> Any:
    """1ᵀ(A ⊙ B): per-column sums of an elementwise product, without the product array."""
    return get_array_module(a).einsum("ij,ij->j", a, b)


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
            y, mean, sum_sq, saved = self.kernel.batch_norm_forward(x, gamma, beta, self.eps, self.ddof)
            self._update_running_statistics(mean, sum_sq, x.shape[0])
            if any(self.needs_grad):
                self.saved = saved
            return y
        xp = get_array_module(x)
        n = x.shape[0]
        mean = column_sums(x) / n
        centred = x - mean
        # Two-pass variance: E[x²] − E[x]² cancels catastrophically for large means.
        sum_sq = column_dot(centred, centred)
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

    @_reuses_grad_buffers
    def backward(self, grad_output: Any, overwrite: bool = False) -> tuple:
        if self.kernel is not None:
            return self.kernel.batch_norm_backward(self.saved, grad_output, self.ddof, self.needs_grad, overwrite)
        centred, inv_std, gamma = self.saved
        needs_x, needs_gamma, needs_beta = self.needs_grad
        n = grad_output.shape[0]
        grad_beta = column_sums(grad_output)
        grad_gamma = inv_std * column_dot(grad_output, centred)
        grad_x = None
        if needs_x:
            # dX = (γ s) ⊙ [dY − dβ/N − Xc ⊙ (s dγ)/(N − ddof)], built in one new buffer.
            # (Overwriting dY would save nothing: Xc ⊙ k needs a temporary anyway.)
            grad_x = centred * (inv_std * grad_gamma / -(n - self.ddof))
            grad_x += grad_output
            grad_x -= grad_beta / n
            grad_x *= gamma * inv_std
        return grad_x, grad_gamma if needs_gamma else None, grad_beta if needs_beta else None


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
        needs_x, needs_gamma, _ = self.needs_grad
        if needs_x or needs_gamma:
            self.saved = (centred if needs_gamma else None, inv_std, gamma)
        return y

    @_reuses_grad_buffers
    def backward(self, grad_output: Any, overwrite: bool = False) -> tuple:
        centred, inv_std, gamma = self.saved
        needs_x, needs_gamma, needs_beta = self.needs_grad
        # Both reductions read dY before dX may overwrite it.
        grad_gamma = inv_std * column_dot(grad_output, centred) if needs_gamma else None
        grad_beta = column_sums(grad_output) if needs_beta else None
        grad_x = None
        if needs_x:
            if overwrite:
                grad_output *= gamma * inv_std
                grad_x = grad_output
            else:
                grad_x = grad_output * (gamma * inv_std)
        return grad_x, grad_gamma, grad_beta


def _statistic(name: str, value: Any, x: Tensor) -> Any:
    """A running statistic as a raw (p,) array on x's device and dtype, updated in place."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        value = value.data
    p = x.data.shape[1]
    if not hasattr(value, "shape") or value.shape != (p,) or value.dtype != x.data.dtype \
            or is_gpu_array(value) != is_gpu_array(x.data):
        got = (f"{type(value).__name__} of shape {value.shape}, dtype {value.dtype}"
               if hasattr(value, "shape") else type(value).__name__)
        raise ValueError(
            f"batch_norm: {name} is a {got} on {x.device!r} data; expected an array of "
            f"shape ({p},) and dtype {x.data.dtype} on {x.device!r}"
        )
    return value


def _affine(name: str, value: Any, x: Tensor, fill: float) -> Tensor:
    """gamma or beta as a (p,) tensor; None means the constant ``fill`` (no affine part)."""
    p = x.data.shape[1]
    if value is None:
        xp = get_array_module(x.data)
        return Tensor(xp.full((p,), fill, dtype=x.data.dtype))
    value = as_tensor("batch_norm", name, value)
    if value.data.shape != (p,):
        raise ValueError(f"batch_norm: {name} has shape {value.data.shape}; expected ({p},) "
                         f"for input of shape {x.data.shape}")
    return value


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

    Training normalises each column by its batch mean and its variance
    Σ(x − μ)²/(N − ddof); ``ddof=1`` reproduces R's ``scale()``. If running
    statistics (arrays or tensors of shape (p,)) are given they are updated in
    place: running = (1 − momentum)·running + momentum·batch, the variance
    unbiased. Evaluation (``training=False``) normalises with the running
    statistics instead and needs both. gamma/beta may be None (scale 1, shift 0).
    """
    x = as_tensor("batch_norm", "x", x)
    if x.data.ndim != 2:
        raise ValueError(f"batch_norm: x has shape {x.data.shape}; expected a 2-D (N, p) batch")
    n = x.data.shape[0]
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not 0 <= eps < float("inf"):
        raise ValueError(f"batch_norm: got eps={eps!r}; expected a finite number >= 0")
    gamma = _affine("gamma", gamma, x, 1.0)
    beta = _affine("beta", beta, x, 0.0)
    running_mean = _statistic("running_mean", running_mean, x)
    running_var = _statistic("running_var", running_var, x)
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: training=False normalises with running statistics; "
                             "expected running_mean and running_var, got None")
        return apply(BatchNormEval(float(eps), running_mean, running_var), x, gamma, beta)
    if n < 2:
        raise ValueError(f"batch_norm: expected more than 1 value per feature when training, "
                         f"got input of shape {x.data.shape}")
    if not isinstance(ddof, numbers.Integral) or isinstance(ddof, bool) or not 0 <= ddof < n:
        raise ValueError(f"batch_norm: got ddof={ddof!r}; expected an integer in [0, N) with N={n}")
    if not isinstance(momentum, numbers.Real) or isinstance(momentum, bool) \
            or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"batch_norm: got momentum={momentum!r}; expected a number in [0, 1]")
    return apply(BatchNorm(float(eps), int(ddof), float(momentum), running_mean, running_var), x, gamma, beta)
