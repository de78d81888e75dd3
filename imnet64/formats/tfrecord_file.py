"""TFRecord files read in plain Python: each record with its byte offset, and one record by offset.

The framing is `uint64 length | uint32 crc(length) | data | uint32 crc(data)` (little endian).
Knowing offsets lets `shard-records` read the records of a label part in any order (by
seeking) without holding a whole part in memory, and lets `inspect` count records without
TensorFlow. CRCs are not checked here: shard integrity is the manifest's sha256.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

HEADER = 12  # length (8) + its crc (4)
FOOTER = 4  # data crc


class RecordFileError(Exception):
    """A TFRecord file ends in the middle of a record (truncated or not a TFRecord file)."""


def _read_one(f: BinaryIO, path: str | Path, offset: int) -> bytes | None:
    header = f.read(HEADER)
    if not header:
        return None
    if len(header) < HEADER:
        raise RecordFileError(f"{path}: truncated record header at byte {offset}")
    (length,) = struct.unpack("<Q", header[:8])
    data = f.read(length)
    footer = f.read(FOOTER)
    if len(data) < length or len(footer) < FOOTER:
        raise RecordFileError(
            f"{path}: truncated record at byte {offset} ({length} bytes announced)"
        )
    return data


def iter_records(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(offset, serialized record) for every record of `path`, in file order."""
    offset = 0
    with open(path, "rb", buffering=1 << 20) as f:
        while (data := _read_one(f, path, offset)) is not None:
            yield offset, data
            offset += HEADER + len(data) + FOOTER


def read_record_at(f: BinaryIO, offset: int, path: str | Path = "?") -> bytes:
    """The record starting at byte `offset` of the open file `f`."""
    f.seek(offset)
    data = _read_one(f, path, offset)
    if data is None:
        raise RecordFileError(f"{path}: no record at byte {offset}")
    return data


def count_records(path: str | Path) -> int:
    """Number of records in `path` (reads only the length headers, seeking over the data)."""
    count, offset = 0, 0
    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        while offset < size:
            f.seek(offset)
            header = f.read(HEADER)
            if len(header) < HEADER:
                raise RecordFileError(f"{path}: truncated record header at byte {offset}")
            (length,) = struct.unpack("<Q", header[:8])
            if offset + HEADER + length + FOOTER > size:
                raise RecordFileError(f"{path}: truncated record at byte {offset}")
            offset += HEADER + length + FOOTER
            count += 1
    return count
