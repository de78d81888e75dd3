"""`imnet64 inspect`: what a dataset holds (from its manifest) and whether its shards are intact.

`summarize` reads only the manifest. `verify` re-reads every shard: size, sha256 and record
count must equal the manifest's (formats.shard_check, at its "full" depth), and every label
must name a class; any difference is a problem (the CLI exits 1).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from imnet64.formats.manifest import Manifest, dataset_provenance
from imnet64.formats.shard_check import ShardCheck, check_shard
from imnet64.formats.tfrecord_file import RecordFileError, iter_records
from imnet64.progress import ProgressFn
from imnet64.records.progress_count import ProgressCount


@dataclass(frozen=True)
class SplitSummary:
    name: str
    examples: int
    shards: int
    bytes: int
    shard_bytes_min: int
    shard_bytes_max: int
    shard_examples_min: int
    shard_examples_max: int


@dataclass(frozen=True)
class ClassRow:
    id: int
    name: str
    teacher_id: int | None
    counts: dict[str, int]  # split -> examples

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class Summary:
    root: str
    encoding: str
    teacher: str | None
    num_classes: int
    splits: list[SplitSummary]
    classes: list[ClassRow]
    options: dict = field(default_factory=dict)
    provenance: dict | None = None  # imnet64.cluster.provenance of the dataset (None: not recorded)

    @property
    def examples(self) -> int:
        return sum(s.examples for s in self.splits)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.splits)


def summarize(manifest: Manifest) -> Summary:
    splits = []
    for name, info in manifest.splits.items():
        sizes = [s.bytes for s in info.shards] or [0]
        counts = [s.examples for s in info.shards] or [0]
        splits.append(
            SplitSummary(
                name,
                info.count,
                len(info.shards),
                sum(sizes),
                min(sizes),
                max(sizes),
                min(counts),
                max(counts),
            )
        )
    classes = [
        ClassRow(
            c.id,
            c.name,
            c.teacher_id,
            {name: info.class_counts[c.id] for name, info in manifest.splits.items()},
        )
        for c in manifest.classes
    ]
    return Summary(
        root=str(manifest.root),
        encoding=manifest.encoding,
        teacher=manifest.teacher,
        num_classes=manifest.num_classes,
        splits=splits,
        classes=classes,
        options=dict(manifest.raw.get("options", {})),
        provenance=dataset_provenance(manifest.root, manifest.raw),
    )


def verify(manifest: Manifest, progress: ProgressFn | None = None) -> list[str]:
    """One line per problem found (empty list = every shard matches the manifest)."""
    problems: list[str] = []
    found_counts: Counter[tuple[str, int]] = Counter()  # (split, label) -> records
    shards = [s for info in manifest.splits.values() for s in info.shards]
    on_bytes = ProgressCount(progress, sum(s.bytes for s in shards))
    for shard in shards:
        check = check_shard(manifest.root, shard, "full", on_bytes)
        problems += _shard_problems(check)
        if check.records is not None:  # the file was read and its records counted
            problems += _label_problems(manifest, shard.file, found_counts)
    for name, info in manifest.splits.items():
        found = [found_counts.get((name, c), 0) for c in range(manifest.num_classes)]
        if not problems and found != list(info.class_counts):
            problems.append(f"split {name}: the shards hold {found} examples per class, the "
                            f"manifest says {list(info.class_counts)}")
        if sum(s.examples for s in info.shards) != info.count:
            problems.append(f"split {name}: shard examples do not add up to its count {info.count}")
        if sum(info.class_counts) != info.count:
            problems.append(f"split {name}: class counts do not add up to its count {info.count}")
    return problems


def _shard_problems(found: ShardCheck) -> list[str]:
    """`found`'s differences from the manifest, one line each, named by the shard's file."""
    shard = found.shard
    if not found.regular_file:
        return [f"{shard.file}: missing"]
    problems = []
    if not found.size_ok:
        problems.append(f"{shard.file}: {found.size} bytes, manifest says {shard.bytes}")
    if found.error is not None:  # vanished or unreadable after the stat
        return problems + [f"{shard.file}: cannot be read ({found.why_unreadable})"]
    if not found.sha256_ok:
        problems.append(f"{shard.file}: sha256 {found.sha256[:16]}... differs from the "
                        f"manifest's {shard.sha256[:16]}...")
    if found.record_error is not None:
        return problems + [f"{shard.file}: {found.record_error}"]
    if not found.records_ok:
        problems.append(f"{shard.file}: {found.records} records, manifest says {shard.examples}")
    return problems


def _label_problems(manifest: Manifest, file: str, counts: Counter[tuple[str, int]]
                    ) -> list[str]:
    """Count the labels of one shard (into `counts`, by split); a label outside the class
    list (a class removed from dataset.json by hand) is a problem: training would fail deep
    inside TensorFlow."""
    from imnet64.formats.tfrecord_schema import LABEL  # TensorFlow only for --verify

    import tensorflow as tf

    split = file.split("-", 1)[0]
    top = -1
    try:
        for _, data in iter_records(manifest.root / file):
            label = int(tf.train.Example.FromString(data).features.feature[LABEL]
                        .int64_list.value[0])
            counts[(split, label)] += 1
            top = max(top, label)
    except (RecordFileError, ValueError, IndexError) as e:
        return [f"{file}: a record does not parse ({e})"]
    if top >= manifest.num_classes:
        return [f"{file}: labels up to {top} for {manifest.num_classes} classes (dataset.json's "
                "class list does not fit its shards)"]
    return []
