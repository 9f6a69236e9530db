"""minigraph.nn.init: large draws against the closed-form bounds, standard deviations and
distribution functions; the (in_features, out_features) fan convention; seeds; the fill in place
(same array, optimizers keep stepping it, old graphs refuse backward); and torch.nn.init's gains
and scales on the transposed shape."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minigraph as mg
import minigraph.nn.init as init
from minigraph import backend, nn, optim
from minigraph.backend import to_device

SHAPE = (400, 500)  # 200,000 values: sample moments within a few parts per thousand
N = SHAPE[0] * SHAPE[1]
DTYPES = (np.float32, np.float64)


@pytest.fixture(autouse=True)
def unseeded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts, and leaves the others, with fresh-entropy default generators."""
    monkeypatch.setattr(backend, "_seed", None)
    monkeypatch.setattr(backend, "_default_generators", {})


def host(tensor):
    return to_device(tensor.data, "cpu").astype(np.float64)


def weight(shape=SHAPE, dtype=np.float32):
    """A leaf parameter on the test's default device, full of NaN so that a value left unfilled shows."""
    return nn.Parameter(np.full(shape, np.nan, dtype=dtype))


def assert_uniform(values, low, high, dtype):
    """Inside [low, high] (as the dtype rounds them), reaching near both ends, with U(low, high)'s
    mean and standard deviation within five standard errors."""
    lo, hi = float(np.asarray(low, dtype)), float(np.asarray(high, dtype))
    width = high - low
    assert lo <= values.min() and values.max() <= hi
    # P(no value within 20·width/n of an end) = (1 - 20/n)**n ≈ e**-20.
    near = 20 * width / values.size
    assert values.min() < low + near and values.max() > high - near
    mean, var = (low + high) / 2, width ** 2 / 12
    assert abs(values.mean() - mean) < 5 * math.sqrt(var / values.size)
    # The sample variance's standard error for a uniform: sqrt((mu4 - var²) / n), mu4 = width⁴/80.
    assert abs(values.var() - var) < 5 * math.sqrt((width ** 4 / 80 - var ** 2) / values.size)


def assert_normal(values, mean, std):
    assert abs(values.mean() - mean) < 5 * std / math.sqrt(values.size)
    assert abs(values.std() - std) < 5 * std / math.sqrt(2 * values.size)


# --- the distributions -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_uniform_fills_with_u_a_b(device, dtype):
    w = weight(dtype=dtype)
    assert init.uniform_(w, -0.5, 2.0) is w
    assert w.dtype == dtype and w.device == device
    assert_uniform(host(w), -0.5, 2.0, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_normal_fills_with_n_mean_std(device, dtype):
    w = weight(dtype=dtype)
    assert init.normal_(w, mean=1.5, std=0.25) is w
    assert w.dtype == dtype and w.device == device
    assert_normal(host(w), 1.5, 0.25)


@pytest.mark.parametrize("fill, expected", [(lambda t: init.constant_(t, -2.5), -2.5),
                                            (init.ones_, 1.0), (init.zeros_, 0.0),
                                            (lambda t: init.constant_(t, -math.inf), -math.inf)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_ones_and_zeros_fill_every_element(device, dtype, fill, expected):
    w = weight((3, 4), dtype)
    assert fill(w) is w
    assert w.dtype == dtype and w.device == device
    assert (host(w) == expected).all()


def kaiming_bound(fan, a=0.0, nonlinearity="leaky_relu"):
    """gain · √(3 / fan), the gain written out from He et al.'s derivation."""
    gain = math.sqrt(2.0 / (1 + a * a)) if nonlinearity == "leaky_relu" else \
        {"relu": math.sqrt(2.0), "linear": 1.0, "tanh": 5.0 / 3}[nonlinearity]
    return gain * math.sqrt(3.0 / fan)


@pytest.mark.parametrize("kwargs, fan", [({}, SHAPE[0]), ({"mode": "fan_out"}, SHAPE[1]),
                                         ({"a": 0.2}, SHAPE[0]), ({"nonlinearity": "relu"}, SHAPE[0]),
                                         ({"nonlinearity": "tanh", "mode": "FAN_OUT"}, SHAPE[1])])
@pytest.mark.parametrize("dtype", DTYPES)
def test_kaiming_uniform_reaches_its_bound_and_no_further(device, dtype, kwargs, fan):
    w = weight(dtype=dtype)
    assert init.kaiming_uniform_(w, **kwargs) is w
    assert w.dtype == dtype
    bound = kaiming_bound(fan, kwargs.get("a", 0.0), kwargs.get("nonlinearity", "leaky_relu"))
    assert_uniform(host(w), -bound, bound, dtype)


@pytest.mark.parametrize("kwargs, fan", [({}, SHAPE[0]), ({"mode": "fan_out", "a": 0.5}, SHAPE[1])])
@pytest.mark.parametrize("dtype", DTYPES)
def test_kaiming_normal_has_std_gain_over_root_fan(device, dtype, kwargs, fan):
    w = weight(dtype=dtype)
    assert init.kaiming_normal_(w, **kwargs) is w
    assert w.dtype == dtype
    assert_normal(host(w), 0.0, kaiming_bound(fan, kwargs.get("a", 0.0)) / math.sqrt(3.0))


@pytest.mark.parametrize("gain", [1.0, 0.5])
@pytest.mark.parametrize("dtype", DTYPES)
def test_xavier_uniform_and_normal_follow_glorot(device, dtype, gain):
    bound = gain * math.sqrt(6.0 / (SHAPE[0] + SHAPE[1]))
    w = weight(dtype=dtype)
    assert init.xavier_uniform_(w, gain=gain) is w
    assert_uniform(host(w), -bound, bound, dtype)
    assert init.xavier_normal_(w, gain) is w
    assert w.dtype == dtype
    assert_normal(host(w), 0.0, gain * math.sqrt(2.0 / (SHAPE[0] + SHAPE[1])))


def truncated_normal_cdf(x, mean, std, low, high):
    """The CDF of N(mean, std²) conditioned on [low, high], from the survival function
    S(z) = erfc(z/√2)/2, which keeps its precision far in the right tail."""
    survival = np.frompyfunc(lambda z: 0.5 * math.erfc(z / math.sqrt(2.0)), 1, 1)
    alpha, beta = (low - mean) / std, (high - mean) / std
    z = (np.asarray(x, np.float64) - mean) / std
    return ((survival(alpha) - survival(z)) / (survival(alpha) - survival(beta))).astype(np.float64)


@pytest.mark.parametrize("mean, std, low, high", [
    (0.0, 1.0, -2.0, 2.0),         # the default: most of the mass inside, plain rejection
    (0.5, 2.0, -math.inf, 1.0),    # a half line holding most of the mass
    (0.0, 1.0, 2.0, 3.0),          # a narrow band in the tail: the uniform proposal
    (1.0, 0.5, 4.0, math.inf),     # a one-sided tail six std out: the exponential proposal
    (0.0, 1.0, -math.inf, -1.0),   # the same, mirrored and nearer, where the proposal is further off
])
def test_trunc_normal_has_the_truncated_distribution(device, mean, std, low, high):
    """Kolmogorov-Smirnov against the closed-form CDF: √n·D exceeds 1.95 with probability 0.001
    (seeded, so that the suite does not fail one run in a thousand)."""
    w = weight((200, 100), np.float64)
    assert init.trunc_normal_(w, mean, std, low, high, generator=2024) is w
    values = np.sort(host(w).ravel())
    assert low <= values[0] and values[-1] <= high
    cdf = truncated_normal_cdf(values, mean, std, low, high)
    n = values.size
    distance = max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max())
    assert math.sqrt(n) * distance < 1.95


def test_trunc_normal_in_float32_stays_within_the_rounded_bounds_and_a_equal_b_fills_a(device):
    w = weight((100, 100), np.float32)
    init.trunc_normal_(w, 0.0, 1.0, -0.1, 0.1)
    values = host(w)
    assert w.dtype == np.float32
    assert float(np.float32(-0.1)) <= values.min() and values.max() <= float(np.float32(0.1))
    init.trunc_normal_(w, 0.0, 1.0, 0.7, 0.7)
    assert (host(w) == float(np.float32(0.7))).all()


@pytest.mark.parametrize("shape", [(30, 8), (8, 30), (12, 12)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_orthogonal_gives_orthonormal_rows_or_columns_times_gain(device, dtype, shape):
    w = weight(shape, dtype)
    assert init.orthogonal_(w, gain=2.0) is w
    values = host(w)
    gram = values.T @ values if shape[0] >= shape[1] else values @ values.T
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(gram, 4.0 * np.eye(min(shape)), atol=tolerance)


def test_orthogonal_is_uniformly_random_so_its_entries_are_centred():
    """Haar-distributed Q has E[Q₀₀] = 0 (and Var = 1/3 for 3×3). QR alone, without the sign
    correction, gives R a diagonal of fixed sign and Q₀₀ a mean near ±1/2."""
    w = weight((3, 3), np.float64)
    generator = np.random.default_rng(0)
    corners = np.array([host(init.orthogonal_(w, generator=generator))[0, 0] for _ in range(2000)])
    assert abs(corners.mean()) < 5 * math.sqrt(1 / 3 / corners.size)


# --- the fan convention --------------------------------------------------------------------------

def test_fan_in_is_in_features_of_a_non_square_linear(device):
    """Linear.weight is (in_features, out_features): fan_in must be 300 here, as PyTorch's would be
    for nn.Linear(300, 20), whose weight it stores as (20, 300)."""
    layer = nn.Linear(300, 20)
    init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    assert_uniform(host(layer.weight), -math.sqrt(6 / 300), math.sqrt(6 / 300), np.float32)
    init.kaiming_uniform_(layer.weight, mode="fan_out", nonlinearity="relu")
    assert_uniform(host(layer.weight), -math.sqrt(6 / 20), math.sqrt(6 / 20), np.float32)


# --- generators and seeds ------------------------------------------------------------------------

FILLS = {
    "uniform_": lambda t, **g: init.uniform_(t, -1.0, 1.0, **g),
    "normal_": lambda t, **g: init.normal_(t, 0.0, 1.0, **g),
    "xavier_uniform_": init.xavier_uniform_,
    "xavier_normal_": init.xavier_normal_,
    "kaiming_uniform_": init.kaiming_uniform_,
    "kaiming_normal_": init.kaiming_normal_,
    "trunc_normal_": init.trunc_normal_,
    "orthogonal_": init.orthogonal_,
}
CONSTANTS = {"constant_": lambda t: init.constant_(t, 0.5), "ones_": init.ones_, "zeros_": init.zeros_}


@pytest.mark.parametrize("name", FILLS)
def test_a_seed_repeats_the_draw_on_every_device_and_an_int_equals_its_generator(device, name):
    fill = FILLS[name]
    first = host(fill(weight((6, 5), np.float64), generator=11))
    again = host(fill(weight((6, 5), np.float64), generator=np.random.default_rng(11)))
    on_cpu = host(fill(nn.Parameter(np.zeros((6, 5)), device="cpu"), generator=11))
    other = host(fill(weight((6, 5), np.float64), generator=12))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, on_cpu)  # drawn on the host whatever the device
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("name", FILLS)
def test_without_a_generator_manual_seed_repeats_the_draw(name):
    fill = FILLS[name]
    mg.manual_seed(5)
    first, second = host(fill(weight((6, 5)))), host(fill(weight((6, 5))))
    mg.manual_seed(5)
    np.testing.assert_array_equal(host(fill(weight((6, 5)))), first)
    assert not np.array_equal(first, second)  # the stream moves on between calls


def test_the_default_generator_is_the_one_linear_draws_from():
    """One host stream serves both: after manual_seed, normal_ takes the first values and the
    Linear made next the following ones."""
    mg.manual_seed(9)
    filled = host(init.normal_(weight((4, 3), np.float64)))
    linear = nn.Linear(4, 3, dtype=np.float64).weight.numpy()
    stream = np.random.default_rng(9)
    np.testing.assert_array_equal(filled, stream.normal(0.0, 1.0, size=(4, 3)))
    np.testing.assert_array_equal(linear, stream.normal(0.0, math.sqrt(2 / 4), size=(4, 3)))


# --- in place: the same array, optimizers, versions ----------------------------------------------

@pytest.mark.parametrize("name", [*FILLS, *CONSTANTS])
def test_the_fill_is_in_place_and_an_optimizer_still_steps_the_parameter(device, name):
    fill = FILLS.get(name) or CONSTANTS[name]
    layer = nn.Linear(4, 3, bias=False)
    opt = optim.SGD(layer.parameters(), lr=0.1)
    array = layer.weight.data
    assert fill(layer.weight) is layer.weight
    assert layer.weight.data is array and layer.weight.is_leaf and layer.weight.requires_grad
    filled = host(layer.weight)
    assert not np.isnan(filled).any()
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    opt.zero_grad()
    mg.sum(layer(mg.Tensor(x))).backward()
    opt.step()
    # d sum(x W) / dW = column sums of x, repeated for each output.
    expected = filled - 0.1 * np.repeat(x.sum(axis=0)[:, None], 3, axis=1)
    np.testing.assert_allclose(host(layer.weight), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", [*FILLS, *CONSTANTS])
def test_a_graph_built_before_the_fill_refuses_backward(device, name):
    fill = FILLS.get(name) or CONSTANTS[name]
    layer = nn.Linear(4, 3)
    x = mg.Tensor(np.ones((2, 4), np.float32))
    stale = mg.sum(layer(x))
    fill(layer.weight)
    with pytest.raises(RuntimeError, match="modified in place"):
        stale.backward()
    mg.sum(layer(x)).backward()  # a graph built after the fill is fine
    assert layer.weight.grad is not None


# --- edge cases and errors -----------------------------------------------------------------------

def test_empty_tensors_are_left_alone_and_kaiming_warns_as_pytorch():
    for kaiming in (init.kaiming_uniform_, init.kaiming_normal_):
        for shape in ((0, 3), (0,), (2, 0, 4)):
            empty = weight(shape)
            with pytest.warns(UserWarning, match=f"{kaiming.__name__}: initializing a zero-element"):
                assert kaiming(empty) is empty
            assert empty._version[0] == 0
    for fill in (init.xavier_uniform_, init.xavier_normal_, init.orthogonal_):  # PyTorch's xavier divides by 0
        assert host(fill(weight((0, 0)))).shape == (0, 0)


@pytest.mark.parametrize("name", ["xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
                                  "orthogonal_"])
def test_matrix_initialisers_refuse_other_ranks(name):
    fill = FILLS[name]
    for shape in ((5,), ()):
        with pytest.raises(ValueError, match=rf"{name}: got a tensor of shape .*expected 2 dimensions"):
            fill(weight(shape))
    with pytest.raises(ValueError, match=rf"{name}: .*\(2, 3, 4\).*no convolutions"):
        fill(weight((2, 3, 4)))


@pytest.mark.parametrize("name", [*FILLS, *CONSTANTS])
def test_only_leaf_tensors_are_taken(name):
    fill = FILLS.get(name) or CONSTANTS[name]
    with pytest.raises(TypeError, match=rf"{name}: got a numpy.ndarray of float32; expected a minigraph Tensor"):
        fill(np.zeros((3, 4), np.float32))
    with pytest.raises(TypeError, match=rf"{name}: got a numpy.ndarray of int64"):
        fill(np.zeros((3, 4), np.int64))
    with pytest.raises(TypeError, match=rf"{name}: got a list"):
        fill([[0.0, 1.0], [2.0, 3.0]])
    computed = weight((3, 4)) * 2.0
    with pytest.raises(ValueError, match=rf"{name}: got a Tensor computed by an op"):
        fill(computed)
    frozen = np.zeros((3, 4), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=rf"{name}: the Tensor's array is read-only"):
        fill(mg.Tensor(frozen))


@pytest.mark.parametrize("name", FILLS)
@pytest.mark.parametrize("generator", ["seed", -1, True, 1.5])
def test_a_bad_generator_is_named(name, generator):
    with pytest.raises(TypeError, match=rf"{name}: got generator={generator!r}.*numpy.random.Generator"):
        FILLS[name](weight((3, 4)), generator=generator)


@pytest.mark.parametrize("call, message", [
    (lambda w: init.uniform_(w, 1.0, 0.0), r"uniform_: got a=1.0 > b=0.0; expected a <= b"),
    (lambda w: init.uniform_(w, -math.inf, 0.0), r"uniform_: got a=-inf; expected a finite number"),
    (lambda w: init.uniform_(w, -1e308, 1e308), r"uniform_: .*overflows float64"),
    (lambda w: init.normal_(w, 0.0, -1.0), r"normal_: got std=-1.0; expected a finite number in \[0.0, inf\)"),
    (lambda w: init.normal_(w, math.nan), r"normal_: got mean=nan"),
    (lambda w: init.constant_(w, math.nan), r"constant_: got val=nan"),
    (lambda w: init.constant_(w, 1e39), r"constant_: got val=1e\+39, beyond the range of .* float32"),
    (lambda w: init.constant_(w, "1"), r"constant_: got val='1'"),
    (lambda w: init.trunc_normal_(w, std=0.0), r"trunc_normal_: got std=0.0; expected a finite number in \(0.0"),
    (lambda w: init.trunc_normal_(w, a=2.0, b=-2.0), r"trunc_normal_: got a=2.0 > b=-2.0"),
    (lambda w: init.xavier_uniform_(w, gain=-1.0), r"xavier_uniform_: got gain=-1.0"),
    (lambda w: init.xavier_normal_(w, gain=None), r"xavier_normal_: got gain=None"),
    (lambda w: init.kaiming_uniform_(w, mode="fan"), r"kaiming_uniform_: got mode='fan'; expected 'fan_in' or"),
    (lambda w: init.kaiming_normal_(w, nonlinearity="gelu"), r"kaiming_normal_: got nonlinearity='gelu'; expected one of"),
    (lambda w: init.kaiming_uniform_(w, a=True), r"kaiming_uniform_: got a=True"),
    (lambda w: init.orthogonal_(w, gain=math.inf), r"orthogonal_: got gain=inf"),
])
def test_bad_arguments_are_named_and_leave_the_tensor_alone(call, message):
    w = weight((3, 4))
    with pytest.raises(ValueError, match=message):
        call(w)
    assert np.isnan(host(w)).all() and w._version[0] == 0


def test_calculate_gain_closed_forms_and_errors():
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("conv2d") == 1
    assert init.calculate_gain("sigmoid") == 1 and init.calculate_gain("tanh") == 5 / 3
    assert init.calculate_gain("relu") == math.sqrt(2) and init.calculate_gain("selu") == 0.75
    assert init.calculate_gain("leaky_relu") == math.sqrt(2 / (1 + 0.01 ** 2))
    assert init.calculate_gain("leaky_relu", 0.2) == math.sqrt(2 / 1.04)
    assert init.calculate_gain("leaky_relu", np.float32(0.5)) == math.sqrt(2 / 1.25)
    assert init.calculate_gain("relu", "ignored, as in PyTorch") == math.sqrt(2)
    with pytest.raises(ValueError, match=r"calculate_gain: got nonlinearity='ReLU'; expected one of .*'relu'"):
        init.calculate_gain("ReLU")
    with pytest.raises(ValueError, match=r"calculate_gain: got nonlinearity=None"):
        init.calculate_gain(None)
    with pytest.raises(ValueError, match=r"calculate_gain: got param=True"):
        init.calculate_gain("leaky_relu", True)


def test_nn_init_is_importable_as_pytorch_spells_it():
    import minigraph.nn.init as by_path
    from minigraph.nn.init import kaiming_uniform_

    assert by_path is nn.init and kaiming_uniform_ is init.kaiming_uniform_


# --- against torch.nn.init -----------------------------------------------------------------------

NONLINEARITIES = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                  "conv_transpose3d", "sigmoid", "tanh", "relu", "selu", "leaky_relu"]


def test_calculate_gain_equals_torch():
    torch = pytest.importorskip("torch")
    for name in NONLINEARITIES:
        assert init.calculate_gain(name) == torch.nn.init.calculate_gain(name)
    for slope in (None, 0, 0.2, -0.5, 3, 1e-3):
        assert init.calculate_gain("leaky_relu", slope) == torch.nn.init.calculate_gain("leaky_relu", slope)


def scale_of(draw, unit):
    """The one scale s with draw = s · unit (unit: the same stream's U(-1, 1) or N(0, 1) values);
    values near 0 are left out, where a uniform's a + (b - a)·u cancels and the ratio is noise."""
    keep = np.abs(unit) > 1e-3
    ratio = np.asarray(draw, np.float64)[keep] / np.asarray(unit, np.float64)[keep]
    assert ratio.max() - ratio.min() <= 1e-12 * abs(ratio.mean())  # truly one scale
    return float(np.median(ratio))


KAIMING_ARGUMENTS = ({}, {"mode": "fan_out"}, {"a": 0.3}, {"nonlinearity": "tanh"},
                     {"mode": "fan_out", "nonlinearity": "relu"})
SCALED = [(kind, kwargs) for kind in ("kaiming_uniform_", "kaiming_normal_") for kwargs in KAIMING_ARGUMENTS] + \
    [(kind, kwargs) for kind in ("xavier_uniform_", "xavier_normal_") for kwargs in ({}, {"gain": 0.7})]


@pytest.mark.parametrize("kind, kwargs", SCALED)
def test_kaiming_and_xavier_scales_equal_torchs_on_the_transposed_shape(kind, kwargs):
    """Ours on (in_features, out_features) against torch's on (out_features, in_features): each
    scale is read off a draw as its ratio to the same stream's unit draw."""
    torch = pytest.importorskip("torch")
    in_features, out_features = 70, 9
    normal = kind.endswith("normal_")

    ours = host(getattr(init, kind)(weight((in_features, out_features), np.float64), generator=3, **kwargs))
    unit = weight((in_features, out_features), np.float64)
    unit = host(init.normal_(unit, generator=3) if normal else init.uniform_(unit, -1.0, 1.0, generator=3))

    def torch_draw(fill, *args, **options):
        return fill(torch.empty(out_features, in_features, dtype=torch.float64), *args,
                    generator=torch.Generator().manual_seed(3), **options).numpy()

    theirs = torch_draw(getattr(torch.nn.init, kind), **kwargs)
    their_unit = torch_draw(torch.Tensor.normal_, 0.0, 1.0) if normal else torch_draw(torch.Tensor.uniform_, -1.0, 1.0)
    assert scale_of(ours, unit) == pytest.approx(scale_of(theirs, their_unit), rel=1e-12)
