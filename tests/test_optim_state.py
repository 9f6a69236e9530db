"""Optimizer checkpoints: state_dict / load_state_dict of SGD and Adam, through nn.save / nn.load.

The reference for a resumed run is the same run left uninterrupted: with every piece of state
restored, the two must agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

import minigraph as mg
from minigraph import nn, optim
from minigraph.backend import to_device

MAKERS = {  # each with momentum/moments and weight decay, so every piece of state matters
    "SGD": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True),
    "Adam": lambda ps: optim.Adam(ps, lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
    "AdamW": lambda ps: optim.AdamW(ps, lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
}
# A fresh optimizer to load into: other hyperparameters, so that loading must restore them too.
FRESH = {
    "SGD": lambda ps: optim.SGD(ps, lr=1.0, momentum=0.5, dampening=0.5),
    "Adam": lambda ps: optim.Adam(ps, lr=0.5),
    "AdamW": lambda ps: optim.AdamW(ps, lr=0.5, weight_decay=0.0),
}


def in_two_groups(kind, first, rest, **settings):
    """`kind` over two groups: the first parameter with the settings `first`, the others with `rest`."""
    def make(params):
        params = list(params)
        return kind([{"params": params[:1], **first}, {"params": params[1:], **rest}], **settings)
    return make


# The same runs with two groups that differ in every hyperparameter: each group's values and
# each parameter's state (indexed over all groups) must come back.
MAKERS.update({
    "SGD in two groups": in_two_groups(optim.SGD, dict(lr=0.1, momentum=0.8),
                                       dict(weight_decay=0.1, nesterov=False),
                                       lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "Adam in two groups": in_two_groups(optim.Adam, dict(betas=(0.7, 0.9)), dict(lr=0.05, eps=1e-5),
                                        lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
    "AdamW in two groups": in_two_groups(optim.AdamW, dict(weight_decay=0.3), dict(lr=0.05),
                                         lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
})
# amsgrad's running maximum and maximize's flag are state and settings too.
MAKERS.update({
    "Adam with amsgrad": lambda ps: optim.Adam(ps, lr=0.02, betas=(0.8, 0.6), weight_decay=0.1, amsgrad=True),
    "SGD maximizing": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, maximize=True),
})
MAKERS["AdamW in two groups, one with amsgrad, one maximizing"] = in_two_groups(
    optim.AdamW, dict(amsgrad=True), dict(maximize=True), lr=0.02, betas=(0.8, 0.6), weight_decay=0.1)
FRESH.update({
    "Adam with amsgrad": lambda ps: optim.Adam(ps, lr=0.5),
    "SGD maximizing": lambda ps: optim.SGD(ps, lr=1.0, momentum=0.5),
    "AdamW in two groups, one with amsgrad, one maximizing": in_two_groups(optim.AdamW, {}, {}, lr=0.5),
})
FRESH.update({
    "SGD in two groups": in_two_groups(optim.SGD, {}, {}, lr=1.0, momentum=0.5, dampening=0.5),
    "Adam in two groups": in_two_groups(optim.Adam, {}, {}, lr=0.5),
    "AdamW in two groups": in_two_groups(optim.AdamW, {}, {}, lr=0.5, weight_decay=0.0),
})


def host(array):
    return to_device(array, "cpu")


def model(seed: int) -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6, rng=seed), nn.ReLU(), nn.Linear(6, 2, rng=seed + 1))


def batches(count: int):
    rng = np.random.default_rng(7)
    return [(rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5, 2)).astype(np.float32))
            for _ in range(count)]


def train(net, opt, data) -> None:
    for x, y in data:
        opt.zero_grad()
        nn.MSELoss()(net(mg.Tensor(x)), mg.Tensor(y)).backward()
        opt.step()


def resumed_run(name, tmp_path, data, split, load_optimizer=True):
    """Train `split` steps, checkpoint model and optimizer to disk, load both into a fresh model
    (other initial weights) and a fresh optimizer (other hyperparameters), train the rest."""
    net = model(0)
    opt = MAKERS[name](net.parameters())
    train(net, opt, data[:split])
    nn.save(net, tmp_path / "model.npz")
    nn.save(opt.state_dict(), tmp_path / "opt.npz")
    resumed = model(10)
    resumed.load_state_dict(nn.load(tmp_path / "model.npz"))
    if load_optimizer:
        resumed_opt = FRESH[name](resumed.parameters())
        resumed_opt.load_state_dict(nn.load(tmp_path / "opt.npz"))
    else:
        resumed_opt = MAKERS[name](resumed.parameters())
    train(resumed, resumed_opt, data[split:])
    return resumed


@pytest.mark.parametrize("name", MAKERS)
def test_a_run_resumed_from_a_checkpoint_equals_the_uninterrupted_run_bitwise(device, tmp_path, name):
    data = batches(6)
    whole = model(0)
    train(whole, MAKERS[name](whole.parameters()), data)
    resumed = resumed_run(name, tmp_path, data, split=3)
    for (key, expected), got in zip(whole.state_dict().items(), resumed.state_dict().values()):
        np.testing.assert_array_equal(got, expected, err_msg=key)
    assert all(p.device == device for p in resumed.parameters())


@pytest.mark.parametrize("name", MAKERS)
def test_without_the_optimizer_state_the_resumed_run_departs(device, tmp_path, name):
    """The premise of the test above: restarting the state changes the result, so it can fail."""
    data = batches(6)
    whole = model(0)
    train(whole, MAKERS[name](whole.parameters()), data)
    resumed = resumed_run(name, tmp_path, data, split=3, load_optimizer=False)
    assert not np.array_equal(resumed.state_dict()["0.weight"], whole.state_dict()["0.weight"])


def hand_run(name, on, grads_per_step, split=None, tmp_path=None):
    """Parameters [trained, first given a gradient late, frozen], stepped with the given gradients
    (None: no gradient that step); with `split`, checkpointed to disk after that many steps and
    resumed in a fresh optimizer over fresh copies of the parameters."""
    rng = np.random.default_rng(3)
    params = [mg.Tensor(on(rng.normal(size=(3, 2))), requires_grad=True),
              mg.Tensor(on(rng.normal(size=(2,))), requires_grad=True),
              mg.Tensor(on(rng.normal(size=(2, 2))))]
    opt = MAKERS[name](params)
    for step, grads in enumerate(grads_per_step):
        if step == split:
            nn.save(opt.state_dict(), tmp_path / "opt.npz")
            params = [mg.Tensor(on(host(p.data).copy()), requires_grad=p.requires_grad) for p in params]
            opt = FRESH[name](params)
            opt.load_state_dict(nn.load(tmp_path / "opt.npz"))
        for p, g in zip(params, grads):
            p.grad = None if g is None else on(g)
        opt.step()
    return opt, [host(p.data) for p in params]


@pytest.mark.parametrize("name", MAKERS)
def test_parameters_not_yet_updated_and_frozen_ones_round_trip(on, tmp_path, name):
    """A parameter without a gradient before the checkpoint has no saved state and starts its own
    at its first update after the resume (Adam's bias correction from t=1); a frozen one stays."""
    rng = np.random.default_rng(5)
    grads = [[rng.normal(size=(3, 2)), None if step < 3 else rng.normal(size=(2,)), None]
             for step in range(6)]
    opt, before_checkpoint = hand_run(name, on, grads[:3])
    assert {key.split(".")[1] for key in opt.state_dict() if key.startswith("state.")} == {"0"}
    _, whole = hand_run(name, on, grads)
    _, resumed = hand_run(name, on, grads, split=3, tmp_path=tmp_path)
    for expected, got in zip(whole, resumed):
        np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(whole[1], before_checkpoint[1])  # it did train after the resume
    np.testing.assert_array_equal(whole[2], before_checkpoint[2])  # the frozen one never moved


def test_the_keys_and_values_of_a_state_dict(on):
    """Host copies, as Module.state_dict gives: NumPy arrays that later steps leave unchanged."""
    w = mg.Tensor(on(np.ones((3, 2), dtype=np.float32)), requires_grad=True)
    adam = optim.Adam([w, mg.Tensor(on(np.ones(2)), requires_grad=True)], lr=0.1, betas=(0.8, 0.9))
    w.grad = on(np.full((3, 2), 0.5, dtype=np.float32))
    adam.step()
    saved = adam.state_dict()
    assert list(saved) == ["param_groups.0.params", "param_groups.0.lr", "param_groups.0.betas",
                           "param_groups.0.eps", "param_groups.0.weight_decay", "param_groups.0.amsgrad",
                           "param_groups.0.maximize", "state.0.step", "state.0.exp_avg", "state.0.exp_avg_sq"]
    assert all(type(v) is np.ndarray for v in saved.values())
    np.testing.assert_array_equal(saved["param_groups.0.params"], [0, 1])  # indices, as PyTorch lists them
    assert saved["param_groups.0.params"].dtype == np.int64
    np.testing.assert_array_equal(saved["param_groups.0.betas"], [0.8, 0.9])
    assert saved["param_groups.0.lr"] == 0.1
    assert saved["state.0.step"] == 1 and saved["state.0.exp_avg"].dtype == np.float32
    np.testing.assert_allclose(saved["state.0.exp_avg"], 0.2 * 0.5)  # (1 - β1)·g
    np.testing.assert_allclose(saved["state.0.exp_avg_sq"], 0.1 * 0.25)  # (1 - β2)·g²
    snapshot = {k: v.copy() for k, v in saved.items()}
    adam.step()
    for key, value in snapshot.items():
        np.testing.assert_array_equal(saved[key], value, err_msg=key)
    sgd = optim.SGD([w], lr=0.1, momentum=0.9)
    # no update yet, no state; the flag stays a flag
    assert list(sgd.state_dict()) == ["param_groups.0.params", "param_groups.0.lr", "param_groups.0.momentum",
                                      "param_groups.0.dampening", "param_groups.0.weight_decay",
                                      "param_groups.0.nesterov", "param_groups.0.maximize"]
    assert sgd.state_dict()["param_groups.0.nesterov"].dtype == bool
    sgd.step()
    np.testing.assert_array_equal(sgd.state_dict()["state.0.momentum_buffer"], host(w.grad))


@pytest.mark.parametrize("name", MAKERS)
def test_loading_copies_onto_the_parameters_device_and_dtype_and_never_aliases_the_dict(on, name):
    """Values given as device arrays are copied, in the parameter's dtype (here float64 state
    for a float32 parameter, and float64 for float64): later steps must not write into the dict."""
    params = [mg.Tensor(on(np.ones((3, 2), dtype=np.float32)), requires_grad=True),
              mg.Tensor(on(np.ones(2)), requires_grad=True)]
    source = MAKERS[name](params)
    params[0].grad, params[1].grad = on(np.full((3, 2), 0.5, dtype=np.float32)), on(np.full(2, 0.5))
    source.step()
    given = {k: on(v.astype(np.float64) if v.dtype == np.float32 else v)
             for k, v in source.state_dict().items()}
    given_before = {k: host(v).copy() for k, v in given.items()}
    target = FRESH[name](params)
    target.load_state_dict(given)
    buffers = [f"state.{i}.{'momentum_buffer' if name.startswith('SGD') else 'exp_avg'}" for i in (0, 1)]
    loaded = target.state_dict()
    assert [loaded[b].dtype for b in buffers] == [np.float32, np.float64]
    target.step()
    for key, value in given_before.items():
        np.testing.assert_array_equal(host(given[key]), value, err_msg=key)
    for buffer in buffers:  # the step did update the loaded copies
        assert not np.array_equal(target.state_dict()[buffer], given_before[buffer])


# --- validation: every bad dict raises and leaves the optimizer exactly as it was ------------
VARIANTS = {  # two settings differing in every hyperparameter, for the dicts below
    "SGD": [dict(lr=0.01, momentum=0.9, weight_decay=0.01, nesterov=True),
            dict(lr=0.02, momentum=0.8, dampening=0.1, weight_decay=0.0)],
    "Adam": [dict(lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0),
             dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)],
}


def trained(name, on, variant, sizes=None):
    """An optimizer with state for parameters 0 and 2 (parameter 1 never had a gradient); with
    `sizes`, in groups of those sizes, group g at g + 1 times the variant's lr."""
    rng = np.random.default_rng(variant)
    params = [mg.Tensor(on(rng.normal(size=s)), requires_grad=True) for s in ((3, 2), (4,), (2,))]
    settings = VARIANTS[name][variant]
    if sizes is not None:
        starts = np.cumsum((0, *sizes))
        params = [{"params": params[a:b], "lr": settings["lr"] * (g + 1)}
                  for g, (a, b) in enumerate(zip(starts[:-1], starts[1:]))]
    opt = getattr(optim, name)(params, **settings)
    params = opt.params
    for _ in range(2):
        params[0].grad, params[2].grad = on(rng.normal(size=(3, 2))), on(rng.normal(size=(2,)))
        opt.step()
    return opt


def assert_same_state(before, after):
    assert list(after) == list(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def refuses(name, on, change, error, message, sizes=None, source_sizes=None):
    """Load a dict that differs from the target in every value, except for one defect made late
    (parameter 2, the last key), so a loader that changed things before failing is caught.
    `sizes`, `source_sizes`: the groups of the target and of the dict's source (default: one)."""
    target = trained(name, on, 0, sizes)
    before = target.state_dict()
    bad = dict(trained(name, on, 1, source_sizes or sizes).state_dict())
    change(bad)
    with pytest.raises(error, match=message):
        target.load_state_dict(bad)
    assert_same_state(before, target.state_dict())


COMMON_DEFECTS = [  # (change to the dict, error, message); {owner}/{field} filled in per optimizer
    (lambda d: d.update(extra=np.ones(2)), ValueError,
     r"{owner}: missing keys \[\], unexpected keys \['extra'\]; expected param_groups.<g>.\{{params/lr/"),
    (lambda d: d.pop("param_groups.0.lr"), ValueError,
     r"{owner}: missing keys \['param_groups.0.lr'\], unexpected keys \[\]"),
    (lambda d: d.pop("param_groups.0.params"), ValueError, r"missing keys \['param_groups.0.params'\]"),
    (lambda d: d.update(lr=np.array(0.1)), ValueError,  # the flat format before groups
     r"{owner}: missing keys \[\], unexpected keys \['lr'\]"),
    (lambda d: d.update({"state.3.{field}": np.ones(2)}), ValueError,
     r"{owner}: the state dict has state for parameter 3 but this optimizer has 3 parameters"),
    (lambda d: d.update({"state.02.{field}": np.ones(2)}), ValueError,
     r"unexpected keys \['state.02.{field}'\]"),
    (lambda d: d.update({"state.2.{field}": np.ones(3)}), ValueError,
     r"{owner}: 'state.2.{field}' has shape \(3,\) but parameter 2 has shape \(2,\); expected identical"),
    (lambda d: d.update({"state.2.{field}": np.ones(2, dtype=complex)}), TypeError,
     r"{owner}: 'state.2.{field}' has dtype complex128; expected real numbers"),
    (lambda d: d.update({"state.2.{field}": np.ones(2, dtype=bool)}), TypeError, r"has dtype bool"),
    (lambda d: d.update({"state.2.{field}": [1.0, 2.0]}), TypeError,
     r"{owner}: 'state.2.{field}' is a list; expected an array of shape \(2,\)"),
    (lambda d: d.update({"param_groups.0.lr": np.array(-1.0)}), ValueError,
     r"{owner}: got param_groups.0.lr=array\(-1.\); expected a finite number in \[0.0, inf\)"),
    (lambda d: d.update({"param_groups.0.weight_decay": np.array(np.nan)}), ValueError,
     r"{owner}: got param_groups.0.weight_decay=array\(nan\)"),
    (lambda d: d.update({"param_groups.0.lr": np.array([0.1])}), ValueError,
     r"{owner}: got param_groups.0.lr=array\(\[0.1\]\)"),
    (lambda d: d.update({"param_groups.0.lr": "0.1"}), ValueError, r"{owner}: got param_groups.0.lr='0.1'"),
    (lambda d: d.update({"param_groups.0.initial_lr": np.array(-1.0)}), ValueError,
     r"{owner}: got param_groups.0.initial_lr=array\(-1.\)"),
]
ADAM_DEFECTS = [
    (lambda d: d.update({"state.2.step": np.array(0)}), ValueError,
     r"Adam.load_state_dict: got state.2.step=array\(0\); expected an integer >= 1"),
    (lambda d: d.update({"state.2.step": np.array(2.0)}), ValueError, r"got state.2.step=array\(2.\)"),
    (lambda d: d.update({"state.2.step": np.array([2])}), ValueError, r"got state.2.step=array\(\[2\]\)"),
    (lambda d: d.pop("state.2.exp_avg_sq"), ValueError,
     r"Adam.load_state_dict: parameter 2's state has \['exp_avg', 'step'\] but lacks \['exp_avg_sq'\]"),
    (lambda d: d.pop("state.2.step"), ValueError, r"parameter 2's state .* lacks \['step'\]"),
    (lambda d: d.update({"param_groups.0.betas": np.array([0.9, 1.0])}), ValueError,
     r"Adam.load_state_dict: got param_groups.0.betas\[1\]=1.0; expected a finite number in \[0.0, 1.0\)"),
    (lambda d: d.update({"param_groups.0.betas": np.array([0.9, 0.99, 0.999])}), ValueError,
     r"Adam.load_state_dict: got param_groups.0.betas=array\(\[0.9\s*, 0.99\s*, 0.999\]\); expected a pair"),
    (lambda d: d.update({"param_groups.0.amsgrad": np.array(1.0)}), TypeError,
     r"Adam.load_state_dict: got param_groups.0.amsgrad=array\(1.\); expected True or False"),
    (lambda d: d.update({"state.2.max_exp_avg_sq": np.ones(3)}), ValueError,
     r"Adam.load_state_dict: 'state.2.max_exp_avg_sq' has shape \(3,\) but parameter 2 has shape \(2,\)"),
]
SGD_DEFECTS = [
    (lambda d: d.update({"param_groups.0.nesterov": np.array(1.0)}), TypeError,
     r"SGD.load_state_dict: got param_groups.0.nesterov=array\(1.\); expected True or False"),
    (lambda d: d.update({"param_groups.0.maximize": np.array("yes")}), TypeError,
     r"SGD.load_state_dict: got param_groups.0.maximize=array\('yes'.*\); expected True or False"),
    (lambda d: d.update({"param_groups.0.dampening": np.array(2.0)}), ValueError,
     r"SGD.load_state_dict: got param_groups.0.dampening=array\(2.\); expected a finite number in \[0.0, 1.0\]"),
]
CASES = [(name, *defect) for name, field in (("SGD", "momentum_buffer"), ("Adam", "exp_avg"))
         for defect in COMMON_DEFECTS] + [("Adam", *defect) for defect in ADAM_DEFECTS] + \
        [("SGD", *defect) for defect in SGD_DEFECTS]


@pytest.mark.parametrize("name,change,error,message", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_a_bad_state_dict_is_refused_by_name_and_nothing_is_loaded(on, name, change, error, message):
    field = "momentum_buffer" if name == "SGD" else "exp_avg"

    def with_field(d):  # the defects name "{field}": this optimizer's array field
        change(d)
        for key in [k for k in d if "{field}" in k]:
            d[key.replace("{field}", field)] = d.pop(key)

    refuses(name, on, with_field, error, message.format(owner=f"{name}.load_state_dict", field=field))


@pytest.mark.parametrize("source,target", [("SGD", "Adam"), ("Adam", "SGD")])
def test_a_state_dict_of_the_other_optimizer_is_refused_naming_both(on, source, target):
    other = trained(source, on, variant=1).state_dict()
    refuses(target, on, lambda d: (d.clear(), d.update(other)), ValueError,
            rf"{target}.load_state_dict: got a state dict of {source} \(hyperparameters .*\); expected "
            rf"{target}'s: .*only into the same kind of optimizer")


GROUP_DEFECTS = [  # (the source's group sizes, change to its dict, error, message); the target's are (1, 2)
    ((3,), None, ValueError, r"{owner}: the state dict has 1 parameter groups but this optimizer has 2 "
                             r"\(loaded state dict has a different number of parameter groups\)"),
    ((1, 1, 1), None, ValueError, r"{owner}: the state dict has 3 parameter groups but this optimizer has 2"),
    ((2, 1), None, ValueError,
     r"{owner}: loaded state dict contains a parameter group that doesn't match the size of optimizer's "
     r"group: param_groups.0.params lists 2 parameters but param_groups\[0\] has 1"),
    ((1, 2), lambda d: d.update({"param_groups.1.params": np.array([2, 1])}), ValueError,
     r"{owner}: param_groups.1.params is \[2, 1\]; expected \[1, 2\], the group's places"),
    ((1, 2), lambda d: d.update({"param_groups.1.params": np.array([1.0, 2.0])}), TypeError,
     r"{owner}: 'param_groups.1.params' is an array of dtype float64 and shape \(2,\); expected a 1-D "
     r"integer array"),
    ((1, 2), lambda d: d.update({"param_groups.1.params": [1, 2]}), TypeError,
     r"'param_groups.1.params' is a list; expected a 1-D integer array"),
    ((1, 2), lambda d: d.pop("param_groups.1.lr"), ValueError,
     r"{owner}: missing keys \['param_groups.1.lr'\], unexpected keys \[\]"),
    ((1, 2), lambda d: d.update({"param_groups.01.lr": np.array(0.1)}), ValueError,
     r"unexpected keys \['param_groups.01.lr'\]"),
    ((1, 2), lambda d: d.update({"param_groups.1.lr": np.array(-1.0)}), ValueError,
     r"{owner}: got param_groups.1.lr=array\(-1.\)"),
    ((1, 2), lambda d: d.update({"param_groups.1.initial_lr": np.array(np.inf)}), ValueError,
     r"{owner}: got param_groups.1.initial_lr=array\(inf\)"),
]
GROUP_CASES = [(name, *defect) for name in ("SGD", "Adam") for defect in GROUP_DEFECTS]


@pytest.mark.parametrize("name,source_sizes,change,error,message", GROUP_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(GROUP_CASES)])
def test_a_state_dict_of_other_groups_is_refused_and_nothing_is_loaded(on, name, source_sizes, change, error,
                                                                       message):
    refuses(name, on, change or (lambda d: None), error, message.format(owner=f"{name}.load_state_dict"),
            sizes=(1, 2), source_sizes=source_sizes)


def test_loading_restores_each_groups_values_and_initial_lr_as_saved(on):
    """PyTorch replaces each group's dict by the saved one: initial_lr (set by a scheduler) comes
    with it, and goes when the saved group had none."""
    source, target = trained("SGD", on, 1, (1, 2)), trained("SGD", on, 0, (1, 2))
    source.param_groups[1]["initial_lr"] = 0.3
    target.param_groups[0]["initial_lr"] = 0.7
    target.load_state_dict(source.state_dict())
    for loaded, saved in zip(target.param_groups, source.param_groups):
        assert dict(loaded, params=None) == dict(saved, params=None)
    assert "initial_lr" not in target.param_groups[0] and target.param_groups[1]["initial_lr"] == 0.3
    assert [g["lr"] for g in target.param_groups] == [0.02, 0.04]
    assert_same_state(source.state_dict(), target.state_dict())


def test_a_non_mapping_is_refused(on):
    target = trained("Adam", on, variant=0)
    before = target.state_dict()
    with pytest.raises(TypeError, match=r"Adam.load_state_dict: got a list; expected a mapping"):
        target.load_state_dict(list(before.items()))
    assert_same_state(before, target.state_dict())


def test_resumed_trajectories_match_torch_optim(tmp_path):
    """torch.optim checkpointed and resumed the same way, in float64 (our resume is also held to the
    uninterrupted run above, which needs no torch)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    starts = [rng.normal(size=(3, 2)), rng.normal(size=(2,))]
    grads = [[rng.normal(size=(3, 2)), None if step < 2 else rng.normal(size=(2,))] for step in range(5)]
    settings = [("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True)),
                ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01, maximize=True)),
                ("Adam", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
                ("Adam", dict(lr=0.02, betas=(0.8, 0.6), eps=1e-6, weight_decay=0.1, amsgrad=True)),
                ("AdamW", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
                ("AdamW", dict(lr=0.02, betas=(0.8, 0.6), weight_decay=0.1, amsgrad=True, maximize=True))]
    for name, kwargs in settings:
        ours = [mg.Tensor(s.copy(), requires_grad=True) for s in starts]
        theirs = [torch.tensor(s.copy(), requires_grad=True) for s in starts]
        opt, topt = getattr(optim, name)(ours, **kwargs), getattr(torch.optim, name)(theirs, **kwargs)
        for step, gs in enumerate(grads):
            if step == 3:
                nn.save(opt.state_dict(), tmp_path / "opt.npz")
                opt = FRESH[name](ours)
                opt.load_state_dict(nn.load(tmp_path / "opt.npz"))
                saved = topt.state_dict()
                topt = getattr(torch.optim, name)(theirs, lr=1.0)
                topt.load_state_dict(saved)
            for p, t, g in zip(ours, theirs, gs):
                p.grad, t.grad = (None, None) if g is None else (g.copy(), torch.tensor(g))
            opt.step()
            topt.step()
        for p, t in zip(ours, theirs):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14)


# --- a parameter moved after its state was made ------------------------------------------
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_a_model_moved_after_the_first_step_is_a_clear_error_before_any_update(gpu, name):
    """model.to(device) after the optimizer's first step leaves its state on the old device.
    step() must say so, naming the way out, before it updates anything: the parameter listed
    first has no state yet and would otherwise take its step before the failure."""
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1)).to("cpu")
    first, *rest = model.parameters()
    opt = MAKERS[name]([first, *rest])
    for p in rest:
        p.grad = np.ones(p.shape, dtype=p.dtype)
    opt.step()  # state for `rest` only, on the CPU
    model.to(gpu)
    for p in model.parameters():
        p.grad = to_device(np.ones(p.shape, dtype=p.dtype), gpu)
    before = [host(p.data).copy() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=rf"{name}\.step: parameter 1 is now \(2,\) on 'gpu'.*"
                                           r"made for \(2,\) on 'cpu'.*before building the optimizer"):
        opt.step()
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(host(p.data), b)
    # The way out the message gives: a new optimizer loading the old one's state onto the GPU.
    fresh = MAKERS[name](model.parameters())
    fresh.load_state_dict(opt.state_dict())
    fresh.step()


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_a_parameter_given_an_array_of_another_shape_is_a_clear_error_before_any_update(name):
    """Replacing a parameter's array by one of another shape after its first update leaves a state
    of the old shape, which NumPy would refuse (or broadcast) halfway through the step."""
    w = mg.Tensor(np.ones(3), requires_grad=True)
    v = mg.Tensor(np.ones(2), requires_grad=True)
    opt = MAKERS[name]([v, w])
    w.grad = np.ones(3)
    opt.step()
    w.grad = None
    w.data = np.ones((2, 3))
    v.grad, w.grad = np.ones(2), np.ones((2, 3))
    with pytest.raises(RuntimeError, match=rf"{name}\.step: parameter 1 is now \(2, 3\) on 'cpu'.*"
                                           r"made for \(3,\) on 'cpu'"):
        opt.step()
    np.testing.assert_array_equal(v.data, np.ones(2))  # nothing moved, not even v, whose step came first


@pytest.mark.parametrize("kind", [optim.SGD, optim.Adam, optim.AdamW])
def test_a_checkpoint_from_before_amsgrad_and_maximize_loads_with_them_off(kind):
    """Checkpoints written before these flags existed lack their keys; they were off then."""
    w = mg.Tensor(np.ones(2), requires_grad=True)
    w.grad = np.full(2, 0.5)
    saved = kind([w], lr=0.1, momentum=0.9) if kind is optim.SGD else kind([w], lr=0.1)
    saved.step()
    old = {key: value for key, value in saved.state_dict().items()
           if not key.endswith((".amsgrad", ".maximize"))}
    assert len(old) < len(saved.state_dict())  # the flags were there to drop
    flags = dict(maximize=True) if kind is optim.SGD else dict(amsgrad=True, maximize=True)
    fresh = kind([mg.Tensor(np.ones(2), requires_grad=True)], lr=0.5, **flags)
    fresh.load_state_dict(old)
    assert all(fresh.param_groups[0][name] is False for name in flags)
    assert fresh.state_dict().keys() == saved.state_dict().keys()


# --- amsgrad off in the dict, on in the optimizer --------------------------------------------
def amsgrad_run(kind, on, grads, split=None):
    """`kind` without amsgrad over one parameter; at `split` its state dict is loaded into a fresh
    optimizer built with amsgrad=True and other hyperparameters."""
    param = mg.Tensor(on(np.linspace(-1.0, 1.0, 4)), requires_grad=True)
    opt = kind([param], lr=0.1, betas=(0.8, 0.6))
    for step, grad in enumerate(grads):
        if step == split:
            saved = opt.state_dict()
            opt = kind([param], lr=0.5, betas=(0.8, 0.6), amsgrad=True)
            opt.load_state_dict(saved)
        param.grad = on(grad)
        opt.step()
    return host(param.data), opt


def shrinking_grads(count=5):
    """Gradients whose size falls and rises, so the second moment falls below its maximum and
    amsgrad changes the path."""
    rng = np.random.default_rng(13)
    return [scale * rng.normal(size=4) for scale in (2.0, 0.5, 1.0, 0.1, 0.05)[:count]]


@pytest.mark.parametrize("kind", [optim.Adam, optim.AdamW])
def test_a_dict_saved_without_amsgrad_turns_it_off_as_in_pytorch(on, kind):
    """load_state_dict replaces each group's hyperparameters by the saved ones, amsgrad included
    (PyTorch's rule): the resumed run is the uninterrupted amsgrad=False run, bit for bit."""
    grads = shrinking_grads()
    whole, _ = amsgrad_run(kind, on, grads)
    resumed, opt = amsgrad_run(kind, on, grads, split=2)
    assert opt.param_groups[0]["amsgrad"] is False and opt.param_groups[0]["lr"] == 0.1
    np.testing.assert_array_equal(resumed, whole)
    assert not any(key.endswith("max_exp_avg_sq") for key in opt.state_dict())
    with_amsgrad = mg.Tensor(on(np.linspace(-1.0, 1.0, 4)), requires_grad=True)  # the premise: it matters
    train_opt = kind([with_amsgrad], lr=0.1, betas=(0.8, 0.6), amsgrad=True)
    for grad in grads:
        with_amsgrad.grad = on(grad)
        train_opt.step()
    assert not np.allclose(host(with_amsgrad.data), whole)


def test_a_dict_saved_without_amsgrad_loads_into_torch_alike():
    """The same load in torch.optim: its group's amsgrad becomes False too, and the paths agree."""
    torch = pytest.importorskip("torch")
    grads = shrinking_grads()
    for name in ("Adam", "AdamW"):
        ours, _ = amsgrad_run(getattr(optim, name), lambda a: a, grads, split=2)
        param = torch.tensor(np.linspace(-1.0, 1.0, 4), requires_grad=True)
        topt = getattr(torch.optim, name)([param], lr=0.1, betas=(0.8, 0.6))
        for step, grad in enumerate(grads):
            if step == 2:
                saved = topt.state_dict()
                topt = getattr(torch.optim, name)([param], lr=0.5, betas=(0.8, 0.6), amsgrad=True)
                topt.load_state_dict(saved)
                assert topt.param_groups[0]["amsgrad"] is False
            param.grad = torch.tensor(grad)
            topt.step()
        np.testing.assert_allclose(ours, param.detach().numpy(), rtol=1e-12, atol=1e-14)
