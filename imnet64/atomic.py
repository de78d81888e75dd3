"""Atomic output files: write to a temporary name in the same folder, fsync, rename.

A reader (or a re-run after `kill -9`) sees either no file or the whole file, never a part.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse O_RDONLY on dirs
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_path_for(path: str | os.PathLike) -> Path:
    """A hidden temporary name next to `path` (same filesystem, so rename is atomic):
    ".<name>.<8 random characters of a-z, 0-9, _>.tmp" (see `temp_target`)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


# tempfile.mkstemp's random part: 8 characters of a-z, 0-9 and _ (tests/test_records.py
# makes its temporaries with temp_path_for and expects them found)
_TEMP_NAME = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")


def temp_target(name: str) -> str | None:
    """The file name a temporary of `temp_path_for` was to become, or None if `name` is not
    such a temporary. Lets a re-run remove what a killed writer left, and nothing else."""
    m = _TEMP_NAME.fullmatch(name)
    return m.group(1) if m else None


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """fsync `tmp` and rename it to `path` atomically."""
    tmp, path = Path(tmp), Path(path)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it becomes `path`, on error it vanishes.

    For writers that want a file name (tf.io.TFRecordWriter, matplotlib, ...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[BinaryIO]:
    """Open a temporary file for writing that becomes `path` when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Stable JSON (sorted keys, trailing newline) so equal content gives equal bytes."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def sha256_file(path: str | os.PathLike,
                on_bytes: Callable[[int], None] | None = None) -> str:
    """The sha256 of a file's bytes (read in 1 MiB blocks), as hex: the one helper that
    manifests, label parts, shard verification, provenance and the offline teacher's
    weights check use. `on_bytes(n)` is told each block's size as it is hashed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            if on_bytes:
                on_bytes(len(block))
    return digest.hexdigest()
