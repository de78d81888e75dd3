"""Which images go where: filters, the stratified train/val split, and the shard plan.

Everything here is a pure function of (items, options): no clock, no worker count, no
randomness but keyed hashes of (seed, purpose, file name). Keyed hashes instead of a
shuffled list also keep an image's fate stable when other images are added or dropped.

- Filters, in this order: `min_confidence`; `classes` (the K most frequent, ties to the
  smaller key, or a list of names); `max_per_class` (a seeded sample). Kept classes are
  numbered 0..C-1 in key order (teacher id for label sources, folder name for folders).
- Split: per class, n_val = round(n * val_fraction) images by hash order go to val.
- Shards: a split's examples, sorted by (class, hash), are dealt round-robin to
  ceil(estimated bytes / target) shards, so every shard holds each class's count +-1;
  each shard's examples are then ordered by another hash (shuffled across classes).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from imnet64.errors import UserError
from imnet64.formats.image64 import RAW_BYTES as RAW_IMAGE_BYTES
from imnet64.records.source import MAX_IMAGE_ESTIMATE, ClassKey, Source, SourceItem

SPLITS = ("train", "val")
RECORD_OVERHEAD = 240  # feature names, label, confidence, top-k, framing (measured ~200-250)


def hash_key(seed: int, purpose: str, name: str) -> bytes:
    return hashlib.blake2b(
        f"{seed}\0{purpose}\0{name}".encode("utf-8", "surrogateescape"), digest_size=8
    ).digest()


@dataclass(frozen=True)
class KeptClass:
    id: int
    key: ClassKey
    name: str
    teacher_id: int  # -1 = unknown


@dataclass(frozen=True)
class Example:
    item: SourceItem
    label: int


@dataclass(frozen=True)
class Selection:
    classes: tuple[KeptClass, ...]
    examples: tuple[Example, ...]
    dropped: dict[str, int]  # filter -> images it removed


def _resolve_names(names: Sequence[str], source: Source, available: set[ClassKey]) -> set[ClassKey]:
    """Class keys for the names given; a name matches a class name or a folder name exactly,
    else case-insensitively. A duplicated ImageNet name ("crane") selects all its classes."""
    by_name: dict[str, set[ClassKey]] = {}
    for key, name in source.class_names.items():
        by_name.setdefault(name, set()).add(key)
        by_name.setdefault(str(key), set()).add(key)
    lowered: dict[str, set[ClassKey]] = {}
    for name, keys in by_name.items():
        lowered.setdefault(name.lower(), set()).update(keys)
    chosen: set[ClassKey] = set()
    for name in names:
        keys = by_name.get(name) or lowered.get(name.lower())
        if not keys:
            raise UserError(f"--classes: no class named {name!r} in SOURCE")
        chosen |= keys
    return chosen & available if available else chosen


def select(
    source: Source,
    *,
    min_confidence: float | None = None,
    classes: int | list[str] | None = None,
    max_per_class: int | None = None,
    seed: int = 0,
) -> Selection:
    dropped = {"min_confidence": 0, "classes": 0, "max_per_class": 0}
    items = list(source.items)
    if min_confidence is not None:
        kept = [it for it in items if it.confidence >= min_confidence]
        dropped["min_confidence"] = len(items) - len(kept)
        items = kept

    counts = Counter(it.class_key for it in items)
    if isinstance(classes, int):
        ranked = sorted(counts, key=lambda k: (-counts[k], k))
        keys = set(ranked[:classes])
    elif isinstance(classes, list):
        keys = _resolve_names(classes, source, set(source.class_names))
    else:
        keys = set(counts)
    kept = [it for it in items if it.class_key in keys]
    dropped["classes"] = len(items) - len(kept)
    items = kept

    if max_per_class is not None:
        by_class: dict[ClassKey, list[SourceItem]] = {}
        for it in items:
            by_class.setdefault(it.class_key, []).append(it)
        kept = []
        for members in by_class.values():
            members.sort(key=lambda it: hash_key(seed, "cap", it.filename))
            kept.extend(members[:max_per_class])
        dropped["max_per_class"] = len(items) - len(kept)
        items = kept

    if not items:
        raise UserError(
            "no images left after the filters (--min-confidence/--classes/--max-per-class)"
        )
    kept_classes = tuple(
        KeptClass(i, key, source.class_names[key], source.teacher_ids.get(key, -1))
        for i, key in enumerate(sorted(keys))
    )
    label_of = {c.key: c.id for c in kept_classes}
    examples = tuple(Example(it, label_of[it.class_key]) for it in items)
    return Selection(kept_classes, examples, dropped)


def split_examples(
    selection: Selection, val_fraction: float, seed: int
) -> dict[str, list[Example]]:
    """Stratified split: per class, the first round(n * val_fraction) by hash go to val."""
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    by_class: dict[int, list[Example]] = {}
    for ex in selection.examples:
        by_class.setdefault(ex.label, []).append(ex)
    out: dict[str, list[Example]] = {"train": [], "val": []}
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda ex: hash_key(seed, "split", ex.item.filename))
        n_val = math.floor(len(members) * val_fraction + 0.5)
        out["val"].extend(members[:n_val])
        out["train"].extend(members[n_val:])
    return out


def estimated_bytes(example: Example, encoding: str) -> int:
    image = RAW_IMAGE_BYTES if encoding == "raw" else min(example.item.size, MAX_IMAGE_ESTIMATE)
    return image + len(example.item.filename.encode("utf-8", "surrogateescape")) + RECORD_OVERHEAD


@dataclass(frozen=True)
class PlannedShard:
    """One shard file of a split and the examples planned into it, in write order."""

    split: str
    index: int
    count: int
    examples: tuple[Example, ...]

    @property
    def file(self) -> str:
        return shard_file(self.split, self.index, self.count)


def shard_file(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def plan_shards(
    split: str, examples: Sequence[Example], encoding: str, shard_bytes: int, seed: int
) -> list[PlannedShard]:
    if not examples:
        return []
    total = sum(estimated_bytes(ex, encoding) for ex in examples)
    count = max(1, min(len(examples), math.ceil(total / shard_bytes)))
    dealt = sorted(examples, key=lambda ex: (ex.label, hash_key(seed, "deal", ex.item.filename)))
    plans = []
    for index in range(count):
        members = sorted(
            dealt[index::count], key=lambda ex: hash_key(seed, "order", ex.item.filename)
        )
        plans.append(PlannedShard(split, index, count, tuple(members)))
    return plans
