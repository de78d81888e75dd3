"""Names and summaries of label part files: OUT_DIR/labels/part-IIIII-of-NNNNN.{tfrecord,csv,json}.

No TensorFlow here, so `label-status` (and anything that only looks at the files) stays quick.
The JSON summary is written last: its presence marks a shard done.

The three part files depend only on the inputs, the teacher and the options: re-running a
shard (after `kill -9`, or with `--force`) writes the same bytes. How long the run took is
kept out of them, in `part-IIIII-of-NNNNN.timing.json` beside them (written after the
summary; `read_summary` merges its fields back in for whoever shows rates). The same holds
for the provenance (imnet64.formats.provenance): the summary records what made it (code, teacher),
the .timing.json where it ran (host, Slurm ids).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imnet64 import atomic
from imnet64.formats import provenance
from imnet64.formats.label_summary import SUMMARY_FORMAT, TIMING_FORMAT

LABELS_DIR = "labels"
TIMING_FIELDS = ("seconds", "images_per_second", "precision_choice")
PART_RE = re.compile(r"^part-(\d{5})-of-(\d{5})\.(tfrecord|csv|json)$")
# atomic.temp_path_for names temps ".<final name>.<random>.tmp"
TEMP_RE = re.compile(r"^\.part-(\d{5})-of-(\d{5})\.(tfrecord|csv|json|timing\.json)\..+\.tmp$")
# `path` is image_names.escape_name of the input's name (valid UTF-8; read_csv_rows undoes it)
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
    def timing(self) -> Path:
        """How long the run that wrote the summary took (not part of the part files)."""
        return timing_path(self.summary)

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


def timing_path(summary: str | Path) -> Path:
    """part-IIIII-of-NNNNN.timing.json beside the summary part-IIIII-of-NNNNN.json."""
    summary = Path(summary)
    return summary.with_name(f"{summary.stem}.timing.json")


def _read_json_dict(path: str | Path, fmt: str) -> dict[str, Any] | None:
    try:
        data = atomic.read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != fmt:
        return None
    return data


def read_summary(path: str | Path) -> dict[str, Any] | None:
    """The summary at `path`, or None if it is missing or not a valid summary.

    The timing of the run that wrote it (`seconds`, `images_per_second`) is merged in from
    the .timing.json beside it when that belongs to the same inputs; without it, the
    fields are absent. So are the run fields of its provenance (host, Slurm ids: null
    without the .timing.json).
    """
    data = _read_json_dict(path, SUMMARY_FORMAT)
    if data is None:
        return None
    timing = _read_json_dict(timing_path(path), TIMING_FORMAT)
    if timing is None or timing.get("inputs_sha256") != data.get("inputs_sha256"):
        timing = {}
    data.update({k: timing[k] for k in TIMING_FIELDS if k in timing})
    if provenance.KEY in data:
        data[provenance.KEY] = provenance.merge(data[provenance.KEY], timing.get(provenance.KEY))
    return data
