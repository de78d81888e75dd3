"""Bytes read in place: a file, a stored zip member (an offset into its container), or a
compressed zip member (decompressed as a forward stream), behind one `pread` interface.

Why: an ImageNet64 batch file is ~1.6 GB and arrives inside a zip. A rank that labels a
quarter of it must read only that quarter, without unpacking or loading the file. A stored
(uncompressed) member is a byte range of its container, so reads are `os.pread` at an
offset; a deflated member cannot be read at an offset, so `StreamSource` decompresses it
forward, keeping one block in memory and starting over only when asked to go back.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zipfile
from collections.abc import Callable
from typing import IO, Protocol


class SourceError(Exception):
    """The bytes cannot be read as asked (truncated container, damaged zip, ...)."""


class ByteSource(Protocol):
    size: int

    def pread(self, offset: int, length: int) -> bytes:
        """`length` bytes at `offset` (fewer only at the end of the source)."""
        ...


class FileSource:
    """A whole file, read with os.pread on one descriptor (safe from several threads)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def pread(self, offset: int, length: int) -> bytes:
        chunks = []
        while length > 0:
            chunk = os.pread(self._fd, min(length, 1 << 30), offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class RangeSource:
    """Bytes [base, base + size) of another source (a stored zip member)."""

    def __init__(self, parent: ByteSource, base: int, size: int) -> None:
        self.parent, self.base, self.size = parent, base, size

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        return self.parent.pread(self.base + offset, length) if length else b""


class StreamSource:
    """A compressed zip member: decompressed forward, one block kept (reads of nearby rows
    from a few threads hit it); going back before the block restarts the stream."""

    BLOCK = 4 << 20

    def __init__(self, open_stream: Callable[[], IO[bytes]], size: int) -> None:
        self._open, self.size = open_stream, size
        self._stream: IO[bytes] | None = None
        self._pos = 0  # the stream's position
        self._block_start, self._block = 0, b""
        self._lock = threading.Lock()

    def _restart(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream, self._pos = self._open(), 0

    def _read_stream(self, n: int) -> bytes:
        try:
            data = self._stream.read(n)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise SourceError(f"cannot decompress: {e}") from None
        self._pos += len(data)
        return data

    def _load_block(self, offset: int) -> None:
        start = offset - offset % self.BLOCK
        if self._stream is None or start < self._pos:
            self._restart()
        while self._pos < start:  # skip forward, a block at a time (bounded memory)
            if not self._read_stream(min(self.BLOCK, start - self._pos)):
                raise SourceError("member ends early")
        self._block_start, self._block = start, self._read_stream(self.BLOCK)

    def pread(self, offset: int, length: int) -> bytes:
        out = []
        with self._lock:
            while length > 0 and offset < self.size:
                inside = self._block_start <= offset < self._block_start + len(self._block)
                if not inside:
                    self._load_block(offset)
                    if not self._block:
                        break
                piece = self._block[offset - self._block_start:][:length]
                out.append(piece)
                offset += len(piece)
                length -= len(piece)
        return b"".join(out)

    def close(self) -> None:
        with self._lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None


class SourceFile(io.RawIOBase):
    """A read-only, seekable file object over a ByteSource (for zipfile)."""

    def __init__(self, source: ByteSource) -> None:
        self._source, self._pos = source, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._source.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        data = self._source.pread(self._pos, len(buffer))
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)


class SourceReader:
    """Sequential reading from a ByteSource with a small buffer; `skip` jumps over data
    without holding it (how a 1.6 GB pixel blob in a pickle is passed by)."""

    BUFFER = 1 << 20

    def __init__(self, source: ByteSource) -> None:
        self.source, self.pos = source, 0
        self._buf, self._buf_start = b"", 0

    def read(self, n: int) -> bytes:
        """Exactly n bytes, or SourceError('truncated')."""
        end = self._buf_start + len(self._buf)
        if self._buf_start <= self.pos and self.pos + n <= end:
            data = self._buf[self.pos - self._buf_start:self.pos - self._buf_start + n]
        elif n <= self.BUFFER:
            self._buf, self._buf_start = self.source.pread(self.pos, self.BUFFER), self.pos
            data = self._buf[:n]
        else:
            data = self.source.pread(self.pos, n)
        if len(data) != n:
            raise SourceError("the file ends early (truncated)")
        self.pos += n
        return data

    def skip(self, n: int) -> int:
        """Pass n bytes; returns their offset. The last of them must exist."""
        start = self.pos
        if n > 0 and len(self.source.pread(start + n - 1, 1)) != 1:
            raise SourceError("the file ends early (truncated)")
        self.pos += n
        return start

    def readline(self, limit: int = 256) -> bytes:
        out = bytearray()
        while len(out) < limit:
            c = self.read(1)
            if c == b"\n":
                return bytes(out)
            out += c
        raise SourceError("line too long")


def _stored_member_offset(container: ByteSource, info: zipfile.ZipInfo) -> int:
    header = container.pread(info.header_offset, 30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise SourceError(f"damaged zip: no local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


class ZipMembers:
    """The members of a zip read in place: name -> ByteSource (stored: a range of the
    container; compressed: a stream)."""

    def __init__(self, container: ByteSource) -> None:
        self._file = io.BufferedReader(SourceFile(container), buffer_size=1 << 16)
        try:
            self._zip = zipfile.ZipFile(self._file)
            self.infos = [i for i in self._zip.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise SourceError(f"not a readable zip archive ({e})") from None
        self._container = container

    def open(self, info: zipfile.ZipInfo) -> ByteSource:
        if info.flag_bits & 0x1:
            raise SourceError(f"{info.filename} is encrypted")
        if info.compress_type == zipfile.ZIP_STORED:
            base = _stored_member_offset(self._container, info)
            if base + info.file_size > self._container.size:
                raise SourceError(f"{info.filename}: the zip ends early (truncated)")
            return RangeSource(self._container, base, info.file_size)
        return StreamSource(lambda: self._zip.open(info), info.file_size)
