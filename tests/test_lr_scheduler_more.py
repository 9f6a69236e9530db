"""PolynomialLR, CosineAnnealingWarmRestarts, CyclicLR and ChainedScheduler: rates (and momenta)
against the policies written out here, step for step against torch.optim.lr_scheduler when torch
is present, checkpoints through nn.save/nn.load, and clear errors for bad arguments."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest

import minigraph as mg
from minigraph import nn, optim
from minigraph.optim import lr_scheduler
from minigraph.optim.lr_scheduler import (ChainedScheduler, CosineAnnealingWarmRestarts, CyclicLR, ExponentialLR,
                                          LinearLR, OneCycleLR, PolynomialLR, ReduceLROnPlateau, SequentialLR,
                                          StepLR)

BASE_LRS = (0.1, 0.4)  # two parameter groups
STEPS = 40


def sgd(params, momentum=0.9):
    """SGD over two groups with the rates BASE_LRS."""
    return optim.SGD([{"params": params[:1]}, {"params": params[1:], "lr": BASE_LRS[1]}], lr=BASE_LRS[0],
                     momentum=momentum)


def adam(params):
    return optim.Adam([{"params": params[:1]}, {"params": params[1:], "lr": BASE_LRS[1]}], lr=BASE_LRS[0],
                      betas=(0.9, 0.99))


def leaves():
    return [mg.Tensor(np.zeros(3), requires_grad=True), mg.Tensor(np.zeros(2), requires_grad=True)]


class Plain(optim.Optimizer):
    """An optimizer with neither momentum nor betas."""
    _hyperparameters = {"lr": optim.SGD._hyperparameters["lr"]}

    def __init__(self, params):
        super().__init__(params, dict(lr=0.1))


# --- the policies, written out -----------------------------------------------------------------
def polynomial(base, epoch, total, power):
    return base * (1 - min(epoch, total) / total) ** power


def warm_restarts(base, epoch, T_0, T_mult, eta_min):
    """Lay the periods T_0, T_0·T_mult, ... end to end; find the one holding `epoch`."""
    lengths = T_0 * np.float64(T_mult) ** np.arange(64)
    ends = np.cumsum(lengths)
    n = int(np.searchsorted(ends, epoch, side="right"))
    start = ends[n - 1] if n else 0.0
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * (epoch - start) / lengths[n])) / 2


def triangle(t, up, down):
    """Fraction of the climb at step t: 0 → 1 over `up` steps, 1 → 0 over `down`, repeating."""
    p = t % (up + down)
    return p / up if p <= up else 1 - (p - up) / down


def cyclic(low, high, t, up, down, scale):
    """(lr, fraction of the way from max to base momentum) at step t; scale(t) scales the climb."""
    f = triangle(t, up, down) * scale(t)
    return low + (high - low) * f, f


CYCLIC = {  # name: (arguments after the optimizer, up, down, scale of the step)
    "triangular": (dict(base_lr=0.01, max_lr=[0.1, 0.3], step_size_up=4, step_size_down=6), 4, 6, lambda t: 1.0),
    "triangular2": (dict(base_lr=[0.01, 0.02], max_lr=0.2, step_size_up=3, mode="triangular2"), 3, 3,
                    lambda t: 0.5 ** (t // 6)),
    "exp_range": (dict(base_lr=0.01, max_lr=0.1, step_size_up=5, mode="exp_range", gamma=0.97), 5, 5,
                  lambda t: 0.97 ** t),
    "scale_fn by cycle": (dict(base_lr=0.01, max_lr=0.1, step_size_up=2, step_size_down=3,
                               scale_fn=lambda c: 1 / c), 2, 3, lambda t: 1 / (1 + t // 5)),
    "scale_fn by step, no way down": (dict(base_lr=0.02, max_lr=0.1, step_size_up=4, step_size_down=0,
                                           scale_fn=lambda t: 1 / (1 + t), scale_mode="iterations"), 4, 0,
                                      lambda t: 1 / (1 + t)),
}


def rates(opt):
    return [group["lr"] for group in opt.param_groups]


@pytest.mark.parametrize("total,power", [(5, 1.0), (12, 2.5), (7, 0.5), (3, 0.0)])
def test_polynomial_follows_its_closed_form(total, power):
    opt = sgd(leaves())
    scheduler = PolynomialLR(opt, total_iters=total, power=power)
    for epoch in range(STEPS):
        if epoch:
            opt.step()
            scheduler.step()
        expected = [polynomial(base, epoch, total, power) for base in BASE_LRS]
        np.testing.assert_allclose(scheduler.get_last_lr(), expected, rtol=1e-12, atol=1e-300, err_msg=str(epoch))
        assert rates(opt) == scheduler.get_last_lr() and scheduler.last_epoch == epoch


@pytest.mark.parametrize("T_0,T_mult,eta_min", [(5, 1, 0.0), (3, 2, 0.01), (1, 3, 0.0), (1, 10, 0.005)])
def test_warm_restarts_follow_the_closed_form_by_step_and_by_epoch(T_0, T_mult, eta_min):
    opt = sgd(leaves())
    scheduler = CosineAnnealingWarmRestarts(opt, T_0=T_0, T_mult=T_mult, eta_min=eta_min)
    jumped = CosineAnnealingWarmRestarts(sgd(leaves()), T_0=T_0, T_mult=T_mult, eta_min=eta_min)
    for epoch in range(150):
        if epoch:
            scheduler.step()
            jumped.step(epoch)
        expected = [warm_restarts(base, epoch, T_0, T_mult, eta_min) for base in BASE_LRS]
        np.testing.assert_allclose(scheduler.get_last_lr(), expected, rtol=1e-12, err_msg=str(epoch))
        np.testing.assert_allclose(jumped.get_last_lr(), expected, rtol=1e-12, err_msg=str(epoch))
        assert scheduler.last_epoch == jumped.last_epoch == epoch and rates(opt) == scheduler.get_last_lr()


def test_warm_restarts_step_with_a_fractional_epoch_per_batch():
    """scheduler.step(epoch + i / batches) after batch i anneals within epochs; last_epoch is ⌊epoch⌋,
    and a later step() moves one epoch on from wherever the last one left T_cur."""
    opt = sgd(leaves())
    scheduler = CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2, eta_min=0.001)
    batches = 4
    for epoch in range(9):
        for i in range(batches):
            opt.step()
            scheduler.step(epoch + i / batches)
            expected = [warm_restarts(base, epoch + i / batches, 2, 2, 0.001) for base in BASE_LRS]
            np.testing.assert_allclose(rates(opt), expected, rtol=1e-12, err_msg=f"{epoch} {i}")
            assert scheduler.last_epoch == epoch
    scheduler.step(2.5)
    scheduler.step()  # T_cur 0.5 + 1 in the period [2, 6)
    assert scheduler.last_epoch == 3 and scheduler.T_cur == 1.5 and scheduler.T_i == 4
    np.testing.assert_allclose(rates(opt), [warm_restarts(base, 3.5, 2, 2, 0.001) for base in BASE_LRS], rtol=1e-12)


@pytest.mark.parametrize("name", CYCLIC)
@pytest.mark.parametrize("make_optimizer", [sgd, adam])
def test_cyclic_follows_its_policy_with_the_momentum_against_it(name, make_optimizer):
    arguments, up, down, scale = CYCLIC[name]
    opt = make_optimizer(leaves())
    scheduler = CyclicLR(opt, **arguments, base_momentum=[0.8, 0.7], max_momentum=0.95)
    low = lr_scheduler._per_group("test", "base_lr", arguments["base_lr"], 2, lambda o, n, v: v)
    high = lr_scheduler._per_group("test", "max_lr", arguments["max_lr"], 2, lambda o, n, v: v)
    for t in range(STEPS):
        if t:
            opt.step()
            scheduler.step()
        for g, group in enumerate(opt.param_groups):
            lr, f = cyclic(low[g], high[g], t, up, down, scale)
            momentum = 0.95 - (0.95 - (0.8, 0.7)[g]) * f
            assert group["lr"] == pytest.approx(lr, rel=1e-12, abs=1e-15), (t, g)
            got = group["betas"][0] if "betas" in group else group["momentum"]
            assert got == pytest.approx(momentum, rel=1e-12), (t, g)
        if "betas" in opt.param_groups[0]:
            assert opt.param_groups[0]["betas"][1] == 0.99  # the second beta is left alone
    assert scheduler.base_lrs == low and [group["initial_lr"] for group in opt.param_groups] == low


def test_cyclic_built_after_another_scheduler_starts_at_its_base_lr_and_keeps_initial_lr():
    """initial_lr set by an earlier scheduler stays (a SequentialLR resets the rates to it, as
    PyTorch's); the cycle still starts at base_lr (where PyTorch's first rate is initial_lr)."""
    opt = sgd(leaves())
    warmup = LinearLR(opt, start_factor=0.5, total_iters=2)
    cyclic = CyclicLR(opt, base_lr=0.01, max_lr=0.05, step_size_up=2)
    assert cyclic.get_last_lr() == rates(opt) == [0.01, 0.01] and cyclic.base_lrs == [0.01, 0.01]
    assert [group["initial_lr"] for group in opt.param_groups] == list(BASE_LRS)
    SequentialLR(opt, [warmup, cyclic], milestones=[2])
    assert rates(opt) == [0.5 * base for base in BASE_LRS]


def test_cyclic_without_momentum_cycling_leaves_the_momentum_alone():
    opt = sgd(leaves(), momentum=0.5)
    scheduler = CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=3, cycle_momentum=False)
    for t in range(1, 10):
        scheduler.step()
        assert rates(opt) == pytest.approx([0.01 + 0.09 * triangle(t, 3, 3)] * 2, rel=1e-12)
    assert [group["momentum"] for group in opt.param_groups] == [0.5, 0.5]
    CyclicLR(Plain(leaves()), base_lr=0.01, max_lr=0.1, cycle_momentum=False)  # fine without momentum
    with pytest.raises(ValueError, match=r"CyclicLR: got cycle_momentum=True for Plain, which has neither momentum "
                                         r"nor betas; expected an optimizer with one \(SGD, Adam\), or "
                                         r"cycle_momentum=False"):
        CyclicLR(Plain(leaves()), base_lr=0.01, max_lr=0.1)


def test_chained_applies_each_scheduler_to_the_rates_the_one_before_left():
    opt = sgd(leaves())
    scheduler = ChainedScheduler([LinearLR(opt, start_factor=0.2, total_iters=4), ExponentialLR(opt, gamma=0.9),
                                  StepLR(opt, step_size=5, gamma=0.5)])
    for epoch in range(STEPS):
        if epoch:
            opt.step()
            scheduler.step()
        warmup = 0.2 + 0.8 * min(epoch, 4) / 4
        expected = [base * warmup * 0.9 ** epoch * 0.5 ** (epoch // 5) for base in BASE_LRS]
        np.testing.assert_allclose(scheduler.get_last_lr(), expected, rtol=1e-12, err_msg=str(epoch))
        assert rates(opt) == scheduler.get_last_lr()


def test_chained_nests_and_runs_a_sequence_and_a_cycle():
    opt = sgd(leaves())
    inner = SequentialLR(opt, [LinearLR(opt, start_factor=0.5, total_iters=2), PolynomialLR(opt, total_iters=6)], [2])
    scheduler = ChainedScheduler([ChainedScheduler([inner]), ExponentialLR(opt, gamma=0.8)], optimizer=opt)
    for epoch in range(1, 12):
        scheduler.step()
        # At the milestone the sequence restarts PolynomialLR from the base rates, dropping the
        # decay so far (as in PyTorch); ExponentialLR's factor then counts from there.
        if epoch < 2:
            factor = (0.5 + 0.5 * epoch / 2) * 0.8 ** epoch
        else:
            factor = polynomial(1.0, epoch - 2, 6, 1.0) * 0.8 ** (epoch - 1)
        np.testing.assert_allclose(rates(opt), [base * factor for base in BASE_LRS], rtol=1e-12,
                                   atol=1e-300, err_msg=str(epoch))


def test_new_schedulers_run_inside_sequential_from_their_epoch_0():
    opt = sgd(leaves())
    scheduler = SequentialLR(opt, [CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2), PolynomialLR(opt, 4, 2.0),
                                   CyclicLR(opt, base_lr=0.01, max_lr=0.05, step_size_up=2)], milestones=[5, 9])
    for epoch in range(1, 16):
        scheduler.step()
        if epoch < 5:
            expected = [warm_restarts(base, epoch, 2, 2, 0.0) for base in BASE_LRS]
        elif epoch < 9:
            expected = [polynomial(base, epoch - 5, 4, 2.0) for base in BASE_LRS]
        else:
            expected = [0.01 + 0.04 * triangle(epoch - 9, 2, 2)] * 2
        np.testing.assert_allclose(rates(opt), expected, rtol=1e-12, atol=1e-300, err_msg=str(epoch))
    with pytest.raises(ValueError, match=r"SequentialLR: schedulers\[1\] is a ChainedScheduler; expected a "
                                         r"scheduler stepped without arguments and not itself a SequentialLR or "
                                         r"ChainedScheduler"):
        SequentialLR(opt, [StepLR(opt, 2), ChainedScheduler([StepLR(opt, 3)])], [2])


def test_last_epoch_resumes_each_schedule_where_it_was():
    """last_epoch=k builds the scheduler as if k steps had passed and moves to step k + 1, as
    PyTorch's: from there the rates are the uninterrupted run's. The groups hold initial_lr, and
    the rate of step k + 1, which PolynomialLR's recursive form keeps at construction."""
    makers = [functools.partial(PolynomialLR, total_iters=9, power=2.0),
              functools.partial(CosineAnnealingWarmRestarts, T_0=2, T_mult=3),
              functools.partial(CyclicLR, base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=2)]
    for make in makers:
        for k in (0, 4, 10):
            opt = sgd(leaves())
            whole = make(opt)
            seen = [rates(opt)]
            for _ in range(k + 8):
                whole.step()
                seen.append(rates(opt))
            opt = sgd(leaves())
            make(opt)
            for group, rate in zip(opt.param_groups, seen[k + 1]):
                group["lr"] = rate
            resumed = make(opt, last_epoch=k)
            assert resumed.last_epoch == k + 1
            got = [rates(opt)]
            for _ in range(7):
                resumed.step()
                got.append(rates(opt))
            np.testing.assert_allclose(got, seen[k + 1:], rtol=1e-12, atol=1e-300, err_msg=f"{make} {k}")


# --- step for step against torch ---------------------------------------------------------------
TORCH_CASES = {  # name: (build with the scheduler module m on the optimizer o, fractional epochs or None)
    "PolynomialLR": (lambda m, o: m.PolynomialLR(o, total_iters=7, power=2.5), None),
    "PolynomialLR default": (lambda m, o: m.PolynomialLR(o), None),
    "CosineAnnealingWarmRestarts": (lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=5, eta_min=0.01), None),
    "CosineAnnealingWarmRestarts T_mult": (lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2), None),
    "CosineAnnealingWarmRestarts fractional": (lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2),
                                               [e / 3 for e in range(0, 150, 2)] + [2.5, None, None, 40.25, None]),
    "CosineAnnealingWarmRestarts T_mult=1 fractional": (
        lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=4, eta_min=0.02), [0.3, 1.7, 5.5, None, 9.0, 30.1, None]),
    "CosineAnnealingWarmRestarts last_epoch": (lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=6, T_mult=2,
                                                                                          last_epoch=3), None),
    "PolynomialLR last_epoch": (lambda m, o: m.PolynomialLR(o, total_iters=9, power=2.0, last_epoch=4), None),
    "CyclicLR last_epoch": (lambda m, o: m.CyclicLR(o, list(BASE_LRS), 1.0, step_size_up=3, last_epoch=5), None),
    "CyclicLR triangular": (lambda m, o: m.CyclicLR(o, 0.01, [0.1, 0.3], step_size_up=4, step_size_down=6), None),
    "CyclicLR triangular2": (lambda m, o: m.CyclicLR(o, [0.01, 0.02], 0.2, step_size_up=3, mode="triangular2"),
                             None),
    "CyclicLR exp_range": (lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=5, mode="exp_range", gamma=0.97,
                                                   base_momentum=[0.7, 0.8], max_momentum=0.95), None),
    "CyclicLR scale_fn": (lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=2.5, scale_fn=lambda x: 1 / (1 + x),
                                                  scale_mode="iterations"), None),
    "CyclicLR no momentum": (lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=3, cycle_momentum=False), None),
    "ChainedScheduler": (lambda m, o: m.ChainedScheduler([m.LinearLR(o, start_factor=0.2, total_iters=4),
                                                          m.ExponentialLR(o, 0.9), m.PolynomialLR(o, 30, 2.0)]), None),
    "ChainedScheduler cycle": (lambda m, o: m.ChainedScheduler([m.CyclicLR(o, 0.01, 0.1, step_size_up=3),
                                                                m.ExponentialLR(o, 0.95)], optimizer=o), None),
    "SequentialLR warm-up then CyclicLR": (lambda m, o: m.SequentialLR(o, [
        m.LinearLR(o, start_factor=0.25, total_iters=4), m.CyclicLR(o, 0.01, 0.1, step_size_up=3)], [4]), None),
    "SequentialLR of new ones": (lambda m, o: m.SequentialLR(o, [
        m.CosineAnnealingWarmRestarts(o, 3, 2), m.PolynomialLR(o, 10, 2.0),
        m.CyclicLR(o, 0.01, 0.1, step_size_up=3)], [7, 15]), None),
}


@pytest.mark.parametrize("name", TORCH_CASES)
@pytest.mark.parametrize("kind", ["SGD", "Adam"])
def test_the_rates_and_momenta_match_torch_step_for_step(name, kind):
    torch = pytest.importorskip("torch")
    build, epochs = TORCH_CASES[name]
    ours = getattr(optim, kind)([{"params": leaves()[:1]}, {"params": leaves()[1:], "lr": BASE_LRS[1]}],
                                lr=BASE_LRS[0], **({"momentum": 0.9} if kind == "SGD" else {}))
    tensors = [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    theirs = getattr(torch.optim, kind)([{"params": tensors[:1]}, {"params": tensors[1:], "lr": BASE_LRS[1]}],
                                        lr=BASE_LRS[0], **({"momentum": 0.9} if kind == "SGD" else {}))
    if "last_epoch" in name:  # resuming: the groups hold initial_lr
        for group in (*ours.param_groups, *theirs.param_groups):
            group["initial_lr"] = group["lr"]
    key = "momentum" if kind == "SGD" else "betas"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's warnings on step(epoch) and stepping without training
        scheduler, reference = build(lr_scheduler, ours), build(torch.optim.lr_scheduler, theirs)
        for epoch in [*(epochs or [None] * STEPS)]:
            ours.step(), theirs.step()
            if epoch is None:
                scheduler.step(), reference.step()
            else:
                scheduler.step(epoch), reference.step(epoch)
            assert scheduler.get_last_lr() == pytest.approx(reference.get_last_lr(), rel=1e-13, abs=1e-300)
            assert rates(ours) == pytest.approx(rates(theirs), rel=1e-13, abs=1e-300)
            for mine, torchs in zip(ours.param_groups, theirs.param_groups):
                assert mine[key] == pytest.approx(torchs[key], rel=1e-13)
            if hasattr(reference, "last_epoch") and not isinstance(scheduler, lr_scheduler.SequentialLR):
                assert scheduler.last_epoch == reference.last_epoch


def test_warm_restarts_counts_restarts_exactly_where_torchs_logarithm_rounds_down():
    """PyTorch finds the period of step(epoch) with int(log(...)), which lands one period short
    at T_mult=10, epoch 111 (log 1000 / log 10 < 3): its rate is eta_min where the restart is."""
    scheduler = CosineAnnealingWarmRestarts(sgd(leaves()), T_0=1, T_mult=10)
    scheduler.step(111)
    assert (scheduler.T_cur, scheduler.T_i) == (0, 1000) and scheduler.get_last_lr() == list(BASE_LRS)
    assert int(math.log(111 / 1 * (10 - 1) + 1, 10)) == 2  # the rounding PyTorch meets


# --- checkpoints -------------------------------------------------------------------------------
def model(seed):
    return nn.Sequential(nn.Linear(4, 3, rng=seed, dtype=np.float64), nn.Tanh(),
                         nn.Linear(3, 2, rng=seed + 1, dtype=np.float64))


def train(net, opt, scheduler, batches, seen):
    for x, y in batches:
        opt.zero_grad()
        nn.MSELoss()(net(mg.Tensor(x)), mg.Tensor(y)).backward()
        opt.step()
        scheduler.step()
        seen.append((scheduler.get_last_lr(), [(g["lr"], g["momentum"]) for g in opt.param_groups]))


def halve(c):
    return 0.5 ** c


RESUMABLE = {  # name: (build on an optimizer, build with other settings that load_state_dict overwrites)
    "PolynomialLR": (lambda o: PolynomialLR(o, total_iters=9, power=1.5), lambda o: PolynomialLR(o, 3)),
    "CosineAnnealingWarmRestarts": (lambda o: CosineAnnealingWarmRestarts(o, T_0=2, T_mult=2, eta_min=0.01),
                                    lambda o: CosineAnnealingWarmRestarts(o, T_0=7)),
    "CyclicLR": (lambda o: CyclicLR(o, [0.01, 0.02], 0.2, step_size_up=3, step_size_down=2, mode="exp_range",
                                    gamma=0.9, base_momentum=[0.6, 0.7]),
                 lambda o: CyclicLR(o, 0.5, 0.9, step_size_up=10, cycle_momentum=False)),
    "CyclicLR scale_fn": (lambda o: CyclicLR(o, 0.01, 0.2, step_size_up=2, scale_fn=halve),
                          lambda o: CyclicLR(o, 0.3, 0.4, step_size_up=5, scale_fn=halve, scale_mode="iterations")),
    "ChainedScheduler": (lambda o: ChainedScheduler([CosineAnnealingWarmRestarts(o, T_0=3), ExponentialLR(o, 0.9)]),
                         lambda o: ChainedScheduler([CosineAnnealingWarmRestarts(o, T_0=8), ExponentialLR(o, 0.5)])),
}


@pytest.mark.parametrize("name", RESUMABLE)
def test_a_run_resumed_through_nn_save_and_load_equals_the_uninterrupted_run_bitwise(resume_from_files, name):
    """A step per batch; checkpoint after 7, then a fresh model, optimizer (other rates, momentum)
    and scheduler (other settings) load the files and carry on."""
    build, build_other = RESUMABLE[name]
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(6, 4)), rng.normal(size=(6, 2))) for _ in range(16)]
    whole, whole_seen = model(0), []
    opt = sgd(list(whole.parameters()))
    train(whole, opt, build(opt), batches, whole_seen)

    net, seen = model(0), []
    opt = sgd(list(net.parameters()))
    scheduler = build(opt)
    train(net, opt, scheduler, batches[:7], seen)
    resumed, opt, scheduler = resume_from_files(net, opt, scheduler, model, build_other)
    assert scheduler.get_last_lr() == seen[-1][0]
    train(resumed, opt, scheduler, batches[7:], seen)
    assert seen == whole_seen
    for (key, expected), got in zip(whole.state_dict().items(), resumed.state_dict().values()):
        np.testing.assert_array_equal(got, expected, err_msg=key)


def test_the_state_dicts_are_flat_arrays_with_the_policy():
    opt = sgd(leaves())
    cyclic = CyclicLR(opt, 0.01, [0.1, 0.2], step_size_up=3, step_size_down=1, mode="triangular2")
    saved = cyclic.state_dict()
    assert all(type(value) is np.ndarray for value in saved.values())
    assert saved["total_size"] == 4.0 and saved["step_ratio"] == 0.75 and saved["mode"] == 1
    assert saved["max_lrs"].tolist() == [0.1, 0.2] and saved["base_lrs"].tolist() == [0.01, 0.01]
    assert not saved["custom_scale_fn"] and not saved["scale_by_iterations"] and saved["cycle_momentum"]
    restarts = CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=3)
    restarts.step(4.5)
    saved = restarts.state_dict()
    assert (saved["T_0"], saved["T_mult"], saved["T_i"], saved["T_cur"], saved["last_epoch"]) == (2, 3, 6, 2.5, 4)
    chain = ChainedScheduler([PolynomialLR(opt), StepLR(opt, 2)])
    assert sorted(chain.state_dict()) == sorted(["last_lr", *(f"schedulers.0.{key}" for key in PolynomialLR(
        opt).state_dict()), *(f"schedulers.1.{key}" for key in StepLR(opt, 2).state_dict())])


def test_bad_states_are_refused_by_name_and_nothing_is_loaded():
    opt = sgd(leaves())
    plain = CyclicLR(opt, 0.01, 0.1, step_size_up=3)
    custom = CyclicLR(opt, 0.01, 0.1, step_size_up=3, scale_fn=halve)
    saved, before = plain.state_dict(), custom.state_dict()
    with pytest.raises(ValueError, match=r"CyclicLR.load_state_dict: the state was saved without a scale_fn but "
                                         r"this scheduler was built with one"):
        custom.load_state_dict(saved)
    with pytest.raises(ValueError, match=r"CyclicLR.load_state_dict: the state was saved with a scale_fn but "
                                         r"this scheduler was built without one"):
        plain.load_state_dict(before)
    with pytest.raises(ValueError, match=r"CyclicLR.load_state_dict: got mode=3; expected an integer \[0, 3\)"):
        plain.load_state_dict(dict(saved, mode=3))
    with pytest.raises(ValueError, match=r"CyclicLR.load_state_dict: got step_ratio=1.5"):
        plain.load_state_dict(dict(saved, step_ratio=1.5, last_epoch=np.array(9)))
    assert plain.last_epoch == 0 and {k: v.tolist() for k, v in custom.state_dict().items()} == \
        {k: v.tolist() for k, v in before.items()}

    restarts = CosineAnnealingWarmRestarts(opt, T_0=3)
    with pytest.raises(ValueError, match=r"CosineAnnealingWarmRestarts.load_state_dict: got T_cur=-1.0"):
        restarts.load_state_dict(dict(restarts.state_dict(), T_cur=-1.0, T_i=np.array(6)))
    assert restarts.T_i == 3

    first, second = StepLR(opt, 2), PolynomialLR(opt)
    chain = ChainedScheduler([first, second])
    chain.step()
    state = chain.state_dict()
    chain.step()
    with pytest.raises(ValueError, match=r"ChainedScheduler.load_state_dict: missing keys \[\], unexpected keys "
                                         r"\['schedulers.2.last_epoch'\]"):
        chain.load_state_dict(dict(state, **{"schedulers.2.last_epoch": np.array(1)}))
    with pytest.raises(ValueError, match=r"PolynomialLR.load_state_dict: got total_iters=0"):
        chain.load_state_dict(dict(state, **{"schedulers.1.total_iters": 0}))
    assert first.last_epoch == second.last_epoch == 2  # the first scheduler's part was put back
    with pytest.raises(TypeError, match=r"ChainedScheduler.load_state_dict: got a list; expected a mapping"):
        chain.load_state_dict([])


# --- refusals ----------------------------------------------------------------------------------
def opt_():
    return sgd(leaves())


BAD_ARGUMENTS = [
    (lambda: PolynomialLR(opt_(), total_iters=0), ValueError, r"PolynomialLR: got total_iters=0; expected an "
                                                              r"integer >= 1"),
    (lambda: PolynomialLR(opt_(), power=-1.0), ValueError, r"PolynomialLR: got power=-1.0; expected a finite number "
                                                           r"in \[0.0, inf\), e.g. power=2.0"),
    (lambda: PolynomialLR("opt"), TypeError, r"PolynomialLR: got a str; expected an optimizer"),
    (lambda: CosineAnnealingWarmRestarts(opt_(), T_0=0), ValueError, r"CosineAnnealingWarmRestarts: got T_0=0; "
                                                                     r"expected an integer >= 1"),
    (lambda: CosineAnnealingWarmRestarts(opt_(), T_0=2.5), ValueError, r"got T_0=2.5; expected an integer >= 1"),
    (lambda: CosineAnnealingWarmRestarts(opt_(), T_0=5, T_mult=0), ValueError, r"got T_mult=0; expected an integer"),
    (lambda: CosineAnnealingWarmRestarts(opt_(), T_0=5, eta_min=-0.1), ValueError, r"got eta_min=-0.1"),
    (lambda: CosineAnnealingWarmRestarts(opt_(), T_0=5, last_epoch=-2), ValueError,
     r"CosineAnnealingWarmRestarts: got last_epoch=-2; expected an integer >= -1"),
    (lambda: CosineAnnealingWarmRestarts(opt_(), T_0=5).step(-1), ValueError,
     r"CosineAnnealingWarmRestarts.step: got epoch=-1; expected a finite number in \[0.0, inf\), e.g. step\(2.5\)"),
    (lambda: CosineAnnealingWarmRestarts(opt_(), T_0=5).step(math.nan), ValueError, r"got epoch=nan"),
    (lambda: CyclicLR(opt_(), base_lr=-0.1, max_lr=0.1), ValueError, r"CyclicLR: got base_lr=-0.1"),
    (lambda: CyclicLR(opt_(), base_lr=0.1, max_lr=[0.1, 0.2, 0.3]), ValueError,
     r"CyclicLR: got 3 values of max_lr for 2 parameter groups; expected one per group, or one number for all"),
    (lambda: CyclicLR(opt_(), 0.01, 0.1, step_size_up=0), ValueError, r"CyclicLR: got step_size_up=0; expected a "
                                                                      r"finite number in \(0.0, inf\)"),
    (lambda: CyclicLR(opt_(), 0.01, 0.1, step_size_down=-1), ValueError, r"got step_size_down=-1"),
    (lambda: CyclicLR(opt_(), 0.01, 0.1, mode="triangle"), ValueError,
     r"CyclicLR: got mode='triangle'; expected one of \['triangular', 'triangular2', 'exp_range'\]"),
    (lambda: CyclicLR(opt_(), 0.01, 0.1, scale_mode="cycles", scale_fn=halve), ValueError,
     r"CyclicLR: got scale_mode='cycles'; expected 'cycle' or 'iterations'"),
    (lambda: CyclicLR(opt_(), 0.01, 0.1, scale_fn=0.5), TypeError, r"CyclicLR: scale_fn is a float; expected None or "
                                                                   r"a function"),
    (lambda: CyclicLR(opt_(), 0.01, 0.1, gamma=-1.0), ValueError, r"CyclicLR: got gamma=-1.0"),
    (lambda: CyclicLR(opt_(), 0.01, 0.1, max_momentum=1.5), ValueError, r"CyclicLR: got max_momentum=1.5"),
    (lambda: CyclicLR(opt_(), 0.01, 0.1, cycle_momentum="yes"), TypeError, r"CyclicLR: got cycle_momentum='yes'; "
                                                                           r"expected True or False"),
    (lambda: CyclicLR(adam(leaves()), 0.01, 0.1, max_momentum=1.0), ValueError,
     r"Adam: got param_groups\[0\]\['betas'\]\[0\]=1.0; expected a finite number in \[0.0, 1.0\)"),
    (lambda: ChainedScheduler([]), TypeError, r"ChainedScheduler: got schedulers=\[\]; expected a non-empty list"),
    (lambda: ChainedScheduler([StepLR(opt_(), 2), "StepLR"]), TypeError,
     r"ChainedScheduler: schedulers\[1\] is a str; expected a learning-rate scheduler"),
    (lambda: ChainedScheduler([ReduceLROnPlateau(opt_())]), ValueError,
     r"ChainedScheduler: schedulers\[0\] is a ReduceLROnPlateau, whose step needs a metric"),
    (lambda: ChainedScheduler([StepLR(opt_(), 2), StepLR(opt_(), 2)]), ValueError,
     r"ChainedScheduler: schedulers\[1\] \(StepLR\) was built on another optimizer"),
    (lambda: ChainedScheduler([StepLR(opt_(), 2)], optimizer=opt_()), ValueError,
     r"ChainedScheduler: schedulers\[0\] \(StepLR\) was built on another optimizer"),
    (lambda: ChainedScheduler([StepLR(opt_(), 2)], optimizer="opt"), TypeError,
     r"ChainedScheduler: got a str; expected an optimizer"),
]


@pytest.mark.parametrize("make,error,message", BAD_ARGUMENTS)
def test_bad_arguments_are_refused_by_name(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_a_scheduler_listed_twice_or_built_before_a_group_was_added_is_refused():
    opt = opt_()
    step = StepLR(opt, 2)
    with pytest.raises(ValueError, match=r"ChainedScheduler: schedulers\[1\] \(StepLR\) is listed twice"):
        ChainedScheduler([step, step])
    opt.add_param_group({"params": [mg.Tensor(np.zeros(1), requires_grad=True)]})
    with pytest.raises(ValueError, match=r"ChainedScheduler: schedulers\[0\] \(StepLR\) was built for 2 parameter "
                                         r"groups but the optimizer has 3"):
        ChainedScheduler([step])


def test_a_failing_step_changes_nothing():
    """A bad rate, a scale_fn's bad factor, a momentum Adam refuses, or (in a chain) a later
    scheduler's refusal: the rates, momenta and every scheduler's position stay as they were."""
    opt = opt_()
    chain = ChainedScheduler([ExponentialLR(opt, 0.5), CyclicLR(opt, 0.01, 0.1, step_size_up=2),
                              OneCycleLR(opt, max_lr=0.3, total_steps=3, cycle_momentum=False)])
    for _ in range(3):
        chain.step()
    groups, states = [dict(group) for group in opt.param_groups], [s.state_dict() for s in chain._schedulers]
    with pytest.raises(ValueError, match=r"OneCycleLR: stepped 4 times, but total_steps is 3"):
        chain.step()
    assert [dict(group) for group in opt.param_groups] == groups and chain.get_last_lr() == rates(opt)
    assert [{k: v.tolist() for k, v in s.state_dict().items()} for s in chain._schedulers] == \
        [{k: v.tolist() for k, v in state.items()} for state in states]

    opt = opt_()
    cyclic = CyclicLR(opt, 0.01, 0.1, step_size_up=2, scale_fn=lambda c: math.inf if c > 1 else 1.0)
    for _ in range(3):
        cyclic.step()
    lrs, momenta = rates(opt), [group["momentum"] for group in opt.param_groups]
    with pytest.raises(ValueError, match=r"CyclicLR.step \(epoch 4\): got scale_fn\(2\)=inf"):
        cyclic.step()
    assert rates(opt) == lrs and [group["momentum"] for group in opt.param_groups] == momenta
    assert cyclic.last_epoch == 3

    opt = opt_()
    cyclic = CyclicLR(opt, 0.1, 0.01, step_size_up=3, scale_fn=lambda x: 2.0 if x > 3 else 1.0,
                      scale_mode="iterations")
    for _ in range(3):
        cyclic.step()
    lrs, momenta = rates(opt), [group["momentum"] for group in opt.param_groups]
    with pytest.raises(ValueError, match=r"CyclicLR.step \(epoch 4\): got param_groups\[0\]\['lr'\]=-0.0200"):
        cyclic.step()  # the climb doubled past the base: a negative rate
    assert rates(opt) == lrs and [group["momentum"] for group in opt.param_groups] == momenta

    opt = adam(leaves())
    cyclic = CyclicLR(opt, 0.01, 0.1, step_size_up=3, scale_fn=lambda x: -1.0 if x > 3 else 1.0,
                      scale_mode="iterations", max_momentum=0.95, base_momentum=0.85)
    for _ in range(3):
        cyclic.step()
    betas = [group["betas"] for group in opt.param_groups]
    with pytest.raises(ValueError, match=r"CyclicLR.step \(epoch 4\): got param_groups\[0\]\['betas'\]\[0\]="):
        cyclic.step()  # momentum 0.95 + 0.1 · 1: Adam's first beta must stay below 1
    assert [group["betas"] for group in opt.param_groups] == betas and cyclic.last_epoch == 3

    opt = opt_()
    restarts = CosineAnnealingWarmRestarts(opt, T_0=3)
    restarts.step(1.5)
    opt.add_param_group({"params": [mg.Tensor(np.zeros(1), requires_grad=True)]})
    with pytest.raises(ValueError, match=r"CosineAnnealingWarmRestarts: the optimizer has 3 parameter groups"):
        restarts.step(7.25)
    assert (restarts.last_epoch, restarts.T_cur, restarts.T_i) == (1, 1.5, 3)


def test_exp_range_with_a_growing_gamma_overflows_with_a_clear_error():
    opt = opt_()
    cyclic = CyclicLR(opt, 0.01, 0.1, step_size_up=1, mode="exp_range", gamma=1e10, cycle_momentum=False)
    for _ in range(30):
        cyclic.step()  # up to 0.09 · 1e10^29 above the base: finite
    with pytest.raises(ValueError, match=r"CyclicLR.step \(epoch 31\): gamma \*\* 31 overflows with "
                                         r"gamma=10000000000.0; expected gamma <= 1"):
        cyclic.step()
    assert cyclic.last_epoch == 30


def test_triangular2_keeps_halving_past_a_thousand_cycles():
    """1 / 2^(c − 1) written as such overflows at cycle 1026 (PyTorch's raises OverflowError there)."""
    opt = opt_()
    CyclicLR(opt, 0.01, 0.1, step_size_up=1, mode="triangular2")
    cyclic = CyclicLR(opt, 0.01, 0.1, step_size_up=1, mode="triangular2", last_epoch=2060)
    assert cyclic.last_epoch == 2061 and cyclic.scale_fn(1031) == 0.5 ** 1030 > 0
    cyclic.step()
