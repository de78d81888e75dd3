"""What the student learns from: the teacher's distribution over the kept classes.

Three kinds of target (`TARGETS`), after Beyer et al. 2022, "Knowledge distillation: A good
teacher is patient and consistent" (google-research/big_vision, configs/proj/distill/):

- `hard`: the kept class of the teacher's argmax, as stored (`image/class/label`); the loss
  is the fused sparse softmax cross-entropy (distill_loss.hard_cross_entropy).
- `soft`: the teacher's stored top-k probabilities (`teacher/topk/*`) placed on the kept
  classes and renormalised (`soft_targets`); classes of the top-k that were filtered out
  lose their mass.
- `online`: the frozen teacher run on the very batch the student sees, after augmentation
  and mixup (`online_targets`), so targets are consistent with the student's pixels.

Every target here is a distribution over the C kept classes at temperature T: the teacher's
probabilities restricted to the kept classes and renormalised, then sharpened (T < 1) or
softened (T > 1) as softmax(log p / T). Renormalising before or after applying T gives the
same result, because softmax(z / T) restricted to a subset and renormalised only depends
on the logits z of that subset. All functions are graph-safe and batched.
"""

from __future__ import annotations

from collections.abc import Sequence

from imnet64.errors import UserError
from imnet64.formats.manifest import Manifest
from imnet64.teacher.images import pixels_to_teacher_input
from imnet64.teacher.loading import Teacher
from imnet64.train.config import TARGETS

import tensorflow as tf

__all__ = ["TARGETS", "kept_teacher_ids", "online_targets", "soft_targets",
           "teacher_pixels", "tempered_from_kept_mass"]


def tempered_from_kept_mass(kept_probs: tf.Tensor, labels: tf.Tensor,
                            temperature: float = 1.0) -> tf.Tensor:
    """float32 [B, C] targets from the teacher's probability mass on each kept class.

    `kept_probs` [B, C] holds, per example, the stored probability of each kept class (0
    where the class was not in the top-k): what `input_pipeline.records_dataset(...,
    with_soft_labels=True)` yields. Each row becomes softmax(log p / T) over its classes
    with p > 0, i.e. p^(1/T) renormalised. A row with no mass at all (no class of the top-k
    was kept) falls back to the one-hot of its hard label `labels` [B].
    """
    kept_probs = tf.convert_to_tensor(kept_probs, tf.float32)
    num_classes = tf.shape(kept_probs)[-1]
    minus_inf = tf.fill(tf.shape(kept_probs), float("-inf"))
    log_p = tf.where(kept_probs > 0, tf.math.log(tf.maximum(kept_probs, 1e-38)), minus_inf)
    # a row without mass: log one-hot (0 at the hard label, -inf elsewhere)
    log_onehot = tf.where(tf.one_hot(labels, num_classes, dtype=tf.float32) > 0, 0.0, minus_inf)
    has_mass = tf.reduce_any(kept_probs > 0, axis=-1, keepdims=True)
    # log space: p^(1/T) of tiny p would underflow to an all-zero row for T < 1
    return tf.nn.softmax(tf.where(has_mass, log_p, log_onehot) / temperature, axis=-1)


def soft_targets(topk_labels: tf.Tensor, topk_probs: tf.Tensor, labels: tf.Tensor,
                 num_classes: int, temperature: float = 1.0) -> tf.Tensor:
    """float32 [B, C] targets from a batch of stored top-k fields.

    `topk_labels` int [B, k]: the record's `teacher/topk/labels` (top-k ids renumbered into
    kept classes, -1 = not kept, also usable as padding); `topk_probs` float [B, k]: its
    `teacher/topk/probs`; `labels` int [B]: `image/class/label`. See
    `tempered_from_kept_mass` for T and the one-hot fallback.
    """
    topk_labels = tf.cast(topk_labels, tf.int32)
    topk_probs = tf.convert_to_tensor(topk_probs, tf.float32)
    kept = topk_labels >= 0
    rows = tf.broadcast_to(tf.range(tf.shape(topk_labels)[0])[:, None], tf.shape(topk_labels))
    index = tf.stack([tf.boolean_mask(rows, kept), tf.boolean_mask(topk_labels, kept)], axis=1)
    mass = tf.scatter_nd(index, tf.boolean_mask(topk_probs, kept),
                         tf.stack([tf.shape(topk_labels)[0], num_classes]))
    return tempered_from_kept_mass(mass, labels, temperature)


def kept_teacher_ids(manifest: Manifest) -> tuple[int, ...]:
    """The teacher's class id (0..1000) of each kept class 0..C-1, for `online_targets`.

    A dataset made from class folders that are not ImageNet classes has no teacher id for
    them: the teacher cannot give a probability for such a class, so it is refused.
    """
    missing = [c.name for c in manifest.classes if c.teacher_id is None or c.teacher_id < 0]
    if missing:
        raise UserError(f"dataset {manifest.root}: class(es) {', '.join(missing[:3])} have no "
                        "teacher class, so the teacher cannot score them: use --targets hard "
                        "or soft for this dataset")
    return tuple(int(c.teacher_id) for c in manifest.classes)


def teacher_pixels(images: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Student images [B, 64, 64, 3], uint8 or float with values 0..255 (mixed images are
    float), -> the teacher's float32 [B, *size, 3] input in [0, 1], preprocessed as `imnet64
    label` does (teacher.images.pixels_to_teacher_input)."""
    return pixels_to_teacher_input(images, size)


def online_targets(teacher: Teacher, teacher_ids: Sequence[int], images: tf.Tensor,
                   temperature: float = 1.0) -> tf.Tensor:
    """float32 [B, C]: the frozen teacher's probabilities at T for `images` (the batch the
    student sees, see `teacher_pixels`), restricted to the kept classes (`teacher_ids`, from
    `kept_teacher_ids`) and renormalised: softmax(logits[kept] / T).

    No gradient flows into the teacher; callable inside a tf.function.
    """
    logits = teacher.logits(teacher_pixels(images, teacher.image_size))
    kept = tf.gather(logits, tf.constant(teacher_ids, tf.int32), axis=-1)
    return tf.stop_gradient(tf.nn.softmax(kept / temperature, axis=-1))
