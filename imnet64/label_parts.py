"""Names and summaries of label part files: OUT_DIR/labels/part-IIIII-of-NNNNN.{tfrecord,csv,json}.

No TensorFlow here, so `label-status` (and anything that only looks at the files) stays quick.
The JSON summary is written last: its presence marks a shard done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imnet64 import atomic

LABELS_DIR = "labels"
SUMMARY_FORMAT = "imnet64.label-part/1"
PART_RE = re.compile(r"^part-(\d{5})-of-(\d{5})\.(tfrecord|csv|json)$")
# atomic.temp_path_for names temps ".<final name>.<random>.tmp"
TEMP_RE = re.compile(r"^\.part-(\d{5})-of-(\d{5})\.(tfrecord|csv|json)\..+\.tmp$")
CSV_HEADER = ("path", "label", "class_name", "confidence")


def part_stem(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}"


@dataclass(frozen=True)
class PartPaths:
    """The files of one shard."""

    folder: Path
    stem: str

    @property
    def tfrecord(self) -> Path:
        return self.folder / f"{self.stem}.tfrecord"

    @property
    def csv(self) -> Path:
        return self.folder / f"{self.stem}.csv"

    @property
    def summary(self) -> Path:
        return self.folder / f"{self.stem}.json"

    @property
    def lock(self) -> Path:
        return self.folder / f".{self.stem}.lock"

    def temp_files(self) -> list[Path]:
        """Leftovers of an interrupted run (atomic temp files of this shard)."""
        if not self.folder.is_dir():
            return []
        prefix = f".{self.stem}."
        return sorted(
            p for p in self.folder.iterdir() if p.name.startswith(prefix) and TEMP_RE.match(p.name)
        )


def part_paths(out_dir: str | Path, index: int, count: int) -> PartPaths:
    return PartPaths(Path(out_dir) / LABELS_DIR, part_stem(index, count))


def read_summary(path: str | Path) -> dict[str, Any] | None:
    """The summary at `path`, or None if it is missing or not a valid summary."""
    try:
        data = atomic.read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != SUMMARY_FORMAT:
        return None
    return data
