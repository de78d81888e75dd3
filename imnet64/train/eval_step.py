"""The validation step, one for the trainer's per-epoch val figures and `imnet64 evaluate`
(so the two can never drift apart): the model in inference mode on one batch."""

from __future__ import annotations

from typing import TypedDict

import tensorflow as tf


class BatchScores(TypedDict):
    loss_sum: tf.Tensor  # float64: the summed cross-entropy (fused, on logits)
    predicted: tf.Tensor  # int32 [B]: the top-1 class
    correct: tf.Tensor  # float64: top-1 hits
    top_k_hits: tf.Tensor  # int64: labels among the k largest logits


def make_eval_step(model: tf.keras.Model, top_k: int = 1):
    """A tf.function (uint8 images, int32 labels) -> BatchScores, for any batch size; the
    image shape is the model's input shape."""
    image_spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.uint8)

    @tf.function(input_signature=[image_spec, tf.TensorSpec([None], tf.int32)])
    def step(images, labels) -> BatchScores:
        logits = tf.cast(model(images, training=False), tf.float32)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return {
            "loss_sum": tf.reduce_sum(tf.cast(losses, tf.float64)),
            "predicted": predicted,
            "correct": tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float64)),
            "top_k_hits": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, top_k),
                                                tf.int64)),
        }

    return step
