"""minigraph.manual_seed: the default generators behind Linear's weights and dropout's masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minigraph as mg
from minigraph import backend, nn


@pytest.fixture(autouse=True)
def unseeded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts, and leaves the others, with fresh-entropy default generators."""
    monkeypatch.setattr(backend, "_seed", None)
    monkeypatch.setattr(backend, "_default_generators", {})


def test_linear_weights_come_from_the_seeded_host_stream(device):
    mg.manual_seed(7)
    first, second = nn.Linear(5, 3, dtype=np.float64), nn.Linear(4, 2, dtype=np.float64)
    stream = np.random.default_rng(7)  # the documented draw: Normal(0, 2/in_features), in order
    np.testing.assert_array_equal(first.weight.numpy(), stream.normal(0.0, math.sqrt(2 / 5), (5, 3)))
    np.testing.assert_array_equal(second.weight.numpy(), stream.normal(0.0, math.sqrt(2 / 4), (4, 2)))
    assert first.weight.device == device  # drawn on the host, placed on the default device


def test_reseeding_repeats_and_another_seed_differs():
    mg.manual_seed(1)
    a = nn.Linear(6, 6).weight.numpy()
    mg.manual_seed(1)
    again = nn.Linear(6, 6).weight.numpy()
    mg.manual_seed(2)
    other = nn.Linear(6, 6).weight.numpy()
    np.testing.assert_array_equal(a, again)
    assert not np.array_equal(a, other)


def test_an_explicit_rng_is_not_the_default_stream():
    mg.manual_seed(0)
    seeded = nn.Linear(3, 3, rng=5, dtype=np.float64).weight.numpy()
    np.testing.assert_array_equal(seeded, np.random.default_rng(5).normal(0.0, math.sqrt(2 / 3), (3, 3)))
    # ...and it leaves the default stream where it was.
    after = nn.Linear(3, 3, dtype=np.float64).weight.numpy()
    np.testing.assert_array_equal(after, np.random.default_rng(0).normal(0.0, math.sqrt(2 / 3), (3, 3)))


def test_dropout_masks_come_from_the_devices_seeded_stream(device):
    x = mg.Tensor(np.ones((4, 5), dtype=np.float32))
    mg.manual_seed(3)
    functional = mg.dropout(x, 0.5).numpy()
    layer = nn.Dropout(0.5)(x).numpy()
    xp = backend.get_array_module(x.data)
    stream = xp.random.default_rng(3)  # the device's own generator, as documented
    for got in (functional, layer):
        keep = backend.to_device(stream.random((4, 5), dtype=np.float32) >= 0.5, "cpu")
        np.testing.assert_array_equal(got, np.where(keep, np.float32(2.0), np.float32(0.0)))


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3", None])
def test_a_bad_seed_names_manual_seed(seed):
    with pytest.raises(ValueError, match=rf"manual_seed: got seed={seed!r}".replace("(", r"\(")):
        mg.manual_seed(seed)
    assert backend._seed is None
