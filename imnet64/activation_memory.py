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
    """One forward tensor held until the backward pass."""

    name: str  # where it comes from, e.g. "level0/block1/relu"
    shape: tuple[int, ...]  # batch first
    why: str  # which gradient needs it
    level: int | None = None  # encoder level (None: input or head)
    dtype_bytes: int = 4

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype_bytes


def _pooled(size: int) -> int:
    # MaxPooling2D(3, strides=2, padding="same") on an even size halves it (ceil for odd).
    return -(-size // 2)


def saved_tensors(
    batch: int,
    arch: str,
    repeats: Sequence[int],
    widths: Sequence[int],
    image: int = 64,
    dtype_bytes: int = 4,
    num_classes: int = 1001,
) -> list[SavedTensor]:
    """Every tensor a training step of our encoder keeps for backward (no recompute).

    The encoder: image -> levels of ``repeats[i]`` blocks of width ``widths[i]``, a 3x3/2 max
    pool between levels -> global average pool -> dense logits -> fused softmax xent.
    plain block:    conv(no bias) -> batch norm -> ReLU
    residual block: y = P x + ReLU(conv(x) + b), P = identity, or a 1x1 conv when the width
                    changes.
    """
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {ARCHES}, not {arch!r}")
    if len(repeats) != len(widths):
        raise ValueError("repeats and widths need one entry per level")
    out: list[SavedTensor] = []

    def keep(name: str, hw: int, c: int, why: str, level: int | None) -> None:
        out.append(SavedTensor(name, (batch, hw, hw, c), why, level, dtype_bytes))

    hw = image
    # The scaled image: the first convolution's filter gradient is a correlation with it.
    keep("input", hw, 3, "conv filter gradient (dW needs x)", None)
    for li, (reps, width) in enumerate(zip(repeats, widths)):
        if li > 0:
            hw = _pooled(hw)
            # The pool's output: MaxPoolGrad needs (input, output) and it is also the next
            # convolution's input.
            keep(f"level{li}/pool", hw, widths[li - 1], "max-pool gradient, conv dW", li)
        for bi in range(reps):
            if arch == "plain":
                keep(f"level{li}/block{bi}/conv", hw, width, "batch-norm gradient (needs x)", li)
                keep(f"level{li}/block{bi}/relu", hw, width, "ReLU mask D, next conv dW", li)
            else:
                keep(f"level{li}/block{bi}/relu", hw, width, "ReLU mask D", li)
                keep(f"level{li}/block{bi}/add", hw, width, "next conv dW (block output)", li)
    # Head: the dense layer's dW needs its input; the fused loss keeps softmax - onehot.
    out.append(SavedTensor("head/pool", (batch, widths[-1]), "dense dW", None, dtype_bytes))
    out.append(
        SavedTensor("head/xent", (batch, num_classes), "softmax - onehot", None, dtype_bytes)
    )
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
    """Bytes of forward activations alive when the backward pass starts.

    With ``recompute`` each level keeps only its input; its inner maps are rebuilt during
    the backward pass one level at a time, so the peak is the checkpoints plus the largest
    single level's inner maps.
    """
    kept = saved_tensors(batch, arch, repeats, widths, image, dtype_bytes, num_classes)
    if not recompute:
        return sum(t.nbytes for t in kept)
    checkpoints = [t for t in kept if t.level is None or t.name.endswith("/pool")]
    per_level = [
        sum(t.nbytes for t in kept if t.level == li and not t.name.endswith("/pool"))
        for li in range(len(widths))
    ]
    return sum(t.nbytes for t in checkpoints) + max(per_level)
