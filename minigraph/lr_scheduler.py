"""Learning-rate schedulers, as ``torch.optim.lr_scheduler``: ``StepLR``, ``MultiStepLR``,
``ExponentialLR``, ``CosineAnnealingLR`` and ``LambdaLR``.

Imported as ``minigraph.optim.lr_scheduler`` (``optim.py`` registers this module under that
name, as ``nn.py`` does for ``minigraph.nn.utils``), so PyTorch's spellings work unchanged::

    from minigraph.optim.lr_scheduler import StepLR
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = StepLR(opt, step_size=30, gamma=0.1)
    for epoch in range(100):
        train(...)            # opt.step() per batch
        scheduler.step()      # once per epoch, after that epoch's optimizer steps

A scheduler sets ``group["lr"]`` in each of its optimizer's parameter groups. When built it
records each group's rate as ``group["initial_lr"]`` (kept if a scheduler set it already, so a
second one starts from the same rate), takes those as ``base_lrs`` and applies epoch 0;
each ``step()`` moves to the next epoch. As in PyTorch, the rates follow recursive forms that
scale the group's current ``lr`` (so a change made by hand, or by a second scheduler, carries
on), except ``LambdaLR``, which sets ``base_lr · lr_lambda(epoch)``. Left alone they equal the
closed form given in each class's docstring.

Checkpoints: ``scheduler.state_dict()`` is a flat dict of arrays (``nn.save`` writes it):
``last_epoch``, ``base_lrs`` and ``last_lr`` (one per group) and the scheduler's settings. To
resume, build the optimizer and the scheduler as for a fresh run, then load both; as in
PyTorch, load the optimizer's state after building the scheduler, whose epoch 0 sets the rates.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy

from . import checks
from .optim import Optimizer

__all__ = ["CosineAnnealingLR", "ExponentialLR", "LRScheduler", "LambdaLR", "MultiStepLR", "StepLR"]


class LRScheduler:
    """Base class: ``step()``, ``get_last_lr()``, ``last_epoch``, ``state_dict()`` and ``load_state_dict()``.

    A subclass implements ``get_lr()``: the rate of each group at epoch ``self.last_epoch``,
    from ``self.base_lrs`` and the groups' current ``lr`` (``self.optimizer.param_groups``),
    as in PyTorch. Its settings are listed in ``_hyperparameters`` (name -> check(owner, name,
    value), returning the value to keep): checked when assigned, saved by ``state_dict`` and
    restored by ``load_state_dict``, as PyTorch's scheduler state dicts restore them.
    """

    _hyperparameters: dict[str, Callable[[str, str, Any], Any]] = {}

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = _checked_optimizer(type(self).__name__, optimizer)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self._last_lr: list[float] = []
        self.step()  # epoch 0

    def __setattr__(self, name: str, value: Any) -> None:
        check = self._hyperparameters.get(name)
        if check is not None:  # only on assignment: step() pays nothing for it
            value = check(type(self).__name__, name, value)
        object.__setattr__(self, name, value)

    def get_lr(self) -> list[float]:
        """Each group's rate at epoch ``self.last_epoch``."""
        raise NotImplementedError(f"{type(self).__name__} has no get_lr(); define it in the subclass")

    def step(self) -> None:
        """Move to the next epoch and set each group's ``lr`` to its rate there. Call it after the
        optimizer's steps of an epoch. A rate that is not a finite number >= 0 raises, and then
        neither the rates nor ``last_epoch`` change."""
        owner = type(self).__name__
        groups = self.optimizer.param_groups
        if len(groups) != len(self.base_lrs):
            raise ValueError(f"{owner}: the optimizer has {len(groups)} parameter groups but this "
                             f"scheduler was built for {len(self.base_lrs)}; expected the groups it was "
                             f"built with (build the scheduler after the last add_param_group)")
        self.last_epoch += 1
        try:
            lrs = list(self.get_lr())
            if len(lrs) != len(groups):
                raise ValueError(f"{owner}: get_lr() gave {len(lrs)} rates for {len(groups)} parameter "
                                 f"groups; expected one per group")
            where = f"{owner}.step (epoch {self.last_epoch})"
            lrs = [checks.real(where, f"param_groups[{i}]['lr']", lr, low=0.0) for i, lr in enumerate(lrs)]
        except BaseException:
            self.last_epoch -= 1
            raise
        for group, lr in zip(groups, lrs):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in groups]

    def get_last_lr(self) -> list[float]:
        """The rates the last ``step()`` (or the constructor) set, one per parameter group (a new list)."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, numpy.ndarray]:
        """``last_epoch``, ``base_lrs`` and ``last_lr`` (arrays of shape (groups,)) and the settings, as
        host NumPy arrays in a flat dict that ``nn.save`` writes. The optimizer is not part of it."""
        saved = {"last_epoch": numpy.array(self.last_epoch, dtype=numpy.int64),
                 "base_lrs": numpy.array(self.base_lrs, dtype=numpy.float64),
                 "last_lr": numpy.array(self._last_lr, dtype=numpy.float64)}
        for name in self._hyperparameters:
            value = getattr(self, name)
            if isinstance(value, Counter):  # milestones: each as often as it counts
                saved[name] = numpy.array(sorted(value.elements()), dtype=numpy.int64)
            else:
                saved[name] = numpy.array(value, dtype=numpy.int64 if isinstance(value, int) else numpy.float64)
        return saved

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` saved, from a scheduler of the same class over an optimizer
        with as many parameter groups. The optimizer's rates are its own state: load them with
        ``opt.load_state_dict``. Everything is checked before anything changes."""
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{owner}: got a {type(state_dict).__name__}; expected a mapping of names to "
                            f"arrays, e.g. nn.load('scheduler.npz') or scheduler.state_dict()")
        expected = ["last_epoch", "base_lrs", "last_lr", *self._hyperparameters]
        missing = [key for key in expected if key not in state_dict]
        unknown = [key for key in state_dict if key not in expected]
        if missing or unknown:
            raise ValueError(f"{owner}: missing keys {missing}, unexpected keys {unknown}; expected "
                             f"{expected}, as {type(self).__name__}.state_dict() gives")
        last_epoch = checks.integer(owner, "last_epoch", state_dict["last_epoch"], low=0)
        base_lrs, last_lr = (self._rates(owner, key, state_dict[key]) for key in ("base_lrs", "last_lr"))
        settings = {name: check(owner, name, state_dict[name])
                    for name, check in self._hyperparameters.items()}
        # Every check passed: only now does anything change.
        for name, value in settings.items():
            object.__setattr__(self, name, value)
        self.last_epoch, self.base_lrs, self._last_lr = last_epoch, base_lrs, last_lr

    def _rates(self, owner: str, key: str, value: Any) -> list[float]:
        """A saved list of rates (one per group) as floats, or a clear error."""
        rates = value.tolist() if getattr(value, "ndim", None) == 1 else value
        if not isinstance(rates, (list, tuple)):
            raise TypeError(f"{owner}: {key!r} is {value!r}; expected a 1-D array with one rate per "
                            f"parameter group, as state_dict() gives")
        groups = len(self.optimizer.param_groups)
        if len(rates) != groups:
            raise ValueError(f"{owner}: {key!r} has {len(rates)} rates but the optimizer has {groups} "
                             f"parameter groups; expected the state of a scheduler over the same groups")
        return [checks.real(owner, f"{key}[{i}]", rate, low=0.0) for i, rate in enumerate(rates)]


def _checked_optimizer(owner: str, optimizer: Any) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{owner}: got a {type(optimizer).__name__}; expected an optimizer such as "
                        f"optim.SGD(model.parameters(), lr=0.1)")
    return optimizer


def _positive_integer(owner: str, name: str, value: Any) -> int:
    return checks.integer(owner, name, value, low=1)


def _factor(example: str) -> Callable[[str, str, Any], float]:
    """The check of a multiplicative factor such as ``gamma``: a finite number >= 0."""
    return lambda owner, name, value: checks.real(owner, name, value, low=0.0, example=example)


def _milestones(owner: str, name: str, value: Any) -> Counter:
    """Epochs (integers >= 0, in any order) as a Counter: a milestone given n times decays by gamma^n."""
    if isinstance(value, Counter):
        entries = list(value.elements())
    elif getattr(value, "ndim", None) == 1:  # an array, as nn.load gives back
        entries = value.tolist()
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 1):
        entries = list(value)
    else:
        raise TypeError(f"{owner}: got {name}={value!r}; expected a list of epochs such as [30, 80]")
    return Counter(checks.integer(owner, f"{name}[{i}]", epoch) for i, epoch in enumerate(entries))


class StepLR(LRScheduler):
    """Multiplies each group's rate by ``gamma`` every ``step_size`` epochs, as
    ``torch.optim.lr_scheduler.StepLR``.

    Closed form: lr(epoch) = base_lr · gamma^⌊epoch / step_size⌋.
    """

    _hyperparameters = {"step_size": _positive_integer, "gamma": _factor("gamma=0.1")}

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size, self.gamma = step_size, gamma  # checked on assignment
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.last_epoch == 0 or self.last_epoch % self.step_size:
            return lrs
        return [lr * self.gamma for lr in lrs]


class MultiStepLR(LRScheduler):
    """Multiplies each group's rate by ``gamma`` at each epoch in ``milestones``, as
    ``torch.optim.lr_scheduler.MultiStepLR``. ``milestones`` may come in any order; one listed
    n times multiplies by gamma^n there, as in PyTorch.

    Closed form: lr(epoch) = base_lr · gamma^(number of milestones <= epoch).
    """

    _hyperparameters = {"milestones": _milestones, "gamma": _factor("gamma=0.1")}

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1) -> None:
        self.milestones, self.gamma = milestones, gamma  # checked on assignment
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.last_epoch not in self.milestones:
            return lrs
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in lrs]


class ExponentialLR(LRScheduler):
    """Multiplies each group's rate by ``gamma`` every epoch, as ``torch.optim.lr_scheduler.ExponentialLR``.

    Closed form: lr(epoch) = base_lr · gamma^epoch.
    """

    _hyperparameters = {"gamma": _factor("gamma=0.95")}

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        self.gamma = gamma  # checked on assignment
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        return lrs if self.last_epoch == 0 else [lr * self.gamma for lr in lrs]


class CosineAnnealingLR(LRScheduler):
    """Anneals each group's rate from its base rate to ``eta_min`` along a half cosine over
    ``T_max`` epochs, then back up and down again with period 2·T_max (no restarts), as
    ``torch.optim.lr_scheduler.CosineAnnealingLR``.

    Closed form: lr(epoch) = eta_min + (base_lr − eta_min) · (1 + cos(π · epoch / T_max)) / 2.
    Each step applies PyTorch's recursive form, which scales the current rate's distance to
    eta_min by the ratio of consecutive cosine terms:

        lr(e) = eta_min + (lr(e−1) − eta_min) · (1 + cos(π e / T_max)) / (1 + cos(π (e−1) / T_max))
    """

    _hyperparameters = {"T_max": _positive_integer, "eta_min": _factor("eta_min=1e-5")}

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        self.T_max, self.eta_min = T_max, eta_min  # checked on assignment
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        epoch, period, eta_min = self.last_epoch, self.T_max, self.eta_min
        groups = self.optimizer.param_groups
        if epoch == 0:
            return [group["lr"] for group in groups]
        if (epoch - 1 - period) % (2 * period) == 0:
            # The last rate was a minimum, where 1 + cos = 0 and the ratio is 0/0: step up by
            # the closed form's rise from its minimum instead.
            rise = (1 - math.cos(math.pi / period)) / 2
            return [group["lr"] + (base - eta_min) * rise for base, group in zip(self.base_lrs, groups)]
        ratio = (1 + math.cos(math.pi * epoch / period)) / (1 + math.cos(math.pi * (epoch - 1) / period))
        return [ratio * (group["lr"] - eta_min) + eta_min for group in groups]


class LambdaLR(LRScheduler):
    """Sets each group's rate to its base rate times ``lr_lambda(epoch)``, as
    ``torch.optim.lr_scheduler.LambdaLR``.

    ``lr_lambda``: a function of the epoch (an int) giving a factor >= 0, or a list of such
    functions, one per parameter group. ``state_dict`` leaves the functions out (PyTorch saves
    the attributes of callable objects, never plain functions or lambdas): a resumed run passes
    them to the constructor again.

    Closed form: lr(epoch) = base_lr · lr_lambda(epoch).
    """

    def __init__(self, optimizer: Optimizer,
                 lr_lambda: Callable[[int], float] | list[Callable[[int], float]]) -> None:
        groups = len(_checked_optimizer("LambdaLR", optimizer).param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != groups:
                raise ValueError(f"LambdaLR: got {len(lr_lambda)} lr_lambdas for {groups} parameter groups; "
                                 f"expected one per group, or one function for all")
            self._names = [f"lr_lambda[{i}]" for i in range(groups)]
            lambdas = list(lr_lambda)
        else:
            self._names = ["lr_lambda"] * groups
            lambdas = [lr_lambda] * groups
        for name, function in zip(self._names, lambdas):
            if not callable(function):
                raise TypeError(f"LambdaLR: {name} is a {type(function).__name__}; expected a function of "
                                f"the epoch giving a factor, e.g. lambda epoch: 0.95 ** epoch")
        self.lr_lambdas: list[Callable[[int], float]] = lambdas
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        epoch = self.last_epoch
        where = f"LambdaLR.step (epoch {epoch})"
        return [base * checks.real(where, f"{name}({epoch})", function(epoch), low=0.0)
                for name, function, base in zip(self._names, self.lr_lambdas, self.base_lrs)]
