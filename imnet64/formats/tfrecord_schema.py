"""The TFRecord schema: the one place that knows feature names, for writing and parsing.

Feature names follow TF's own image pipelines (`image/encoded`, `image/class/label`, ...)
plus the teacher's confidence and top-k (soft labels for distillation).

Two kinds of record share the schema:
- label parts (`imnet64 label`): original file bytes, `image/class/label` = teacher id.
- dataset shards (`imnet64 shard-records`): 64x64 images (PNG bytes or raw uint8),
  `image/class/label` = kept class 0..C-1, `image/class/teacher_label` = teacher id and
  `teacher/topk/labels` = the top-k ids renumbered into kept classes (-1 if not kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imnet64.formats.image64 import CHANNELS
from imnet64.formats.image64 import SIZE as IMAGE_SIZE

import tensorflow as tf

ENCODED = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
CHANNELS_KEY = "image/channels"
FILENAME = "image/filename"
LABEL = "image/class/label"
TEXT = "image/class/text"
TEACHER_LABEL = "image/class/teacher_label"
# The true class as a teacher index (1..1000), when the input carried one (ImageNet64 batch
# files); absent otherwise.
TRUTH = "image/class/truth"
# In dataset shards: the true class renumbered into the kept classes (-1: not kept)
TRUTH_LABEL = "image/class/truth_label"
CONFIDENCE = "teacher/confidence"
TOPK_IDS = "teacher/topk/ids"
TOPK_PROBS = "teacher/topk/probs"
TOPK_LABELS = "teacher/topk/labels"


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values: Sequence[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


@dataclass(frozen=True)
class LabeledImage:
    """One labeled image as `imnet64 label` writes it (and `shard-records` reads it)."""

    encoded: bytes
    image_format: str  # "png", "jpeg", ... (lower case)
    height: int
    width: int
    filename: str  # path relative to the labeling INPUT
    label: int  # teacher class id, 0..1000
    class_name: str
    confidence: float
    topk_ids: tuple[int, ...]
    topk_probs: tuple[float, ...]
    truth: int | None = None  # true class, teacher index (None: the input carried none)


def serialize_labeled(item: LabeledImage) -> bytes:
    features = {
        ENCODED: _bytes([item.encoded]),
        FORMAT: _bytes([item.image_format.encode()]),
        HEIGHT: _ints([item.height]),
        WIDTH: _ints([item.width]),
        FILENAME: _bytes([item.filename.encode("utf-8", "surrogateescape")]),
        LABEL: _ints([item.label]),
        TEXT: _bytes([item.class_name.encode("utf-8")]),
        CONFIDENCE: _floats([item.confidence]),
        TOPK_IDS: _ints(item.topk_ids),
        TOPK_PROBS: _floats(item.topk_probs),
    }
    if item.truth is not None:
        features[TRUTH] = _ints([item.truth])
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(
        deterministic=True)


def parse_labeled(serialized: bytes) -> LabeledImage:
    """Eager (Python) parse of a label-part record."""
    f = tf.train.Example.FromString(serialized).features.feature
    return LabeledImage(
        encoded=f[ENCODED].bytes_list.value[0],
        image_format=f[FORMAT].bytes_list.value[0].decode(),
        height=int(f[HEIGHT].int64_list.value[0]),
        width=int(f[WIDTH].int64_list.value[0]),
        filename=f[FILENAME].bytes_list.value[0].decode("utf-8", "surrogateescape"),
        label=int(f[LABEL].int64_list.value[0]),
        class_name=f[TEXT].bytes_list.value[0].decode("utf-8"),
        confidence=float(f[CONFIDENCE].float_list.value[0]),
        topk_ids=tuple(int(v) for v in f[TOPK_IDS].int64_list.value),
        topk_probs=tuple(float(v) for v in f[TOPK_PROBS].float_list.value),
        truth=int(f[TRUTH].int64_list.value[0]) if TRUTH in f else None,
    )


def catalog_fields(serialized: bytes) -> tuple[str, int, str, float, int, int]:
    """(filename, label, class name, confidence, image bytes, truth or -1) of a label-part
    record: the fields shard-records' catalog needs, for every record of every part on
    every rank. parse_labeled's other fields (top-k tuples, format, sizes) cost it 8 us a
    record more (bench/catalog_scan.py, 160,000 records, Zen 4: 17.2 against 9.1 us), 10 s
    per rank at 1.28 M."""
    f = tf.train.Example.FromString(serialized).features.feature
    return (f[FILENAME].bytes_list.value[0].decode("utf-8", "surrogateescape"),
            int(f[LABEL].int64_list.value[0]),
            f[TEXT].bytes_list.value[0].decode("utf-8"),
            float(f[CONFIDENCE].float_list.value[0]),
            len(f[ENCODED].bytes_list.value[0]),
            int(f[TRUTH].int64_list.value[0]) if TRUTH in f else -1)


@dataclass(frozen=True)
class DatasetExample:
    """One training/validation example as `imnet64 shard-records` writes it."""

    encoded: bytes  # 64x64 PNG bytes, or 64*64*3 raw uint8 bytes
    encoding: str  # "png" or "raw"
    filename: str
    label: int  # kept class, 0..C-1
    class_name: str
    teacher_label: int
    confidence: float
    topk_ids: tuple[int, ...]
    topk_probs: tuple[float, ...]
    topk_labels: tuple[int, ...]  # top-k ids renumbered into kept classes, -1 = not kept
    truth: int | None = None  # true class, teacher index (None: unknown)
    truth_label: int | None = None  # true class as a kept class, -1 if not kept


def serialize_dataset_example(item: DatasetExample) -> bytes:
    features = {
        ENCODED: _bytes([item.encoded]),
        FORMAT: _bytes([item.encoding.encode()]),
        HEIGHT: _ints([IMAGE_SIZE]),
        WIDTH: _ints([IMAGE_SIZE]),
        CHANNELS_KEY: _ints([CHANNELS]),
        FILENAME: _bytes([item.filename.encode("utf-8", "surrogateescape")]),
        LABEL: _ints([item.label]),
        TEXT: _bytes([item.class_name.encode("utf-8")]),
        TEACHER_LABEL: _ints([item.teacher_label]),
        CONFIDENCE: _floats([item.confidence]),
        TOPK_IDS: _ints(item.topk_ids),
        TOPK_PROBS: _floats(item.topk_probs),
        TOPK_LABELS: _ints(item.topk_labels),
    }
    if item.truth is not None:  # absent when unknown, as in label parts
        features[TRUTH] = _ints([item.truth])
        features[TRUTH_LABEL] = _ints([-1 if item.truth_label is None else item.truth_label])
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(
        deterministic=True)


_DATASET_SPEC = {
    ENCODED: tf.io.FixedLenFeature([], tf.string),
    FORMAT: tf.io.FixedLenFeature([], tf.string),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
    CONFIDENCE: tf.io.FixedLenFeature([], tf.float32, default_value=1.0),
    TOPK_PROBS: tf.io.VarLenFeature(tf.float32),
    TOPK_LABELS: tf.io.VarLenFeature(tf.int64),
}


def decode_dataset_image(encoded: tf.Tensor, encoding: str) -> tf.Tensor:
    """uint8 [64, 64, 3] from a dataset record's `image/encoded` (graph-friendly)."""
    if encoding == "raw":
        image = tf.io.decode_raw(encoded, tf.uint8)
    elif encoding == "png":
        image = tf.io.decode_png(encoded, channels=CHANNELS, dtype=tf.uint8)
    else:
        raise ValueError(f"unknown encoding {encoding!r} (png or raw)")
    return tf.reshape(image, [IMAGE_SIZE, IMAGE_SIZE, CHANNELS])


def make_parser(num_classes: int, encoding: str = "png"):
    """A tf.data map function: serialized dataset record ->
    (image uint8 [64,64,3], label int32, confidence float32, soft labels float32 [C]).

    Soft labels are the teacher's top-k probabilities placed on the kept classes (mass on
    classes that were not kept is dropped, not renormalised).
    """

    def parse(serialized: tf.Tensor):
        f = tf.io.parse_single_example(serialized, _DATASET_SPEC)
        image = decode_dataset_image(f[ENCODED], encoding)
        labels = tf.sparse.to_dense(f[TOPK_LABELS], default_value=-1)
        probs = tf.sparse.to_dense(f[TOPK_PROBS])
        kept = labels >= 0
        soft = tf.scatter_nd(
            tf.expand_dims(tf.boolean_mask(labels, kept), 1),
            tf.boolean_mask(probs, kept),
            [num_classes],
        )
        return image, tf.cast(f[LABEL], tf.int32), f[CONFIDENCE], soft

    return parse


def parse_example(serialized, num_classes: int, encoding: str = "png"):
    """Parse one serialized dataset record (eager or in a graph); see `make_parser`."""
    return make_parser(num_classes, encoding)(tf.convert_to_tensor(serialized))


def make_batch_parser(num_classes: int, encoding: str = "png"):
    """Like `make_parser`, for a batch: serialized [B] -> (images uint8 [B,64,64,3],
    labels int32 [B], confidence float32 [B], soft labels float32 [B,C]).

    Parsing a batch at once (one `parse_example`, one `decode_raw`) is what makes the
    training input pipeline fast; PNGs are still decoded one by one (`map_fn`).
    """

    def parse(serialized: tf.Tensor):
        f = tf.io.parse_example(serialized, _DATASET_SPEC)
        if encoding == "png":
            images = tf.map_fn(
                lambda e: decode_dataset_image(e, "png"),
                f[ENCODED],
                fn_output_signature=tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE, CHANNELS], tf.uint8),
                parallel_iterations=16,
            )
        elif encoding == "raw":
            images = tf.reshape(
                tf.io.decode_raw(f[ENCODED], tf.uint8), [-1, IMAGE_SIZE, IMAGE_SIZE, CHANNELS]
            )
        else:
            raise ValueError(f"unknown encoding {encoding!r} (png or raw)")
        labels, probs = f[TOPK_LABELS], f[TOPK_PROBS]  # sparse [B, k], same positions
        kept = labels.values >= 0
        index = tf.stack([labels.indices[:, 0], labels.values], axis=1)
        soft = tf.scatter_nd(
            tf.boolean_mask(index, kept),
            tf.boolean_mask(probs.values, kept),
            tf.stack([tf.shape(serialized, out_type=tf.int64)[0], num_classes]),
        )
        return images, tf.cast(f[LABEL], tf.int32), f[CONFIDENCE], soft

    return parse
