"""Learning-rate schedulers, as ``torch.optim.lr_scheduler``: ``StepLR``, ``MultiStepLR``,
``ExponentialLR``, ``CosineAnnealingLR``, ``CosineAnnealingWarmRestarts``, ``PolynomialLR``,
``LambdaLR``, ``LinearLR``, ``OneCycleLR``, ``CyclicLR``, ``SequentialLR`` (one scheduler after
another, e.g. a warm-up then a decay), ``ChainedScheduler`` (several stepped together) and
``ReduceLROnPlateau`` (stepped with a metric).

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
each ``step()`` moves to the next epoch. ``last_epoch=k`` (PyTorch's argument) builds it as
if k epochs had passed: the groups must hold ``initial_lr`` already (the base rates), and the
constructor moves to epoch k + 1 keeping the groups' current rates, except that ``StepLR`` and
``MultiStepLR`` apply a decay due at that epoch and the closed forms below set their rate there,
as PyTorch 2's constructors do (``SequentialLR`` takes only -1; ``ReduceLROnPlateau`` and
``ChainedScheduler``, as in PyTorch, take no ``last_epoch``). As in PyTorch, the rates follow
recursive forms that scale the group's current ``lr`` (so a change made by hand, or by a second
scheduler, carries on), except ``LambdaLR`` (``base_lr · lr_lambda(epoch)``),
``CosineAnnealingWarmRestarts``, ``OneCycleLR`` and ``CyclicLR``, which set their closed forms.
Left alone they all equal the closed form given in each class's docstring.

Checkpoints: ``scheduler.state_dict()`` is a flat dict of arrays (``nn.save`` writes it):
``last_epoch``, ``base_lrs`` and ``last_lr`` (one per group) and the scheduler's settings. To
resume, build the optimizer and the scheduler as for a fresh run, then load both; as in
PyTorch, load the optimizer's state after building the scheduler, whose epoch 0 sets the rates.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy

from . import checks
from .engine import Tensor
from .optim import Optimizer

__all__ = ["ChainedScheduler", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "CyclicLR", "ExponentialLR",
           "LRScheduler", "LambdaLR", "LinearLR", "MultiStepLR", "OneCycleLR", "PolynomialLR", "ReduceLROnPlateau",
           "SequentialLR", "StepLR"]


class LRScheduler:
    """Base class: ``step()``, ``get_last_lr()``, ``last_epoch``, ``state_dict()`` and ``load_state_dict()``.

    A subclass implements ``get_lr()``: the rate of each group at epoch ``self.last_epoch``,
    from ``self.base_lrs`` and the groups' current ``lr`` (``self.optimizer.param_groups``),
    as in PyTorch. Its settings are listed in ``_hyperparameters`` (name -> check(owner, name,
    value), returning the value to keep): checked when assigned, saved by ``state_dict`` and
    restored by ``load_state_dict``, as PyTorch's scheduler state dicts restore them.
    """

    _hyperparameters: dict[str, Callable[[str, str, Any], Any]] = {}
    _more_keys: tuple[str, ...] = ()  # keys a subclass's own state_dict adds and loads itself

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        owner = type(self).__name__
        self.optimizer = _checked_optimizer(owner, optimizer)
        last_epoch = checks.integer(owner, "last_epoch", last_epoch, low=-1)
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"{owner}: got last_epoch={last_epoch} but param_groups[{i}] has no "
                                   f"'initial_lr'; expected an optimizer a scheduler was built on before "
                                   f"(resuming), or last_epoch=-1 for a fresh schedule")
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._last_lr: list[float] = []
        self._initial = False
        self._initial_step()

    def _initial_step(self) -> None:
        """Epoch last_epoch + 1 (0 for a fresh schedule). While _initial, the recursive forms that
        would move a resumed rate one epoch ahead of itself keep it, as PyTorch's do."""
        self._initial = True
        try:
            self.step()
        finally:
            self._initial = False

    def _restart(self) -> None:
        """Epoch 0 again, from the base rates: what ``SequentialLR`` does to the scheduler whose
        milestone has come (PyTorch's ``_update_lr(0)``, the closed form at epoch 0). On an error
        nothing changes."""
        groups = self.optimizer.param_groups
        epoch, rates = self.last_epoch, [group["lr"] for group in groups]
        try:
            for group, base in zip(groups, self.base_lrs):
                group["lr"] = base
            self.last_epoch = -1
            self.step()
        except BaseException:
            for group, rate in zip(groups, rates):
                group["lr"] = rate
            self.last_epoch = epoch
            raise

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
        self._check_keys(owner, state_dict)
        # -1: a scheduler inside a SequentialLR whose milestone has not come yet (its constructor's
        # step undone) saves that, so it must load.
        last_epoch = checks.integer(owner, "last_epoch", state_dict["last_epoch"], low=-1)
        base_lrs, last_lr = (self._rates(owner, key, state_dict[key]) for key in ("base_lrs", "last_lr"))
        settings = {name: check(owner, name, state_dict[name])
                    for name, check in self._hyperparameters.items()}
        # Every check passed: only now does anything change.
        for name, value in settings.items():
            object.__setattr__(self, name, value)
        self.last_epoch, self.base_lrs, self._last_lr = last_epoch, base_lrs, last_lr

    def _check_keys(self, owner: str, state_dict: Any) -> None:
        """A mapping with exactly the keys ``state_dict()`` gives, or a clear error."""
        _check_mapping(owner, state_dict)
        expected = ["last_epoch", "base_lrs", "last_lr", *self._hyperparameters, *self._more_keys]
        missing = [key for key in expected if key not in state_dict]
        unknown = [key for key in state_dict if key not in expected]
        if missing or unknown:
            raise ValueError(f"{owner}: missing keys {missing}, unexpected keys {unknown}; expected "
                             f"{expected}, as {type(self).__name__}.state_dict() gives")

    def _rates(self, owner: str, key: str, value: Any, high: float = math.inf) -> list[float]:
        """A saved list of rates (one per group) as floats, or a clear error."""
        rates = value.tolist() if getattr(value, "ndim", None) == 1 else value
        if not isinstance(rates, (list, tuple)):
            raise TypeError(f"{owner}: {key!r} is {value!r}; expected a 1-D array with one rate per "
                            f"parameter group, as state_dict() gives")
        groups = len(self.optimizer.param_groups)
        if len(rates) != groups:
            raise ValueError(f"{owner}: {key!r} has {len(rates)} rates but the optimizer has {groups} "
                             f"parameter groups; expected the state of a scheduler over the same groups")
        return [checks.real(owner, f"{key}[{i}]", rate, low=0.0, high=high) for i, rate in enumerate(rates)]


def _check_mapping(owner: str, state_dict: Any) -> None:
    """A TypeError naming ``owner`` unless ``state_dict`` is a mapping (what every loader takes)."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{owner}: got a {type(state_dict).__name__}; expected a mapping of names to "
                        f"arrays, e.g. nn.load('scheduler.npz') or scheduler.state_dict()")


def _checked_optimizer(owner: str, optimizer: Any) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{owner}: got a {type(optimizer).__name__}; expected an optimizer such as "
                        f"optim.SGD(model.parameters(), lr=0.1)")
    return optimizer


def _positive_integer(owner: str, name: str, value: Any) -> int:
    return checks.integer(owner, name, value, low=1)


def _factor(example: str) -> Callable[[str, str, Any], float]:
    """The check of a multiplicative factor such as ``gamma``: a finite number >= 0 (a partial,
    not a lambda, so that a scheduler pickles)."""
    return functools.partial(checks.real, low=0.0, example=example)


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

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        self.step_size, self.gamma = step_size, gamma  # checked on assignment
        super().__init__(optimizer, last_epoch)

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

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.milestones, self.gamma = milestones, gamma  # checked on assignment
        super().__init__(optimizer, last_epoch)

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

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma  # checked on assignment
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        return lrs if self.last_epoch == 0 or self._initial else [lr * self.gamma for lr in lrs]


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

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        self.T_max, self.eta_min = T_max, eta_min  # checked on assignment
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        epoch, period, eta_min = self.last_epoch, self.T_max, self.eta_min
        groups = self.optimizer.param_groups
        if epoch == 0 or self._initial:
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
                 lr_lambda: Callable[[int], float] | list[Callable[[int], float]], last_epoch: int = -1) -> None:
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
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        epoch = self.last_epoch
        where = f"LambdaLR.step (epoch {epoch})"
        return [base * checks.real(where, f"{name}({epoch})", function(epoch), low=0.0)
                for name, function, base in zip(self._names, self.lr_lambdas, self.base_lrs)]


class LinearLR(LRScheduler):
    """Scales each group's rate by a factor moving linearly from ``start_factor`` to ``end_factor``
    over ``total_iters`` epochs, then keeps it, as ``torch.optim.lr_scheduler.LinearLR`` (a warm-up).

    Closed form: lr(epoch) = base_lr · (start + (end − start) · min(epoch, total_iters) / total_iters).
    Each step applies PyTorch's recursive form, the ratio of consecutive factors.
    """

    _hyperparameters = {
        "start_factor": functools.partial(checks.real, low=0.0, high=1.0, low_open=True, example="start_factor=0.1"),
        "end_factor": functools.partial(checks.real, low=0.0, high=1.0, example="end_factor=1.0"),
        "total_iters": _positive_integer,
    }

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1) -> None:
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        epoch, start, end = self.last_epoch, self.start_factor, self.end_factor
        if epoch == 0:
            return [lr * start for lr in lrs]
        if epoch > self.total_iters or self._initial:
            return lrs
        # factor(e) / factor(e − 1), factor(e) = start + (end − start)·e / total_iters
        ratio = 1.0 + (end - start) / (self.total_iters * start + (epoch - 1) * (end - start))
        return [lr * ratio for lr in lrs]


def _per_group(owner: str, name: str, value: Any, groups: int, check: Callable[..., float]) -> list[float]:
    """One value for every group, or a list/tuple of one per group, each passed through ``check``."""
    if isinstance(value, (list, tuple)):
        if len(value) != groups:
            raise ValueError(f"{owner}: got {len(value)} values of {name} for {groups} parameter groups; "
                             f"expected one per group, or one number for all")
        return [check(owner, f"{name}[{i}]", item) for i, item in enumerate(value)]
    return [check(owner, name, value)] * groups


def _momentum_key(owner: str, optimizer: Optimizer) -> str:
    """The group key that momentum cycling moves: Adam's ``betas`` (the first), else SGD's ``momentum``."""
    for key in ("betas", "momentum"):
        if key in optimizer._hyperparameters:
            return key
    raise ValueError(f"{owner}: got cycle_momentum=True for {type(optimizer).__name__}, which has "
                     f"neither momentum nor betas; expected an optimizer with one (SGD, Adam), or "
                     f"cycle_momentum=False")


class _MomentumCycle:
    """What ``OneCycleLR`` and ``CyclicLR`` share: with ``cycle_momentum`` each group's momentum
    (SGD's ``momentum``, Adam's first beta) moves between ``base_momentums`` and
    ``max_momentums`` against the rate. The ends live on the scheduler (PyTorch keeps them in the
    groups, which here take only the optimizer's own keys) and are saved with its policy."""

    _MOMENTA = ("max_momentums", "base_momentums")

    def _momentum_policy(self, owner: str, optimizer: Optimizer, cycle_momentum: bool,
                         base_momentum: float | list[float], max_momentum: float | list[float]) -> None:
        groups = len(optimizer.param_groups)
        self.cycle_momentum = checks.flag(owner, "cycle_momentum", cycle_momentum)
        self._momentum_key = _momentum_key(owner, optimizer) if self.cycle_momentum else None
        unit = functools.partial(checks.real, low=0.0, high=1.0)
        self.max_momentums = _per_group(owner, "max_momentum", max_momentum, groups, unit)
        self.base_momentums = _per_group(owner, "base_momentum", base_momentum, groups, unit)

    def _momentum_entry(self, group: Any, value: float) -> Any:
        """The group's new ``betas`` (the first replaced) or ``momentum`` for the momentum ``value``."""
        return (value, group["betas"][1]) if self._momentum_key == "betas" else value

    def _set_momentum(self, group: Any, value: float) -> None:
        group[self._momentum_key] = self._momentum_entry(group, value)

    def _momentum_state(self) -> dict[str, numpy.ndarray]:
        saved = {"cycle_momentum": numpy.array(self.cycle_momentum)}
        saved.update({name: numpy.array(getattr(self, name), dtype=numpy.float64) for name in self._MOMENTA})
        return saved

    def _checked_momentum_state(self, owner: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """The attributes ``_momentum_state`` saved, checked (nothing is changed here)."""
        cycle = checks.flag(owner, "cycle_momentum", state_dict["cycle_momentum"])
        values = {"cycle_momentum": cycle,
                  "_momentum_key": _momentum_key(owner, self.optimizer) if cycle else None}
        values.update({name: self._rates(owner, name, state_dict[name], high=1.0) for name in self._MOMENTA})
        return values


class OneCycleLR(_MomentumCycle, LRScheduler):
    """The 1cycle policy (Smith and Topin), as ``torch.optim.lr_scheduler.OneCycleLR``: stepped
    once per batch, the rate rises from ``max_lr / div_factor`` to ``max_lr`` over the first
    ``pct_start`` of ``total_steps``, then falls to ``max_lr / (div_factor · final_div_factor)``;
    with ``three_phase`` it first falls back to the starting rate, then to the minimum.
    ``anneal_strategy``: ``"cos"`` or ``"linear"`` between the phases' ends. With
    ``cycle_momentum`` the momentum (SGD's ``momentum``, Adam's first beta) moves the other way,
    between ``max_momentum`` and ``base_momentum``.

    ``total_steps`` or both ``epochs`` and ``steps_per_epoch`` give the length; stepping past it
    raises, as in PyTorch. ``max_lr``, ``base_momentum`` and ``max_momentum`` are numbers or
    lists of one per group. Unlike PyTorch, which keeps them in the groups' dicts (so that the
    optimizer's state dict carries them), the per-group ends of the phases live on the scheduler
    (``max_lrs``, ``initial_lrs``, ``min_lrs``, ``max_momentums``, ``base_momentums``) and its
    ``state_dict()`` carries them with the rest of the policy. With ``last_epoch=k`` the
    constructor leaves the groups' ``initial_lr`` and momentum alone and takes the policy from
    its arguments: pass the ones the schedule was built with.
    """

    _hyperparameters = {"total_steps": _positive_integer}

    def __init__(self, optimizer: Optimizer, max_lr: float | list[float], total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True, base_momentum: float | list[float] = 0.85,
                 max_momentum: float | list[float] = 0.95, div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False, last_epoch: int = -1) -> None:
        owner = "OneCycleLR"
        groups = _checked_optimizer(owner, optimizer).param_groups
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError(f"{owner}: got total_steps=None with epochs={epochs!r} and steps_per_epoch="
                                 f"{steps_per_epoch!r}; expected total_steps, or both epochs and steps_per_epoch")
            total_steps = (_positive_integer(owner, "epochs", epochs)
                           * _positive_integer(owner, "steps_per_epoch", steps_per_epoch))
        self.total_steps = total_steps  # checked on assignment
        pct_start = checks.real(owner, "pct_start", pct_start, low=0.0, high=1.0, example="pct_start=0.3")
        three_phase = checks.flag(owner, "three_phase", three_phase)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"{owner}: got anneal_strategy={anneal_strategy!r}; expected 'cos' or 'linear'")
        self.anneal_strategy = anneal_strategy
        positive = functools.partial(checks.real, low=0.0, low_open=True)
        div_factor = positive(owner, "div_factor", div_factor)
        final_div_factor = positive(owner, "final_div_factor", final_div_factor)
        self.max_lrs = _per_group(owner, "max_lr", max_lr, len(groups), functools.partial(checks.real, low=0.0))
        self.initial_lrs = [lr / div_factor for lr in self.max_lrs]
        self.min_lrs = [lr / final_div_factor for lr in self.initial_lrs]
        self._momentum_policy(owner, optimizer, cycle_momentum, base_momentum, max_momentum)
        self._set_phases(pct_start, three_phase)
        if checks.integer(owner, "last_epoch", last_epoch, low=-1) == -1:
            for i, group in enumerate(groups):
                group["initial_lr"] = self.initial_lrs[i]
                if self.cycle_momentum:
                    self._set_momentum(group, self.max_momentums[i])
        super().__init__(optimizer, last_epoch)

    def _set_phases(self, pct_start: float, three_phase: bool) -> None:
        """Each phase: its last step, and which ends it anneals between (lr, then momentum)."""
        self.pct_start, self.three_phase = pct_start, three_phase
        up, ends = float(pct_start * self.total_steps) - 1, float(self.total_steps - 1)
        if three_phase:
            self._phases = [(up, "initial", "max", "max", "base"),
                            (float(2 * pct_start * self.total_steps) - 2, "max", "initial", "base", "max"),
                            (ends, "initial", "min", "max", "max")]
        else:
            self._phases = [(up, "initial", "max", "max", "base"), (ends, "max", "min", "base", "max")]

    _RATES = ("max_lrs", "initial_lrs", "min_lrs")
    _FLAGS = ("three_phase", "anneal_linear")
    _more_keys = ("pct_start", *_FLAGS, "cycle_momentum", *_RATES, *_MomentumCycle._MOMENTA)

    def state_dict(self) -> dict[str, numpy.ndarray]:
        """The base keys and ``total_steps``, then the whole policy: ``pct_start``, the flags
        ``three_phase``, ``anneal_linear``, ``cycle_momentum``, and the per-group phase ends
        ``max_lrs``, ``initial_lrs``, ``min_lrs``, ``max_momentums``, ``base_momentums`` (shape
        (groups,)), which PyTorch keeps in the optimizer's groups."""
        saved = super().state_dict()
        saved["pct_start"] = numpy.array(self.pct_start, dtype=numpy.float64)
        saved.update(three_phase=numpy.array(self.three_phase), anneal_linear=numpy.array(
            self.anneal_strategy == "linear"))
        saved.update(self._momentum_state())
        saved.update({name: numpy.array(getattr(self, name), dtype=numpy.float64) for name in self._RATES})
        return saved

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` saved: position and the whole policy. Everything is
        checked before anything changes."""
        owner = "OneCycleLR.load_state_dict"
        self._check_keys(owner, state_dict)
        pct_start = checks.real(owner, "pct_start", state_dict["pct_start"], low=0.0, high=1.0)
        three_phase, linear = (checks.flag(owner, name, state_dict[name]) for name in self._FLAGS)
        momentum = self._checked_momentum_state(owner, state_dict)
        ends = {name: self._rates(owner, name, state_dict[name]) for name in self._RATES}
        super().load_state_dict(state_dict)  # checks the rest, then loads it
        self.__dict__.update(ends, **momentum, anneal_strategy="linear" if linear else "cos")
        self._set_phases(pct_start, three_phase)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {step} times, but total_steps is {self.total_steps}; "
                             f"expected at most total_steps steps (one per batch), or a longer schedule")
        ends = {"initial": self.initial_lrs, "max": self.max_lrs, "min": self.min_lrs}
        momenta = {"max": self.max_momentums, "base": self.base_momentums}
        lrs = []
        for i, group in enumerate(self.optimizer.param_groups):
            start = 0.0
            for k, (end, lr_from, lr_to, m_from, m_to) in enumerate(self._phases):
                if step <= end or k == len(self._phases) - 1:
                    # A phase of no steps (pct_start·total_steps = 1, or pct_start = 1 at the last
                    # step) is at its end: PyTorch divides by zero there.
                    pct = (step - start) / (end - start) if end != start else 1.0
                    lrs.append(self._anneal(ends[lr_from][i], ends[lr_to][i], pct))
                    if self.cycle_momentum:
                        self._set_momentum(group, self._anneal(momenta[m_from][i], momenta[m_to][i], pct))
                    break
                start = end
        return lrs


def _children_state(schedulers: list[Any]) -> dict[str, numpy.ndarray]:
    """Each scheduler's ``state_dict()`` under ``schedulers.<k>.``, in one flat dict."""
    return {f"schedulers.{k}.{key}": value
            for k, scheduler in enumerate(schedulers) for key, value in scheduler.state_dict().items()}


def _split_state(owner: str, state_dict: Any, schedulers: list[Any],
                 expected: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A container's state dict split into its own entries (exactly the keys ``expected``, or a
    clear error) and one part per scheduler (the ``schedulers.<k>.`` entries, prefix removed)."""
    _check_mapping(owner, state_dict)
    own: dict[str, Any] = {}
    parts: list[dict[str, Any]] = [{} for _ in schedulers]
    for key, value in state_dict.items():
        head, k, rest = (key.split(".", 2) + ["", ""])[:3] if isinstance(key, str) else ("", "", "")
        if head == "schedulers" and k.isdigit() and int(k) < len(parts) and rest:
            parts[int(k)][rest] = value
        else:
            own[key] = value
    missing = [key for key in expected if key not in own]
    unknown = [key for key in own if key not in expected]
    if missing or unknown:
        kind = owner.split(".")[0]
        raise ValueError(f"{owner}: missing keys {missing}, unexpected keys {unknown}; expected "
                         f"{expected} and schedulers.<k>.<key> for k < {len(parts)}, as "
                         f"{kind}.state_dict() gives")
    return own, parts


def _load_children(schedulers: list[Any], parts: list[dict[str, Any]]) -> None:
    """Load each scheduler's part; each checks its part before changing, and if a later one
    refuses, the earlier ones get their states back."""
    before = [scheduler.state_dict() for scheduler in schedulers]
    loaded = 0
    try:
        for scheduler, part in zip(schedulers, parts):
            scheduler.load_state_dict(part)
            loaded += 1
    except BaseException:
        for scheduler, state in zip(schedulers[:loaded], before):
            scheduler.load_state_dict(state)
        raise


def _sorted_epochs(owner: str, name: str, value: Any, count: int) -> list[int]:
    """``count`` epochs (integers >= 0) in increasing order, from a list, a tuple or a 1-D array
    (as ``nn.load`` gives back), or a clear error."""
    entries = value.tolist() if getattr(value, "ndim", None) == 1 else value
    if not isinstance(entries, (list, tuple)):
        raise TypeError(f"{owner}: got {name}={value!r}; expected a list of epochs such as [5]")
    epochs = [checks.integer(owner, f"{name}[{i}]", epoch) for i, epoch in enumerate(entries)]
    if len(epochs) != count:
        raise ValueError(f"{owner}: got {len(epochs)} {name} for {count + 1} schedulers; expected one fewer "
                         f"milestone than schedulers (the epochs where each next scheduler takes over)")
    if epochs != sorted(epochs):
        raise ValueError(f"{owner}: got {name}={epochs}; expected them in increasing order")
    return epochs


class SequentialLR(LRScheduler):
    """Runs ``schedulers`` one after another, as ``torch.optim.lr_scheduler.SequentialLR``: the
    first until epoch ``milestones[0]``, where the second starts at its epoch 0 from the base
    rates, and so on (e.g. ``LinearLR`` warm-up for 5 epochs, then ``CosineAnnealingLR``)::

        warmup = LinearLR(opt, start_factor=0.1, total_iters=5)
        decay = CosineAnnealingLR(opt, T_max=95)
        scheduler = SequentialLR(opt, [warmup, decay], milestones=[5])

    The schedulers must be built on ``optimizer`` just before (each set the rates once, which
    this constructor undoes: the rates go back to ``initial_lr`` and only the scheduler of epoch
    0 applies its epoch 0). Epoch e is scheduler k's epoch e − milestones[k−1]. Step only the
    ``SequentialLR``. ``ReduceLROnPlateau`` (which needs a metric) and a nested ``SequentialLR``
    are refused. ``last_epoch`` must be -1: resume with ``load_state_dict`` (PyTorch's
    ``last_epoch`` here restarts the schedulers' rates out of step with their epochs).

    ``state_dict()`` is flat: ``last_epoch``, ``last_lr``, ``milestones``, and each scheduler's
    state under ``schedulers.<k>.<key>``.
    """

    def __init__(self, optimizer: Optimizer, schedulers: list[LRScheduler], milestones: list[int],
                 last_epoch: int = -1) -> None:
        owner = "SequentialLR"
        groups = _checked_optimizer(owner, optimizer).param_groups
        if checks.integer(owner, "last_epoch", last_epoch, low=-1) != -1:
            raise ValueError(f"{owner}: got last_epoch={last_epoch}; expected -1 (to resume, build it as for a "
                             f"fresh run, then call load_state_dict with the saved state_dict())")
        if not isinstance(schedulers, (list, tuple)) or not schedulers:
            raise TypeError(f"{owner}: got schedulers={schedulers!r}; expected a non-empty list of schedulers "
                            f"built on the optimizer, e.g. [LinearLR(opt), ExponentialLR(opt, 0.9)]")
        for k, scheduler in enumerate(schedulers):
            kind = type(scheduler).__name__
            if isinstance(scheduler, (ReduceLROnPlateau, SequentialLR, ChainedScheduler)):
                raise ValueError(f"{owner}: schedulers[{k}] is a {kind}; expected a scheduler stepped without "
                                 f"arguments and not itself a SequentialLR or ChainedScheduler (StepLR, LinearLR, "
                                 f"...)")
            if not isinstance(scheduler, LRScheduler):
                raise TypeError(f"{owner}: schedulers[{k}] is a {kind}; expected a learning-rate scheduler "
                                f"such as LinearLR(opt)")
            if scheduler.optimizer is not optimizer:
                raise ValueError(f"{owner}: schedulers[{k}] ({kind}) was built on another optimizer; expected "
                                 f"every scheduler built on the optimizer given to SequentialLR")
            if any(scheduler is other for other in schedulers[:k]):
                raise ValueError(f"{owner}: schedulers[{k}] ({kind}) is listed twice; expected each once")
            if len(scheduler.base_lrs) != len(groups):
                raise ValueError(f"{owner}: schedulers[{k}] ({kind}) was built for {len(scheduler.base_lrs)} "
                                 f"parameter groups but the optimizer has {len(groups)}; expected schedulers "
                                 f"built after the last add_param_group")
        self._milestones = _sorted_epochs(owner, "milestones", milestones, len(schedulers) - 1)
        self.optimizer = optimizer
        self._schedulers = list(schedulers)
        self.last_epoch = 0
        # Each scheduler's constructor applied its epoch 0: undo them all, then apply the first one's.
        rates = [group["lr"] for group in groups]
        epochs = [scheduler.last_epoch for scheduler in self._schedulers]
        first = self._schedulers[bisect.bisect_right(self._milestones, 0)]
        try:
            for group in groups:
                group["lr"] = group["initial_lr"]
            for scheduler in self._schedulers:
                scheduler.last_epoch -= 1
            first._initial_step()
        except BaseException:
            for group, rate in zip(groups, rates):
                group["lr"] = rate
            for scheduler, epoch in zip(self._schedulers, epochs):
                scheduler.last_epoch = epoch
            raise
        self._last_lr = first.get_last_lr()

    def step(self) -> None:
        """Move to the next epoch: the scheduler whose milestone this is starts at its epoch 0,
        otherwise the running one steps. On an error nothing changes."""
        epoch = self.last_epoch + 1
        k = bisect.bisect_right(self._milestones, epoch)
        scheduler = self._schedulers[k]
        if k > 0 and self._milestones[k - 1] == epoch:
            scheduler._restart()
        else:
            scheduler.step()
        self.last_epoch = epoch
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, numpy.ndarray]:
        """``last_epoch``, ``last_lr`` (shape (groups,)), ``milestones`` and each scheduler's
        ``state_dict()`` under ``schedulers.<k>.``, as host NumPy arrays in a flat dict."""
        saved = {"last_epoch": numpy.array(self.last_epoch, dtype=numpy.int64),
                 "last_lr": numpy.array(self._last_lr, dtype=numpy.float64),
                 "milestones": numpy.array(self._milestones, dtype=numpy.int64)}
        saved.update(_children_state(self._schedulers))
        return saved

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` saved, from a ``SequentialLR`` over as many schedulers of the
        same classes. Everything is checked before anything changes."""
        owner = "SequentialLR.load_state_dict"
        own, parts = _split_state(owner, state_dict, self._schedulers, ["last_epoch", "last_lr", "milestones"])
        last_epoch = checks.integer(owner, "last_epoch", own["last_epoch"])
        last_lr = self._rates(owner, "last_lr", own["last_lr"])
        milestones = _sorted_epochs(owner, "milestones", own["milestones"], len(self._schedulers) - 1)
        _load_children(self._schedulers, parts)
        self.last_epoch, self._last_lr, self._milestones = last_epoch, last_lr, milestones


class ReduceLROnPlateau:
    """Multiplies each group's rate by ``factor`` once a metric has stopped improving for more than
    ``patience`` epochs, as ``torch.optim.lr_scheduler.ReduceLROnPlateau``: ``step(metric)`` once
    per epoch, with the validation loss (``mode="min"``) or an accuracy (``mode="max"``).

    An epoch improves when the metric beats the best so far by ``threshold``: relatively
    (``threshold_mode="rel"``: below best·(1 − threshold), or above best·(1 + threshold) in max
    mode) or absolutely (``"abs"``: below best − threshold). After a reduction, ``cooldown``
    epochs pass before bad epochs count again. A rate never goes below ``min_lr`` (a number, which
    also holds for groups added later, or a list of one per group, which then must be extended
    by hand as in PyTorch), and a reduction smaller than ``eps`` is skipped. A NaN metric is a
    bad epoch (it never beats the best), as in PyTorch: no error. The metric may be a number, a
    0-d array or a 0-d Tensor; a GPU array or tensor is read to the host there, so the host
    waits for the device once per call, as PyTorch's ``float(metric)`` (``.item()``) does.
    Unlike PyTorch's, this class is not an ``LRScheduler`` and takes no ``last_epoch``
    (PyTorch's takes none either); resume with ``load_state_dict``.

    ``state_dict()`` is flat (``nn.save`` writes it): the running state ``best``,
    ``num_bad_epochs``, ``cooldown_counter``, ``last_epoch``, ``last_lr``, and the numeric
    settings; ``mode``, ``threshold_mode`` and a per-group ``min_lr`` are saved as the flags
    ``mode_max``, ``threshold_abs`` and ``min_lr_per_group``.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float | list[float] = 0.0, eps: float = 1e-8) -> None:
        owner = "ReduceLROnPlateau"
        self.optimizer = _checked_optimizer(owner, optimizer)
        if mode not in ("min", "max"):
            raise ValueError(f"{owner}: got mode={mode!r}; expected 'min' or 'max'")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"{owner}: got threshold_mode={threshold_mode!r}; expected 'rel' or 'abs'")
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor = checks.real(owner, "factor", factor, low=0.0, high=1.0, high_open=True, example="factor=0.1")
        self.patience = checks.integer(owner, "patience", patience)
        self.threshold = checks.real(owner, "threshold", threshold, low=0.0, example="threshold=1e-4")
        self.cooldown = checks.integer(owner, "cooldown", cooldown)
        self.min_lrs = _per_group(owner, "min_lr", min_lr, len(optimizer.param_groups),
                                  functools.partial(checks.real, low=0.0))
        # One min_lr for all also covers groups added later, as in PyTorch; one per group cannot.
        self.min_lr_per_group = isinstance(min_lr, (list, tuple))
        self.eps = checks.real(owner, "eps", eps, low=0.0)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def _improves(self, metric: float) -> bool:
        best, threshold = self.best, self.threshold
        if self.mode == "min":
            return metric < (best * (1.0 - threshold) if self.threshold_mode == "rel" else best - threshold)
        return metric > (best * (1.0 + threshold) if self.threshold_mode == "rel" else best + threshold)

    def step(self, metrics: Any) -> None:
        """Record this epoch's metric and reduce the rates if it has stalled for too long."""
        value = metrics.data if isinstance(metrics, Tensor) else metrics
        if getattr(value, "ndim", 0) != 0 or isinstance(value, (bool, str)) or value is None:
            raise TypeError(f"ReduceLROnPlateau.step: got metrics={metrics!r}; expected one number (the "
                            f"epoch's validation loss, say), a 0-d array or a 0-d Tensor")
        current = float(value)  # a GPU array is read here: the one wait per epoch
        groups = len(self.optimizer.param_groups)
        if groups != len(self.min_lrs):
            if self.min_lr_per_group:
                raise ValueError(f"ReduceLROnPlateau.step: the optimizer has {groups} parameter groups but "
                                 f"min_lr gives {len(self.min_lrs)}; expected one per group (set "
                                 f"scheduler.min_lrs to a list of {groups} after add_param_group)")
            self.min_lrs = [self.min_lrs[0]] * groups
        self.last_epoch += 1
        if self._improves(current):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during the cooldown do not count
        if self.num_bad_epochs > self.patience:
            for group, floor in zip(self.optimizer.param_groups, self.min_lrs):
                old = group["lr"]
                new = max(old * self.factor, floor)
                if old - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The groups' rates after the last ``step`` (or at construction), a new list."""
        return list(self._last_lr)

    _COUNTS = ("num_bad_epochs", "cooldown_counter", "last_epoch", "patience", "cooldown")
    _NUMBERS = ("best", "factor", "threshold", "eps")

    def state_dict(self) -> dict[str, numpy.ndarray]:
        """The running state and the settings as host NumPy arrays in a flat dict (see the class)."""
        saved = {name: numpy.array(getattr(self, name), dtype=numpy.int64) for name in self._COUNTS}
        saved.update({name: numpy.array(getattr(self, name), dtype=numpy.float64) for name in self._NUMBERS})
        saved["min_lrs"] = numpy.array(self.min_lrs, dtype=numpy.float64)
        saved["last_lr"] = numpy.array(self._last_lr, dtype=numpy.float64)
        saved["mode_max"] = numpy.array(self.mode == "max")
        saved["threshold_abs"] = numpy.array(self.threshold_mode == "abs")
        saved["min_lr_per_group"] = numpy.array(self.min_lr_per_group)
        return saved

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` saved; everything is checked before anything changes."""
        owner = "ReduceLROnPlateau.load_state_dict"
        _check_mapping(owner, state_dict)
        expected = [*self._COUNTS, *self._NUMBERS, "min_lrs", "last_lr", "mode_max", "threshold_abs",
                    "min_lr_per_group"]
        missing = [key for key in expected if key not in state_dict]
        unknown = [key for key in state_dict if key not in expected]
        if missing or unknown:
            raise ValueError(f"{owner}: missing keys {missing}, unexpected keys {unknown}; expected "
                             f"{expected}, as ReduceLROnPlateau.state_dict() gives")
        values: dict[str, Any] = {name: checks.integer(owner, name, state_dict[name]) for name in self._COUNTS}
        values["best"] = checks.real(owner, "best", state_dict["best"], infinite=True)
        values["factor"] = checks.real(owner, "factor", state_dict["factor"], low=0.0, high=1.0, high_open=True)
        values.update({name: checks.real(owner, name, state_dict[name], low=0.0) for name in ("threshold", "eps")})
        groups = len(self.optimizer.param_groups)
        for key, name in (("min_lrs", "min_lrs"), ("last_lr", "_last_lr")):
            rates = state_dict[key].tolist() if getattr(state_dict[key], "ndim", None) == 1 else None
            if rates is None or len(rates) != groups:
                raise ValueError(f"{owner}: {key!r} is {state_dict[key]!r}; expected a 1-D array of {groups} "
                                 f"rates, one per parameter group")
            values[name] = [checks.real(owner, f"{key}[{i}]", rate, low=0.0) for i, rate in enumerate(rates)]
        values["mode"] = "max" if checks.flag(owner, "mode_max", state_dict["mode_max"]) else "min"
        values["threshold_mode"] = "abs" if checks.flag(owner, "threshold_abs", state_dict["threshold_abs"]) \
            else "rel"
        values["min_lr_per_group"] = checks.flag(owner, "min_lr_per_group", state_dict["min_lr_per_group"])
        self.__dict__.update(values)


class PolynomialLR(LRScheduler):
    """Decays each group's rate to 0 along a polynomial of degree ``power`` over ``total_iters``
    epochs, then keeps it, as ``torch.optim.lr_scheduler.PolynomialLR``.

    Closed form: lr(epoch) = base_lr · (1 − min(epoch, total_iters) / total_iters)^power.
    Each step applies PyTorch's recursive form, the ratio of consecutive factors.
    """

    _hyperparameters = {"total_iters": _positive_integer,
                        "power": functools.partial(checks.real, low=0.0, example="power=2.0")}

    def __init__(self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1) -> None:
        self.total_iters, self.power = total_iters, power  # checked on assignment
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        epoch, total = self.last_epoch, self.total_iters
        if epoch == 0 or epoch > total or self._initial:
            return lrs
        ratio = ((1.0 - epoch / total) / (1.0 - (epoch - 1) / total)) ** self.power
        return [lr * ratio for lr in lrs]


def _cycle_position(owner: str, name: str, value: Any) -> int | float:
    """``T_cur``: epochs since the last restart, a number >= 0 (fractional after ``step(2.5)``);
    an int when whole, as PyTorch keeps it."""
    number = checks.real(owner, name, value, low=0.0)
    return int(number) if number.is_integer() else number


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing from each group's base rate to ``eta_min`` over ``T_0`` epochs, then a
    restart at the base rate, each period ``T_mult`` times longer than the last (SGDR, Loshchilov
    and Hutter), as ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``.

    Closed form: lr = eta_min + (base_lr − eta_min) · (1 + cos(π · T_cur / T_i)) / 2, where the
    current period ``T_i`` is T_0 · T_mult^n after n restarts and ``T_cur`` counts the epochs
    since the last one. ``step()`` moves one epoch; ``step(epoch)`` jumps to ``epoch``, which may
    be fractional to anneal within an epoch (``scheduler.step(epoch + i / batches)`` after batch
    i), as in PyTorch; ``last_epoch`` becomes ⌊epoch⌋ and a later ``step()`` adds one to both.
    ``last_epoch=k`` in the constructor moves to epoch k + 1 of the schedule; PyTorch's does the
    same only while k + 1 < 2·T_0 or T_mult = 1 (past that it takes T_cur = (k + 1) mod T_0 in a
    period of T_0·T_mult, wherever epoch k + 1 falls), and its ``step(epoch)`` can land one period
    short where its logarithm rounds down (T_mult = 10, epoch 111); here the restarts are counted
    exactly. ``state_dict()`` has the settings and the position ``T_i``, ``T_cur``.
    """

    _hyperparameters = {"T_0": _positive_integer, "T_mult": _positive_integer, "eta_min": _factor("eta_min=1e-5"),
                        "T_i": _positive_integer, "T_cur": _cycle_position}

    def __init__(self, optimizer: Optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        self.T_0, self.T_mult, self.eta_min = T_0, T_mult, eta_min  # checked on assignment
        last_epoch = checks.integer(type(self).__name__, "last_epoch", last_epoch, low=-1)
        # At epoch last_epoch, so that the constructor's step() moves to the next one.
        self.T_cur, self.T_i = self._position(max(last_epoch, 0))
        super().__init__(optimizer, last_epoch)

    def _position(self, epoch: float) -> tuple[int | float, int]:
        """(T_cur, T_i) at ``epoch`` (>= 0): periods T_0, T_0·T_mult, ... laid end to end."""
        period, mult = self.T_0, self.T_mult
        if epoch < period:
            return epoch, period
        if mult == 1:
            return epoch % period, period
        start = 0
        while epoch >= start + period:  # about log_T_mult(epoch / T_0) turns
            start, period = start + period, period * mult
        return epoch - start, period

    def step(self, epoch: float | None = None) -> None:
        """One epoch on (``epoch=None``), or to ``epoch`` (a number >= 0, fractional allowed).
        On an error nothing changes."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0  # the constructor's step, or a restart inside SequentialLR
        if epoch is None:
            T_cur, T_i, last_epoch = self.T_cur + 1, self.T_i, self.last_epoch + 1
            if T_cur >= T_i:  # a restart
                T_cur, T_i = T_cur % T_i, T_i * self.T_mult
        else:
            epoch = checks.real(f"{type(self).__name__}.step", "epoch", epoch, low=0.0, example="step(2.5)")
            (T_cur, T_i), last_epoch = self._position(epoch), math.floor(epoch)
        before = self.last_epoch, self.T_cur, self.T_i
        try:
            self.T_cur, self.T_i, self.last_epoch = T_cur, T_i, last_epoch - 1
            super().step()  # last_epoch + 1, then the rates
        except BaseException:
            self.last_epoch, self.T_cur, self.T_i = before
            raise

    def get_lr(self) -> list[float]:
        factor = (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
        return [self.eta_min + (base - self.eta_min) * factor for base in self.base_lrs]


class ChainedScheduler(LRScheduler):
    """Steps several schedulers together, each applying its change to the rates the one before
    it left, as ``torch.optim.lr_scheduler.ChainedScheduler`` (e.g. ``ExponentialLR`` decay
    with a ``LinearLR`` warm-up on top)::

        scheduler = ChainedScheduler([LinearLR(opt, start_factor=0.1, total_iters=5),
                                      ExponentialLR(opt, gamma=0.95)])

    The schedulers must share ``optimizer`` (by default the first one's); ``ReduceLROnPlateau``
    (which needs a metric) is refused, and so is a scheduler listed twice. Step only the
    ``ChainedScheduler``; if one of its schedulers refuses a step, the ones before it and the
    groups get their states back. ``state_dict()`` is flat: ``last_lr`` and each scheduler's
    state under ``schedulers.<k>.<key>``. A ``ChainedScheduler`` cannot go inside a
    ``SequentialLR`` (PyTorch's fails there at the first milestone after its own).
    """

    def __init__(self, schedulers: list[LRScheduler], optimizer: Optimizer | None = None) -> None:
        owner = "ChainedScheduler"
        if not isinstance(schedulers, (list, tuple)) or not schedulers:
            raise TypeError(f"{owner}: got schedulers={schedulers!r}; expected a non-empty list of schedulers "
                            f"built on one optimizer, e.g. [LinearLR(opt), ExponentialLR(opt, 0.9)]")
        for k, scheduler in enumerate(schedulers):
            kind = type(scheduler).__name__
            if isinstance(scheduler, ReduceLROnPlateau):
                raise ValueError(f"{owner}: schedulers[{k}] is a ReduceLROnPlateau, whose step needs a metric; "
                                 f"expected schedulers stepped without arguments (StepLR, LinearLR, ...)")
            if not isinstance(scheduler, LRScheduler):
                raise TypeError(f"{owner}: schedulers[{k}] is a {kind}; expected a learning-rate scheduler "
                                f"such as LinearLR(opt)")
        optimizer = _checked_optimizer(owner, schedulers[0].optimizer if optimizer is None else optimizer)
        groups = len(optimizer.param_groups)
        for k, scheduler in enumerate(schedulers):
            kind = type(scheduler).__name__
            if scheduler.optimizer is not optimizer:
                raise ValueError(f"{owner}: schedulers[{k}] ({kind}) was built on another optimizer; expected "
                                 f"every scheduler built on the same one")
            if any(scheduler is other for other in schedulers[:k]):
                raise ValueError(f"{owner}: schedulers[{k}] ({kind}) is listed twice; expected each once")
            built_for = getattr(scheduler, "base_lrs", None)  # a chain or sequence inside checked its own
            if built_for is not None and len(built_for) != groups:
                raise ValueError(f"{owner}: schedulers[{k}] ({kind}) was built for {len(built_for)} parameter "
                                 f"groups but the optimizer has {groups}; expected schedulers built after the "
                                 f"last add_param_group")
        self.optimizer = optimizer
        self._schedulers = list(schedulers)
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def step(self) -> None:
        """Step each scheduler in order. On an error nothing changes."""
        states = [(scheduler, dict(scheduler.__dict__)) for scheduler in _all_schedulers(self._schedulers)]
        groups = [dict(group) for group in self.optimizer.param_groups]
        try:
            for scheduler in self._schedulers:
                scheduler.step()
        except BaseException:
            for scheduler, state in states:
                scheduler.__dict__.clear()
                scheduler.__dict__.update(state)
            for group, values in zip(self.optimizer.param_groups, groups):
                group.update((key, value) for key, value in values.items() if key != "params")
            raise
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, numpy.ndarray]:
        """``last_lr`` (shape (groups,)) and each scheduler's ``state_dict()`` under
        ``schedulers.<k>.``, as host NumPy arrays in a flat dict."""
        return {"last_lr": numpy.array(self._last_lr, dtype=numpy.float64), **_children_state(self._schedulers)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` saved, from a ``ChainedScheduler`` over as many schedulers of
        the same classes. Everything is checked before anything changes."""
        owner = "ChainedScheduler.load_state_dict"
        own, parts = _split_state(owner, state_dict, self._schedulers, ["last_lr"])
        last_lr = self._rates(owner, "last_lr", own["last_lr"])
        _load_children(self._schedulers, parts)
        self._last_lr = last_lr


def _all_schedulers(schedulers: list[Any]) -> list[Any]:
    """``schedulers`` and, inside chains and sequences, theirs."""
    found = []
    for scheduler in schedulers:
        found += [scheduler, *_all_schedulers(getattr(scheduler, "_schedulers", []))]
    return found


class CyclicLR(_MomentumCycle, LRScheduler):
    """The cyclical learning-rate policy (Smith), as ``torch.optim.lr_scheduler.CyclicLR``: stepped
    once per batch, each group's rate climbs linearly from ``base_lr`` to ``max_lr`` over
    ``step_size_up`` steps, falls back over ``step_size_down`` (default: as many), and repeats.
    The climb is scaled by ``mode``: ``"triangular"`` keeps it, ``"triangular2"`` halves it each
    cycle, ``"exp_range"`` multiplies it by gamma^step; or by ``scale_fn(x)`` (a function to a
    factor), of the cycle number (``scale_mode="cycle"``, from 1) or of the step
    (``"iterations"``). With ``cycle_momentum`` the momentum (SGD's ``momentum``, Adam's first
    beta) moves the other way, between ``max_momentum`` and ``base_momentum``.

    Closed form, at step t with cycle c = ⌊1 + t / total_size⌋ and x = 1 + t / total_size − c:
    f = x / step_ratio while x <= step_ratio, else (x − 1) / (step_ratio − 1), and
    lr = base_lr + (max_lr − base_lr) · f · scale(c or t); momentum = max_m − (max_m − base_m) · f · scale.
    (``total_size`` = step_size_up + step_size_down, ``step_ratio`` = step_size_up / total_size.)

    ``base_lr``, ``max_lr`` and the momenta are numbers or lists of one per group; ``base_lrs``
    and ``max_lrs`` keep them. Built fresh, it sets each group's ``lr`` to ``base_lr`` (and
    ``initial_lr``, unless an earlier scheduler set it) and the momentum to ``max_momentum``; with
    ``last_epoch=k`` it leaves the groups alone, as PyTorch's does. Its first rate is taken from
    ``base_lr`` even where an earlier scheduler set ``initial_lr`` (PyTorch's takes that one
    there, and ``base_lr`` from the next step on). A misspelt ``mode`` or ``scale_mode`` is refused even beside a
    ``scale_fn`` (PyTorch ignores them then). ``state_dict()`` adds ``total_size``,
    ``step_ratio``, ``gamma``, ``max_lrs``, ``mode`` (its index in ``CyclicLR.MODES``), the flags
    ``scale_by_iterations``, ``custom_scale_fn``, ``cycle_momentum`` and the per-group
    ``max_momentums``, ``base_momentums``. A ``scale_fn`` is not saved (as with ``LambdaLR``,
    and PyTorch saves only a callable object's attributes): pass it to the constructor again
    before loading; a state saved with one loads only into a scheduler built with one.
    """

    MODES = ("triangular", "triangular2", "exp_range")
    _hyperparameters = {
        "total_size": functools.partial(checks.real, low=0.0, low_open=True),
        "step_ratio": functools.partial(checks.real, low=0.0, high=1.0, low_open=True),
        "gamma": _factor("gamma=0.99994"),
    }
    _more_keys = ("max_lrs", "mode", "scale_by_iterations", "custom_scale_fn", "cycle_momentum",
                  *_MomentumCycle._MOMENTA)

    def __init__(self, optimizer: Optimizer, base_lr: float | list[float], max_lr: float | list[float],
                 step_size_up: float = 2000, step_size_down: float | None = None, mode: str = "triangular",
                 gamma: float = 1.0, scale_fn: Callable[[float], float] | None = None, scale_mode: str = "cycle",
                 cycle_momentum: bool = True, base_momentum: float | list[float] = 0.8,
                 max_momentum: float | list[float] = 0.9, last_epoch: int = -1) -> None:
        owner = "CyclicLR"
        groups = _checked_optimizer(owner, optimizer).param_groups
        rate = functools.partial(checks.real, low=0.0)
        base_lrs = _per_group(owner, "base_lr", base_lr, len(groups), rate)
        self.max_lrs = _per_group(owner, "max_lr", max_lr, len(groups), rate)
        up = checks.real(owner, "step_size_up", step_size_up, low=0.0, low_open=True, example="step_size_up=2000")
        down = up if step_size_down is None else checks.real(owner, "step_size_down", step_size_down, low=0.0,
                                                             example="step_size_down=2000")
        self.total_size, self.step_ratio = up + down, up / (up + down)  # checked on assignment
        if mode not in self.MODES:
            raise ValueError(f"{owner}: got mode={mode!r}; expected one of {list(self.MODES)}")
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"{owner}: got scale_mode={scale_mode!r}; expected 'cycle' or 'iterations'")
        if scale_fn is not None and not callable(scale_fn):
            raise TypeError(f"{owner}: scale_fn is a {type(scale_fn).__name__}; expected None or a function "
                            f"giving a factor, e.g. lambda x: 0.5 ** x")
        self.mode, self.gamma, self._scale_fn_custom = mode, gamma, scale_fn
        # Without a scale_fn the mode decides, as in PyTorch: exp_range scales by the step.
        self.scale_mode = scale_mode if scale_fn is not None else "iterations" if mode == "exp_range" else "cycle"
        self._momentum_policy(owner, optimizer, cycle_momentum, base_momentum, max_momentum)
        self._momenta: list[Any] = []  # the groups' next momentum entries, set once the rates are
        if checks.integer(owner, "last_epoch", last_epoch, low=-1) == -1:
            for i, group in enumerate(groups):
                group["lr"] = base_lrs[i]  # initial_lr too, unless set already (LRScheduler does that)
                if self.cycle_momentum:
                    self._set_momentum(group, self.max_momentums[i])
        self._given_base_lrs = base_lrs
        super().__init__(optimizer, last_epoch)

    def _initial_step(self) -> None:
        # The cycle's bottom is base_lr from the first step on, not the groups' initial_lr, which
        # LRScheduler took as base_lrs (PyTorch's first step uses it, then replaces it).
        given = self.__dict__.pop("_given_base_lrs", None)
        if given is not None:
            self.base_lrs = given
        super()._initial_step()

    def scale_fn(self, x: float) -> float:
        """The factor on the climb: ``scale_fn(x)`` if given, else the mode's, of the cycle
        number or the step x."""
        if self._scale_fn_custom is not None:
            return checks.real(f"CyclicLR.step (epoch {self.last_epoch})", f"scale_fn({x})", self._scale_fn_custom(x))
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 2.0 ** (1 - x)  # = 1 / 2^(x − 1), exactly, without overflowing after 1024 cycles
        try:
            return self.gamma ** x
        except OverflowError:
            raise ValueError(f"CyclicLR.step (epoch {self.last_epoch}): gamma ** {x} overflows with gamma="
                             f"{self.gamma}; expected gamma <= 1 for a schedule this long") from None

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        cycle = math.floor(1 + step / self.total_size)
        x = 1.0 + step / self.total_size - cycle
        climbed = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else step)
        lrs = [base + (top - base) * climbed * scale for base, top in zip(self.base_lrs, self.max_lrs)]
        if self.cycle_momentum:
            # Checked here by the optimizer's own rule, applied by step() once the rates pass too.
            key, where = self._momentum_key, f"CyclicLR.step (epoch {step})"
            check = self.optimizer._hyperparameters[key]
            momenta = [top - (top - low) * climbed * scale for low, top in zip(self.base_momentums, self.max_momentums)]
            self._momenta = [check(where, f"param_groups[{i}][{key!r}]", self._momentum_entry(group, momentum))
                             for i, (group, momentum) in enumerate(zip(self.optimizer.param_groups, momenta))]
        return lrs

    def step(self) -> None:
        """Move one step along the cycle: the rates, and with ``cycle_momentum`` the momenta.
        On an error nothing changes."""
        super().step()
        if self.cycle_momentum:
            for group, entry in zip(self.optimizer.param_groups, self._momenta):
                group[self._momentum_key] = entry

    def state_dict(self) -> dict[str, numpy.ndarray]:
        """The base keys, ``total_size``, ``step_ratio``, ``gamma``, then the rest of the policy (see the class)."""
        saved = super().state_dict()
        saved.update(max_lrs=numpy.array(self.max_lrs, dtype=numpy.float64),
                     mode=numpy.array(self.MODES.index(self.mode), dtype=numpy.int64),
                     scale_by_iterations=numpy.array(self.scale_mode == "iterations"),
                     custom_scale_fn=numpy.array(self._scale_fn_custom is not None))
        saved.update(self._momentum_state())
        return saved

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` saved: position and policy (not a ``scale_fn``, see the class).
        Everything is checked before anything changes."""
        owner = "CyclicLR.load_state_dict"
        self._check_keys(owner, state_dict)
        custom = checks.flag(owner, "custom_scale_fn", state_dict["custom_scale_fn"])
        if custom != (self._scale_fn_custom is not None):
            raise ValueError(f"{owner}: the state was saved {'with' if custom else 'without'} a scale_fn but this "
                             f"scheduler was built {'with' if not custom else 'without'} one; expected one built "
                             f"as the saved one was (a scale_fn is not saved: pass it to the constructor again)")
        mode = self.MODES[checks.integer(owner, "mode", state_dict["mode"], high=len(self.MODES))]
        iterations = checks.flag(owner, "scale_by_iterations", state_dict["scale_by_iterations"])
        max_lrs = self._rates(owner, "max_lrs", state_dict["max_lrs"])
        momentum = self._checked_momentum_state(owner, state_dict)
        super().load_state_dict(state_dict)  # checks the rest, then loads it
        self.__dict__.update(momentum, max_lrs=max_lrs, mode=mode, scale_mode="iterations" if iterations else "cycle")
