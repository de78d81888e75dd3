"""The encoder's shape, parameter and FLOP counts (by hand), inputs, and variants."""

from __future__ import annotations

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.formats.image64 import SIZE
from imnet64.train.model import ModelConfig, build_model, flops_per_image, layer_table

import numpy as np
import pytest
import tensorflow as tf


def _images(n=4, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, 64, 64, 3)).astype(np.uint8)


def test_seed_encoder_params_and_flops_by_hand():
    model = build_model(10, image_size=SIZE)
    convs = [(3, 32), (32, 32), (32, 32), (32, 64), (64, 64), (64, 64),
             (64, 128), (128, 128), (128, 128)]
    conv_params = [9 * cin * cout for cin, cout in convs]
    bn_params = 4 * 3 * (32 + 64 + 128)
    dense = 128 * 10 + 10
    assert model.count_params() == sum(conv_params) + bn_params + dense
    # level 0 runs at 64x64, level 1 at 32x32, level 2 at 16x16 (two stride-2 pools)
    positions = [64 * 64] * 3 + [32 * 32] * 3 + [16 * 16] * 3
    expected = sum(2 * p * k for p, k in zip(positions, conv_params)) + 2 * 128 * 10
    assert flops_per_image(model) == expected == 535_562_752
    # the seed's layer sequence: conv/bn/relu x3, pool, x3, pool, x3, GAP, dense
    kinds = [row.kind for row in layer_table(model)]
    assert kinds.count("Conv2D") == 9 and kinds.count("BatchNormalization") == 9
    assert kinds.count("MaxPooling2D") == 2 and kinds[-2:] == ["GlobalAveragePooling2D", "Dense"]
    bn = model.get_layer("level1_bn0")
    assert bn.momentum == 0.99 and bn.epsilon == 1e-3
    assert not model.get_layer("level0_conv0").use_bias


def test_logits_out_features_exposed_uint8_equals_float():
    tf.keras.utils.set_random_seed(1)
    model = build_model(7, image_size=SIZE, widths=(8, 16, 32), repeats=(1, 1, 1))
    x = _images()
    logits_u8 = model(x, training=False).numpy()
    logits_f = model(x.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(logits_u8, logits_f, rtol=0, atol=1e-6)
    assert logits_u8.shape == (4, 7)
    # logits, not probabilities: rows do not sum to 1 and values can be negative
    assert not np.allclose(logits_u8.sum(1), 1.0) and (logits_u8 < 0).any()
    features = model.get_layer("encoder_output").output
    assert tuple(features.shape) == (None, 32)
    encoder = tf.keras.Model(model.input, features)
    assert encoder(x).shape == (4, 32)


def test_residual_blocks_identity_and_projection():
    model = build_model(5, image_size=SIZE, arch="residual", widths=(8, 16, 32), repeats=(2, 2, 1))
    names = [layer.name for layer in model.layers]
    # a projection only where the width changes (first block of each level)
    assert [n for n in names if "projection" in n] == [f"level{i}_projection" for i in range(3)]
    assert sum("add" in n for n in names) == 5
    # y = x + ReLU(BN(conv(x))): with the conv kernel zeroed the block's branch is
    # ReLU(beta); set beta = 0 and the identity block becomes exactly the identity
    block_in = model.get_layer("level0_add0").output
    block_out = model.get_layer("level0_add1").output
    probe = tf.keras.Model(model.input, [block_in, block_out])
    model.get_layer("level0_conv1").kernel.assign(
        tf.zeros_like(model.get_layer("level0_conv1").kernel))
    a, b = probe(_images(2), training=False)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    assert flops_per_image(model) > flops_per_image(
        build_model(5, image_size=SIZE, widths=(8, 16, 32),
                    repeats=(2, 2, 1)))  # + the 1x1 projections


@pytest.mark.parametrize("arch", ["plain", "residual"])
def test_recompute_gives_the_same_gradients_and_bn_statistics(arch):
    x = _images(4, seed=3)
    results = {}
    for recompute in (False, True):
        tf.keras.utils.set_random_seed(0)
        model = build_model(6, image_size=SIZE, arch=arch, widths=(8, 16, 16), repeats=(2, 1, 1),
                            recompute=recompute)

        @tf.function
        def grads(images, model=model):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(model(images, training=True) ** 2)
            return tape.gradient(loss, model.trainable_variables)

        g = grads(x)
        key = [v.name.split("/")[-2] + "/" + v.name.split("/")[-1] for v in model.variables]
        tkey = [v.name.split("/")[-2] + "/" + v.name.split("/")[-1]
                for v in model.trainable_variables]
        results[recompute] = (dict(zip(tkey, [t.numpy() for t in g])),
                              dict(zip(key, [v.numpy() for v in model.variables])))
        assert flops_per_image(model) > 0
    for k, v in results[False][0].items():
        np.testing.assert_allclose(results[True][0][k], v, atol=1e-5, err_msg=k)
    # BatchNorm moving statistics updated once per step, not twice (recomputed forward)
    for k, v in results[False][1].items():
        np.testing.assert_allclose(results[True][1][k], v, atol=1e-6, err_msg=k)
    assert flops_per_image(build_model(6, image_size=SIZE, arch=arch, widths=(8, 16, 16),
                                       repeats=(2, 1, 1), recompute=True)) == flops_per_image(
        build_model(6, image_size=SIZE, arch=arch, widths=(8, 16, 16), repeats=(2, 1, 1)))


def test_mixed_precision_keeps_float32_logits():
    model = build_model(3, image_size=SIZE, widths=(8, 8, 8), repeats=(1, 1, 1),
                        policy="mixed_bfloat16")
    assert model.get_layer("level0_conv0").compute_dtype == "bfloat16"
    assert model(_images(2)).dtype == tf.float32


def test_model_config_round_trip_and_checks():
    cfg = ModelConfig(10, "residual", [1, 2, 3], [4, 5, 6], True, image_size=SIZE)
    assert ModelConfig.from_json(cfg.to_json(), image_size=SIZE) == cfg
    with pytest.raises(ValueError):
        ModelConfig(10, "vgg", image_size=SIZE)
    with pytest.raises(ValueError):
        ModelConfig(10, repeats=(1, 1), widths=(8, 8, 8), image_size=SIZE)
