"""minigraph.optim.lr_scheduler: rates against the closed forms written out here (and against
torch.optim.lr_scheduler when torch is present), the optimizer stepping with them, checkpoints."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

import minigraph as mg
from minigraph import nn, optim
from minigraph.backend import to_device
from minigraph.optim import lr_scheduler
from minigraph.optim.lr_scheduler import (CosineAnnealingLR, ExponentialLR, LambdaLR, LinearLR, MultiStepLR,
                                          OneCycleLR, ReduceLROnPlateau, SequentialLR, StepLR)

BASE_LRS = (0.1, 0.4)  # two parameter groups
EPOCHS = 30


def cosine(base, epoch, T_max, eta_min=0.0):
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * epoch / T_max)) / 2


SCHEDULES = {  # name: (arguments after the optimizer, closed form of (base lr, group, epoch), other arguments)
    "StepLR(3, 0.5)": (StepLR, dict(step_size=3, gamma=0.5), lambda base, g, e: base * 0.5 ** (e // 3),
                       dict(step_size=1, gamma=0.9)),
    "StepLR(7)": (StepLR, dict(step_size=7), lambda base, g, e: base * 0.1 ** (e // 7), dict(step_size=2)),
    "MultiStepLR unsorted, repeated": (
        MultiStepLR, dict(milestones=[12, 4, 20, 20], gamma=0.3),
        lambda base, g, e: base * 0.3 ** sum(m <= e for m in (4, 12, 20, 20)), dict(milestones=[1])),
    "ExponentialLR(0.9)": (ExponentialLR, dict(gamma=0.9), lambda base, g, e: base * 0.9 ** e, dict(gamma=0.5)),
    "CosineAnnealingLR(10)": (CosineAnnealingLR, dict(T_max=10), lambda base, g, e: cosine(base, e, 10),
                              dict(T_max=3, eta_min=0.05)),
    "CosineAnnealingLR(7, 0.01)": (CosineAnnealingLR, dict(T_max=7, eta_min=0.01),
                                   lambda base, g, e: cosine(base, e, 7, 0.01), dict(T_max=20)),
    "LinearLR()": (LinearLR, {}, lambda base, g, e: base * (1 / 3 + (2 / 3) * min(e, 5) / 5),
                   dict(start_factor=0.5, total_iters=2)),
    "LinearLR(down)": (LinearLR, dict(start_factor=1.0, end_factor=0.1, total_iters=12),
                       lambda base, g, e: base * (1.0 - 0.9 * min(e, 12) / 12), dict(total_iters=3)),
    "LambdaLR(one function)": (LambdaLR, dict(lr_lambda=lambda e: 1 / (e + 1)),
                               lambda base, g, e: base / (e + 1), None),
    "LambdaLR(one per group)": (LambdaLR, dict(lr_lambda=[lambda e: 0.95 ** e, lambda e: min(1.0, (e + 1) / 5)]),
                                lambda base, g, e: base * (0.95 ** e if g == 0 else min(1.0, (e + 1) / 5)), None),
}


def two_groups(params, momentum=0.0):
    """SGD over two groups of `params` with the rates BASE_LRS."""
    return optim.SGD([{"params": params[:1]}, {"params": params[1:], "lr": BASE_LRS[1]}], lr=BASE_LRS[0],
                     momentum=momentum)


def leaves(on=lambda a: a):
    return [mg.Tensor(on(np.zeros(3)), requires_grad=True), mg.Tensor(on(np.zeros(2)), requires_grad=True)]


@pytest.mark.parametrize("name", SCHEDULES)
def test_the_rates_follow_the_closed_form_for_thirty_epochs(name):
    kind, arguments, closed_form, _ = SCHEDULES[name]
    opt = two_groups(leaves())
    scheduler = kind(opt, **arguments)
    for epoch in range(EPOCHS + 1):
        if epoch:
            opt.step()
            scheduler.step()
        expected = [closed_form(base, g, epoch) for g, base in enumerate(BASE_LRS)]
        assert scheduler.last_epoch == epoch
        np.testing.assert_allclose(scheduler.get_last_lr(), expected, rtol=1e-12, atol=1e-15, err_msg=str(epoch))
        assert [group["lr"] for group in opt.param_groups] == scheduler.get_last_lr()
    assert scheduler.base_lrs == list(BASE_LRS)
    assert [group["initial_lr"] for group in opt.param_groups] == list(BASE_LRS)


@pytest.mark.parametrize("name", SCHEDULES)
def test_the_rates_match_torch_lr_scheduler(name):
    """torch's recursive forms, step by step (the closed-form test above needs no torch)."""
    torch = pytest.importorskip("torch")
    kind, arguments, _, _ = SCHEDULES[name]
    opt = two_groups(leaves())
    scheduler = kind(opt, **arguments)
    tensors = [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    torch_opt = torch.optim.SGD([{"params": tensors[:1]}, {"params": tensors[1:], "lr": BASE_LRS[1]}],
                                lr=BASE_LRS[0])
    torch_scheduler = getattr(torch.optim.lr_scheduler, kind.__name__)(torch_opt, **arguments)
    ours, theirs = [scheduler.get_last_lr()], [torch_scheduler.get_last_lr()]
    for _ in range(EPOCHS):
        opt.step(), torch_opt.step()
        scheduler.step(), torch_scheduler.step()
        ours.append(scheduler.get_last_lr())
        theirs.append(torch_scheduler.get_last_lr())
    np.testing.assert_allclose(ours, theirs, rtol=1e-14, atol=1e-16)


def test_the_optimizer_steps_with_the_scheduled_rates(on, device):
    """With a constant gradient and plain SGD, each parameter moves by (sum of its group's rates) · g."""
    params = leaves(on)
    opt = two_groups(params)
    scheduler = CosineAnnealingLR(opt, T_max=4, eta_min=0.01)
    grads = [np.array([1.0, -2.0, 0.5]), np.array([3.0, 1.0])]
    epochs = 6
    for _ in range(epochs):
        for p, g in zip(params, grads):
            p.grad = on(g)
        opt.step()
        scheduler.step()
    for p, g, base in zip(params, grads, BASE_LRS):
        rates = sum(cosine(base, e, 4, 0.01) for e in range(epochs))
        assert p.device == device
        np.testing.assert_allclose(to_device(p.data, "cpu"), -rates * g, rtol=1e-12)


def test_two_schedulers_compose_as_in_pytorch():
    """The recursive forms scale the current rate, so a second scheduler (or a change by hand)
    carries on; the second one takes the first's initial_lr as its base rates."""
    opt = two_groups(leaves())
    exponential, step = ExponentialLR(opt, gamma=0.9), StepLR(opt, step_size=4, gamma=0.5)
    assert step.base_lrs == list(BASE_LRS)
    for epoch in range(1, 13):
        opt.step()
        exponential.step()
        step.step()
        expected = [base * 0.9 ** epoch * 0.5 ** (epoch // 4) for base in BASE_LRS]
        np.testing.assert_allclose([g["lr"] for g in opt.param_groups], expected, rtol=1e-12)
    opt.param_groups[0]["lr"] *= 0.1  # by hand: the next step scales this rate
    exponential.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(BASE_LRS[0] * 0.9 ** 12 * 0.5 ** 3 * 0.1 * 0.9, rel=1e-12)
    late = StepLR(opt, step_size=100)  # built mid-run: its base rates are still the initial ones
    assert late.base_lrs == list(BASE_LRS) != [g["lr"] for g in opt.param_groups]


def test_the_module_answers_to_pytorchs_import_paths():
    import minigraph.optim.lr_scheduler as imported

    assert imported is lr_scheduler is optim.lr_scheduler
    assert imported.StepLR is StepLR and issubclass(StepLR, imported.LRScheduler)


# --- checkpoints --------------------------------------------------------------------------------
def train(net, opt, scheduler, data, rates):
    for x, y in data:
        opt.zero_grad()
        nn.MSELoss()(net(mg.Tensor(x)), mg.Tensor(y)).backward()
        opt.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr())


def model(seed):
    return nn.Sequential(nn.Linear(4, 3, rng=seed, dtype=np.float64), nn.ReLU(),
                         nn.Linear(3, 2, rng=seed + 1, dtype=np.float64))


def warmup_then(opt, T_max=6, milestone=4, m=lr_scheduler):
    """A linear warm-up, then cosine annealing, with the scheduler classes of module `m` (ours or torch's)."""
    return m.SequentialLR(opt, [m.LinearLR(opt, start_factor=0.2, total_iters=milestone),
                                m.CosineAnnealingLR(opt, T_max=T_max, eta_min=0.01)], milestones=[milestone])


# name: (build on an optimizer, build with other settings, which load_state_dict must overwrite)
RESUMABLE = {name: (functools.partial(kind, **arguments), functools.partial(kind, **(other or arguments)))
             for name, (kind, arguments, _, other) in SCHEDULES.items()}
RESUMABLE.update({
    "OneCycleLR": (functools.partial(OneCycleLR, max_lr=[0.5, 0.2], total_steps=12),
                   functools.partial(OneCycleLR, max_lr=0.9, total_steps=40, pct_start=0.5, anneal_strategy="linear",
                                     three_phase=True, cycle_momentum=False, base_momentum=0.5, div_factor=3.0)),
    "SequentialLR": (warmup_then, functools.partial(warmup_then, T_max=20, milestone=2)),
})


@pytest.mark.parametrize("name", RESUMABLE)
def test_a_run_resumed_with_the_scheduler_state_equals_the_uninterrupted_run_bitwise(resume_from_files, name):
    """An epoch per batch; checkpoint after 5, then a fresh optimizer (other rates) and a fresh
    scheduler (other settings, except LambdaLR's functions, which are not saved) load the state."""
    build, build_other = RESUMABLE[name]
    rng = np.random.default_rng(0)
    data = [(rng.normal(size=(6, 4)), rng.normal(size=(6, 2))) for _ in range(12)]
    whole, whole_rates = model(0), []
    opt = two_groups(list(whole.parameters()), momentum=0.9)
    train(whole, opt, build(opt), data, whole_rates)

    net, rates = model(0), []
    opt = two_groups(list(net.parameters()), momentum=0.9)
    scheduler = build(opt)
    train(net, opt, scheduler, data[:5], rates)
    resumed, opt, scheduler = resume_from_files(net, opt, scheduler, model, build_other)
    assert scheduler.get_last_lr() == rates[-1] and scheduler.last_epoch == 5
    train(resumed, opt, scheduler, data[5:], rates)
    assert rates == whole_rates
    for (key, expected), got in zip(whole.state_dict().items(), resumed.state_dict().values()):
        np.testing.assert_array_equal(got, expected, err_msg=key)


def test_the_keys_and_values_of_a_scheduler_state_dict():
    opt = two_groups(leaves())
    scheduler = MultiStepLR(opt, milestones=[3, 1, 3], gamma=0.5)
    for _ in range(2):
        scheduler.step()
    saved = scheduler.state_dict()
    assert list(saved) == ["last_epoch", "base_lrs", "last_lr", "milestones", "gamma"]
    assert all(type(value) is np.ndarray for value in saved.values())
    assert saved["last_epoch"] == 2 and saved["last_epoch"].dtype == np.int64
    np.testing.assert_array_equal(saved["base_lrs"], BASE_LRS)
    np.testing.assert_array_equal(saved["last_lr"], [base * 0.5 for base in BASE_LRS])
    np.testing.assert_array_equal(saved["milestones"], [1, 3, 3])  # a repeated milestone stays repeated
    lambdas = LambdaLR(two_groups(leaves()), lambda epoch: 1.0)
    assert list(lambdas.state_dict()) == ["last_epoch", "base_lrs", "last_lr"]  # functions are not saved


def fresh_and_trained():
    """A scheduler to load into (epoch 0) and the state of another at epoch 3 with other settings."""
    target = StepLR(two_groups(leaves()), step_size=2, gamma=0.5)
    source = StepLR(two_groups(leaves()), step_size=3, gamma=0.1)
    for _ in range(3):
        source.step()
    return target, source.state_dict()


@pytest.mark.parametrize("change,error,message", [
    (lambda d: d.update(extra=np.ones(2)), ValueError,
     r"StepLR.load_state_dict: missing keys \[\], unexpected keys \['extra'\]; expected \['last_epoch', "
     r"'base_lrs', 'last_lr', 'step_size', 'gamma'\]"),
    (lambda d: d.pop("gamma"), ValueError, r"missing keys \['gamma'\], unexpected keys \[\]"),
    (lambda d: d.update(milestones=np.array([1])), ValueError, r"unexpected keys \['milestones'\]"),
    (lambda d: d.update(base_lrs=np.array([0.1, 0.2, 0.3])), ValueError,
     r"StepLR.load_state_dict: 'base_lrs' has 3 rates but the optimizer has 2 parameter groups"),
    (lambda d: d.update(last_lr=np.array(0.1)), TypeError, r"'last_lr' is array\(0.1\); expected a 1-D array"),
    (lambda d: d.update(base_lrs=np.array([0.1, -0.2])), ValueError, r"got base_lrs\[1\]=-0.2"),
    (lambda d: d.update(last_epoch=np.array(-2)), ValueError,
     r"StepLR.load_state_dict: got last_epoch=array\(-2\); expected an integer >= -1"),
    (lambda d: d.update(step_size=np.array(0)), ValueError, r"got step_size=array\(0\); expected an integer >= 1"),
    (lambda d: d.update(gamma=np.array(np.nan)), ValueError, r"got gamma=array\(nan\); expected a finite number"),
])
def test_a_bad_scheduler_state_dict_is_refused_and_nothing_is_loaded(change, error, message):
    target, saved = fresh_and_trained()
    before, rates = target.state_dict(), [g["lr"] for g in target.optimizer.param_groups]
    change(saved)
    with pytest.raises(error, match=message):
        target.load_state_dict(saved)
    after = target.state_dict()
    assert list(after) == list(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    assert [g["lr"] for g in target.optimizer.param_groups] == rates
    with pytest.raises(TypeError, match=r"StepLR.load_state_dict: got a list; expected a mapping"):
        target.load_state_dict(list(saved.items()))


# --- arguments -------------------------------------------------------------------------------
@pytest.mark.parametrize("make,error,message", [
    (lambda opt: StepLR(opt, step_size=0), ValueError, r"StepLR: got step_size=0; expected an integer >= 1"),
    (lambda opt: StepLR(opt, step_size=2.5), ValueError, r"StepLR: got step_size=2.5"),
    (lambda opt: StepLR(opt, 2, gamma=-0.1), ValueError,
     r"StepLR: got gamma=-0.1; expected a finite number in \[0.0, inf\), e.g. gamma=0.1"),
    (lambda opt: ExponentialLR(opt, gamma="0.9"), ValueError, r"ExponentialLR: got gamma='0.9'"),
    (lambda opt: MultiStepLR(opt, milestones=5), TypeError,
     r"MultiStepLR: got milestones=5; expected a list of epochs such as \[30, 80\]"),
    (lambda opt: MultiStepLR(opt, milestones=[3, 1.5]), ValueError, r"MultiStepLR: got milestones\[1\]=1.5"),
    (lambda opt: MultiStepLR(opt, milestones=[-1]), ValueError, r"MultiStepLR: got milestones\[0\]=-1"),
    (lambda opt: CosineAnnealingLR(opt, T_max=0), ValueError, r"CosineAnnealingLR: got T_max=0"),
    (lambda opt: CosineAnnealingLR(opt, 5, eta_min=-1e-3), ValueError, r"CosineAnnealingLR: got eta_min=-0.001"),
    (lambda opt: LambdaLR(opt, lr_lambda=0.5), TypeError,
     r"LambdaLR: lr_lambda is a float; expected a function of the epoch"),
    (lambda opt: LambdaLR(opt, lr_lambda=[lambda e: 1.0]), ValueError,
     r"LambdaLR: got 1 lr_lambdas for 2 parameter groups; expected one per group"),
    (lambda opt: StepLR([opt], step_size=2), TypeError, r"StepLR: got a list; expected an optimizer"),
    (lambda opt: LambdaLR(None, lambda e: 1.0), TypeError, r"LambdaLR: got a NoneType; expected an optimizer"),
])
def test_bad_scheduler_arguments_are_refused_by_name(make, error, message):
    opt = two_groups(leaves())
    with pytest.raises(error, match=message):
        make(opt)
    assert [g["lr"] for g in opt.param_groups] == list(BASE_LRS)


def test_settings_assigned_later_are_checked_too():
    scheduler = StepLR(two_groups(leaves()), step_size=2)
    with pytest.raises(ValueError, match=r"StepLR: got gamma=-1"):
        scheduler.gamma = -1
    scheduler.gamma = np.array(0.5)  # a 0-d array, as nn.load gives back
    assert scheduler.gamma == 0.5 and type(scheduler.gamma) is float


@pytest.mark.parametrize("make,epoch,message", [
    (lambda opt: ExponentialLR(opt, gamma=1e200), 2,
     r"ExponentialLR.step \(epoch 2\): got param_groups\[0\]\['lr'\]=inf; expected a finite number"),
    (lambda opt: LambdaLR(opt, lambda e: 1.0 if e < 3 else -0.5), 3,
     r"LambdaLR.step \(epoch 3\): got lr_lambda\(3\)=-0.5; expected a finite number in \[0.0, inf\)"),
    (lambda opt: LambdaLR(opt, [lambda e: 1.0, lambda e: "x" if e == 1 else 1.0]), 1,
     r"LambdaLR.step \(epoch 1\): got lr_lambda\[1\]\(1\)='x'"),
])
def test_a_rate_the_optimizer_would_refuse_stops_the_step_and_changes_nothing(make, epoch, message):
    opt = two_groups(leaves())
    scheduler = make(opt)
    for _ in range(epoch - 1):
        scheduler.step()
    rates = [g["lr"] for g in opt.param_groups]
    with pytest.raises(ValueError, match=message):
        scheduler.step()
    assert scheduler.last_epoch == epoch - 1
    assert [g["lr"] for g in opt.param_groups] == rates == scheduler.get_last_lr()


def test_a_group_added_after_the_scheduler_is_refused_at_its_next_step():
    opt = two_groups(leaves())
    scheduler = StepLR(opt, step_size=2)
    opt.add_param_group({"params": [mg.Tensor(np.zeros(1), requires_grad=True)]})
    with pytest.raises(ValueError, match=r"StepLR: the optimizer has 3 parameter groups but this scheduler was "
                                         r"built for 2.*after the last add_param_group"):
        scheduler.step()
    assert scheduler.last_epoch == 0


# --- last_epoch --------------------------------------------------------------------------------
def test_last_epoch_resumes_a_schedule_from_the_groups_initial_lr():
    """PyTorch's rule: with last_epoch = k the groups must carry initial_lr (base rates) and the
    constructor steps once, to epoch k + 1, from the groups' current rates."""
    opt = two_groups(leaves())
    first = StepLR(opt, step_size=3, gamma=0.5)
    for _ in range(4):
        first.step()
    resumed = StepLR(opt, step_size=3, gamma=0.5, last_epoch=4)  # one more epoch: 5, no decay there
    assert resumed.last_epoch == 5 and resumed.base_lrs == list(BASE_LRS)
    for epoch in range(6, 10):
        resumed.step()
        np.testing.assert_allclose(resumed.get_last_lr(), [b * 0.5 ** (epoch // 3) for b in BASE_LRS], rtol=1e-12)
    # The recursive forms keep the current rate at construction instead of stepping past it.
    opt.param_groups[0]["lr"] = 0.02
    exponential = ExponentialLR(opt, gamma=0.5, last_epoch=9)
    assert exponential.last_epoch == 10 and opt.param_groups[0]["lr"] == 0.02
    exponential.step()
    assert opt.param_groups[0]["lr"] == 0.01
    lambdas = LambdaLR(opt, lambda e: 1 / e, last_epoch=3)  # LambdaLR's closed form at epoch 4
    assert lambdas.get_last_lr() == [b / 4 for b in BASE_LRS]
    fresh = two_groups(leaves())
    with pytest.raises(KeyError, match=r"ExponentialLR: got last_epoch=3 but param_groups\[0\] has no 'initial_lr'"):
        ExponentialLR(fresh, gamma=0.9, last_epoch=3)
    assert all("initial_lr" not in g for g in fresh.param_groups)
    with pytest.raises(ValueError, match=r"StepLR: got last_epoch=-2; expected an integer >= -1"):
        StepLR(fresh, step_size=2, last_epoch=-2)


@pytest.mark.parametrize("kind,arguments", [(StepLR, dict(step_size=3, gamma=0.5)), (LinearLR, {}),
                                            (CosineAnnealingLR, dict(T_max=5)), (ExponentialLR, dict(gamma=0.8))])
def test_last_epoch_matches_torch(kind, arguments):
    torch = pytest.importorskip("torch")
    opt = two_groups(leaves())
    tensors = [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    torch_opt = torch.optim.SGD([{"params": tensors[:1]}, {"params": tensors[1:], "lr": BASE_LRS[1]}],
                                lr=BASE_LRS[0])
    ours, theirs = kind(opt, **arguments), getattr(torch.optim.lr_scheduler, kind.__name__)(torch_opt, **arguments)
    for _ in range(3):
        torch_opt.step()
        ours.step(), theirs.step()
    ours = kind(opt, **arguments, last_epoch=3)
    theirs = getattr(torch.optim.lr_scheduler, kind.__name__)(torch_opt, **arguments, last_epoch=3)
    for _ in range(6):
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-14)
        torch_opt.step()
        ours.step(), theirs.step()


# --- OneCycleLR --------------------------------------------------------------------------------
def one_cycle_by_hand(max_lr, total, pct=0.3, div=25.0, final_div=1e4, cosine_anneal=True, three_phase=False,
                      momenta=(0.85, 0.95)):
    """Smith's 1cycle written out: (rate, momentum) at each step, phase by phase."""
    start, low = max_lr / div, max_lr / div / final_div
    base_m, max_m = momenta

    def anneal(a, b, t):
        return b + (a - b) * (1 + math.cos(math.pi * t)) / 2 if cosine_anneal else a + (b - a) * t

    up_end = pct * total - 1
    phases = ([(up_end, start, max_lr, max_m, base_m), (2 * pct * total - 2, max_lr, start, base_m, max_m),
               (total - 1, start, low, max_m, max_m)] if three_phase else
              [(up_end, start, max_lr, max_m, base_m), (total - 1, max_lr, low, base_m, max_m)])
    out = []
    for step in range(total):
        begin = 0.0
        for k, (end, lr_a, lr_b, m_a, m_b) in enumerate(phases):
            if step <= end or k == len(phases) - 1:
                t = (step - begin) / (end - begin)
                out.append((anneal(lr_a, lr_b, t), anneal(m_a, m_b, t)))
                break
            begin = end
    return out


@pytest.mark.parametrize("settings", [dict(), dict(anneal_strategy="linear"), dict(three_phase=True),
                                      dict(pct_start=0.5, div_factor=10.0, final_div_factor=100.0)])
@pytest.mark.parametrize("adam", [False, True])
def test_one_cycle_follows_the_policy_written_out(settings, adam):
    params = leaves()
    opt = optim.Adam(params, lr=1.0) if adam else optim.SGD(params, lr=1.0, momentum=0.5)
    scheduler = OneCycleLR(opt, max_lr=0.8, total_steps=20, **settings)
    expected = one_cycle_by_hand(0.8, 20, pct=settings.get("pct_start", 0.3), div=settings.get("div_factor", 25.0),
                                 final_div=settings.get("final_div_factor", 1e4),
                                 cosine_anneal=settings.get("anneal_strategy", "cos") == "cos",
                                 three_phase=settings.get("three_phase", False))
    for step, (rate, momentum) in enumerate(expected):
        if step:
            opt.step()
            scheduler.step()
        group = opt.param_groups[0]
        assert group["lr"] == pytest.approx(rate, rel=1e-12, abs=1e-15)
        assert (group["betas"][0] if adam else group["momentum"]) == pytest.approx(momentum, rel=1e-12)
    done = OneCycleLR(optim.SGD(leaves(), lr=0.1), max_lr=0.1, total_steps=19)
    for _ in range(19):
        done.step()
    with pytest.raises(ValueError, match=r"OneCycleLR: stepped 20 times, but total_steps is 19"):
        done.step()  # as PyTorch: the schedule has no step 20
    assert done.last_epoch == 19


@pytest.mark.parametrize("pct_start,total", [(1.0, 10), (0.1, 10), (1.0, 1)])
def test_one_cycle_phases_of_no_steps_sit_at_their_end_instead_of_dividing_by_zero(pct_start, total):
    """pct_start = 1 leaves the fall no steps, and pct_start·total_steps = 1 the rise: PyTorch
    divides by zero at the last step, or at construction."""
    opt = optim.SGD(leaves(), lr=1.0, momentum=0.5)
    scheduler = OneCycleLR(opt, max_lr=0.8, total_steps=total, pct_start=pct_start)
    rates = [scheduler.get_last_lr()[0]]
    for _ in range(total):
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    rise = int(pct_start * total) - 1  # the last step of the rise, at max_lr
    assert rates[rise] == pytest.approx(0.8, rel=1e-12)
    if pct_start == 1.0:
        assert rates[total] == pytest.approx(0.8 / 25 / 1e4, rel=1e-12)  # the fall's end: min_lr
    expected = one_cycle_by_hand(0.8, total, pct=pct_start) if rise > 0 else []
    for step, (rate, _) in enumerate(expected[:rise + 1]):
        assert rates[step] == pytest.approx(rate, rel=1e-12)


class Plain(optim.Optimizer):
    """An optimizer with neither momentum nor betas."""
    _hyperparameters = {"lr": optim.SGD._hyperparameters["lr"]}

    def __init__(self, params):
        super().__init__(params, dict(lr=0.1))


def test_one_cycle_per_group_settings_and_its_errors():
    opt = two_groups(leaves(), momentum=0.9)
    scheduler = OneCycleLR(opt, max_lr=[1.0, 0.5], epochs=2, steps_per_epoch=5, cycle_momentum=False)
    assert scheduler.total_steps == 10 and [g["momentum"] for g in opt.param_groups] == [0.9, 0.9]
    assert scheduler.get_last_lr() == pytest.approx([1.0 / 25, 0.5 / 25], rel=1e-14)
    with pytest.raises(ValueError, match=r"OneCycleLR: got total_steps=None with epochs=2 and steps_per_epoch=None"):
        OneCycleLR(two_groups(leaves()), max_lr=1.0, epochs=2)
    with pytest.raises(ValueError, match=r"OneCycleLR: got 3 values of max_lr for 2 parameter groups"):
        OneCycleLR(two_groups(leaves()), max_lr=[1.0, 2.0, 3.0], total_steps=5)
    with pytest.raises(ValueError, match=r"OneCycleLR: got anneal_strategy='cosine'; expected 'cos' or 'linear'"):
        OneCycleLR(two_groups(leaves()), max_lr=1.0, total_steps=5, anneal_strategy="cosine")

    with pytest.raises(ValueError, match=r"OneCycleLR: got cycle_momentum=True for Plain, which has neither"):
        OneCycleLR(Plain(leaves()), max_lr=1.0, total_steps=5)
    OneCycleLR(Plain(leaves()), max_lr=1.0, total_steps=5, cycle_momentum=False)  # fine without


@pytest.mark.parametrize("settings", [dict(), dict(three_phase=True, anneal_strategy="linear")])
def test_one_cycle_matches_torch(settings):
    torch = pytest.importorskip("torch")
    opt = optim.Adam(leaves(), lr=1.0, betas=(0.9, 0.99))
    ours = OneCycleLR(opt, max_lr=[0.3], total_steps=25, **settings)
    torch_opt = torch.optim.Adam([torch.zeros(3, requires_grad=True)], lr=1.0, betas=(0.9, 0.99))
    theirs = torch.optim.lr_scheduler.OneCycleLR(torch_opt, max_lr=[0.3], total_steps=25, **settings)
    for _ in range(24):
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-14)
        assert opt.param_groups[0]["betas"] == pytest.approx(torch_opt.param_groups[0]["betas"], rel=1e-14)
        torch_opt.step()
        ours.step(), theirs.step()


# --- ReduceLROnPlateau -------------------------------------------------------------------------
def test_reduce_on_plateau_waits_patience_epochs_then_reduces_and_cools_down():
    opt = two_groups(leaves())
    scheduler = ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1, min_lr=[0.0, 0.15])
    # epochs 1-2 improve; 3, 4, 5 do not (5 is the third bad epoch > patience 2: reduce);
    # 6 is the cooldown (not counted); 7, 8, 9 bad again: reduce at 9. A NaN is a bad epoch.
    metrics = [1.0, 0.9, 0.95, 0.9, np.float64(0.91), mg.Tensor(np.array(0.99)), 0.92, float("nan"), 0.93]
    reductions = {5: 1, 9: 2}
    for epoch, metric in enumerate(metrics, start=1):
        scheduler.step(metric)
        count = max((n for e, n in reductions.items() if e <= epoch), default=0)
        expected = [BASE_LRS[0] * 0.5 ** count, max(BASE_LRS[1] * 0.5 ** count, 0.15)]
        np.testing.assert_allclose(scheduler.get_last_lr(), expected, rtol=1e-12, err_msg=str(epoch))
        assert [g["lr"] for g in opt.param_groups] == scheduler.get_last_lr()
    assert scheduler.best == 0.9 and scheduler.last_epoch == 9
    # relative threshold: 0.9 · (1 − 0.2) = 0.72 must be beaten to count as better
    strict = ReduceLROnPlateau(two_groups(leaves()), threshold=0.2, patience=0)
    strict.step(0.9)
    strict.step(0.75)
    assert strict.get_last_lr() == [BASE_LRS[0] * 0.1, BASE_LRS[1] * 0.1]
    # max mode with an absolute threshold
    accuracy = ReduceLROnPlateau(two_groups(leaves()), mode="max", threshold=0.05, threshold_mode="abs", patience=0)
    accuracy.step(0.5)
    accuracy.step(0.56)  # better by more than 0.05
    assert accuracy.get_last_lr() == list(BASE_LRS)
    accuracy.step(0.6)  # better by only 0.04: a bad epoch, and patience 0
    assert accuracy.get_last_lr() == [BASE_LRS[0] * 0.1, BASE_LRS[1] * 0.1]


def test_reduce_on_plateau_state_round_trip_continues_identically(tmp_path):
    rng = np.random.default_rng(3)
    metrics = list(1 + 0.1 * rng.normal(size=30))
    whole = ReduceLROnPlateau(two_groups(leaves()), patience=1, cooldown=2, factor=0.7)
    rates = []
    for metric in metrics:
        whole.step(metric)
        rates.append(whole.get_last_lr())
    opt = two_groups(leaves())
    first = ReduceLROnPlateau(opt, patience=1, cooldown=2, factor=0.7)
    for metric in metrics[:12]:
        first.step(metric)
    nn.save(first.state_dict(), tmp_path / "plateau.npz")
    nn.save(opt.state_dict(), tmp_path / "opt.npz")
    opt = two_groups(leaves())
    opt.load_state_dict(nn.load(tmp_path / "opt.npz"))
    resumed = ReduceLROnPlateau(opt, mode="max", patience=9)  # other settings: the state restores them
    resumed.load_state_dict(nn.load(tmp_path / "plateau.npz"))
    assert resumed.mode == "min" and resumed.patience == 1
    for k, metric in enumerate(metrics[12:], start=12):
        resumed.step(metric)
        assert resumed.get_last_lr() == rates[k]
    assert len({tuple(r) for r in rates}) > 2  # it did reduce, more than once


def test_reduce_on_plateau_errors():
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau: got mode='minimum'; expected 'min' or 'max'"):
        ReduceLROnPlateau(two_groups(leaves()), mode="minimum")
    with pytest.raises(ValueError,
                       match=r"ReduceLROnPlateau: got factor=1.0; expected a finite number in \[0.0, 1.0\)"):
        ReduceLROnPlateau(two_groups(leaves()), factor=1.0)
    scheduler = ReduceLROnPlateau(two_groups(leaves()))
    with pytest.raises(TypeError,
                       match=r"ReduceLROnPlateau.step: got metrics=array\(\[1., 2.\]\); expected one number"):
        scheduler.step(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau.load_state_dict: missing keys \['best'"):
        scheduler.load_state_dict({k: v for k, v in scheduler.state_dict().items() if k != "best"})


def test_reduce_on_plateau_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    for settings in [dict(patience=2, factor=0.5), dict(mode="max", threshold_mode="abs", threshold=0.01, cooldown=2),
                     dict(patience=0, min_lr=0.05, eps=1e-3)]:
        opt = two_groups(leaves())
        torch_opt = torch.optim.SGD([{"params": [torch.zeros(3, requires_grad=True)]},
                                     {"params": [torch.zeros(2, requires_grad=True)], "lr": BASE_LRS[1]}],
                                    lr=BASE_LRS[0])
        ours = ReduceLROnPlateau(opt, **settings)
        theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_opt, **settings)
        for metric in 1 + 0.05 * rng.normal(size=40):
            ours.step(metric)
            theirs.step(metric)
            assert [g["lr"] for g in opt.param_groups] == pytest.approx([g["lr"] for g in torch_opt.param_groups],
                                                                          rel=1e-14)


def test_one_cycle_state_dict_carries_the_whole_policy():
    opt = two_groups(leaves(), momentum=0.9)
    scheduler = OneCycleLR(opt, max_lr=[0.5, 0.2], total_steps=10, three_phase=True, base_momentum=[0.8, 0.7])
    saved = scheduler.state_dict()
    assert all(type(value) is np.ndarray for value in saved.values())
    np.testing.assert_allclose(saved["max_lrs"], [0.5, 0.2])
    np.testing.assert_allclose(saved["min_lrs"], [0.5 / 25 / 1e4, 0.2 / 25 / 1e4])
    np.testing.assert_allclose(saved["base_momentums"], [0.8, 0.7])
    assert saved["three_phase"] and not saved["anneal_linear"] and saved["cycle_momentum"]
    bad = dict(saved, base_momentums=np.array([0.8, 1.5]))
    with pytest.raises(ValueError, match=r"OneCycleLR.load_state_dict: got base_momentums\[1\]=1.5"):
        scheduler.load_state_dict(bad)
    assert scheduler.state_dict()["base_momentums"].tolist() == [0.8, 0.7]  # nothing loaded
    plain = OneCycleLR(Plain(leaves()), max_lr=0.1, total_steps=10, cycle_momentum=False)
    one_group = {key: value[:1] if value.ndim else value for key, value in saved.items()}
    with pytest.raises(ValueError, match=r"OneCycleLR.load_state_dict: got cycle_momentum=True for Plain"):
        plain.load_state_dict(one_group)  # an optimizer without momentum cannot take a cycling policy
    assert not plain.cycle_momentum
    plain.load_state_dict(dict(one_group, cycle_momentum=np.array(False)))
    assert plain.three_phase and plain.max_lrs == [0.5] and plain.total_steps == 10


@pytest.mark.parametrize("kind,arguments", [(MultiStepLR, dict(milestones=[2, 5, 5])), (LambdaLR, dict(lr_lambda=
                                            lambda e: 0.9 ** e)), (OneCycleLR, dict(max_lr=[0.5, 0.3], total_steps=12)),
                                            (OneCycleLR, dict(max_lr=0.5, total_steps=12, three_phase=True))])
def test_last_epoch_of_the_other_schedulers_matches_torch(kind, arguments):
    """As test_last_epoch_matches_torch; the sibling without torch is the one-cycle test below."""
    test_last_epoch_matches_torch(kind, arguments)


def test_one_cycle_resumed_by_last_epoch_continues_the_policy_written_out():
    opt = optim.SGD(leaves(), lr=1.0, momentum=0.5)
    first = OneCycleLR(opt, max_lr=0.8, total_steps=20)
    for _ in range(6):
        first.step()
    opt.param_groups[0]["momentum"] = 0.3  # left alone by the resuming constructor until its step
    resumed = OneCycleLR(opt, max_lr=0.8, total_steps=20, last_epoch=6)
    expected = one_cycle_by_hand(0.8, 20)
    assert opt.param_groups[0]["initial_lr"] == pytest.approx(0.8 / 25, rel=1e-15)
    for step in range(7, 20):
        assert resumed.last_epoch == step
        assert opt.param_groups[0]["lr"] == pytest.approx(expected[step][0], rel=1e-12)
        assert opt.param_groups[0]["momentum"] == pytest.approx(expected[step][1], rel=1e-12)
        resumed.step()
    with pytest.raises(KeyError, match=r"OneCycleLR: got last_epoch=6 but param_groups\[0\] has no 'initial_lr'"):
        OneCycleLR(optim.SGD(leaves(), lr=1.0, momentum=0.5), max_lr=0.8, total_steps=20, last_epoch=6)


# --- SequentialLR ------------------------------------------------------------------------------
def linear_factor(e, start, total, end=1.0):
    return start + (end - start) * min(e, total) / total


SEQUENCES = {  # name: (build(m, opt) with the classes of module m, closed form of (base lr, epoch))
    "warm-up, then cosine": (lambda m, opt: warmup_then(opt, m=m),
                             lambda base, e: (base * linear_factor(e, 0.2, 4) if e < 4
                                              else cosine(base, e - 4, 6, 0.01))),
    "four, one from epoch 0": (
        lambda m, opt: m.SequentialLR(opt, [m.StepLR(opt, 2, 0.5), m.ExponentialLR(opt, 0.9),
                                            m.LinearLR(opt, 0.25, total_iters=2), m.MultiStepLR(opt, [0, 2, 2], 0.5)],
                                      milestones=[0, 3, 6]),
        lambda base, e: base * (0.9 ** e if e < 3 else linear_factor(e - 3, 0.25, 2) if e < 6 else
                                0.5 ** (3 if e - 6 >= 2 else 1))),
    "lambda, then one cycle": (  # OneCycleLR sets initial_lr: the rates LambdaLR took at its construction stay its base
        lambda m, opt: m.SequentialLR(opt, [m.LambdaLR(opt, lambda e: 1 / (e + 1)),
                                            m.OneCycleLR(opt, max_lr=1.0, total_steps=40, cycle_momentum=False)], [5]),
        lambda base, e: base / (e + 1) if e < 5 else one_cycle_by_hand(1.0, 40)[e - 5][0]),
}


@pytest.mark.parametrize("name", SEQUENCES)
def test_sequential_runs_each_scheduler_from_its_epoch_0_at_its_milestone(name):
    build, closed_form = SEQUENCES[name]
    opt = two_groups(leaves())
    scheduler = build(lr_scheduler, opt)
    for epoch in range(EPOCHS + 1):
        if epoch:
            opt.step()
            scheduler.step()
        expected = [closed_form(base, epoch) for base in BASE_LRS]
        assert scheduler.last_epoch == epoch
        np.testing.assert_allclose(scheduler.get_last_lr(), expected, rtol=1e-12, atol=1e-15, err_msg=str(epoch))
        assert [group["lr"] for group in opt.param_groups] == scheduler.get_last_lr()


@pytest.mark.parametrize("name", SEQUENCES)
def test_sequential_matches_torch(name):
    torch = pytest.importorskip("torch")
    build, _ = SEQUENCES[name]
    opt = two_groups(leaves())
    tensors = [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    torch_opt = torch.optim.SGD([{"params": tensors[:1]}, {"params": tensors[1:], "lr": BASE_LRS[1]}],
                                lr=BASE_LRS[0])
    ours, theirs = build(lr_scheduler, opt), build(torch.optim.lr_scheduler, torch_opt)
    for _ in range(EPOCHS):
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-14, atol=1e-17)
        opt.step(), torch_opt.step()
        ours.step(), theirs.step()
    np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-14, atol=1e-17)


def test_sequential_state_dict_round_trip_and_refusals():
    opt = two_groups(leaves())
    scheduler = warmup_then(opt)
    for _ in range(6):
        scheduler.step()
    saved = scheduler.state_dict()
    assert list(saved)[:3] == ["last_epoch", "last_lr", "milestones"]
    assert saved["schedulers.1.T_max"] == 6 and saved["schedulers.0.last_epoch"] == 3
    assert all(type(value) is np.ndarray for value in saved.values())
    target = warmup_then(two_groups(leaves()), T_max=9, milestone=2)
    before = target.state_dict()
    # the second scheduler's part is bad: the first one's, already loaded, is put back
    with pytest.raises(ValueError, match=r"CosineAnnealingLR.load_state_dict: got T_max=array\(0\)"):
        target.load_state_dict(dict(saved, **{"schedulers.1.T_max": np.array(0)}))
    with pytest.raises(ValueError, match=r"SequentialLR.load_state_dict: missing keys \[\], unexpected keys "
                                         r"\['schedulers.2.T_max'\]"):
        target.load_state_dict(dict(saved, **{"schedulers.2.T_max": np.array(3)}))
    with pytest.raises(ValueError, match=r"SequentialLR.load_state_dict: got 2 milestones for 2 schedulers"):
        target.load_state_dict(dict(saved, milestones=np.array([5, 2])))
    after = target.state_dict()
    assert list(after) == list(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    target.load_state_dict(saved)
    assert target.last_epoch == 6 and target._schedulers[1].T_max == 6


def test_sequential_resumes_from_a_checkpoint_taken_before_a_milestone(tmp_path):
    # The schedulers still waiting for their milestone save last_epoch=-1; the checkpoint must
    # load and continue exactly as the run that was not interrupted (closed form as the oracle).
    build, closed_form = SEQUENCES["four, one from epoch 0"]
    opt = two_groups(leaves())
    scheduler = build(lr_scheduler, opt)
    for _ in range(2):
        opt.step()
        scheduler.step()
    assert scheduler.state_dict()["schedulers.3.last_epoch"] == -1
    nn.save(scheduler.state_dict(), tmp_path / "scheduler.npz")
    resumed_opt = two_groups(leaves())
    resumed_opt.load_state_dict(opt.state_dict())
    resumed = build(lr_scheduler, resumed_opt)
    resumed.load_state_dict(nn.load(tmp_path / "scheduler.npz"))
    for epoch in range(3, EPOCHS + 1):
        resumed_opt.step()
        resumed.step()
        expected = [closed_form(base, epoch) for base in BASE_LRS]
        np.testing.assert_allclose(resumed.get_last_lr(), expected, rtol=1e-12, atol=1e-15, err_msg=str(epoch))


def test_sequential_refuses_bad_arguments_by_name():
    opt = two_groups(leaves())
    other = two_groups(leaves())
    linear, exponential = LinearLR(opt), ExponentialLR(opt, 0.9)
    nested, plateau, stepped = SequentialLR(opt, [StepLR(opt, 3)], []), ReduceLROnPlateau(opt), StepLR(opt, 2)
    foreign = StepLR(other, 2)
    cases = [
        (lambda: SequentialLR(opt, [], []), TypeError, r"SequentialLR: got schedulers=\[\]; expected a non-empty list"),
        (lambda: SequentialLR(opt, [linear, plateau], [2]), ValueError,
         r"SequentialLR: schedulers\[1\] is a ReduceLROnPlateau; expected a scheduler stepped without arguments"),
        (lambda: SequentialLR(opt, [linear, nested], [2]), ValueError,
         r"schedulers\[1\] is a SequentialLR"),
        (lambda: SequentialLR(opt, [linear, "cosine"], [2]), TypeError,
         r"SequentialLR: schedulers\[1\] is a str; expected a learning-rate scheduler"),
        (lambda: SequentialLR(opt, [linear, foreign], [2]), ValueError,
         r"SequentialLR: schedulers\[1\] \(StepLR\) was built on another optimizer"),
        (lambda: SequentialLR(opt, [linear, linear], [2]), ValueError, r"schedulers\[1\] \(LinearLR\) is listed twice"),
        (lambda: SequentialLR(opt, [linear, exponential], [2, 4]), ValueError,
         r"SequentialLR: got 2 milestones for 2 schedulers; expected one fewer milestone than schedulers"),
        (lambda: SequentialLR(opt, [linear, exponential, stepped], [4, 2]), ValueError,
         r"SequentialLR: got milestones=\[4, 2\]; expected them in increasing order"),
        (lambda: SequentialLR(opt, [linear, exponential], [-1]), ValueError, r"got milestones\[0\]=-1"),
        (lambda: SequentialLR(opt, [linear, exponential], 3), TypeError, r"got milestones=3; expected a list"),
        (lambda: SequentialLR(opt, [linear, exponential], [3], last_epoch=4), ValueError,
         r"SequentialLR: got last_epoch=4; expected -1 \(to resume, .*load_state_dict"),
        (lambda: SequentialLR([opt], [linear], []), TypeError, r"SequentialLR: got a list; expected an optimizer"),
    ]
    for make, error, message in cases:
        rates, epochs = [g["lr"] for g in opt.param_groups], [linear.last_epoch, exponential.last_epoch]
        with pytest.raises(error, match=message):
            make()
        assert [g["lr"] for g in opt.param_groups] == rates and [linear.last_epoch, exponential.last_epoch] == epochs
    opt.add_param_group({"params": [mg.Tensor(np.zeros(1), requires_grad=True)]})
    with pytest.raises(ValueError, match=r"SequentialLR: schedulers\[0\] \(LinearLR\) was built for 2 parameter "
                                         r"groups but the optimizer has 3"):
        SequentialLR(opt, [linear, exponential], [3])


def test_sequential_step_that_fails_changes_nothing():
    opt = two_groups(leaves())
    calls = []  # a factor that is fine at construction (called once per group) and negative at the milestone
    refusing = LambdaLR(opt, lambda e: calls.append(e) or (1.0 if len(calls) <= 2 else -1.0))
    scheduler = SequentialLR(opt, [ExponentialLR(opt, 0.5), refusing], milestones=[2])
    scheduler.step()
    rates = [g["lr"] for g in opt.param_groups]
    with pytest.raises(ValueError, match=r"LambdaLR.step \(epoch 0\): got lr_lambda\(0\)=-1.0"):
        scheduler.step()  # the milestone: LambdaLR's epoch 0 gives a negative factor
    assert scheduler.last_epoch == 1 and scheduler._schedulers[1].last_epoch == -1
    assert [g["lr"] for g in opt.param_groups] == rates == scheduler.get_last_lr()


# --- ReduceLROnPlateau: groups added later, metrics on the device --------------------------------
def test_reduce_on_plateau_covers_groups_added_later_with_one_min_lr():
    """As PyTorch: one min_lr number also holds for a group added after the scheduler; one per
    group must be extended by hand, else the step is refused before anything changes."""
    opt = two_groups(leaves())
    scheduler = ReduceLROnPlateau(opt, patience=0, min_lr=0.03)
    scheduler.step(1.0)
    opt.add_param_group({"params": [mg.Tensor(np.zeros(1), requires_grad=True)], "lr": 0.2})
    scheduler.step(2.0)  # a bad epoch, patience 0: every group reduced, the new one too
    assert scheduler.get_last_lr() == pytest.approx([0.03, 0.04, 0.03], rel=1e-15)
    per_group = ReduceLROnPlateau(two_groups(leaves()), patience=0, min_lr=[0.0, 0.01])
    per_group.optimizer.add_param_group({"params": [mg.Tensor(np.zeros(1), requires_grad=True)]})
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau.step: the optimizer has 3 parameter groups but "
                                         r"min_lr gives 2; expected one per group \(set scheduler.min_lrs"):
        per_group.step(1.0)
    assert per_group.last_epoch == 0 and per_group.best == math.inf
    per_group.min_lrs.append(0.0)
    per_group.step(1.0)
    assert per_group.best == 1.0
    saved = per_group.state_dict()
    assert saved["min_lr_per_group"] and not scheduler.state_dict()["min_lr_per_group"]


def test_reduce_on_plateau_with_groups_added_later_matches_torch():
    torch = pytest.importorskip("torch")
    opt = two_groups(leaves())
    torch_opt = torch.optim.SGD([{"params": [torch.zeros(3, requires_grad=True)]},
                                 {"params": [torch.zeros(2, requires_grad=True)], "lr": BASE_LRS[1]}], lr=BASE_LRS[0])
    ours, theirs = ReduceLROnPlateau(opt, patience=1, min_lr=0.01), \
        torch.optim.lr_scheduler.ReduceLROnPlateau(torch_opt, patience=1, min_lr=0.01)
    for epoch, metric in enumerate([1.0, 1.1, 1.2, 0.5, float("nan"), 0.6, float("inf"), 0.4, 0.45, 0.47]):
        if epoch == 3:
            opt.add_param_group({"params": [mg.Tensor(np.zeros(1), requires_grad=True)], "lr": 0.3})
            torch_opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "lr": 0.3})
        ours.step(metric)
        theirs.step(torch.tensor(metric, dtype=torch.float64))
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-15)
        assert ours.best == theirs.best and ours.num_bad_epochs == theirs.num_bad_epochs


def test_reduce_on_plateau_takes_metrics_on_the_device(on, device):
    """A 0-d array or a 0-d Tensor (a loss) on the test's device is read to the host, as
    PyTorch's float(metric); values checked against a run on Python floats."""
    losses = [1.0, 0.8, 0.85, 0.9, np.nan, 0.95, 0.7]
    opt, reference = two_groups(leaves(on)), ReduceLROnPlateau(two_groups(leaves()), patience=1)
    scheduler = ReduceLROnPlateau(opt, patience=1)
    for k, loss in enumerate(losses):
        metric = on(np.array(loss)) if k % 2 else (mg.Tensor(on(np.array([loss, 0.0])), requires_grad=True)[0] * 1.0)
        scheduler.step(metric)
        reference.step(loss)
        assert scheduler.get_last_lr() == reference.get_last_lr() and type(scheduler.best) is float
    assert scheduler.get_last_lr() != list(BASE_LRS)  # it did reduce
    with pytest.raises(TypeError, match=r"ReduceLROnPlateau.step: got metrics=.*; expected one number"):
        scheduler.step(mg.Tensor(on(np.array([0.5, 0.5]))))
