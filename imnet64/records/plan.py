"""What `imnet64 shard-records` will write: SOURCE scanned, filtered, split and dealt into
shards (records.split), and each shard's plan hash, which its sidecar records so that a
re-run knows a finished shard of the same plan. The same on every rank: a pure function
of SOURCE and the options.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from imnet64.records.options import ShardOptions
from imnet64.records.source import Source, keyed_by_truth, scan_source
from imnet64.records.split import (
    SPLITS,
    Example,
    PlannedShard,
    Selection,
    plan_shards,
    select,
    split_examples,
)


def shard_plan_hash(base: str, plan: PlannedShard) -> str:
    """The identity of one shard's plan: `base` (SOURCE, encoding, classes) and the shard's
    examples in order."""
    h = hashlib.sha256(base.encode())
    h.update(plan.file.encode())
    for ex in plan.examples:
        h.update(f"\n{ex.label}\t{ex.item.filename}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


@dataclass(frozen=True)
class DatasetPlan:
    """What the dataset will hold: the same on every rank (a pure function of SOURCE and
    the options)."""

    source: Source
    selection: Selection
    split: dict[str, list[Example]]
    shards: dict[str, list[PlannedShard]]  # by split
    hashes: dict[str, str]  # shard file -> plan hash

    @property
    def all_shards(self) -> list[PlannedShard]:
        return [p for s in SPLITS for p in self.shards[s]]

    def describe(self) -> str:
        return (f"{len(self.source.items)} images in SOURCE, {len(self.selection.examples)} "
                f"kept in {len(self.selection.classes)} classes: "
                + ", ".join(f"{s} {len(self.split[s])} in {len(self.shards[s])} shard(s)"
                            for s in SPLITS))


def plan_dataset(source: Path, options: ShardOptions, allow_partial: bool) -> DatasetPlan:
    """Scan SOURCE and plan every shard (see records.split for the rules)."""
    scanned = scan_source(source, allow_partial)
    if options.labels == "truth":
        scanned = keyed_by_truth(scanned)
    selection = select(
        scanned,
        min_confidence=options.min_confidence,
        classes=options.classes,
        max_per_class=options.max_per_class,
        seed=options.seed,
    )
    split = split_examples(selection, options.val_fraction, options.seed)
    shard_bytes = int(options.shard_size_mb * 2**20)
    shards = {
        s: plan_shards(s, split[s], options.encoding, shard_bytes, options.seed) for s in SPLITS
    }
    base = json.dumps(
        [scanned.fingerprint, options.encoding, [asdict(c) for c in selection.classes]]
        + ([options.labels] if options.labels != "teacher" else []),  # teacher: hashes as before
        sort_keys=True,
    )
    hashes = {p.file: shard_plan_hash(base, p) for s in SPLITS for p in shards[s]}
    return DatasetPlan(scanned, selection, split, shards, hashes)
