"""`DATASET_DIR/.shards/<shard file>.json`: what shard-records records about each finished
shard (a re-run skips shards whose sidecar matches its plan; the manifest is built from
them once all exist).

{"file": "train-00000-of-00002.tfrecord", "examples": n, "bytes": b, "sha256": "...",
 "class_counts": [n_0, ..., n_{C-1}], "converted": k, "plan": "<sha256 of the shard's plan>"}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from imnet64.formats.manifest import ShardInfo

SIDECAR_DIR = ".shards"


def sidecar_path(dataset_dir: str | Path, shard_file: str) -> Path:
    return Path(dataset_dir) / SIDECAR_DIR / f"{shard_file}.json"


@dataclass(frozen=True)
class ShardSidecar:
    file: str
    examples: int
    bytes: int
    sha256: str
    class_counts: tuple[int, ...]
    converted: int  # images that were not 8-bit 64x64 PNGs (decoded, converted, resized)
    plan: str  # the hash of the plan the shard was written for

    @property
    def shard_info(self) -> ShardInfo:
        """The shard's entry in the manifest."""
        return ShardInfo(self.file, self.examples, self.bytes, self.sha256)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "class_counts": list(self.class_counts)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShardSidecar:
        """Raises KeyError, TypeError or ValueError for what is not a sidecar."""
        return cls(
            file=str(data["file"]),
            examples=int(data["examples"]),
            bytes=int(data["bytes"]),
            sha256=str(data["sha256"]),
            class_counts=tuple(int(n) for n in data["class_counts"]),
            converted=int(data["converted"]),
            plan=str(data["plan"]),
        )
