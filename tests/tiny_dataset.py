"""A tiny but real dataset for training tests: crops of package photos, labeled by photo.

Each class is one photo (the crop's file-name stem says which), so the labels are
learnable: a small CNN tells the cat from the coffee cup within a few epochs. Written in the
manifest v1 format (imnet64/formats/manifest.py) with PNG shards made by the records schema, exactly
as `imnet64 shard-records` lays a dataset out.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from imnet64 import atomic
from imnet64.formats.manifest import ClassInfo, ShardInfo, SplitInfo, write_manifest
from imnet64.formats.tfrecord_schema import DatasetExample, serialize_dataset_example
from imnet64.pipeline.sample_images import PHOTOS, iter_sample

DEFAULT_CLASSES = ("chelsea", "coffee", "astronaut", "rocket")


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _write_shards(root: Path, split: str, examples: list[DatasetExample],
                  shards: int) -> tuple[ShardInfo, ...]:
    import tensorflow as tf

    infos = []
    for s in range(shards):
        part = examples[s::shards]
        name = f"{split}-{s:05d}-of-{shards:05d}.tfrecord"
        with atomic.atomic_path(root / name) as tmp, tf.io.TFRecordWriter(str(tmp)) as w:
            for ex in part:
                w.write(serialize_dataset_example(ex))
        infos.append(ShardInfo(file=name, examples=len(part), bytes=(root / name).stat().st_size,
                               sha256=atomic.sha256_file(root / name)))
    return tuple(infos)


def build_tiny_dataset(
    root: str | Path,
    *,
    per_class: int = 60,
    classes: tuple[str, ...] = DEFAULT_CLASSES,
    val_fraction: float = 0.25,
    shards: int = 2,
    seed: int = 0,
) -> Path:
    """Write `len(classes) * per_class` real 64x64 crops as train/val PNG shards + manifest."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stems = [Path(name).stem for _, name in PHOTOS]
    wanted = {c: i for i, c in enumerate(classes)}
    by_class: dict[int, list[DatasetExample]] = {i: [] for i in range(len(classes))}
    # iter_sample is round-robin over all photos: this many gives per_class crops of each
    for name, image in iter_sample(per_class * len(stems)):
        stem = name.rsplit("_", 1)[0]
        if stem not in wanted:
            continue
        label = wanted[stem]
        by_class[label].append(DatasetExample(
            encoded=_png(image), encoding="png", filename=name, label=label,
            class_name=stem, teacher_label=label, confidence=1.0, topk_ids=(label,),
            topk_probs=(1.0,), topk_labels=(label,)))
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(by_class):
        items = by_class[label]
        rng.shuffle(items)
        n_val = max(1, round(len(items) * val_fraction))
        val += items[:n_val]
        train += items[n_val:]
    rng.shuffle(train)
    rng.shuffle(val)
    splits = {}
    for split, items in (("train", train), ("val", val)):
        counts = tuple(sum(ex.label == c for ex in items) for c in range(len(classes)))
        splits[split] = SplitInfo(count=len(items), class_counts=counts,
                                  shards=_write_shards(root, split, items, shards))
    write_manifest(
        root,
        encoding="png",
        classes=[ClassInfo(id=i, name=c, teacher_id=None) for i, c in enumerate(classes)],
        splits=splits,
        teacher="photo of origin (tests/tiny_dataset.py)",
        source="imnet64.pipeline.sample_images",
        options={"per_class": per_class, "val_fraction": val_fraction, "seed": seed},
    )
    return root
