"""The encoder: the seed's VGG-style CNN for small square images, and a residual variant.

Plain (the seed): 3 levels; each level repeats Conv3x3 (no bias) -> BatchNorm (momentum
0.99, eps 1e-3) -> ReLU; a 3x3 stride-2 'same' max-pool after levels 0 and 1; global
average pool (the layer named `encoder_output`: the pooled features); a dense head that
returns LOGITS (no softmax: the loss is the fused softmax cross-entropy on logits).

Residual: each repeat is the seed's block y = x + f(Hx + v) with f = ReLU, made
convolutional: y = x + ReLU(BN(Conv3x3(x))). BatchNorm's shift is the bias v (its scale
folds into H at inference). Where the width changes (the first block of a level) the
identity path is a 1x1 projection: y = Px + ReLU(BN(Conv3x3(x))).

`recompute=True` wraps each level in `tf.recompute_grad`: its activations are recomputed in
the backward pass instead of being kept, trading compute for memory.

Inputs are images [B, S, S, 3] (S: ModelConfig.image_size, the dataset's 64) with values
0..255 (uint8 or float); the model scales them to [0, 1] itself, so the serving signature
can take raw uint8 pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imnet64.train.model_config import ARCHS, ModelConfig

import numpy as np
import tensorflow as tf

__all__ = ["ARCHS", "ENCODER_OUTPUT", "ModelConfig", "build", "build_model", "flops_per_image",
           "layer_table"]

CHANNELS = 3  # RGB
ENCODER_OUTPUT = "encoder_output"
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3


class RecomputeSafeBatchNorm(tf.keras.layers.BatchNormalization):
    """BatchNormalization that can skip its moving-average update.

    Under `tf.recompute_grad` the forward pass of a level runs twice (once forward, once
    again in the backward pass); the second run must not update the moving statistics a
    second time, or they would decay with momentum 0.99**2.
    """

    skip_updates = False

    def _assign_moving_average(self, variable, value, momentum, inputs_size):
        if self.skip_updates:
            return tf.identity(variable)
        return super()._assign_moving_average(variable, value, momentum, inputs_size)

    def _assign_new_value(self, variable, value):
        if self.skip_updates:
            return tf.identity(variable)
        return super()._assign_new_value(variable, value)


def _conv(width: int, name: str, policy, kernel: int = 3) -> tf.keras.layers.Layer:
    return tf.keras.layers.Conv2D(
        width, kernel, padding="same", use_bias=False, name=name, dtype=policy
    )


def _bn(name: str, policy, recompute_safe: bool = False) -> tf.keras.layers.Layer:
    cls = RecomputeSafeBatchNorm if recompute_safe else tf.keras.layers.BatchNormalization
    return cls(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name, dtype=policy)


class _LevelOps:
    """The layers of one level and how to run them (shared by the flat and wrapped forms)."""

    def __init__(self, level: int, arch: str, repeats: int, width: int, in_width: int, policy,
                 recompute_safe: bool = False):
        p = f"level{level}"
        self.arch = arch
        self.convs = [_conv(width, f"{p}_conv{i}", policy) for i in range(repeats)]
        self.bns = [_bn(f"{p}_bn{i}", policy, recompute_safe) for i in range(repeats)]
        self.relus = [
            tf.keras.layers.ReLU(name=f"{p}_relu{i}", dtype=policy) for i in range(repeats)
        ]
        self.adds = [tf.keras.layers.Add(name=f"{p}_add{i}", dtype=policy) for i in range(repeats)]
        # residual: the first block changes the width, so its identity path is projected
        self.projection = (
            _conv(width, f"{p}_projection", policy, kernel=1)
            if arch == "residual" and in_width != width
            else None
        )

    def layers(self) -> list[tf.keras.layers.Layer]:
        """In call order (the order of the flat model's layers, hence of its weights)."""
        out = []
        for i in range(len(self.convs)):
            out += [self.convs[i], self.bns[i], self.relus[i]]
            if i == 0 and self.projection is not None:
                out.append(self.projection)
            if self.arch == "residual":
                out.append(self.adds[i])
        return out

    def __call__(self, x, training=None):
        for i in range(len(self.convs)):
            y = self.relus[i](self.bns[i](self.convs[i](x), training=training))
            if self.arch == "residual":
                shortcut = self.projection(x) if (i == 0 and self.projection is not None) else x
                y = self.adds[i]([shortcut, y])
            x = y
        return x


@tf.keras.utils.register_keras_serializable(package="imnet64")
class RecomputedLevel(tf.keras.layers.Layer):
    """One encoder level whose activations are recomputed in the backward pass."""

    def __init__(self, level: int, arch: str, repeats: int, width: int, in_width: int, **kwargs):
        super().__init__(**kwargs)
        self._args = dict(level=level, arch=arch, repeats=repeats, width=width, in_width=in_width)
        self.ops = _LevelOps(level, arch, repeats, width, in_width, self.dtype_policy,
                             recompute_safe=True)
        # keep the sub-layers tracked (weights, checkpoints) in a fixed order
        self.sublayers = self.ops.layers()

    def call(self, x, training=None):
        calls = [0]

        def forward(inputs):
            # The first call is the forward pass, any later one the recompute in backprop:
            # only the first may update BatchNorm's moving statistics.
            for bn in self.ops.bns:
                bn.skip_updates = calls[0] > 0
            calls[0] += 1
            try:
                return self.ops(inputs, training=training)
            finally:
                for bn in self.ops.bns:
                    bn.skip_updates = False

        return tf.recompute_grad(forward)(x)

    def get_config(self) -> dict:
        return {**super().get_config(), **self._args}


def build_model(
    num_classes: int,
    *,
    image_size: int,
    arch: str = ModelConfig.arch,
    repeats: Sequence[int] = ModelConfig.repeats,
    widths: Sequence[int] = ModelConfig.widths,
    recompute: bool = ModelConfig.recompute,
    policy: str | None = None,
    name: str | None = None,
) -> tf.keras.Model:
    """`build` of ModelConfig(num_classes, ...): the encoder + dense head."""
    cfg = ModelConfig(num_classes, arch, tuple(repeats), tuple(widths), recompute,
                      image_size=image_size)
    return build(cfg, policy=policy, name=name)


def build(cfg: ModelConfig, *, policy: str | None = None, name: str | None = None
          ) -> tf.keras.Model:
    """The encoder + dense head. Output: logits [B, num_classes] (float32 under any policy).

    `policy` is a Keras mixed-precision policy name ("mixed_bfloat16", "mixed_float16");
    None means float32. The pooled features are `model.get_layer("encoder_output")`.
    """
    dtype = tf.keras.mixed_precision.Policy(policy) if policy else None
    inputs = tf.keras.Input(shape=(cfg.image_size, cfg.image_size, CHANNELS), dtype=tf.float32,
                            name="images")
    # 0..255 -> [0, 1] (the seed's convert_image_dtype), inside the model so that serving
    # takes raw pixels and training feeds uint8 straight from the records.
    x = tf.keras.layers.Rescaling(1.0 / 255.0, name="scale", dtype=dtype)(inputs)
    in_width = CHANNELS
    last = len(cfg.widths) - 1
    for level, (reps, width) in enumerate(zip(cfg.repeats, cfg.widths)):
        if cfg.recompute:
            x = RecomputedLevel(level, cfg.arch, reps, width, in_width, name=f"level{level}",
                                dtype=dtype)(x)
        else:
            x = _LevelOps(level, cfg.arch, reps, width, in_width, dtype)(x)
        if level < last:
            x = tf.keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{level}",
                                             dtype=dtype)(x)
        in_width = width
    features = tf.keras.layers.GlobalAveragePooling2D(name=ENCODER_OUTPUT, dtype=dtype)(x)
    # the head stays float32 so logits (and the loss) are full precision under mixed policies
    logits = tf.keras.layers.Dense(cfg.num_classes, name="logits", dtype="float32")(features)
    return tf.keras.Model(inputs, logits, name=name or f"encoder_{cfg.arch}")


# ---- FLOPs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerRow:
    """One line of `imnet64 model-summary`."""

    name: str
    kind: str
    output_shape: tuple
    params: int
    flops: int


def _spatial(shape) -> int:
    shape = shape[0] if isinstance(shape, list) else shape
    return int(np.prod([d for d in shape[1:-1]])) if len(shape) > 2 else 1


def _layer_flops(layer: tf.keras.layers.Layer, output_shape) -> int:
    """Forward FLOPs per image of the multiply-adds (2 per MAC) of convolutions and dense
    layers; element-wise work (BN, ReLU, pooling, adds) is not counted, as in MFU figures."""
    if isinstance(layer, RecomputedLevel):
        # its convolutions all run at the level's output resolution (stride 1, 'same')
        return sum(2 * _spatial(output_shape) * int(np.prod(s.kernel.shape))
                   for s in layer.sublayers if isinstance(s, tf.keras.layers.Conv2D))
    if isinstance(layer, tf.keras.layers.Conv2D):
        return 2 * _spatial(output_shape) * int(np.prod(layer.kernel.shape))
    if isinstance(layer, tf.keras.layers.Dense):
        return 2 * int(np.prod(layer.kernel.shape))
    return 0


def layer_table(model: tf.keras.Model) -> list[LayerRow]:
    rows = []
    for layer in model.layers:
        shape = layer.output_shape
        shape = tuple(shape[0]) if isinstance(shape, list) else tuple(shape)
        rows.append(LayerRow(layer.name, type(layer).__name__, shape, layer.count_params(),
                             _layer_flops(layer, shape)))
    return rows


def flops_per_image(model: tf.keras.Model) -> int:
    """Forward-pass FLOPs for one input image (convolutions + dense, 2 FLOPs per MAC).

    A training step costs about 3x this per image (forward + two backward products).
    """
    return sum(row.flops for row in layer_table(model))
