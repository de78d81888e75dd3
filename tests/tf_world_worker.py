"""One rank of tests/test_tf_world.py: `python tf_world_worker.py OUT.json` with TF_CONFIG set.

Exercises every collective of the tf.distribute World and writes what it saw to OUT.json.
"""

from __future__ import annotations

import hashlib
import json
import sys

import imnet64  # noqa: F401  (the entry point: Keras 2 before TensorFlow loads)
from imnet64.cluster.tf_world import init_tf_world

import numpy as np
import tensorflow as tf


def main(out: str) -> None:
    world = init_tf_world()  # before any TensorFlow op: the strategy configures the runtime
    rank = world.rank

    # A small model with different initial weights and different data on each rank.
    tf.keras.utils.set_random_seed(100 + rank)
    model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(16, "relu"),
                                 tf.keras.layers.Dense(3)])
    optimizer = tf.keras.optimizers.SGD(0.1)
    variables = model.trainable_variables
    world.broadcast_variables(variables)
    start = [v.numpy().copy() for v in variables]
    x = tf.random.stateless_normal((32, 8), seed=(rank, 1))
    y = tf.random.stateless_uniform((32,), seed=(rank, 2), maxval=3, dtype=tf.int32)

    def loss_fn():
        logits = model(x, training=True)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))

    @tf.function
    def step(stop):
        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = world.tape(tape).gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return grads, world.any_in_graph(stop)

    with tf.GradientTape() as tape:
        local = tape.gradient(loss_fn(), variables)
    grads, stop_anywhere = step(tf.constant(rank == 1))
    expected_mean = [world.sum(g.numpy(), name=f"g{i}") / world.size for i, g in enumerate(local)]

    moving = tf.Variable(float(rank))
    world.average_variables([moving], name="bn")
    counter = tf.Variable(tf.constant(7 + 10 * rank, tf.int64))
    flag = tf.Variable(rank == 0)
    world.broadcast_variables([counter, flag])
    world.barrier()

    weights = b"".join(v.numpy().tobytes() for v in variables)
    result = {
        "rank": rank, "size": world.size, "local_rank": world.local_rank,
        "local_size": world.local_size, "is_chief": world.is_chief,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "start_sha256": hashlib.sha256(b"".join(s.tobytes() for s in start)).hexdigest(),
        "moved": any(not np.array_equal(s, v.numpy()) for s, v in zip(start, variables)),
        "grads_are_mean": all(np.allclose(g.numpy(), e, rtol=1e-5, atol=1e-7)
                              for g, e in zip(grads, expected_mean)),
        "grads_differ_from_local": any(not np.allclose(g.numpy(), w.numpy())
                                       for g, w in zip(grads, local)),
        "stop_anywhere": bool(stop_anywhere.numpy()),
        "sum": world.sum([rank + 1, 1.5], name="sum").tolist(),
        "object": world.broadcast_object({"from": rank, "text": "é" * 40}, name="obj"),
        "average": float(moving.numpy()),
        "counter": int(counter.numpy()),
        "flag": bool(flag.numpy()),
    }
    world.barrier()  # nobody leaves while a peer still needs it
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
