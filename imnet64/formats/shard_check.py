"""The one check of a shard file against what a record says of it (its dataset.json entry,
or its `.shards/` sidecar's `shard_info`), at the depth the caller can afford:

- "size": one stat (shard-records deciding what is done; train and evaluate before reading);
- "sha256": the size, then every byte hashed (naming the shard a failed read hit);
- "full": both, then the records counted (`inspect --verify`).

It reports what it found; each caller words that for its own reader (inspect lists
mismatches by file; train and evaluate name the path and what to do about it).
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from imnet64.atomic import sha256_file
from imnet64.formats.tfrecord_file import RecordFileError, count_records

if TYPE_CHECKING:  # manifest.py calls check_shard: a runtime import would be circular
    from imnet64.formats.manifest import ShardInfo

Depth = Literal["size", "sha256", "full"]


@dataclass(frozen=True)
class ShardCheck:
    """What `check_shard` found; a field it did not get to (the depth, or an error) is None."""

    shard: ShardInfo  # what the record says
    path: Path
    depth: Depth
    error: OSError | None = None  # the file could not be stat'ed or read
    regular_file: bool = False
    size: int | None = None
    sha256: str | None = None
    records: int | None = None
    record_error: RecordFileError | None = None  # the file ends inside a record

    @property
    def why_unreadable(self) -> str | None:
        """The OS's reason the file could not be stat'ed or read (None: it could)."""
        return None if self.error is None else str(self.error.strerror or self.error)

    @property
    def size_ok(self) -> bool:
        return self.size == self.shard.bytes

    @property
    def sha256_ok(self) -> bool:
        return self.sha256 == self.shard.sha256

    @property
    def records_ok(self) -> bool:
        return self.records == self.shard.examples

    @property
    def ok(self) -> bool:
        """Everything this depth checks is as recorded."""
        if self.error is not None or not self.size_ok:
            return False
        if self.depth == "size":
            return True
        return self.sha256_ok and (self.depth == "sha256" or self.records_ok)


def check_shard(root: Path, shard: ShardInfo, depth: Depth,
                on_bytes: Callable[[int], None] | None = None) -> ShardCheck:
    """Check `root/shard.file` against `shard` to `depth`; `on_bytes(n)` is told the bytes
    hashed as they are."""
    path = root / shard.file
    try:
        st = path.stat()
    except OSError as e:
        return ShardCheck(shard, path, depth, error=e)
    found = ShardCheck(shard, path, depth, regular_file=stat.S_ISREG(st.st_mode),
                       size=st.st_size)
    if depth == "size":
        return found
    try:
        found = replace(found, sha256=sha256_file(path, on_bytes))
        if depth == "sha256":
            return found
        return replace(found, records=count_records(path))
    except RecordFileError as e:
        return replace(found, record_error=e)
    except OSError as e:
        return replace(found, error=e)
