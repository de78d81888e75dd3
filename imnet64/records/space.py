"""How much free space `shard-records` needs: about the images it reads, once (the shards
hold them in their PNG or raw form, at most the size of their 64x64 RGB pixels)."""

from __future__ import annotations

from pathlib import Path

from imnet64.disk_errors import folder_bytes, tree_bytes
from imnet64.formats.label_parts import LABELS_DIR


def shard_space_needed(source: str | Path, out_dir: str | Path) -> int:
    """The bytes still to write into OUT_DIR: SOURCE's label parts (or class folders), less
    the shards already written there."""
    source = Path(source)
    labels = source / LABELS_DIR if (source / LABELS_DIR).is_dir() else None
    total = folder_bytes(labels, "*.tfrecord") if labels else tree_bytes(source)
    return max(0, total - folder_bytes(out_dir, "*.tfrecord")) + (1 << 20)
