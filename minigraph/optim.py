"""Optimizers with PyTorch's update rules: ``SGD`` (momentum, Nesterov, dampening, weight decay),
``Adam`` and ``AdamW``, with PyTorch's parameter groups.

Usage, as in PyTorch::

    opt = optim.Adam(model.parameters(), lr=1e-3)
    opt.zero_grad(); loss.backward(); opt.step()

``step`` updates each parameter's array in place on whichever device it lives
(NumPy or CuPy), reading ``.grad`` and never writing it. Parameters whose
``.grad`` is None are skipped. State (momentum buffers, Adam's moments) is
created on the parameter's device at its first update, so move a model with
``model.to(device)`` before building its optimizer (``step`` refuses, before updating
anything, a parameter moved after its first update).

Parameter groups, as in PyTorch: give a list of dicts instead of Tensors, each with its
``params`` and any hyperparameters of its own; the others are the constructor's::

    opt = optim.SGD([{"params": net.body.parameters()},
                     {"params": net.head.parameters(), "lr": 0.1}], lr=0.01, momentum=0.9)
    for group in opt.param_groups:
        group["lr"] *= 0.1

Hyperparameters (``lr``, ``momentum``, ``betas``, ...) are checked whenever they are
assigned, ``group["lr"] = x`` as in the constructor, so a bad value fails there, not
steps later. With one group, ``opt.lr`` reads and sets that group's ``lr``.
``opt.step(closure)`` calls the closure with recording on and returns its loss; ``opt.state``
maps each updated parameter to its state (``momentum_buffer``; ``step``, ``exp_avg``,
``exp_avg_sq`` and with amsgrad ``max_exp_avg_sq``), as in PyTorch, through a live, read-only
view: its arrays are the optimizer's own, and writes into the view raise. ``Adam``/``AdamW``
take ``amsgrad`` and all three ``maximize``, per group. Optimizers pickle and deep-copy; pickle
one together with its model, ``pickle.dumps((model, opt))``, so that it keeps the model's tensors.
``minigraph.optim.lr_scheduler`` holds PyTorch's learning-rate schedulers. Checkpoints,
as in PyTorch::

    nn.save(opt.state_dict(), "opt.npz")
    opt.load_state_dict(nn.load("opt.npz"))   # a run resumes exactly where it stopped
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any

import numpy

from . import backend, checks
from .checkpoint import host_copy
from .engine import Tensor, enable_grad
from .nn_utils import _clear_grads

__all__ = ["Adam", "AdamW", "Optimizer", "ParamGroup", "ParamStateView", "SGD", "StateView", "lr_scheduler"]

# The kind of a state field that only some settings keep (Adam's max_exp_avg_sq, with amsgrad).
OPTIONAL_ARRAY = "optional array"

# A group key that is no hyperparameter of the update: the rate a learning-rate scheduler
# started from. Schedulers set it, as PyTorch's do; it is checked as lr and saved with the group.
INITIAL_LR = "initial_lr"


class ParamGroup(MutableMapping):
    """One parameter group: a dict of ``params`` (the list of its Tensors) and its hyperparameters.

    It reads and writes like a ``torch.optim`` group dict (``group["lr"] *= 0.1``,
    ``group["lr"] = schedule[epoch]``), and every assignment passes the optimizer's check of
    that hyperparameter, so ``group["lr"] = -1`` fails where it is written, naming the optimizer
    and the group. Unlike PyTorch's plain dict it refuses keys the optimizer does not know
    (a misspelt ``"learnig_rate"`` would otherwise be ignored silently) and the replacement of
    ``params``: add parameters with ``opt.add_param_group``.
    """

    __slots__ = ("_values", "_owner", "_index", "_checks")

    def __init__(self, owner: str, index: int, checks_by_name: Mapping[str, Callable[[str, str, Any], Any]],
                 params: list[Tensor], values: Mapping[str, Any]) -> None:
        self._owner, self._index, self._checks = owner, index, checks_by_name
        self._values: dict[str, Any] = {"params": params, **values}  # values: checked by the caller

    def _set(self, key: str, value: Any, owner: str, name: str) -> None:
        """Keep ``value`` under ``key`` once it passes ``key``'s check; errors name ``owner`` and ``name``."""
        check = self._checks.get("lr" if key == INITIAL_LR else key)
        if check is None or key == "params":
            raise self._refusal(key)
        self._values[key] = check(owner, name, value)

    def _refusal(self, key: Any) -> Exception:
        where = f"{self._owner}: param_groups[{self._index}]"
        if key == "params":
            return ValueError(f"{where}['params'] cannot be replaced (the optimizer keeps state per "
                              f"parameter); add parameters with opt.add_param_group({{'params': ...}})")
        return ValueError(f"{where} has no key {key!r}; expected 'params', {INITIAL_LR!r} or one of "
                          f"{self._owner}'s hyperparameters {list(self._checks)}")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._set(key, value, self._owner, f"param_groups[{self._index}][{key!r}]")

    def __delitem__(self, key: str) -> None:
        if key != INITIAL_LR:  # every other key is needed by step()
            raise self._refusal(key) if key not in self._values else \
                ValueError(f"{self._owner}: param_groups[{self._index}][{key!r}] cannot be deleted; "
                           f"step() needs it. Assign a new value instead")
        del self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        shown = ", ".join(f"{key!r}: " + (f"[{len(value)} Tensors]" if key == "params" else repr(value))
                          for key, value in self._values.items())
        return f"ParamGroup({{{shown}}})"


# How to change what StateView refuses to change.
_STATE_REPLACEMENT = ("expected its arrays edited in place (opt.state[p]['exp_avg'][...] = 0) or all state "
                      "replaced with opt.load_state_dict(saved); to clear it, load opt.state_dict() "
                      "without its 'state.' keys")


class _ReadOnlyView(Mapping):
    """A Mapping whose dict-style writes raise, naming what to do instead."""

    __slots__ = ()
    _optimizer: Optimizer
    _shown_as = "state"  # how the error names the view

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"{type(self._optimizer).__name__}.{self._shown_as} is a read-only view; "
                        f"{_STATE_REPLACEMENT}")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse


class StateView(_ReadOnlyView):
    """``opt.state``: each updated parameter -> its state fields, read live from the optimizer.

    Iteration, ``len`` and ``in`` see the parameters updated so far (in the order of their first
    update), as PyTorch's ``opt.state`` does. ``view[p]`` is a ``ParamStateView`` of ``p``'s
    fields, empty while ``p`` has no state (PyTorch's defaultdict gives ``{}``) and filled once
    it has; ``view.get(p)`` gives None for such a ``p``, as the defaultdict's ``get`` does.
    Both views read through to the optimizer on each access, so they stay current across
    ``step`` and ``load_state_dict``. Assignments and deletions raise a TypeError naming the
    supported ways (editing arrays in place, ``load_state_dict``): a copy that accepted them
    would change nothing, silently.
    """

    __slots__ = ("_optimizer",)

    def __init__(self, optimizer: Optimizer) -> None:
        self._optimizer = optimizer

    def __getitem__(self, param: Tensor) -> ParamStateView:
        if not isinstance(param, Tensor):
            raise KeyError(f"{type(self._optimizer).__name__}.state: got the key {param!r}; expected a "
                           f"parameter Tensor (state_dict() numbers the parameters instead: 'state.0.<field>')")
        return ParamStateView(self._optimizer, param)

    def __contains__(self, param: object) -> bool:
        return param in self._optimizer._state

    def get(self, param: Tensor, default: Any = None) -> Any:
        return self[param] if param in self else default

    def __iter__(self) -> Iterator[Tensor]:
        return iter(list(self._optimizer._state))  # a snapshot: a step during iteration may add entries

    def __len__(self) -> int:
        return len(self._optimizer._state)

    def __repr__(self) -> str:
        return f"{type(self._optimizer).__name__}.state({{{', '.join(f'{p!r}: {self[p]!r}' for p in self)}}})"


class ParamStateView(_ReadOnlyView):
    """``opt.state[p]``: field -> value of one parameter's state, read live (see ``StateView``)."""

    __slots__ = ("_optimizer", "_param")
    _shown_as = "state[p]"

    def __init__(self, optimizer: Optimizer, param: Tensor) -> None:
        self._optimizer, self._param = optimizer, param

    def _fields(self) -> dict[str, Any]:
        state = self._optimizer._state.get(self._param)
        return {} if state is None else self._optimizer._fields_of(state)

    def __getitem__(self, field: str) -> Any:
        return self._fields()[field]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields())

    def __len__(self) -> int:
        return len(self._fields())

    def __repr__(self) -> str:
        return repr(self._fields())



class Optimizer:
    """Base class: holds the parameter groups; subclasses implement ``step``.

    ``params``: an iterable of leaf Tensors, e.g. ``model.parameters()`` (one group), or of
    dicts ``{"params": iterable of Tensors, "lr": ..., ...}``, one per group, whose omitted
    hyperparameters take the constructor's values (``opt.defaults``), as in PyTorch. A
    generator is read once, here. Frozen parameters (``requires_grad=False``) are accepted and,
    having no ``.grad``, left alone by ``step``, as in PyTorch. A parameter may be in one group
    only.

    A subclass lists its hyperparameters in ``_hyperparameters`` (name -> check(owner, name,
    value), which returns the value to keep or raises naming ``owner`` and ``name``) and the
    fields of one parameter's state in ``_state_fields`` (name -> "array", shaped like the
    parameter, "optional array", one that only some settings keep, or "count", an integer
    >= 1); it implements ``_fields_of``, ``_state_from`` and
    ``_state_array``, and may check a whole group in ``_check_group``. The constructor, ``add_param_group``,
    assignment and ``load_state_dict`` all validate through those checks; ``step`` reads each
    group's checked values once, into locals.
    """

    _hyperparameters: dict[str, Callable[[str, str, Any], Any]] = {}
    _state_fields: dict[str, str] = {}
    # Hyperparameters that checkpoints written before they existed lack, with the value those
    # checkpoints had in effect: load_state_dict fills them in.
    _added_later: dict[str, Any] = {"maximize": False}

    def __init__(self, params: Iterable[Tensor] | Iterable[Mapping[str, Any]],
                 defaults: Mapping[str, Any]) -> None:
        owner = type(self).__name__
        # Checked once here: the values of every group that omits them.
        self.defaults: dict[str, Any] = {name: self._hyperparameters[name](owner, name, value)
                                         for name, value in defaults.items()}
        self.param_groups: list[ParamGroup] = []
        self._state: dict[Tensor, Any] = {}  # per parameter, from its first update on
        groups, plain = _given_groups(owner, params)
        for group in groups:
            self._add_group(owner, group, plain)

    # --- groups and hyperparameters -------------------------------------------
    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a group of parameters, as ``torch.optim.Optimizer.add_param_group``.

        ``param_group``: ``{"params": Tensors, <hyperparameter>: value, ...}``; omitted
        hyperparameters take the constructor's values. Its parameters must be in no group yet.
        Everything is checked before the group is added.
        """
        owner = f"{type(self).__name__}.add_param_group"
        if not isinstance(param_group, Mapping):
            raise TypeError(f"{owner}: got a {type(param_group).__name__}; expected a dict such as "
                            f"{{'params': layer.parameters(), 'lr': 0.01}}")
        self._add_group(owner, param_group, plain=False)

    def _add_group(self, owner: str, given: Mapping[str, Any], plain: bool) -> None:
        index = len(self.param_groups)
        if "params" not in given:
            raise ValueError(f"{owner}: param_groups[{index}] has no 'params'; expected a dict such as "
                             f"{{'params': layer.parameters(), 'lr': 0.01}}")
        unknown = [key for key in given if key not in ("params", INITIAL_LR, *self._hyperparameters)]
        if unknown:
            raise ValueError(f"{owner}: param_groups[{index}] has keys {unknown}; expected 'params' and "
                             f"any of {list(self._hyperparameters)}")
        params = given["params"] if plain else _group_params(owner, index, given["params"])
        _check_parameters(owner, params, index, self.param_groups, plain)
        values = {}
        for name, check in self._hyperparameters.items():
            if name in given:
                values[name] = check(owner, f"param_groups[{index}][{name!r}]", given[name])
            elif name in self.defaults:  # checked again: opt.defaults is a plain dict, open to edits
                values[name] = check(owner, name, self.defaults[name])
            elif plain:
                raise TypeError(f"{owner}: got no {name}; expected one, e.g. {owner}(model.parameters(), "
                                f"{name}=0.01), or parameter groups that each give their own")
            else:
                raise TypeError(f"{owner}: param_groups[{index}] has no {name!r} and the optimizer was "
                                f"given no {name}; expected one or the other (PyTorch: parameter group "
                                f"didn't specify a value of required optimization parameter {name})")
        if INITIAL_LR in given:
            values[INITIAL_LR] = self._hyperparameters["lr"](owner, f"param_groups[{index}][{INITIAL_LR!r}]",
                                                             given[INITIAL_LR])
        self._check_group(owner, values, "" if plain else f" in param_groups[{index}]")
        self.param_groups.append(ParamGroup(type(self).__name__, index, self._hyperparameters, params,
                                            values))

    def _check_group(self, owner: str, values: Mapping[str, Any], where: str) -> None:
        """Raise if the group's hyperparameters (each valid alone) do not go together."""

    @property
    def params(self) -> list[Tensor]:
        """All parameters, group after group (a new list): the order of the state dict's indices."""
        return [param for group in self.param_groups for param in group["params"]]

    def _only_group(self, name: str) -> ParamGroup:
        groups = self.__dict__.get("param_groups", [])
        if len(groups) != 1:
            raise AttributeError(f"{type(self).__name__}: opt.{name} is the {name} of the only parameter "
                                 f"group, but this optimizer has {len(groups)} groups, each with its own; "
                                 f"use opt.param_groups[i][{name!r}] (for g in opt.param_groups: "
                                 f"g[{name!r}] = ...)")
        return groups[0]

    def __getattr__(self, name: str) -> Any:
        # Reached only for names found nowhere else: opt.lr reads the one group's lr.
        if name in type(self)._hyperparameters:
            return self._only_group(name)[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._hyperparameters:  # opt.lr = x sets the one group's lr, checked
            self._only_group(name)._set(name, value, type(self).__name__, name)
        else:
            object.__setattr__(self, name, value)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's gradient, so the next backward starts afresh.

        ``set_to_none=True`` (PyTorch's default) sets ``.grad`` to None; ``False`` fills each
        existing ``.grad`` array with zeros in place (None stays None), as ``torch``'s.
        """
        _clear_grads(self.params, checks.flag(f"{type(self).__name__}.zero_grad", "set_to_none", set_to_none))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient, in place; returns ``closure()``'s loss, if given.

        The closure runs first, then the check that no parameter moved, then ``_update_group``
        for each group (a subclass implements that, or overrides ``step`` whole).
        """
        loss = self._evaluate(closure)
        self._refuse_moved_parameters()
        for group in self.param_groups:
            self._update_group(group)
        return loss

    def _update_group(self, group: ParamGroup) -> None:
        """Update ``group``'s parameters with its hyperparameters, in place."""
        raise NotImplementedError(f"{type(self).__name__} has no step(); define step() or "
                                  f"_update_group(group) in the subclass")

    @staticmethod
    def _gradients(group: ParamGroup) -> Iterator[tuple[Tensor, Any]]:
        """Each parameter of ``group`` that has a gradient, with that gradient: negated with
        ``maximize`` (a fresh array then), else the caller's ``.grad``, read and never written."""
        maximize = group["maximize"]
        for param in group["params"]:
            grad = param.grad
            if grad is not None:
                yield param, (-grad if maximize else grad)

    def _evaluate(self, closure: Callable[[], Any] | None) -> Any:
        """``closure()`` with gradients recorded (even under ``no_grad``), or None without one.

        As in PyTorch, ``step(closure)`` calls it before the update and returns its result: the
        closure clears the gradients, computes the loss, calls ``backward`` and returns the loss.
        """
        if closure is None:
            return None
        if not callable(closure):
            raise TypeError(f"{type(self).__name__}.step: got closure={closure!r}; expected a function "
                            f"of no arguments that recomputes the loss, calls backward and returns it, "
                            f"or None")
        with enable_grad():
            return closure()

    @property
    def state(self) -> StateView:
        """Each parameter's state, as ``torch.optim.Optimizer.state``: parameter -> {field: value}.

        SGD with momentum: ``momentum_buffer``; Adam and AdamW: ``step`` (an int, the
        parameter's update count), ``exp_avg``, ``exp_avg_sq`` and, with amsgrad,
        ``max_exp_avg_sq``. A live, read-only view (see ``StateView``): the arrays are the
        optimizer's own, so editing one in place (``opt.state[p]["exp_avg"][...] = 0``) changes
        the next step, and assignments into the view raise instead of changing nothing.
        Only updated parameters are listed; ``opt.state[p]`` of one not updated yet is empty,
        as PyTorch's defaultdict gives ``{}``.
        """
        return StateView(self)

    @state.setter
    def state(self, value: Any) -> None:
        # PyTorch code resets the state with opt.state = defaultdict(dict); here that would
        # otherwise fail as "property has no setter", without saying what to do instead.
        raise AttributeError(f"{type(self).__name__}.state cannot be assigned; {_STATE_REPLACEMENT}")

    def _refuse_moved_parameters(self) -> None:
        """Raise, before ``step`` updates anything, if a parameter about to be updated no longer
        matches its state: its array was replaced by one on another device (``model.to`` after
        the optimizer's first step) or of another shape. The update would otherwise fail deep
        inside NumPy or CuPy, halfway through the step."""
        states = self._state
        if not states:
            return
        for group in self.param_groups:
            for param in group._values["params"]:
                state = states.get(param)
                if state is None or param.grad is None:
                    continue
                # A parameter's state arrays are made together, on its device in its shape:
                # one of them tells for all.
                array, weights = self._state_array(state), param.data
                if type(array) is not type(weights) or array.shape != weights.shape:
                    owner = type(self).__name__
                    raise RuntimeError(
                        f"{owner}.step: parameter {self.params.index(param)} is now {weights.shape} "
                        f"on {backend.device_of(weights)!r}, but its state was made for {array.shape} "
                        f"on {backend.device_of(array)!r}; expected the parameter where it was at its "
                        f"first update. Move the model with model.to(device) before building the "
                        f"optimizer, or carry the state over: new = {owner}(model.parameters(), ...); "
                        f"new.load_state_dict(opt.state_dict()), which copies it onto each "
                        f"parameter's device")

    @staticmethod
    def _state_array(state: Any) -> Any:
        """One array of a parameter's live state (shaped like it, on its device)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        groups = [", ".join(f"{name}={group[name]}" for name in self._hyperparameters)
                  for group in self.param_groups]
        if len(groups) == 1:
            return f"{type(self).__name__}({groups[0]})"
        listed = ", ".join(f"param_groups[{i}]: ({g})" for i, g in enumerate(groups))
        return f"{type(self).__name__}({listed})"

    # --- state ----------------------------------------------------------
    def _fields_of(self, state: Any) -> dict[str, Any]:
        """One parameter's live state as field -> value."""
        raise NotImplementedError

    def _state_from(self, fields: dict[str, Any]) -> Any:
        """One parameter's state made from checked fields (already on its device, ours to keep)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, numpy.ndarray]:
        """The groups' hyperparameters and every parameter's state, as host NumPy copies in a flat dict.

        Keys, for group g and the i-th parameter of all groups in order:
        ``param_groups.<g>.params`` (an int64 array of its parameters' indices i, as
        PyTorch's state dict lists them), ``param_groups.<g>.<hyperparameter>`` (``betas``
        as an array of shape (2,); ``initial_lr`` too once a scheduler set it), then
        ``state.<i>.<field>``; a parameter never updated yet has no state keys. Like
        ``Module.state_dict``, the arrays are copies on the host that share no memory with
        the optimizer, so later steps do not change them. Write it to disk with ``nn.save``.
        """
        saved: dict[str, numpy.ndarray] = {}
        start = 0
        for g, group in enumerate(self.param_groups):
            size = len(group["params"])
            saved[f"param_groups.{g}.params"] = numpy.arange(start, start + size, dtype=numpy.int64)
            start += size
            for name in (*self._hyperparameters, INITIAL_LR):
                if name in group:
                    value = group[name]
                    saved[f"param_groups.{g}.{name}"] = numpy.array(
                        value, dtype=bool if isinstance(value, bool) else numpy.float64)
        for index, param in enumerate(self.params):
            state = self._state.get(param)
            for field, value in ({} if state is None else self._fields_of(state)).items():
                saved[f"state.{index}.{field}"] = (numpy.asarray(value, dtype=numpy.int64)
                                                   if self._state_fields[field] == "count"
                                                   else host_copy(value))
        return saved

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the groups' hyperparameters and the per-parameter state saved by ``state_dict``.

        ``state_dict``: what ``state_dict()`` or ``nn.load`` gives, from an optimizer of the
        same class with as many groups, of the same sizes, over parameters of the same
        shapes, in the same order. Arrays (NumPy, CuPy or Tensors) are copied onto each
        parameter's device and dtype, so later steps never write into the dict. Everything is
        checked before anything changes: a bad dict raises and leaves the optimizer as it was.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{owner}: got a {type(state_dict).__name__}; expected a mapping of "
                            f"names to arrays, e.g. nn.load('opt.npz') or opt.state_dict()")
        self._refuse_another_kind(owner, state_dict)
        group_keys = ("params", INITIAL_LR, *self._hyperparameters)
        saved_groups: dict[int, dict[str, Any]] = {}
        fields: dict[int, dict[str, Any]] = {}
        unknown = []
        for key, value in state_dict.items():
            parts = key.split(".") if isinstance(key, str) else []
            if len(parts) == 3 and parts[1].isdigit() and parts[1] == str(int(parts[1])):
                if parts[0] == "state" and parts[2] in self._state_fields:
                    fields.setdefault(int(parts[1]), {})[parts[2]] = value
                    continue
                if parts[0] == "param_groups" and parts[2] in group_keys:
                    saved_groups.setdefault(int(parts[1]), {})[parts[2]] = value
                    continue
            unknown.append(key)
        count, saved_count = len(self.param_groups), max(saved_groups, default=-1) + 1
        if not unknown and saved_count != count:
            raise ValueError(f"{owner}: the state dict has {saved_count} parameter groups but this optimizer "
                             f"has {count} (loaded state dict has a different number of parameter groups); "
                             f"expected the state of an optimizer built with the same groups")
        for g in range(count):  # checkpoints written before these flags existed had them off
            for name, value in self._added_later.items():
                saved_groups.get(g, {}).setdefault(name, value)
        missing = [f"param_groups.{g}.{name}" for g in range(count)
                   for name in ("params", *self._hyperparameters) if name not in saved_groups.get(g, {})]
        if unknown or missing:
            raise ValueError(f"{owner}: missing keys {missing}, unexpected keys {unknown}; expected "
                             f"{self._expected_keys()}, as {type(self).__name__}.state_dict() gives")
        start = 0
        for g, group in enumerate(self.param_groups):
            key, size = f"param_groups.{g}.params", len(group["params"])
            indices = _saved_indices(owner, key, saved_groups[g]["params"])
            if len(indices) != size:
                raise ValueError(f"{owner}: loaded state dict contains a parameter group that doesn't match "
                                 f"the size of optimizer's group: {key} lists {len(indices)} parameters but "
                                 f"param_groups[{g}] has {size}; expected the same parameters in the same "
                                 f"groups")
            if indices != list(range(start, start + size)):
                raise ValueError(f"{owner}: {key} is {indices}; expected {list(range(start, start + size))}, "
                                 f"the group's places among all groups' parameters, as state_dict() gives")
            start += size
        params = self.params
        beyond = sorted(index for index in fields if index >= len(params))
        if beyond:
            raise ValueError(f"{owner}: the state dict has state for parameter {beyond[0]} but this "
                             f"optimizer has {len(params)} parameters (0 to {len(params) - 1}); "
                             f"expected an optimizer built over the same parameters, in the same order")
        check_lr = self._hyperparameters["lr"]
        hyperparameters = [{name: (check_lr if name == INITIAL_LR else self._hyperparameters[name])(
                                owner, f"param_groups.{g}.{name}", value)
                            for name, value in saved_groups[g].items() if name != "params"}
                           for g in range(count)]
        states: dict[Tensor, Any] = {}
        for index, given in sorted(fields.items()):
            absent = [field for field, kind in self._state_fields.items()
                      if field not in given and kind != OPTIONAL_ARRAY]
            if absent:
                raise ValueError(f"{owner}: parameter {index}'s state has {sorted(given)} but lacks "
                                 f"{absent}; expected all of {list(self._state_fields)}")
            states[params[index]] = {field: _state_value(owner, f"state.{index}.{field}", kind, given[field],
                                                         params[index])
                                     for field, kind in self._state_fields.items() if field in given}
        # Every check passed: only now does anything change. The groups' keys become the saved
        # ones, initial_lr included or dropped, as PyTorch replaces each group's dict.
        for group, values in zip(self.param_groups, hyperparameters):
            group._values.pop(INITIAL_LR, None)
            group._values.update(values)
        self._state = {param: self._state_from(given) for param, given in states.items()}

    def _expected_keys(self) -> str:
        names = "/".join(("params", *self._hyperparameters))
        return (f"param_groups.<g>.{{{names}}} for each of its {len(self.param_groups)} groups (and "
                f"param_groups.<g>.{INITIAL_LR} once a scheduler set it) and "
                f"state.<i>.{{{'/'.join(self._state_fields)}}} for updated parameters")

    def _refuse_another_kind(self, owner: str, state_dict: Mapping[str, Any]) -> None:
        """A clear error for a state dict of another optimizer class (say SGD's loaded into Adam)."""
        keys = [key.split(".") for key in state_dict if isinstance(key, str)]
        names = {parts[2] for parts in keys if len(parts) == 3 and parts[0] == "param_groups"} \
            - {"params", INITIAL_LR}
        fields = {parts[-1] for parts in keys if parts[0] == "state"}
        mine = type(self)
        for kind in _OPTIMIZER_CLASSES:
            if set(kind._hyperparameters) == set(mine._hyperparameters):
                continue  # the same keys (mine, or a subclass of it): nothing tells them apart
            if (names and names == set(kind._hyperparameters)) or \
                    (fields and fields <= set(kind._state_fields) and not fields & set(mine._state_fields)):
                state_keys = f", state.<i>.{{{'/'.join(sorted(fields))}}}" if fields else ""
                raise ValueError(f"{owner}: got a state dict of {kind.__name__} (hyperparameters "
                                 f"{sorted(names)}{state_keys}); expected {mine.__name__}'s: "
                                 f"{self._expected_keys()}. An optimizer's state loads only into the "
                                 f"same kind of optimizer")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _OPTIMIZER_CLASSES.append(cls)


_OPTIMIZER_CLASSES: list[type[Optimizer]] = []  # every subclass, to name the source of a foreign state dict


def _saved_indices(owner: str, key: str, value: Any) -> list[int]:
    """A saved group's parameter indices (a 1-D integer array) as a list of ints, or a clear error."""
    array = value.data if isinstance(value, Tensor) else value
    if not (isinstance(array, numpy.ndarray) or backend.is_gpu_array(array)) or array.ndim != 1 \
            or array.dtype.kind not in "iu":
        shown = f"an array of dtype {array.dtype} and shape {array.shape}" if hasattr(array, "dtype") \
            else f"a {type(value).__name__}"
        raise TypeError(f"{owner}: {key!r} is {shown}; expected a 1-D integer array of parameter "
                        f"indices, as state_dict() gives")
    return [int(index) for index in array.tolist()]


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


def _nonnegative(example: str) -> Callable[[str, str, Any], float]:
    """The check of a hyperparameter that is a finite number >= 0, such as ``lr``.

    A partial of a module-level function, not a lambda: the checks live in every group, and
    a lambda would stop ``pickle.dumps(opt)``."""
    return functools.partial(checks.real, low=0.0, example=example)


def _betas(owner: str, name: str, value: Any) -> tuple[float, float]:
    """Adam's ``betas``: a pair (or an array of shape (2,), as ``nn.load`` gives) in [0, 1)."""
    # An array's elements as Python numbers (one sync on a GPU, at assignment), to check and to name.
    pair = value.tolist() if getattr(value, "shape", None) == (2,) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{owner}: got {name}={value!r}; expected a pair such as (0.9, 0.999)")
    return tuple(checks.real(owner, f"{name}[{i}]", beta, low=0.0, high=1.0, high_open=True,
                             example="betas=(0.9, 0.999)") for i, beta in enumerate(pair))


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (plain or Nesterov's), dampening and
    L2 weight decay.

    Per parameter p with gradient g, exactly as ``torch.optim.SGD``, with its group's values:

        d = g + weight_decay · p
        buf = d                                        on p's first update (momentum > 0)
        buf = momentum · buf + (1 − dampening) · d     afterwards
        p  -= lr · buf                 (p -= lr · d without momentum)
        p  -= lr · (d + momentum · buf)                instead, with nesterov=True

    With ``maximize=True`` g is replaced by −g first, so the steps climb the objective.
    ``lr`` defaults to 1e-3, as in PyTorch 2. Nesterov's momentum needs
    momentum > 0 and dampening = 0 in each group that asks for it, as in PyTorch.
    """

    _hyperparameters = {"lr": _nonnegative("lr=0.01"),
                        "momentum": _nonnegative("momentum=0.9"),
                        "dampening": functools.partial(checks.real, low=0.0, high=1.0,
                                                       example="dampening=0.1"),
                        "weight_decay": _nonnegative("weight_decay=1e-4"),
                        "nesterov": checks.flag, "maximize": checks.flag}
    _state_fields = {"momentum_buffer": "array"}

    def __init__(self, params: Iterable[Tensor] | Iterable[Mapping[str, Any]], lr: float = 1e-3,
                 momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def _check_group(self, owner: str, values: Mapping[str, Any], where: str) -> None:
        if values["nesterov"] and (values["momentum"] == 0 or values["dampening"] != 0):
            raise ValueError(f"{owner}: got nesterov=True with momentum={values['momentum']} and "
                             f"dampening={values['dampening']}{where}; Nesterov's momentum needs "
                             f"momentum > 0 and dampening=0, e.g. SGD(params, lr, momentum=0.9, "
                             f"nesterov=True)")

    def _fields_of(self, state: Any) -> dict[str, Any]:
        return {"momentum_buffer": state}

    def _state_from(self, fields: dict[str, Any]) -> Any:
        return fields["momentum_buffer"]

    @staticmethod
    def _state_array(state: Any) -> Any:
        return state

    def _update_group(self, group: ParamGroup) -> None:
        buffers = self._state
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        dampening, nesterov = group["dampening"], group["nesterov"]
        for param, grad in self._gradients(group):
            weights = param.data
            if weight_decay:
                direction = weights * weight_decay  # a fresh array, ours to overwrite
                direction += grad
            else:
                direction = grad  # possibly the caller's .grad: read, never written
            if momentum:
                buf = buffers.get(param)
                if buf is None:
                    buf = direction.copy() if direction is grad else direction
                    buffers[param] = buf
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


class _AdamState:
    """One parameter's Adam state: its update count, the two moments, with amsgrad the running
    maximum of the second (None until amsgrad first needs it), and a scratch array."""

    __slots__ = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "scratch")

    def __init__(self, like: Any, step: int = 0, exp_avg: Any = None, exp_avg_sq: Any = None,
                 max_exp_avg_sq: Any = None) -> None:
        xp = backend.get_array_module(like)
        self.step = step
        self.exp_avg = xp.zeros_like(like) if exp_avg is None else exp_avg
        self.exp_avg_sq = xp.zeros_like(like) if exp_avg_sq is None else exp_avg_sq
        self.max_exp_avg_sq = max_exp_avg_sq
        # Reused every step for the intermediate terms, so a step allocates nothing
        # (bar the weight-decayed gradient). Not state: never saved, nor pickled.
        self.scratch = xp.empty_like(like)

    def __getstate__(self) -> tuple:
        return None, {name: getattr(self, name) for name in self.__slots__ if name != "scratch"}

    def __setstate__(self, state: tuple) -> None:
        for name, value in state[1].items():
            setattr(self, name, value)
        self.scratch = backend.get_array_module(self.exp_avg).empty_like(self.exp_avg)


class Adam(Optimizer):
    """Adam with bias correction and L2 weight decay, exactly as ``torch.optim.Adam``.

    Per parameter p with gradient g, at its t-th update (t counts that
    parameter's own updates, so one that had no gradient for a while is not
    penalised), with its group's values:

        g  = g + weight_decay · p
        m  = β1·m + (1 − β1)·g
        v  = β2·v + (1 − β2)·g²
        p -= lr / (1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)

    ``amsgrad=True`` (Reddi et al.) divides by the running maximum of v instead,
    v̂ = max(v̂, v), kept in the state as ``max_exp_avg_sq``. ``maximize=True`` replaces g by
    −g first, so the steps climb the objective.

    ``load_state_dict`` replaces each group's hyperparameters by the saved ones, ``amsgrad``
    included, as PyTorch does: a dict saved with amsgrad off turns it off (and one saved
    before the flag existed loads with it off). Turned on by hand for a parameter that already
    has state (``group["amsgrad"] = True``), the maximum starts at that step from the current
    v, as a v̂ created then from zeros would (v >= 0); PyTorch raises a KeyError there instead.
    """

    _hyperparameters = {"lr": _nonnegative("lr=1e-3"), "betas": _betas,
                        "eps": _nonnegative("eps=1e-8"),
                        "weight_decay": _nonnegative("weight_decay=1e-4"),
                        "amsgrad": checks.flag, "maximize": checks.flag}
    _added_later = {"amsgrad": False, "maximize": False}
    # step: this parameter's update count t, which sets the bias correction
    _state_fields = {"step": "count", "exp_avg": "array", "exp_avg_sq": "array",
                     "max_exp_avg_sq": OPTIONAL_ARRAY}
    decoupled_weight_decay = False  # True in AdamW

    def __init__(self, params: Iterable[Tensor] | Iterable[Mapping[str, Any]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize))

    def _fields_of(self, state: Any) -> dict[str, Any]:
        fields = {"step": state.step, "exp_avg": state.exp_avg, "exp_avg_sq": state.exp_avg_sq}
        if state.max_exp_avg_sq is not None:
            fields["max_exp_avg_sq"] = state.max_exp_avg_sq
        return fields

    def _state_from(self, fields: dict[str, Any]) -> Any:
        return _AdamState(fields["exp_avg"], **fields)

    @staticmethod
    def _state_array(state: Any) -> Any:
        return state.exp_avg

    def _update_group(self, group: ParamGroup) -> None:
        states = self._state
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        amsgrad = group["amsgrad"]
        for param, grad in self._gradients(group):
            weights = param.data
            state = states.get(param)
            if state is None:
                state = states[param] = _AdamState(weights)
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
            if amsgrad:
                # Turned on after some steps (a loaded state of amsgrad=False, or a group
                # changed by hand), the maximum starts from the current v.
                if state.max_exp_avg_sq is None:
                    state.max_exp_avg_sq = v.copy()
                else:
                    xp.maximum(state.max_exp_avg_sq, v, out=state.max_exp_avg_sq)
                xp.sqrt(state.max_exp_avg_sq, out=scratch)
            else:
                xp.sqrt(v, out=scratch)
            scratch *= 1.0 / math.sqrt(bias2)
            scratch += eps
            xp.divide(m, scratch, out=scratch)
            scratch *= lr / bias1
            weights -= scratch
            param._version[0] += 1  # graphs built before this step can no longer backward


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

    def __init__(self, params: Iterable[Tensor] | Iterable[Mapping[str, Any]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)


def _ordered(owner: str, what: str, value: Any) -> list[Any]:
    """``value`` (an iterable, read once) as a list, refusing sets: their order, and with it the
    state dict's parameter indices, changes between runs (PyTorch refuses them too)."""
    if isinstance(value, (set, frozenset)):
        raise TypeError(f"{owner}: {what} is a set, whose order changes from run to run (and with it "
                        f"the state dict's parameter indices); expected an ordered collection such "
                        f"as a list or model.parameters()")
    try:
        return list(value)
    except TypeError:
        raise TypeError(f"{owner}: {what} is a {type(value).__name__}; expected an iterable of "
                        f"Tensors such as model.parameters()") from None


def _given_groups(owner: str, params: Any) -> tuple[list[Mapping[str, Any]], bool]:
    """The constructor's ``params`` as group dicts, and whether it was plain Tensors (one group)."""
    if isinstance(params, Tensor):
        raise TypeError(f"{owner}: params is a single Tensor; expected an iterable of Tensors, "
                        f"e.g. {owner}([w], ...) or {owner}(model.parameters(), ...)")
    if isinstance(params, Mapping):  # read as an iterable, it would give its keys: "params", "lr", ...
        raise TypeError(f"{owner}: params is a single dict; expected an iterable of Tensors or a list "
                        f"of parameter groups, e.g. {owner}([{{'params': model.parameters(), 'lr': 0.01}}])")
    entries = _ordered(owner, "params", params)
    if not entries:
        raise ValueError(f"{owner}: got an empty parameter list; expected at least one Tensor "
                         f"(a generator such as model.parameters() can be "
                         f"read only once: was it used already?)")
    if not isinstance(entries[0], Mapping):
        return [{"params": entries}], True
    for index, group in enumerate(entries):
        if not isinstance(group, Mapping):
            raise TypeError(f"{owner}: param_groups[{index}] is a {type(group).__name__} but "
                            f"param_groups[0] is a dict; expected either all groups as dicts "
                            f"{{'params': ..., 'lr': ...}} or all parameters as Tensors")
    return entries, False


def _group_params(owner: str, index: int, params: Any) -> list[Tensor]:
    """A group's ``params``: one Tensor or an ordered iterable of them, as a list (may be empty, as in PyTorch)."""
    if isinstance(params, Tensor):
        return [params]
    return _ordered(owner, f"param_groups[{index}]['params']", params)


def _check_parameters(owner: str, params: list[Any], group: int, groups: list[ParamGroup],
                      plain: bool) -> None:
    """Raise unless ``params`` (the new group ``group``) are distinct writable leaf Tensors that are
    in no other group and share no array with any parameter there."""
    def name(g: int, k: int) -> str:
        return f"parameter {k}" if plain else f"parameter {k} of param_groups[{g}]"

    # Where each parameter, and each parameter's array, already is: (group, position).
    seen: dict[Tensor, tuple[int, int]] = {}
    # Tensor(array) shares the array (torch.from_numpy's rule), so two parameters made from one
    # zeros array are one array: each step would apply both updates to it, silently.
    arrays: dict[int, tuple[int, int]] = {}
    for g, existing in enumerate(groups):
        for k, param in enumerate(existing["params"]):
            seen[param] = arrays[id(param.data)] = (g, k)
    for k, param in enumerate(params):
        if not isinstance(param, Tensor):
            hint = " (pass model.parameters(), not named_parameters())" if isinstance(param, tuple) else \
                " (parameter groups: give every entry as a dict)" if isinstance(param, Mapping) else ""
            raise TypeError(f"{owner}: {name(group, k)} is a {type(param).__name__}; expected a "
                            f"Tensor with requires_grad=True{hint}")
        if not param.is_leaf:
            raise ValueError(f"{owner}: {name(group, k)} (shape {param.shape}) was computed by "
                             f"{param.grad_fn.name}; expected a leaf Tensor, the only kind whose "
                             f".grad backward fills")
        if not backend.can_update_in_place(param.data):
            raise ValueError(f"{owner}: {name(group, k)} (shape {param.shape}) has a read-only "
                             f"array (a broadcast view?), which step() cannot update in place; "
                             f"expected a writable array, e.g. Tensor(array.copy(), requires_grad=True)")
        if param in seen:
            g, j = seen[param]
            if g == group:
                raise ValueError(f"{owner}: {name(group, k)} (shape {param.shape}) appears more than "
                                 f"once; expected each parameter once")
            raise ValueError(f"{owner}: {name(group, k)} (shape {param.shape}) is already {name(g, j)}: "
                             f"some parameters appear in more than one parameter group; expected each "
                             f"parameter in one group only")
        seen[param] = (group, k)
        g, j = arrays.setdefault(id(param.data), (group, k))
        if (g, j) != (group, k):
            both = f"parameters {j} and {k}" + ("" if plain else f" of param_groups[{group}]") \
                if g == group else f"{name(g, j)} and {name(group, k)}"
            raise ValueError(f"{owner}: {both} (shape {param.shape}) share one array; each step would "
                             f"update it twice. Tensor(array) shares the array it is given: make each "
                             f"parameter from its own, e.g. Tensor(array.copy(), requires_grad=True)")

# Imported last: the schedulers build on Optimizer. optim is one file, not a package, so
# `import minigraph.optim.lr_scheduler` would find no submodule; the entry in sys.modules is
# where the import system looks first (as nn.py does for minigraph.nn.utils).
from . import lr_scheduler  # noqa: E402

sys.modules[f"{__name__}.lr_scheduler"] = lr_scheduler
