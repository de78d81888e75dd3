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

from imnet64.formats import provenance, read_back
from imnet64.formats.label_summary import (
    SUMMARY_FORMAT,
    TIMING_FORMAT,
    SummaryContract,
    TimingContract,
)

LABELS_DIR = "labels"
TIMING_FIELDS = ("seconds", "images_per_second", "precision_choice")
PART_RE = re.compile(r"^part-(\d{5})-of-(\d{5})\.(tfrecord|csv|json)$")
# atomic.temp_path_for names temps ".<final name>.<random>.tmp"
TEMP_RE = re.compile(r"^\.part-(\d{5})-of-(\d{5})\.(tfrecord|csv|json|timing\.json)\..+\.tmp$")
# `path` is image_names.escape_name of the input's name (valid UTF-8; read_csv_rows undoes it)
# `truth`: the true class as a teacher index, empty when the input carried none
CSV_HEADER = ("path", "label", "class_name", "confidence", "truth")
CSV_HEADER_BEFORE_TRUTH = CSV_HEADER[:4]  # parts written before truth was kept


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


def _summary_rebuild(path: Path) -> str:
    m = PART_RE.match(path.name)
    shard = f" --shard-index {int(m.group(1))} --num-shards {int(m.group(2))}" if m else ""
    return (f"it is made from its part: rerun imnet64 label{shard} with --force to label "
            "the shard again and write it anew")


def _read_checked(path: Path, contract: type, fmt: str, rebuild: str) -> dict[str, Any]:
    data = read_back.read_json(path, rebuild)
    if isinstance(data, dict) and data.get("format") != fmt:
        raise read_back.damaged(path, f"format {data.get('format')!r} is not {fmt!r}", rebuild)
    try:
        read_back.check_fields(data, contract)
    except read_back.Mismatch as e:
        raise read_back.damaged(path, str(e), rebuild) from None
    if contract is SummaryContract and data["rejected"] != len(data["rejects"]):
        raise read_back.damaged(path, f"rejected {data['rejected']} is not the "
                                f"{len(data['rejects'])} rejects listed", rebuild)
    return data


def read_summary(path: str | Path) -> dict[str, Any] | None:
    """The summary at `path`, checked against its contract; None if there is none. A damaged
    one (or a damaged .timing.json beside it) is a one-line UserError naming it and saying
    how to write it again (imnet64.formats.read_back).

    The timing of the run that wrote it (`seconds`, `images_per_second`) is merged in from
    the .timing.json beside it when that belongs to the same inputs; without it, the
    fields are absent. So are the run fields of its provenance (host, Slurm ids: null
    without the .timing.json).
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    data = _read_checked(path, SummaryContract, SUMMARY_FORMAT, _summary_rebuild(path))
    timing = {}
    tpath = timing_path(path)
    if tpath.exists() or tpath.is_symlink():
        timing = _read_checked(tpath, TimingContract, TIMING_FORMAT,
                               "it only records how long the shard took: move it away (the "
                               "shard then shows no rate) or relabel the shard with --force")
    if timing.get("inputs_sha256") != data.get("inputs_sha256"):
        timing = {}
    data.update({k: timing[k] for k in TIMING_FIELDS if k in timing})
    if provenance.KEY in data:
        data[provenance.KEY] = provenance.merge(data[provenance.KEY], timing.get(provenance.KEY))
    return data
