"""The offline teacher's numbers: the Keras rebuild against an independent NumPy forward pass
written from torchvision's definition, and the exported SavedModel through every way of
loading it (hub.load, hub.KerasLayer, load_teacher fast and plain, the in-process model)."""

from __future__ import annotations

from imnet64.pipeline.sample_images import load_photo
from imnet64.teacher import DEFAULT_HANDLE, load_teacher
from imnet64.teacher.mobilenet_v2 import INVERTED_RESIDUAL_SETTINGS, build_mobilenet_v2
from imnet64.teacher.offline import default_weights_path, read_verified_weights

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

# Logits are O(10); float32 through 52 layers in different op orders (BN folded or not,
# oneDNN fusions) differ by ~2e-5 (seen on 6 photos). The bounds are 10x that.
LOGIT_ATOL = 2e-4
REFERENCE_ATOL = 2e-4  # float64 NumPy reference vs float32 TensorFlow (seen 1.4e-5)


@pytest.fixture(scope="module")
def weights():
    return read_verified_weights(default_weights_path())


@pytest.fixture(scope="module")
def photos() -> tf.Tensor:
    """chelsea, coffee and astronaut at 224x224, then the same after a 64x64 round trip."""
    full = [np.asarray(load_photo("skimage", f"data/{n}.png"), np.float32) / 255.0
            for n in ("chelsea", "coffee", "astronaut")]
    resized = [tf.image.resize(p, (224, 224)) for p in full]
    small = [tf.image.resize(tf.image.resize(p, (64, 64)), (224, 224)) for p in full]
    return tf.stack(resized + small)


# ---- an independent forward pass, NCHW like torch, straight from torchvision's definition --


def _conv(x, w, stride=1, padding=0, groups=1):
    """torch.nn.functional.conv2d for one image: x [C, H, W], w [O, C/groups, k, k]."""
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    ho = (xp.shape[1] - k) // stride + 1
    wo = (xp.shape[2] - k) // stride + 1
    out = np.zeros((w.shape[0], ho, wo))
    for i in range(k):
        for j in range(k):
            patch = xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride]
            if groups == 1:
                out += np.einsum("oc,chw->ohw", w[:, :, i, j], patch)
            else:  # depthwise: groups == channels
                out += w[:, 0, i, j][:, None, None] * patch
    return out


def _bn(x, s, name):
    scale = s[f"{name}.weight"] / np.sqrt(s[f"{name}.running_var"] + 1e-5)
    return (x - s[f"{name}.running_mean"][:, None, None]) * scale[:, None, None] \
        + s[f"{name}.bias"][:, None, None]


def _relu6(x):
    return np.clip(x, 0, 6)


def torchvision_reference(image_hwc: np.ndarray, s: dict) -> np.ndarray:
    s = {k: v.astype(np.float64) for k, v in s.items()}
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = ((image_hwc.astype(np.float64) - mean) / std).transpose(2, 0, 1)
    x = _relu6(_bn(_conv(x, s["features.0.0.weight"], 2, 1), s, "features.0.1"))
    block, channels = 1, 32
    for t, c, n, first_stride in INVERTED_RESIDUAL_SETTINGS:
        for i in range(n):
            stride, inp, p = (first_stride if i == 0 else 1), x, f"features.{block}.conv"
            h, idx = x, 0
            if t != 1:
                h = _relu6(_bn(_conv(h, s[f"{p}.0.0.weight"]), s, f"{p}.0.1"))
                idx = 1
            h = _relu6(_bn(_conv(h, s[f"{p}.{idx}.0.weight"], stride, 1, groups=h.shape[0]),
                           s, f"{p}.{idx}.1"))
            h = _bn(_conv(h, s[f"{p}.{idx + 1}.weight"]), s, f"{p}.{idx + 2}")
            x = inp + h if stride == 1 and channels == c else h
            block, channels = block + 1, c
    x = _relu6(_bn(_conv(x, s["features.18.0.weight"]), s, "features.18.1"))
    logits = s["classifier.1.weight"] @ x.mean(axis=(1, 2)) + s["classifier.1.bias"]
    return np.concatenate([[logits.min()], logits])


def test_keras_rebuild_matches_torchvision_reference(weights, photos):
    image = photos[0].numpy()  # chelsea
    expected = torchvision_reference(image, weights)
    for fold in (False, True):
        got = build_mobilenet_v2(weights, fold_batchnorm=fold)(image[None], training=False)
        np.testing.assert_allclose(got.numpy()[0], expected, atol=REFERENCE_ATOL, rtol=0)
    assert expected.argmax() in (281, 282, 283, 286)  # tabby, tiger cat, Egyptian cat (+1)


def test_background_logit_is_the_minimum_and_never_wins(weights, photos):
    logits = build_mobilenet_v2(weights, fold_batchnorm=True)(photos, training=False).numpy()
    assert logits.shape == (len(photos), 1001)
    np.testing.assert_array_equal(logits[:, 0], logits[:, 1:].min(axis=1))
    assert (logits.argmax(axis=1) != 0).all()


# ---- the exported SavedModel, loaded every way -----------------------------------------------


def test_exported_saved_model_same_logits_every_way(offline_teacher_dir, weights, photos):
    in_process = build_mobilenet_v2(weights)(photos, training=False).numpy()  # BN, unfolded
    via_hub_load = hub.load(str(offline_teacher_dir))(photos).numpy()
    layer = hub.KerasLayer(str(offline_teacher_dir), input_shape=(224, 224, 3))
    via_keras_layer = tf.keras.Sequential([layer]).predict(photos, verbose=0)
    fast = load_teacher(str(offline_teacher_dir))
    plain = load_teacher(str(offline_teacher_dir), optimize=False)
    via_fast, via_plain = fast.logits(photos).numpy(), plain.logits(photos).numpy()
    for got in (via_hub_load, via_keras_layer, via_fast, via_plain):
        assert got.shape == (len(photos), 1001)
        np.testing.assert_allclose(got, in_process, atol=LOGIT_ATOL, rtol=0)
        np.testing.assert_array_equal(got.argmax(1), in_process.argmax(1))
    assert layer.trainable_weights == [] and len(layer.weights) > 100  # frozen, weights visible


def test_teacher_interface(offline_teacher_dir):
    t = load_teacher("offline")
    assert t.name == "offline" and t.path == offline_teacher_dir
    assert t.folded_batch_norms == 0  # exported with batch norm folded already
    assert t.image_size == (224, 224) and t.num_classes == 1001
    assert len(t.class_names) == 1001 and t.class_names[0] == "background"
    assert t.class_names[286] == "Egyptian cat"
    out = t.logits(tf.zeros([3, 224, 224, 3]))
    assert isinstance(out, tf.Tensor) and out.dtype == tf.float32 and out.shape == (3, 1001)
    assert DEFAULT_HANDLE == "https://tfhub.dev/google/tf2-preview/mobilenet_v2/classification/2"


def test_load_time_batchnorm_folding_of_a_hub_style_model(weights, photos, tmp_path):
    """A SavedModel that keeps its batch norms (as TF Hub's MobileNet V2 does) gets them
    folded into the convolutions at load; same top-1, logits within LOGIT_ATOL."""
    from imnet64.teacher.export import export_hub_style_saved_model

    export_hub_style_saved_model(build_mobilenet_v2(weights), tmp_path / "with_bn")
    fast = load_teacher(str(tmp_path / "with_bn"))
    plain = load_teacher(str(tmp_path / "with_bn"), optimize=False)
    assert fast.folded_batch_norms == 52 and plain.folded_batch_norms == 0
    a, b = fast.logits(photos).numpy(), plain.logits(photos).numpy()
    np.testing.assert_allclose(a, b, atol=LOGIT_ATOL, rtol=0)
    np.testing.assert_array_equal(a.argmax(1), b.argmax(1))
    # Odd batch sizes go through the rewritten graph too.
    np.testing.assert_allclose(fast.logits(photos[:1]).numpy(), b[:1], atol=LOGIT_ATOL, rtol=0)
