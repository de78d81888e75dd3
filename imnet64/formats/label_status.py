"""`imnet64 label-status`: which label shards are done, missing or partial, and totals.

- done: the JSON summary is valid and both part files exist with the sizes it records.
- partial: something of the shard exists but it is not done: temporary files left by a
  killed run, part files without a summary, or a summary whose part files are missing or
  differ in size. Re-running the shard fixes it.
- missing: nothing of the shard exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imnet64.errors import UserError
from imnet64.formats.label_parts import LABELS_DIR, PART_RE, TEMP_RE, part_paths, read_summary
from imnet64.formats.truth_counts import TruthCounts


@dataclass
class ShardState:
    index: int
    state: str  # "done", "partial", "missing" or "damaged" (a summary that is not one)
    detail: str = ""
    summary: dict[str, Any] | None = None


@dataclass
class LabelStatus:
    out_dir: Path
    num_shards: int
    shards: list[ShardState]
    other_counts: list[int] = field(default_factory=list)  # part files of other --num-shards

    def of(self, state: str) -> list[ShardState]:
        return [s for s in self.shards if s.state == state]

    @property
    def complete(self) -> bool:
        return all(s.state == "done" for s in self.shards)

    def totals(self) -> dict[str, Any]:
        done = [s.summary for s in self.of("done") if s.summary]
        seconds = sum(float(s.get("seconds") or 0) for s in done)
        inputs = sum(int(s["inputs"]) for s in done)
        total_inputs = {s.get("total_inputs") for s in done} - {None}
        return {
            "shards": self.num_shards,
            "done": len(self.of("done")),
            "partial": len(self.of("partial")),
            "missing": len(self.of("missing")),
            "damaged": len(self.of("damaged")),
            "inputs": inputs,
            "labeled": sum(int(s["labeled"]) for s in done),
            "rejected": sum(int(s["rejected"]) for s in done),
            # all shards record the size of the whole input; they agree unless it changed
            "total_inputs": total_inputs.pop() if len(total_inputs) == 1 else None,
            "shard_seconds": round(seconds, 1),
            "images_per_second_per_shard": round(inputs / seconds, 2) if seconds else None,
        }

    def truth(self) -> TruthCounts | None:
        """The teacher against the true labels over the done shards that carry them."""
        parts = [TruthCounts.from_json(s.summary["truth"]) for s in self.of("done")
                 if s.summary and s.summary.get("truth")]
        return TruthCounts.total(parts) if parts else None

    def as_dict(self) -> dict[str, Any]:
        truth = self.truth()
        return {
            "out_dir": str(self.out_dir),
            "complete": self.complete,
            "totals": self.totals(),
            "truth": truth.to_json() if truth is not None else None,
            "shards": [
                {"index": s.index, "state": s.state, "detail": s.detail} for s in self.shards
            ],
            "other_shard_counts": self.other_counts,
        }


def _shard_state(out_dir: Path, index: int, count: int) -> ShardState:
    paths = part_paths(out_dir, index, count)
    temps = paths.temp_files()
    try:
        summary = read_summary(paths.summary)
    except UserError as e:  # shown as this shard's state: the others are still worth seeing
        return ShardState(index, "damaged", str(e))
    have = {p.suffix[1:] for p in (paths.tfrecord, paths.csv, paths.summary) if p.exists()}
    if summary is not None:
        files = summary.get("files", {})
        problems = []
        for kind, path in (("tfrecord", paths.tfrecord), ("csv", paths.csv)):
            want = files.get(kind, {}).get("bytes")
            if not path.is_file():
                problems.append(f"{path.name} missing")
            elif want is not None and path.stat().st_size != want:
                problems.append(f"{path.name} has {path.stat().st_size} bytes, summary says {want}")
        if problems:
            return ShardState(index, "partial", "; ".join(problems), summary)
        detail = f"{summary['labeled']} labeled, {summary['rejected']} rejected"
        if temps:
            detail += f" ({len(temps)} stale temporary file(s))"
        return ShardState(index, "done", detail, summary)
    if paths.summary.exists():
        return ShardState(index, "partial", f"{paths.summary.name} is not a valid summary")
    if have or temps:
        parts = sorted(have) + ([f"{len(temps)} temporary file(s)"] if temps else [])
        return ShardState(index, "partial", "no summary; found " + ", ".join(parts))
    return ShardState(index, "missing")


def _counts_on_disk(folder: Path) -> set[int]:
    counts = set()
    if folder.is_dir():
        for name in os.listdir(folder):
            m = PART_RE.match(name) or TEMP_RE.match(name)
            if m:
                counts.add(int(m.group(2)))
    return counts


def label_status(out_dir: str | os.PathLike, num_shards: int | None = None) -> LabelStatus:
    """The state of every shard of `out_dir` for `num_shards` (inferred if there is one)."""
    out_dir = Path(out_dir)
    folder = out_dir / LABELS_DIR
    if not out_dir.is_dir():
        raise UserError(f"OUT_DIR {out_dir} does not exist")
    counts = _counts_on_disk(folder)
    if num_shards is None:
        if len(counts) != 1:
            found = ", ".join(map(str, sorted(counts))) or "none"
            raise UserError(
                f"cannot tell the shard count from {folder} (found: {found}); pass --num-shards"
            )
        num_shards = counts.pop()
        counts = set()
    if num_shards < 1:
        raise UserError(f"--num-shards must be at least 1 (got {num_shards})")
    shards = [_shard_state(out_dir, i, num_shards) for i in range(num_shards)]
    return LabelStatus(out_dir, num_shards, shards, sorted(counts - {num_shards}))
