"""minigraph.nn: parameter discovery, layers against NumPy (and PyTorch), modes, state, devices."""

from __future__ import annotations

import numpy as np
import pytest

import minigraph as mg
from minigraph import nn
from minigraph.backend import to_device

F64 = np.float64


def host(array):
    return to_device(array.data if isinstance(array, mg.Tensor) else array, "cpu")


def small_net(seed: int = 0, device: str = "cpu", dtype=F64) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Linear(4, 3, rng=rng, dtype=dtype, device=device),
        nn.BatchNorm1d(3, dtype=dtype, device=device),
        nn.ReLU(),
        nn.Linear(3, 2, rng=rng, dtype=dtype, device=device),
    )


class Net(nn.Module):
    """Own parameter, a nested Sequential, a head, a constant tensor and a plain attribute."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(3)
        self.body = nn.Sequential(nn.Linear(4, 5, rng=rng, dtype=F64),
                                  nn.Sequential(nn.BatchNorm1d(5, dtype=F64), nn.ReLU()))
        self.scale = mg.Tensor(np.ones(2), requires_grad=True)
        self.head = nn.Linear(5, 2, rng=rng, dtype=F64)
        self.offset = mg.Tensor(np.zeros(2))  # no grad: a constant, not a parameter
        self.label = "net"

    def forward(self, x):
        return self.head(self.body(x)) + self.scale


# --- parameter discovery ------------------------------------------------------
def test_sequential_names_and_orders_its_parameters_like_pytorch():
    net = small_net()
    names = [name for name, _ in net.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"]
    expected = [net[0].weight, net[0].bias, net[1].weight, net[1].bias, net[3].weight, net[3].bias]
    assert [id(p) for p in net.parameters()] == [id(p) for p in expected]
    assert [name for name, _ in net.named_buffers()] == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]


def test_nested_modules_own_parameters_come_before_children():
    net = Net()
    names = [name for name, _ in net.named_parameters()]
    assert names == ["scale", "body.0.weight", "body.0.bias", "body.1.0.weight", "body.1.0.bias",
                     "head.weight", "head.bias"]
    assert sum(p.data.size for p in net.parameters()) == 4 * 5 + 5 + 5 + 5 + 2 + 5 * 2 + 2
    assert [name for name, _ in net.named_modules()] == ["", "body", "body.0", "body.1", "body.1.0",
                                                         "body.1.1", "head"]
    assert [type(m).__name__ for m in net.modules()] == ["Net", "Sequential", "Linear", "Sequential",
                                                         "BatchNorm1d", "ReLU", "Linear"]


def test_parameter_names_match_an_equivalent_torch_module():
    torch = pytest.importorskip("torch")

    class TorchNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Sequential(
                torch.nn.BatchNorm1d(5), torch.nn.ReLU()))
            self.scale = torch.nn.Parameter(torch.ones(2))
            self.head = torch.nn.Linear(5, 2)

    theirs = TorchNet()
    assert [n for n, _ in Net().named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert list(Net().state_dict()) == list(theirs.state_dict())  # num_batches_tracked included


def test_shared_layers_and_tensors_are_listed_once():
    shared = nn.Linear(3, 3, rng=0, dtype=F64)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    assert [name for name, _ in net.named_parameters()] == ["0.weight", "0.bias"]
    assert len(list(net.modules())) == 3  # the Sequential, the Linear once, the ReLU

    tied = mg.Tensor(np.ones((3, 3)), requires_grad=True)
    a, b = nn.Linear(3, 3, rng=0, dtype=F64), nn.Linear(3, 3, rng=1, dtype=F64)
    a.weight = tied
    b.weight = tied
    params = list(nn.Sequential(a, b).parameters())
    assert len(params) == 3 and len({id(p) for p in params}) == 3
    # state_dict names every path, as PyTorch does, so a load fills both.
    assert list(nn.Sequential(a, b).state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_attribute_assignment_registers_replaces_and_removes():
    net = Net()
    assert "offset" not in dict(net.named_parameters()) and net.label == "net"
    net.head.bias = None  # removing a parameter, as Linear(bias=False) does
    assert "head.bias" not in dict(net.named_parameters())
    with pytest.raises(TypeError, match=r"Linear.weight is a parameter; got a Tensor of shape "
                                        r"\(5, 2\), expected an nn.Parameter or a leaf Tensor"):
        net.head.weight = net.head.weight.detach()  # requires_grad=False would drop it silently
    x = mg.Tensor(np.ones((2, 5)), requires_grad=True)
    net.cache = x @ net.head.weight  # a computed tensor is a plain attribute, never a parameter
    assert "cache" not in dict(net.named_parameters())
    del net.scale
    assert "scale" not in dict(net.named_parameters()) and not hasattr(net, "scale")


def test_replacing_a_child_keeps_its_place_in_a_sequential(rng):
    model = nn.Sequential(nn.Linear(3, 4, dtype=np.float64), nn.ReLU(), nn.Linear(4, 2, dtype=np.float64))
    setattr(model, "0", nn.Linear(3, 4, dtype=np.float64, rng=5))
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Linear"]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert model(mg.Tensor(rng.normal(size=(5, 3)))).shape == (5, 2)


def test_forgetting_super_init_says_what_to_do():
    class Broken(nn.Module):
        def __init__(self) -> None:
            self.layer = nn.ReLU()

    with pytest.raises(AttributeError, match=r"call super\(\).__init__\(\) at the top of Broken"):
        Broken()


def test_register_buffer_validates_and_state_dict_skips_none():
    m = nn.Module()
    m.register_buffer("stats", np.arange(3.0))
    m.register_buffer("absent", None)
    assert list(m.state_dict()) == ["stats"]
    with pytest.raises(KeyError, match="already has an attribute 'forward'"):
        m.register_buffer("forward", np.zeros(1))
    with pytest.raises(TypeError, match=r"register_buffer\('x'\): got a list; expected a NumPy"):
        m.register_buffer("x", [1.0])
    with pytest.raises(TypeError, match=r"Module.stats is a buffer; got a str"):
        m.stats = "oops"


def test_zero_grad_sets_every_gradient_to_none(rng):
    net = small_net()
    nn.MSELoss()(net(mg.Tensor(rng.normal(size=(6, 4)))), mg.Tensor(np.zeros((6, 2)))).backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_train_and_eval_recurse_and_return_self():
    net = Net()
    assert net.eval() is net
    assert all(not m.training for m in net.modules())
    assert net.train() is net
    assert all(m.training for m in net.modules())
    net.body.eval()
    assert net.training and not net.body[1][0].training
    for mode in ("eval", "False", None, 0):  # PyTorch refuses them too; "eval" meant training
        with pytest.raises(ValueError, match=rf"Net.train: got mode={mode!r}; expected True or False"):
            net.train(mode)
    assert net.training and not net.body[1][0].training  # unchanged by the refused calls
    assert net.train(np.True_) is net and net.body[1][0].training


def test_forward_must_be_defined():
    with pytest.raises(NotImplementedError, match="Module has no forward"):
        nn.Module()(1)


def test_repr_reads_like_pytorch():
    text = repr(nn.Sequential(nn.Linear(4, 3, rng=0), nn.Sequential(nn.BatchNorm1d(3), nn.ReLU())))
    assert text == (
        "Sequential(\n"
        "  (0): Linear(in_features=4, out_features=3, bias=True)\n"
        "  (1): Sequential(\n"
        "    (0): BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
        "    (1): ReLU()\n"
        "  )\n"
        ")"
    )


# --- Linear --------------------------------------------------------------------
def test_linear_forward_is_x_at_w_plus_b(on, device, rng):
    layer = nn.Linear(4, 3, rng=rng, dtype=F64, device=device)
    layer.bias = mg.Tensor(on(rng.normal(size=3)), requires_grad=True)
    x = rng.normal(size=(6, 4))
    out = layer(mg.Tensor(on(x)))
    assert out.device == device
    np.testing.assert_allclose(host(out), x @ host(layer.weight) + host(layer.bias), rtol=1e-12)
    no_bias = nn.Linear(4, 3, bias=False, rng=rng, dtype=F64, device=device)
    assert [n for n, _ in no_bias.named_parameters()] == ["weight"]
    np.testing.assert_allclose(host(no_bias(mg.Tensor(on(x)))), x @ host(no_bias.weight), rtol=1e-12)


def test_linear_initialisation_is_he_normal_seeded_and_float32_by_default():
    layer = nn.Linear(1000, 300, rng=np.random.default_rng(7), device="cpu")
    weight = layer.weight.data
    assert weight.shape == (1000, 300) and weight.dtype == np.float32
    assert layer.bias.data.dtype == np.float32 and not layer.bias.data.any()
    assert abs(weight.std() / np.sqrt(2 / 1000) - 1) < 0.01 and abs(weight.mean()) < 1e-3
    again = nn.Linear(1000, 300, rng=7, device="cpu").weight.data
    np.testing.assert_array_equal(weight, again)  # a seed or a fresh Generator: same weights


def test_linear_layer_rejects_bad_input_through_its_op():
    layer = nn.Linear(4, 3, rng=0, dtype=F64, device="cpu")
    with pytest.raises(ValueError, match=r"^linear: got shapes \(8, 5\) and \(4, 3\)"):
        layer(np.ones((8, 5)))
    with pytest.raises(ValueError, match=r"linear: got shapes \(4,\) and \(4, 3\)"):
        layer(np.ones(4))
    with pytest.raises(TypeError, match=r"linear: operands have different dtypes \(float32, float64, "
                                        r"float64\).*dtype=numpy.float32"):
        layer(np.ones((8, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Linear: got in_features=0; expected an integer >= 1"):
        nn.Linear(0, 3)
    with pytest.raises(TypeError, match=r"Linear: got dtype=.*int64.*expected a float dtype"):
        nn.Linear(2, 3, dtype=np.int64)
    # A float dtype no Tensor holds was refused by Tensor(), naming neither the layer nor dtype=.
    for layer in (nn.Linear, nn.BatchNorm1d):
        with pytest.raises(TypeError, match=rf"{layer.__name__}: got dtype=.*float16.*expected a float dtype"):
            layer(2, 3, dtype=np.float16) if layer is nn.Linear else layer(2, dtype=np.float16)
    # NumPy's own message was "SeedSequence expects int or sequence of ints for entropy not a".
    for seed in ("a", -1, 1.5):
        with pytest.raises(TypeError, match=rf"Linear: got rng={seed!r}; expected None, a non-negative int"):
            nn.Linear(2, 3, rng=seed)


# --- BatchNorm1d ------------------------------------------------------------------
def test_batch_norm_layer_running_statistics_follow_pytorchs_convention(on, device, rng):
    layer = nn.BatchNorm1d(3, momentum=0.2, dtype=F64, device=device)
    gamma, beta = rng.uniform(0.5, 2, 3), rng.normal(size=3)
    layer.weight.data[...] = on(gamma)
    layer.bias.data[...] = on(beta)
    mean, var = np.zeros(3), np.ones(3)
    for _ in range(3):
        x = rng.normal(size=(7, 3)) * [1, 2, 3] + [0, 5, -5]
        out = layer(mg.Tensor(on(x)))
        # Independent: normalise with the biased variance, track the unbiased one.
        expected = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * gamma + beta
        np.testing.assert_allclose(host(out), expected, rtol=1e-10, atol=1e-12)
        mean = 0.8 * mean + 0.2 * x.mean(0)
        var = 0.8 * var + 0.2 * x.var(0, ddof=1)
    np.testing.assert_allclose(host(layer.running_mean), mean, rtol=1e-12)
    np.testing.assert_allclose(host(layer.running_var), var, rtol=1e-12)

    layer.eval()
    x = rng.normal(size=(5, 3))
    out = layer(mg.Tensor(on(x)))
    np.testing.assert_allclose(host(out), (x - mean) / np.sqrt(var + 1e-5) * gamma + beta, rtol=1e-10)
    np.testing.assert_allclose(host(layer.running_mean), mean, rtol=1e-12)  # eval leaves them alone
    np.testing.assert_allclose(host(layer.running_var), var, rtol=1e-12)
    assert layer(mg.Tensor(on(x[:1]))).shape == (1, 3)  # one row is fine in eval mode


def test_batch_norm_layer_matches_torch_over_train_and_eval_calls(rng):
    torch = pytest.importorskip("torch")
    ours = nn.BatchNorm1d(4, momentum=0.3, dtype=F64, device="cpu")
    theirs = torch.nn.BatchNorm1d(4, momentum=0.3, dtype=torch.float64)
    for step in range(4):
        x = rng.normal(size=(6, 4)) * 3 + 1
        if step == 3:
            ours.eval()
            theirs.eval()
        np.testing.assert_allclose(host(ours(mg.Tensor(x))), theirs(torch.tensor(x)).detach().numpy(),
                                   rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-12)


def test_batch_norm_layer_given_data_of_another_dtype_says_so(rng):
    layer = nn.BatchNorm1d(3, device="cpu")  # float32, as in PyTorch
    data = rng.normal(size=(4, 3))  # float64
    # It was "running_mean is a ndarray of shape (3,), dtype float32 ...": a statistic the
    # caller never passed, and no word of the layer's dtype.
    for mode in ("train", "eval"):
        getattr(layer, mode)()
        with pytest.raises(ValueError, match=r"batch_norm: running_mean has dtype float32 but x has dtype "
                                             r"float64; expected one dtype.*x.astype\(numpy.float32\).*"
                                             r"nn.BatchNorm1d\(..., dtype=numpy.float64\)"):
            layer(data)
    np.testing.assert_array_equal(layer.running_mean, 0.0)


def test_batch_norm_layer_ddof_changes_only_the_normalising_variance(rng):
    layer = nn.BatchNorm1d(2, ddof=1, eps=0.0, dtype=F64, device="cpu")
    x = rng.normal(size=(5, 2))
    out = host(layer(mg.Tensor(x)))
    np.testing.assert_allclose(out, (x - x.mean(0)) / x.std(0, ddof=1), rtol=1e-12)  # R's scale()
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * x.var(0, ddof=1), rtol=1e-12)


def test_batch_norm_layer_without_running_stats_or_affine(rng):
    layer = nn.BatchNorm1d(3, affine=False, track_running_stats=False, dtype=F64, device="cpu")
    assert list(layer.parameters()) == [] and layer.state_dict() == {}
    x = rng.normal(size=(4, 3))
    layer.eval()  # no running statistics: eval normalises with the batch, as in PyTorch
    np.testing.assert_allclose(host(layer(mg.Tensor(x))), (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5),
                               rtol=1e-10)


def test_batch_norm_layer_rejects_a_wrong_feature_count_through_its_op():
    layer = nn.BatchNorm1d(3, dtype=F64, device="cpu")
    with pytest.raises(ValueError, match=r"^batch_norm: gamma has shape \(3,\); expected \(4,\) for "
                                         r"input of shape \(8, 4\)$"):
        layer(np.ones((8, 4)))
    with pytest.raises(ValueError, match=r"BatchNorm1d: got momentum=1.5; expected a finite number in "
                                         r"\[0.0, 1.0\]"):
        nn.BatchNorm1d(3, momentum=1.5)


# --- layers together, against PyTorch ----------------------------------------------
def test_network_gradients_match_torch_with_the_weight_transposed(rng):
    torch = pytest.importorskip("torch")
    ours = small_net(seed=5)
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.ReLU(),
                                 torch.nn.Linear(3, 2)).double()
    with torch.no_grad():
        for name, param in ours.named_parameters():
            value = host(param) + rng.normal(size=param.shape) * 0.1  # bias and gamma away from 0, 1
            param.data[...] = value
            theirs.get_parameter(name).copy_(torch.tensor(value.T if name.endswith("weight")
                                                          and value.ndim == 2 else value))
    x, y = rng.normal(size=(8, 4)), rng.normal(size=(8, 2))
    loss = nn.MSELoss()(ours(mg.Tensor(x)), mg.Tensor(y))
    their_loss = torch.nn.MSELoss()(theirs(torch.tensor(x)), torch.tensor(y))
    loss.backward()
    their_loss.backward()
    np.testing.assert_allclose(loss.item(), their_loss.item(), rtol=1e-12)
    for name, param in ours.named_parameters():
        expected = theirs.get_parameter(name).grad.numpy()
        np.testing.assert_allclose(param.grad, expected.T if param.ndim == 2 else expected,
                                   rtol=1e-9, atol=1e-12, err_msg=name)


def test_mse_loss_module_matches_numpy_and_validates_reduction(rng):
    pred, target = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    for reduction, expected in [("mean", ((pred - target) ** 2).mean()),
                                ("sum", ((pred - target) ** 2).sum())]:
        got = nn.MSELoss(reduction)(mg.Tensor(pred), mg.Tensor(target)).item()
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    with pytest.raises(ValueError, match=r"MSELoss: got reduction='avg'; expected one of"):
        nn.MSELoss("avg")


def test_sequential_is_indexable_sized_and_iterable():
    layers = [nn.Linear(4, 3, rng=0), nn.ReLU(), nn.Linear(3, 1, rng=0)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and list(seq) == layers and seq[-1] is layers[2]
    tail = seq[1:]
    assert isinstance(tail, nn.Sequential) and list(tail) == layers[1:]
    with pytest.raises(IndexError, match="index 3 is out of range for 3 modules"):
        seq[3]
    with pytest.raises(TypeError, match=r"Sequential: argument 1 is a Tensor of shape \(2,\); expected "
                                        r"a Module"):
        nn.Sequential(nn.ReLU(), mg.Tensor(np.ones(2)))
    assert seq.append(nn.ReLU()) is seq and len(seq) == 4 and "3" in dict(seq.named_modules())


def test_sequential_grows_by_extend_and_insert_and_applies_the_new_order(rng):
    first, second, third = nn.Linear(3, 3, rng=1, dtype=F64), nn.ReLU(), nn.Linear(3, 2, rng=2, dtype=F64)
    seq = nn.Sequential(first)
    assert seq.extend([third]) is seq
    seq.insert(1, second)
    assert list(seq) == [first, second, third]
    assert [name for name, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = rng.normal(size=(4, 3))
    hidden = np.maximum(x @ first.weight.data + first.bias.data, 0)
    np.testing.assert_allclose(seq(mg.Tensor(x)).numpy(), hidden @ third.weight.data + third.bias.data,
                               rtol=1e-12)


# --- ModuleList ---------------------------------------------------------------------------------
class Tower(nn.Module):
    """Layers held in a ModuleList and called from the parent's forward, the usual pattern."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        self.layers = nn.ModuleList([nn.Linear(4, 3, rng=rng, dtype=F64), nn.BatchNorm1d(3, dtype=F64)])
        self.layers.append(nn.Linear(3, 2, rng=rng, dtype=F64))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_module_list_registers_its_modules_as_children_of_the_parent():
    tower = Tower()
    assert [name for name, _ in tower.named_parameters()] == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "layers.2.weight",
        "layers.2.bias"]
    assert list(tower.parameters())[0] is tower.layers[0].weight
    assert list(tower.state_dict()) == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "layers.1.running_mean",
        "layers.1.running_var", "layers.1.num_batches_tracked", "layers.2.weight", "layers.2.bias"]
    tower.eval()
    assert [m.training for m in tower.layers] == [False, False, False]
    tower.train()
    assert all(m.training for m in tower.layers)


def test_module_list_layers_move_with_the_parent(device, rng):
    tower = Tower().to("cpu")
    for param in tower.parameters():
        param.grad = np.ones(param.shape)
    tower.to(device)
    assert {p.device for p in tower.parameters()} == {device}
    assert {mg.backend.device_of(p.grad) for p in tower.parameters()} == {device}
    assert {mg.backend.device_of(b) for b in tower.buffers()} == {device}


def test_module_list_state_dict_round_trips_through_a_file(tmp_path, rng):
    source = trained(Tower(seed=1), rng).eval()
    nn.save(source, tmp_path / "tower.npz")
    copy = Tower(seed=2).eval()
    assert copy.load_state_dict(nn.load(tmp_path / "tower.npz")) == ([], [])
    x = mg.Tensor(rng.normal(size=(5, 4)))
    np.testing.assert_array_equal(copy(x).numpy(), source(x).numpy())


def test_an_optimizer_built_from_the_parent_steps_the_module_lists_parameters(rng):
    tower = Tower()
    before = [p.data.copy() for p in tower.parameters()]
    opt = mg.optim.SGD(tower.parameters(), lr=0.1)
    assert len(opt.params) == 6
    mg.mse_loss(tower(mg.Tensor(rng.normal(size=(6, 4)))), np.zeros((6, 2))).backward()
    opt.step()
    for param, start in zip(tower.parameters(), before):
        np.testing.assert_allclose(param.data, start - 0.1 * param.grad, rtol=1e-12)
    assert np.abs(tower.layers[2].weight.data - before[4]).max() > 0


def test_module_list_indexes_slices_and_grows_like_a_list():
    a, b, c, d = nn.ReLU(), nn.Linear(2, 2, rng=0), nn.ReLU(), nn.Linear(2, 1, rng=0)
    layers = nn.ModuleList()
    assert len(layers) == 0 and list(layers) == []
    assert layers.extend((m for m in [a, c])) is layers
    layers.insert(1, b)
    layers.insert(-5, d)  # as list.insert: before the start
    assert list(layers) == [d, a, b, c] and len(layers) == 4
    assert layers[0] is d and layers[-1] is c and layers[np.int64(2)] is b
    assert list(dict(layers.named_modules())) == ["", "0", "1", "2", "3"]
    assert [name for name, _ in layers.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    middle = layers[1:3]
    assert type(middle) is nn.ModuleList and list(middle) == [a, b]
    assert [name for name, _ in middle.named_parameters()] == ["1.weight", "1.bias"]  # renumbered
    assert list(layers[::-1]) == [c, b, a, d] and list(layers[9:]) == []
    assert list(nn.ModuleList(nn.Sequential(a, b))) == [a, b]  # any iterable of Modules
    assert "(2): Linear(in_features=2, out_features=2, bias=True)" in repr(layers)


def test_module_list_refuses_what_is_not_a_module_and_changes_nothing():
    layers = nn.ModuleList([nn.ReLU()])
    with pytest.raises(TypeError, match=r"ModuleList: item 1 is a Tensor of shape \(2,\); expected a "
                                        r"Module such as nn.Linear\(4, 3\) or nn.ReLU\(\)"):
        nn.ModuleList([nn.ReLU(), mg.Tensor(np.ones(2))])
    with pytest.raises(TypeError, match=r"ModuleList: got a Linear; expected an iterable of Modules"):
        nn.ModuleList(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"ModuleList.append: got a list; expected a Module"):
        layers.append([nn.ReLU()])
    with pytest.raises(TypeError, match=r"ModuleList.extend: item 1 is a str; expected a Module"):
        layers.extend([nn.ReLU(), "relu"])
    with pytest.raises(TypeError, match=r"ModuleList.insert: got a function; expected a Module"):
        layers.insert(0, mg.relu)
    with pytest.raises(TypeError, match=r"ModuleList.insert: got index '0'; expected an integer"):
        layers.insert("0", nn.ReLU())
    assert len(layers) == 1  # nothing added by any of them
    with pytest.raises(IndexError, match=r"ModuleList: index 1 is out of range for 1 modules"):
        layers[1]
    with pytest.raises(TypeError, match=r"ModuleList: got index '0'; expected an integer or a slice"):
        layers["0"]


def test_a_type_error_raised_while_making_the_modules_is_not_blamed_on_the_iterable():
    class Block(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.fc = nn.Linear(width, width)

    # Block() lacks its argument: that TypeError, not "expected an iterable", must reach the user.
    for make in (nn.ModuleList, nn.ModuleList().extend, nn.Sequential().extend):
        with pytest.raises(TypeError, match=r"missing 1 required positional argument: 'width'"):
            make(Block() for _ in range(2))


def test_calling_a_module_list_says_it_has_no_forward():
    with pytest.raises(NotImplementedError, match=r"ModuleList has no forward\(\): it only holds "
                                                  r"modules.*for layer in self.layers"):
        nn.ModuleList([nn.ReLU()])(mg.Tensor(np.ones(2)))


# --- state dicts and files -------------------------------------------------------------
def trained(net: nn.Module, rng) -> nn.Module:
    """Some train-mode calls, so that weights and running statistics are far from their defaults."""
    for param in net.parameters():
        param.data[...] = to_device(rng.normal(size=param.shape), param.device)
    for _ in range(3):
        net(rng.normal(size=(6, 4)) + 2)  # raw host data follows the layers' device
    return net


def test_state_dict_holds_host_copies_of_parameters_and_buffers(rng):
    net = trained(small_net(), rng)
    state = net.state_dict()
    assert list(state) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                           "1.running_var", "1.num_batches_tracked", "3.weight", "3.bias"]
    assert all(type(v) is np.ndarray for v in state.values())
    np.testing.assert_array_equal(state["1.running_mean"], net[1].running_mean)
    state["0.weight"][...] = 0  # a copy: editing it leaves the model alone
    assert np.abs(net[0].weight.data).sum() > 0


def test_state_dict_round_trip_through_an_npz_file(tmp_path, device, rng):
    source = trained(small_net(seed=1), rng).eval()
    path = tmp_path / "model.weights"  # saved under exactly this name, no suffix added
    nn.save(source, path)
    with np.load(path) as archive:
        assert list(archive.files) == list(source.state_dict())
        assert archive["1.running_var"].dtype == F64

    fresh = small_net(seed=2, device=device)
    arrays_before = [p.data for p in fresh.parameters()] + list(fresh.buffers())
    result = fresh.load_state_dict(nn.load(path))
    assert result.missing_keys == [] and result.unexpected_keys == []
    arrays_after = [p.data for p in fresh.parameters()] + list(fresh.buffers())
    assert all(a is b for a, b in zip(arrays_before, arrays_after))  # copied in place
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value, err_msg=key)
    x = rng.normal(size=(5, 4))
    fresh.eval()
    np.testing.assert_allclose(host(fresh(mg.Tensor(x))), host(source(x)), rtol=1e-12)


def test_load_state_dict_keeps_the_models_dtype():
    net = small_net(dtype=np.float32)
    net.load_state_dict({k: v.astype(F64) + 1 for k, v in net.state_dict().items()})
    assert all(p.dtype == np.float32 for p in net.parameters())
    np.testing.assert_allclose(net[1].running_var, 2.0)


def test_load_state_dict_strict_errors_name_the_keys_and_change_nothing(rng):
    net = trained(small_net(), rng)
    before = net.state_dict()
    missing = dict(before)
    del missing["1.running_mean"]
    with pytest.raises(ValueError, match=r"missing keys \['1.running_mean'\], unexpected keys \[\]"):
        net.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"missing keys \[\], unexpected keys \['2.weight'\]"):
        net.load_state_dict({**before, "2.weight": np.ones(3)})
    wrong = {k: np.zeros_like(v) for k, v in before.items()}
    wrong["3.weight"] = np.zeros((2, 3))  # PyTorch's layout: the transpose of ours
    with pytest.raises(ValueError, match=r"'3.weight' has shape \(2, 3\) in the state dict but \(3, 2\) "
                                         r"in the model"):
        net.load_state_dict(wrong)
    for key, value in net.state_dict().items():  # the zeros were not half-loaded
        np.testing.assert_array_equal(value, before[key], err_msg=key)

    result = net.load_state_dict({k: v * 0 for k, v in missing.items()}, strict=False)
    assert result.missing_keys == ["1.running_mean"] and result.unexpected_keys == []
    assert not net[0].weight.data.any()
    np.testing.assert_array_equal(net[1].running_mean, before["1.running_mean"])


# --- devices ------------------------------------------------------------------------
def test_to_moves_parameters_gradients_and_buffers_in_place(device, rng):
    net = small_net(device="cpu")
    nn.MSELoss()(net(rng.normal(size=(6, 4))), np.zeros((6, 2))).backward()
    params = list(net.parameters())
    expected = {k: v for k, v in net.state_dict().items()}
    grads = [host(p.grad).copy() for p in params]
    assert net.to(device) is net
    assert list(net.parameters()) == params  # the same Tensor objects
    assert all(p.device == device and mg.backend.device_of(p.grad) == device for p in params)
    assert all(mg.backend.device_of(b) == device for b in net.buffers())
    for p, g in zip(params, grads):
        np.testing.assert_array_equal(host(p.grad), g)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, expected[key])
    out = net(mg.Tensor(rng.normal(size=(3, 4))))  # on the default device, which is the test's
    assert out.device == device


def test_load_state_dict_with_a_bad_value_overwrites_nothing():
    layer = nn.Linear(3, 2, dtype=np.float64, device="cpu", rng=0)
    before = layer.weight.numpy()
    with pytest.raises(TypeError, match=r"'bias' has dtype <U1; expected real numbers"):
        layer.load_state_dict({"weight": np.zeros((3, 2)), "bias": np.array(["a", "b"])})
    np.testing.assert_array_equal(layer.weight.numpy(), before)


def test_load_state_dict_refuses_none_and_strings_instead_of_loading_nan_or_parsing_them():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = mg.Tensor(np.float64(1.5), requires_grad=True)  # 0-d: any value "fits"

    module = Scaled()
    for value in (None, "2.5"):
        with pytest.raises(TypeError, match=r"'scale' is a (NoneType|str); expected an array of shape \(\)"):
            module.load_state_dict({"scale": value})
        assert module.scale.item() == 1.5
    module.load_state_dict({"scale": 2})  # a number is still an array of shape ()
    assert module.scale.item() == 2.0


def test_load_state_dict_into_a_read_only_or_broadcast_array_loads_nothing(on, device):
    net = nn.Sequential(nn.Linear(3, 2, dtype=F64, rng=0), nn.BatchNorm1d(2, dtype=F64))
    xp = mg.backend.get_array_module(net[0].weight.data)
    # A zero-stride view: read-only on NumPy, but writable on CuPy, where a copy into it would
    # silently keep one element for both features.
    net[1].running_var = xp.broadcast_to(on(np.ones(1)), (2,))
    before = {k: v.copy() for k, v in net.state_dict().items()}
    new = {k: v + np.arange(1.0, v.size + 1).reshape(v.shape) for k, v in before.items()}
    with pytest.raises(ValueError, match=r"'1.running_var' is read-only or a broadcast view.*nothing was loaded"):
        net.load_state_dict(new)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    if device == "cpu":  # NumPy's read-only flag, on a parameter this time
        net[1].running_var = np.ones(2)
        frozen = np.zeros(2)
        frozen.flags.writeable = False
        net[0].bias = mg.Tensor(frozen, requires_grad=True)
        with pytest.raises(ValueError, match=r"'0.bias' is read-only"):
            net.load_state_dict(new)
        np.testing.assert_array_equal(host(net[0].weight), before["0.weight"])


def test_a_graph_built_before_load_state_dict_cannot_backward():
    layer = nn.Linear(3, 2, dtype=np.float64, device="cpu", rng=0)
    out = layer(mg.Tensor(np.ones((4, 3))))
    layer.load_state_dict(layer.state_dict())
    with pytest.raises(RuntimeError, match="modified in place"):
        out.backward(np.ones((4, 2)))


def test_batch_norm_layer_accepts_numpy_scalars_and_rejects_non_finite_eps():
    layer = nn.BatchNorm1d(3, eps=np.float32(1e-3), momentum=np.float64(0.2), ddof=np.int64(1))
    assert (layer.eps, layer.momentum, layer.ddof) == (pytest.approx(1e-3), 0.2, 1)
    with pytest.raises(ValueError, match="eps=inf; expected a finite number"):
        nn.BatchNorm1d(3, eps=float("inf"))


# --- children, apply, requires_grad_ ------------------------------------------------------------
def tree():
    """Sequential(Linear, Sequential(ReLU, Linear)) and its modules by hand, named."""
    first, relu, last = nn.Linear(3, 4, rng=0, dtype=F64), nn.ReLU(), nn.Linear(4, 2, rng=1, dtype=F64)
    inner = nn.Sequential(relu, last)
    root = nn.Sequential(first, inner)
    return root, dict(root=root, first=first, inner=inner, relu=relu, last=last)


def test_children_are_the_direct_sub_modules_in_order():
    root, m = tree()
    assert [(name, child) for name, child in root.named_children()] == [("0", m["first"]), ("1", m["inner"])]
    assert list(root.children()) == [m["first"], m["inner"]]
    assert list(m["first"].children()) == []
    shared = nn.Linear(2, 2)
    twice = nn.Sequential(shared, shared)
    assert list(twice.named_children()) == [("0", shared)]  # each once, as modules() does


def test_apply_visits_children_before_their_parent_each_module_once():
    root, m = tree()
    seen = []
    assert root.apply(seen.append) is root
    assert seen == [m["first"], m["relu"], m["last"], m["inner"], m["root"]]
    shared = nn.Linear(2, 2)
    seen.clear()
    nn.Sequential(shared, nn.Sequential(shared)).apply(seen.append)
    assert seen.count(shared) == 1 and len(seen) == 3


def test_apply_initialises_weights_in_place(device):
    root, m = tree()

    def init(module):
        if isinstance(module, nn.Linear):
            module.weight.data[...] = 0.5
            module.bias.data[...] = -1.0

    root.to(device).apply(init)
    for layer in (m["first"], m["last"]):
        np.testing.assert_array_equal(host(layer.weight), np.full(layer.weight.shape, 0.5))
        np.testing.assert_array_equal(host(layer.bias), np.full(layer.bias.shape, -1.0))
    with pytest.raises(TypeError, match=r"Sequential.apply: got a str; expected a function of one module"):
        root.apply("init")


def test_requires_grad_freezes_and_unfreezes_every_parameter():
    root, m = tree()
    assert root.requires_grad_(False) is root
    assert [p.requires_grad for p in root.parameters()] == [False] * 4
    assert len(root.state_dict()) == 4  # frozen parameters are still saved
    x = mg.Tensor(np.ones((5, 3)), requires_grad=True)
    root(x).sum().backward()
    assert all(p.grad is None for p in root.parameters()) and x.grad is not None
    m["last"].requires_grad_()
    assert [p.requires_grad for p in root.parameters()] == [False, False, True, True]
    with pytest.raises(TypeError, match=r"Sequential.requires_grad_: got requires_grad='no'; expected True or False"):
        root.requires_grad_("no")
    assert [p.requires_grad for p in root.parameters()] == [False, False, True, True]


def test_flags_of_layers_and_backward_take_booleans_only():
    with pytest.raises(TypeError, match=r"Linear: got bias='False'; expected True or False"):
        nn.Linear(3, 2, bias="False")  # a truthy string must not make a bias
    assert nn.Linear(3, 2, bias=np.bool_(False)).bias is None
    x = mg.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(TypeError, match=r"backward: got retain_graph='yes'; expected True or False"):
        (x * 2.0).sum().backward(retain_graph="yes")
    assert x.grad is None


def test_append_numbers_the_new_module_after_the_others():
    layers = nn.ModuleList([nn.ReLU(), nn.ReLU()])
    extra = nn.Linear(2, 2)
    layers.append(extra)
    assert [name for name, _ in layers.named_children()] == ["0", "1", "2"] and layers[2] is extra
    assert list(layers.state_dict()) == ["2.weight", "2.bias"]
