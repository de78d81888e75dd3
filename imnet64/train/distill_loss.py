"""Per-example losses and metrics of the student against the teacher's targets.

Every function takes the student's logits [B, C] in any float dtype (bf16/fp16 under mixed
precision) and computes in float32, through fused or log-softmax forms that stay finite for
any finite logits (docs/gradients.md, "Why compute it fused"). They return one value per
example, so a caller can average them or sum them over Horovod ranks.

Temperature. `soft_cross_entropy` and `kl_divergence` divide the student's logits by T and
multiply the result by T^2, as Hinton et al. 2015 and big_vision (`dist(kind='kl', t)`) do.
The gradient of CE(q, softmax(z / T)) with respect to z is (softmax(z / T) - q) / T, so
without the factor a higher T would shrink every gradient and act as a lower learning rate;
with it the gradient is T (softmax(z / T) - q), whose size stays about the same as T grows
(when q is the teacher's softmax(v / T) over all C classes, it tends to
((z - mean z) - (v - mean v)) / C for large T: matching logits; docs/gradients.md). At
T = 1 the factor is 1 and the loss is the plain cross-entropy / KL.
"""

from __future__ import annotations

import tensorflow as tf


def _float32(x) -> tf.Tensor:
    return tf.cast(x, tf.float32)


def hard_cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """float32 [B]: the fused sparse softmax cross-entropy on the kept class (`--targets
    hard`, the loss of the training step today)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=_float32(logits))


def soft_cross_entropy(logits: tf.Tensor, targets: tf.Tensor,
                       temperature: float = 1.0) -> tf.Tensor:
    """float32 [B]: T^2 * CE(targets, softmax(logits / T)), fused (the dense counterpart of
    the sparse op, with gradient T^2 * (softmax(logits / T) - targets) / T).

    `targets` [B, C] are distributions (rows sum to 1) and get no gradient. With one-hot
    targets and T = 1 it equals `hard_cross_entropy`.
    """
    t = float(temperature)
    ce = tf.nn.softmax_cross_entropy_with_logits(
        labels=tf.stop_gradient(_float32(targets)), logits=_float32(logits) / t)
    return (t * t) * ce


def kl_divergence(targets: tf.Tensor, logits: tf.Tensor, temperature: float = 1.0) -> tf.Tensor:
    """float32 [B]: T^2 * KL(targets || softmax(logits / T)), with 0 log 0 = 0.

    The same gradient as `soft_cross_entropy` (they differ by the targets' entropy, a
    constant), but 0 when the student matches the teacher: the figure to log and report.
    """
    t = float(temperature)
    q = tf.stop_gradient(_float32(targets))
    log_student = tf.nn.log_softmax(_float32(logits) / t, axis=-1)
    return (t * t) * tf.reduce_sum(tf.math.xlogy(q, q) - q * log_student, axis=-1)


def top1_agreement(logits: tf.Tensor, teacher_probs: tf.Tensor) -> tf.Tensor:
    """float32 [B]: 1 where the student's top class is the teacher's top class among the
    kept classes (big_vision's `agree`, k=1), else 0. Ties go to the lower class index."""
    student = tf.argmax(_float32(logits), axis=-1, output_type=tf.int32)
    teacher = tf.argmax(_float32(teacher_probs), axis=-1, output_type=tf.int32)
    return tf.cast(tf.equal(student, teacher), tf.float32)
