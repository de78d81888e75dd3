"""The restricted reader of legacy PyTorch files: the real torchvision weights, hand-made files
with strided views, and files that try to run code or are damaged."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

from imnet64.errors import UserError
from imnet64.teacher.offline import (
    WEIGHTS_SHA256,
    default_weights_path,
    read_verified_weights,
    sha256_of,
)
from imnet64.teacher.torch_legacy import (
    LEGACY_MAGIC,
    TorchFormatError,
    read_legacy_state_dict,
)

import numpy as np
import pytest

# ---- a minimal writer of the legacy format, opcode by opcode (torch is not installed) ------


def _str(s: str) -> bytes:
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)  # BININT


def _tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _tensor(key: str, numel: int, offset: int, shape, stride) -> bytes:
    storage_pid = _tuple([_str("storage"), b"ctorch\nFloatStorage\n", _str(key), _str("cpu"),
                          _int(numel), b"N"]) + b"Q"  # BINPERSID
    args = [storage_pid, _int(offset), _tuple([_int(n) for n in shape]),
            _tuple([_int(s) for s in stride]), b"\x89",  # NEWFALSE: requires_grad
            b"ccollections\nOrderedDict\n)R"]  # empty backward hooks
    return b"ctorch._utils\n_rebuild_tensor_v2\n" + _tuple(args) + b"R"


def legacy_file(tensors: dict[str, tuple[str, int, tuple, tuple]],
                storages: dict[str, np.ndarray], body: bytes | None = None) -> bytes:
    """Bytes of a legacy torch file: tensors name -> (storage key, offset, shape, stride)."""
    header = b"".join(pickle.dumps(x, protocol=2) for x in (
        LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                             "type_sizes": {"short": 2, "int": 4, "long": 4}}))
    if body is None:
        items = b"".join(_str(name) + _tensor(key, storages[key].size, off, shape, stride)
                         for name, (key, off, shape, stride) in tensors.items())
        body = b"\x80\x02ccollections\nOrderedDict\n)R(" + items + b"u."  # MARK..SETITEMS STOP
    keys = pickle.dumps(list(storages), protocol=2)
    raw = b"".join(struct.pack("<q", a.size) + a.astype("<f4").tobytes()
                   for a in storages.values())
    return header + body + keys + raw


# ---- the real weights -----------------------------------------------------------------------


def test_real_torchvision_weights_are_read_completely():
    path = default_weights_path()
    assert sha256_of(path) == WEIGHTS_SHA256
    state = read_verified_weights(path)
    assert len(state) == 314  # 52 BN x 5 (with num_batches_tracked) + 52 convs + dense W, b
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["features.2.conv.1.0.weight"].shape == (96, 1, 3, 3)  # depthwise
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["features.0.1.num_batches_tracked"].dtype == np.int64
    w = state["classifier.1.weight"]
    assert w.dtype == np.float32 and np.isfinite(w).all() and 0.01 < w.std() < 1
    assert all(v.flags.c_contiguous and v.flags.owndata for v in state.values())


# ---- hand-made files: layouts the reader must get right ------------------------------------


def test_strided_views_and_shared_storage():
    base = np.arange(12, dtype=np.float32)
    data = legacy_file(
        {"a.weight": ("0", 0, (3, 4), (4, 1)),  # contiguous
         "a.t": ("0", 0, (4, 3), (1, 4)),  # transposed view of the same storage
         "b.tail": ("0", 5, (2, 3), (3, 1)),  # offset view
         "c.bias": ("7", 0, (2,), (1,))},
        {"0": base, "7": np.array([1.5, -2.0], np.float32)})
    state = read_legacy_state_dict(data)
    np.testing.assert_array_equal(state["a.weight"], base.reshape(3, 4))
    np.testing.assert_array_equal(state["a.t"], base.reshape(3, 4).T)
    np.testing.assert_array_equal(state["b.tail"], base[5:11].reshape(2, 3))
    np.testing.assert_array_equal(state["c.bias"], [1.5, -2.0])


def test_view_outside_its_storage_is_refused():
    data = legacy_file({"w": ("0", 2, (3, 4), (4, 1))}, {"0": np.zeros(12, np.float32)})
    with pytest.raises(TorchFormatError, match="outside its storage"):
        read_legacy_state_dict(data)


# ---- files that try to run code, or are damaged -------------------------------------------


def test_a_pickle_that_calls_os_system_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = b"\x80\x02cos\nsystem\n" + _tuple([_str(f"touch {marker}")]) + b"R."
    with pytest.raises(TorchFormatError, match="refusing to load global os.system"):
        read_legacy_state_dict(legacy_file({}, {}, body=evil))
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("torch", "load"),
                                         ("numpy", "frombuffer"), ("collections", "Counter")])
def test_only_the_state_dict_globals_are_allowed(module, name):
    body = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."
    with pytest.raises(TorchFormatError, match="refusing to load global"):
        read_legacy_state_dict(legacy_file({}, {}, body=body))


def test_damaged_files_raise_format_errors():
    good = legacy_file({"w": ("0", 0, (4,), (1,))}, {"0": np.ones(4, np.float32)})
    assert read_legacy_state_dict(good)["w"].tolist() == [1, 1, 1, 1]
    with pytest.raises(TorchFormatError, match="ends"):
        read_legacy_state_dict(good[:-3])  # truncated storage
    with pytest.raises(TorchFormatError, match="trailing bytes"):
        read_legacy_state_dict(good + b"\0")
    with pytest.raises(TorchFormatError, match="bad magic"):
        read_legacy_state_dict(pickle.dumps(123, protocol=2) + good[20:])
    with pytest.raises(TorchFormatError, match="damaged pickle"):
        read_legacy_state_dict(b"\x80\x02\x8a\x0a" + b"\xff" * 3)
    # A zip-format (torch >= 1.6) file is not this format.
    with pytest.raises(TorchFormatError):
        read_legacy_state_dict(b"PK\x03\x04" + b"\0" * 100)


def test_corrupt_copy_of_the_real_weights(tmp_path: Path):
    data = bytearray(default_weights_path().read_bytes())
    for offset in (0x100, 0x101, len(data) // 2):  # inside the pickle, inside the floats
        data[offset] ^= 0xFF
    corrupt = tmp_path / "mobilenet_v2.pth"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt or not the expected one"):
        read_verified_weights(corrupt)
    # Even when told to trust that checksum, the damaged pickle is a clean one-line error.
    with pytest.raises(UserError, match="cannot read weights file"):
        read_verified_weights(corrupt, expected_sha256=sha256_of(corrupt))
