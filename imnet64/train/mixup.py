"""Mixup (Zhang et al. 2018) as big_vision's distillation configs use it (`mixup=dict(p=1.0)`,
big_vision/utils.py `get_mixup`): one weight per batch, lambda ~ Beta(alpha, alpha) folded
to max(lambda, 1 - lambda) >= 0.5, and each example mixed with its neighbour in the batch
(the batch rolled by one: with shuffled batches, a random partner).

    weight = mixup_weight(alpha, seed)
    images = mix_with_rolled(images, weight)      # float32, values 0..255
    targets = mix_with_rolled(targets, weight)    # hard (one-hot) and soft targets only

With online targets the teacher sees the mixed images, so its targets need no mixing.
Stateless: the same seed gives the same weight, so a resumed run mixes the same way.
"""

from __future__ import annotations

import tensorflow as tf


def mixup_weight(alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """float32 scalar in [0.5, 1]: max(lambda, 1 - lambda), lambda ~ Beta(alpha, alpha), from
    the [2] int seed `seed`. alpha <= 0 means no mixup (weight 1)."""
    if alpha <= 0:
        return tf.constant(1.0, tf.float32)
    # Beta(a, a) = X / (X + Y) with X, Y ~ Gamma(a) independent
    x, y = tf.unstack(tf.random.stateless_gamma([2], seed, alpha=alpha, dtype=tf.float32))
    lam = tf.math.divide_no_nan(x, x + y)  # both gamma draws underflow for tiny alpha: 0 -> 1
    return tf.maximum(lam, 1.0 - lam)


def mix_with_rolled(batch: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
    """float32 weight * batch + (1 - weight) * (batch rolled by one along axis 0)."""
    batch = tf.cast(batch, tf.float32)
    return weight * batch + (1.0 - weight) * tf.roll(batch, shift=1, axis=0)
