"""Checkpoints: state dicts on disk as ``.npz`` archives of host arrays, written atomically.

``nn.save`` and ``nn.load`` are these functions. The format is NumPy's ``.npz`` (a zip
of ``.npy`` files), so ``numpy.load`` reads it too; it is written member by member here
rather than through ``numpy.savez``, whose keyword arguments would swallow keys named
``file`` or ``allow_pickle``. Nothing is ever pickled or unpickled.
"""

from __future__ import annotations

import numbers
import os
import secrets
import stat
import zipfile
from collections.abc import Mapping
from typing import IO, Any

import numpy

from . import backend
from .engine import Tensor

__all__ = ["load", "save"]


def host_copy(value: Any) -> numpy.ndarray:
    """A NumPy copy of an array or Tensor, wherever it lives, sharing no memory with it."""
    if isinstance(value, Tensor):
        value = value.data
    if backend.is_gpu_array(value):
        return value.get()  # already a fresh host array
    return numpy.array(value, copy=True)


def _saved_array(key: Any, value: Any) -> numpy.ndarray:
    """What ``save`` writes for one entry, or a TypeError naming it: ``load`` must read back all."""
    if not isinstance(key, str):
        raise TypeError(f"nn.save: key {key!r} is a {type(key).__name__}; expected strings, as "
                        f"state_dict() gives")
    if isinstance(value, numbers.Number) and not isinstance(value, (bool, complex)):
        value = numpy.asarray(value)  # an epoch or a step count: stored as a 0-d array
    elif not (isinstance(value, (numpy.ndarray, Tensor)) or backend.is_gpu_array(value)):
        raise TypeError(f"nn.save: {key!r} is a {type(value).__name__}; expected arrays, Tensors or "
                        f"numbers, which nn.load reads back without unpickling. Save other state "
                        f"separately (e.g. as JSON)")
    array = host_copy(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"nn.save: {key!r} has dtype {array.dtype}; expected numbers")
    return array


def _write_archive(handle: IO[bytes], arrays: dict[str, numpy.ndarray]) -> None:
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, array in arrays.items():
            with archive.open(key + ".npy", "w", force_zip64=True) as member:
                numpy.lib.format.write_array(member, array, allow_pickle=False)


def _new_temporary(path: str) -> tuple[int, str]:
    """An open descriptor and the name of a new empty file beside ``path``, with the permissions
    ``open(path, "wb")`` would leave: those of the file it replaces, else 0o666 less the umask.

    (``tempfile.mkstemp`` makes 0o600 files, so every checkpoint would become private to its
    owner, unreadable by a group or by a server running as another user.)
    """
    folder, name = os.path.split(path)
    while True:
        temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                                 0o666)  # the system applies the umask
            break
        except FileExistsError:
            continue
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:  # no previous checkpoint: the umask decided
        return descriptor, temporary
    try:
        os.chmod(temporary, mode)
    except OSError:
        pass  # e.g. a file system without permissions; the umask's default stands
    return descriptor, temporary


def save(obj: Any, file: str | os.PathLike | IO[bytes]) -> None:
    """Write a state dict (or a module's or optimizer's ``state_dict()``) to ``file`` as an ``.npz`` archive.

    ``file``: a path, written exactly as given (no suffix is added; a symlink is
    followed, so the file it names is updated), or a binary file object. Values may be arrays (NumPy or CuPy), Tensors or numbers (stored
    as 0-d arrays); anything else is refused before the file is touched. A path
    is written atomically: to a temporary file in the same folder, flushed and
    synced, then renamed over the target, so a failed or interrupted save leaves
    the previous checkpoint intact. The new file has the permissions ``open(path, "wb")``
    would leave: the old file's, or the umask's default. Read it back with ``nn.load``.
    """
    state = obj.state_dict() if callable(getattr(obj, "state_dict", None)) else obj
    if not isinstance(state, Mapping):
        raise TypeError(f"nn.save: got a {type(obj).__name__}; expected a Module, an optimizer or a "
                        f"state dict (model.state_dict())")
    if not isinstance(file, (str, os.PathLike)) and not callable(getattr(file, "write", None)):
        raise TypeError(f"nn.save: file is a {type(file).__name__}; expected a path or a binary "
                        f"file object, e.g. nn.save(model, 'model.npz')")
    arrays = {key: _saved_array(key, value) for key, value in state.items()}
    if not isinstance(file, (str, os.PathLike)):
        _write_archive(file, arrays)
        return
    # Through a symlink ("latest.npz" -> "epoch_10.npz") to the file it names, as open() writes.
    path = os.path.realpath(os.fspath(file))
    folder = os.path.dirname(path)
    descriptor, temporary = _new_temporary(path)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            _write_archive(handle, arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable; not every system lets a folder be opened
        folder_descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder_descriptor)
    except OSError:
        pass
    finally:
        os.close(folder_descriptor)


def load(file: str | os.PathLike | IO[bytes]) -> dict[str, numpy.ndarray]:
    """Read a checkpoint written by ``save`` into a dict of NumPy arrays, in the saved order.

    Pass the result to ``module.load_state_dict``, which copies it onto the
    module's device and dtype. Anything that is not such an archive (a ``.npy``
    or text file, a truncated or empty file, pickled objects) is a ValueError
    naming the file.
    """
    if not isinstance(file, (str, os.PathLike)) and not callable(getattr(file, "read", None)):
        raise TypeError(f"nn.load: file is a {type(file).__name__}; expected a path or a binary "
                        f"file object, e.g. nn.load('model.npz')")
    name = os.fspath(file) if isinstance(file, (str, os.PathLike)) else repr(file)
    arrays = {}
    try:
        with zipfile.ZipFile(file) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"it holds {info.filename!r}, which is not an array")
                with archive.open(info) as member:
                    arrays[info.filename[:-len(".npy")]] = numpy.lib.format.read_array(
                        member, allow_pickle=False)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, zipfile.BadZipFile) and exc.errno is not None:
            raise  # no such file, no permission: the system's own message says it best
        raise ValueError(f"nn.load: {name} is not a minigraph checkpoint (an .npz archive of "
                         f"arrays written by nn.save): {exc}") from None
    return arrays
