"""Optimizers with PyTorch's update rules: ``SGD`` (momentum, Nesterov, dampening, weight decay),
``Adam`` and ``AdamW``.

Usage, as in PyTorch::

    opt = optim.Adam(model.parameters(), lr=1e-3)
    opt.zero_grad(); loss.backward(); opt.step()

``step`` updates each parameter's array in place on whichever device it lives
(NumPy or CuPy), reading ``.grad`` and never writing it. Parameters whose
``.grad`` is None are skipped. State (momentum buffers, Adam's moments) is
created on the parameter's device at its first update, so move a model with
``model.to(device)`` before building its optimizer.

Hyperparameters (``lr``, ``momentum``, ``betas``, ...) are checked whenever they are
assigned, so a schedule may set ``opt.lr = 0.5 * opt.lr`` between steps and a bad
value fails there, not steps later. Checkpoints, as in PyTorch::

    nn.save(opt.state_dict(), "opt.npz")
    opt.load_state_dict(nn.load("opt.npz"))   # a run resumes exactly where it stopped
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy

from . import backend, checks
from .checkpoint import host_copy
from .engine import Tensor

__all__ = ["Adam", "AdamW", "Optimizer", "SGD"]


class Optimizer:
    """Base class: holds the parameter list; subclasses implement ``step``.

    ``params``: an iterable of leaf Tensors, e.g. ``model.parameters()``; a
    generator is read once, here. Frozen ones (``requires_grad=False``) are
    accepted and, having no ``.grad``, left alone by ``step``, as in PyTorch.

    A subclass lists its hyperparameters in ``_hyperparameters`` (name -> check, which
    returns the value to keep or raises naming the owner it is given) and the fields of
    one parameter's state in ``_state_fields`` (name -> "array", shaped like the
    parameter, or "count", an integer >= 1); it implements ``_state_of`` and
    ``_restore_state``. The constructor, attribute assignment and ``load_state_dict`` all
    validate through those checks; ``step`` reads the checked values as plain attributes.
    """

    _hyperparameters: dict[str, Callable[[str, Any], Any]] = {}
    _state_fields: dict[str, str] = {}

    def __init__(self, params: Iterable[Tensor]) -> None:
        self.params: list[Tensor] = _parameter_list(type(self).__name__, params)

    def __setattr__(self, name: str, value: Any) -> None:
        check = self._hyperparameters.get(name)
        if check is not None:  # only on assignment: step() pays nothing for it
            value = check(type(self).__name__, value)
        object.__setattr__(self, name, value)

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to None (PyTorch's default), so the next backward starts afresh."""
        for param in self.params:
            param.grad = None

    def step(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no step(); define it in the subclass")

    # --- state ----------------------------------------------------------
    def _state_of(self, index: int) -> dict[str, Any] | None:
        """Parameter ``index``'s state as field -> live value, or None before its first update."""
        return None

    def _restore_state(self, states: list[dict[str, Any] | None]) -> None:
        """Replace all per-parameter state by ``states`` (checked, on the parameters' devices)."""

    def state_dict(self) -> dict[str, numpy.ndarray]:
        """The hyperparameters and every parameter's state, as host NumPy copies in a flat dict.

        Keys: each hyperparameter by name (``betas`` as an array of shape (2,)), then
        ``state.<i>.<field>`` for the i-th parameter of the list given to the constructor;
        a parameter never updated yet has no state keys. Like ``Module.state_dict``, the
        arrays are copies on the host that share no memory with the optimizer, so later
        steps do not change them. Write it to disk with ``nn.save``.
        """
        state = {name: numpy.array(value, dtype=bool if isinstance(value, bool) else numpy.float64)
                 for name, value in ((name, getattr(self, name)) for name in self._hyperparameters)}
        for index in range(len(self.params)):
            for field, value in (self._state_of(index) or {}).items():
                state[f"state.{index}.{field}"] = (numpy.asarray(value, dtype=numpy.int64)
                                                   if self._state_fields[field] == "count"
                                                   else host_copy(value))
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the hyperparameters and per-parameter state saved by ``state_dict``.

        ``state_dict``: what ``state_dict()`` or ``nn.load`` gives, from an optimizer
        of the same class over parameters of the same shapes, in the same order.
        Arrays (NumPy, CuPy or Tensors) are copied onto each parameter's device and
        dtype, so later steps never write into the dict. Everything is checked before
        anything changes: a bad dict raises and leaves the optimizer as it was.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{owner}: got a {type(state_dict).__name__}; expected a mapping of "
                            f"names to arrays, e.g. nn.load('opt.npz') or opt.state_dict()")
        self._refuse_another_kind(owner, state_dict)
        fields: dict[int, dict[str, Any]] = {}
        unknown = []
        for key in state_dict:
            parts = key.split(".") if isinstance(key, str) else []
            if len(parts) == 3 and parts[0] == "state" and parts[1].isdigit() \
                    and parts[1] == str(int(parts[1])) and parts[2] in self._state_fields:
                fields.setdefault(int(parts[1]), {})[parts[2]] = state_dict[key]
            elif key not in self._hyperparameters:
                unknown.append(key)
        missing = [name for name in self._hyperparameters if name not in state_dict]
        if unknown or missing:
            raise ValueError(f"{owner}: missing keys {missing}, unexpected keys {unknown}; expected "
                             f"{self._expected_keys()}, as {type(self).__name__}.state_dict() gives")
        beyond = sorted(index for index in fields if index >= len(self.params))
        if beyond:
            raise ValueError(f"{owner}: the state dict has state for parameter {beyond[0]} but this "
                             f"optimizer has {len(self.params)} parameters (0 to {len(self.params) - 1}); "
                             f"expected an optimizer built over the same parameters, in the same order")
        hyperparameters = {name: check(owner, state_dict[name])
                           for name, check in self._hyperparameters.items()}
        states: list[dict[str, Any] | None] = [None] * len(self.params)
        for index, given in sorted(fields.items()):
            absent = [field for field in self._state_fields if field not in given]
            if absent:
                raise ValueError(f"{owner}: parameter {index}'s state has {sorted(given)} but lacks "
                                 f"{absent}; expected all of {list(self._state_fields)}")
            states[index] = {field: _state_value(owner, f"state.{index}.{field}", kind, given[field],
                                                 self.params[index])
                             for field, kind in self._state_fields.items()}
        # Every check passed: only now does anything change.
        for name, value in hyperparameters.items():
            object.__setattr__(self, name, value)
        self._restore_state(states)

    def _expected_keys(self) -> str:
        fields = "/".join(self._state_fields)
        return f"{list(self._hyperparameters)} and state.<i>.{{{fields}}} for updated parameters"

    def _refuse_another_kind(self, owner: str, state_dict: Mapping[str, Any]) -> None:
        """A clear error for a state dict of another optimizer class (say SGD's loaded into Adam)."""
        names = {key for key in state_dict if isinstance(key, str) and not key.startswith("state.")}
        fields = {key.rsplit(".", 1)[-1] for key in state_dict
                  if isinstance(key, str) and key.startswith("state.")}
        mine = type(self)
        for kind in _OPTIMIZER_CLASSES:
            if set(kind._hyperparameters) == set(mine._hyperparameters):
                continue  # the same keys (mine, or a subclass of it): nothing tells them apart
            if (names and names == set(kind._hyperparameters)) or \
                    (fields and fields <= set(kind._state_fields) and not fields & set(mine._state_fields)):
                state_keys = f", state.<i>.{{{'/'.join(sorted(fields))}}}" if fields else ""
                raise ValueError(f"{owner}: got a state dict of {kind.__name__} (keys {sorted(names)}"
                                 f"{state_keys}); expected {mine.__name__}'s: {self._expected_keys()}. "
                                 f"An optimizer's state loads only into the same kind of optimizer")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _OPTIMIZER_CLASSES.append(cls)


_OPTIMIZER_CLASSES: list[type[Optimizer]] = []  # every subclass, to name the source of a foreign state dict


def _state_value(owner: str, key: str, kind: str, value: Any, param: Tensor) -> Any:
    """One saved state field checked and made ready to use: a count as a Python int, an array as
    a fresh copy on ``param``'s device in its dtype (never the caller's array, which later steps
    would otherwise update)."""
    if kind == "count":
        return checks.integer(owner, key, value, low=1)
    array = value.data if isinstance(value, Tensor) else value
    if not (isinstance(array, numpy.ndarray) or backend.is_gpu_array(array)):
        raise TypeError(f"{owner}: {key!r} is a {type(value).__name__}; expected an array of "
                        f"shape {param.shape}, as state_dict() gives")
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{owner}: {key!r} has dtype {array.dtype}; expected real numbers "
                        f"(it becomes {param.dtype})")
    if array.shape != param.shape:
        raise ValueError(f"{owner}: {key!r} has shape {array.shape} but parameter {key.split('.')[1]} "
                         f"has shape {param.shape}; expected identical shapes (same model, same "
                         f"parameter order?)")
    return backend.to_device(array, param.device).astype(param.dtype, copy=True)


def _nonnegative(name: str, example: str) -> Callable[[str, Any], float]:
    """The check of a hyperparameter that is a finite number >= 0, such as ``lr``."""
    return lambda owner, value: checks.real(owner, name, value, low=0.0, example=example)


def _betas(owner: str, value: Any) -> tuple[float, float]:
    """Adam's ``betas``: a pair (or an array of shape (2,), as ``nn.load`` gives) in [0, 1)."""
    # An array's elements as Python numbers (one sync on a GPU, at assignment), to check and to name.
    pair = value.tolist() if getattr(value, "shape", None) == (2,) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{owner}: got betas={value!r}; expected a pair such as (0.9, 0.999)")
    return tuple(checks.real(owner, f"betas[{i}]", beta, low=0.0, high=1.0, high_open=True,
                             example="betas=(0.9, 0.999)") for i, beta in enumerate(pair))


def _flag(name: str) -> Callable[[str, Any], bool]:
    """The check of a hyperparameter that is True or False, such as ``nesterov``."""
    return lambda owner, value: checks.flag(owner, name, value)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (plain or Nesterov's), dampening and
    L2 weight decay.

    Per parameter p with gradient g, exactly as ``torch.optim.SGD``:

        d = g + weight_decay · p
        buf = d                                        on p's first update (momentum > 0)
        buf = momentum · buf + (1 − dampening) · d     afterwards
        p  -= lr · buf                 (p -= lr · d without momentum)
        p  -= lr · (d + momentum · buf)                instead, with nesterov=True

    Nesterov's momentum needs momentum > 0 and dampening = 0, as in PyTorch.
    """

    _hyperparameters = {"lr": _nonnegative("lr", "lr=0.01"),
                        "momentum": _nonnegative("momentum", "momentum=0.9"),
                        "dampening": lambda owner, value: checks.real(owner, "dampening", value, low=0.0,
                                                                      high=1.0, example="dampening=0.1"),
                        "weight_decay": _nonnegative("weight_decay", "weight_decay=1e-4"),
                        "nesterov": _flag("nesterov")}
    _state_fields = {"momentum_buffer": "array"}

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(params)
        # checked on assignment
        self.lr, self.momentum, self.dampening, self.weight_decay, self.nesterov = \
            lr, momentum, dampening, weight_decay, nesterov
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError(f"SGD: got nesterov=True with momentum={self.momentum} and "
                             f"dampening={self.dampening}; Nesterov's momentum needs momentum > 0 "
                             f"and dampening=0, e.g. SGD(params, lr, momentum=0.9, nesterov=True)")
        self._momentum_buffers: list[Any] = [None] * len(self.params)

    def _state_of(self, index: int) -> dict[str, Any] | None:
        buf = self._momentum_buffers[index]
        return None if buf is None else {"momentum_buffer": buf}

    def _restore_state(self, states: list[dict[str, Any] | None]) -> None:
        self._momentum_buffers = [None if s is None else s["momentum_buffer"] for s in states]

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        lr, momentum, weight_decay = self.lr, self.momentum, self.weight_decay
        dampening, nesterov = self.dampening, self.nesterov
        for index, param in enumerate(self.params):
            grad = param.grad
            if grad is None:
                continue
            weights = param.data
            if weight_decay:
                direction = weights * weight_decay  # a fresh array, ours to overwrite
                direction += grad
            else:
                direction = grad  # the caller's .grad: read, never written
            if momentum:
                buf = self._momentum_buffers[index]
                if buf is None:
                    buf = direction.copy() if direction is grad else direction
                    self._momentum_buffers[index] = buf
                else:
                    buf *= momentum
                    buf += direction if not dampening else (1.0 - dampening) * direction
                if nesterov:
                    update = buf * momentum
                    update += direction
                    update *= lr
                    weights -= update
                else:
                    weights -= lr * buf
            elif direction is not grad:
                direction *= lr  # scale the temporary in place instead of making another
                weights -= direction
            else:
                weights -= lr * grad
            param._version[0] += 1  # graphs built before this step can no longer backward

    def __repr__(self) -> str:
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, dampening={self.dampening}, "
                f"weight_decay={self.weight_decay}, nesterov={self.nesterov})")


class _AdamState:
    """One parameter's Adam state: its update count, the two moments and a scratch array."""

    __slots__ = ("step", "exp_avg", "exp_avg_sq", "scratch")

    def __init__(self, like: Any, step: int = 0, exp_avg: Any = None, exp_avg_sq: Any = None) -> None:
        xp = backend.get_array_module(like)
        self.step = step
        self.exp_avg = xp.zeros_like(like) if exp_avg is None else exp_avg
        self.exp_avg_sq = xp.zeros_like(like) if exp_avg_sq is None else exp_avg_sq
        # Reused every step for the intermediate terms, so a step allocates nothing
        # (bar the weight-decayed gradient). Not state: never saved.
        self.scratch = xp.empty_like(like)


class Adam(Optimizer):
    """Adam with bias correction and L2 weight decay, exactly as ``torch.optim.Adam``.

    Per parameter p with gradient g, at its t-th update (t counts that
    parameter's own updates, so one that had no gradient for a while is not
    penalised):

        g  = g + weight_decay · p
        m  = β1·m + (1 − β1)·g
        v  = β2·v + (1 − β2)·g²
        p -= lr / (1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)
    """

    _hyperparameters = {"lr": _nonnegative("lr", "lr=1e-3"), "betas": _betas,
                        "eps": _nonnegative("eps", "eps=1e-8"),
                        "weight_decay": _nonnegative("weight_decay", "weight_decay=1e-4")}
    # step: this parameter's update count t, which sets the bias correction
    _state_fields = {"step": "count", "exp_avg": "array", "exp_avg_sq": "array"}
    decoupled_weight_decay = False  # True in AdamW

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params)
        # checked on assignment
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self._state: list[_AdamState | None] = [None] * len(self.params)

    def _state_of(self, index: int) -> dict[str, Any] | None:
        state = self._state[index]
        return None if state is None else {"step": state.step, "exp_avg": state.exp_avg,
                                           "exp_avg_sq": state.exp_avg_sq}

    def _restore_state(self, states: list[dict[str, Any] | None]) -> None:
        self._state = [None if s is None else _AdamState(s["exp_avg"], **s) for s in states]

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        lr, eps, weight_decay = self.lr, self.eps, self.weight_decay
        beta1, beta2 = self.betas
        for index, param in enumerate(self.params):
            grad = param.grad
            if grad is None:
                continue
            weights = param.data
            state = self._state[index]
            if state is None:
                state = self._state[index] = _AdamState(weights)
            state.step += 1
            xp = backend.get_array_module(weights)
            m, v, scratch = state.exp_avg, state.exp_avg_sq, state.scratch
            if weight_decay and self.decoupled_weight_decay:
                weights *= 1.0 - lr * weight_decay  # AdamW: the decay leaves the moments alone
            elif weight_decay:
                decayed = weights * weight_decay
                decayed += grad
                grad = decayed
            # m = β1·m + (1 − β1)·g
            xp.multiply(grad, 1.0 - beta1, out=scratch)
            m *= beta1
            m += scratch
            # v = β2·v + (1 − β2)·g²
            xp.multiply(grad, grad, out=scratch)
            scratch *= 1.0 - beta2
            v *= beta2
            v += scratch
            # p -= step_size · m / (√v / √bias2 + eps), the denominator built in scratch
            bias1 = 1.0 - beta1 ** state.step
            bias2 = 1.0 - beta2 ** state.step
            xp.sqrt(v, out=scratch)
            scratch *= 1.0 / math.sqrt(bias2)
            scratch += eps
            xp.divide(m, scratch, out=scratch)
            scratch *= lr / bias1
            weights -= scratch
            param._version[0] += 1  # graphs built before this step can no longer backward

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(lr={self.lr}, betas={self.betas}, eps={self.eps}, "
                f"weight_decay={self.weight_decay})")


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter), exactly as ``torch.optim.AdamW``.

    The decay shrinks the weights directly instead of joining the gradient, so it never
    passes through the moments:

        p *= 1 − lr · weight_decay
        then Adam's update with g itself (no weight_decay · p added)

    ``weight_decay`` defaults to 0.01, as in PyTorch. The state is Adam's, so a state dict of
    one loads into the other.
    """

    decoupled_weight_decay = True

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


def _parameter_list(owner: str, params: Any) -> list[Tensor]:
    """``params`` as a list of distinct, writable leaf Tensors, or a clear error."""
    if isinstance(params, Tensor):
        raise TypeError(f"{owner}: params is a single Tensor; expected an iterable of Tensors, "
                        f"e.g. {owner}([w], ...) or {owner}(model.parameters(), ...)")
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"{owner}: params is a {type(params).__name__}; expected an iterable of "
                        f"Tensors such as model.parameters()") from None
    if not params:
        raise ValueError(f"{owner}: got an empty parameter list; expected at least one Tensor "
                         f"(a generator such as model.parameters() can be "
                         f"read only once: was it used already?)")
    seen: set[int] = set()
    # Tensor(array) shares the array (torch.from_numpy's rule), so two parameters made from one
    # zeros array are one array: each step would apply both updates to it, silently.
    arrays: dict[int, int] = {}
    for index, param in enumerate(params):
        if not isinstance(param, Tensor):
            hint = " (pass model.parameters(), not named_parameters())" if isinstance(param, tuple) else ""
            raise TypeError(f"{owner}: parameter {index} is a {type(param).__name__}; expected a "
                            f"Tensor with requires_grad=True{hint}")
        if not param.is_leaf:
            raise ValueError(f"{owner}: parameter {index} (shape {param.shape}) was computed by "
                             f"{param.grad_fn.name}; expected a leaf Tensor, the only kind whose "
                             f".grad backward fills")
        if not backend.can_update_in_place(param.data):
            raise ValueError(f"{owner}: parameter {index} (shape {param.shape}) has a read-only "
                             f"array (a broadcast view?), which step() cannot update in place; "
                             f"expected a writable array, e.g. Tensor(array.copy(), requires_grad=True)")
        if id(param) in seen:
            raise ValueError(f"{owner}: parameter {index} (shape {param.shape}) appears more than "
                             f"once; expected each parameter once")
        seen.add(id(param))
        first = arrays.setdefault(id(param.data), index)
        if first != index:
            raise ValueError(f"{owner}: parameters {first} and {index} (shape {param.shape}) share one "
                             f"array; each step would update it twice. Tensor(array) shares the "
                             f"array it is given: make each parameter from its own, e.g. "
                             f"Tensor(array.copy(), requires_grad=True)")
    return params
