"""Read a PyTorch state dict saved in the legacy (pre-zip, torch < 1.6) format, without torch.

The legacy file is five things back to back:

1. a pickle of the magic number ``0x1950a86a20f9469cfc6c``,
2. a pickle of the protocol version (1001),
3. a pickle of system info (endianness, type sizes),
4. a pickle of the object itself (here an ``OrderedDict`` of tensors), where every tensor is
   ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and every storage is
   a *persistent id* ``("storage", torch.FloatStorage, key, location, numel, view_metadata)``,
5. a pickle of the list of storage keys, then, for each key in that order, the storage's
   element count as a little-endian int64 followed by its raw bytes.

A pickle may name any importable callable, so unpickling an untrusted file with
``pickle.load`` can run arbitrary code. :class:`_RestrictedUnpickler` resolves only the few
names a state dict needs (``collections.OrderedDict``, ``_rebuild_tensor_v2`` and the storage
types) to harmless local stand-ins; anything else is refused with :class:`TorchFormatError`.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class TorchFormatError(ValueError):
    """The file is not a legacy PyTorch state dict this reader can (or may) read."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co: only says which numpy dtype it holds."""

    name: str
    dtype: np.dtype


# torch storage class name -> little-endian numpy dtype of its elements.
_STORAGE_TYPES = {
    name: _StorageType(name, np.dtype(code))
    for name, code in {
        "FloatStorage": "<f4",
        "DoubleStorage": "<f8",
        "HalfStorage": "<f2",
        "LongStorage": "<i8",
        "IntStorage": "<i4",
        "ShortStorage": "<i2",
        "CharStorage": "i1",
        "ByteStorage": "u1",
        "BoolStorage": "?",
    }.items()
}


@dataclass(frozen=True)
class _StorageRef:
    key: str
    type: _StorageType
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A tensor whose storage bytes come after the pickle: materialised once they are read."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self, data: np.ndarray) -> np.ndarray:
        if not self.shape:
            return np.array(data[self.offset])
        # The furthest element this view touches must lie inside the storage.
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride) if n > 0)
        if self.offset < 0 or min(self.stride) < 0 or last >= max(len(data), 1):
            raise TorchFormatError("tensor view reaches outside its storage")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.shape,
            strides=tuple(s * data.itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view)  # own, contiguous copy


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> _TensorRef:  # noqa: ARG001
    if not isinstance(storage, _StorageRef):
        raise TorchFormatError("tensor without a storage")
    return _TensorRef(storage, int(storage_offset), tuple(map(int, size)), tuple(map(int, stride)))


# (module, name) -> what the unpickler may construct. Nothing else is reachable.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): st for name, st in _STORAGE_TYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, storages: dict[str, _StorageRef] | None = None):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise TorchFormatError(f"refusing to load global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise TorchFormatError("unexpected persistent id in a header pickle")
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise TorchFormatError(f"unsupported persistent id {str(pid)[:60]!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType) or view_metadata is not None:
            raise TorchFormatError("unsupported storage (typed views are not supported)")
        ref = self._storages.setdefault(str(key), _StorageRef(str(key), storage_type, int(numel)))
        if ref.type != storage_type or ref.numel != int(numel):
            raise TorchFormatError(f"storage {key} described twice differently")
        return ref


def _load_pickle(f: BinaryIO, storages: dict[str, _StorageRef] | None = None) -> Any:
    try:
        return _RestrictedUnpickler(f, storages).load()
    except TorchFormatError:
        raise
    except Exception as e:  # truncated or garbled pickle: any of a dozen exception types
        raise TorchFormatError(f"damaged pickle data ({type(e).__name__}: {e})") from None


def _flatten(obj: Any, prefix: str, out: dict[str, _TensorRef]) -> None:
    if isinstance(obj, _TensorRef):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        raise TorchFormatError(f"unexpected {type(obj).__name__} at {prefix!r} in the state dict")


def read_legacy_state_dict(source: str | Path | bytes) -> dict[str, np.ndarray]:
    """Return ``{name: array}`` for a legacy-format PyTorch state dict (a path or its bytes).

    Nested dicts are flattened with dots. Raises :class:`TorchFormatError` for anything that
    is not a well-formed legacy state dict of plain tensors.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    f = io.BytesIO(data)
    if _load_pickle(f) != LEGACY_MAGIC:
        raise TorchFormatError("not a legacy PyTorch file (bad magic number)")
    if _load_pickle(f) != LEGACY_PROTOCOL:
        raise TorchFormatError("unsupported legacy PyTorch protocol version")
    sys_info = _load_pickle(f)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise TorchFormatError("only little-endian legacy PyTorch files are supported")

    storages: dict[str, _StorageRef] = {}
    tensors: dict[str, _TensorRef] = {}
    _flatten(_load_pickle(f, storages), "", tensors)

    keys = _load_pickle(f)
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
        raise TorchFormatError("storage key list does not match the tensors")
    arrays: dict[str, np.ndarray] = {}
    for key in map(str, keys):
        ref = storages[key]
        header = f.read(8)
        if len(header) != 8:
            raise TorchFormatError("file ends inside the storage data")
        (numel,) = struct.unpack("<q", header)
        nbytes = numel * ref.type.dtype.itemsize
        raw = f.read(nbytes) if numel >= 0 else b""
        if numel != ref.numel or len(raw) != nbytes:
            raise TorchFormatError(f"storage {key}: size mismatch or file ends early")
        arrays[key] = np.frombuffer(raw, dtype=ref.type.dtype)
    if f.read(1):
        raise TorchFormatError("trailing bytes after the last storage")
    return {name: t.materialize(arrays[t.storage.key]) for name, t in tensors.items()}
