"""The official ImageNet64 batch files (Chrabaszcz, Loshchilov and Hutter 2017), read in place.

A file (`train_data_batch_1` .. `train_data_batch_10`, `val_data`; a Python pickle, or the
same dict saved as `.npz`) holds a dict: `data`, uint8 (N, 12288), one image per row as
three planes R, G, B of 64x64 values in row-major order; `labels`, N ints 1..1000 in the
ILSVRC devkit's map_clsloc.txt order (imagenet64_classes maps them to the teacher);
`mean` in the train files. The authors wrote them with `pickle.dump(d, f)` in Python 3
(PatrykChrabaszcz/Imagenet32_Scripts, image2numpy_imagenet_train.py), i.e. protocol 3,
where a numpy array is `_reconstruct` + a state tuple whose last item is its raw bytes.

Nothing here calls `pickle.load`: a pickle from elsewhere can run any code when loaded.
`_PickleScanner` is a small interpreter of the binary pickle opcodes that knows only the
objects such a file holds (dicts, lists, tuples, ints, strings, numpy arrays and dtypes);
any other global (`os.system`, ...) or opcode ends the scan with an error, and nothing is
ever called. It also never holds the pixels: a raw byte string is passed by (its offset and
length are kept), so a rank later reads just its rows from the file (`BatchFile.row`) and
memory stays bounded whatever the file's size. The same goes for `.npz`: the `.npy`
member's header gives the offset of its rows.
"""

from __future__ import annotations

import ast
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from imnet64.formats.byte_sources import (
    ByteSource,
    SourceError,
    SourceReader,
    ZipMembers,
)

import numpy as np

SIDE = 64
ROW_BYTES = 3 * SIDE * SIDE  # 12288: R plane, then G, then B
NUM_CLASSES = 1000
# A batch file's name (as downloaded: no suffix for pickles; `.npz`; some re-savers add .pkl)
BATCH_NAME_RE = re.compile(r"^(train_data_batch_\d+|val_data)(\.npz|\.pkl|\.pickle)?$")
# Raw byte strings up to this size are read; longer ones are passed by (offset kept).
_INLINE_BYTES = 1 << 16
# Text in a pickle is read into memory: a batch file's strings are a few letters. This caps
# what a hostile or odd file can make us hold.
_MAX_TEXT = 1 << 20


class BatchFormatError(Exception):
    """The file is not a well-formed ImageNet64 batch file (the message says why)."""


def batch_stem(name: str) -> str | None:
    """'train_data_batch_3' for 'train_data_batch_3', '.npz', '.pkl'...; None otherwise."""
    m = BATCH_NAME_RE.match(name)
    return m.group(1) if m else None


@dataclass(frozen=True)
class _Blob:
    """Raw bytes inside the file, not read: where they are."""

    offset: int
    length: int


class _Bytes(bytes):
    """Short raw bytes, read, with their offset in the file (a tiny file's pixels)."""

    offset: int


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


@dataclass
class _DType:
    code: str
    byteorder: str = "="

    def numpy(self) -> np.dtype:
        try:
            dt = np.dtype(self.code)
        except TypeError:
            raise BatchFormatError(f"unknown numpy dtype {self.code!r}") from None
        if dt.hasobject:
            raise BatchFormatError("an array of Python objects (refused)")
        if self.byteorder in "<>":
            dt = dt.newbyteorder(self.byteorder)
        return dt


@dataclass
class _Array:
    """A numpy array as the pickle describes it; its bytes stay in the file."""

    shape: tuple[int, ...] = ()
    dtype: _DType | None = None
    fortran: bool = False
    payload: _Blob | bytes | None = None
    built: bool = False


_MARK = object()
# Globals a numpy array or dtype pickle names, in numpy 1.x and 2.x spellings.
_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}
_FROMBUFFER = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}
_ALLOWED = _RECONSTRUCT | _FROMBUFFER | {("numpy", "ndarray"), ("numpy", "dtype"),
                                          ("_codecs", "encode")}


class _PickleScanner:
    """Run the opcodes of a binary pickle (protocols 2-5) that build dicts, lists, tuples,
    ints, strings and numpy arrays; refuse everything else. Returns the top object with
    arrays as `_Array` (bytes not read)."""

    def __init__(self, reader: SourceReader) -> None:
        self.r = reader
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}

    # -- helpers
    def _pop_mark(self) -> list[Any]:
        for k in range(len(self.stack) - 1, -1, -1):
            if self.stack[k] is _MARK:
                items = self.stack[k + 1:]
                del self.stack[k:]
                return items
        raise BatchFormatError("damaged pickle (no mark)")

    def _pop(self) -> Any:
        if not self.stack:
            raise BatchFormatError("damaged pickle (stack underflow)")
        return self.stack.pop()

    def _text(self, n: int) -> str:
        if n > _MAX_TEXT:
            raise BatchFormatError(f"a {n}-byte string (not what a batch file holds)")
        try:
            return self.r.read(n).decode("utf-8")
        except UnicodeDecodeError:
            raise BatchFormatError("damaged pickle (invalid UTF-8)") from None

    def _raw(self, n: int) -> _Blob | bytes:
        if n < 0:
            raise BatchFormatError("damaged pickle (negative length)")
        if n <= _INLINE_BYTES:
            offset = self.r.pos
            data = _Bytes(self.r.read(n))
            data.offset = offset
            return data
        return _Blob(self.r.skip(n), n)

    def _global(self, module: str, name: str) -> _Global:
        if (module, name) not in _ALLOWED:
            raise BatchFormatError(
                f"refused: the pickle asks to call {module}.{name}; an ImageNet64 batch "
                "file holds only numpy arrays, lists, dicts and ints (nothing was run)")
        return _Global(module, name)

    def _reduce(self, func: Any, args: Any) -> Any:
        if not isinstance(func, _Global) or not isinstance(args, tuple):
            raise BatchFormatError("refused: a call the pickle of an array never makes")
        key = (func.module, func.name)
        if key in _RECONSTRUCT:
            return _Array()
        if key == ("numpy", "dtype") and args and isinstance(args[0], (str, bytes)):
            return _DType(self._key(args[0]))  # Python 2 pickles: a byte string
        if key in _FROMBUFFER and len(args) == 4 and isinstance(args[1], _DType):
            buf, dtype, shape, order = args
            return _Array(tuple(shape), dtype, order == "F", buf, True)
        if key == ("_codecs", "encode") and len(args) == 2 and isinstance(args[0], str):
            return args[0].encode("latin1")
        raise BatchFormatError(f"refused: an unexpected call to {func.module}.{func.name}")

    def _build(self, obj: Any, state: Any) -> None:
        if isinstance(obj, _DType) and isinstance(state, tuple) and len(state) > 1:
            order = self._key(state[1])
            obj.byteorder = order if isinstance(order, str) else "="
            return
        if isinstance(obj, _Array) and isinstance(state, tuple) and len(state) == 5:
            _, shape, dtype, fortran, payload = state
            if not isinstance(dtype, _DType) or not isinstance(payload, (bytes, _Blob)):
                raise BatchFormatError("an array that is not plain numbers (refused)")
            obj.shape, obj.dtype, obj.fortran = tuple(shape), dtype, bool(fortran)
            obj.payload, obj.built = payload, True
            return
        raise BatchFormatError("refused: the pickle sets the state of an unexpected object")

    # -- the interpreter
    def run(self) -> Any:  # noqa: C901 - one branch per opcode, flat on purpose
        r, stack, memo = self.r, self.stack, self.memo
        while True:
            op = r.read(1)
            if op == b"\x80":  # PROTO
                proto = r.read(1)[0]
                if proto < 2:
                    raise BatchFormatError(f"pickle protocol {proto} is not supported (2-5 are)")
            elif op == b"\x95":  # FRAME
                r.read(8)
            elif op == b".":  # STOP
                return self._pop()
            elif op == b"(":
                stack.append(_MARK)
            elif op == b"}":
                stack.append({})
            elif op == b"]":
                stack.append([])
            elif op == b")":
                stack.append(())
            elif op == b"t":
                stack.append(tuple(self._pop_mark()))
            elif op in (b"\x85", b"\x86", b"\x87"):
                n = op[0] - 0x84
                if len(stack) < n:
                    raise BatchFormatError("damaged pickle (stack underflow)")
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
            elif op == b"a":
                value = self._pop()
                self._list(stack[-1] if stack else None).append(value)
            elif op == b"e":
                items = self._pop_mark()
                self._list(stack[-1] if stack else None).extend(items)
            elif op == b"s":
                value, key = self._pop(), self._pop()
                self._dict(stack[-1] if stack else None)[self._key(key)] = value
            elif op == b"u":
                items = self._pop_mark()
                target = self._dict(stack[-1] if stack else None)
                for k in range(0, len(items) - 1, 2):
                    target[self._key(items[k])] = items[k + 1]
            elif op == b"J":
                stack.append(struct.unpack("<i", r.read(4))[0])
            elif op == b"K":
                stack.append(r.read(1)[0])
            elif op == b"M":
                stack.append(struct.unpack("<H", r.read(2))[0])
            elif op == b"\x8a":  # LONG1
                n = r.read(1)[0]
                stack.append(int.from_bytes(r.read(n), "little", signed=True))
            elif op == b"N":
                stack.append(None)
            elif op == b"\x88":
                stack.append(True)
            elif op == b"\x89":
                stack.append(False)
            elif op == b"G":
                stack.append(struct.unpack(">d", r.read(8))[0])
            elif op == b"X":
                stack.append(self._text(struct.unpack("<I", r.read(4))[0]))
            elif op == b"\x8c":
                stack.append(self._text(r.read(1)[0]))
            elif op == b"\x8d":
                stack.append(self._text(struct.unpack("<Q", r.read(8))[0]))
            elif op in (b"U", b"C"):  # SHORT_BINSTRING (Python 2 str), SHORT_BINBYTES
                stack.append(self._raw(r.read(1)[0]))
            elif op == b"T":  # BINSTRING
                stack.append(self._raw(struct.unpack("<i", r.read(4))[0]))
            elif op == b"B":
                stack.append(self._raw(struct.unpack("<I", r.read(4))[0]))
            elif op in (b"\x8e", b"\x96"):  # BINBYTES8, BYTEARRAY8
                stack.append(self._raw(struct.unpack("<Q", r.read(8))[0]))
            elif op == b"c":  # GLOBAL
                module = r.readline().decode("latin1")
                name = r.readline().decode("latin1")
                stack.append(self._global(module, name))
            elif op == b"\x93":  # STACK_GLOBAL
                name, module = self._pop(), self._pop()
                if not isinstance(module, str) or not isinstance(name, str):
                    raise BatchFormatError("damaged pickle (STACK_GLOBAL)")
                stack.append(self._global(module, name))
            elif op == b"q":
                memo[r.read(1)[0]] = stack[-1] if stack else None
            elif op == b"r":
                memo[struct.unpack("<I", r.read(4))[0]] = stack[-1] if stack else None
            elif op == b"\x94":  # MEMOIZE
                memo[len(memo)] = stack[-1] if stack else None
            elif op in (b"h", b"j"):
                key = r.read(1)[0] if op == b"h" else struct.unpack("<I", r.read(4))[0]
                if key not in memo:
                    raise BatchFormatError("damaged pickle (memo)")
                stack.append(memo[key])
            elif op == b"R":
                args, func = self._pop(), self._pop()
                stack.append(self._reduce(func, args))
            elif op == b"b":
                state = self._pop()
                self._build(stack[-1] if stack else None, state)
            elif op == b"0":
                self._pop()
            elif op == b"1":
                self._pop_mark()
            elif op == b"2":
                stack.append(stack[-1] if stack else None)
            else:
                raise BatchFormatError(
                    f"refused: pickle opcode {op!r} is not one a batch file of numpy arrays "
                    "uses (nothing was run)")

    @staticmethod
    def _list(obj: Any) -> list:
        if not isinstance(obj, list):
            raise BatchFormatError("damaged pickle (append to a non-list)")
        return obj

    @staticmethod
    def _dict(obj: Any) -> dict:
        if not isinstance(obj, dict):
            raise BatchFormatError("damaged pickle (setitem on a non-dict)")
        return obj

    @staticmethod
    def _key(key: Any) -> Any:
        # Python 2 pickles hold keys as byte strings
        return key.decode("latin1") if isinstance(key, bytes) else key


@dataclass
class BatchFile:
    """One batch file, located: `rows` images at `data_offset` of `source`, and labels."""

    stem: str  # 'train_data_batch_3'
    source: ByteSource = field(repr=False)
    data_offset: int
    labels: np.ndarray  # int16, 1..1000, devkit (map_clsloc) order
    has_mean: bool

    @property
    def rows(self) -> int:
        return len(self.labels)

    def row(self, i: int) -> bytes:
        """Row i's 12288 bytes (planes R, G, B)."""
        data = self.source.pread(self.data_offset + i * ROW_BYTES, ROW_BYTES)
        if len(data) != ROW_BYTES:
            raise SourceError("the file ends early (truncated)")
        return data

    def image(self, i: int) -> np.ndarray:
        """Row i as uint8 [64, 64, 3] (HWC, RGB)."""
        return planes_to_hwc(self.row(i))


def planes_to_hwc(row: bytes) -> np.ndarray:
    """12288 bytes (R plane, G plane, B plane, each 64x64 row-major) -> uint8 [64, 64, 3]."""
    return np.frombuffer(row, np.uint8).reshape(3, SIDE, SIDE).transpose(1, 2, 0).copy()


def hwc_to_planes(image: np.ndarray) -> np.ndarray:
    """uint8 [64, 64, 3] -> the 12288-value row a batch file holds (what the authors'
    scripts did: r.flatten(), g.flatten(), b.flatten())."""
    return np.ascontiguousarray(np.asarray(image, np.uint8).transpose(2, 0, 1)).reshape(-1)


def _check_data(shape: tuple[int, ...], dtype: np.dtype, fortran: bool, nbytes: int) -> int:
    """Rows of a valid `data` array, or BatchFormatError."""
    if dtype != np.uint8:
        raise BatchFormatError(f"'data' is {dtype}, not uint8")
    if len(shape) != 2:
        raise BatchFormatError(f"'data' has shape {shape}, not (N, {ROW_BYTES})")
    if shape[1] != ROW_BYTES:
        hint = " (an ImageNet32 file?)" if shape[1] == 3 * 32 * 32 else ""
        raise BatchFormatError(
            f"'data' rows are {shape[1]} values wide, not {ROW_BYTES} (3 x 64 x 64){hint}")
    if fortran and shape[0] > 1:
        raise BatchFormatError("'data' is stored column-major (Fortran order), not row-major")
    if nbytes != shape[0] * ROW_BYTES:
        raise BatchFormatError(
            f"'data' holds {nbytes} bytes, its shape needs {shape[0] * ROW_BYTES}")
    return shape[0]


def _check_labels(labels: Any, rows: int) -> np.ndarray:
    values = np.asarray(labels)
    if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
        raise BatchFormatError("'labels' is not a list of integers")
    if len(values) != rows:
        raise BatchFormatError(f"'labels' has {len(values)} entries but 'data' has {rows} rows")
    if values.size and (values.min() < 1 or values.max() > NUM_CLASSES):
        bad = values[(values < 1) | (values > NUM_CLASSES)]
        raise BatchFormatError(
            f"'labels' holds {bad[0]}, outside 1..{NUM_CLASSES} ({len(bad)} such labels)")
    return values.astype(np.int16)


def _array_bytes(source: ByteSource, arr: _Array) -> bytes:
    if isinstance(arr.payload, bytes):
        return arr.payload
    return source.pread(arr.payload.offset, arr.payload.length)


def _from_pickle(stem: str, source: ByteSource) -> BatchFile:
    top = _PickleScanner(SourceReader(source)).run()
    if not isinstance(top, dict) or "data" not in top or "labels" not in top:
        keys = sorted(map(str, top)) if isinstance(top, dict) else type(top).__name__
        raise BatchFormatError(f"not an ImageNet64 batch (want a dict with 'data' and 'labels', "
                               f"got {keys})")
    data = top["data"]
    if not isinstance(data, _Array) or not data.built or data.dtype is None:
        raise BatchFormatError("'data' is not a numpy array")
    payload = data.payload
    nbytes = payload.length if isinstance(payload, _Blob) else len(payload)
    rows = _check_data(data.shape, data.dtype.numpy(), data.fortran, nbytes)
    labels = top["labels"]
    if isinstance(labels, _Array):
        labels = np.frombuffer(_array_bytes(source, labels), labels.dtype.numpy())
    elif not isinstance(labels, list) or not all(type(v) is int for v in labels):
        raise BatchFormatError("'labels' is not a list of integers")
    offset = getattr(payload, "offset", None)
    if offset is None:  # bytes made by a call (_codecs.encode): not a range of the file
        raise BatchFormatError("'data' is not stored as raw bytes (re-save with pickle "
                               "protocol 3 or later, or as .npz)")
    return BatchFile(stem, source, offset, _check_labels(labels, rows), "mean" in top)


def _npy_header(member: ByteSource, what: str) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran, data offset) of a .npy member; its header is a Python literal
    (read with ast.literal_eval, which evaluates nothing)."""
    head = member.pread(0, 12)
    if len(head) < 10 or head[:6] != b"\x93NUMPY":
        raise BatchFormatError(f"{what} is not a .npy array")
    major = head[6]
    if major == 1:
        hlen, start = struct.unpack("<H", head[8:10])[0], 10
    elif major in (2, 3):
        hlen, start = struct.unpack("<I", head[8:12])[0], 12
    else:
        raise BatchFormatError(f"{what}: .npy version {major} is not supported")
    if hlen > 1 << 16:
        raise BatchFormatError(f"{what}: .npy header too long")
    try:
        header = ast.literal_eval(member.pread(start, hlen).decode("latin1"))
        dtype = np.dtype(header["descr"])
        shape, fortran = tuple(header["shape"]), bool(header["fortran_order"])
    except (ValueError, SyntaxError, KeyError, TypeError):
        raise BatchFormatError(f"{what}: damaged .npy header") from None
    if dtype.hasobject:
        raise BatchFormatError(f"{what} is an array of Python objects (refused)")
    return dtype, shape, fortran, start + hlen


def _from_npz(stem: str, source: ByteSource) -> BatchFile:
    zm = ZipMembers(source)
    members = {i.filename: i for i in zm.infos}
    if "data.npy" not in members or "labels.npy" not in members:
        raise BatchFormatError(f"not an ImageNet64 .npz (want data and labels, got "
                               f"{sorted(members)})")
    data = zm.open(members["data.npy"])
    dtype, shape, fortran, offset = _npy_header(data, "'data'")
    rows = _check_data(shape, dtype, fortran, data.size - offset)
    lab = zm.open(members["labels.npy"])
    ldtype, lshape, _, loffset = _npy_header(lab, "'labels'")
    if len(lshape) != 1:
        raise BatchFormatError(f"'labels' has shape {lshape}, not (N,)")
    raw = lab.pread(loffset, lshape[0] * ldtype.itemsize)
    if len(raw) != lshape[0] * ldtype.itemsize:
        raise BatchFormatError("'labels' ends early (truncated)")
    labels = np.frombuffer(raw, ldtype)
    return BatchFile(stem, data, offset, _check_labels(labels, rows), "mean.npy" in members)


def read_batch_file(stem: str, source: ByteSource) -> BatchFile:
    """Locate the rows and read the labels of one batch file (pickle or .npz), checking
    its layout. Raises BatchFormatError with a one-line reason (the caller names the file)."""
    head = source.pread(0, 4)
    try:
        if head[:4] == b"PK\x03\x04":
            return _from_npz(stem, source)
        if head[:1] == b"\x80":
            return _from_pickle(stem, source)
    except SourceError as e:
        raise BatchFormatError(str(e)) from None
    if not head:
        raise BatchFormatError("empty file")
    raise BatchFormatError("neither a pickle (protocol 2+) nor an .npz")
