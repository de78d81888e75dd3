"""Precise BatchNorm (issue 26): validation on short runs measures the trained weights.

The cause, shown on a real short run: in inference mode the same checkpoint scores far
lower with BatchNorm's moving statistics (momentum 0.99: after 60 steps they still hold
0.99**60 = 55 % of their initial 0 / 1) than with statistics recomputed on training batches.
The fix: train recomputes them before each validation (and keeps them in its checkpoints),
so the val figures in history.json are those of the checkpoint that evaluate and export use.
"""

from __future__ import annotations

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.train.evaluate import evaluate_run
from imnet64.train.precise_bn import batchnorm_layers, recompute, statistics_variables

import numpy as np
import pytest
import tensorflow as tf
from tiny_dataset import build_tiny_dataset
from train_helpers import history, train_in_process

SHORT = dict(epochs=3, warmup_epochs=1, steps_per_epoch=20, batch_size=16, lr_max=0.01,
             shuffle=False,  # a fixed order: the two runs see the same batches
             widths=(8, 16, 32),
             # fp32: evaluate's batches differ from validation's, and bf16's rounding
             # depends on the batch (1e-3 here), which the equalities below would not survive
             precision="fp32")


def test_recompute_gives_the_population_mean_and_variance_of_the_batches():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(64, 8, 8, 4)).astype("float32")
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 4)),
                                 tf.keras.layers.BatchNormalization(momentum=0.99)])
    bn = batchnorm_layers(model)[0]
    assert recompute(model, [x[i:i + 16] for i in range(0, 64, 16)]) == 4
    np.testing.assert_allclose(bn.moving_mean.numpy(), x.mean(axis=(0, 1, 2)), atol=1e-4)
    # each batch's variance is Bessel-corrected over its 16*8*8 values per channel
    np.testing.assert_allclose(bn.moving_variance.numpy(), x.var(axis=(0, 1, 2)), rtol=2e-3)
    assert bn.momentum == 0.99  # restored: training goes on with the layer as it was
    before = [v.numpy() for v in statistics_variables(model)]
    assert recompute(model, []) == 0  # no batches: nothing changes
    for v, b in zip(statistics_variables(model), before):
        np.testing.assert_array_equal(v.numpy(), b)


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory):
    """The same short run (seed, data, steps) with moving statistics and with precise BN."""
    root = tmp_path_factory.mktemp("precise-bn")
    dataset = build_tiny_dataset(root / "data", per_class=40, shards=2)
    moving = train_in_process(dataset, root / "moving", precise_bn_batches=0, **SHORT)
    precise = train_in_process(dataset, root / "precise", **SHORT)
    return dataset, root / "moving", root / "precise", moving, precise


def test_short_run_collapses_with_moving_statistics_not_with_recomputed_ones(short_runs):
    """The cause: the same weights, two sets of statistics."""
    _, moving_dir, _, _, _ = short_runs
    with_moving = evaluate_run(moving_dir, checkpoint="latest", write=False)
    recomputed = evaluate_run(moving_dir, checkpoint="latest", write=False,
                              precise_bn_batches=8)
    assert recomputed.precise_bn_batches == 8
    assert recomputed.top1 >= 0.8, recomputed.top1
    assert recomputed.top1 - with_moving.top1 >= 0.3, (with_moving.top1, recomputed.top1)


def test_train_validates_the_weights_it_trained(short_runs):
    """The fix: train's val accuracy is what the weights score with recomputed statistics
    (fails with the moving averages), the checkpoint holds those statistics (evaluate and
    export see the model that was measured), and training itself is unchanged."""
    _, moving_dir, precise_dir, moving, precise = short_runs
    val = history(precise_dir)[-1]
    reference = evaluate_run(moving_dir, checkpoint="latest", write=False,
                             precise_bn_batches=8)
    assert abs(val["val_accuracy"] - reference.top1) <= 0.1, (val, reference.top1)
    stored = evaluate_run(precise_dir, checkpoint="latest", write=False)
    assert stored.top1 == pytest.approx(val["val_accuracy"], abs=1e-9)
    assert stored.loss == pytest.approx(val["val_loss"], rel=1e-5)
    # training mode normalises by the batch: the moving statistics never enter training
    assert [r["loss"] for r in history(precise_dir)] == [r["loss"] for r in history(moving_dir)]
    assert moving.global_step == precise.global_step


def test_export_with_recomputed_statistics_is_the_model_evaluate_measured(short_runs, tmp_path):
    """`evaluate`/`export --precise-bn-batches N` on a run trained with the moving averages:
    the exported model predicts exactly what evaluate scored."""
    from imnet64.formats.manifest import load_manifest
    from imnet64.train.export import export_run
    from imnet64.train.input_pipeline import ONE_PASS, records_dataset

    dataset, moving_dir, _, _, _ = short_runs
    measured = evaluate_run(moving_dir, checkpoint="latest", write=False, precise_bn_batches=8)
    result = export_run(moving_dir, tmp_path / "model", checkpoint="latest",
                        precise_bn_batches=8)
    serve = tf.saved_model.load(str(result.path)).signatures["serving_default"]
    hits = count = 0
    for images, labels in records_dataset(load_manifest(dataset), "val", 64, ONE_PASS):
        predicted = serve(images=images)["probabilities"].numpy().argmax(axis=1)
        hits += int((predicted == labels.numpy()).sum())
        count += len(predicted)
    assert count == measured.count
    assert hits / count == pytest.approx(measured.top1, abs=1e-9)
    unchanged = evaluate_run(moving_dir, checkpoint="latest", write=False)
    assert hits / count - unchanged.top1 >= 0.3  # (and not the checkpoint's own statistics)
