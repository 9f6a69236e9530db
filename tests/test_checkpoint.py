"""nn.save / nn.load: atomic writes, what can be saved is what can be loaded, clear errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from minigraph import nn

ROOT = Path(__file__).resolve().parents[1]


def small_state(seed: int = 0) -> dict:
    return nn.Sequential(nn.Linear(4, 3, rng=seed), nn.BatchNorm1d(3), nn.Linear(3, 1, rng=seed)).state_dict()


def leftovers(folder: Path, keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


def test_a_save_that_fails_midway_leaves_the_old_checkpoint_intact_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    nn.save(small_state(0), path)
    before = path.read_bytes()
    written = []
    real_write = np.lib.format.write_array

    def fail_on_the_third(member, array, **kwargs):
        written.append(1)
        if len(written) == 3:
            raise RuntimeError("serialisation failed")
        return real_write(member, array, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", fail_on_the_third)
    with pytest.raises(RuntimeError, match="serialisation failed"):
        nn.save(small_state(1), path)
    assert path.read_bytes() == before
    assert leftovers(tmp_path, "model.npz") == []


def test_a_full_disk_leaves_the_old_checkpoint_intact_and_no_temporary(tmp_path):
    """A real write failure from the OS: a file-size limit makes write() fail like a full disk."""
    path = tmp_path / "model.npz"
    nn.save({"w": np.zeros(10)}, path)
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import resource, signal, sys
        import numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        from minigraph import nn
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get the error (EFBIG), not the signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            nn.save({{"w": np.ones((1024, 1024))}}, {str(path)!r})  # 8 MB against a 1 MB limit
        except OSError as exc:
            print("OSError", exc.errno)
        else:
            print("saved")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OSError"), done.stdout
    assert path.read_bytes() == before
    assert leftovers(tmp_path, "model.npz") == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_a_saved_file_has_the_permissions_open_would_give_it(tmp_path):
    """Not the 0o600 of a bare temporary file: a checkpoint others must read stays readable."""
    import os
    import stat

    def mode(p):
        return stat.S_IMODE(os.stat(p).st_mode)

    umask = os.umask(0o022)
    try:
        (tmp_path / "by_open.bin").write_bytes(b"")
        nn.save(small_state(), tmp_path / "new.npz")
        assert mode(tmp_path / "new.npz") == mode(tmp_path / "by_open.bin") == 0o644
        os.chmod(tmp_path / "new.npz", 0o640)  # chosen by the user: a save over it keeps it
        nn.save(small_state(1), tmp_path / "new.npz")
        assert mode(tmp_path / "new.npz") == 0o640
    finally:
        os.umask(umask)


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges there")
def test_a_save_through_a_symlink_updates_the_file_it_names(tmp_path):
    target, link = tmp_path / "epoch_3.npz", tmp_path / "latest.npz"
    nn.save({"w": np.zeros(2)}, target)
    link.symlink_to(target.name)
    nn.save({"w": np.ones(2)}, link)
    assert link.is_symlink()
    np.testing.assert_array_equal(nn.load(target)["w"], np.ones(2))
    assert leftovers(tmp_path, "") == ["epoch_3.npz", "latest.npz"]


def test_a_successful_save_replaces_the_file_and_round_trips(tmp_path):
    path = tmp_path / "model.npz"
    nn.save(small_state(0), path)
    nn.save(small_state(1), path)
    loaded = nn.load(path)
    expected = small_state(1)
    assert list(loaded) == list(expected)
    for key in expected:
        np.testing.assert_array_equal(loaded[key], expected[key])
    assert leftovers(tmp_path, "model.npz") == []
    with np.load(path) as archive:  # still an ordinary .npz
        assert list(archive.files) == list(expected)


def test_any_key_is_kept_and_numbers_are_stored_as_arrays(tmp_path):
    """numpy.savez's own keywords would swallow keys named file or allow_pickle."""
    state = {"file": np.ones(2), "allow_pickle": np.zeros(3), "epoch": 7, "lr": 0.5}
    nn.save(state, tmp_path / "c.npz")
    loaded = nn.load(tmp_path / "c.npz")
    assert list(loaded) == ["file", "allow_pickle", "epoch", "lr"]
    np.testing.assert_array_equal(loaded["file"], np.ones(2))
    assert loaded["epoch"].shape == () and int(loaded["epoch"]) == 7 and float(loaded["lr"]) == 0.5


@pytest.mark.parametrize("value,message", [
    ({"nested": np.ones(2)}, r"nn.save: 'bad' is a dict; expected arrays, Tensors or numbers"),
    ("text", r"nn.save: 'bad' is a str"),
    (np.array(["a", "b"]), r"nn.save: 'bad' has dtype <U1; expected numbers"),
])
def test_what_load_could_not_read_is_refused_at_save_time_without_touching_the_file(tmp_path, value, message):
    path = tmp_path / "model.npz"
    nn.save({"w": np.ones(2)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=message):
        nn.save({"w": np.ones(2), "bad": value}, path)
    assert path.read_bytes() == before and leftovers(tmp_path, "model.npz") == []


def test_a_module_on_either_device_saves_host_arrays(tmp_path, device):
    net = nn.Linear(3, 2, rng=0)
    assert net.weight.device == device
    nn.save(net, tmp_path / "m.npz")
    loaded = nn.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded["weight"], net.weight.numpy())


def corrupt_files(folder: Path) -> dict[str, Path]:
    good = folder / "good.npz"
    nn.save(small_state(0), good)
    files = {
        "npy": folder / "weights.npy",
        "text": folder / "notes.txt",
        "truncated": folder / "truncated.npz",
        "empty": folder / "empty.npz",
        "pickle": folder / "pickled.npz",
    }
    np.save(files["npy"], np.ones(3))
    files["text"].write_text("not a checkpoint\n")
    files["truncated"].write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    files["empty"].write_bytes(b"")
    np.savez(files["pickle"], obj=np.array([{"a": 1}], dtype=object))
    return files


@pytest.mark.parametrize("kind", ["npy", "text", "truncated", "empty", "pickle"])
def test_load_of_anything_else_names_the_file_and_says_what_is_wrong(tmp_path, kind):
    path = corrupt_files(tmp_path)[kind]
    with pytest.raises(ValueError, match=rf"nn.load: {path}\s*is not a minigraph checkpoint"):
        nn.load(path)


def test_load_of_a_missing_file_is_the_systems_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        nn.load(tmp_path / "absent.npz")


def test_a_pytorch_state_dict_is_refused_with_the_layout_and_how_to_convert():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)  # unseeded, about one draw in 300 put an output near 0, where rtol alone failed
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3), torch.nn.ReLU(),
                                 torch.nn.Linear(3, 3))
    ours = nn.Sequential(nn.Linear(3, 3, rng=0), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 3, rng=0))
    with torch.no_grad():  # two batches into the running statistics and the counter
        for _ in range(2):
            theirs(torch.randn(5, 3))
    theirs.eval()
    ours.eval()
    before = [p.numpy() for p in ours.parameters()]
    with pytest.raises(TypeError, match=r"looks like a PyTorch state dict.*\(in_features, out_features\)"
                                        r".*v\.T if k\.endswith\('weight'\)"):
        ours.load_state_dict(theirs.state_dict())  # square weights: would load silently transposed
    assert all(np.array_equal(a, p.numpy()) for a, p in zip(before, ours.parameters()))
    converted = {k: (v.T if k.endswith("weight") and v.ndim == 2 else v).numpy()
                 for k, v in theirs.state_dict().items()}
    assert ours.load_state_dict(converted) == ([], [])  # the advertised conversion works, as it is
    assert int(ours[1].num_batches_tracked) == 2
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_allclose(ours(x).numpy(), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-5,
                               atol=1e-6)


def test_a_state_dict_with_pytorchs_batch_counter_loads_it_and_an_old_one_without_it_too():
    """num_batches_tracked is a buffer, as in PyTorch: a converted PyTorch state dict carries it
    and it loads; a checkpoint from before minigraph counted batches lacks it and still loads
    with strict=True, the count left as it was (PyTorch's rule for its old checkpoints)."""
    ours = nn.Sequential(nn.Linear(3, 3, rng=0), nn.BatchNorm1d(3))
    state = {k: np.asarray(v) for k, v in ours.state_dict().items()}
    assert state["1.num_batches_tracked"].dtype == np.int64 and state["1.num_batches_tracked"].shape == ()
    state["1.num_batches_tracked"] = np.array(7)
    state["1.running_mean"] = np.full(3, 0.5, dtype=np.float32)
    assert ours.load_state_dict(state) == ([], [])
    assert int(ours[1].num_batches_tracked) == 7
    old = {k: v for k, v in state.items() if k != "1.num_batches_tracked"}
    old["1.running_mean"] = np.full(3, 0.25, dtype=np.float32)
    assert ours.load_state_dict(old) == ([], [])  # strict, yet not missing
    assert int(ours[1].num_batches_tracked) == 7
    np.testing.assert_array_equal(ours[1].running_mean, 0.25)
    with pytest.raises(ValueError, match=r"missing keys \['1.running_var'\]"):
        ours.load_state_dict({k: v for k, v in old.items() if k != "1.running_var"})  # others still count


def test_a_transposed_weight_names_the_layout():
    net = nn.Linear(4, 3, rng=0)
    with pytest.raises(ValueError, match=r"'weight' has shape \(3, 4\) .* \(4, 3\) in the model.*"
                                         r"It is the transpose: minigraph's Linear.weight is "
                                         r"\(in_features, out_features\)"):
        net.load_state_dict({"weight": np.ones((3, 4)), "bias": np.zeros(3)})


def test_save_and_load_name_a_file_argument_that_is_no_path_or_file(tmp_path):
    # Both failed inside zipfile: "'NoneType' object has no attribute 'write'" (or 'seek').
    with pytest.raises(TypeError, match=r"nn.save: file is a NoneType; expected a path or a binary file"):
        nn.save({"a": np.ones(2)}, None)
    with pytest.raises(TypeError, match=r"nn.load: file is a NoneType; expected a path or a binary file"):
        nn.load(None)
    with pytest.raises(TypeError, match=r"nn.save: got a str; expected a Module, an optimizer or a state dict"):
        nn.save(str(tmp_path / "m.npz"), {"a": np.ones(2)})  # torch.save's order, reversed
    assert list(tmp_path.iterdir()) == []
