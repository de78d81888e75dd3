"""The student against the TRUE labels, beside its agreement with the teacher's top-1.

Where the images carry a true label (ImageNet64 batch files; `image/class/truth`, a teacher
index), `imnet64 evaluate` reports top-1/top-5 against it on:
- the dataset split it evaluates (records of `shard-records` keep the truth), and
- a separate labeled set (`--labeled-set`): the OUT_DIR of `imnet64 label` run on other
  files, e.g. the official `val_data`. Going through `label` first (rather than reading the
  batch files here) gives the teacher's answer on the same images, so the student's
  agreement with the teacher and its accuracy stand side by side; it reuses labeling's
  sharding and resume on a cluster; and the images are mapped to the run's classes by the
  teacher index, whatever classes another dataset kept.

A true class the run did not keep (`shard-records --classes`) counts as a miss: the student
cannot name it (`not_kept` says how many). A second, separate pass over the records, so the
trainer's input pipeline stays as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from imnet64.errors import UserError
from imnet64.formats import tfrecord_schema as schema
from imnet64.formats.label_parts import part_paths
from imnet64.formats.label_status import label_status
from imnet64.formats.manifest import Manifest

import numpy as np
import tensorflow as tf

TOP_K = 5


@dataclass
class TruthEvaluation:
    source: str  # "val split of DIR" or the labeled set's OUT_DIR
    count: int = 0  # images with a true label
    top1_hits: int = 0
    top5_hits: int = 0
    not_kept: int = 0  # true class not among the run's classes (misses)
    with_teacher: int = 0  # images whose teacher top-1 is known
    agreements: int = 0  # student top-1 == teacher top-1
    k: int = TOP_K

    @property
    def top1(self) -> float | None:
        return self.top1_hits / self.count if self.count else None

    @property
    def top5(self) -> float | None:
        return self.top5_hits / self.count if self.count else None

    @property
    def teacher_agreement(self) -> float | None:
        return self.agreements / self.with_teacher if self.with_teacher else None

    def to_json(self) -> dict:
        return {**asdict(self), "top1": self.top1, "top5": self.top5,
                "teacher_agreement": self.teacher_agreement}

    def describe(self) -> str:
        if not self.count:
            return f"{self.source}: no true labels"
        line = (f"student vs truth on {self.count} images of {self.source}: top-1 "
                f"{self.top1:.4f}   top-{self.k} {self.top5:.4f}")
        if self.teacher_agreement is not None:
            line += f"   agreement with the teacher {self.teacher_agreement:.4f}"
        if self.not_kept:
            line += f"   ({self.not_kept} of a class the run did not keep)"
        return line


def class_of_teacher(manifest: Manifest, size: int = 1001) -> np.ndarray:
    """int64 [size]: the run's class of each teacher index, -1 where not kept."""
    table = np.full(size, -1, np.int64)
    for c in manifest.classes:
        if c.teacher_id is not None and 0 <= c.teacher_id < size:
            table[c.teacher_id] = c.id
    return table


def _decode64(encoded: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = tf.image.resize(image, (64, 64), antialias=True)  # a no-op for 64x64 images
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _split_batches(manifest: Manifest, split: str, batch: int) -> tf.data.Dataset:
    spec = {schema.ENCODED: tf.io.FixedLenFeature([], tf.string),
            schema.TRUTH: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
            schema.TEACHER_LABEL: tf.io.FixedLenFeature([], tf.int64, default_value=-1)}

    def parse(record):
        f = tf.io.parse_single_example(record, spec)
        image = schema.decode_dataset_image(f[schema.ENCODED], manifest.encoding)
        return image, f[schema.TRUTH], f[schema.TEACHER_LABEL]

    files = [str(p) for p in manifest.shard_paths(split)]
    return tf.data.TFRecordDataset(files).map(parse).filter(
        lambda image, truth, teacher: truth >= 0).batch(batch)


def _label_part_files(out_dir: Path) -> list[str]:
    status = label_status(out_dir)
    if not status.of("done"):
        raise UserError(f"--labeled-set {out_dir} has no finished label part")
    return [str(part_paths(out_dir, s.index, status.num_shards).tfrecord)
            for s in status.of("done")]


def _labeled_set_batches(out_dir: Path, batch: int) -> tf.data.Dataset:
    spec = {schema.ENCODED: tf.io.FixedLenFeature([], tf.string),
            schema.TRUTH: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
            schema.LABEL: tf.io.FixedLenFeature([], tf.int64, default_value=-1)}

    def parse(record):
        f = tf.io.parse_single_example(record, spec)
        return _decode64(f[schema.ENCODED]), f[schema.TRUTH], f[schema.LABEL]

    return tf.data.TFRecordDataset(_label_part_files(out_dir)).map(parse).filter(
        lambda image, truth, teacher: truth >= 0).batch(batch)


def _score(model: tf.keras.Model, table: np.ndarray, batches: tf.data.Dataset,
           result: TruthEvaluation) -> TruthEvaluation:
    num_classes = int(model.output_shape[-1])
    result.k = k = min(TOP_K, num_classes)
    lookup = tf.constant(table)

    @tf.function(reduce_retracing=True)
    def predict(images):
        logits = tf.cast(model(images, training=False), tf.float32)
        return tf.math.top_k(logits, k=k).indices

    for images, truth, teacher in batches:
        top = predict(images).numpy()
        want = tf.gather(lookup, truth).numpy()
        result.count += len(want)
        result.not_kept += int((want < 0).sum())
        result.top1_hits += int((top[:, 0] == want).sum())
        result.top5_hits += int((top == want[:, None]).any(axis=1).sum())
        known = teacher.numpy() >= 0
        teacher_cls = tf.gather(lookup, tf.maximum(teacher, 0)).numpy()
        result.with_teacher += int(known.sum())
        result.agreements += int(((top[:, 0] == teacher_cls) & known).sum())
    return result


def split_against_truth(model: tf.keras.Model, manifest: Manifest, split: str,
                        batch: int) -> TruthEvaluation | None:
    """The student on the split's records that carry a true label (None: none do)."""
    result = _score(model, class_of_teacher(manifest), _split_batches(manifest, split, batch),
                    TruthEvaluation(f"the {split} split"))
    return result if result.count else None


def labeled_set_against_truth(model: tf.keras.Model, manifest: Manifest,
                              out_dir: str | Path, batch: int) -> TruthEvaluation:
    """The student on a separate labeled set: the OUT_DIR of `imnet64 label` on inputs
    with true labels (e.g. the official val_data)."""
    out_dir = Path(out_dir)
    result = _score(model, class_of_teacher(manifest), _labeled_set_batches(out_dir, batch),
                    TruthEvaluation(str(out_dir)))
    if not result.count:
        raise UserError(f"--labeled-set {out_dir}: its images carry no true labels (label "
                        "ImageNet64 batch files such as val_data to get some)")
    return result
