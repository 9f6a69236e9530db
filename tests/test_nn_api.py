"""nn.Parameter, Identity/Tanh/Sigmoid/Flatten, editing Sequential and ModuleList, and nn.functional."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import minigraph as mg
import minigraph.nn.functional as F
from minigraph import nn, optim
from minigraph.backend import to_device


def host(array):
    return to_device(array, "cpu")


# --- nn.Parameter ------------------------------------------------------------------------------
class Scaled(nn.Module):
    """A custom module written as PyTorch users write one: its own Parameters, one frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(np.full(3, 2.0))
        self.offset = nn.Parameter(np.ones(3), requires_grad=False)
        self.label = mg.Tensor(np.zeros(3))  # a plain tensor: no parameter

    def forward(self, x):
        return x * self.scale + self.offset


def test_parameters_register_frozen_ones_too_and_train(device, rng):
    net = Scaled()
    assert [name for name, _ in net.named_parameters()] == ["scale", "offset"]
    assert all(isinstance(p, nn.Parameter) and isinstance(p, mg.Tensor) for p in net.parameters())
    assert net.offset.requires_grad is False and list(net.state_dict()) == ["scale", "offset"]
    assert all(p.device == device for p in net.parameters())
    x = rng.normal(size=(4, 3))
    opt = optim.SGD(net.parameters(), lr=0.1)
    loss = (net(mg.Tensor(x)) ** 2).sum()
    loss.backward()
    # d/dscale Σ (x·s + o)² = Σ_rows 2 (x·s + o) x, by hand
    np.testing.assert_allclose(host(net.scale.grad), (2 * (x * 2.0 + 1.0) * x).sum(0), rtol=1e-12)
    assert net.offset.grad is None
    opt.step()
    np.testing.assert_allclose(host(net.scale.data), 2.0 - 0.1 * (2 * (x * 2.0 + 1.0) * x).sum(0), rtol=1e-12)
    np.testing.assert_array_equal(host(net.offset.data), np.ones(3))  # frozen: stepped over


def test_layers_make_parameters_and_a_parameter_shares_a_tensors_array(device):
    linear, bn = nn.Linear(3, 2), nn.BatchNorm1d(2)
    assert all(type(p) is nn.Parameter for p in [*linear.parameters(), *bn.parameters()])
    assert all(p.device == device for p in linear.parameters())
    t = mg.Tensor(np.ones(2))
    p = nn.Parameter(t)
    assert p.data is t.data and p.device == t.device and p.requires_grad and p.is_leaf
    p.data[...] = 5.0  # one array, as torch.nn.Parameter(tensor) shares its storage
    assert host(t.data).tolist() == [5.0, 5.0]
    assert repr(p).startswith("Parameter containing:\nTensor(")
    with pytest.raises(TypeError, match=r"Parameter: got data=None; expected a Tensor or an array"):
        nn.Parameter(None)
    with pytest.raises(TypeError, match=r"Tensor: got requires_grad='yes'"):
        nn.Parameter(np.ones(2), requires_grad="yes")


def test_a_frozen_parameter_can_replace_a_trainable_one_but_a_plain_tensor_cannot():
    layer = nn.Linear(2, 2, dtype=np.float64)
    layer.weight = nn.Parameter(np.eye(2), requires_grad=False)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    with pytest.raises(TypeError, match=r"Linear.weight is a parameter; got a Tensor of shape \(2, 2\), "
                                        r"expected an nn.Parameter .* nn.Parameter\(data, requires_grad=False\)"):
        layer.weight = mg.Tensor(np.eye(2))


def test_a_model_of_parameters_pickles_and_moves_keeping_the_class(device):
    net = Scaled()
    copy = pickle.loads(pickle.dumps(net))
    assert type(copy.scale) is nn.Parameter and copy.offset.requires_grad is False
    np.testing.assert_array_equal(host(copy.scale.data), host(net.scale.data))
    net.to("cpu")
    assert type(net.scale) is nn.Parameter and net.scale.device == "cpu"


# --- the small modules -------------------------------------------------------------------------
def test_tanh_sigmoid_and_identity_modules_are_their_functions(on, rng):
    x = rng.normal(size=(4, 3))
    t = mg.Tensor(on(x))
    np.testing.assert_allclose(host(nn.Tanh()(t).data), np.tanh(x), rtol=1e-12)
    np.testing.assert_allclose(host(nn.Sigmoid()(t).data), 1 / (1 + np.exp(-x)), rtol=1e-12)
    assert nn.Identity(54, unused="ignored")(t) is t  # arguments ignored, as in PyTorch
    assert list(nn.Identity().parameters()) == []


@pytest.mark.parametrize("shape,start,end,expected", [
    ((2, 3, 4), 1, -1, (2, 12)), ((2, 3, 4), 0, -1, (24,)), ((2, 3, 4, 5), 1, 2, (2, 12, 5)),
    ((2, 3, 4), -2, -2, (2, 3, 4)), ((5, 3), 1, -1, (5, 3)), ((), 0, -1, (1,)),
])
def test_flatten_merges_the_given_dimensions_as_numpy_reshape_does(on, rng, shape, start, end, expected):
    x = rng.normal(size=shape)
    t = mg.Tensor(on(x), requires_grad=True)
    out = nn.Flatten(start, end)(t)
    assert out.shape == expected
    np.testing.assert_array_equal(host(out.data), x.reshape(expected))  # row-major, as PyTorch
    (out * mg.Tensor(on(np.arange(out.data.size, dtype=float).reshape(expected)))).sum().backward()
    np.testing.assert_array_equal(host(t.grad), np.arange(x.size, dtype=float).reshape(shape))


def test_flatten_refuses_bad_dimensions_by_name():
    with pytest.raises(TypeError, match=r"Flatten: got start_dim=1.5; expected an integer dimension"):
        nn.Flatten(1.5)
    with pytest.raises(TypeError, match=r"Flatten: got end_dim=True; expected an integer dimension"):
        nn.Flatten(0, True)
    with pytest.raises(IndexError, match=r"Flatten: start_dim=3 is out of range for an input of shape \(2, 2\); "
                                         r"expected one in \[-2, 1\]"):
        nn.Flatten(3)(mg.Tensor(np.ones((2, 2))))
    # A 0-d input flattens as one of shape (1,), as in PyTorch; the error names its own shape.
    with pytest.raises(IndexError, match=r"Flatten: start_dim=1 is out of range for an input of shape \(\); "
                                         r"expected one in \[-1, 0\]"):
        nn.Flatten()(mg.Tensor(np.array(3.0)))
    with pytest.raises(ValueError, match=r"Flatten: start_dim=2 comes after end_dim=1"):
        nn.Flatten(2, 1)(mg.Tensor(np.ones((2, 2, 2))))


# --- editing Sequential and ModuleList ---------------------------------------------------------
def layers(count):
    return [nn.Linear(2, 2, rng=k, dtype=np.float64) for k in range(count)]


@pytest.mark.parametrize("kind", [nn.Sequential, nn.ModuleList])
def test_setitem_delitem_and_pop_edit_in_place_and_renumber(kind):
    a, b, c, d = layers(4)
    seq = kind(a, b, c) if kind is nn.Sequential else kind([a, b, c])
    seq[-1] = d
    assert list(seq) == [a, b, d] and list(seq._modules) == ["0", "1", "2"]
    del seq[0]
    assert list(seq) == [b, d] and [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias",
                                                                              "1.weight", "1.bias"]
    assert seq.pop() is d and list(seq) == [b] and list(seq._modules) == ["0"]
    seq.extend([a, c, d])
    del seq[1:3]
    assert list(seq) == [b, d] and list(seq.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert seq.pop(0) is b and list(seq) == [d]
    with pytest.raises(IndexError, match=rf"{kind.__name__}: index 1 is out of range for 1 modules"):
        seq[1] = a
    with pytest.raises(IndexError, match=rf"{kind.__name__}: index -2 is out of range for 1 modules"):
        del seq[-2]
    with pytest.raises(TypeError, match=rf"{kind.__name__}: got index '0'; expected an integer$"):
        seq["0"] = a
    with pytest.raises(TypeError, match=rf"{kind.__name__}.__setitem__: got a list; expected a Module"):
        seq[0] = [a]
    assert list(seq) == [d]


@pytest.mark.parametrize("kind", [nn.Sequential, nn.ModuleList])
def test_slice_assignment_is_refused_for_its_slice(kind):
    # As in PyTorch, setitem takes one integer; a slice with a list of modules is refused for the
    # slice, not for the list.
    a, b, c = layers(3)
    seq = kind(a, b) if kind is nn.Sequential else kind([a, b])
    with pytest.raises(TypeError, match=rf"{kind.__name__}: got index slice\(0, 1, None\); expected an integer$"):
        seq[0:1] = [c]
    assert list(seq) == [a, b]


def test_plus_joins_containers_of_the_same_modules():
    a, b, c = layers(3)
    joined = nn.Sequential(a, b) + nn.Sequential(c)
    assert type(joined) is nn.Sequential and list(joined) == [a, b, c]
    seq = nn.Sequential(a)
    seq += nn.Sequential(b, c)
    assert list(seq) == [a, b, c] and list(seq._modules) == ["0", "1", "2"]
    with pytest.raises(TypeError, match=r"Sequential \+ \.\.\.: got a list; expected a Sequential"):
        nn.Sequential(a) + [b]
    listed = nn.ModuleList([a]) + [b, c]  # a ModuleList takes any iterable of Modules
    assert type(listed) is nn.ModuleList and list(listed) == [a, b, c]
    listed += (c,)
    assert list(listed) == [a, b, c, c]
    with pytest.raises(TypeError, match=r"ModuleList \+= \.\.\.: item 0 is an int; expected a Module"):
        listed += [1]
    assert len(listed) == 4  # nothing added


def test_an_edited_sequential_computes_what_its_remaining_layers_compute(rng):
    a, b, c = layers(3)
    seq = nn.Sequential(a, nn.ReLU(), b, c)
    del seq[1]
    seq[1] = nn.Tanh()
    x = mg.Tensor(rng.normal(size=(3, 2)))
    np.testing.assert_allclose(seq(x).data, c(mg.tanh(a(x))).data, rtol=1e-12)


# --- nn.functional -----------------------------------------------------------------------------
def test_functional_is_the_ops_under_torchs_signatures(on, rng):
    x = rng.normal(size=(6, 3))
    w, b = rng.normal(size=(3, 2)), rng.normal(size=2)
    gamma, beta = rng.uniform(0.5, 2, size=3), rng.normal(size=3)
    t = mg.Tensor(on(x))
    np.testing.assert_allclose(host(F.relu(t).data), np.maximum(x, 0))
    np.testing.assert_allclose(host(F.tanh(t).data), np.tanh(x), rtol=1e-12)
    np.testing.assert_allclose(host(F.sigmoid(t).data), 1 / (1 + np.exp(-x)), rtol=1e-12)
    np.testing.assert_allclose(host(F.linear(t, mg.Tensor(on(w)), mg.Tensor(on(b))).data), x @ w + b, rtol=1e-12)
    mean, var = on(np.zeros(3)), on(np.ones(3))
    trained = F.batch_norm(t, mean, var, mg.Tensor(on(gamma)), mg.Tensor(on(beta)), training=True, momentum=0.5)
    np.testing.assert_allclose(host(trained.data), (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * gamma + beta,
                               rtol=1e-10)
    np.testing.assert_allclose(host(mean), 0.5 * x.mean(0), rtol=1e-12)  # torch's momentum convention
    evaluated = F.batch_norm(t, mean, var, eps=1e-3)  # evaluation by default, as torch's
    np.testing.assert_allclose(host(evaluated.data), (x - host(mean)) / np.sqrt(host(var) + 1e-3), rtol=1e-12)
    y = rng.normal(size=(6, 3))
    assert F.mse_loss(t, mg.Tensor(on(y))).item() == pytest.approx(np.mean((x - y) ** 2), rel=1e-12)
    labels = np.array([0, 2, 1, 1, 0, 2])
    log_p = x - np.log(np.exp(x).sum(1, keepdims=True))
    assert F.cross_entropy(t, on(labels), reduction="sum").item() == pytest.approx(
        -log_p[np.arange(6), labels].sum(), rel=1e-12)
    assert F.dropout(t, 0.5, training=False) is t
    dropped = host(F.dropout(t, p=0.5).data)  # training by default, as torch's F.dropout
    assert np.all((dropped == 0) | np.isclose(dropped, 2 * x))  and (dropped == 0).any()


def test_functional_matches_torch_nn_functional(rng):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x, w, b = rng.normal(size=(5, 4)), rng.normal(size=(4, 3)), rng.normal(size=3)
    gamma, beta = rng.normal(size=4), rng.normal(size=4)
    ours_mean, ours_var = np.zeros(4), np.ones(4)
    theirs_mean, theirs_var = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    tx = torch.from_numpy(x)
    pairs = [
        (F.linear(mg.Tensor(x), mg.Tensor(w), mg.Tensor(b)), tf.linear(tx, torch.from_numpy(w.T), torch.from_numpy(b))),
        (F.batch_norm(mg.Tensor(x), ours_mean, ours_var, mg.Tensor(gamma), mg.Tensor(beta), True, 0.3, 1e-4),
         tf.batch_norm(tx, theirs_mean, theirs_var, torch.from_numpy(gamma), torch.from_numpy(beta), True, 0.3, 1e-4)),
        (F.batch_norm(mg.Tensor(x), ours_mean, ours_var), tf.batch_norm(tx, theirs_mean, theirs_var)),
        (F.sigmoid(mg.Tensor(x)), torch.sigmoid(tx)), (F.tanh(mg.Tensor(x)), torch.tanh(tx)),
        (F.relu(mg.Tensor(x)), tf.relu(tx)),
        (F.mse_loss(mg.Tensor(x), mg.Tensor(x[::-1].copy())), tf.mse_loss(tx, tx.flip(0))),
        (F.cross_entropy(mg.Tensor(x), np.array([0, 3, 1, 2, 0])), tf.cross_entropy(tx, torch.tensor([0, 3, 1, 2, 0]))),
    ]
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours_mean, theirs_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours_var, theirs_var.numpy(), rtol=1e-12)


def test_functional_takes_torchs_keyword_names_and_refuses_what_it_reads_otherwise(on, rng):
    # PyTorch code passes input=/target= and inplace=False by name; a third positional argument is
    # weight (cross_entropy) or the deprecated size_average (mse_loss) there, never reduction.
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    labels = np.array([2, 0, 1, 1])
    t = mg.Tensor(on(x))
    np.testing.assert_allclose(host(F.relu(input=t, inplace=False).data), np.maximum(x, 0))
    np.testing.assert_allclose(host(F.tanh(input=t).data), np.tanh(x), rtol=1e-12)
    np.testing.assert_allclose(host(F.sigmoid(input=t).data), 1 / (1 + np.exp(-x)), rtol=1e-12)
    assert F.mse_loss(input=t, target=mg.Tensor(on(y)), reduction="sum").item() == pytest.approx(
        np.sum((x - y) ** 2), rel=1e-12)
    log_p = x - np.log(np.exp(x).sum(1, keepdims=True))
    np.testing.assert_allclose(host(F.cross_entropy(input=t, target=on(labels), reduction="none").data),
                               -log_p[np.arange(4), labels], rtol=1e-12)
    assert F.dropout(input=t, p=0.5, training=False, inplace=False) is t
    for call in (lambda: F.relu(t, inplace=True), lambda: F.dropout(t, 0.5, True, True)):
        with pytest.raises(ValueError, match="inplace=True"):
            call()
    with pytest.raises(TypeError, match="inplace"):
        F.relu(t, inplace="no")
    with pytest.raises(TypeError, match="positional"):
        F.mse_loss(t, mg.Tensor(on(y)), "sum")
    with pytest.raises(TypeError, match=r"cross_entropy: got weight='none'; expected \(C,\) class weights"):
        F.cross_entropy(t, on(labels), "none")  # the third is torch's weight


def test_functional_keyword_calls_match_torch_nn_functional(rng):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x, y = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    labels = np.array([0, 3, 1, 2, 0])
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    pairs = [
        (F.relu(input=mg.Tensor(x), inplace=False), tf.relu(input=tx, inplace=False)),
        (F.mse_loss(input=mg.Tensor(x), target=mg.Tensor(y), reduction="sum"),
         tf.mse_loss(input=tx, target=ty, reduction="sum")),
        (F.cross_entropy(input=mg.Tensor(x), target=labels, reduction="none"),
         tf.cross_entropy(input=tx, target=torch.from_numpy(labels), reduction="none")),
        (F.dropout(input=mg.Tensor(x), p=0.3, training=False, inplace=False),
         tf.dropout(input=tx, p=0.3, training=False, inplace=False)),
    ]
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)


# --- Module.to(dtype), float/double/cpu/cuda, registration by name, forward hooks ---------------
def test_double_and_float_convert_floating_parameters_grads_and_buffers_in_place(device, rng):
    model = nn.Sequential(nn.Linear(3, 4, rng=0), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1, rng=1))
    weight = model[0].weight
    x = rng.normal(size=(8, 3))
    model(mg.Tensor(x.astype(np.float32))).sum().backward()
    expected = host(weight.data).astype(np.float64)
    assert model.double() is model
    assert model[0].weight is weight and weight.dtype == np.float64 and weight.grad.dtype == np.float64
    np.testing.assert_array_equal(host(weight.data), expected)  # the same values, widened
    assert model[1].running_mean.dtype == np.float64 and model[1].num_batches_tracked.dtype == np.int64
    assert weight.device == device
    opt = optim.SGD(model.parameters(), lr=0.1)
    model(mg.Tensor(x)).sum().backward()  # float64 data now goes through without a dtype error
    opt.step()
    assert model.float()[3].bias.dtype == np.float32 and model[1].running_var.dtype == np.float32
    assert model.to(np.float64, device=device)[0].weight.dtype == np.float64
    with pytest.raises(TypeError, match=r"Sequential.to: got dtype=<class 'numpy.float16'>; expected a float dtype"):
        model.to(np.float16)
    with pytest.raises(TypeError, match=r"Sequential.to: got the device twice"):
        model.to("cpu", device="cpu")


def test_cpu_and_cuda_move_everything(device):
    model = nn.BatchNorm1d(3)
    if device == "gpu":
        assert model.cuda() is model and model.weight.device == "gpu" and model.running_mean.dtype == np.float32
    assert model.cpu().weight.device == "cpu" and mg.backend.device_of(model.num_batches_tracked) == "cpu"
    with pytest.raises(ValueError, match=r"BatchNorm1d.cuda: got device=1; expected None or 0"):
        model.cuda(1)


def test_registration_by_name_and_lookup_by_dotted_path():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    model.add_module("head", nn.Linear(3, 1))
    model[1].register_parameter("shift", nn.Parameter(np.zeros(3)))
    assert list(dict(model.named_children())) == ["0", "1", "head"]
    assert model.get_submodule("head") is model.head and model.get_submodule("") is model
    assert model.get_parameter("1.shift") is model[1].shift and "1.shift" in model.state_dict()
    assert model.get_parameter("head.weight") is model.head.weight
    assert model.get_buffer("1.running_var") is model[1].running_var
    with pytest.raises(AttributeError, match=r"get_submodule\('1.x'\): 1 \(BatchNorm1d\) has no submodule 'x'"):
        model.get_submodule("1.x")
    with pytest.raises(AttributeError, match=r"get_parameter\('0.running_mean'\): Linear has no parameter "
                                             r"'running_mean'; it has \['weight', 'bias'\]"):
        model.get_parameter("0.running_mean")
    with pytest.raises(ValueError, match=r"add_module: got name 'a.b'; expected a non-empty string without dots"):
        model.add_module("a.b", nn.ReLU())
    with pytest.raises(TypeError, match=r"add_module\('act'\): got .*; expected an nn.Module or None"):
        model.add_module("act", lambda x: x)
    with pytest.raises(TypeError, match=r"register_parameter\('w'\): got .*; expected an nn.Parameter"):
        model.register_parameter("w", np.zeros(2))
    with pytest.raises(KeyError, match=r"add_module: Sequential already has an attribute 'forward'"):
        model.add_module("forward", nn.ReLU())
    # A path is a string: get_submodule(0) gave the model itself (0 is falsy), get_submodule(1)
    # failed inside str methods, whichever index was meant.
    for call, where in [(model.get_submodule, "get_submodule"), (model.get_parameter, "get_parameter"),
                        (model.get_buffer, "get_buffer")]:
        for target in (0, 1):
            with pytest.raises(TypeError, match=rf"{where}: got target={target} \(int\); expected a dotted path "
                                                rf"string, e.g. '0.weight'"):
                call(target)


def test_forward_hooks_see_and_may_replace_inputs_and_outputs(rng):
    model = nn.Sequential(nn.Linear(3, 4, rng=0, dtype=np.float64), nn.ReLU())
    x = mg.Tensor(rng.normal(size=(5, 3)))
    seen = []
    record = model[0].register_forward_hook(lambda module, args, output: seen.append((module, args[0], output)))
    doubled = model.register_forward_pre_hook(lambda module, args: (args[0] * 2.0,))
    out = model(x)
    (module, received, linear_out), = seen
    assert module is model[0]
    np.testing.assert_array_equal(received.numpy(), 2.0 * x.numpy())  # the pre-hook's replacement reached it
    np.testing.assert_array_equal(out.numpy(), np.maximum(linear_out.numpy(), 0))
    doubled.remove()
    record.remove()
    record.remove()  # twice is harmless
    with model[1].register_forward_hook(lambda module, args, output: -output):  # removed on leaving
        np.testing.assert_array_equal(model(x).numpy(), -np.maximum(model[0](x).numpy(), 0))
    np.testing.assert_array_equal(model(x).numpy(), np.maximum(model[0](x).numpy(), 0))
    assert len(seen) == 1
    with pytest.raises(TypeError, match=r"Linear.register_forward_hook: got .*; expected a function"):
        model[0].register_forward_hook("print")
