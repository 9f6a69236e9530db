"""minigraph.optim: SGD, Adam and AdamW updates against NumPy written out by hand, and against torch.optim."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minigraph as mg
from minigraph import nn, optim
from minigraph.backend import to_device


def host(array):
    return to_device(array, "cpu")


def make_params(rng, on, shapes=((3, 2), (2,))):
    """Parameters on the test's device plus host copies of their starting values."""
    starts = [rng.normal(size=shape) for shape in shapes]
    return [mg.Tensor(on(s.copy()), requires_grad=True) for s in starts], starts


def run_steps(opt, params, grads_per_step, on):
    """Set each parameter's .grad by hand (None allowed) and step, once per entry."""
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = None if g is None else on(g)
        opt.step()


def hand_sgd(p, grads, lr, momentum, dampening, weight_decay, nesterov, maximize=False, with_state=False):
    """The parameter after SGD steps with `grads`; with `with_state`, also its state as torch keeps it."""
    p, buf = p.copy(), None
    for g in grads:
        d = (-g if maximize else g) + weight_decay * p
        buf = d if buf is None else momentum * buf + (1 - dampening) * d
        if not momentum:
            p = p - lr * d
        else:
            p = p - lr * (d + momentum * buf if nesterov else buf)
    state = {"momentum_buffer": buf} if momentum and grads else {}  # torch keeps no buffer without momentum
    return (p, state) if with_state else p


def hand_adam(p, grads, lr, betas, eps, weight_decay, decoupled=False, amsgrad=False, maximize=False,
              with_state=False, amsgrad_from=1):
    """The parameter after Adam steps with `grads`; with `with_state`, also its state as torch keeps
    it. `amsgrad_from`: the update at which amsgrad was turned on (its maximum starts there, from 0)."""
    p, m, v, v_max = p.copy(), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = -g if maximize else g
        if decoupled:  # AdamW: shrink the weights; the gradient stays as it is
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        if t >= amsgrad_from:
            v_max = np.maximum(v_max, v)  # amsgrad divides by the largest v so far
        use_max = amsgrad and t >= amsgrad_from
        m_hat, v_hat = m / (1 - betas[0] ** t), (v_max if use_max else v) / (1 - betas[1] ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    state = {"step": len(grads), "exp_avg": m, "exp_avg_sq": v} if grads else {}
    if amsgrad and grads:
        state["max_exp_avg_sq"] = v_max
    return (p, state) if with_state else p


def full_sgd(settings):
    return dict(dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False), **settings)


def full_adam(settings):
    return dict(dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0), **settings)


def full_adamw(settings):
    return dict(dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, decoupled=True), **settings)


CASES = [  # (optimizer, its settings, the same settings spelled out in full, the update by hand)
    *[(optim.SGD, s, full_sgd(s), hand_sgd) for s in (
        dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, weight_decay=0.1),
        dict(lr=0.1, momentum=0.9, weight_decay=0.01), dict(lr=0.1, momentum=0.9, nesterov=True),
        dict(lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True),
        dict(lr=0.1, momentum=0.9, dampening=0.3), dict(lr=0.05, momentum=0.5, dampening=1.0, weight_decay=0.1),
        dict(lr=0.1, maximize=True), dict(lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True, maximize=True))],
    *[(optim.Adam, s, full_adam(s), hand_adam) for s in (
        dict(lr=0.01), dict(lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
        dict(lr=0.1, betas=(0.8, 0.9), amsgrad=True), dict(lr=0.1, weight_decay=0.1, amsgrad=True, maximize=True))],
    *[(optim.AdamW, s, full_adamw(s), hand_adam) for s in (
        dict(lr=0.01), dict(lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3), dict(weight_decay=0.0),
        dict(lr=0.1, betas=(0.5, 0.6), weight_decay=0.3, amsgrad=True, maximize=True))],
]


@pytest.mark.parametrize("optimizer,settings,full,by_hand", CASES,
                         ids=[f"{c[0].__name__}-{c[1]}" for c in CASES])
def test_two_steps_match_the_update_written_out(on, device, rng, optimizer, settings, full, by_hand):
    """Two steps, so SGD's momentum buffer and Adam's moments and bias correction all matter."""
    params, starts = make_params(rng, on)
    grads = [[rng.normal(size=s.shape) for s in starts] for _ in range(2)]
    opt = optimizer(params, **settings)
    arrays = [p.data for p in params]
    run_steps(opt, params, grads, on)
    for k, (p, start) in enumerate(zip(params, starts)):
        assert p.data is arrays[k] and p.device == device  # updated in place, on its device
        expected = by_hand(start, [g[k] for g in grads], **full)
        np.testing.assert_allclose(host(p.data), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer,settings,full,by_hand", CASES,
                         ids=[f"{c[0].__name__}-{c[1]}" for c in CASES])
def test_a_parameter_first_stepped_later_starts_its_own_state_then(on, rng, optimizer, settings, full,
                                                                   by_hand):
    """Without a gradient at the first step, the bias is skipped: its momentum buffer, Adam
    moments and Adam step count (bias correction) start at its own first update. The torch
    comparison below checks the same, but CI has no torch; this is the by-hand version."""
    params, starts = make_params(rng, on)
    grads = [[rng.normal(size=s.shape) for s in starts] for _ in range(3)]
    grads[0][1] = None
    run_steps(optimizer(params, **settings), params, grads, on)
    for k, (p, start) in enumerate(zip(params, starts)):
        received = [g[k] for g in grads if g[k] is not None]
        np.testing.assert_allclose(host(p.data), by_hand(start, received, **full), rtol=1e-12, atol=1e-14)


def torch_steps(torch, make_optimizer, starts, grads_per_step):
    params = [torch.tensor(s.copy(), requires_grad=True) for s in starts]
    opt = make_optimizer(params)
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = None if g is None else torch.tensor(g)
        opt.step()
    return [p.detach().numpy() for p in params]


@pytest.mark.parametrize("name,settings", [(c[0].__name__, c[1]) for c in CASES], ids=str)
def test_three_steps_match_torch_optim_with_a_gradient_missing_once(on, rng, name, settings):
    torch = pytest.importorskip("torch")
    params, starts = make_params(rng, on)
    grads = [[rng.normal(size=s.shape) for s in starts] for _ in range(3)]
    grads[0][1] = None  # the bias has no gradient at first: skipped, its state starts later
    run_steps(getattr(optim, name)(params, **settings), params, grads, on)
    expected = torch_steps(torch, lambda ps: getattr(torch.optim, name)(ps, **settings), starts, grads)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(host(p.data), e, rtol=1e-10, atol=1e-13)


def test_step_skips_parameters_without_grad_and_leaves_grads_untouched(rng):
    params, starts = make_params(rng, lambda a: a)
    grad = rng.normal(size=starts[0].shape)
    for opt in (optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1),
                optim.Adam(params, lr=0.1, weight_decay=0.1)):
        params[0].grad = grad.copy()
        params[1].grad = None
        opt.step()
        np.testing.assert_array_equal(params[1].data, starts[1])
        np.testing.assert_array_equal(params[0].grad, grad)  # step reads .grad, never writes it
    assert not np.allclose(params[0].data, starts[0])


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
                                  lambda ps: optim.Adam(ps, lr=0.1, weight_decay=0.01)])
def test_float32_parameters_stay_float32(on, rng, make):
    param = mg.Tensor(on(rng.normal(size=(4, 3)).astype(np.float32)), requires_grad=True)
    opt = make([param])
    for _ in range(2):
        param.grad = on(rng.normal(size=(4, 3)).astype(np.float32))
        opt.step()
    assert param.dtype == np.float32


def test_zero_grad_and_a_generator_of_parameters(rng):
    net = nn.Sequential(nn.Linear(3, 2, rng=0, dtype=np.float64, device="cpu"))
    opt = optim.SGD(net.parameters(), lr=0.1)  # a generator: read once, kept as a list
    x = mg.Tensor(rng.normal(size=(4, 3)))
    for _ in range(2):
        opt.zero_grad()
        assert all(p.grad is None for p in net.parameters())
        before = net[0].weight.numpy()
        nn.MSELoss()(net(x), mg.Tensor(np.zeros((4, 2)))).backward()
        opt.step()
        np.testing.assert_allclose(net[0].weight.data, before - 0.1 * net[0].weight.grad, rtol=1e-12)


def test_a_short_training_run_reduces_the_loss(rng):
    net = nn.Sequential(nn.Linear(3, 8, rng=1, dtype=np.float64, device="cpu"), nn.ReLU(),
                        nn.Linear(8, 1, rng=2, dtype=np.float64, device="cpu"))
    x = rng.normal(size=(32, 3))
    y = mg.Tensor(x @ [[1.0], [-2.0], [0.5]])
    x = mg.Tensor(x)
    opt = optim.Adam(net.parameters(), lr=0.02)
    losses = []
    for _ in range(100):
        loss = nn.MSELoss()(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]


# --- validation -----------------------------------------------------------------------
def leaf():
    return mg.Tensor(np.ones(2), requires_grad=True)


@pytest.mark.parametrize("make,message", [
    (lambda: optim.SGD([leaf()], lr=-1), r"SGD: got lr=-1; expected a finite number in \[0.0, inf\), "
                                         r"e.g. lr=0.01"),
    (lambda: optim.SGD([leaf()], lr=-1e-3), r"SGD: got lr=-0.001"),
    (lambda: optim.SGD([leaf()], lr=float("nan")), r"SGD: got lr=nan"),
    (lambda: optim.SGD([leaf()], lr="0.1"), r"SGD: got lr='0.1'"),
    (lambda: optim.SGD([leaf()], lr=0.1, momentum=-0.5),
     r"SGD: got momentum=-0.5; expected a finite number in \[0.0"),
    (lambda: optim.SGD([leaf()], lr=0.1, weight_decay=-1), r"SGD: got weight_decay=-1"),
    (lambda: optim.Adam([leaf()], betas=(0.9, 1.0)),
     r"Adam: got betas\[1\]=1.0; expected a finite number in \[0.0, 1.0\)"),
    (lambda: optim.Adam([leaf()], lr=True), r"Adam: got lr=True"),
    (lambda: optim.Adam([leaf()], betas=0.9), r"Adam: got betas=0.9; expected a pair"),
    (lambda: optim.Adam([leaf()], eps=-1e-8), r"Adam: got eps=-1e-08"),
    (lambda: optim.SGD([leaf()], lr=0.1, momentum=0.9, dampening=1.5),
     r"SGD: got dampening=1.5; expected a finite number in \[0.0, 1.0\]"),
    (lambda: optim.SGD([leaf()], lr=0.1, nesterov=True),
     r"SGD: got nesterov=True with momentum=0.0 and dampening=0.0; Nesterov's momentum needs "
     r"momentum > 0 and dampening=0"),
    (lambda: optim.SGD([leaf()], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     r"SGD: got nesterov=True with momentum=0.9 and dampening=0.1"),
    (lambda: optim.AdamW([leaf()], weight_decay=-0.01), r"AdamW: got weight_decay=-0.01"),
])
def test_bad_hyperparameters_are_rejected_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_parameter_lists_are_rejected_with_a_hint():
    net = nn.Linear(2, 2, rng=0, device="cpu")
    with pytest.raises(ValueError, match="SGD: got an empty parameter list"):
        optim.SGD([], lr=0.1)
    params = net.parameters()
    optim.SGD(params, lr=0.1)
    with pytest.raises(ValueError, match="was it used already"):
        optim.SGD(params, lr=0.1)  # the generator is spent
    with pytest.raises(TypeError, match=r"Adam: params is a single Tensor; expected an iterable"):
        optim.Adam(leaf())
    with pytest.raises(TypeError, match=r"parameter 0 is a tuple; .*not named_parameters\(\)"):
        optim.Adam(net.named_parameters())
    # One group given as a dict, not in a list: iterating it would give its keys.
    with pytest.raises(TypeError, match=r"SGD: params is a single dict; expected .* a list of parameter groups"):
        optim.SGD({"params": [leaf()], "lr": 0.1}, lr=0.1)
    w = leaf()
    with pytest.raises(ValueError, match=r"parameter 0 \(shape \(2,\)\) was computed by add"):
        optim.Adam([w + w])
    with pytest.raises(ValueError, match=r"parameter 1 \(shape \(2,\)\) appears more than once"):
        optim.SGD([w, w], lr=0.1)


def test_a_broadcast_view_parameter_is_rejected_up_front_on_every_device(on):
    """NumPy's broadcast view is read-only; CuPy's has no such flag and accepts writes through its
    zero strides, where an in-place step would silently add every row's update to one element."""
    xp = mg.backend.get_array_module(on(np.zeros(1)))
    view = mg.Tensor(xp.broadcast_to(on(np.zeros(3)), (2, 3)), requires_grad=True)
    with pytest.raises(ValueError, match=r"parameter 0 \(shape \(2, 3\)\) has a read-only array"):
        optim.SGD([view], lr=0.1)


def test_two_parameters_made_from_one_array_are_rejected_instead_of_stepped_twice(on):
    """Tensor(array) shares the array on the CPU, so two biases made from one zeros array are one
    array: each step would apply both gradients to it, twice, and tie the two layers silently."""
    zeros = on(np.zeros(4))
    b1, b2 = mg.Tensor(zeros, requires_grad=True), mg.Tensor(zeros, requires_grad=True)
    assert b1.data is b2.data  # the premise: an array already on the device is not copied
    w = mg.Tensor(on(np.ones((2, 4))), requires_grad=True)
    for make in (lambda ps: optim.SGD(ps, lr=0.1), lambda ps: optim.Adam(ps)):
        with pytest.raises(ValueError, match=r"parameters 1 and 2 \(shape \(4,\)\) share one array; .*"
                                             r"Tensor\(array.copy\(\), requires_grad=True\)"):
            make([w, b1, b2])
    optim.SGD([w, mg.Tensor(zeros.copy(), requires_grad=True), b2], lr=0.1)  # copies: accepted


def test_frozen_parameters_and_a_zero_learning_rate_are_accepted_as_in_pytorch(rng):
    """Warm-up schedules start at lr=0; frozen parameters have no .grad and are left alone."""
    w = mg.Tensor(rng.normal(size=(3, 2)), requires_grad=True)
    frozen = mg.Tensor(rng.normal(size=(3, 2)))
    before_w, before_frozen = w.data.copy(), frozen.data.copy()
    for make in (lambda ps: optim.SGD(ps, lr=0.0, momentum=0.9), lambda ps: optim.Adam(ps, lr=0)):
        opt = make([w, frozen])
        mg.mse_loss(mg.Tensor(rng.normal(size=(4, 3))) @ (w + frozen), np.zeros((4, 2))).backward()
        assert w.grad is not None and frozen.grad is None
        opt.step()
        np.testing.assert_array_equal(w.data, before_w)
        np.testing.assert_array_equal(frozen.data, before_frozen)
        opt.zero_grad()
    opt = optim.SGD([w, frozen], lr=0.5)
    mg.mse_loss(mg.Tensor(rng.normal(size=(4, 3))) @ (w + frozen), np.zeros((4, 2))).backward()
    opt.step()
    assert not np.array_equal(w.data, before_w)
    np.testing.assert_array_equal(frozen.data, before_frozen)


def test_numbers_may_be_0d_arrays_on_either_device_but_not_booleans(on):
    """CuPy reductions return 0-d arrays, so lr=schedule.max() must work on the GPU as on the CPU."""
    lr = on(np.array([0.1, 0.05])).max()
    opt = optim.SGD([leaf()], lr=lr, momentum=on(np.array(0.9)))
    assert opt.lr == 0.1 and type(opt.lr) is float and opt.momentum == 0.9
    with pytest.raises(ValueError, match=r"SGD: got lr=array\(\[0.1"):
        optim.SGD([leaf()], lr=on(np.array([0.1])))
    with pytest.raises(ValueError, match=r"SGD: got momentum=True"):
        optim.SGD([leaf()], lr=0.1, momentum=True)


# --- hyperparameters assigned after construction -------------------------------------------
HYPERPARAMETERS = {"SGD": ("lr", "momentum", "dampening", "weight_decay", "nesterov"),
                   "Adam": ("lr", "betas", "eps", "weight_decay")}


@pytest.mark.parametrize("name,attribute,value,message", [
    ("SGD", "lr", "x", r"SGD: got lr='x'; expected a finite number in \[0.0, inf\), e.g. lr=0.01"),
    ("SGD", "lr", -1, r"SGD: got lr=-1; expected a finite number"),
    ("SGD", "lr", math.inf, r"SGD: got lr=inf"),
    ("SGD", "lr", True, r"SGD: got lr=True"),
    ("SGD", "lr", np.array([0.1]), r"SGD: got lr=array\(\[0.1\]\)"),
    ("SGD", "momentum", -0.5, r"SGD: got momentum=-0.5"),
    ("SGD", "weight_decay", None, r"SGD: got weight_decay=None"),
    ("Adam", "lr", float("nan"), r"Adam: got lr=nan; expected a finite number in \[0.0, inf\), e.g. lr=1e-3"),
    ("Adam", "betas", (0.9, 1.0), r"Adam: got betas\[1\]=1.0; expected a finite number in \[0.0, 1.0\)"),
    ("Adam", "betas", 0.9, r"Adam: got betas=0.9; expected a pair"),
    ("Adam", "eps", -1e-8, r"Adam: got eps=-1e-08"),
    ("Adam", "weight_decay", "0", r"Adam: got weight_decay='0'"),
    ("SGD", "dampening", -0.1, r"SGD: got dampening=-0.1; expected a finite number in \[0.0, 1.0\]"),
])
def test_a_bad_hyperparameter_assignment_is_refused_and_the_old_value_kept(name, attribute, value, message):
    opt = getattr(optim, name)([leaf()], lr=0.01)
    before = {key: getattr(opt, key) for key in HYPERPARAMETERS[name]}
    with pytest.raises(ValueError, match=message):
        setattr(opt, attribute, value)
    assert {key: getattr(opt, key) for key in HYPERPARAMETERS[name]} == before


def test_schedule_style_assignments_set_the_rate_the_next_step_uses(on):
    """opt.lr = 0.5 * opt.lr and opt.lr = schedule[i] (a 0-d array, on the GPU a device one)."""
    w = mg.Tensor(on(np.zeros(3)), requires_grad=True)
    opt = optim.SGD([w], lr=0.4)
    schedule = on(np.array([0.3, 0.1]))
    grad = np.array([1.0, -2.0, 4.0])
    for assign in (lambda: setattr(opt, "lr", 0.5 * opt.lr), lambda: setattr(opt, "lr", schedule[0]),
                   lambda: setattr(opt, "lr", schedule[1]), lambda: setattr(opt, "lr", np.float32(0.25))):
        assign()
        assert type(opt.lr) is float  # a plain number: step() never touches the schedule's array
        w.grad = on(grad)
        opt.step()
    np.testing.assert_allclose(host(w.data), -(0.2 + 0.3 + 0.1 + 0.25) * grad, rtol=1e-12)
    adam = optim.Adam([w])
    adam.betas = on(np.array([0.5, 0.75]))  # an array of shape (2,), as nn.load gives back
    assert adam.betas == (0.5, 0.75) and all(type(b) is float for b in adam.betas)


# --- parameter groups ------------------------------------------------------------------
GROUP_CASES = [  # (optimizer, constructor settings, each group's own settings, each group in full, by hand)
    (optim.SGD, dict(lr=0.1, momentum=0.9),
     [dict(lr=0.05, momentum=0.8, nesterov=True), dict(weight_decay=0.1, dampening=0.3)],
     [full_sgd(dict(lr=0.05, momentum=0.8, nesterov=True)),
      full_sgd(dict(lr=0.1, momentum=0.9, weight_decay=0.1, dampening=0.3))], hand_sgd),
    (optim.SGD, dict(lr=0.1, weight_decay=0.01),
     [dict(), dict(lr=0.3, momentum=0.5)],
     [full_sgd(dict(lr=0.1, weight_decay=0.01)), full_sgd(dict(lr=0.3, momentum=0.5, weight_decay=0.01))],
     hand_sgd),
    (optim.Adam, dict(lr=0.01, eps=1e-6),
     [dict(betas=(0.8, 0.99)), dict(lr=0.1, weight_decay=0.1)],
     [full_adam(dict(lr=0.01, eps=1e-6, betas=(0.8, 0.99))), full_adam(dict(lr=0.1, eps=1e-6, weight_decay=0.1))],
     hand_adam),
    (optim.AdamW, dict(lr=0.01),
     [dict(weight_decay=0.0), dict(lr=0.1, weight_decay=0.3, betas=(0.5, 0.9))],
     [full_adamw(dict(lr=0.01, weight_decay=0.0)), full_adamw(dict(lr=0.1, weight_decay=0.3, betas=(0.5, 0.9)))],
     hand_adam),
]
GROUP_IDS = [f"{c[0].__name__}-{c[2]}" for c in GROUP_CASES]
GROUP_SHAPES = ((3, 2), (2,), (4,))  # parameters 0 and 1 in group 0, parameter 2 in group 1


def in_groups(params, own_settings):
    return [{"params": params[:2], **own_settings[0]}, {"params": params[2:], **own_settings[1]}]


@pytest.mark.parametrize("optimizer,settings,own,full,by_hand", GROUP_CASES, ids=GROUP_IDS)
def test_each_group_steps_with_its_own_hyperparameters_and_the_constructors_for_the_rest(
        on, device, rng, optimizer, settings, own, full, by_hand):
    params, starts = make_params(rng, on, GROUP_SHAPES)
    grads = [[rng.normal(size=s.shape) for s in starts] for _ in range(3)]
    grads[0][1] = None  # a parameter first stepped later starts its own state then, in its group too
    run_steps(optimizer(in_groups(params, own), **settings), params, grads, on)
    for k, (p, start) in enumerate(zip(params, starts)):
        received = [g[k] for g in grads if g[k] is not None]
        expected = by_hand(start, received, **full[0 if k < 2 else 1])
        assert p.device == device
        np.testing.assert_allclose(host(p.data), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer,settings,own,full,by_hand", GROUP_CASES, ids=GROUP_IDS)
def test_groups_match_torch_optim(rng, optimizer, settings, own, full, by_hand):
    torch = pytest.importorskip("torch")
    params, starts = make_params(rng, lambda a: a, GROUP_SHAPES)
    grads = [[rng.normal(size=s.shape) for s in starts] for _ in range(3)]
    grads[0][1] = None
    run_steps(optimizer(in_groups(params, own), **settings), params, grads, lambda a: a)
    name = optimizer.__name__
    expected = torch_steps(torch, lambda ps: getattr(torch.optim, name)(in_groups(ps, own), **settings),
                           starts, grads)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.data, e, rtol=1e-10, atol=1e-13)


def two_group_sgd(**settings):
    w, b = leaf(), mg.Tensor(np.ones(3), requires_grad=True)
    return optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.5}], **settings), w, b


def test_param_groups_are_dicts_of_params_and_every_hyperparameter():
    opt, w, b = two_group_sgd(lr=0.1, momentum=0.9)
    first, second = opt.param_groups
    assert first["params"] == [w] and second["params"] == [b]
    assert dict(second, params=None) == dict(params=None, lr=0.5, momentum=0.9, dampening=0.0,
                                             weight_decay=0.0, nesterov=False, maximize=False)
    assert opt.defaults == dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False,
                                maximize=False)
    assert opt.params == [w, b]  # all parameters, group after group: the state dict's order


@pytest.mark.parametrize("key,value,error,message", [
    ("lr", "x", ValueError, r"SGD: got param_groups\[1\]\['lr'\]='x'; expected a finite number in \[0.0, inf\)"),
    ("lr", -0.1, ValueError, r"SGD: got param_groups\[1\]\['lr'\]=-0.1"),
    ("lr", np.array([0.1]), ValueError, r"SGD: got param_groups\[1\]\['lr'\]=array\(\[0.1\]\)"),
    ("momentum", True, ValueError, r"SGD: got param_groups\[1\]\['momentum'\]=True"),
    ("dampening", 2.0, ValueError,
     r"got param_groups\[1\]\['dampening'\]=2.0; expected a finite number in \[0.0, 1.0\]"),
    ("nesterov", "yes", TypeError, r"SGD: got param_groups\[1\]\['nesterov'\]='yes'; expected True or False"),
    ("initial_lr", -1, ValueError, r"SGD: got param_groups\[1\]\['initial_lr'\]=-1"),
    ("learning_rate", 0.1, ValueError, r"SGD: param_groups\[1\] has no key 'learning_rate'; expected 'params'"),
    ("params", [leaf()], ValueError, r"SGD: param_groups\[1\]\['params'\] cannot be replaced.*add_param_group"),
])
def test_a_bad_group_assignment_is_refused_naming_the_optimizer_and_group(key, value, error, message):
    opt, _, b = two_group_sgd(lr=0.1, momentum=0.9)
    before = dict(opt.param_groups[1])
    with pytest.raises(error, match=message):
        opt.param_groups[1][key] = value
    assert dict(opt.param_groups[1]) == before


def test_adam_betas_in_a_group_are_checked_per_element():
    opt = optim.Adam([{"params": [leaf()]}])
    with pytest.raises(ValueError, match=r"Adam: got param_groups\[0\]\['betas'\]\[1\]=1.0; expected a finite"):
        opt.param_groups[0]["betas"] = (0.9, 1.0)
    opt.param_groups[0]["betas"] = np.array([0.5, 0.75])  # as nn.load gives it back
    assert opt.param_groups[0]["betas"] == (0.5, 0.75)


def test_only_initial_lr_may_be_deleted_from_a_group():
    opt, _, _ = two_group_sgd(lr=0.1)
    group = opt.param_groups[0]
    with pytest.raises(ValueError, match=r"SGD: param_groups\[0\]\['lr'\] cannot be deleted; step\(\) needs it"):
        del group["lr"]
    group.setdefault("initial_lr", 0.1)  # what a scheduler does
    assert group["initial_lr"] == 0.1
    del group["initial_lr"]
    assert "initial_lr" not in group and group["lr"] == 0.1


def test_schedule_style_group_assignments_set_the_rates_the_next_step_uses(on):
    """g['lr'] *= 0.1 and g['lr'] = schedule[i] (a 0-d array; on the GPU a device one), per group."""
    w, b = (mg.Tensor(on(np.zeros(3)), requires_grad=True) for _ in range(2))
    opt = optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.2}], lr=0.4)
    schedule = on(np.array([0.3, 0.1]))
    grad = np.array([1.0, -2.0, 4.0])
    used = [[], []]
    for epoch in range(2):
        for group in opt.param_groups:
            group["lr"] *= 0.5
        opt.param_groups[1]["lr"] = schedule[epoch]
        assert all(type(g["lr"]) is float for g in opt.param_groups)  # step never touches the array
        for rates, group in zip(used, opt.param_groups):
            rates.append(group["lr"])
        w.grad, b.grad = on(grad), on(grad)
        opt.step()
    assert used == [[0.2, 0.1], [0.3, 0.1]]
    np.testing.assert_allclose(host(w.data), -(0.2 + 0.1) * grad, rtol=1e-12)
    np.testing.assert_allclose(host(b.data), -(0.3 + 0.1) * grad, rtol=1e-12)


def test_opt_lr_is_the_only_groups_lr_and_an_error_with_several_groups():
    opt = optim.SGD([leaf()], lr=0.1, momentum=0.9)
    opt.lr *= 0.5
    assert opt.param_groups[0]["lr"] == 0.05 and opt.lr == 0.05
    opt.param_groups[0]["momentum"] = 0.5
    assert opt.momentum == 0.5
    opt, _, _ = two_group_sgd(lr=0.1)
    for attempt in (lambda: opt.lr, lambda: setattr(opt, "lr", 0.1), lambda: setattr(opt, "momentum", 0.0)):
        with pytest.raises(AttributeError, match=r"SGD: opt.(lr|momentum) is the \1 of the only parameter "
                                                 r"group, but this optimizer has 2 groups.*param_groups\[i\]"):
            attempt()
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5] and not hasattr(opt, "lr")


def test_add_param_group_takes_the_constructors_values_for_what_it_omits(rng):
    w, b = leaf(), mg.Tensor(np.zeros(3), requires_grad=True)
    opt = optim.SGD([w], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": b, "lr": 0.5})  # one Tensor, as PyTorch accepts
    assert opt.param_groups[1]["params"] == [b] and opt.param_groups[1]["momentum"] == 0.9
    grads = [rng.normal(size=3) for _ in range(2)]
    for g in grads:
        b.grad = g
        opt.step()
    np.testing.assert_allclose(b.data, hand_sgd(np.zeros(3), grads, **full_sgd(dict(lr=0.5, momentum=0.9))),
                               rtol=1e-12)
    np.testing.assert_array_equal(w.data, np.ones(2))  # no gradient: left alone


def test_a_bad_param_group_is_refused_before_anything_is_added():
    w, b = leaf(), mg.Tensor(np.ones(3), requires_grad=True)
    opt = optim.SGD([w], lr=0.1)
    shares_w = mg.Tensor(w.data, requires_grad=True)
    owner = r"SGD.add_param_group: "
    for group, error, message in [
        ([b], TypeError, owner + r"got a list; expected a dict such as \{'params'"),
        ({"lr": 0.1}, ValueError, owner + r"param_groups\[1\] has no 'params'"),
        ({"params": [b], "learning_rate": 0.1}, ValueError,
         owner + r"param_groups\[1\] has keys \['learning_rate'\]; expected 'params' and any of \['lr'"),
        ({"params": [b], "lr": -1}, ValueError, owner + r"got param_groups\[1\]\['lr'\]=-1"),
        ({"params": {b}}, TypeError, owner + r"param_groups\[1\]\['params'\] is a set, whose order changes"),
        ({"params": 3}, TypeError, owner + r"param_groups\[1\]\['params'\] is a int; expected an iterable"),
        ({"params": [b, w]}, ValueError,
         owner + r"parameter 1 of param_groups\[1\] \(shape \(2,\)\) is already parameter 0 of param_groups\[0\]: "
                 r"some parameters appear in more than one parameter group"),
        ({"params": [b, b]}, ValueError, owner + r"parameter 1 of param_groups\[1\] \(shape \(3,\)\) appears more "
                                                 r"than once"),
        ({"params": [b, shares_w]}, ValueError,
         owner + r"parameter 0 of param_groups\[0\] and parameter 1 of param_groups\[1\] \(shape \(2,\)\) share "
                 r"one array"),
        ({"params": [b, w + w]}, ValueError, owner + r"parameter 1 of param_groups\[1\] \(shape \(2,\)\) was "
                                                     r"computed by add"),
        ({"params": [b], "momentum": 0.0, "nesterov": True}, ValueError,
         owner + r"got nesterov=True with momentum=0.0 and dampening=0.0 in param_groups\[1\]"),
    ]:
        with pytest.raises(error, match=message):
            opt.add_param_group(group)
        assert len(opt.param_groups) == 1 and opt.params == [w]


def test_edited_defaults_are_checked_when_a_group_takes_them():
    opt = optim.SGD([leaf()], lr=0.1)
    opt.defaults["lr"] = -1.0
    with pytest.raises(ValueError, match=r"SGD.add_param_group: got lr=-1.0; expected a finite number"):
        opt.add_param_group({"params": [mg.Tensor(np.ones(3), requires_grad=True)]})
    assert len(opt.param_groups) == 1


def test_a_parameter_in_two_groups_is_refused_as_in_pytorch():
    w, b = leaf(), mg.Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match=r"Adam: parameter 0 of param_groups\[1\] \(shape \(2,\)\) is already "
                                         r"parameter 0 of param_groups\[0\]: some parameters appear in more "
                                         r"than one parameter group; expected each parameter in one group only"):
        optim.Adam([{"params": [w, b]}, {"params": [w], "lr": 0.1}])


def test_constructor_groups_are_checked_like_the_parameter_list():
    w, b = leaf(), mg.Tensor(np.ones(3), requires_grad=True)
    assert optim.SGD([w]).lr == 1e-3  # PyTorch 2's default
    assert [g["lr"] for g in optim.SGD([{"params": [w], "lr": 0.1}, {"params": [b]}]).param_groups] == [0.1, 1e-3]

    class Bare(optim.Optimizer):  # an optimizer whose lr has no default: each group must give one
        _hyperparameters = {"lr": optim.SGD._hyperparameters["lr"]}

        def __init__(self, params, lr=None):
            super().__init__(params, {} if lr is None else {"lr": lr})

    with pytest.raises(TypeError, match=r"Bare: got no lr; expected one, e.g. "
                                        r"Bare\(model.parameters\(\), lr=0.01\)"):
        Bare([w])
    with pytest.raises(TypeError, match=r"Bare: param_groups\[1\] has no 'lr' and the optimizer was given no lr"):
        Bare([{"params": [w], "lr": 0.1}, {"params": [b]}])
    assert Bare([{"params": [w], "lr": 0.1}, {"params": [b], "lr": 0.2}]).defaults.get("lr") is None
    with pytest.raises(TypeError, match=r"SGD: param_groups\[1\] is a Tensor but param_groups\[0\] is a dict"):
        optim.SGD([{"params": [w]}, b], lr=0.1)
    with pytest.raises(TypeError, match=r"SGD: parameter 1 is a dict; expected a Tensor .*"
                                        r"give every entry as a dict"):
        optim.SGD([w, {"params": [b]}], lr=0.1)
    with pytest.raises(TypeError, match=r"SGD: params is a set, whose order changes from run to run"):
        optim.SGD({w, b}, lr=0.1)
    with pytest.raises(ValueError, match=r"Adam: got param_groups\[0\]\['eps'\]=-1"):
        optim.Adam([{"params": [w], "eps": -1}])
    with pytest.raises(ValueError, match=r"Adam: got eps=-1"):  # the constructor's own value: named as before
        optim.Adam([{"params": [w], "eps": 1e-8}], eps=-1)
    opt = optim.SGD([{"params": []}, {"params": [w]}], lr=0.1)  # an empty group is allowed, as in PyTorch
    assert [len(g["params"]) for g in opt.param_groups] == [0, 1]


def test_nesterovs_constraint_applies_per_group():
    w, b = leaf(), mg.Tensor(np.ones(3), requires_grad=True)
    optim.SGD([{"params": [w], "momentum": 0.9, "nesterov": True}, {"params": [b]}], lr=0.1)
    with pytest.raises(ValueError, match=r"SGD: got nesterov=True with momentum=0.0 and dampening=0.0 in "
                                         r"param_groups\[1\]; Nesterov's momentum needs momentum > 0"):
        optim.SGD([{"params": [w]}, {"params": [b], "momentum": 0.0}], lr=0.1, momentum=0.9, nesterov=True)


# --- step(closure), zero_grad(set_to_none), opt.state, pickling -------------------------------
def quadratic_problem(rng):
    """A net and data whose loss and gradients are computed independently by hand below."""
    net = nn.Linear(3, 1, rng=0, dtype=np.float64, device="cpu")
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 1))
    return net, x, y


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.1, amsgrad=True)])
def test_step_with_a_closure_uses_its_gradients_and_returns_its_loss(rng, make):
    net, x, y = quadratic_problem(rng)
    twin, _, _ = quadratic_problem(rng)  # the same starting weights, stepped without a closure
    opt, twin_opt = make(net.parameters()), make(twin.parameters())
    calls = []

    def closure():
        calls.append(mg.is_grad_enabled())
        opt.zero_grad()
        loss = nn.MSELoss()(net(mg.Tensor(x)), mg.Tensor(y))
        loss.backward()
        return loss

    for _ in range(3):
        w, b = net.weight.numpy(), net.bias.numpy()
        expected_loss = np.mean((x @ w + b - y) ** 2)  # by hand (weight: (in, out)), before the update
        with mg.no_grad():  # as training loops often call step: the closure still records
            loss = opt.step(closure)
        assert loss.item() == pytest.approx(expected_loss, rel=1e-12)
        twin_opt.zero_grad()
        nn.MSELoss()(twin(mg.Tensor(x)), mg.Tensor(y)).backward()
        assert twin_opt.step() is None
        np.testing.assert_array_equal(net.weight.data, twin.weight.data)
    assert calls == [True, True, True]  # once per step, with recording on


def test_a_closure_that_is_not_callable_is_refused_before_any_update():
    w = leaf()
    w.grad = np.ones(2)
    opt = optim.SGD([w], lr=0.1)
    with pytest.raises(TypeError, match=r"SGD.step: got closure=1.0; expected a function of no arguments"):
        opt.step(1.0)
    np.testing.assert_array_equal(w.data, np.ones(2))


def test_zero_grad_set_to_none_false_zeroes_the_grad_arrays_in_place(on):
    net = nn.Linear(2, 2, rng=0, dtype=np.float64)
    frozen_grad_free = mg.Tensor(on(np.ones(3)), requires_grad=True)  # never given a .grad
    opt = optim.SGD([*net.parameters(), frozen_grad_free], lr=0.1)
    nn.MSELoss()(net(mg.Tensor(on(np.ones((3, 2))))), mg.Tensor(on(np.zeros((3, 2))))).backward()
    arrays = [p.grad for p in net.parameters()]
    assert all(host(a).any() for a in arrays)  # the test needs nonzero gradients to clear
    opt.zero_grad(set_to_none=False)
    assert [p.grad for p in net.parameters()] == arrays  # the same arrays, now zero
    assert all(not host(a).any() for a in arrays) and frozen_grad_free.grad is None
    for p in net.parameters():
        p.grad[...] = 1.0
    net.zero_grad(set_to_none=False)  # Module.zero_grad takes the same flag
    assert [p.grad for p in net.parameters()] == arrays and all(not host(a).any() for a in arrays)
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(TypeError, match=r"SGD.zero_grad: got set_to_none='no'; expected True or False"):
        opt.zero_grad(set_to_none="no")
    with pytest.raises(TypeError, match=r"Linear.zero_grad: got set_to_none=None; expected True or False"):
        net.zero_grad(set_to_none=None)


def test_opt_state_is_each_updated_parameters_live_state(on):
    w, b = mg.Tensor(on(np.ones(2)), requires_grad=True), mg.Tensor(on(np.ones(3)), requires_grad=True)
    sgd = optim.SGD([w, b], lr=0.1, momentum=0.9)
    assert len(sgd.state) == 0 and sgd.state[w] == {}  # nothing yet; a lookup gives {}, as in torch
    w.grad = on(np.full(2, 2.0))
    sgd.step()
    assert list(sgd.state) == [w] and list(sgd.state[w]) == ["momentum_buffer"]
    buffer = sgd.state[w]["momentum_buffer"]
    np.testing.assert_array_equal(host(buffer), [2.0, 2.0])  # the first buffer is the gradient
    buffer[...] = 0.0  # live: the next step sees it
    sgd.step()
    np.testing.assert_allclose(host(w.data), 1.0 - 0.1 * 2.0 - 0.1 * (0.9 * 0.0 + 2.0), rtol=1e-12)

    adam = optim.Adam([w], lr=0.1, amsgrad=True)
    adam.step()
    state = adam.state[w]
    assert state["step"] == 1 and sorted(state) == ["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"]
    np.testing.assert_allclose(host(state["exp_avg"]), 0.1 * 2.0, rtol=1e-12)  # (1 − β1)·g
    np.testing.assert_allclose(host(state["max_exp_avg_sq"]), host(state["exp_avg_sq"]), rtol=0)
    assert sorted(optim.Adam([w]).state[w]) == []


def copy_by_pickle(obj):
    import pickle

    return pickle.loads(pickle.dumps(obj))


def copy_by_deepcopy(obj):
    import copy

    return copy.deepcopy(obj)


def test_a_pickled_adam_carries_its_state_but_not_its_scratch_array(device, on):
    """The scratch array is rebuilt on load, not written: a pickle is the size of the state."""
    import pickle

    w = mg.Tensor(np.ones((50, 40)), requires_grad=True)
    opt = optim.Adam([w], lr=0.1)
    w.grad = on(np.full((50, 40), 0.5))
    opt.step()
    marker = 1234.5678  # fills the scratch array only
    opt._state[w].scratch[...] = marker
    payload = pickle.dumps(opt)
    assert np.float64(marker).tobytes() not in payload
    assert np.float64(host(opt.state[w]["exp_avg"])[0, 0]).tobytes() in payload  # the moments are there
    copy = pickle.loads(payload)
    (copy_w,) = copy.params
    copy_w.grad, w.grad = on(np.full((50, 40), -0.25)), on(np.full((50, 40), -0.25))
    opt.step()
    copy.step()  # the rebuilt scratch serves as the old one did
    np.testing.assert_array_equal(host(copy_w.data), host(w.data))


@pytest.mark.parametrize("copier", [copy_by_pickle, copy_by_deepcopy])
@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
                                  lambda ps: optim.Adam([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.01}],
                                                        lr=0.05, amsgrad=True),
                                  lambda ps: optim.AdamW(ps, lr=0.05, weight_decay=0.1, maximize=True)])
def test_a_copied_model_and_optimizer_carry_on_exactly_like_the_originals(device, rng, make, copier):
    """Pickled (or deep-copied) together, the optimizer keeps the copied model's tensors and its own
    copy of the state: both pairs, trained on, stay equal bit for bit (shared state would not)."""
    net = nn.Sequential(nn.Linear(3, 4, rng=0, dtype=np.float64), nn.ReLU(),
                        nn.Linear(4, 1, rng=1, dtype=np.float64))
    opt = make(list(net.parameters()))
    data = [(rng.normal(size=(5, 3)), rng.normal(size=(5, 1))) for _ in range(6)]

    def train(net, opt, batches):
        for x, y in batches:
            opt.zero_grad()
            nn.MSELoss()(net(mg.Tensor(x)), mg.Tensor(y)).backward()
            opt.step()

    train(net, opt, data[:3])
    copy_net, copy_opt = copier((net, opt))
    assert copy_opt.params == list(copy_net.parameters())
    assert all(p.device == device for p in copy_opt.params)
    assert type(copy_opt) is type(opt) and [dict(g, params=None) for g in copy_opt.param_groups] == \
        [dict(g, params=None) for g in opt.param_groups]
    with pytest.raises(ValueError, match=r"got param_groups\[0\]\['lr'\]=-1"):  # still checked
        copy_opt.param_groups[0]["lr"] = -1
    train(net, opt, data[3:])
    train(copy_net, copy_opt, data[3:])
    for (key, expected), got in zip(net.state_dict().items(), copy_net.state_dict().values()):
        np.testing.assert_array_equal(got, expected, err_msg=key)
    for (key, expected), got in zip(opt.state_dict().items(), copy_opt.state_dict().values()):
        np.testing.assert_array_equal(got, expected, err_msg=key)
    assert not np.array_equal(net.state_dict()["0.weight"], nn.Sequential(
        nn.Linear(3, 4, rng=0, dtype=np.float64)).state_dict()["0.weight"])  # it did train


# --- amsgrad and maximize per parameter group; opt.state against its definition -------------
GROUPED = {  # optimizer: (constructor settings, one group per parameter differing in amsgrad/maximize)
    "SGD": (dict(lr=0.1), [dict(maximize=True), dict(momentum=0.9, nesterov=True),
                           dict(momentum=0.5, dampening=0.2, weight_decay=0.1, maximize=True)]),
    "Adam": (dict(lr=0.1, betas=(0.8, 0.7)), [dict(amsgrad=True), dict(lr=0.05, maximize=True),
                                               dict(amsgrad=True, maximize=True, weight_decay=0.1)]),
    "AdamW": (dict(lr=0.1, betas=(0.8, 0.7)), [dict(amsgrad=True), dict(lr=0.05, maximize=True),
                                                dict(amsgrad=True, maximize=True, weight_decay=0.3)]),
}
FULL = {"SGD": (full_sgd, hand_sgd), "Adam": (full_adam, hand_adam), "AdamW": (full_adamw, hand_adam)}
# Gradients that shrink, then grow, then shrink: v falls below its earlier maximum, so amsgrad matters.
SCALES = (2.0, 0.5, 1.0, 0.1, 0.05)


def grouped_run(name, rng, on):
    """Five float64 steps of `name` over GROUPED's groups, the second parameter without a gradient
    at first. Returns (our parameters, our optimizer, starts, gradients per step)."""
    settings, groups = GROUPED[name]
    params, starts = make_params(rng, on, shapes=((3, 2), (2,), (4,)))
    grads = [[scale * rng.normal(size=s.shape) for s in starts] for scale in SCALES]
    grads[0][1] = None
    opt = getattr(optim, name)([dict(params=[p], **g) for p, g in zip(params, groups)], **settings)
    run_steps(opt, params, grads, on)
    return params, opt, starts, grads


@pytest.mark.parametrize("name", GROUPED)
def test_groups_with_their_own_amsgrad_and_maximize_match_the_update_written_out(on, rng, name):
    """Each group's flags apply to its parameters only, and opt.state holds what the written-out
    update keeps: Adam's step count, moments and running maximum; SGD's momentum buffer."""
    params, opt, starts, grads = grouped_run(name, rng, on)
    settings, groups = GROUPED[name]
    full, by_hand = FULL[name]
    for k, (p, start, group) in enumerate(zip(params, starts, groups)):
        received = [g[k] for g in grads if g[k] is not None]
        expected, state = by_hand(start, received, **full({**settings, **group}), with_state=True)
        np.testing.assert_allclose(host(p.data), expected, rtol=1e-12, atol=1e-14)
        assert list(opt.state[p]) == list(state) and (p in opt.state) == bool(state)
        for field, value in state.items():
            np.testing.assert_allclose(host(opt.state[p][field]), value, rtol=1e-12, atol=1e-14, err_msg=field)
        flags = {flag: False for flag in ("amsgrad", "maximize") if group.get(flag)}
        if flags:  # the premise: the group's flags change its parameter's path
            assert not np.allclose(by_hand(start, received, **full({**settings, **group, **flags})), expected)


@pytest.mark.parametrize("name", GROUPED)
def test_groups_with_their_own_amsgrad_and_maximize_match_torch_optim(on, rng, name):
    """The same five steps through torch.optim: parameters and each parameter's state."""
    torch = pytest.importorskip("torch")
    params, opt, starts, grads = grouped_run(name, rng, on)
    settings, groups = GROUPED[name]
    theirs = [torch.tensor(s.copy(), requires_grad=True) for s in starts]
    topt = getattr(torch.optim, name)([dict(params=[t], **g) for t, g in zip(theirs, groups)], **settings)
    for step in grads:
        for t, g in zip(theirs, step):
            t.grad = None if g is None else torch.tensor(g)
        topt.step()
    for p, t in zip(params, theirs):
        np.testing.assert_allclose(host(p.data), t.detach().numpy(), rtol=1e-10, atol=1e-13)
        assert list(opt.state[p]) == list(topt.state[t])
        for field, value in topt.state[t].items():
            ours = opt.state[p][field]
            if field == "step":
                assert ours == int(value.item())
            else:
                np.testing.assert_allclose(host(ours), value.numpy(), rtol=1e-10, atol=1e-13, err_msg=field)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_amsgrad_turned_on_after_some_steps_starts_its_maximum_there(on, rng, name):
    """PyTorch raises KeyError('max_exp_avg_sq') here; we start the running maximum at the step
    where the flag is first on, as a maximum created then from zeros would be."""
    params, starts = make_params(rng, on, shapes=((3, 2),))
    grads = [[scale * rng.normal(size=starts[0].shape)] for scale in SCALES]
    settings = dict(lr=0.1, betas=(0.8, 0.7))
    opt = getattr(optim, name)(params, **settings)
    run_steps(opt, params, grads[:2], on)
    assert "max_exp_avg_sq" not in opt.state[params[0]]
    opt.param_groups[0]["amsgrad"] = True
    run_steps(opt, params, grads[2:], on)
    full, by_hand = FULL[name]
    received = [g[0] for g in grads]
    expected, state = by_hand(starts[0], received, **full(dict(settings, amsgrad=True)), with_state=True,
                              amsgrad_from=3)
    np.testing.assert_allclose(host(params[0].data), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(host(opt.state[params[0]]["max_exp_avg_sq"]), state["max_exp_avg_sq"], rtol=1e-12)
    # The premise: it is neither amsgrad never on nor amsgrad on from the first step.
    assert not np.allclose(by_hand(starts[0], received, **full(settings)), expected)
    assert not np.allclose(by_hand(starts[0], received, **full(dict(settings, amsgrad=True))), expected)


def test_opt_state_is_a_live_read_only_view(on):
    """Reads follow the optimizer through steps and loads; writes, which a copy would silently
    drop, are refused with the ways that work."""
    w, b = (mg.Tensor(on(np.ones(n)), requires_grad=True) for n in (2, 3))
    opt = optim.Adam([w, b], lr=0.1)
    state, of_w = opt.state, opt.state[w]  # taken before any step
    assert len(state) == 0 and w not in state and state.get(w) is None and len(of_w) == 0
    w.grad = on(np.full(2, 2.0))
    opt.step()
    assert list(state) == [w] and of_w["step"] == 1 and state.get(w)["step"] == 1
    assert b not in state and dict(state[b]) == {}  # never updated: empty, as torch's defaultdict gives
    opt.step()
    assert of_w["step"] == 2
    for write, kind, message in [
        (lambda: of_w.__setitem__("step", 0), TypeError,
         r"Adam.state\[p\] is a read-only view; expected its arrays edited in place"),
        (lambda: of_w.pop("exp_avg"), TypeError, r"Adam.state\[p\] is a read-only view"),
        (lambda: state.__setitem__(w, {}), TypeError, r"Adam.state is a read-only view; .*load_state_dict"),
        (lambda: state.__delitem__(w), TypeError, r"Adam.state is a read-only view"),
        (lambda: state.clear(), TypeError, r"Adam.state is a read-only view"),
        (lambda: setattr(opt, "state", {}), AttributeError, r"Adam.state cannot be assigned; expected its arrays"),
        (lambda: state[0], KeyError,
         r"Adam.state: got the key 0; expected a parameter Tensor \(state_dict\(\) numbers.*'state.0.<field>'"),
    ]:
        with pytest.raises(kind, match=message):
            write()
    assert of_w["step"] == 2 and list(state) == [w]  # nothing changed
    m = of_w["exp_avg"]
    m[...] = 0.0  # in place: the optimizer's own array
    np.testing.assert_array_equal(host(opt.state_dict()["state.0.exp_avg"]), [0.0, 0.0])
    # The way the message gives to clear the state: load the dict without its "state." keys.
    opt.load_state_dict({k: v for k, v in opt.state_dict().items() if not k.startswith("state.")})
    assert len(state) == 0 and len(of_w) == 0
    start = host(w.data).copy()
    opt.step()  # a first update again: bias correction from t = 1
    assert of_w["step"] == 1
    np.testing.assert_allclose(host(w.data), hand_adam(start, [np.full(2, 2.0)], **full_adam(dict(lr=0.1))),
                               rtol=1e-12)
