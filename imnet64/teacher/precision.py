"""The teacher's forward pass in bf16 on CPU: TensorFlow's oneDNN auto mixed precision
grappler pass rewrites a function's graph (convolutions, matmuls and what lies between them
run in bf16, with casts at the edges) when the function is first instantiated. The option
is process-wide, so it is on only while the one function runs, and off again before
anything else runs; functions instantiated outside stay float32.

Measured against casting a Keras model to a bf16 policy (FACTS.md: no gain for MobileNet
V2 here), the pass needs no Keras model and works on any SavedModel teacher (the frozen,
BN-folded graph included). bench/precision.py measures its speed and its labels' agreement
with float32. The function's outputs stay float32 (the pass casts back before them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

ONEDNN_BF16_PASS = "auto_mixed_precision_onednn_bfloat16"


@contextlib.contextmanager
def onednn_bf16_pass() -> Iterator[None]:
    """Within the block, functions instantiated (first called) get the bf16 rewrite."""
    import tensorflow as tf

    before = bool(tf.config.optimizer.get_experimental_options().get(ONEDNN_BF16_PASS, False))
    tf.config.optimizer.set_experimental_options({ONEDNN_BF16_PASS: True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({ONEDNN_BF16_PASS: before})


def in_precision(fn, precision: str):
    """`fn` (a tf.function) computing in `precision`: for bf16, every call runs with the pass
    on, since TensorFlow instantiates (and optimises) the function again for each new input
    shape (e.g. a shard's last, shorter batch): a pass on only for the first call left the
    later shapes in float32 (measured: byte-identical to fp32 parts)."""
    if precision != "bf16":
        return fn

    def call(*args):
        with onednn_bf16_pass():
            return fn(*args)

    return call
