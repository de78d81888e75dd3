"""Distillation parts (issue 16): targets from the stored top-k, the online teacher's targets,
the losses at temperature T, mixup, and the student-teacher metrics, against hand-computed
numbers and against `imnet64 teacher classify` on real photos."""

from __future__ import annotations

import json
import math
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.errors import UserError
from imnet64.formats.manifest import ClassInfo, Manifest
from imnet64.formats.tfrecord_schema import (
    DatasetExample,
    make_batch_parser,
    serialize_dataset_example,
)
from imnet64.theory import gradients as G
from imnet64.train.distill_loss import (
    hard_cross_entropy,
    kl_divergence,
    soft_cross_entropy,
    top1_agreement,
)
from imnet64.train.mixup import mix_with_rolled, mixup_weight
from imnet64.train.targets import (
    kept_teacher_ids,
    online_targets,
    soft_targets,
    teacher_pixels,
    tempered_from_kept_mass,
)

import numpy as np
import pytest
import tensorflow as tf

# Three records, C = 4 kept classes, top-3:
#   0: top-k kept classes 2 and 0, its second class (p = 0.3) was filtered out (-1);
#   1: no class of its top-k was kept: falls back to its hard label 1;
#   2: all three kept.
TOPK_LABELS = [[2, -1, 0], [-1, -1, -1], [3, 1, 0]]
TOPK_PROBS = [[0.6, 0.3, 0.1], [0.5, 0.3, 0.2], [0.5, 0.25, 0.25]]
LABELS = [2, 1, 3]
C = 4
# By hand. T = 1: the kept mass renormalised (0.6 + 0.1 = 0.7 for row 0).
EXPECTED_T1 = [[1 / 7, 0, 6 / 7, 0], [0, 1, 0, 0], [0.25, 0.25, 0, 0.5]]
# T = 2: p^(1/2) renormalised; row 0: sqrt(0.1) : sqrt(0.6) = 1 : sqrt(6).
S6 = math.sqrt(6)
# Row 2: sqrt(0.25) : sqrt(0.25) : sqrt(0.5) = 1 : 1 : sqrt(2).
S2 = math.sqrt(2)
EXPECTED_T2 = [[1 / (1 + S6), 0, S6 / (1 + S6), 0], [0, 1, 0, 0],
               [1 / (2 + S2), 1 / (2 + S2), 0, S2 / (2 + S2)]]
# T = 0.5: p^2 renormalised; row 2: 1/16, 1/16, 1/4 of 3/8.
EXPECTED_T05 = [[1 / 37, 0, 36 / 37, 0], [0, 1, 0, 0], [1 / 6, 1 / 6, 0, 2 / 3]]


@pytest.mark.parametrize("temperature,expected", [(1.0, EXPECTED_T1), (2.0, EXPECTED_T2),
                                                  (0.5, EXPECTED_T05)])
def test_soft_targets_hand_computed(temperature, expected) -> None:
    # in a graph with an unknown batch size, as the input pipeline would call it
    fn = tf.function(lambda tl, tp, lb: soft_targets(tl, tp, lb, C, temperature),
                     input_signature=[tf.TensorSpec([None, 3], tf.int64),
                                      tf.TensorSpec([None, 3], tf.float32),
                                      tf.TensorSpec([None], tf.int32)])
    got = fn(tf.constant(TOPK_LABELS, tf.int64), tf.constant(TOPK_PROBS), tf.constant(LABELS))
    assert got.dtype == tf.float32 and got.shape == (3, C)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6, rtol=0)


def test_soft_targets_from_stored_records_through_the_batch_parser() -> None:
    """The input pipeline's `soft` (kept mass, not renormalised) gives the same targets."""
    records = [
        serialize_dataset_example(DatasetExample(
            encoded=bytes(64 * 64 * 3), encoding="raw", filename=f"{i}.png", label=label,
            class_name="x", teacher_label=0, confidence=probs[0], topk_ids=(1, 2, 3),
            topk_probs=tuple(probs), topk_labels=tuple(labels)))
        for i, (labels, probs, label) in enumerate(zip(TOPK_LABELS, TOPK_PROBS, LABELS))
    ]
    _images, labels, _conf, kept_mass = make_batch_parser(C, "raw")(tf.constant(records))
    for temperature, expected in ((1.0, EXPECTED_T1), (2.0, EXPECTED_T2)):
        got = tempered_from_kept_mass(kept_mass, labels, temperature)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-6, rtol=0)


def test_soft_targets_low_temperature_tiny_probabilities_stay_a_distribution() -> None:
    """p^(1/T) of p = 1e-30 at T = 0.05 underflows to 0 in float32; log space does not."""
    got = soft_targets([[0, 1]], [[1e-30, 1e-31]], [0], 2, temperature=0.05).numpy()
    assert np.isfinite(got).all() and got.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(got[0], [1.0, 10.0 ** -20], rtol=1e-4)


# ---- losses -------------------------------------------------------------------------------


def test_hard_cross_entropy_by_hand_in_float32_for_bf16_and_fp16() -> None:
    logits = tf.constant([[2.0, -1.0, 0.5], [1000.0, -1000.0, 0.0]])
    labels = tf.constant([0, 1])
    # -log softmax(z)[y] = logsumexp(z) - z[y]; row 2's logsumexp is 1000 (e^-1000, e^-2000
    # vanish next to 1), so its loss is 1000 - (-1000) = 2000 with no overflow
    by_hand = [math.log(math.exp(2.0) + math.exp(-1.0) + math.exp(0.5)) - 2.0, 2000.0]
    np.testing.assert_allclose(hard_cross_entropy(logits, labels), by_hand, rtol=1e-6)
    for dtype in (tf.bfloat16, tf.float16):
        got = hard_cross_entropy(tf.cast(logits, dtype), labels)
        assert got.dtype == tf.float32
        # the logits above are exact in both dtypes: the loss is the float32 one
        np.testing.assert_allclose(got, by_hand, rtol=1e-6)


def test_soft_cross_entropy_and_kl_hand_computed_at_temperature() -> None:
    # softmax([0, ln 3]) = (1/4, 3/4); targets (1/2, 1/2)
    z = tf.constant([[0.0, math.log(3.0)]])
    q = tf.constant([[0.5, 0.5]])
    ce1 = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert soft_cross_entropy(z, q).numpy()[0] == pytest.approx(ce1, rel=1e-6)
    assert kl_divergence(q, z).numpy()[0] == pytest.approx(ce1 - math.log(2), rel=1e-5)
    # T = 2: softmax(z / 2) = (1, sqrt 3) / (1 + sqrt 3), and the loss is multiplied by 4
    s = np.array([1.0, math.sqrt(3)]) / (1 + math.sqrt(3))
    ce2 = -0.5 * np.log(s).sum()
    assert soft_cross_entropy(z, q, 2.0).numpy()[0] == pytest.approx(4 * ce2, rel=1e-6)
    assert kl_divergence(q, z, 2.0).numpy()[0] == pytest.approx(4 * (ce2 - math.log(2)),
                                                                rel=1e-5)


def test_soft_loss_with_one_hot_targets_is_the_hard_loss_and_kl_vanishes_on_a_match() -> None:
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(scale=3, size=(5, 7)), tf.float32)
    labels = tf.constant(rng.integers(0, 7, size=5), tf.int32)
    np.testing.assert_allclose(soft_cross_entropy(logits, tf.one_hot(labels, 7)),
                               hard_cross_entropy(logits, labels), rtol=1e-5)
    # a student whose logits are T log q matches targets q at T, zeros of q included
    q = tf.constant([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0]])
    for t in (0.5, 1.0, 3.0):
        student = t * tf.math.log(tf.maximum(q, 1e-30))
        np.testing.assert_allclose(kl_divergence(q, student, t), [0, 0], atol=1e-5)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_soft_cross_entropy_gradient_is_t_times_softmax_minus_targets(temperature) -> None:
    """Autodiff of the training loss against the closed form of docs/gradients.md
    (T^2-scaled: T (softMax(z/T) - q)); the KL has the same gradient."""
    rng = np.random.default_rng(1)
    z = rng.normal(scale=3, size=(4, 10))
    q = G.softmax(rng.normal(size=10))
    targets = np.tile(q, (4, 1))
    zt = tf.constant(z, tf.float32)
    for loss in (lambda: soft_cross_entropy(zt, targets, temperature),
                 lambda: kl_divergence(targets, zt, temperature)):
        with tf.GradientTape() as tape:
            tape.watch(zt)
            value = tf.reduce_sum(loss())
        expected = [G.soft_xent_grad(row, q, temperature, scaled=True) for row in z]
        np.testing.assert_allclose(tape.gradient(value, zt), expected, atol=2e-6)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_losses_finite_for_extreme_low_precision_logits(dtype) -> None:
    logits = tf.cast(tf.constant([[1000.0, -1000.0, 0.0]]), dtype)
    q = tf.constant([[0.0, 0.9, 0.1]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        ce, kl = soft_cross_entropy(logits, q, 2.0), kl_divergence(q, logits, 2.0)
    for value in (ce, kl):
        assert value.dtype == tf.float32 and np.isfinite(value.numpy()).all()
        assert np.isfinite(tape.gradient(value, logits).numpy().astype(np.float32)).all()
    # CE = 4 * (0.9 * 1000 + 0.1 * 500) = 3800 (log-sum-exp of z/2 is 500)
    assert ce.numpy()[0] == pytest.approx(3800.0, rel=1e-3)


# ---- metrics ------------------------------------------------------------------------------


def test_agreement_and_mean_kl_on_stored_top_k_hand_computed() -> None:
    teacher = soft_targets(TOPK_LABELS, TOPK_PROBS, LABELS, C)  # EXPECTED_T1; top: 2, 1, 3
    student = tf.constant([[0.0, 0.0, 1.0, 0.0],   # top 2: agrees
                           [0.0, 0.0, 0.0, 0.0],   # a tie goes to class 0: disagrees
                           [0.0, 0.0, 0.0, 2.0]])  # top 3: agrees
    np.testing.assert_allclose(top1_agreement(student, teacher), [1, 0, 1])
    # KL(q || s) by hand: sum over q > 0 of q (log q - log s)
    e = math.e
    log_s0 = np.log(np.array([1, 1, e, 1]) / (3 + e))
    log_s2 = np.log(np.array([1, 1, 1, e ** 2]) / (3 + e ** 2))
    kl0 = 1 / 7 * (math.log(1 / 7) - log_s0[0]) + 6 / 7 * (math.log(6 / 7) - log_s0[2])
    kl1 = 0 - math.log(1 / 4)
    kl2 = sum(p * (math.log(p) - log_s2[i]) for i, p in ((0, .25), (1, .25), (3, .5)))
    got = kl_divergence(teacher, student).numpy()
    np.testing.assert_allclose(got, [kl0, kl1, kl2], rtol=1e-5)
    assert got.mean() == pytest.approx((kl0 + kl1 + kl2) / 3, rel=1e-5)


# ---- mixup --------------------------------------------------------------------------------


def test_mixup_weight_is_seeded_folded_beta() -> None:
    seed = tf.constant([3, 7], tf.int64)
    # the weight is a function of the seed alone: not of TensorFlow's global random state,
    # nor of graph or eager mode (every rank draws the same weight for a step)
    eager = float(mixup_weight(0.2, seed))
    tf.random.set_seed(123)
    tf.random.uniform([5])
    in_graph = float(tf.function(lambda s: mixup_weight(0.2, s))(seed))
    assert in_graph == eager and 0.5 <= eager <= 1.0
    assert float(mixup_weight(0.0, seed)) == 1.0
    weights = np.array([float(mixup_weight(1.0, tf.constant([s, 0], tf.int64)))
                        for s in range(400)])
    assert ((weights >= 0.5) & (weights <= 1.0)).all()
    assert len(set(weights.tolist())) == 400  # a new weight for every seed
    # Beta(1, 1) is uniform on [0, 1], folded to [0.5, 1]: mean 0.75, sd 0.144 / sqrt(400)
    assert weights.mean() == pytest.approx(0.75, abs=0.03)
    # a small alpha puts most weights near 1 (little mixing), as in Beta(0.1, 0.1)
    small = [float(mixup_weight(0.1, tf.constant([s, 1], tf.int64))) for s in range(200)]
    assert np.median(small) > 0.95


def test_mix_with_rolled_by_hand_images_and_targets() -> None:
    images = tf.constant([[[[0, 0, 0]]], [[[100, 100, 100]]], [[[200, 200, 200]]]], tf.uint8)
    mixed = mix_with_rolled(images, tf.constant(0.75))
    assert mixed.dtype == tf.float32
    # example i with example i - 1 (rolled by one): 0.75 * own + 0.25 * neighbour
    np.testing.assert_allclose(mixed.numpy()[:, 0, 0, 0], [50.0, 75.0, 175.0])
    targets = mix_with_rolled(tf.one_hot([0, 1, 2], 3), tf.constant(0.75)).numpy()
    np.testing.assert_allclose(targets, [[0.75, 0, 0.25], [0.25, 0.75, 0], [0, 0.25, 0.75]])
    np.testing.assert_allclose(targets.sum(axis=1), 1.0)


# ---- the online teacher -------------------------------------------------------------------


def _manifest(teacher_ids) -> Manifest:
    classes = tuple(ClassInfo(i, f"c{i}", t) for i, t in enumerate(teacher_ids))
    return Manifest(Path("/data/set"), "png", 64, classes, {}, "offline", {})


def test_kept_teacher_ids_from_the_manifest_and_folder_classes_refused() -> None:
    assert kept_teacher_ids(_manifest([282, 967, 504])) == (282, 967, 504)
    with pytest.raises(UserError, match="c1.*no teacher class.*--targets hard or soft"):
        kept_teacher_ids(_manifest([282, None, -1]))


@pytest.fixture(scope="module")
def augmented_photos(tmp_path_factory) -> tuple[np.ndarray, list[Path]]:
    """Eight real 64x64 photos after the training augmentation, and the same pixels as
    PNG files for `imnet64 teacher classify`."""
    from imnet64.pipeline.sample_images import iter_sample
    from imnet64.train.input_pipeline import augment_batch

    from PIL import Image

    batch = tf.constant(np.stack([np.asarray(im.convert("RGB"), np.uint8)
                                  for _name, im in iter_sample(8)]))
    pixels = augment_batch(batch, tf.constant([5, 11], tf.int64)).numpy()
    assert not np.array_equal(pixels, batch.numpy())
    tmp = tmp_path_factory.mktemp("augmented")
    files = []
    for i, image in enumerate(pixels):
        files.append(tmp / f"{i}.png")
        Image.fromarray(image).save(files[-1])
    return pixels, files


def test_online_targets_equal_teacher_classify_on_the_same_pixels(
        offline_teacher_dir, augmented_photos, capsys) -> None:
    """`imnet64 teacher classify` prints probabilities rounded to 6 decimals, too coarse for
    1e-5 after renormalising; its function (classify_files) gives them unrounded."""
    from imnet64.teacher import load_teacher
    from imnet64.teacher.classify import classify_files

    from imnet64_cli.main import main as cli_main

    pixels, files = augmented_photos
    teacher = load_teacher("offline")
    full = np.zeros((len(files), 1001))
    for row, preds in enumerate(classify_files(teacher, files, top=1001)):
        for p in preds:
            full[row, p.class_id] = p.probability
    args = ["teacher", "classify", "--teacher", "offline", "--json", *map(str, files)]
    assert cli_main(args) == 0
    for row, image in enumerate(json.loads(capsys.readouterr().out)["images"]):
        for p in image["top"]:
            assert p["probability"] == round(full[row, p["class_id"]], 6)
    # kept classes: every image's top class, plus classes no image favours
    top1 = sorted(set(full.argmax(axis=1).tolist()))
    ids = tuple(top1 + [i for i in (1, 400, 999) if i not in top1])

    fn = tf.function(lambda images, t: online_targets(teacher, ids, images, t))
    for temperature in (1.0, 2.0, 0.5):
        restricted = full[:, ids] ** (1 / temperature)
        expected = restricted / restricted.sum(axis=1, keepdims=True)
        got = fn(tf.constant(pixels), temperature).numpy()
        assert got.shape == (8, len(ids))
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # mixed images are float 0..255: the same pixels as floats give the same targets
    as_float = online_targets(teacher, ids, tf.constant(pixels, tf.float32)).numpy()
    np.testing.assert_allclose(as_float, fn(tf.constant(pixels), 1.0).numpy(), atol=1e-6)


def test_teacher_pixels_uint8_scaling_is_convert_image_dtype() -> None:
    images = tf.constant(np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1))
    ours = teacher_pixels(images, (16, 16))  # same size: the resize keeps the pixels
    theirs = tf.image.convert_image_dtype(images, tf.float32)
    assert np.array_equal(ours.numpy(), theirs.numpy())
    assert np.array_equal(teacher_pixels(tf.cast(images, tf.float32), (16, 16)).numpy(),
                          theirs.numpy())
