"""The validation step, one for the trainer's per-epoch val figures and `imnet64 evaluate`
(so the two can never drift apart): the model in inference mode on one batch."""

from __future__ import annotations

from typing import TypedDict

from imnet64.train.distill_loss import kl_divergence, top1_agreement
from imnet64.train.targets import tempered_from_kept_mass

import tensorflow as tf


class BatchScores(TypedDict):
    loss_sum: tf.Tensor  # float64: the summed cross-entropy (fused, on logits)
    predicted: tf.Tensor  # int32 [B]: the top-1 class
    correct: tf.Tensor  # float64: top-1 hits
    top_k_hits: tf.Tensor  # int64: labels among the k largest logits
    # against the teacher's stored probabilities (top-k on the kept classes, renormalised),
    # over the examples that carry any (`with_teacher`):
    with_teacher: tf.Tensor  # float64: how many examples
    kl_sum: tf.Tensor  # float64: summed KL(teacher || student) at T = 1
    agreements: tf.Tensor  # float64: student top-1 == teacher top-1


def make_eval_step(model: tf.keras.Model, top_k: int = 1):
    """A tf.function (uint8 images, int32 labels, float32 kept-class teacher mass [B, C]: the
    input pipeline's soft labels) -> BatchScores, for any batch size; the image shape is the
    model's input shape."""
    image_spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.uint8)
    mass_spec = tf.TensorSpec([None, model.output_shape[-1]], tf.float32)

    @tf.function(input_signature=[image_spec, tf.TensorSpec([None], tf.int32), mass_spec])
    def step(images, labels, teacher_mass) -> BatchScores:
        logits = tf.cast(model(images, training=False), tf.float32)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        has_teacher = tf.cast(tf.reduce_any(teacher_mass > 0, axis=-1), tf.float64)
        teacher = tempered_from_kept_mass(teacher_mass, labels)

        def teacher_sum(per_example):
            return tf.reduce_sum(tf.cast(per_example, tf.float64) * has_teacher)

        return {
            "loss_sum": tf.reduce_sum(tf.cast(losses, tf.float64)),
            "predicted": predicted,
            "correct": tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float64)),
            "top_k_hits": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, top_k),
                                                tf.int64)),
            "with_teacher": tf.reduce_sum(has_teacher),
            "kl_sum": teacher_sum(kl_divergence(teacher, logits)),
            "agreements": teacher_sum(top1_agreement(logits, teacher)),
        }

    return step
