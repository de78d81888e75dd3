"""A tiny dataset labeled by the real offline teacher, as `imnet64 label` + `shard-records`
would make it, for the distillation tests: crops of a few package photos, the teacher's top-k
over all 1001 classes stored in every record, its C most frequent top-1 classes kept (with
their teacher ids, so `--targets online` can score them), and the teacher named in the
manifest (the online teacher defaults to it)."""

from __future__ import annotations

import collections
from pathlib import Path

from imnet64.formats.manifest import ClassInfo, SplitInfo, write_manifest
from imnet64.formats.tfrecord_schema import DatasetExample
from imnet64.pipeline.sample_images import iter_sample

import numpy as np
from tiny_dataset import _png, _write_shards

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "grace_hopper")
TOP_K = 5


def teacher_probs(teacher, images: np.ndarray) -> np.ndarray:
    """The teacher's softmax over its 1001 classes for uint8 images [N, 64, 64, 3]."""
    from imnet64.teacher.images import pixels_to_teacher_input

    import tensorflow as tf

    out = [tf.nn.softmax(teacher.logits(pixels_to_teacher_input(images[i:i + 64],
                                                                teacher.image_size)))
           for i in range(0, len(images), 64)]
    return np.concatenate([o.numpy() for o in out])


def build_distill_dataset(root: str | Path, *, per_photo: int = 24, classes: int = 3,
                          val_every: int = 4, shards: int = 2) -> Path:
    """Every `val_every`-th kept crop goes to val; returns the dataset folder."""
    from imnet64.teacher import load_teacher

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    crops = [(name, image) for name, image in iter_sample(per_photo * 16)
             if name.rsplit("_", 1)[0] in PHOTOS]
    pixels = np.stack([np.asarray(image, np.uint8) for _, image in crops])
    teacher = load_teacher("offline")
    probs = teacher_probs(teacher, pixels)
    top1 = probs.argmax(axis=1)
    kept_ids = [int(c) for c, _ in collections.Counter(top1.tolist()).most_common(classes)]
    kept_of = {teacher_id: i for i, teacher_id in enumerate(kept_ids)}
    examples = []
    for (name, image), p, best in zip(crops, probs, top1):
        if int(best) not in kept_of:
            continue  # the teacher's top-1 is not a kept class: dropped, as shard-records does
        ids = np.argsort(-p, kind="stable")[:TOP_K]
        examples.append(DatasetExample(
            encoded=_png(image), encoding="png", filename=name, label=kept_of[int(best)],
            class_name=teacher.class_names[int(best)], teacher_label=int(best),
            confidence=float(p[best]), topk_ids=tuple(int(i) for i in ids),
            topk_probs=tuple(float(p[i]) for i in ids),
            topk_labels=tuple(kept_of.get(int(i), -1) for i in ids)))
    val, train = examples[::val_every], [e for i, e in enumerate(examples) if i % val_every]
    splits = {}
    for split, items in (("train", train), ("val", val)):
        counts = tuple(sum(e.label == c for e in items) for c in range(len(kept_ids)))
        splits[split] = SplitInfo(count=len(items), class_counts=counts,
                                  shards=_write_shards(root, split, items, shards))
    write_manifest(
        root, encoding="png",
        classes=[ClassInfo(id=i, name=teacher.class_names[t], teacher_id=t)
                 for i, t in enumerate(kept_ids)],
        splits=splits, teacher="offline", source="imnet64.pipeline.sample_images",
        options={"per_photo": per_photo, "classes": classes, "val_every": val_every})
    return root
