"""Which forward feature maps a training step keeps for the backward pass, and their bytes.

Two views of the same question:
- ``saved_tensors`` / ``activation_memory_bytes``: computed from the architecture alone, by
  the rule each op's gradient follows (docs/gradients.md, section 3).
- ``saved_for_backward``: read off the real training graph of a Keras model: every
  batch-sized tensor produced while computing the loss that a gradient op consumes.
The tests check that both agree for our encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

ARCHES = ("plain", "residual")


@dataclass(frozen=True)
class SavedTensor:
    """One forward tensor held for the backward pass."""

    layer: str  # the layer of imnet64.train.model that outputs it ("xent": the fused loss op)
    shape: tuple[int, ...]  # batch first
    why: str  # which gradient reads it
    level: int | None = None  # encoder level (None: input or head)
    dtype_bytes: int = 4

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype_bytes


def _pooled(size: int) -> int:
    # MaxPooling2D(3, strides=2, padding="same") gives ceil(size / 2).
    return -(-size // 2)


def _check(arch: str, repeats: Sequence[int], widths: Sequence[int]) -> None:
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {ARCHES}, not {arch!r}")
    if len(repeats) != len(widths) or not repeats:
        raise ValueError("repeats and widths need one entry per level")


def saved_tensors(
    batch: int,
    arch: str,
    repeats: Sequence[int],
    widths: Sequence[int],
    image: int = 64,
    dtype_bytes: int = 4,
    num_classes: int = 1001,
) -> list[SavedTensor]:
    """Every feature map a training step of our encoder keeps for backward (no recompute).

    The encoder (imnet64.train.model): scale to [0, 1] -> levels of ``repeats[i]`` blocks of width
    ``widths[i]`` with a 3x3/2 max pool between levels -> global average pool -> dense logits
    -> fused softmax cross-entropy.
      plain block:    x -> conv (no bias) -> batch norm -> ReLU
      residual block: y = P x + ReLU(BN(conv(x))), P = identity or a 1x1 conv (width change)
    What each op's gradient reads (TensorFlow's gradient functions):
      conv:        its input x (for dW); the filter for dx
      batch norm:  its input (the conv output) and per-channel mean / 1/std (not counted)
      ReLU:        its output (y > 0 is the same mask D as Hx + v > 0)
      add, bias, global average pool: nothing (only shapes)
      max pool:    its input and its output
      dense:       its input (for dW); fused softmax xent: softmax - onehot, made in forward
    A tensor read by several gradients is kept once.
    """
    _check(arch, repeats, widths)
    out: list[SavedTensor] = []

    def keep(layer: str, shape: tuple[int, ...], why: str, level: int | None = None) -> None:
        out.append(SavedTensor(layer, (batch, *shape), why, level, dtype_bytes))

    hw, last = image, len(widths) - 1
    keep("scale", (hw, hw, 3), "first conv dW")
    for li, (reps, width) in enumerate(zip(repeats, widths)):
        if li > 0:
            hw = _pooled(hw)
            keep(f"pool{li - 1}", (hw, hw, widths[li - 1]), "max-pool grad, next conv dW", li)
        for bi in range(reps):
            keep(f"level{li}_conv{bi}", (hw, hw, width), "batch-norm grad", li)
            keep(f"level{li}_relu{bi}", (hw, hw, width), "ReLU grad (mask D)", li)
            # The block output feeds the next conv (dW) or the max pool (its grad); the very
            # last one feeds only the global average pool, whose grad needs no values.
            if arch == "residual" and not (li == last and bi == reps - 1):
                keep(f"level{li}_add{bi}", (hw, hw, width), "next conv dW / max-pool grad", li)
    keep("encoder_output", (widths[-1],), "dense dW")
    keep("xent", (num_classes,), "softmax - onehot (fused loss)")
    return out


def recompute_checkpoints(
    batch: int,
    arch: str,
    repeats: Sequence[int],
    widths: Sequence[int],
    image: int = 64,
    dtype_bytes: int = 4,
    num_classes: int = 1001,
) -> list[SavedTensor]:
    """What a step with ``recompute=True`` (tf.recompute_grad per level) keeps for backward:
    the scaled image, each level's output that feeds a max pool (the pool's grad reads it),
    the pool outputs (the next level's input), and the head. Named after the model's layers
    (a recomputed level is one layer, ``level{i}``)."""
    _check(arch, repeats, widths)
    full = saved_tensors(batch, arch, repeats, widths, image, dtype_bytes, num_classes)
    out = [t for t in full if t.level is None or t.layer.startswith("pool")]
    hw = image
    for li in range(len(widths) - 1):
        out.append(SavedTensor(f"level{li}", (batch, hw, hw, widths[li]), "max-pool grad",
                               li, dtype_bytes))
        hw = _pooled(hw)
    return out


def activation_memory_bytes(
    batch: int,
    arch: str,
    repeats: Sequence[int],
    widths: Sequence[int],
    image: int = 64,
    dtype_bytes: int = 4,
    recompute: bool = False,
    num_classes: int = 1001,
) -> int:
    """Peak bytes of forward feature maps held for the backward pass of one training step.

    Without recompute: every tensor of ``saved_tensors``; all are alive when the backward
    pass starts.
    With recompute: the backward pass goes through the levels from the last to the first,
    re-running each level's forward pass and holding that level's maps while its gradient
    is computed. When level l is rebuilt, the checkpoints of the levels above it have been
    read and freed; what remains are the scaled image and, for each level j < l, its output
    and the pool output after it. The peak is the largest of these per-level sums (or the
    checkpoints all together at the end of the forward pass, if larger).
    Gradient buffers and convolution temporaries come on top of either figure.
    """
    full = saved_tensors(batch, arch, repeats, widths, image, dtype_bytes, num_classes)
    if not recompute:
        return sum(t.nbytes for t in full)
    kept = recompute_checkpoints(batch, arch, repeats, widths, image, dtype_bytes, num_classes)
    by_layer = {t.layer: t.nbytes for t in kept}
    peaks = [sum(by_layer.values())]  # end of the forward pass
    for li in range(len(widths)):
        below = by_layer["scale"] + sum(
            by_layer[f"level{j}"] + by_layer[f"pool{j}"] for j in range(li)
        )
        peaks.append(below + sum(t.nbytes for t in _recomputed(full, arch, li, repeats[li])))
    return max(peaks)


def _recomputed(full: list[SavedTensor], arch: str, level: int, reps: int) -> list[SavedTensor]:
    """The maps the backward pass of one recomputed level holds: its own saved maps (not its
    input, a checkpoint), except a residual level's output: no gradient inside the level
    reads it (the pool after it reads the checkpointed copy)."""
    last_add = f"level{level}_add{reps - 1}"
    return [
        t for t in full
        if t.level == level and not t.layer.startswith("pool")
        and not (arch == "residual" and t.layer == last_add)
    ]


# Ops that read only a tensor's shape: they do not keep its buffer alive for the backward.
_SHAPE_ONLY_OPS = {"Shape", "ShapeN", "Size", "Rank"}
# Ops whose outputs are the very buffers of their inputs (no copy).
_ALIAS_OPS = {"Identity", "IdentityN"}


def _ancestors(ops) -> set:
    seen, todo = set(), list(ops)
    while todo:
        op = todo.pop()
        if op not in seen:
            seen.add(op)
            todo.extend(t.op for t in op.inputs)
    return seen


def _buffer(t):
    """The tensor whose buffer ``t`` is (through Identity/IdentityN aliases)."""
    while t.op.type in _ALIAS_OPS:
        t = t.op.inputs[t.value_index]
    return t


def saved_for_backward(model, batch: int, image: int = 64) -> list[tuple[str, tuple, int]]:
    """The batch-sized tensors a real training step of ``model`` keeps for its backward pass.

    Traces one step (forward in training mode, fused sparse softmax cross-entropy, gradients
    of all trainable variables) into a graph with a fixed batch size. The *forward* ops are
    those the loss depends on, the *backward* ops the rest of what the gradients depend on.
    A tensor is *saved* when a forward op produces it and a backward op reads its values
    (reading only its shape does not count; Identity aliases count as the tensor they
    forward). Weights and per-channel statistics are left out: only tensors whose first
    dimension is the batch.

    Returns (tensor name, shape, bytes), sorted by name.
    """
    import tensorflow as tf

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        return loss, tape.gradient(loss, model.trainable_variables)

    concrete = step.get_concrete_function(
        tf.TensorSpec([batch, image, image, 3], tf.float32), tf.TensorSpec([batch], tf.int32)
    )
    outputs = concrete.graph.outputs
    forward = _ancestors([outputs[0].op])
    backward = _ancestors([t.op for t in outputs[1:]]) - forward
    saved: dict[str, tuple[str, tuple, int]] = {}
    for op in backward:
        if op.type in _SHAPE_ONLY_OPS:
            continue
        for t in op.inputs:
            if t.op not in forward or not t.dtype.is_floating:
                continue
            t = _buffer(t)
            shape = tuple(t.shape.as_list()) if t.shape.rank is not None else ()
            if len(shape) >= 2 and shape[0] == batch:
                saved[t.name] = (t.name, shape, prod(shape) * t.dtype.size)
    return sorted(saved.values())
