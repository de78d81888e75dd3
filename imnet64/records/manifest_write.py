"""dataset.json as `imnet64 shard-records` writes it once every shard of the plan is done:
built from the shards' sidecars alone (formats.manifest.write_manifest writes the bytes), so
it is the same whichever process, rank or worker count writes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imnet64.cluster import provenance
from imnet64.formats import provenance as provenance_schema
from imnet64.formats.manifest import ClassInfo, SplitInfo, write_manifest
from imnet64.formats.shard_sidecar import ShardSidecar
from imnet64.records.options import ShardOptions
from imnet64.records.source import Source
from imnet64.records.split import SPLITS, KeptClass, PlannedShard


def write_dataset_manifest(
    out_dir: Path,
    source: Source,
    classes: tuple[KeptClass, ...],
    plans: dict[str, list[PlannedShard]],
    sidecars: dict[str, ShardSidecar],
    options: ShardOptions,
    dropped: dict[str, int],
) -> dict[str, Any]:
    """Write OUT_DIR/dataset.json from the sidecars of every planned shard; returns its
    content."""
    splits: dict[str, SplitInfo] = {}
    for split in SPLITS:
        done = [sidecars[plan.file] for plan in plans[split]]
        class_counts = [0] * len(classes)
        for side in done:
            class_counts = [a + b for a, b in zip(class_counts, side.class_counts)]
        splits[split] = SplitInfo(count=sum(s.examples for s in done),
                                  class_counts=tuple(class_counts),
                                  shards=tuple(s.shard_info for s in done))
    total = sum(s.count for s in splits.values())
    converted = sum(s.converted for s in sidecars.values())
    return write_manifest(
        out_dir,
        encoding=options.encoding,
        classes=[ClassInfo(c.id, c.name, c.teacher_id if c.teacher_id >= 0 else None)
                 for c in classes],
        splits=splits,
        teacher=source.teacher,
        source=str(Path(source.root).resolve()),
        options=options.as_json(),
        extra={
            "source_info": {"kind": source.kind, "fingerprint": source.fingerprint,
                            **source.info},
            # code and teacher only: the same for any number of ranks or workers (where it
            # ran goes to dataset.run.json)
            provenance_schema.KEY: provenance_schema.stable(
                provenance.collect(source.teacher, source.teacher_sha256)),
            "stats": {
                "source_images": len(source.items),
                "examples": total,
                "dropped": dropped,
                # images that were not 8-bit 64x64 PNGs: decoded, converted to RGB, resized
                "converted": converted,
                "kept_original_bytes": total - converted if options.encoding == "png" else 0,
            },
        },
    )
