"""minigraph.optim.lr_scheduler: rates against the closed forms written out here (and against
torch.optim.lr_scheduler when torch is present), the optimizer stepping with them, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minigraph as mg
from minigraph import nn, optim
from minigraph.backend import to_device
from minigraph.optim import lr_scheduler
from minigraph.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, LambdaLR, MultiStepLR, StepLR

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


@pytest.mark.parametrize("name", SCHEDULES)
def test_a_run_resumed_with_the_scheduler_state_equals_the_uninterrupted_run_bitwise(tmp_path, name):
    """An epoch per batch; checkpoint after 5, then a fresh optimizer (other rates) and a fresh
    scheduler (other settings, except LambdaLR's functions, which are not saved) load the state."""
    kind, arguments, _, other_arguments = SCHEDULES[name]
    rng = np.random.default_rng(0)
    data = [(rng.normal(size=(6, 4)), rng.normal(size=(6, 2))) for _ in range(12)]
    whole, whole_rates = model(0), []
    opt = two_groups(list(whole.parameters()), momentum=0.9)
    train(whole, opt, kind(opt, **arguments), data, whole_rates)

    net, rates = model(0), []
    opt = two_groups(list(net.parameters()), momentum=0.9)
    scheduler = kind(opt, **arguments)
    train(net, opt, scheduler, data[:5], rates)
    nn.save(net, tmp_path / "model.npz")
    nn.save(opt.state_dict(), tmp_path / "opt.npz")
    nn.save(scheduler.state_dict(), tmp_path / "scheduler.npz")
    resumed = model(10)
    resumed.load_state_dict(nn.load(tmp_path / "model.npz"))
    params = list(resumed.parameters())
    opt = optim.SGD([{"params": params[:1], "lr": 1.0}, {"params": params[1:]}], lr=2.0, momentum=0.5)
    scheduler = kind(opt, **(other_arguments or arguments))
    opt.load_state_dict(nn.load(tmp_path / "opt.npz"))  # after building the scheduler, as in PyTorch
    scheduler.load_state_dict(nn.load(tmp_path / "scheduler.npz"))
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
    (lambda d: d.update(last_epoch=np.array(-1)), ValueError,
     r"StepLR.load_state_dict: got last_epoch=array\(-1\); expected an integer >= 0"),
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
