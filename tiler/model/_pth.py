"""Reading PyTorch checkpoints (``.pth``) into NumPy arrays, without PyTorch.

Pretrained weights ship inside packages of the registries as PyTorch state
dicts; tiler converts them into Keras encoders (:mod:`tiler.model._encoders`)
and must not need a 700 MB ``torch`` install to do it. Two layouts exist:

* the **legacy** format of ``torch.save`` before PyTorch 1.6: five pickles in
  a row (a magic number, the protocol version 1001, system information, the
  object with tensors as persistent references to storages, the sorted storage
  keys), then each storage's raw little-endian bytes preceded by its element
  count (int64);
* the **zip** format since 1.6: ``ARCHIVE/data.pkl`` holds the object, each
  storage is the file ``ARCHIVE/data/KEY``.

Only what a state dict needs is unpickled: an ordered dict, tensors rebuilt
from storages (``torch._utils._rebuild_tensor_v2``) and the storage types; any
other class is refused, so a checkpoint cannot run code (the safety of
``torch.load(weights_only=True)``).

References
----------
PyTorch, ``torch/serialization.py`` (``_legacy_save``, ``_legacy_load``,
``_save``, ``_load``) and ``torch/_utils.py`` (``_rebuild_tensor_v2``),
https://github.com/pytorch/pytorch.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from typing import Any, BinaryIO, Union

import numpy as np

from tiler.errors import ModelFileError

__all__ = ["read_state_dict"]

#: The first pickle of a legacy checkpoint (``torch.serialization.MAGIC_NUMBER``).
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
#: The legacy protocol version (``torch.serialization.PROTOCOL_VERSION``).
PROTOCOL_VERSION = 1001

#: Storage classes of a state dict and their element types.
_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGES[self.name])


@dataclass(frozen=True)
class _TensorRef:
    """A tensor before its storage is read: the storage key, offset, shape and strides (in elements)."""

    key: str
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor(storage: str, offset: int, size, stride, *_: Any) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(int(v) for v in size), tuple(int(v) for v in stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a state dict, recording each storage it references and refusing every other class."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.storages: dict[str, tuple[np.dtype, int]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"a state dict holds no {module}.{name}; refused (it could run code)")

    def persistent_load(self, pid: Any) -> str:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent reference {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        self.storages[str(key)] = (storage_type.dtype, int(numel))
        return str(key)


def _materialise(obj: Any, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise ModelFileError(f"the checkpoint holds a {type(obj).__name__}, not a state dict")
    out = {}
    for name, ref in obj.items():
        if not isinstance(ref, _TensorRef):
            continue  # e.g. a version number beside the tensors
        storage = data[ref.key]
        item = storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(storage[ref.offset:], shape=ref.shape,
                                               strides=tuple(s * item for s in ref.strides), writeable=False)
        out[str(name)] = np.ascontiguousarray(view).copy()  # C-contiguous, free of the storage
    return out


def _read_legacy(f: BinaryIO, path: str) -> dict[str, np.ndarray]:
    if pickle.load(f) != MAGIC_NUMBER:  # noqa: S301 - a bare integer; the object itself is read restricted
        raise ModelFileError(f"{path!r} is not a PyTorch checkpoint (no magic number)")
    if pickle.load(f) != PROTOCOL_VERSION:  # noqa: S301
        raise ModelFileError(f"{path!r}: unknown PyTorch legacy protocol version")
    info = _StateDictUnpickler(f).load()  # system information: plain dicts only
    if not info.get("little_endian", True):
        raise ModelFileError(f"{path!r} was saved on a big-endian machine; not supported")
    unpickler = _StateDictUnpickler(f)
    obj = unpickler.load()
    keys = _StateDictUnpickler(f).load()
    data = {}
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        dtype, expected = unpickler.storages[str(key)]
        raw = f.read(numel * dtype.itemsize)
        if numel != expected or len(raw) != numel * dtype.itemsize:
            raise ModelFileError(f"{path!r} is truncated (storage {key})")
        data[str(key)] = np.frombuffer(raw, dtype)
    return _materialise(obj, data)


def _read_zip(path: str) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise ModelFileError(f"{path!r} is a zip archive without data.pkl: not a PyTorch checkpoint")
        root = pkl[0][: -len("data.pkl")]
        with zf.open(pkl[0]) as f:
            unpickler = _StateDictUnpickler(f)
            obj = unpickler.load()
        data = {key: np.frombuffer(zf.read(f"{root}data/{key}"), dtype)[:numel]
                for key, (dtype, numel) in unpickler.storages.items()}
    return _materialise(obj, data)


def read_state_dict(path: Union[str, os.PathLike]) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state-dict checkpoint, as NumPy arrays.

    Parameters
    ----------
    path : path-like
        A ``.pth`` file saved by ``torch.save(model.state_dict(), path)``, in
        the legacy (before PyTorch 1.6) or the zip format.

    Returns
    -------
    dict of str to ndarray
        Parameter name -> array of the tensor's shape and dtype (float32 for
        weights; int64 for batch-norm counters), C-contiguous, in the
        checkpoint's order.

    Raises
    ------
    ModelFileError
        If the file is missing, truncated, not a PyTorch checkpoint, or holds
        anything other than a state dict (refused unread: it could run code).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"checkpoint {path!r} does not exist")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        with open(path, "rb") as f:
            return _read_legacy(f, path)
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError, ValueError) as exc:
        raise ModelFileError(f"cannot read the PyTorch checkpoint {path!r}: {exc}") from None
