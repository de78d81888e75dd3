"""torchvision's MobileNet V2 rebuilt in Keras 2, layer for layer, from its state dict.

Keras' own ``MobileNetV2`` differs from torchvision in ways that change the numbers:
stride-2 convolutions there pad one side only (torchvision pads 1 on every side), batch norm
uses eps 1e-3 (torchvision 1e-5) and inputs are scaled to [-1, 1] (torchvision standardises
with the ImageNet mean/std). This builder reproduces torchvision exactly:
``ZeroPadding2D(1)`` + ``valid`` for stride 2, eps 1e-5, mean/std inside the model.

Each Keras layer is named after the torch module it comes from (``features.3.conv.1.0`` ->
``features_3_conv_1_0``), so weights are assigned by name, never by position.

``fold_batchnorm=True`` builds the inference form: every batch norm is folded into the
convolution before it (kernel scaled per output channel, a bias added), which removes 52
layers from the forward pass and gives identical results up to float rounding.

The model takes float32 RGB images in [0, 1], shape [N, 224, 224, 3], and returns 1001 logits:
index 0 is a "background" logit (torchvision has 1000 classes; TF Hub's MobileNet has 1001),
set to the smallest of the 1000 real logits of the same image. So background never wins (it
ties at most with the least likely class) and the softmax over the 1000 real classes changes
by a factor of at most 1000/1001, versus TF Hub's module where background is a learnt class.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf

IMAGE_SIZE = (224, 224)
NUM_TORCH_CLASSES = 1000
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPSILON = 1e-5  # torchvision's nn.BatchNorm2d default

# torchvision's inverted residual settings: expansion t, out channels c, repeats n, stride s.
INVERTED_RESIDUAL_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280

Weights = Mapping[str, np.ndarray]


class Standardize(tf.keras.layers.Layer):
    """(x - ImageNet mean) / ImageNet std, per channel: torchvision's input normalisation."""

    def call(self, x):
        mean = tf.constant(IMAGENET_MEAN, x.dtype)
        inv_std = tf.constant([1.0 / s for s in IMAGENET_STD], x.dtype)
        return (x - mean) * inv_std


class PrependBackgroundLogit(tf.keras.layers.Layer):
    """[N, 1000] -> [N, 1001]: a background logit (the row's minimum) at index 0."""

    def call(self, logits):
        return tf.concat([tf.reduce_min(logits, axis=-1, keepdims=True), logits], axis=-1)


def _conv_bn(x, prefix: str, filters: int | None, kernel: int, stride: int, depthwise: bool,
             relu6: bool, fold_batchnorm: bool):
    """One torchvision ``Conv2d(bias=False) + BatchNorm2d (+ ReLU6)``; `prefix` is its torch
    name without the trailing index (``features.2.conv.1`` covers ``.0`` conv and ``.1`` BN)."""
    name = prefix.replace(".", "_")
    if stride == 2:  # torchvision: padding=1 on every side (Keras "same" pads bottom/right only)
        x = tf.keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"  # 3x3 stride 1: one pixel each side, 1x1: none; same as torchvision
    common = dict(kernel_size=kernel, strides=stride, padding=padding, use_bias=fold_batchnorm)
    if depthwise:
        x = tf.keras.layers.DepthwiseConv2D(name=f"{name}_0", **common)(x)
    else:
        x = tf.keras.layers.Conv2D(filters, name=f"{name}_0", **common)(x)
    if not fold_batchnorm:
        x = tf.keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_1")(x)
    if relu6:
        x = tf.keras.layers.ReLU(6.0, name=f"{name}_relu6")(x)
    return x


def build_mobilenet_v2(weights: Weights | None = None, fold_batchnorm: bool = False,
                       name: str = "mobilenet_v2_torchvision") -> tf.keras.Model:
    """The Keras model; with `weights` (a torchvision state dict) loaded into it."""
    images = tf.keras.Input((*IMAGE_SIZE, 3), dtype=tf.float32, name="images")
    x = Standardize(name="standardize")(images)
    x = _conv_bn(x, "features.0", STEM_CHANNELS, 3, 2, False, True, fold_batchnorm)
    channels, block = STEM_CHANNELS, 1
    for expansion, out_channels, repeats, first_stride in INVERTED_RESIDUAL_SETTINGS:
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            prefix, inputs, part = f"features.{block}.conv", x, 0
            if expansion != 1:
                x = _conv_bn(x, f"{prefix}.{part}", channels * expansion, 1, 1, False, True,
                             fold_batchnorm)
                part += 1
            x = _conv_bn(x, f"{prefix}.{part}", None, 3, stride, True, True, fold_batchnorm)
            # The projection is a bare Conv2d (index part+1) followed by BatchNorm2d (part+2):
            # named so that _conv_bn's "_0"/"_1" suffixes land on those torch indices.
            x = _project(x, prefix, part + 1, out_channels, fold_batchnorm)
            if stride == 1 and channels == out_channels:
                x = tf.keras.layers.Add(name=f"features_{block}_add")([inputs, x])
            channels, block = out_channels, block + 1
    x = _conv_bn(x, f"features.{block}", LAST_CHANNELS, 1, 1, False, True, fold_batchnorm)
    x = tf.keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    x = tf.keras.layers.Dense(NUM_TORCH_CLASSES, name="classifier_1")(x)
    logits = PrependBackgroundLogit(name="background_logit")(x)
    model = tf.keras.Model(images, logits, name=name)
    if weights is not None:
        load_torch_weights(model, weights, fold_batchnorm)
    return model


def _project(x, prefix: str, index: int, filters: int, fold_batchnorm: bool):
    name = f"{prefix}.{index}".replace(".", "_")
    x = tf.keras.layers.Conv2D(filters, 1, use_bias=fold_batchnorm, name=name)(x)
    if not fold_batchnorm:
        bn_name = f"{prefix}.{index + 1}".replace(".", "_")
        x = tf.keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=bn_name)(x)
    return x


def _kernel(torch_weight: np.ndarray, depthwise: bool) -> np.ndarray:
    # Conv2d OIHW -> Keras HWIO; depthwise (C,1,H,W) -> Keras (H,W,C,1).
    return torch_weight.transpose(2, 3, 0, 1) if depthwise else torch_weight.transpose(2, 3, 1, 0)


def _bn_scale_shift(w: Weights, bn: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, shift) such that BN(y) == y * scale + shift in inference mode."""
    gamma, beta = w[f"{bn}.weight"], w[f"{bn}.bias"]
    mean, var = w[f"{bn}.running_mean"], w[f"{bn}.running_var"]
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + BN_EPSILON)
    return scale, beta - mean * scale


def load_torch_weights(model: tf.keras.Model, weights: Weights, fold_batchnorm: bool) -> None:
    """Copy a torchvision MobileNet V2 state dict into `model` (built by build_mobilenet_v2).

    Every array of the state dict except the BN step counters must be used exactly once.
    """
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in weights:
            raise KeyError(f"state dict has no {key!r}: not a torchvision MobileNet V2")
        used.add(key)
        return np.asarray(weights[key])

    layers = {layer.name: layer for layer in model.layers}
    for name, layer in layers.items():
        torch_name = name.replace("_", ".")
        if isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.DepthwiseConv2D)):
            depthwise = isinstance(layer, tf.keras.layers.DepthwiseConv2D)
            kernel = _kernel(take(f"{torch_name}.weight"), depthwise)
            if not fold_batchnorm:
                values = [kernel]
            else:
                bn = _batchnorm_after(torch_name)
                scale, shift = _bn_scale_shift({k: take(k) for k in _bn_keys(bn)}, bn)
                # Output channels are the last axis (HWIO) or, for depthwise (H,W,C,1), axis 2.
                kernel = kernel * (scale[:, None] if depthwise else scale)
                values = [kernel, shift]
            layer.set_weights([v.astype(np.float32) for v in values])
        elif isinstance(layer, tf.keras.layers.BatchNormalization):
            keys = _bn_keys(torch_name)
            gamma, beta, mean, var = (take(k) for k in keys)
            layer.set_weights([gamma, beta, mean, var])
        elif isinstance(layer, tf.keras.layers.Dense):
            layer.set_weights([take(f"{torch_name}.weight").T, take(f"{torch_name}.bias")])
    unused = {k for k in weights if k not in used and not k.endswith("num_batches_tracked")}
    if unused:
        raise KeyError(f"state dict has {len(unused)} arrays the model does not use, "
                       f"e.g. {sorted(unused)[0]!r}: not a torchvision MobileNet V2")


def _bn_keys(bn: str) -> tuple[str, str, str, str]:
    return (f"{bn}.weight", f"{bn}.bias", f"{bn}.running_mean", f"{bn}.running_var")


def _batchnorm_after(conv: str) -> str:
    """Torch name of the BN that follows conv `conv` (the next index in the same Sequential)."""
    parent, _, index = conv.rpartition(".")
    return f"{parent}.{int(index) + 1}"
